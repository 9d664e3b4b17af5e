"""The routes' answers: JSON, SSE ending in ``data: [DONE]``, usage only when asked, metrics, health."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nemo_client.types import Health
from nemo_gateway.app import create_app
from nemo_gateway.cli import build_parser
from nemo_gateway.settings import GatewaySettings
from nemo_protocol.errors import StreamInterruptedError
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME
from tests.unit.gateway.conftest import (
    FRANCE,
    MAX_MODEL_LEN,
    SERVED,
    USAGE,
    FakeUpstream,
    Gateway,
    MakeGateway,
    chunk,
    completion,
    usage_chunk,
)

STREAM = [chunk("Par"), chunk("is."), chunk("", finish="stop"), usage_chunk()]


def events(gw: Gateway, body: dict[str, Any]) -> list[str]:
    with gw.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def test_chat_answers_the_upstream_json_and_counts_it(gateway: Gateway) -> None:
    response = gateway.http.post("/v1/chat/completions", json={"model": SERVED, "messages": FRANCE})
    assert response.status_code == 200 and response.json() == completion()
    # the body goes upstream as it is, less the model name the gateway answered to
    assert gateway.upstream.bodies == [{"messages": FRANCE}]
    assert gateway.sample("nemo_gateway_requests_total", endpoint="chat", status="200") == 1
    assert gateway.sample("nemo_gateway_prompt_tokens_total") == USAGE["prompt_tokens"]
    assert gateway.sample("nemo_gateway_completion_tokens_total") == USAGE["completion_tokens"]
    assert gateway.sample("nemo_gateway_in_flight_requests") == 0


def test_a_stream_is_sse_ending_in_done_with_usage_only_when_asked(make_gateway: MakeGateway) -> None:
    gw = make_gateway(FakeUpstream(reply=STREAM))
    plain = events(gw, {"messages": FRANCE, "stream": True})
    assert plain[-1] == "[DONE]"
    chunks = [json.loads(item) for item in plain[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Paris."
    assert all("usage" not in c for c in chunks)
    assert gw.upstream.bodies[-1]["stream_options"] == {"include_usage": True}, "usage is always asked upstream"
    asked = events(gw, {"messages": FRANCE, "stream": True, "stream_options": {"include_usage": True}})
    assert json.loads(asked[-2])["usage"] == USAGE and asked[-1] == "[DONE]"
    assert gw.sample("nemo_gateway_completion_tokens_total") == 2 * USAGE["completion_tokens"]
    assert gw.sample("nemo_gateway_requests_total", endpoint="chat", status="200") == 2
    assert gw.sample("nemo_gateway_time_to_first_token_seconds_count") == 2
    assert gw.upstream.closed_streams == 2 and gw.sample("nemo_gateway_in_flight_requests") == 0


def test_an_error_mid_stream_is_the_last_event(make_gateway: MakeGateway) -> None:
    broken = [chunk("Par"), StreamInterruptedError("the stream broke")]
    gw = make_gateway(FakeUpstream(reply=broken))
    items = events(gw, {"messages": FRANCE, "stream": True})
    assert json.loads(items[-1]) == StreamInterruptedError("the stream broke").to_openai()
    assert "[DONE]" not in items
    assert gw.sample("nemo_gateway_requests_total", endpoint="chat", status="503") == 1
    assert gw.sample("nemo_gateway_errors_total", type="service_unavailable") == 1
    gw.upstream.reply = [chunk("Par"), RuntimeError("bug")]
    last = json.loads(events(gw, {"messages": FRANCE, "stream": True})[-1])
    assert last["error"]["type"] == "server_error" and "bug" not in last["error"]["message"]
    assert gw.upstream.closed_streams == 2 and gw.sample("nemo_gateway_in_flight_requests") == 0


def test_models_lists_the_served_name_and_its_length(gateway: Gateway) -> None:
    model = {"id": SERVED, "object": "model", "created": 0, "owned_by": "mistralai", "max_model_len": MAX_MODEL_LEN}
    assert gateway.http.get("/v1/models").json() == {"object": "list", "data": [model]}
    assert gateway.sample("nemo_gateway_requests_total", endpoint="models", status="200") == 1
    assert gateway.http.get(f"/v1/models/{SERVED}").json() == model
    other = gateway.http.get("/v1/models/gpt-4o")
    assert other.status_code == 404
    assert other.json()["error"]["type"] == "not_found_error" and other.json()["error"]["param"] == "model"


def test_readiness_follows_triton(make_gateway: MakeGateway) -> None:
    gw = make_gateway()
    assert gw.http.get("/v1/health/ready").json()["message"] == "Service is ready."
    gw.upstream.health_result = Health(live=True, ready=True, models={"chat": True, "ensemble": False})
    not_ready = gw.http.get("/v1/health/ready")
    assert not_ready.status_code == 503 and not_ready.json()["message"] == "Not ready: ensemble."
    gw.upstream.health_result = Health(live=False, ready=False, models={"chat": False})
    assert gw.http.get("/v1/health/ready").json()["message"] == "Triton is not reachable."
    assert gw.http.get("/v1/health/live").status_code == 200
    assert gw.http.get("/v1/version").json()["api"] == "v1"
    for path in ("/v1/metrics", "/metrics"):  # NIM's path and vLLM's (aiperf and vLLM dashboards scrape it)
        metrics = gw.http.get(path)
        assert (
            metrics.headers["content-type"].startswith("text/plain")
            and b"nemo_gateway_in_flight_requests" in metrics.content
        ), path


def test_the_served_name_defaults_to_the_protocol_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GatewaySettings().served_model_name == DEFAULT_SERVED_MODEL_NAME
    monkeypatch.delenv("NIM_SERVED_MODEL_NAME", raising=False)
    assert build_parser().parse_args([]).served_model_name == DEFAULT_SERVED_MODEL_NAME
    monkeypatch.setenv("NIM_SERVED_MODEL_NAME", "other")
    assert build_parser().parse_args([]).served_model_name == "other"


def test_without_a_triton_client_the_routes_answer_503() -> None:
    """Outside the lifespan (starting, shutting down) there is no client: 503 in the OpenAI shape."""
    http = TestClient(create_app(GatewaySettings(served_model_name=SERVED)), raise_server_exceptions=False)
    for response in (http.get("/v1/health/ready"), http.post("/v1/chat/completions", json={"messages": FRANCE})):
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "service_unavailable"


def test_vllm_tokenizer_routes_use_the_tekken_file(gateway: Gateway) -> None:
    """lm-eval's `tokenizer_backend=remote` tokenizes through /tokenize, /detokenize and /tokenizer_info."""
    assert gateway.http.get("/tokenizer_info").json()["vocab_size"] == 131072
    plain = gateway.http.post("/tokenize", json={"prompt": "Hello world", "add_special_tokens": False}).json()
    assert plain == {"tokens": [22177, 4304], "count": 2}
    assert gateway.http.post("/tokenize", json={"prompt": "Hello world"}).json()["tokens"] == [1, 22177, 4304]
    assert gateway.http.post("/tokenize", json={"prompt": "</s>", "add_special_tokens": False}).json()["count"] > 1
    assert gateway.http.post("/detokenize", json={"tokens": [1, 22177, 4304]}).json() == {"prompt": "Hello world"}
    for path, body, param in (
        ("/tokenize", {"prompt": 3}, "prompt"),
        ("/tokenize", {"prompt": "a", "add_special_tokens": "no"}, "add_special_tokens"),
        ("/detokenize", {"tokens": [131072]}, "tokens"),
        ("/detokenize", {"tokens": "1 2"}, "tokens"),
    ):
        refused = gateway.http.post(path, json=body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param
