"""The OpenAI request body as a dependency: read within the size limit and the body deadline, parsed as a JSON object
of bounded nesting and valid text, its ``model`` dropped when it is the served name. The routes check their own limits
(messages, tools, stop strings, tokens); everything else in it is the server's to validate.

A body that stalls is cut at ``body_timeout_s`` (408), and at once when the gateway starts shutting down (503, so
that a stalled upload cannot hold the graceful shutdown); a caller that hangs up mid-upload is counted as a client
disconnect (499), not logged or counted as a server error."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from nemo_gateway.dependencies import Settings
from nemo_protocol.errors import APIError, RequestTooLargeError, UnavailableError
from nemo_protocol.json_values import parse_json_object


class RequestTimeoutError(APIError):
    """The request body did not arrive within the body deadline."""

    status_code = 408
    error_type = "request_timeout"


class ClientDisconnectedError(APIError):
    """The caller hung up before its request was read: nobody gets this answer, the metrics count it (499, as
    nginx logs a client that closed the connection)."""

    status_code = 499
    error_type = "client_disconnected"


async def read_json_object(request: Request, limit: int, max_depth: int, timeout_s: float) -> dict[str, Any]:
    """The body as a JSON object; 413 as soon as it is known to exceed ``limit`` bytes, 408 when it has not arrived
    whole within ``timeout_s`` seconds, 503 when the gateway starts shutting down meanwhile, 499 when the caller
    disconnects; 400 if it is no JSON object, nests deeper than ``max_depth`` or holds text that is not valid
    Unicode."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"the request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []

    async def read() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(f"the request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)

    reading = asyncio.ensure_future(read())
    draining = asyncio.ensure_future(shutting_down(request).wait())
    try:
        done, _ = await asyncio.wait({reading, draining}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        draining.cancel()
        if not reading.done():
            reading.cancel()
    if reading in done:
        try:
            reading.result()
        except ClientDisconnect:
            raise ClientDisconnectedError("the client disconnected before its request body was read") from None
        return parse_json_object(b"".join(chunks), max_depth=max_depth)
    came = sum(len(chunk) for chunk in chunks)
    of = f" of {declared}" if declared is not None else ""
    if draining in done:
        raise UnavailableError(f"the gateway is shutting down; {came}{of} bytes of the request body had come: retry")
    raise RequestTimeoutError(
        f"the request body did not arrive within {timeout_s:g} s ({came}{of} bytes came; the gateway's --body-timeout)"
    )


def shutting_down(request: Request) -> asyncio.Event:
    """Set when the server hosting the app starts its graceful shutdown (:class:`nemo_gateway.server.GatewayServer`)."""
    event: asyncio.Event = request.app.state.shutting_down
    return event


async def openai_request_body(request: Request, settings: Settings) -> dict[str, Any]:
    """The body; ``model`` dropped when it names the served model (absent means it too). Any other name stays for the
    server to resolve: a LoRA adapter it serves by name, or a 404 naming the served names."""
    limits = settings.limits
    body = await read_json_object(request, limits.max_body_bytes, limits.max_json_depth, settings.body_timeout_s)
    # The gateway answers to its own served name (--served-model-name); upstream, the deployment knows itself
    # by the name its repository was rendered with, which the request need not repeat.
    if body.get("model") == settings.served_model_name:
        body.pop("model")
    return body


RequestBody = Annotated[dict[str, Any], Depends(openai_request_body)]
