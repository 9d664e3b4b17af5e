"""One upstream call turned into the HTTP answer: a JSON body, or server-sent events ending in ``data: [DONE]``.

Errors raised before the answer starts go to the app's exception handler; an error in the middle of a
stream is sent as the stream's last event. Closing the stream (the client went away) cancels the request
on Triton. The request counts in flight, and holds its admission slot, until its answer ends, however it ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import anyio
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from nemo_client.streaming import AsyncStream
from nemo_gateway.admission import Slot
from nemo_gateway.metering import RequestMeter
from nemo_gateway.metrics import GatewayMetrics
from nemo_protocol.end_user import end_user_line
from nemo_protocol.errors import APIError, ServerError

logger = logging.getLogger("nemo_gateway")

ChunkShaper = Callable[[dict[str, Any]], "tuple[dict[str, Any] | None, bool]"]
"""Turns a stream item into the SSE payload (None to skip it) and says whether it carries a token."""
UsageOf = Callable[[dict[str, Any]], "Mapping[str, Any] | None"]
"""The chat-shaped ``usage`` (prompt and completion tokens) that a result or stream item carries, if any."""

DONE = b"data: [DONE]\n\n"


def _top_level_usage(result: dict[str, Any]) -> Mapping[str, Any] | None:
    usage: Mapping[str, Any] | None = result.get("usage")
    return usage


class _Ending:
    """What ends with the answer, once however it ends: the in-flight count and the admission slot."""

    def __init__(self, metrics: GatewayMetrics, slot: Slot | None) -> None:
        self._metrics = metrics
        self._slot = slot
        self.done = False
        metrics.in_flight.inc()

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self._metrics.in_flight.dec()
            if self._slot is not None:
                self._slot.release()


async def relay(
    call: Awaitable[Any],
    *,
    meter: RequestMeter,
    metrics: GatewayMetrics,
    shape: ChunkShaper,
    end_user: str | None = None,
    slot: Slot | None = None,
    usage_of: UsageOf = _top_level_usage,
    named_events: bool = False,
) -> Response:
    """Await ``call`` (counted in flight meanwhile) and answer with its result, whole or streamed.

    ``end_user``: the request's ``user``, logged with the answer's id (the chat core logs its own). ``slot``: the
    request's admission slot, released when the answer ends. ``usage_of``: where results keep their usage (the
    chat APIs: ``usage``). ``named_events``: each SSE frame names its payload's ``type`` (``event:``) and the stream
    ends with its last event rather than ``data: [DONE]`` (the Responses API)."""
    ending = _Ending(metrics, slot)
    try:
        result = await call
    except BaseException:
        ending()
        raise
    if isinstance(result, AsyncStream):
        events = _server_sent_events(result, shape, metrics, meter, end_user, ending, usage_of, named_events)
        return _EventStream(events, result, ending)
    ending()
    payload = _payload(result)
    _log_end_user(payload, end_user)
    metrics.count_usage(usage_of(payload))
    metrics.generation_done(meter.elapsed(), None, usage_of(payload))
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse(payload)


class _EventStream(StreamingResponse):
    """The SSE answer; when it is over, however (the client may leave before the events begin, and then they never
    run), the upstream stream is closed and the request's ending done."""

    def __init__(self, events: AsyncGenerator[bytes, None], upstream: AsyncStream[Any], ending: _Ending) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._events = events
        self._upstream = upstream
        self._ending = ending

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()  # its own clean-up, where it started
                if not self._ending.done:  # it never started
                    self._ending()
                    await self._upstream.aclose()


async def _server_sent_events(
    stream: AsyncStream[Any],
    shape: ChunkShaper,
    metrics: GatewayMetrics,
    meter: RequestMeter,
    end_user: str | None,
    ending: _Ending,
    usage_of: UsageOf,
    named_events: bool,
) -> AsyncGenerator[bytes, None]:
    """SSE frames of a stream, ``data: [DONE]`` last (unless ``named_events``); an error mid-stream is sent as an
    error event."""
    status, first_token_s, usage = 200, None, None
    try:
        async for chunk in stream:
            raw = _payload(chunk)
            _log_end_user(raw, end_user)
            end_user = None  # once, with the first chunk's id
            usage = usage_of(raw) or usage
            payload, has_token = shape(raw)
            if has_token and first_token_s is None:
                first_token_s = meter.elapsed()
                metrics.first_token(first_token_s)
            if payload is not None:
                yield event(payload, name=payload.get("type") if named_events else None)
        metrics.generation_done(meter.elapsed(), first_token_s, usage)
        if not named_events:
            yield DONE
    except Exception as exc:  # the answer has started: an error can only be its last event now
        error = _stream_error(exc, meter.endpoint)
        status = error.status_code
        metrics.failed(error.error_type)
        yield event(error.to_openai())
    finally:
        try:
            await stream.aclose()
        finally:
            ending()
            metrics.answered(meter.endpoint, status, meter.elapsed())


def _log_end_user(payload: dict[str, Any], end_user: str | None) -> None:
    if end_user is not None:
        logger.info(end_user_line(str(payload.get("id")), end_user))


def _stream_error(exc: Exception, endpoint: str) -> APIError:
    """The error a broken stream reports; server-side failures are logged, a bug with its traceback."""
    if not isinstance(exc, APIError):
        logger.error("%s stream failed", endpoint, exc_info=exc)
        return ServerError("the gateway failed while streaming the answer (see its log)")
    if isinstance(exc, ServerError):
        logger.error("%s stream failed: %s", endpoint, exc.message)
    return exc


def event(payload: dict[str, Any], name: str | None = None) -> bytes:
    """One SSE frame carrying ``payload`` as JSON, under the event ``name`` when given."""
    data = b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"
    return data if name is None else f"event: {name}\n".encode() + data


def _payload(item: Any) -> dict[str, Any]:
    """The JSON object of a result: the server's own dict, or a typed object dumped as the SDK would."""
    return item if isinstance(item, dict) else item.model_dump(mode="json", exclude_unset=True)
