"""The gateway's FastAPI application: OpenAI routes mapped onto the Triton ``chat`` and ``ensemble`` models.

The request body goes to the ``chat`` model as it is: validation lives in one place, the server, and
its errors come back as OpenAI error bodies with the matching HTTP status. A client that disconnects
mid-stream cancels its request on Triton.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from nemo_protocol.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RequestTooLargeError,
    ServerError,
)

from nemo_client.client import AsyncNemoClient, AsyncStream
from nemo_gateway.metrics import GatewayMetrics

logger = logging.getLogger("nemo_gateway")
DEFAULT_SERVED_MODEL_NAME = "mistralai/mistral-nemo-12b-instruct"
ChunkShaper = Callable[[dict[str, Any]], "tuple[dict[str, Any] | None, bool]"]
"""Turns a stream item into the SSE payload (None to skip it) and says whether it carries a token."""


@dataclass(frozen=True)
class GatewaySettings:
    triton_url: str = "localhost:8001"
    served_model_name: str = DEFAULT_SERVED_MODEL_NAME
    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    request_timeout_s: float = 600.0


def create_app(settings: GatewaySettings) -> FastAPI:
    metrics = GatewayMetrics()
    state: dict[str, AsyncNemoClient] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The gRPC channel must live on the server's event loop.
        state["client"] = AsyncNemoClient(
            settings.triton_url, model=settings.served_model_name, timeout=settings.request_timeout_s
        )
        yield
        await state["client"].close()

    app = FastAPI(title="Mistral NeMo gateway", version=_version(), lifespan=lifespan)

    def authorize(request: Request) -> None:
        if settings.api_key and request.headers.get("authorization", "") != f"Bearer {settings.api_key}":
            raise AuthenticationError("missing or wrong API key: send 'Authorization: Bearer <key>'")

    async def answer(endpoint: str, started: float, call: Awaitable[Any], shape: ChunkShaper) -> Response:
        """Run one upstream call and turn its result, stream or not, into the HTTP response."""
        metrics.in_flight.inc()
        try:
            result = await call
        except BaseException:
            metrics.in_flight.dec()
            raise
        if isinstance(result, AsyncStream):
            events = _server_sent_events(result, shape, metrics, endpoint, started)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        metrics.in_flight.dec()
        payload = _payload(result)
        _count_usage(metrics, payload.get("usage"))
        metrics.requests.labels(endpoint, "200").inc()
        metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)
        return JSONResponse(payload)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        try:
            authorize(request)
            body = await _json_body(request, settings.max_body_bytes)
            _check_model(body, settings.served_model_name)
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if body.get("stream"):
                # Usage is always asked for so that the token metrics see streams; the caller gets it
                # only when they asked for it.
                body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
            call = state["client"].chat.completions.create_from_body(body, timeout=settings.request_timeout_s, raw=True)
            return await answer("chat", started, call, _chat_chunk_shaper(metrics, wants_usage))
        except APIError as error:
            return _error_response(error, metrics, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        started = time.perf_counter()
        try:
            authorize(request)
            body = await _json_body(request, settings.max_body_bytes)
            _check_model(body, settings.served_model_name)
            call = state["client"].completions.create(**_completion_params(body), timeout=settings.request_timeout_s)
            return await answer("completions", started, call, _completion_chunk_shaper)
        except APIError as error:
            return _error_response(error, metrics, "completions")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            authorize(request)
        except APIError as error:
            return _error_response(error, metrics, "models")
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": settings.served_model_name, "object": "model", "created": 0, "owned_by": "mistralai"}],
            }
        )

    @app.get("/v1/health/live")
    async def live() -> Response:
        return JSONResponse({"object": "health.response", "message": "Service is live."})

    @app.get("/v1/health/ready")
    async def ready() -> Response:
        health = await state["client"].health()
        if health.ready and all(health.models.values()):
            return JSONResponse({"object": "health.response", "message": "Service is ready."})
        not_ready = [name for name, ok in health.models.items() if not ok]
        message = "Triton is not reachable." if not health.live else f"Not ready: {', '.join(not_ready) or 'server'}."
        return JSONResponse({"object": "health.response", "message": message}, status_code=503)

    @app.get("/v1/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/version")
    async def version() -> Response:
        return JSONResponse({"release": _version(), "api": "v1"})

    return app


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"the request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


def _check_model(body: dict[str, Any], served: str) -> None:
    model = body.get("model")
    if model is None:
        return
    if model != served:
        raise NotFoundError(f"the model {model!r} does not exist; this server serves {served!r}", param="model")


def _completion_params(body: dict[str, Any]) -> dict[str, Any]:
    accepted = {
        "model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop",
        "presence_penalty", "frequency_penalty", "stream",
    }  # fmt: skip
    unknown = sorted(set(body) - accepted)
    if unknown:
        raise BadRequestError(
            f"unsupported field {unknown[0]!r}; accepted: {', '.join(sorted(accepted))}", param=unknown[0]
        )
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        body = {**body, "prompt": prompt[0]}
    elif not isinstance(prompt, str):
        raise BadRequestError("prompt must be a string (or a list of one string)", param="prompt")
    return {key: value for key, value in body.items() if value is not None}


def _chat_chunk_shaper(metrics: GatewayMetrics, wants_usage: bool) -> ChunkShaper:
    def shape(chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        if chunk.get("usage") is not None:
            _count_usage(metrics, chunk["usage"])
            if not wants_usage:
                if not chunk.get("choices"):
                    return None, False
                chunk = {key: value for key, value in chunk.items() if key != "usage"}
        deltas = [choice.get("delta") or {} for choice in chunk.get("choices") or []]
        return chunk, any(delta.get("content") or delta.get("tool_calls") for delta in deltas)

    return shape


def _completion_chunk_shaper(chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    choices = chunk.get("choices") or []
    return chunk, bool(choices and choices[0].get("text"))


def _payload(item: Any) -> dict[str, Any]:
    """The JSON object of a result: the server's own dict, or a typed object dumped as the SDK would."""
    return item if isinstance(item, dict) else item.model_dump(mode="json", exclude_unset=True)


