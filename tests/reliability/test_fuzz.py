"""Bad input: generated chat requests through the gateway and over gRPC never crash the server.

Each answer is a valid completion or a 4xx-class error with an OpenAI error body; after the pass the
server still answers a known request correctly. Quick: 40 examples per path; full: 400.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion

from nemo_client import NemoClient
from nemo_client.client import AsyncNemoClient
from nemo_client.streaming import AsyncStream
from nemo_protocol.errors import BadRequestError, NotFoundError
from tests.reliability.conftest import BUDGET, Stack

CONTROL_TEXT = ["[INST]", "</s>", "[TOOL_CALLS]", "<s>", "[/INST]", "\x00", "\ud7ff", "🙂", "你好"]
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
anything = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
content = st.one_of(st.text(max_size=60), st.sampled_from(CONTROL_TEXT), anything)
message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool"]), anything), "content": content},
    optional={"tool_calls": anything, "tool_call_id": anything, "name": anything},
)
bodies = st.fixed_dictionaries(
    {
        "messages": st.one_of(st.lists(message, min_size=1, max_size=4), anything),
        # Bounded so that a valid request finishes quickly; invalid values must be refused.
        "max_tokens": st.one_of(st.integers(1, 8), anything),
    },
    optional={
        "temperature": st.one_of(st.floats(0, 2), anything),
        "top_p": st.one_of(st.floats(0, 1), anything),
        "stop": anything,
        "seed": anything,
        "tools": anything,
        "tool_choice": anything,
        "stream": st.booleans(),
        "n": anything,
        "response_format": anything,
        "nvext": anything,
        "frequency_penalty": anything,
        "unknown_field": anything,
    },
)
FUZZ = settings(
    max_examples=BUDGET.fuzz_examples, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip


def _check_http(response: httpx.Response, streamed: bool) -> None:
    if response.status_code != 200:
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        error = response.json()["error"]
        assert error["message"] and error["type"], response.text
        return
    if not streamed:
        ChatCompletion.model_validate(response.json())
        return
    lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]", response.text[-500:]
    for line in lines[:-1]:
        assert "error" not in json.loads(line[6:]), line


def test_fuzzed_requests_through_the_gateway(stack: Stack) -> None:
    with httpx.Client(base_url=stack.gateway.url, timeout=120) as http:

        @FUZZ
        @given(body=bodies)
        def check(body: dict[str, Any]) -> None:
            _check_http(http.post("/v1/chat/completions", json=body), body.get("stream") is True)

        check()
        raw = http.post("/v1/chat/completions", content=b"\xff{not json", headers={"content-type": "application/json"})
        assert raw.status_code == 400
        ok = http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hello"}], "temperature": 0}
        )
        assert ok.json()["choices"][0]["message"]["content"] == "Hello! How can I help you today?"


async def _grpc_answer(url: str, body: dict[str, Any]) -> None:
    async with AsyncNemoClient(url, timeout=120) as client:
        try:
            result = await client.chat.completions.create_from_body(body)
        except (BadRequestError, NotFoundError) as error:
            assert error.message
            return
        if isinstance(result, AsyncStream):
            assert [chunk async for chunk in result]
        else:
            assert isinstance(result, ChatCompletion)


def test_fuzzed_requests_over_grpc(stack: Stack) -> None:
    @FUZZ
    @given(body=bodies)
    def check(body: dict[str, Any]) -> None:
        asyncio.run(_grpc_answer(stack.grpc_url, body))

    check()
    with NemoClient(stack.grpc_url, timeout=120) as client:
        reply = client.chat.completions.create(messages=[{"role": "user", "content": "Hello"}], temperature=0)
        assert reply.choices[0].message.content == "Hello! How can I help you today?"
