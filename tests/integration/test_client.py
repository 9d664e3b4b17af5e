"""nemo_client against a real Triton on CPU serving the trained tiny model: sync and async, streams,
tools, cancellation, deadlines and typed errors."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from nemo_build.tiny_chat import WEATHER_TOOL
from nemo_client import AsyncNemoClient, NemoClient
from nemo_protocol.errors import BadRequestError, DeadlineExceededError
from tests.integration.conftest import MAX_BATCH_SIZE, MAX_SEQ_LEN

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


def seconds_per_token(client: NemoClient) -> float:
    """Decode time per token of one stream alone: a lower bound of a step's time with a full batch."""
    started = time.monotonic()
    client.chat.completions.create(**{**_endless(), "max_tokens": 200})
    return (time.monotonic() - started) / 200


def test_deadline_covers_the_whole_stream(client: NemoClient) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        for _ in client.chat.completions.create(stream=True, timeout=1.0, **_endless()):
            pass
    assert time.monotonic() - started < 30
    assert client.chat.completions.create(messages=FRANCE, temperature=0).choices[0].message.content


def test_closing_or_dropping_streams_cancels_them_on_the_server(client: NemoClient) -> None:
    seconds_per_step = seconds_per_token(client)
    streams = [client.chat.completions.create(stream=True, **_endless()) for _ in range(MAX_BATCH_SIZE)]
    for stream in streams:
        next(stream)
    for stream in streams[: MAX_BATCH_SIZE // 2]:
        stream.close()
    del stream
    del streams[: MAX_BATCH_SIZE // 2]
    streams.clear()  # the other half is dropped without close(): the finalizer cancels them
    gc.collect()
    # Every batch slot was taken by a stream thousands of tokens long: only cancellation frees them.
    began = time.monotonic()
    with ThreadPoolExecutor(MAX_BATCH_SIZE) as pool:
        answers = list(
            pool.map(lambda _: client.chat.completions.create(messages=FRANCE, temperature=0), range(MAX_BATCH_SIZE))
        )
    assert all(a.choices[0].message.content == ANSWERS[FRANCE[0]["content"]] for a in answers)
    assert time.monotonic() - began < 0.25 * (MAX_SEQ_LEN - 100) * seconds_per_step


def test_breaking_out_of_an_async_stream_cancels_it(url: str) -> None:
    async def main() -> str:
        async with AsyncNemoClient(url, timeout=120) as client:
            streams = [await client.chat.completions.create(stream=True, **_endless()) for _ in range(MAX_BATCH_SIZE)]
            for stream in streams:
                async for _ in stream:
                    break
                await stream.aclose()
            reply = await client.chat.completions.create(messages=FRANCE, temperature=0, timeout=60)
            return reply.choices[0].message.content or ""

    assert asyncio.run(main()) == ANSWERS[FRANCE[0]["content"]]


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
