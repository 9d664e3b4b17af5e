"""The OpenAI request body as a dependency: read within the size limit, parsed as a JSON object, its ``model``
checked against the served name. Everything else in it is the server's to validate."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request

from nemo_gateway.dependencies import Settings
from nemo_protocol.errors import BadRequestError, NotFoundError, RequestTooLargeError


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 as soon as it is known to exceed ``limit`` bytes, 400 if it is no JSON object."""
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


def check_served_model(body: dict[str, Any], served: str) -> None:
    """404 when ``model`` names another model; an absent ``model`` means the served one."""
    model = body.get("model")
    if model is not None and model != served:
        raise NotFoundError(f"the model {model!r} does not exist; this server serves {served!r}", param="model")


async def openai_request_body(request: Request, settings: Settings) -> dict[str, Any]:
    body = await read_json_object(request, settings.max_body_bytes)
    check_served_model(body, settings.served_model_name)
    return body


RequestBody = Annotated[dict[str, Any], Depends(openai_request_body)]
