"""``GET /v1/models`` and ``GET /v1/models/{id}``: the one served model, under its served name, with its
``max_model_len`` (read from Triton)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from nemo_gateway.dependencies import Client, Metrics, Settings
from nemo_gateway.metering import Meter
from nemo_gateway.openai_router import openai_router
from nemo_protocol.errors import NotFoundError

router = openai_router("models")


async def served_model(client: Client, settings: Settings) -> dict[str, Any]:
    [model] = await client.models.list(timeout=settings.request_timeout_s)
    served = {"id": settings.served_model_name, "object": "model", "created": 0, "owned_by": "mistralai"}
    extra = model.model_extra or {}
    return {**served, **({"max_model_len": extra["max_model_len"]} if "max_model_len" in extra else {})}


@router.get("/v1/models", name="models")
async def list_models(meter: Meter, settings: Settings, metrics: Metrics, client: Client) -> JSONResponse:
    model = await served_model(client, settings)
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse({"object": "list", "data": [model]})


@router.get("/v1/models/{model_id:path}", name="model")
async def get_model(model_id: str, meter: Meter, settings: Settings, metrics: Metrics, client: Client) -> JSONResponse:
    if model_id != settings.served_model_name:
        raise NotFoundError(
            f"the model {model_id!r} does not exist; this server serves {settings.served_model_name!r}", param="model"
        )
    model = await served_model(client, settings)
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse(model)
