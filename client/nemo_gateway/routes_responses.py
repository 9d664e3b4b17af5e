"""The OpenAI Responses API: ``POST /v1/responses``, ``GET`` / ``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items``.

A request is read into a chat body (:mod:`nemo_gateway.responses_request`) and served by the same call as
``/v1/chat/completions`` (the chat core: v3 prompt, tool-call parsing, guided output), admitted and metered as
chat is; its answer is reshaped (:mod:`nemo_gateway.responses_output`). With ``store`` (the default when the
gateway has a store) the finished response, its input and the conversation before it are kept
(:mod:`nemo_gateway.response_store`) under the caller's API key, for ``previous_response_id`` and the reads.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

import anyio
from fastapi import Query, Response
from fastapi.responses import JSONResponse

from nemo_client.streaming import AsyncStream
from nemo_gateway.auth import KeyOwner
from nemo_gateway.dependencies import Admitting, Client, Metrics, ResponseStoreOrNone, Settings
from nemo_gateway.metering import Meter
from nemo_gateway.metrics import GatewayMetrics
from nemo_gateway.openai_router import openai_router
from nemo_gateway.relay import ChunkShaper, relay
from nemo_gateway.request_body import RequestBody
from nemo_gateway.response_store import ResponseStore, StoredResponse
from nemo_gateway.responses_output import ResponseShell, StreamedResponse, chat_usage, whole_response
from nemo_gateway.responses_request import ResponsesRequest
from nemo_protocol.errors import APIError, BadRequestError, NotFoundError

router = openai_router("responses")

MAX_LIST_LIMIT = 100


@router.post("/v1/responses", name="responses")
async def create_response(
    body: RequestBody,
    meter: Meter,
    client: Client,
    settings: Settings,
    metrics: Metrics,
    admission: Admitting,
    store: ResponseStoreOrNone,
    owner: KeyOwner,
) -> Response:
    request = ResponsesRequest.from_body(body)
    keep = request.store if request.store is not None else store is not None
    if keep and store is None:
        raise BadRequestError(
            "this gateway stores no responses (start it with --response-store); send store: false", param="store"
        )
    context: list[dict[str, Any]] = []
    if request.previous_response_id is not None:
        context = (await _stored(store, owner, request.previous_response_id, "previous_response_id")).conversation
    chat_body = request.chat_body(context)
    settings.limits.check_chat(chat_body)
    shell = ResponseShell(settings.served_model_name, request.echo, request.metadata, keep)

    async def save(response: dict[str, Any]) -> None:
        if keep and store is not None:
            stored = StoredResponse(response, request.input_items, context)
            await anyio.to_thread.run_sync(store.put, owner, stored)

    async def answer() -> Any:
        try:
            result = await client.chat.completions.create_from_body(
                chat_body, timeout=settings.request_timeout_s, raw=True
            )
        except BadRequestError as error:
            raise _in_responses_terms(error) from None
        if isinstance(result, AsyncStream):
            return AsyncStream(_events(result, StreamedResponse(shell), save), result.request_id)
        response = whole_response(shell, result)
        await save(response)
        return response

    slot = await admission.acquire(1)
    return await relay(
        answer(),
        meter=meter,
        metrics=metrics,
        shape=_event_shaper(metrics),
        slot=slot,
        usage_of=_usage_of,
        named_events=True,
    )


@router.get("/v1/responses/{response_id}", name="stored_response")
async def get_response(
    response_id: str, meter: Meter, metrics: Metrics, store: ResponseStoreOrNone, owner: KeyOwner
) -> JSONResponse:
    response = (await _stored(store, owner, response_id, "response_id")).response
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse(response)


@router.delete("/v1/responses/{response_id}", name="stored_response")
async def delete_response(
    response_id: str, meter: Meter, metrics: Metrics, store: ResponseStoreOrNone, owner: KeyOwner
) -> JSONResponse:
    deleted = store is not None and await anyio.to_thread.run_sync(store.delete, owner, response_id)
    if not deleted:
        raise _not_found(response_id, "response_id")
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


@router.get("/v1/responses/{response_id}/input_items", name="stored_response")
async def list_input_items(
    response_id: str,
    meter: Meter,
    metrics: Metrics,
    store: ResponseStoreOrNone,
    owner: KeyOwner,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    after: str | None = None,
    include: Annotated[list[str] | None, Query(alias="include[]")] = None,
) -> JSONResponse:
    """This response's own input items (not the earlier turns of its conversation), newest first by default;
    ``after``: the id of the last item of the previous page."""
    if include:
        raise BadRequestError(f"is not supported by this deployment, got {include[0]!r}", param="include")
    items = (await _stored(store, owner, response_id, "response_id")).input_items
    items = items if order == "asc" else items[::-1]
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise BadRequestError(f"{after!r} is not an input item of {response_id!r}", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
    )


async def _stored(store: ResponseStore | None, owner: str, response_id: str, param: str) -> StoredResponse:
    """The stored response ``response_id`` of ``owner``: 404 when there is none (another key's, expired, deleted,
    never stored, or no store at all: the caller cannot tell these apart)."""
    stored = None if store is None else await anyio.to_thread.run_sync(store.get, owner, response_id)
    if stored is None:
        raise _not_found(response_id, param)
    return stored


def _not_found(response_id: str, param: str) -> NotFoundError:
    return NotFoundError(f"no stored response with id {response_id!r} for this API key", param=param)


async def _events(
    chat: AsyncStream[dict[str, Any]], streamed: StreamedResponse, save: Callable[[dict[str, Any]], Awaitable[None]]
) -> AsyncIterator[dict[str, Any]]:
    """The Responses events of a chat stream; the response is stored before its last event is sent."""
    for event in streamed.start():
        yield event
    try:
        async for chunk in chat:
            for event in streamed.feed(chunk):
                yield event
    except APIError as error:  # the answer has started: the stream ends with error and response.failed
        for event in streamed.fail(_in_responses_terms(error).to_openai()):
            yield event
        return
    finally:
        await chat.aclose()
    last = streamed.finish()
    assert streamed.response is not None
    await save(streamed.response)
    for event in last:
        yield event


def _event_shaper(metrics: GatewayMetrics) -> ChunkShaper:
    """Every event goes out; the final one's usage is counted, text and argument deltas are tokens."""

    def shape(event: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        if event["type"] in ("response.completed", "response.incomplete"):
            metrics.count_usage(_usage_of(event))
        return event, event["type"] in ("response.output_text.delta", "response.function_call_arguments.delta")

    return shape


def _usage_of(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A response's usage (the payload, or a stream event carrying one) in the chat shape the metrics count."""
    response = payload.get("response", payload)
    return chat_usage(response.get("usage")) if isinstance(response, Mapping) else None


# The chat core names the chat body's fields; a Responses caller sent these instead.
_PARAM_NAMES = (
    (re.compile(r"^max_tokens$"), "max_output_tokens"),
    (re.compile(r"^response_format(\.json_schema)?"), "text.format"),
    (re.compile(r"^(tools\[\d+\])\.function"), r"\1"),
    (re.compile(r"^tool_choice\.function"), "tool_choice"),
    (re.compile(r"^messages(\[\d+\])?"), "input"),
)


def _in_responses_terms(error: APIError) -> APIError:
    """``error`` with its ``param`` renamed to the Responses field the caller sent."""
    if error.param:
        for pattern, name in _PARAM_NAMES:
            error.param = pattern.sub(name, error.param)
    return error
