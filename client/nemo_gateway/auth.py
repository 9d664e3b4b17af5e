"""The API key check, a dependency of the routers that need it (the OpenAI routes; never probes or metrics)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nemo_gateway.dependencies import Settings
from nemo_gateway.response_store import owner_of
from nemo_protocol.errors import AuthenticationError

_bearer = HTTPBearer(auto_error=False, description="The gateway's API key (env NEMO_GATEWAY_API_KEY), when it has one")


async def require_api_key(
    settings: Settings, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Raise :class:`AuthenticationError` (401) unless ``Authorization: Bearer <key>`` carries the key.

    The comparison takes the same time wherever the two keys differ. Header values arrive decoded as
    latin-1, so encoding them back gives the bytes the client sent, compared with the key's UTF-8 bytes.
    """
    expected = settings.api_key
    if not expected:
        return
    presented = credentials.credentials.encode("latin-1") if credentials is not None else b""
    if not hmac.compare_digest(presented, expected.encode("utf-8")):
        raise AuthenticationError("missing or wrong API key: send 'Authorization: Bearer <key>'")


def key_owner(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """Whose stored objects a request may see and continue: the owner of the key it presented (an empty key when
    it sent none), whether or not the gateway checks keys."""
    return owner_of(credentials.credentials if credentials is not None else "")


KeyOwner = Annotated[str, Depends(key_owner)]
