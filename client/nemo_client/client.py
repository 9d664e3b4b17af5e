"""The NIM-style client: ``client.chat.completions.create(...)`` over Triton gRPC streaming.

``AsyncNemoClient`` holds the one implementation. ``NemoClient`` runs that same implementation on a
private event-loop thread, so a single sync client serves many threads at once (each call is its own
gRPC stream on one shared channel; tritonclient's sync one-stream-per-client limit does not apply).

Results are the ``openai`` package's own types (``ChatCompletion``, ``ChatCompletionChunk``,
``Completion``, ``Model``), so code written against the OpenAI SDK reads them unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypedDict, TypeVar, overload

import numpy as np
from openai.types import Completion, CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from tritonclient.grpc import service_pb2
from typing_extensions import NotRequired, Unpack

from nemo_chat_core.stop_strings import StopStringMatcher
from nemo_client.direct import DirectChat
from nemo_client.triton_transport import RetryPolicy, TritonTransport, deadline_after
from nemo_protocol.errors import APIError, BadRequestError, ServerError, error_from_body
from nemo_protocol.json_values import check_json_value
from nemo_protocol.request_ids import new_request_id

DEFAULT_URL = "localhost:8001"
DEFAULT_TIMEOUT_S = 600.0
CHAT_MODEL = "chat"
TEXT_MODEL = "ensemble"
T = TypeVar("T")
R = TypeVar("R")


class _ChatCompletionFields(TypedDict):
    """Arguments of ``chat.completions.create``: the OpenAI / NIM chat-completions request."""

    messages: Sequence[Mapping[str, Any]]
    model: NotRequired[str]
    tools: NotRequired[Sequence[Mapping[str, Any]]]
    tool_choice: NotRequired[str | Mapping[str, Any]]
    parallel_tool_calls: NotRequired[bool]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    max_tokens: NotRequired[int]
    max_completion_tokens: NotRequired[int]
    stop: NotRequired[str | Sequence[str]]
    seed: NotRequired[int]
    presence_penalty: NotRequired[float]
    frequency_penalty: NotRequired[float]
    n: NotRequired[int]
    logprobs: NotRequired[bool]
    top_logprobs: NotRequired[int]
    response_format: NotRequired[Mapping[str, Any]]
    stream_options: NotRequired[Mapping[str, Any]]
    user: NotRequired[str]
    extra_body: NotRequired[Mapping[str, Any]]
    """Fields merged into the request as they are (e.g. ``nvext``)."""
    timeout: NotRequired[float]
    """Seconds for the whole call, stream included; defaults to the client's."""


class ChatCompletionParams(_ChatCompletionFields):
    stream: NotRequired[bool]


class ChatCompletionNonStreamingParams(_ChatCompletionFields):
    stream: NotRequired[Literal[False]]


class ChatCompletionStreamingParams(_ChatCompletionFields):
    stream: Literal[True]


class _CompletionFields(TypedDict):
    """Arguments of ``completions.create``: raw text generation through the ``ensemble`` model.

    ``prompt`` is text, token ids, or a list of either (one choice per prompt, non-streamed); ``n`` choices
    per prompt are independent generations (``seed``, when given, is the first one's, then ``seed + 1``...).
    ``logprobs`` N gives each token's log probability and the N most likely tokens at its position; ``echo``
    puts the prompt (and, with ``logprobs``, its tokens) before the completion. ``min_tokens``,
    ``ignore_eos``, ``repetition_penalty`` and ``top_k`` are the vLLM / NIM extensions of the same names."""

    prompt: str | Sequence[int] | Sequence[str] | Sequence[Sequence[int]]
    model: NotRequired[str]
    max_tokens: NotRequired[int]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    top_k: NotRequired[int]
    seed: NotRequired[int]
    stop: NotRequired[str | Sequence[str]]
    presence_penalty: NotRequired[float]
    frequency_penalty: NotRequired[float]
    repetition_penalty: NotRequired[float]
    min_tokens: NotRequired[int]
    ignore_eos: NotRequired[bool]
    logprobs: NotRequired[int]
    echo: NotRequired[bool]
    n: NotRequired[int]
    timeout: NotRequired[float]


class CompletionParams(_CompletionFields):
    stream: NotRequired[bool]


class CompletionNonStreamingParams(_CompletionFields):
    stream: NotRequired[Literal[False]]


