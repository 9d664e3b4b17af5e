"""Where the benchmark sends requests: Triton's ``chat`` model over gRPC (``nemo_client``) or the HTTP gateway.

Both send the same OpenAI chat body, streamed with usage, and time the stream the same way. Errors are
sorted into a few types that mean the same on both paths: ``bad_request``, ``not_found``,
``unavailable``, ``stream_interrupted``, ``timeout``, ``server_error``, ``connection_error``, and ``overloaded``
(a gateway's 429 at its admission bounds). :class:`EndpointsInTurn` sends to several targets in turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from nemo_bench.metrics import RequestRecord
from nemo_bench.workload import BenchRequest
from nemo_client.client import AsyncNemoClient
from nemo_client.grpc_target import DEFAULT_LB_POLICY, LbPolicy
from nemo_protocol.errors import (
    APIError,
    BadRequestError,
    DeadlineExceededError,
    NotFoundError,
    StreamInterruptedError,
    UnavailableError,
)

_GRPC_ERRORS: tuple[tuple[type[APIError], str], ...] = (
    (BadRequestError, "bad_request"),
    (NotFoundError, "not_found"),
    (StreamInterruptedError, "stream_interrupted"),  # before its base class UnavailableError
    (UnavailableError, "unavailable"),
    (DeadlineExceededError, "timeout"),
)
_HTTP_STATUS_ERRORS = {400: "bad_request", 404: "not_found", 413: "bad_request", 422: "bad_request",
                       429: "overloaded", 503: "unavailable", 504: "timeout"}  # fmt: skip
_STREAM_EVENT_ERRORS = {"invalid_request_error": "bad_request", "service_unavailable": "stream_interrupted",
                        "timeout": "timeout"}  # fmt: skip


@dataclass(frozen=True)
class SamplingOptions:
    """Request fields every benchmark request carries."""

    temperature: float = 0.0
    ignore_eos: bool = False
    """Ask for exactly ``max_tokens`` (``nvext.ignore_eos``, as NIMs accept it)."""
    model: str | None = None


def chat_body(request: BenchRequest, options: SamplingOptions) -> dict[str, Any]:
    """The streamed OpenAI chat request for one benchmark request."""
    body: dict[str, Any] = {
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": options.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if options.model:
        body["model"] = options.model
    if options.ignore_eos:
        body["nvext"] = {"ignore_eos": True}
    return body


class Target(Protocol):
    description: str

    async def send(self, request: BenchRequest, options: SamplingOptions) -> RequestRecord: ...

    async def close(self) -> None: ...


class _Tally:
    """Folds stream chunks (OpenAI ``chat.completion.chunk`` dicts) into a record."""

    def __init__(self, request: BenchRequest) -> None:
        self.record = RequestRecord(start=time.perf_counter(), input_tokens=request.input_tokens)
        self._token_chunks = 0
        self._usage_seen = False

    def chunk(self, chunk: Mapping[str, Any]) -> None:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls"):
                if self.record.first_token is None:
                    self.record.first_token = time.perf_counter()
                self._token_chunks += 1
        usage = chunk.get("usage")
        if usage:
            self._usage_seen = True
            self.record.output_tokens = int(usage.get("completion_tokens") or 0)
            self.record.input_tokens = int(usage.get("prompt_tokens") or 0) or self.record.input_tokens

    def finish(self) -> RequestRecord:
        self.record.end = time.perf_counter()
        if not self._usage_seen:
            # A server that sends no usage: each chunk carrying text is counted as one token.
            self.record.output_tokens = self._token_chunks
        return self.record

    def fail(self, error_type: str, message: str) -> RequestRecord:
        self.record.end = time.perf_counter()
        self.record.error_type = error_type
        self.record.error_message = message
        return self.record


def grpc_error_type(error: Exception) -> str:
    for cls, name in _GRPC_ERRORS:
        if isinstance(error, cls):
            return name
    return "server_error" if isinstance(error, APIError) else type(error).__name__


class GrpcTarget:
    """:class:`~nemo_client.AsyncNemoClient` (one gRPC stream per request): through Triton's ``chat`` model, or
    with ``direct`` on the direct path (the chat core here, streaming the ``tensorrt_llm`` model)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        direct: bool = False,
        tokenizer_file: Path | None = None,
        lb_policy: LbPolicy = DEFAULT_LB_POLICY,
    ) -> None:
        self.description = f"grpc://{url} ({'direct: model tensorrt_llm' if direct else 'model chat'})"
        self._client = AsyncNemoClient(
            url, timeout=timeout_s, max_retries=0, direct=direct, tokenizer_file=tokenizer_file, lb_policy=lb_policy
        )

    async def send(self, request: BenchRequest, options: SamplingOptions) -> RequestRecord:
        tally = _Tally(request)
        try:
            stream = await self._client.chat.completions.create_from_body(chat_body(request, options))
            async with stream:
                async for chunk in stream:
                    tally.chunk(chunk.model_dump(exclude_unset=True))
        except Exception as error:
            return tally.fail(grpc_error_type(error), str(error))
        return tally.finish()

    async def close(self) -> None:
        await self._client.close()


class HttpTarget:
    """An OpenAI-compatible ``/v1/chat/completions`` (the gateway, or any NIM), read as server-sent events."""

    def __init__(self, base_url: str, *, timeout_s: float, max_connections: int, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.description = f"{self.base_url}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers=headers,
        )

    async def send(self, request: BenchRequest, options: SamplingOptions) -> RequestRecord:
        tally = _Tally(request)
        try:
            async with self._client.stream("POST", self.description, json=chat_body(request, options)) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode("utf-8", "replace")
                    return tally.fail(_HTTP_STATUS_ERRORS.get(response.status_code, _status_type(response)), body)
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    if data == "[DONE]":
                        return tally.finish()
                    event = json.loads(data)
                    if "error" in event:
                        error = event["error"] or {}
                        kind = _STREAM_EVENT_ERRORS.get(str(error.get("type")), "server_error")
                        return tally.fail(kind, str(error.get("message")))
                    tally.chunk(event)
            return tally.fail("stream_interrupted", "the event stream ended without 'data: [DONE]'")
        except httpx.TimeoutException as error:
            return tally.fail("timeout", f"{type(error).__name__}: {error}")
        except httpx.ConnectError as error:
            return tally.fail("connection_error", f"cannot connect to {self.base_url}: {error}")
        except (httpx.HTTPError, json.JSONDecodeError) as error:
            return tally.fail("stream_interrupted", f"{type(error).__name__}: {error}")

    async def close(self) -> None:
        await self._client.aclose()


class EndpointsInTurn:
    """Several targets (gateways, Triton servers), each request to the next in turn; each record names its target."""

    def __init__(self, targets: Mapping[str, Target]) -> None:
        if not targets:
            raise ValueError("no endpoint to send to")
        self._targets = list(targets.items())
        self._next = 0
        self.description = " + ".join(target.description for _, target in self._targets)

    async def send(self, request: BenchRequest, options: SamplingOptions) -> RequestRecord:
        name, target = self._targets[self._next]
        self._next = (self._next + 1) % len(self._targets)
        record = await target.send(request, options)
        record.endpoint = name
        return record

    async def close(self) -> None:
        for _, target in self._targets:
            await target.close()


def _status_type(response: httpx.Response) -> str:
    return "server_error" if response.status_code >= 500 else f"http_{response.status_code}"
