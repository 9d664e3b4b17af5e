"""Faults: Triton killed mid-stream and restarted, the `chat` stub killed, a client that stops reading.

These tests break their own Triton (not the session's). Waits are bounded by the requests' own
timeouts and by bounded polling, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from nemo_client import NemoClient
from nemo_client.client import AsyncNemoClient
from nemo_ops.launcher import TritonServer
from nemo_ops.stub_supervisor import stub_processes
from nemo_protocol.errors import APIError, UnavailableError
from tests.reliability import traffic
from tests.reliability.conftest import Stack, start_stack

LONG = traffic.ask(
    "Hello", stream=True, stream_options={"include_usage": True}, max_tokens=3000, temperature=1.0,
    nvext={"ignore_eos": True},
)  # fmt: skip
RECOVERY_POLLS = 60  # × 0.5 s
UNREADY_POLLS = 20  # × 0.5 s: Triton checks its stubs' health every second


@pytest.fixture(scope="module")
def fault_stack(reliability_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(reliability_repository, tmp_path_factory.mktemp("faults"))


def _restart(triton: TritonServer) -> None:
    triton.stop()
    triton.start()
    triton.wait_ready()


@pytest.fixture
def healthy(fault_stack: Stack) -> Stack:
    """The fault stack, with Triton restarted first if an earlier test left it broken."""
    try:
        with NemoClient(fault_stack.grpc_url, timeout=30, max_retries=0) as client:
            client.chat.completions.create(messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
    except APIError:
        _restart(fault_stack.triton)
    return fault_stack


def _poll(check: Callable[[], bool], what: str, polls: int = RECOVERY_POLLS) -> None:
    for _ in range(polls):
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} within {polls * 0.5:.0f} s")


def _answers_hello(client: NemoClient) -> bool:
    try:
        reply = client.chat.completions.create(messages=[{"role": "user", "content": "Hello"}], temperature=0)
    except APIError:
        return False
    return reply.choices[0].message.content == "Hello! How can I help you today?"


def test_a_client_that_stops_reading_does_not_stall_other_streams(healthy: Stack) -> None:
    async def scenario() -> tuple[list[traffic.Outcome], int]:
        async with AsyncNemoClient(healthy.grpc_url, timeout=300) as slow, AsyncNemoClient(healthy.grpc_url) as fast:
            stalled = await slow.chat.completions.create_from_body({**LONG, "max_tokens": 1500})
            first = await stalled.__anext__()  # type: ignore[union-attr]
            async with httpx.AsyncClient(timeout=120) as http:
                # An HTTP client that opens a long stream through the gateway and never reads it either.
                request = http.build_request("POST", f"{healthy.gateway.url}/v1/chat/completions", json=LONG)
                unread = await http.send(request, stream=True)
                others = await asyncio.gather(
                    *(traffic.grpc_chat(fast, q, 1, stream_it=True) for q in traffic.QUESTIONS * 2),
                    *(traffic.http_chat_stream(http, healthy.gateway.url, q, 2) for q in traffic.QUESTIONS),
                )
                await unread.aclose()
            # The stalled stream is intact once its reader resumes.
            chunks = [first.model_dump(), *[c.model_dump() async for c in stalled]]  # type: ignore[union-attr]
            assert traffic.check_chunks(chunks) is None
            return others, chunks[-1]["usage"]["completion_tokens"]

    others, stalled_tokens = asyncio.run(scenario())
    assert [o.detail for o in others if not o.ok] == []
    assert stalled_tokens == 1500


def test_triton_killed_mid_stream_then_restarted(healthy: Stack) -> None:
    triton, gateway = healthy.triton, healthy.gateway

    async def kill_mid_stream() -> tuple[BaseException | None, list[str]]:
        async with AsyncNemoClient(triton.grpc_url, timeout=300) as client, httpx.AsyncClient(timeout=300) as http:
            grpc_stream = await client.chat.completions.create_from_body(LONG)
            await grpc_stream.__anext__()  # type: ignore[union-attr]
            async with http.stream("POST", f"{gateway.url}/v1/chat/completions", json=LONG) as response:
                lines = response.aiter_lines()
                assert (await lines.__anext__()).startswith("data: ")
                os.killpg(triton._process.pid, signal.SIGKILL)  # type: ignore[union-attr]
                events = [line async for line in lines if line.startswith("data: ")]
            try:
                async for _ in grpc_stream:  # type: ignore[union-attr]
                    pass
            except APIError as error:
                return error, events
            return None, events

    error, events = asyncio.run(kill_mid_stream())
    # The client raises an "unavailable" error (not a deadline: it did not wait for its 300 s timeout).
    assert isinstance(error, UnavailableError), error
    assert '"service_unavailable"' in events[-1] and "[DONE]" not in events[-1]

    with httpx.Client(timeout=30) as http:
        refused = http.post(f"{gateway.url}/v1/chat/completions", json=traffic.ask("Hello"))
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "service_unavailable"
        assert http.get(f"{gateway.url}/v1/health/ready").status_code == 503
    with NemoClient(triton.grpc_url, timeout=30, max_retries=0) as client:
        with pytest.raises(UnavailableError):
            client.chat.completions.create(messages=[{"role": "user", "content": "Hello"}])

        _restart(triton)  # on the same ports; neither the gateway nor this client object is restarted
        # gRPC reconnects after its own backoff, so recovery is polled (bounded), not expected at once.
        _poll(lambda: _answers_hello(client), "the client did not recover after Triton restarted")
    with httpx.Client(timeout=60) as http:
        _poll(lambda: http.get(f"{gateway.url}/v1/health/ready").status_code == 200, "the gateway is not ready")
        answer = http.post(f"{gateway.url}/v1/chat/completions", json=traffic.ask("Hello", temperature=0))
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "Hello! How can I help you today?"


def test_killed_chat_stub_makes_the_model_unready_then_recovers(healthy: Stack) -> None:
    group = healthy.triton._process.pid  # type: ignore[union-attr]
    (stub,) = stub_processes(group)["chat"]
    os.kill(stub, signal.SIGKILL)
    with NemoClient(healthy.grpc_url, timeout=30, max_retries=0) as client:
        _poll(lambda: not client.health().models["chat"], "Triton never reported `chat` unready", UNREADY_POLLS)
        _poll(lambda: _answers_hello(client), "`chat` did not recover")
