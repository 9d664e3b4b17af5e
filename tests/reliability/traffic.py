"""The requests the soak and the fault tests send, each returning what it observed (never raising).

Every well-formed request is checked for well-formed output; every malformed one for a clear 4xx-class
error. Each returns an :class:`Outcome`, so that a soak can count that nothing was lost.
"""

from __future__ import annotations

import asyncio
import json
import queue
from dataclasses import dataclass, field
from typing import Any

import httpx

from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_client.client import AsyncNemoClient
from nemo_protocol.errors import APIError, BadRequestError
from tests.integration.triton_calls import ensemble_inputs, stream

QUESTIONS = ["What is the capital of France?", "Hello", "你好", "Привет", "How many days are in a week?"]
SEEDS = [1, 2, 3]
SAMPLING = {"temperature": 1.0, "max_tokens": 24}
MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({}, "messages"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "frobnicate": True}, "frobnicate"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 17}, "n"),  # the gateway serves n up to 16; gRPC 1
]


@dataclass
class Outcome:
    kind: str
    ok: bool
    detail: str = ""
    completion_ids: list[str] = field(default_factory=list)
    key: tuple[str, int] | None = None
    text: str | None = None
    streamed: bool = False


def ask(question: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}], **fields}


def check_chunks(chunks: list[dict[str, Any]]) -> str | None:
    """What is wrong with a streamed chat answer (None when it is well formed)."""
    if not chunks:
        return "no chunks"
    if len({c["id"] for c in chunks}) != 1:
        return f"chunks of one stream carry {len({c['id'] for c in chunks})} ids"
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch.get("finish_reason")]
    if len(finishes) != 1 or finishes[0] not in ("stop", "length", "tool_calls"):
        return f"finish reasons {finishes}"
    usage = [c for c in chunks if c.get("usage")]
    if len(usage) != 1 or usage[0] is not chunks[-1] or usage[0]["choices"]:
        return "the usage chunk is not the one last chunk"
    return None


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])


async def grpc_chat(client: AsyncNemoClient, question: str, seed: int, stream_it: bool) -> Outcome:
    body = ask(question, seed=seed, stream=stream_it, **SAMPLING)
    kind = "grpc_stream" if stream_it else "grpc_whole"
    if stream_it:
        body["stream_options"] = {"include_usage": True}
    try:
        result = await client.chat.completions.create_from_body(body)
        if not stream_it:
            completion = result.model_dump()  # type: ignore[union-attr]
            text = completion["choices"][0]["message"]["content"]
            good = completion["choices"][0]["finish_reason"] in ("stop", "length") and isinstance(text, str)
            return Outcome(kind, good, str(completion), [completion["id"]], (question, seed), text)
        chunks = [chunk.model_dump() async for chunk in result]  # type: ignore[union-attr]
    except APIError as error:
        return Outcome(kind, False, f"{type(error).__name__}: {error}")
    problem = check_chunks(chunks)
    ids = [chunks[0]["id"]] if chunks else []
    return Outcome(kind, problem is None, problem or "", ids, (question, seed), streamed_text(chunks), True)


async def http_chat_stream(http: httpx.AsyncClient, base: str, question: str, seed: int) -> Outcome:
    body = ask(question, seed=seed, stream=True, stream_options={"include_usage": True}, **SAMPLING)
    chunks, done = [], False
    try:
        async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return Outcome("http_stream", False, f"HTTP {response.status_code}: {await response.aread()!r}")
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunks.append(json.loads(line[6:]))
    except httpx.HTTPError as error:
        return Outcome("http_stream", False, f"{type(error).__name__}: {error}")
    problem = check_chunks(chunks) or (None if done else "no data: [DONE]")
    ids = [chunks[0]["id"]] if chunks else []
    return Outcome("http_stream", problem is None, problem or "", ids, (question, seed), streamed_text(chunks), True)


async def grpc_tool_call(client: AsyncNemoClient) -> Outcome:
    body = ask("What is the weather in Paris?", tools=[WEATHER_TOOL], temperature=0, max_tokens=64)
    try:
        completion = (await client.chat.completions.create_from_body(body)).model_dump()  # type: ignore[union-attr]
    except APIError as error:
        return Outcome("tools", False, f"{type(error).__name__}: {error}")
    choice = completion["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    good = (
        choice["finish_reason"] == "tool_calls"
        and len(calls) == 1
        and calls[0]["function"]["name"] == "get_weather"
        and isinstance(json.loads(calls[0]["function"]["arguments"]), dict)
    )
    return Outcome("tools", good, json.dumps(choice), [completion["id"]])


async def ensemble_text(url: str) -> Outcome:
    try:
        result = await asyncio.to_thread(stream, url, "ensemble", ensemble_inputs("Hello", 8, stream=True), 60)
    except queue.Empty:
        return Outcome("ensemble", False, "no response from the ensemble within 60 s")
    texts = result.texts("text_output") if result.error is None else []
    return Outcome("ensemble", result.error is None and all(isinstance(t, str) for t in texts), str(result.error))


async def cancelled_stream(client: AsyncNemoClient) -> Outcome:
    body = ask("Hello", stream=True, max_tokens=400, temperature=1.0, nvext={"ignore_eos": True})
    try:
        stream_ = await client.chat.completions.create_from_body(body)
        received = 0
        async with stream_:  # type: ignore[union-attr]
            async for _ in stream_:  # type: ignore[union-attr]
                received += 1
                if received == 3:
                    break  # leaving the block cancels the request on the server
    except APIError as error:
        return Outcome("cancel", False, f"{type(error).__name__}: {error}")
    return Outcome("cancel", received == 3, f"{received} chunks before cancelling")


async def grpc_malformed(client: AsyncNemoClient, index: int) -> Outcome:
    body, param = MALFORMED[index % len(MALFORMED)]
    try:
        await client.chat.completions.create_from_body(body)
    except BadRequestError as error:
        return Outcome("grpc_malformed", param in str(error) and bool(error.message), str(error))
    except APIError as error:
        return Outcome("grpc_malformed", False, f"{type(error).__name__}: {error}")
    return Outcome("grpc_malformed", False, f"{body} was accepted")


async def http_malformed(http: httpx.AsyncClient, base: str, index: int) -> Outcome:
    body, param = MALFORMED[index % len(MALFORMED)]
    response = await http.post(f"{base}/v1/chat/completions", json=body)
    error = response.json().get("error") or {}
    good = response.status_code == 400 and error.get("type") == "invalid_request_error" and param in error["message"]
    return Outcome("http_malformed", good, f"HTTP {response.status_code}: {response.text}")
