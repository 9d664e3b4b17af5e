"""``GET /v1/models``: the one served model, under its served name."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from nemo_gateway.dependencies import Metrics, Settings
from nemo_gateway.metering import Meter
from nemo_gateway.openai_router import openai_router

router = openai_router("models")


@router.get("/v1/models", name="models")
async def list_models(meter: Meter, settings: Settings, metrics: Metrics) -> JSONResponse:
    model = {"id": settings.served_model_name, "object": "model", "created": 0, "owned_by": "mistralai"}
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse({"object": "list", "data": [model]})
