"""The router of the OpenAI routes: every request is metered first, then its API key checked."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from nemo_gateway.auth import require_api_key
from nemo_gateway.metering import meter_request


def openai_router(tag: str) -> APIRouter:
    """A router whose routes are metered under their ``name`` and need the API key (when one is set)."""
    return APIRouter(tags=[tag], dependencies=[Depends(meter_request), Depends(require_api_key)])
