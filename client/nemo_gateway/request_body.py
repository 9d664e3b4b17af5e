"""The OpenAI request body as a dependency: read within the size limit, parsed as a JSON object of bounded
nesting and valid text, its ``model`` dropped when it is the served name. The routes check their own limits
(messages, tools, stop strings, tokens); everything else in it is the server's to validate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from nemo_gateway.dependencies import Settings
from nemo_protocol.errors import RequestTooLargeError
from nemo_protocol.json_values import parse_json_object


async def read_json_object(request: Request, limit: int, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object; 413 as soon as it is known to exceed ``limit`` bytes, 400 if it is no JSON
    object, nests deeper than ``max_depth`` or holds text that is not valid Unicode."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"the request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return parse_json_object(b"".join(chunks), max_depth=max_depth)


async def openai_request_body(request: Request, settings: Settings) -> dict[str, Any]:
    """The body; ``model`` dropped when it names the served model (absent means it too). Any other name stays for the
    server to resolve: a LoRA adapter it serves by name, or a 404 naming the served names."""
    body = await read_json_object(request, settings.limits.max_body_bytes, settings.limits.max_json_depth)
    # The gateway answers to its own served name (--served-model-name); upstream, the deployment knows itself
    # by the name its repository was rendered with, which the request need not repeat.
    if body.get("model") == settings.served_model_name:
        body.pop("model")
    return body


RequestBody = Annotated[dict[str, Any], Depends(openai_request_body)]