async def _server_sent_events(
    stream: AsyncStream[Any], shape: ChunkShaper, metrics: GatewayMetrics, endpoint: str, started: float
) -> AsyncIterator[bytes]:
    """SSE frames of a stream, ``data: [DONE]`` last; an error mid-stream is sent as an error event."""
    status, waiting_for_first_token = "200", True
    try:
        async for chunk in stream:
            payload, has_token = shape(_payload(chunk))
            if has_token and waiting_for_first_token:
                metrics.time_to_first_token.observe(time.perf_counter() - started)
                waiting_for_first_token = False
            if payload is not None:
                yield _event(payload)
        yield b"data: [DONE]\n\n"
    except APIError as error:
        status = str(error.status_code)
        metrics.errors.labels(error.error_type).inc()
        yield _event(error.to_openai())
    finally:
        await stream.aclose()
        metrics.in_flight.dec()
        metrics.requests.labels(endpoint, status).inc()
        metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


def _count_usage(metrics: GatewayMetrics, usage: dict[str, Any] | None) -> None:
    if usage:
        metrics.prompt_tokens.inc(usage.get("prompt_tokens") or 0)
        metrics.completion_tokens.inc(usage.get("completion_tokens") or 0)


def _error_response(error: APIError, metrics: GatewayMetrics, endpoint: str) -> JSONResponse:
    if isinstance(error, ServerError):
        logger.error("request failed: %s", error.message)
    metrics.errors.labels(error.error_type).inc()
    metrics.requests.labels(endpoint, str(error.status_code)).inc()
    return JSONResponse(error.to_openai(), status_code=error.status_code)


def _version() -> str:
    try:
        return metadata.version("mistral-nemo-trtllm")
    except metadata.PackageNotFoundError:
        return "0+unknown"
