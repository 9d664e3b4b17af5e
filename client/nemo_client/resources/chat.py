"""``client.chat``: chat completions through the Triton ``chat`` model (or, ``direct``, the chat core here), and
the tool-calling loop; async, and sync over the same implementation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from typing_extensions import Unpack

from nemo_client.loop_thread import LoopThread
from nemo_client.streaming import AsyncStream, Stream, sync_result
from nemo_client.types import (
    ChatCompletionNonStreamingParams,
    ChatCompletionParams,
    ChatCompletionStreamingParams,
    ToolRunParams,
)
from nemo_protocol.errors import APIError, ServerError, error_from_body
from nemo_protocol.json_values import check_json_value
from nemo_protocol.request_ids import new_request_id

if TYPE_CHECKING:
    from nemo_client.client import AsyncNemoClient
    from nemo_client.tool_runner import ToolRun

T = TypeVar("T")


class AsyncChat:
    def __init__(self, client: AsyncNemoClient) -> None:
        self._client = client
        self.completions = AsyncChatCompletions(client)

    async def run_tools(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        tools: Mapping[str, Callable[..., Any]],
        tool_definitions: Sequence[Mapping[str, Any]] | None = None,
        max_steps: int = 8,
        **params: Unpack[ToolRunParams],
    ) -> ToolRun:
        """Run the model ↔ tool loop: ask, run the tools the model calls, send their results, until it answers
        without a call (at most ``max_steps`` model calls); see :func:`nemo_client.tool_runner.run_tools`."""
        from nemo_client.tool_runner import run_tools  # jsonschema, on first use

        return await run_tools(
            self.completions,
            messages=messages,
            tools=tools,
            tool_definitions=tool_definitions,
            max_steps=max_steps,
            **params,
        )


class AsyncChatCompletions:
    def __init__(self, client: AsyncNemoClient) -> None:
        self._client = client

    @overload
    async def create(self, **params: Unpack[ChatCompletionNonStreamingParams]) -> ChatCompletion: ...
    @overload
    async def create(self, **params: Unpack[ChatCompletionStreamingParams]) -> AsyncStream[ChatCompletionChunk]: ...
    @overload
    async def create(
        self, **params: Unpack[ChatCompletionParams]
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]: ...
    async def create(self, **params: Unpack[ChatCompletionParams]) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """Create a chat completion; with ``stream=True`` an async stream of ``ChatCompletionChunk``."""
        result: ChatCompletion | AsyncStream[ChatCompletionChunk] = await self.create_from_body(
            chat_request_body(params, self._client.model), timeout=params.get("timeout")
        )
        return result

    async def create_from_body(
        self, body: Mapping[str, Any], *, timeout: float | None = None, raw: bool = False
    ) -> Any:
        """Send an already-built OpenAI request body as it is (the gateway's path); the server validates it
        (on the direct path, the chat core in this process does).

        With ``raw`` the results are the server's JSON objects (dicts), not typed objects: a proxy that
        only forwards them skips building and dumping pydantic models.
        """
        check_json_value(body)  # text the wire cannot carry is the caller's error, named, not a crash
        deadline = self._client.deadline(timeout)
        direct = await self._client.direct_chat(deadline=deadline) if self._client.direct else None
        if direct is not None and direct.serves(body):
            request_id, events = direct.start(body, deadline=deadline)
        else:
            request_id = new_request_id()
            request = {"request": [json.dumps(body, ensure_ascii=False)]}
            responses = self._client.transport.stream(
                self._client.chat_model, request, request_id=request_id, deadline=deadline
            )
            events = _chat_events(responses)
        if body.get("stream"):
            parse_chunk = _as_is if raw else ChatCompletionChunk.model_validate
            stream = AsyncStream(_parsed(events, parse_chunk), request_id)
            # A refused request raises here rather than at the first read, so that callers (and the
            # gateway's status code) learn of it before they start streaming.
            return await stream.started()
        return await _single(_parsed(events, _as_is if raw else ChatCompletion.model_validate))


class Chat:
    def __init__(self, inner: AsyncChat, loop: LoopThread) -> None:
        self._inner, self._loop = inner, loop
        self.completions = ChatCompletions(inner.completions, loop)

    def run_tools(
        self,
        *,
        messages: Sequence[Mapping[str, Any]],
        tools: Mapping[str, Callable[..., Any]],
        tool_definitions: Sequence[Mapping[str, Any]] | None = None,
        max_steps: int = 8,
        **params: Unpack[ToolRunParams],
    ) -> ToolRun:
        """Run the model ↔ tool loop (see :meth:`AsyncChat.run_tools`); tools may be plain (sync) functions."""
        return self._loop.run(
            self._inner.run_tools(
                messages=messages, tools=tools, tool_definitions=tool_definitions, max_steps=max_steps, **params
            )
        )


class ChatCompletions:
    def __init__(self, inner: AsyncChatCompletions, loop: LoopThread) -> None:
        self._inner, self._loop = inner, loop

    @overload
    def create(self, **params: Unpack[ChatCompletionNonStreamingParams]) -> ChatCompletion: ...
    @overload
    def create(self, **params: Unpack[ChatCompletionStreamingParams]) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(self, **params: Unpack[ChatCompletionParams]) -> ChatCompletion | Stream[ChatCompletionChunk]: ...
    def create(self, **params: Unpack[ChatCompletionParams]) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """Create a chat completion; with ``stream=True`` a stream of ``ChatCompletionChunk``."""
        return sync_result(self._loop.run(self._inner.create(**params)), self._loop)


# ----- request and response shaping -----------------------------------------------------------------------
_CHAT_FIELDS = frozenset(ChatCompletionParams.__annotations__) - {"extra_body", "timeout"}


def chat_request_body(params: Mapping[str, Any], default_model: str | None) -> dict[str, Any]:
    """The JSON request the ``chat`` model takes: the given OpenAI fields, ``extra_body`` merged in."""
    unknown = set(params) - _CHAT_FIELDS - {"extra_body", "timeout"}
    if unknown:
        raise TypeError(f"unexpected argument(s) {', '.join(sorted(unknown))}; use extra_body for extensions")
    body = {key: value for key, value in params.items() if key in _CHAT_FIELDS and value is not None}
    if "model" not in body and default_model:
        body["model"] = default_model
    body.update(params.get("extra_body") or {})
    return body


async def _chat_events(responses: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects the ``chat`` model answers with, one per response."""
    try:
        async for outputs in responses:
            for raw in outputs.get("response", []):
                body = json.loads(raw)
                if "error" in body:
                    # The server has finished this request: read its final response rather than
                    # cancelling a stream that is about to end.
                    with contextlib.suppress(APIError, asyncio.TimeoutError):
                        await asyncio.wait_for(_drain(responses), timeout=5)
                yield body
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


async def _parsed(events: AsyncIterator[dict[str, Any]], parse: Callable[[Any], T]) -> AsyncIterator[T]:
    """Chat events as results; an error event raises its APIError."""
    try:
        async for body in events:
            if "error" in body:
                raise error_from_body(body)
            yield parse(body)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _as_is(body: Any) -> Any:
    return body


async def _drain(items: AsyncIterator[Any]) -> None:
    async for _ in items:
        pass


async def _single(items: AsyncIterator[T]) -> T:
    results = [item async for item in items]
    if len(results) != 1:
        raise ServerError(f"expected one response, got {len(results)}")
    return results[0]
