"""The direct path (the chat core in the caller, streaming `tensorrt_llm` itself) answers as the `chat` model does.

Every conversation runs through both paths on the same Triton, greedy: the text, tool calls, finish reasons,
stop handling, usage and errors must be the same, streamed and whole. Chunk boundaries may differ (each path
sends the ids that queued up together), so streamed text is compared joined.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_client import NemoClient
from nemo_ops.launcher import TritonServer
from nemo_protocol.errors import APIError, BadRequestError, ServerError
from tests.integration.conftest import MAX_BATCH_SIZE, MAX_INPUT_LEN
from tests.integration.triton_calls import BatchMetrics

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
PARIS_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_CALL = {
    "role": "assistant",
    "tool_calls": [
        {
            "id": "call_0123456789abcdef",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
        }
    ],
}
WEATHER_RESULT = {
    "role": "tool",
    "tool_call_id": "call_0123456789abcdef",
    "content": json.dumps({"conditions": "sunny", "celsius": 18}),
}

CONVERSATIONS: dict[str, dict[str, Any]] = {
    "plain": {"messages": FRANCE},
    "system and history": {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好！有什么可以帮你的吗？"},
            {"role": "user", "content": "What is the capital of Japan?"},
        ]
    },
    "multibyte answer": {"messages": [{"role": "user", "content": "你好"}]},
    "tool call": {"messages": PARIS_WEATHER, "tools": [WEATHER_TOOL]},
    "tool result": {"messages": [*PARIS_WEATHER, WEATHER_CALL, WEATHER_RESULT], "tools": [WEATHER_TOOL]},
    "tools hidden": {"messages": PARIS_WEATHER, "tools": [WEATHER_TOOL], "tool_choice": "none"},
    "tool call required": {"messages": PARIS_WEATHER, "tools": [WEATHER_TOOL], "tool_choice": "required"},
    "stop string": {"messages": FRANCE, "stop": ["Paris"]},
    "two stop strings": {"messages": FRANCE, "stop": ["France is", "capital"]},
    "length": {"messages": FRANCE, "max_tokens": 3},
    "ignore eos": {"messages": FRANCE, "max_tokens": 12, "extra_body": {"nvext": {"ignore_eos": True}}},
    "sampled with a seed": {"messages": FRANCE, "temperature": 1.0, "seed": 7, "max_tokens": 16},
}


@pytest.fixture(scope="module")
def through_chat(url: str) -> Iterator[NemoClient]:
    with NemoClient(url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def direct(url: str, tekken_path: Path) -> Iterator[NemoClient]:
    with NemoClient(url, timeout=120, direct=True, tokenizer_file=tekken_path) as client:
        yield client


def whole(reply: Any) -> dict[str, Any]:
    choice = reply.choices[0]
    calls = [(call.function.name, json.loads(call.function.arguments)) for call in choice.message.tool_calls or []]
    return {
        "content": choice.message.content,
        "calls": calls,
        "finish": choice.finish_reason,
        "usage": reply.usage.model_dump(),
        "model": reply.model,
    }


def streamed(chunks: Any) -> dict[str, Any]:
    chunks = list(chunks)
    choices = [chunk.choices[0] for chunk in chunks if chunk.choices]
    calls = [
        (call.function.name, json.loads(call.function.arguments))
        for choice in choices
        for call in choice.delta.tool_calls or []
    ]
    return {
        "role": choices[0].delta.role,
        "content": "".join(choice.delta.content or "" for choice in choices),
        "calls": calls,
        "finish": [choice.finish_reason for choice in choices if choice.finish_reason],
        "usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None,
        "ids": {chunk.id for chunk in chunks},
    }


def outcome(create: Any, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return whole(create(**{"temperature": 0, **params}))
    except APIError as error:
        return {"error": type(error).__name__, "param": getattr(error, "param", None)}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_direct_path_answers_as_the_chat_model(name: str, through_chat: NemoClient, direct: NemoClient) -> None:
    params = CONVERSATIONS[name]
    served = outcome(through_chat.chat.completions.create, params)
    assert outcome(direct.chat.completions.create, params) == served
    if "error" in served:
        return
    assert served["content"] or served["calls"]
    stream_params = {"temperature": 0, **params, "stream": True, "stream_options": {"include_usage": True}}
    via_chat = streamed(through_chat.chat.completions.create(**stream_params))
    via_direct = streamed(direct.chat.completions.create(**stream_params))
    assert len(via_direct.pop("ids")) == len(via_chat.pop("ids")) == 1
    assert via_direct == via_chat
    assert via_chat["content"] == (served["content"] or "")
    assert via_chat["usage"] == served["usage"]


def test_the_trained_answers_come_back_on_the_direct_path(direct: NemoClient) -> None:
    assert whole(direct.chat.completions.create(messages=FRANCE, temperature=0))["content"] == (
        "The capital of France is Paris."
    )
    answer = direct.chat.completions.create(
        messages=[*PARIS_WEATHER, WEATHER_CALL, WEATHER_RESULT], tools=[WEATHER_TOOL], temperature=0
    )
    assert answer.choices[0].message.content == "It is sunny and 18 degrees in Paris."


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": FRANCE, "temperature": -1}, "temperature"),
        ({"messages": [{"role": "user", "content": "x " * (MAX_INPUT_LEN + 10)}]}, "messages"),
        ({"messages": FRANCE, "top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_bad_requests_are_refused_alike(
    params: dict[str, Any], param: str, through_chat: NemoClient, direct: NemoClient
) -> None:
    refusals = []
    for client in (through_chat, direct):
        with pytest.raises(BadRequestError) as refused:
            client.chat.completions.create(**params)
        refusals.append((refused.value.param, str(refused.value)))
    assert refusals[0] == refusals[1] and refusals[0][0] == param


def test_closing_a_direct_stream_frees_its_slot(direct: NemoClient, triton: TritonServer) -> None:
    metrics = BatchMetrics(triton.host, triton.ports.metrics)
    cancelled = metrics.idle()["requests_cancelled_total"]
    endless = {"messages": FRANCE, "max_tokens": 4000, "extra_body": {"nvext": {"ignore_eos": True}}}
    streams = [direct.chat.completions.create(stream=True, **endless) for _ in range(MAX_BATCH_SIZE)]
    for stream in streams:
        next(stream)
    metrics.wait_for(requests_running=MAX_BATCH_SIZE)
    for stream in streams:
        stream.close()
    metrics.wait_for(
        requests_running=0, batch_slots_free=MAX_BATCH_SIZE, requests_cancelled_total=cancelled + MAX_BATCH_SIZE
    )


def test_a_tokenizer_file_other_than_the_deployments_is_refused(url: str, tekken_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "tekken.json"
    shutil.copy(tekken_path, other)
    with other.open("a") as handle:
        handle.write("\n")
    with (
        NemoClient(url, timeout=30, direct=True, tokenizer_file=other) as client,
        pytest.raises(ServerError, match="not the one the deployment serves with"),
    ):
        client.chat.completions.create(messages=FRANCE)


def test_logprobs_are_the_same_on_both_paths_whole_and_streamed(through_chat: NemoClient, direct: NemoClient) -> None:
    params: dict[str, Any] = {"messages": FRANCE, "temperature": 0, "logprobs": True, "top_logprobs": 3}
    answers = []
    for client in (through_chat, direct):
        reply = client.chat.completions.create(**params)
        content = reply.choices[0].logprobs.content
        assert "".join(entry.token for entry in content) == reply.choices[0].message.content
        for entry in content:  # greedy: the chosen token is the most likely, its own value the engine's
            assert len(entry.top_logprobs) == 3, entry
            assert entry.top_logprobs[0].logprob >= entry.logprob - 1e-4, entry
        assert all(entry.logprob <= 0 for entry in content)
        chunks = list(client.chat.completions.create(stream=True, **params))
        streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
        assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in content]
        answers.append([(e.token, round(e.logprob, 4), [t.token for t in e.top_logprobs]) for e in content])
    assert answers[0] == answers[1]
