"""``create_app(settings)``: the gateway's FastAPI application, OpenAI routes mapped onto Triton's ``chat`` and
``ensemble`` models.

The app holds its settings, metrics and admission (:mod:`nemo_gateway.admission`) on ``app.state``; the lifespan
opens the Triton client there (its gRPC channels must live on the server's event loop) and closes it. Routes get
them through
:mod:`nemo_gateway.dependencies`, the API key check through :mod:`nemo_gateway.auth`, and every error
answer comes from :mod:`nemo_gateway.errors`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from nemo_client.client import AsyncNemoClient
from nemo_gateway import routes_completions, routes_models, routes_responses, routes_service, routes_tokenize
from nemo_gateway.admission import Admission
from nemo_gateway.errors import install_error_handlers
from nemo_gateway.metrics import GatewayMetrics
from nemo_gateway.response_store import describe, open_store
from nemo_gateway.settings import GatewaySettings
from nemo_gateway.version import release

logger = logging.getLogger("nemo_gateway")


def create_app(settings: GatewaySettings) -> FastAPI:
    app = FastAPI(title="Mistral NeMo gateway", version=release(), lifespan=_lifespan)
    app.state.settings = settings
    app.state.shutting_down = asyncio.Event()  # set by nemo_gateway.server.GatewayServer
    app.state.metrics = metrics = GatewayMetrics()
    app.state.admission = Admission(settings.admission, observer=metrics)
    metrics.admission_max_in_flight.set(settings.admission.max_in_flight)
    install_error_handlers(app)
    for area in (routes_completions, routes_responses, routes_models, routes_service, routes_tokenize):
        app.include_router(area.router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: GatewaySettings = app.state.settings
    # Opened here rather than in create_app: a server that cannot reach its store fails to start, not per request.
    store = (
        None if settings.response_store is None else open_store(settings.response_store, settings.response_retention_s)
    )
    app.state.response_store = store
    if store is not None:
        logger.info("responses are stored in %s for %g s", describe(settings.response_store or ""), store.retention_s)
    client = AsyncNemoClient(
        settings.triton_url,
        model=settings.served_model_name,
        timeout=settings.request_timeout_s,
        direct=settings.direct,
        tokenizer_file=settings.tokenizer_file,
        lb_policy=settings.triton_lb_policy,
        resolve_interval_s=settings.triton_resolve_interval_s,
    )
    app.state.client = client
    try:
        yield
    finally:
        app.state.client = app.state.response_store = None
        await client.close()
        if store is not None:
            store.close()