class CompletionStreamingParams(_CompletionFields):
    stream: Literal[True]


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool
    models: dict[str, bool]
    """Readiness of each model the client calls."""


# ----- async ----------------------------------------------------------------------------------------------
class AsyncStream(Generic[T]):
    """Async iterator of stream items. Closing it (or leaving ``async with``) cancels the request."""

    def __init__(self, items: AsyncIterator[T], request_id: str) -> None:
        self._items = items
        self.request_id = request_id

        self._first: list[T] = []

    async def started(self) -> AsyncStream[T]:
        """Wait for the first item so that an immediate error raises here; returns self."""
        with contextlib.suppress(StopAsyncIteration):
            self._first.append(await self._items.__anext__())
        return self

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._first:
            return self._first.pop()
        return await self._items.__anext__()

    async def aclose(self) -> None:
        await self._items.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncNemoClient:
    """Async client for a Mistral NeMo deployment's Triton gRPC endpoint (``host:8001``)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        chat_model: str = CHAT_MODEL,
        text_model: str = TEXT_MODEL,
        direct: bool = False,
        tokenizer_file: str | Path | None = None,
    ) -> None:
        """``direct``: render prompts and parse outputs here and stream `tensorrt_llm` itself (see
        :mod:`nemo_client.direct`; needs the chat core (nemo_chat_core) and the model's Tekken file,
        ``tokenizer_file``, by default mistral-common's copy); otherwise the ``chat`` model does it in Triton."""
        self.url = url
        self.direct = direct
        self._tokenizer_file = None if tokenizer_file is None else Path(tokenizer_file)
        self._direct_chat: DirectChat | None = None
        self._direct_lock = asyncio.Lock()
        self.model = model
        self.timeout = timeout
        self.chat_model = chat_model
        self.text_model = text_model
        self._transport = TritonTransport(url, retry=RetryPolicy(max_retries=max_retries), ssl=ssl, headers=headers)
        self.chat = AsyncChat(self)
        self.completions = AsyncCompletions(self)
        self.models = AsyncModels(self)

    async def health(self, *, timeout: float = 5.0) -> Health:
        """Server liveness and readiness, and the readiness of the chat and text models."""
        deadline = deadline_after(timeout)
        try:
            live = (await self._transport.unary("ServerLive", service_pb2.ServerLiveRequest(), deadline=deadline)).live
            ready = (
                await self._transport.unary("ServerReady", service_pb2.ServerReadyRequest(), deadline=deadline)
            ).ready
        except APIError:
            return Health(live=False, ready=False, models={self.chat_model: False, self.text_model: False})
        models = {}
        for name in (self.chat_model, self.text_model):
            try:
                answer = await self._transport.unary(
                    "ModelReady", service_pb2.ModelReadyRequest(name=name), deadline=deadline
                )
                models[name] = bool(answer.ready)
            except APIError:
                models[name] = False
        return Health(live=bool(live), ready=bool(ready), models=models)

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncNemoClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _direct_events(
        self, body: Mapping[str, Any], timeout: float | None
    ) -> tuple[str, AsyncIterator[dict[str, Any]]]:
        deadline = deadline_after(self.timeout if timeout is None else timeout)
        async with self._direct_lock:
            if self._direct_chat is None:
                self._direct_chat = await DirectChat.connect(
                    self._transport, chat_model=self.chat_model, tokenizer_file=self._tokenizer_file, deadline=deadline
                )
        return self._direct_chat.start(body, deadline=deadline)

    async def _responses(
        self, model: str, inputs: Mapping[str, Any], timeout: float | None
    ) -> tuple[str, AsyncIterator[dict[str, Any]]]:
        request_id = new_request_id()
        deadline = deadline_after(self.timeout if timeout is None else timeout)
        return request_id, self._transport.stream(model, inputs, request_id=request_id, deadline=deadline)


class AsyncChat:
    def __init__(self, client: AsyncNemoClient) -> None:
        self._client = client
        self.completions = AsyncChatCompletions(client)

    async def run_tools(self, **kwargs: Any) -> Any:
        """Run the model ↔ tool loop; see :func:`nemo_client.tool_runner.run_tools`."""
        from nemo_client.tool_runner import run_tools

        return await run_tools(self.completions, **kwargs)


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
        if self._client.direct:
            request_id, events = await self._client._direct_events(body, timeout)
        else:
            request_id, responses = await self._client._responses(
                self._client.chat_model, {"request": [json.dumps(body, ensure_ascii=False)]}, timeout
            )
            events = _chat_events(responses)
        if body.get("stream"):
            parse_chunk = _as_is if raw else ChatCompletionChunk.model_validate
            stream = AsyncStream(_parsed(events, parse_chunk), request_id)
            # A refused request raises here rather than at the first read, so that callers (and the
            # gateway's status code) learn of it before they start streaming.
            return await stream.started()
        return await _single(_parsed(events, _as_is if raw else ChatCompletion.model_validate))


class AsyncCompletions:
    def __init__(self, client: AsyncNemoClient) -> None:
        self._client = client

    @overload
    async def create(self, **params: Unpack[CompletionNonStreamingParams]) -> Completion: ...
    @overload
    async def create(self, **params: Unpack[CompletionStreamingParams]) -> AsyncStream[Completion]: ...
    @overload
    async def create(self, **params: Unpack[CompletionParams]) -> Completion | AsyncStream[Completion]: ...
    async def create(self, **params: Unpack[CompletionParams]) -> Completion | AsyncStream[Completion]:
        """Complete raw text (no chat template) through the text ``ensemble``."""
        prompts = completion_prompts(params.get("prompt"))
        n = params.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise BadRequestError(f"must be an integer in [1, {MAX_N}], got {n!r}", param="n")
        model = params.get("model") or self._client.model or self._client.text_model
        seed = params.get("seed")
        requests = [
            completion_inputs(params, prompt, seed=None if seed is None else seed + copy)
            for prompt in prompts
            for copy in range(n)
        ]
        stops = _stop_words(params.get("stop"))
        echoes = [prompt if isinstance(prompt, str) else None for prompt in prompts for _ in range(n)]
        if params.get("echo") and stops and None in echoes:
            raise BadRequestError("stop with echo needs the prompt as text, not token ids", param="echo")
        if params.get("stream"):
            if len(requests) > 1:
                raise BadRequestError("one prompt and n 1 only when streaming", param="n" if n > 1 else "prompt")
            request_id, responses = await self._client._responses(
                self._client.text_model, requests[0], params.get("timeout")
            )
            pieces = _completion_pieces(responses, stops, echo=echoes[0] if params.get("echo") else None)
            return AsyncStream(_completion_chunks(pieces, model, request_id), request_id)
        request_id = new_request_id()
        choices = await asyncio.gather(
            *(
                self._choice(inputs, stops, echo if params.get("echo") else None, params.get("timeout"))
                for inputs, echo in zip(requests, echoes, strict=True)
            )
        )
        return _completion(request_id, model, list(choices), usage=_usage(choices, n))

    async def _choice(
        self, inputs: Mapping[str, Any], stops: list[str], echo: str | None, timeout: float | None
    ) -> CompletionPiece:
        """One whole generation, as one piece."""
        _, responses = await self._client._responses(self._client.text_model, inputs, timeout)
        return CompletionPiece.join([piece async for piece in _completion_pieces(responses, stops, echo=echo)])


class AsyncModels:
    def __init__(self, client: AsyncNemoClient) -> None:
        self._client = client

    async def list(self, *, timeout: float = 10.0) -> list[Model]:
        """The served chat model, under its served name (``served_model_name`` of the ``chat`` model), with
        ``max_model_len``: the tokens of a sequence, prompt and output (the engine's ``max_seq_len``)."""
        deadline = deadline_after(timeout)
        config = await self._client._transport.unary(
            "ModelConfig", service_pb2.ModelConfigRequest(name=self._client.chat_model), deadline=deadline
        )
        parameters = config.config.parameters
        name = parameters["served_model_name"].string_value if "served_model_name" in parameters else ""
        model: dict[str, Any] = {"id": name or self._client.chat_model, "created": 0, "object": "model"}
        if "max_seq_len" in parameters:
            model["max_model_len"] = int(parameters["max_seq_len"].string_value)  # an extra field, as vLLM's
        return [Model.model_validate({**model, "owned_by": "mistralai"})]


# ----- request and response shaping (shared by the async client, the sync client and the gateway) ---------
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


MAX_N = 16
"""The most choices a completion request may ask for (``n``, or prompts x ``n``)."""


def completion_prompts(prompt: Any) -> list[str | list[int]]:
    """The prompts of a completion request: text, token ids, or a list of either; 400 naming ``prompt``."""
    if isinstance(prompt, str) or _token_ids(prompt):
        return [prompt if isinstance(prompt, str) else list(prompt)]
    if (
        isinstance(prompt, list)
        and prompt
        and (all(isinstance(p, str) for p in prompt) or all(map(_token_ids, prompt)))
    ):
        if len(prompt) > MAX_N:
            raise BadRequestError(f"at most {MAX_N} prompts per request, got {len(prompt)}", param="prompt")
        return [p if isinstance(p, str) else list(p) for p in prompt]
    raise BadRequestError(
        "must be a string, a list of token ids, or a non-empty list of strings or of token-id lists", param="prompt"
    )


def _token_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= INT32_MAX for t in value)
    )


