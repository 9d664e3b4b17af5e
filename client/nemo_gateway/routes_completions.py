"""``POST /v1/chat/completions`` (the Triton ``chat`` model) and ``POST /v1/completions`` (the ``ensemble``).

The chat body goes to the ``chat`` model as it is: validation lives in one place, the server, and its
errors come back as OpenAI error bodies with the matching HTTP status. A completion body is read by the chat
core's ``CompletionRequest``, as the client reads its own arguments; the client reports the ensemble's refusals
as errors naming the request's fields.

Both are admitted (:mod:`nemo_gateway.admission`) after their own checks and before anything goes upstream: a
request past the bounds is answered 429, and an admitted one holds its slots (one per generation) until its answer
ends.
"""

from __future__ import annotations

from typing import Any

from fastapi import Response

from nemo_chat_core.completion_request import CompletionRequest
from nemo_gateway.dependencies import Admitting, Client, Metrics, Settings
from nemo_gateway.fan_out import choice_count, create_n
from nemo_gateway.metering import Meter
from nemo_gateway.metrics import GatewayMetrics
from nemo_gateway.openai_router import openai_router
from nemo_gateway.relay import ChunkShaper, relay
from nemo_gateway.request_body import RequestBody
from nemo_protocol.errors import BadRequestError

router = openai_router("completions")


@router.post("/v1/chat/completions", name="chat")
async def chat_completions(
    body: RequestBody, meter: Meter, client: Client, settings: Settings, metrics: Metrics, admission: Admitting
) -> Response:
    settings.limits.check_chat(body)
    stream_options = body.get("stream_options")
    wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    # A malformed stream_options (include_usage not a boolean included) goes to the server as it is, which
    # refuses it naming the field.
    well_formed = stream_options is None or (
        isinstance(stream_options, dict) and isinstance(stream_options.get("include_usage", False), bool | None)
    )
    if body.get("stream") and well_formed:
        # Usage is always asked for so that the token metrics see streams; the caller gets it only when
        # they asked for it.
        body = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
    body, n = as_nvext(body), choice_count(body)
    slot = await admission.acquire(n)  # 429 past the admission bounds
    if n > 1:
        call = create_n(client, body, n, settings.request_timeout_s)
    else:
        call = client.chat.completions.create_from_body(body, timeout=settings.request_timeout_s, raw=True)
    return await relay(call, meter=meter, metrics=metrics, shape=chat_chunk_shaper(metrics, wants_usage), slot=slot)


@router.post("/v1/completions", name="completions")
async def completions(
    body: RequestBody, meter: Meter, client: Client, settings: Settings, metrics: Metrics, admission: Admitting
) -> Response:
    request = CompletionRequest.from_body(body, limits=settings.limits)  # model: a LoRA adapter, or absent (the base)
    slot = await admission.acquire(len(request.prompts) * request.n)
    call = client.completions.create_from_request(request, timeout=settings.request_timeout_s)
    shape = completion_chunk_shaper(metrics, include_usage=request.include_usage, every=request.continuous_usage)
    return await relay(call, meter=meter, metrics=metrics, shape=shape, end_user=request.user, slot=slot)


CHAT_NVEXT_ALIASES = frozenset({"top_k", "repetition_penalty", "ignore_eos"})
"""The chat core reads these from ``nvext``; vLLM (and aiperf) send them at the top level."""


def as_nvext(body: dict[str, Any]) -> dict[str, Any]:
    """A chat ``body`` with its top-level vLLM spellings moved into ``nvext``; 400 when a field is given both ways,
    differently."""
    aliases = {key: body[key] for key in CHAT_NVEXT_ALIASES if key in body}
    nvext = body.get("nvext")
    if not aliases or (nvext is not None and not isinstance(nvext, dict)):
        return body  # nothing to move, or an nvext the chat core refuses by name
    merged = dict(nvext or {})
    for key, value in aliases.items():
        if key in merged and merged[key] != value:
            raise BadRequestError(f"differs from the top-level {key} ({value!r}): give one", param=f"nvext.{key}")
        merged[key] = value
    return {**{k: v for k, v in body.items() if k not in aliases}, "nvext": merged}


def chat_chunk_shaper(metrics: GatewayMetrics, wants_usage: bool) -> ChunkShaper:
    """Counts each chunk's usage; drops it (and a usage-only chunk) unless the caller asked for usage."""

    def shape(chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        if chunk.get("usage") is not None:
            metrics.count_usage(chunk["usage"])
            if not wants_usage:
                if not chunk.get("choices"):
                    return None, False
                chunk = {key: value for key, value in chunk.items() if key != "usage"}
        deltas = [choice.get("delta") or {} for choice in chunk.get("choices") or []]
        return chunk, any(delta.get("content") or delta.get("tool_calls") for delta in deltas)

    return shape


def completion_chunk_shaper(metrics: GatewayMetrics, *, include_usage: bool, every: bool) -> ChunkShaper:
    """Every chunk carries the usage so far: counted on the last, kept on every chunk with ``every``
    (``stream_options.continuous_usage_stats``, vLLM's), on the last with ``include_usage``, else dropped."""

    def shape(chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
        choices = chunk.get("choices") or []
        last = bool(choices and choices[0].get("finish_reason"))
        if chunk.get("usage") is not None:
            if last:
                metrics.count_usage(chunk["usage"])
            if not (every or (last and include_usage)):
                chunk = {key: value for key, value in chunk.items() if key != "usage"}
        return chunk, bool(choices and choices[0].get("text"))

    return shape
