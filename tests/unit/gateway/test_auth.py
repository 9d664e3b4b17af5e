"""The API key: a dependency of the OpenAI routers only, compared in constant time."""

from __future__ import annotations

import asyncio
import hmac

import pytest
from fastapi.security import HTTPAuthorizationCredentials

from nemo_gateway.auth import require_api_key
from nemo_gateway.settings import GatewaySettings
from nemo_protocol.errors import AuthenticationError
from tests.unit.gateway.conftest import FRANCE, MakeGateway


def test_without_a_key_everything_is_open(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    assert gw.http.get("/v1/models").status_code == 200
    assert gw.http.post("/v1/chat/completions", json={"messages": FRANCE}).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"])
def test_a_missing_or_wrong_key_is_401(make_gateway: MakeGateway, header: str | None) -> None:
    gw = make_gateway(api_key="s3cret")
    headers = {} if header is None else {"authorization": header}
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")):
        response = gw.http.request(method, path, json={"messages": FRANCE, "prompt": "hi"}, headers=headers)
        assert response.status_code == 401, (path, header)
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer"
    assert gw.upstream.bodies == [], "nothing reached Triton"
    assert gw.sample("nemo_gateway_requests_total", endpoint="models", status="401") == 1
    assert gw.sample("nemo_gateway_errors_total", type="authentication_error") == 3


def test_the_right_key_passes_and_probes_need_none(make_gateway: MakeGateway) -> None:
    gw = make_gateway(api_key="s3cret")
    for scheme in ("Bearer", "bearer"):
        good = {"authorization": f"{scheme} s3cret"}
        assert gw.http.get("/v1/models", headers=good).status_code == 200
        assert gw.http.post("/v1/chat/completions", json={"messages": FRANCE}, headers=good).status_code == 200
    for path in ("/v1/health/live", "/v1/health/ready", "/v1/metrics", "/metrics", "/v1/version"):
        assert gw.http.get(path).status_code == 200, path


def test_a_non_ascii_key_is_compared_as_the_bytes_sent() -> None:
    settings = GatewaySettings(api_key="clé-ünï")
    # Starlette decodes header bytes as latin-1: a UTF-8 key arrives as these characters.
    sent_as_utf8 = "clé-ünï".encode().decode("latin-1")
    asyncio.run(require_api_key(settings, HTTPAuthorizationCredentials(scheme="Bearer", credentials=sent_as_utf8)))
    with pytest.raises(AuthenticationError):
        # The same characters sent as latin-1 bytes are other bytes.
        asyncio.run(require_api_key(settings, HTTPAuthorizationCredentials(scheme="Bearer", credentials="clé-ünï")))
    with pytest.raises(AuthenticationError):
        asyncio.run(require_api_key(settings, None))


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch, make_gateway: MakeGateway) -> None:
    seen: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    gw = make_gateway(api_key="s3cret")
    gw.http.get("/v1/models", headers={"authorization": "Bearer nope"})
    assert seen == [(b"nope", b"s3cret")]