def completion_inputs(
    params: Mapping[str, Any], prompt: str | Sequence[int] | None = None, *, seed: int | None = None
) -> dict[str, Any]:
    """The ``ensemble`` model's input tensors for one prompt of a completion request; BadRequestError for a value
    no tensor of its type can hold (the server checks the ranges it serves).

    ``temperature`` without ``top_p`` samples with OpenAI's ``top_p`` default of 1 (TensorRT-LLM's defaults,
    ``top_k`` 0 and ``top_p`` 0, would be greedy)."""
    if prompt is None:
        prompts = completion_prompts(params.get("prompt"))
        if len(prompts) > 1:
            raise BadRequestError("one prompt per ensemble request", param="prompt")
        prompt = prompts[0]
    if isinstance(prompt, str):
        inputs: dict[str, Any] = {"text_input": np.array([[_utf8(prompt, "prompt")]], dtype=object)}
    else:
        inputs = {"input_ids": np.array([list(prompt)], dtype=np.int32)}
    inputs["max_tokens"] = _scalar_tensor(params.get("max_tokens", 16), np.int32, "max_tokens")
    inputs["stream"] = np.array([[bool(params.get("stream"))]], dtype=np.bool_)
    values = {**params, "seed": params.get("seed") if seed is None else seed}
    if values.get("temperature") is not None and values.get("top_p") is None and values.get("top_k") is None:
        values["top_p"] = 1.0
    for name, dtype in _COMPLETION_SCALARS.items():
        if values.get(name) is not None:
            inputs[name] = _scalar_tensor(values[name], dtype, name)
    for name in ("echo", "ignore_eos"):
        if values.get(name) is not None and not isinstance(values[name], bool):
            raise BadRequestError(f"must be a boolean, got {type(values[name]).__name__}", param=name)
    if values.get("echo") and values.get("stream"):
        raise BadRequestError("is served on whole answers only, not with stream", param="echo")
    if values.get("echo"):
        inputs["exclude_input_in_output"] = np.array([[False]], dtype=np.bool_)
    if values.get("ignore_eos"):
        inputs["end_id"] = np.array([[-1]], dtype=np.int32)
    stop = _stop_words(params.get("stop"))
    if stop:
        inputs["stop_words"] = np.array([[_utf8(word, "stop") for word in stop]], dtype=object)
    return inputs


