"""What a route handler gets from the app, as FastAPI dependencies: the settings, the metrics, admission and the
Triton client.

``create_app`` puts the settings, metrics and admission on ``app.state``; the lifespan adds the client (its gRPC channel
must live on the server's event loop). Tests replace the client with ``app.dependency_overrides[get_client]``.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from nemo_client.client import AsyncNemoClient
from nemo_gateway.admission import Admission
from nemo_gateway.metrics import GatewayMetrics
from nemo_gateway.response_store import ResponseStore
from nemo_gateway.settings import GatewaySettings
from nemo_protocol.errors import UnavailableError


def get_settings(request: Request) -> GatewaySettings:
    return cast(GatewaySettings, request.app.state.settings)


def get_metrics(request: Request) -> GatewayMetrics:
    return cast(GatewayMetrics, request.app.state.metrics)


def get_admission(request: Request) -> Admission:
    return cast(Admission, request.app.state.admission)


def get_client(request: Request) -> AsyncNemoClient:
    client = getattr(request.app.state, "client", None)
    if client is None:
        raise UnavailableError("the gateway has no Triton client: it is starting or shutting down")
    return cast(AsyncNemoClient, client)


def get_response_store(request: Request) -> ResponseStore | None:
    """The response store the lifespan opened; None when the gateway stores nothing."""
    return cast("ResponseStore | None", getattr(request.app.state, "response_store", None))


Settings = Annotated[GatewaySettings, Depends(get_settings)]
Metrics = Annotated[GatewayMetrics, Depends(get_metrics)]
Client = Annotated[AsyncNemoClient, Depends(get_client)]
Admitting = Annotated[Admission, Depends(get_admission)]
ResponseStoreOrNone = Annotated[ResponseStore | None, Depends(get_response_store)]
