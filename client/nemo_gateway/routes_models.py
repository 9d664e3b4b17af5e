"""``GET /v1/models`` and ``GET /v1/models/{id}``: the served model, under its served name, with its
``max_model_len`` (read from Triton), and each LoRA adapter the deployment serves by name."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from nemo_gateway.dependencies import Client, Metrics, Settings
from nemo_gateway.metering import Meter
from nemo_gateway.openai_router import openai_router
from nemo_protocol.errors import NotFoundError

router = openai_router("models")


async def served_models(client: Client, settings: Settings) -> list[dict[str, Any]]:
    """The base model under the gateway's served name, then the deployment's LoRA adapters (``parent``: the base)."""
    base, *adapters = await client.models.list(timeout=settings.request_timeout_s)
    served = {"id": settings.served_model_name, "object": "model", "created": 0, "owned_by": "mistralai"}
    extra = base.model_extra or {}
    limits = {"max_model_len": extra["max_model_len"]} if "max_model_len" in extra else {}
    loras = [{**served, "id": adapter.id, "parent": settings.served_model_name, **limits} for adapter in adapters]
    return [{**served, **limits}, *loras]


@router.get("/v1/models", name="models")
async def list_models(meter: Meter, settings: Settings, metrics: Metrics, client: Client) -> JSONResponse:
    models = await served_models(client, settings)
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse({"object": "list", "data": models})


@router.get("/v1/models/{model_id:path}", name="model")
async def get_model(model_id: str, meter: Meter, settings: Settings, metrics: Metrics, client: Client) -> JSONResponse:
    models = await served_models(client, settings)
    found = [model for model in models if model["id"] == model_id]
    if not found:
        served = ", ".join(repr(model["id"]) for model in models)
        raise NotFoundError(f"the model {model_id!r} does not exist; this server serves {served}", param="model")
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse(found[0])
