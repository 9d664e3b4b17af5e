"""The gateway's one error path: every failure becomes an OpenAI error body with its HTTP status, counted once.

* :class:`~nemo_protocol.errors.APIError` (raised by dependencies, routes and the client) → ``to_openai()``; a 429
  of admission (:class:`~nemo_gateway.admission.OverloadedError`) with its ``Retry-After`` header;
* a request FastAPI cannot validate, or whose JSON is malformed → 400 naming the field and the problem;
* an unknown path or method → 404 / 405;
* anything else → 500, logged (Starlette then re-raises it to the server, which logs the traceback).

Errors in the middle of a stream cannot change the status any more; :mod:`nemo_gateway.relay` sends them
as the stream's last event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nemo_gateway.admission import OverloadedError
from nemo_gateway.metering import current_meter
from nemo_gateway.metrics import GatewayMetrics
from nemo_protocol.errors import APIError, AuthenticationError, BadRequestError, NotFoundError, ServerError

logger = logging.getLogger("nemo_gateway")

_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class HTTPStatusError(APIError):
    """An error known only by its HTTP status (a 405, say), in the OpenAI shape."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = "invalid_request_error" if status_code < 500 else "server_error"


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception an answer can still be given for through :func:`handle_error`."""
    for kind in (APIError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle_error)


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: the exception as an :class:`APIError`, answered by :func:`error_response`."""
    headers = exc.headers if isinstance(exc, StarletteHTTPException) else None
    return error_response(request, as_api_error(request, exc), headers)


def error_response(request: Request, error: APIError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The answer to ``error``, counted in the error and request metrics (the latter where a route meters)."""
    metrics: GatewayMetrics = request.app.state.metrics
    metrics.failed(error.error_type)
    meter = current_meter(request)
    if meter is not None:
        metrics.answered(meter.endpoint, error.status_code, meter.elapsed())
    headers = dict(headers or {})
    if isinstance(error, AuthenticationError):
        headers.setdefault("WWW-Authenticate", "Bearer")
    if isinstance(error, OverloadedError):
        headers.update(error.headers)
    return JSONResponse(error.to_openai(), status_code=error.status_code, headers=headers or None)


def as_api_error(request: Request, exc: Exception) -> APIError:
    """What the client is told about ``exc``; an exception nobody expected is logged, with its type, and hidden."""
    if isinstance(exc, APIError):
        if isinstance(exc, ServerError):
            logger.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors())
    if isinstance(exc, StarletteHTTPException):
        return http_error(exc, f"{request.method} {request.url.path}")
    logger.error("%s %s raised %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return ServerError("the gateway failed while handling the request (see its log)")


def http_error(exc: StarletteHTTPException, where: str) -> APIError:
    """Starlette's own HTTP errors (unknown path 404, wrong method 405, ...) in the OpenAI shape."""
    default = exc.detail == HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404:
        return NotFoundError(f"no such route: {where}" if default else str(exc.detail))
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow")
        return HTTPStatusError(405, f"method not allowed: {where}" + (f"; allowed: {allowed}" if allowed else ""))
    if exc.status_code == 401:
        return AuthenticationError(str(exc.detail))
    return HTTPStatusError(exc.status_code, str(exc.detail))


def validation_error(errors: Sequence[Any]) -> BadRequestError:
    """One 400 for FastAPI's validation errors: each problem named by its field, the first as ``param``."""
    if not errors:
        return BadRequestError("the request is invalid")
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error") or first.get("msg", "")
        return BadRequestError(f"the request body is not valid JSON: {reason}")
    problems = [f"{field_path(e.get('loc', ())) or 'body'}: {e.get('msg', 'invalid')}" for e in errors]
    return BadRequestError("; ".join(problems), param=field_path(first.get("loc", ())) or None)


def field_path(loc: Sequence[str | int]) -> str:
    """``("body", "messages", 0, "role")`` → ``messages[0].role``, as OpenAI error bodies name a field."""
    parts = list(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