def _stop_words(stop: Any) -> list[str]:
    if not stop:
        return []
    words = [stop] if isinstance(stop, str) else stop
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise BadRequestError("must be a string or a list of strings", param="stop")
    return words


_COMPLETION_SCALARS: dict[str, type[np.generic]] = {
    "temperature": np.float32,
    "top_p": np.float32,
    "top_k": np.int32,
    "seed": np.uint64,
    "presence_penalty": np.float32,
    "frequency_penalty": np.float32,
    "repetition_penalty": np.float32,
    "min_tokens": np.int32,
    "logprobs": np.int32,
}
INT32_MAX = 2**31 - 1


def _scalar_tensor(value: Any, dtype: type[np.generic], param: str) -> np.ndarray[Any, Any]:
    """``[[value]]`` as ``dtype``: an integer within its range, or a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(f"must be a number, got {type(value).__name__}", param=param)
    if np.issubdtype(dtype, np.integer):
        bounds = np.iinfo(dtype)  # type: ignore[type-var]  # an integer dtype, checked on the line above
        if not isinstance(value, int) or not bounds.min <= value <= bounds.max:
            raise BadRequestError(f"must be an integer in [{bounds.min}, {bounds.max}], got {value}", param=param)
    elif not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
        raise BadRequestError(f"must be a finite number, got {value}", param=param)
    return np.array([[value]], dtype=dtype)


def _utf8(text: str, param: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(
            f"contains a lone surrogate at character {exc.start}: text must be valid Unicode", param=param
        ) from None


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


@dataclass(frozen=True)
class CompletionPiece:
    """Part of one completion choice: text, and what the ``ensemble`` sent with it."""

    text: str
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    prompt_tokens: int = 0  # the ensemble's counts so far
    completion_tokens: int = 0

    @staticmethod
    def join(pieces: Sequence[CompletionPiece]) -> CompletionPiece:
        logprobs = [p.logprobs for p in pieces if p.logprobs is not None]
        return CompletionPiece(
            text="".join(p.text for p in pieces),
            finish_reason=next((p.finish_reason for p in reversed(pieces) if p.finish_reason), "stop"),
            logprobs={key: [v for part in logprobs for v in part[key]] for key in logprobs[0]} if logprobs else None,
            prompt_tokens=max((p.prompt_tokens for p in pieces), default=0),
            completion_tokens=max((p.completion_tokens for p in pieces), default=0),
        )


async def _completion_pieces(
    responses: AsyncIterator[dict[str, Any]], stops: Sequence[str], *, echo: str | None
) -> AsyncIterator[CompletionPiece]:
    """One piece per ``ensemble`` response, the text cut before the first ``stop`` string (which OpenAI leaves
    out); the finish reason and token counts come with the last. ``echo``: the prompt text the output starts
    with, never searched for stop strings."""
    matcher, skip = StopStringMatcher(stops), len(echo or "")
    try:
        async for outputs in responses:
            text = b"".join(outputs.get("text_output", [])).decode("utf-8")
            head, text = text[:skip], text[skip:]
            skip -= len(head)
            text = head + matcher.feed(text)
            reasons, logprobs = outputs.get("finish_reason"), outputs.get("logprobs")
            counts = [int(outputs[name].reshape(-1)[0]) if name in outputs else 0 for name in _COUNTS]
            reason = reasons[0].decode("utf-8") if reasons is not None and len(reasons) else None
            if matcher.stopped:
                yield CompletionPiece(text, "stop", _logprobs(logprobs), *counts)
                return
            if reason is not None:
                text += matcher.flush()
            yield CompletionPiece(text, reason, _logprobs(logprobs), *counts)
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


_COUNTS = ("num_input_tokens", "num_output_tokens")


def _logprobs(tensor: list[bytes] | None) -> dict[str, Any] | None:
    """The ``logprobs`` output (a BYTES tensor: a list of one JSON object), if any."""
    return json.loads(tensor[0]) if tensor else None


async def _single(items: AsyncIterator[T]) -> T:
    results = [item async for item in items]
    if len(results) != 1:
        raise ServerError(f"expected one response, got {len(results)}")
    return results[0]


def _completion(
    request_id: str, model: str, choices: Sequence[CompletionPiece], usage: dict[str, int] | None = None
) -> Completion:
    # construct, not validate: OpenAI's own SDK builds stream chunks (finish_reason None) the same way.
    completion = Completion.model_construct(
        id=f"cmpl-{request_id}",
        object="text_completion",
        created=int(time.time()),
        model=model,
        choices=[
            {"index": index, "text": c.text, "finish_reason": c.finish_reason, "logprobs": c.logprobs}
            for index, c in enumerate(choices)
        ],
    )
    if usage is not None:
        completion.usage = CompletionUsage.model_validate(usage)
    return completion


def _usage(choices: Sequence[CompletionPiece], n: int = 1) -> dict[str, int]:
    """Token counts; each prompt counted once, though ``n`` choices continue it."""
    prompt = sum(c.prompt_tokens for c in choices[::n])
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _completion_chunks(
    pieces: AsyncIterator[CompletionPiece], model: str, request_id: str
) -> AsyncIterator[Completion]:
    async for piece in pieces:
        if piece.text or piece.finish_reason or piece.logprobs:
            yield _completion(request_id, model, [piece], _usage([piece]))  # the counts so far


# ----- sync -----------------------------------------------------------------------------------------------
class _LoopThread:
    """A private event loop on a daemon thread that runs the async implementation for sync callers."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nemo-client-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("the sync NemoClient cannot be called from its own event loop; use AsyncNemoClient")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def submit(self, coroutine: Awaitable[Any]) -> None:
        """Schedule without waiting: safe from any thread, the loop's own included (e.g. a finalizer)."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


class Stream(Generic[T]):
    """Iterator of stream items. ``close()``, leaving ``with``, or garbage collection cancels the request."""

    def __init__(self, stream: AsyncStream[T], loop: _LoopThread) -> None:
        self._stream = stream
        self._loop = loop
        self._closed = False
        self.request_id = stream.request_id

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return self._loop.run(self._stream.__anext__())
        except StopAsyncIteration:
            self._closed = True
            raise StopIteration from None
        except BaseException:
            # The stream ended with an error (or the caller was interrupted): release it on the server.
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.run(self._stream.aclose())

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped without close() is cancelled on the server. The garbage collector may run this
        # on any thread, the loop's own included, so it must schedule the close and never wait for it.
        if not getattr(self, "_closed", True):
            self._closed = True
            with contextlib.suppress(Exception):  # at interpreter shutdown the loop may be gone
                self._loop.submit(self._stream.aclose())


class NemoClient:
    """Sync client with the same API as :class:`AsyncNemoClient`; safe to share between threads."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._loop = _LoopThread()
        self._async = self._loop.run(_make_async_client(url, options))
        self.url = url
        self.chat = Chat(self._async.chat, self._loop)
        self.completions = Completions(self._async.completions, self._loop)
        self.models = Models(self._async.models, self._loop)

    def health(self, *, timeout: float = 5.0) -> Health:
        return self._loop.run(self._async.health(timeout=timeout))

    def close(self) -> None:
        self._loop.run(self._async.close())
        self._loop.stop()

    def __enter__(self) -> NemoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _make_async_client(url: str, options: Mapping[str, Any]) -> AsyncNemoClient:
    return AsyncNemoClient(url, **options)


