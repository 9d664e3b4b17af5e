"""Which metered endpoint a request is for, and since when: set first on every OpenAI route, read by the
success paths and by the exception handler, so that each answer is counted once under its endpoint."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request


@dataclass(frozen=True)
class RequestMeter:
    endpoint: str
    """The ``endpoint`` label: the route's name (``chat``, ``completions``, ``models``)."""
    started: float
    """``time.perf_counter()`` when the route began handling the request."""

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def meter_request(request: Request) -> RequestMeter:
    """The dependency that starts metering (FastAPI runs it once per request, however many ask for it)."""
    route = request.scope.get("route")
    meter = RequestMeter(endpoint=getattr(route, "name", None) or "unknown", started=time.perf_counter())
    request.state.meter = meter
    return meter


def current_meter(request: Request) -> RequestMeter | None:
    """The request's meter, or None where no metered route took the request (probes, unknown paths)."""
    meter = getattr(request.state, "meter", None)
    return meter if isinstance(meter, RequestMeter) else None


Meter = Annotated[RequestMeter, Depends(meter_request)]
