"""The service routes, open without an API key: ``/v1/health/live``, ``/v1/health/ready``, ``/v1/metrics``
(also at ``/metrics``), ``/v1/version``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from nemo_gateway import engine_metrics
from nemo_gateway.dependencies import Client, Metrics, Settings
from nemo_gateway.version import release

router = APIRouter(tags=["service"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


@router.get("/v1/health/live", name="live")
async def live() -> JSONResponse:
    return JSONResponse({"object": "health.response", "message": "Service is live."})


@router.get("/v1/health/ready", name="ready")
async def ready(client: Client) -> JSONResponse:
    """200 when Triton and both models the gateway calls are ready; 503 naming what is not."""
    health = await client.health()
    if health.ready and all(health.models.values()):
        return JSONResponse({"object": "health.response", "message": "Service is ready."})
    not_ready = [name for name, ok in health.models.items() if not ok]
    message = "Triton is not reachable." if not health.live else f"Not ready: {', '.join(not_ready) or 'server'}."
    return JSONResponse({"object": "health.response", "message": message}, status_code=503)


@router.get("/v1/metrics", name="metrics")
@router.get("/metrics", name="metrics_unversioned", include_in_schema=False)  # vLLM's path, where aiperf looks
async def prometheus(metrics: Metrics, settings: Settings) -> Response:
    """The gateway's metrics and the engine's, read from Triton's metrics endpoint now."""
    url = settings.triton_metrics_url or engine_metrics.default_metrics_url(settings.triton_url)
    samples = await engine_metrics.scrape(url)
    figures = engine_metrics.engine_figures(samples or {})
    return Response(metrics.render(engine_metrics.families(figures, samples is not None)), media_type=PROMETHEUS_TEXT)


@router.get("/v1/version", name="version")
async def version() -> JSONResponse:
    return JSONResponse({"release": release(), "api": "v1"})