def _sync_result(result: R | AsyncStream[T], loop: _LoopThread) -> R | Stream[T]:
    return Stream(result, loop) if isinstance(result, AsyncStream) else result


class ChatCompletions:
    def __init__(self, inner: AsyncChatCompletions, loop: _LoopThread) -> None:
        self._inner, self._loop = inner, loop

    @overload
    def create(self, **params: Unpack[ChatCompletionNonStreamingParams]) -> ChatCompletion: ...
    @overload
    def create(self, **params: Unpack[ChatCompletionStreamingParams]) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(self, **params: Unpack[ChatCompletionParams]) -> ChatCompletion | Stream[ChatCompletionChunk]: ...
    def create(self, **params: Unpack[ChatCompletionParams]) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """Create a chat completion; with ``stream=True`` a stream of ``ChatCompletionChunk``."""
        return _sync_result(self._loop.run(self._inner.create(**params)), self._loop)


class Chat:
    def __init__(self, inner: AsyncChat, loop: _LoopThread) -> None:
        self._inner, self._loop = inner, loop
        self.completions = ChatCompletions(inner.completions, loop)

    def run_tools(self, **kwargs: Any) -> Any:
        """Run the model ↔ tool loop; tools may be plain (sync) functions."""
        return self._loop.run(self._inner.run_tools(**kwargs))


class Completions:
    def __init__(self, inner: AsyncCompletions, loop: _LoopThread) -> None:
        self._inner, self._loop = inner, loop

    @overload
    def create(self, **params: Unpack[CompletionNonStreamingParams]) -> Completion: ...
    @overload
    def create(self, **params: Unpack[CompletionStreamingParams]) -> Stream[Completion]: ...
    @overload
    def create(self, **params: Unpack[CompletionParams]) -> Completion | Stream[Completion]: ...
    def create(self, **params: Unpack[CompletionParams]) -> Completion | Stream[Completion]:
        """Complete raw text (no chat template) through the text ``ensemble``."""
        return _sync_result(self._loop.run(self._inner.create(**params)), self._loop)


class Models:
    def __init__(self, inner: AsyncModels, loop: _LoopThread) -> None:
        self._inner, self._loop = inner, loop

    def list(self, *, timeout: float = 10.0) -> list[Model]:
        return self._loop.run(self._inner.list(timeout=timeout))
