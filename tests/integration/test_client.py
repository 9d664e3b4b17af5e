"""nemo_client against a real Triton on CPU serving the trained tiny model: sync and async, streams,
tools, cancellation, deadlines and typed errors."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_client import AsyncNemoClient, NemoClient
from nemo_client.streaming import AsyncStream
from nemo_ops.launcher import TritonServer
from nemo_protocol.errors import BadRequestError, DeadlineExceededError
from tests.integration.conftest import MAX_BATCH_SIZE, MAX_SEQ_LEN
from tests.integration.triton_calls import BatchMetrics

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
PARIS_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
ANSWERS = {
    "What is the capital of France?": "The capital of France is Paris.",
    "What is the capital of Japan?": "The capital of Japan is Tokyo.",
    "How many days are in a week?": "A week has seven days.",
    "你好": "你好！有什么可以帮你的吗？",
}


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[NemoClient]:
    with NemoClient(url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def batch_metrics(triton: TritonServer) -> BatchMetrics:
    return BatchMetrics(triton.host, triton.ports.metrics)


def streamed(chunks: Any) -> tuple[str, list[ChatCompletionChunk]]:
    chunks = list(chunks)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_chat_completion_is_an_openai_object(client: NemoClient) -> None:
    reply = client.chat.completions.create(messages=FRANCE, temperature=0)
    assert isinstance(reply, ChatCompletion)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "The capital of France is Paris."
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_the_chat_model_logs_the_end_user_a_request_names(client: NemoClient, triton: TritonServer) -> None:
    reply = client.chat.completions.create(messages=FRANCE, temperature=0, user="dave")
    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert f"{reply.id} answers end user 'dave'" in triton.log_path.read_text(errors="replace")


def test_stream_concatenates_to_the_completion(client: NemoClient) -> None:
    for params in ({"temperature": 0}, {"temperature": 1.0, "seed": 7}):
        whole = client.chat.completions.create(messages=FRANCE, **params).choices[0].message.content
        text, chunks = streamed(client.chat.completions.create(messages=FRANCE, stream=True, **params))
        assert text == whole
        assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_length_limit(client: NemoClient) -> None:
    reply = client.chat.completions.create(messages=FRANCE, temperature=0, max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_one_sync_client_serves_many_threads_at_once(client: NemoClient) -> None:
    asked = [list(ANSWERS)[i % len(ANSWERS)] for i in range(12)]

    def ask(question: str) -> str:
        messages = [{"role": "user", "content": question}]
        return streamed(client.chat.completions.create(messages=messages, temperature=0, stream=True))[0]

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(ask, asked)) == [ANSWERS[q] for q in asked]


def test_async_client_concurrent_calls(url: str) -> None:
    async def main() -> list[str]:
        async with AsyncNemoClient(url, timeout=120) as client:

            async def ask(question: str) -> str:
                messages = [{"role": "user", "content": question}]
                if len(question) % 2:
                    reply = await client.chat.completions.create(messages=messages, temperature=0)
                    return reply.choices[0].message.content or ""
                stream = await client.chat.completions.create(messages=messages, temperature=0, stream=True)
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

            return await asyncio.gather(*(ask(q) for q in ANSWERS))

    assert asyncio.run(main()) == list(ANSWERS.values())


def test_tool_call_then_run_tools_round_trip(client: NemoClient) -> None:
    reply = client.chat.completions.create(messages=PARIS_WEATHER, tools=[WEATHER_TOOL], temperature=0)
    assert reply.choices[0].finish_reason == "tool_calls"
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    seen: list[str] = []

    def get_weather(city: str) -> dict[str, Any]:
        seen.append(city)
        return {"conditions": "sunny", "celsius": 18}

    run = client.chat.run_tools(
        messages=PARIS_WEATHER, tools={"get_weather": get_weather}, tool_definitions=[WEATHER_TOOL], temperature=0
    )
    assert seen == ["Paris"]
    assert [m["role"] for m in run.messages] == ["user", "assistant", "tool"]
    assert json.loads(run.messages[2]["content"]) == {"conditions": "sunny", "celsius": 18}
    assert run.completion.choices[0].finish_reason == "stop"
    assert run.content == "It is sunny and 18 degrees in Paris."


def test_tool_errors_are_reported_back_to_the_model(client: NemoClient) -> None:
    def get_weather(city: str) -> str:
        raise RuntimeError("weather service down")

    run = client.chat.run_tools(
        messages=PARIS_WEATHER, tools={"get_weather": get_weather}, tool_definitions=[WEATHER_TOOL], temperature=0
    )
    assert json.loads(run.messages[2]["content"]) == {"error": "get_weather failed: RuntimeError: weather service down"}


def test_completions_through_the_text_ensemble(client: NemoClient) -> None:
    whole = client.completions.create(prompt="Hello", max_tokens=8, temperature=0)
    assert isinstance(whole, Completion) and whole.object == "text_completion"
    assert whole.choices[0].finish_reason == "length", "the tiny model has more to say than 8 tokens"
    pieces = list(client.completions.create(prompt="Hello", max_tokens=8, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert [p.choices[0].finish_reason for p in pieces][-1] == "length"
    assert all(p.choices[0].finish_reason is None for p in pieces[:-1])


def test_models_and_health(client: NemoClient) -> None:
    assert [m.id for m in client.models.list()] == ["nemo-tiny"]
    health = client.health()
    assert health.live and health.ready and all(health.models.values())


def test_bad_request_is_typed_and_names_the_field(client: NemoClient) -> None:
    with pytest.raises(BadRequestError) as raised:
        client.chat.completions.create(messages=FRANCE, extra_body={"temprature": 0.2})
    assert raised.value.param == "temprature"
    with pytest.raises(BadRequestError) as raised:
        client.chat.completions.create(messages=[{"role": "robot", "content": "hi"}], stream=True)
    assert raised.value.param == "messages[0].role"
    with pytest.raises(TypeError, match="unexpected argument"):
        client.chat.completions.create(messages=FRANCE, temprature=0.2)  # type: ignore[call-arg]


def _endless(**extra: Any) -> dict[str, Any]:
    """A chat request that generates until its budget runs out (the server ignores end of sequence)."""
    return {"messages": FRANCE, "max_tokens": MAX_SEQ_LEN - 64, "extra_body": {"nvext": {"ignore_eos": True}}, **extra}


def test_deadline_covers_the_whole_stream(client: NemoClient, batch_metrics: BatchMetrics) -> None:
    batch_metrics.idle()
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        for _ in client.chat.completions.create(stream=True, timeout=1.0, **_endless()):
            pass
    assert time.monotonic() - started < 30
    batch_metrics.wait_for(requests_running=0)  # the expired stream was cancelled on the server
    assert client.chat.completions.create(messages=FRANCE, temperature=0).choices[0].message.content


def test_closing_or_dropping_streams_cancels_them_on_the_server(
    client: NemoClient, batch_metrics: BatchMetrics
) -> None:
    cancelled = batch_metrics.idle()["requests_cancelled_total"]
    streams = [client.chat.completions.create(stream=True, **_endless()) for _ in range(MAX_BATCH_SIZE)]
    for stream in streams:
        next(stream)
    # Every batch slot is taken by a stream thousands of tokens long: only cancellation frees them.
    batch_metrics.wait_for(requests_running=MAX_BATCH_SIZE, batch_slots_free=0)
    half = MAX_BATCH_SIZE // 2
    for stream in streams[:half]:
        stream.close()
    batch_metrics.wait_for(requests_running=MAX_BATCH_SIZE - half, requests_cancelled_total=cancelled + half)
    del stream
    streams.clear()  # the other half is dropped without close(): the finalizer cancels them
    gc.collect()
    batch_metrics.wait_for(
        requests_running=0, batch_slots_free=MAX_BATCH_SIZE, requests_cancelled_total=cancelled + MAX_BATCH_SIZE
    )
    with ThreadPoolExecutor(MAX_BATCH_SIZE) as pool:
        answers = list(
            pool.map(lambda _: client.chat.completions.create(messages=FRANCE, temperature=0), range(MAX_BATCH_SIZE))
        )
    assert all(a.choices[0].message.content == ANSWERS[FRANCE[0]["content"]] for a in answers)


# Breaking out of `async for` does not close an async iterator (Python never calls aclose() for you): what
# cancels an async stream is leaving `async with`, calling aclose(), or dropping it (asyncio's async
# generator finalizer closes it once it is garbage). Each test below proves the one way it names by the
# server's state: after the break the stream still runs; once it is ended that way, and while the test
# still holds it (except when dropping it is the point), its batch slot is free.
async def wait_for(batch_metrics: BatchMetrics, **expected: float) -> dict[str, float]:
    return await asyncio.to_thread(batch_metrics.wait_for, **expected)  # the event loop keeps running


async def still_running_after_a_break(stream: AsyncStream[ChatCompletionChunk], batch_metrics: BatchMetrics) -> None:
    async for _ in stream:
        break
    await wait_for(batch_metrics, requests_running=1)
    assert isinstance(await stream.__anext__(), ChatCompletionChunk)  # the break did not end it


def run_async(url: str, batch_metrics: BatchMetrics, test: Callable[[AsyncNemoClient], Awaitable[None]]) -> None:
    """Run `test`, then check that its one stream was cancelled and that the server still answers."""

    async def main() -> str:
        cancelled = batch_metrics.idle()["requests_cancelled_total"]
        async with AsyncNemoClient(url, timeout=120) as client:
            await test(client)
            await wait_for(batch_metrics, requests_running=0, requests_cancelled_total=cancelled + 1)
            reply = await client.chat.completions.create(messages=FRANCE, temperature=0, timeout=60)
            return reply.choices[0].message.content or ""

    assert asyncio.run(main()) == ANSWERS[FRANCE[0]["content"]]


def test_leaving_async_with_after_a_break_cancels_an_async_stream(url: str, batch_metrics: BatchMetrics) -> None:
    async def test(client: AsyncNemoClient) -> None:
        stream = await client.chat.completions.create(stream=True, **_endless())
        async with stream:
            await still_running_after_a_break(stream, batch_metrics)
        await wait_for(batch_metrics, requests_running=0, batch_slots_free=MAX_BATCH_SIZE)
        assert [chunk async for chunk in stream] == []  # closed

    run_async(url, batch_metrics, test)


def test_aclose_cancels_an_async_stream(url: str, batch_metrics: BatchMetrics) -> None:
    async def test(client: AsyncNemoClient) -> None:
        stream = await client.chat.completions.create(stream=True, **_endless())
        await still_running_after_a_break(stream, batch_metrics)
        await stream.aclose()
        await wait_for(batch_metrics, requests_running=0, batch_slots_free=MAX_BATCH_SIZE)
        assert [chunk async for chunk in stream] == []

    run_async(url, batch_metrics, test)


def test_dropping_an_async_stream_after_a_break_cancels_it(url: str, batch_metrics: BatchMetrics) -> None:
    async def test(client: AsyncNemoClient) -> None:
        stream = await client.chat.completions.create(stream=True, **_endless())
        await still_running_after_a_break(stream, batch_metrics)
        del stream
        gc.collect()  # asyncio's finalizer schedules aclose() on this loop, which keeps running while we wait
        await wait_for(batch_metrics, requests_running=0, batch_slots_free=MAX_BATCH_SIZE)

    run_async(url, batch_metrics, test)


def test_sync_client_is_usable_from_a_thread_that_did_not_create_it(client: NemoClient) -> None:
    result: list[str] = []
    thread = threading.Thread(
        target=lambda: result.append(
            client.chat.completions.create(messages=FRANCE, temperature=0).choices[0].message.content
        )
    )
    thread.start()
    thread.join(60)
    assert result == [ANSWERS[FRANCE[0]["content"]]]
