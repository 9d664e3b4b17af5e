"""The service routes, open without an API key: ``/v1/health/live``, ``/v1/health/ready``, ``/v1/metrics``
(also at ``/metrics``), ``/v1/version``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from nemo_client.balancer import EndpointState
from nemo_client.triton_transport import TritonTransport
from nemo_gateway import engine_metrics
from nemo_gateway.dependencies import Client, Metrics, Settings
from nemo_gateway.metrics import triton_server_families
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
async def prometheus(request: Request, metrics: Metrics, settings: Settings) -> Response:
    """The gateway's metrics, the Triton servers it sends requests to, and the engine's figures read from their
    metrics endpoints now."""
    servers = await _triton_servers(getattr(request.app.state, "client", None))
    if settings.triton_metrics_url:
        urls = [url.strip() for url in settings.triton_metrics_url.split(",") if url.strip()]
    else:
        urls = engine_metrics.default_metrics_urls(settings.triton_url, [server.name for server in servers or ()])
    read = [samples for samples in await engine_metrics.scrape_all(urls) if samples is not None]
    figures = engine_metrics.combined_figures(read)
    extra = [*engine_metrics.families(figures, len(read) == len(urls), servers=len(read))]
    if servers is not None:
        extra += triton_server_families(servers)
    return Response(metrics.render(extra), media_type=PROMETHEUS_TEXT)


async def _triton_servers(client: object) -> list[EndpointState] | None:
    """The servers the gateway's Triton client spreads requests over (None: a client of another kind)."""
    transport = getattr(client, "transport", None)
    if not isinstance(transport, TritonTransport):
        return None
    await transport.balancer.start()
    return transport.balancer.endpoints()


@router.get("/v1/version", name="version")
async def version() -> JSONResponse:
    return JSONResponse({"release": release(), "api": "v1"})
