"""Every error the gateway answers is an OpenAI error body with its HTTP status, counted once."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel

from nemo_client.client import AsyncNemoClient
from nemo_client.triton_transport import error_from_message
from nemo_gateway.errors import field_path
from nemo_protocol.errors import ServerError, UnavailableError
from nemo_protocol.request_limits import RequestLimits
from tests.unit.client.fake_transport import FakeTransport
from tests.unit.gateway.conftest import FRANCE, SERVED, FakeUpstream, Gateway, MakeGateway
from tests.unit.gateway.error_bodies import error_of


def test_upstream_api_error_is_its_openai_body_counted_once(make_gateway: MakeGateway) -> None:
    gw = make_gateway(FakeUpstream(reply=UnavailableError("Triton at 127.0.0.1:1 is unreachable")))
    response = gw.http.post("/v1/chat/completions", json={"messages": FRANCE})
    assert response.status_code == 503
    assert error_of(response) == {
        "message": "Triton at 127.0.0.1:1 is unreachable",
        "type": "service_unavailable",
        "param": None,
        "code": None,
    }
    assert gw.sample("nemo_gateway_errors_total", type="service_unavailable") == 1
    assert gw.sample("nemo_gateway_requests_total", endpoint="chat", status="503") == 1
    assert gw.sample("nemo_gateway_request_duration_seconds_count", endpoint="chat") == 1
    assert gw.sample("nemo_gateway_in_flight_requests") == 0


def test_upstream_server_error_is_logged(make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture) -> None:
    gw = make_gateway(FakeUpstream(reply=ServerError("the chat model failed")))
    with caplog.at_level(logging.ERROR, logger="nemo_gateway"):
        response = gw.http.post("/v1/chat/completions", json={"messages": FRANCE})
    assert response.status_code == 500 and error_of(response)["message"] == "the chat model failed"
    assert "the chat model failed" in caplog.text


def test_unexpected_exception_is_a_logged_500_in_the_openai_shape(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = make_gateway(FakeUpstream(reply=RuntimeError("bug: secret detail")))
    with caplog.at_level(logging.ERROR, logger="nemo_gateway"):
        response = gw.http.post("/v1/chat/completions", json={"messages": FRANCE})
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "server_error" and "secret detail" not in str(error["message"])
    assert "RuntimeError" in caplog.text and "secret detail" in caplog.text
    assert gw.sample("nemo_gateway_errors_total", type="server_error") == 1
    assert gw.sample("nemo_gateway_requests_total", endpoint="chat", status="500") == 1
    assert gw.sample("nemo_gateway_in_flight_requests") == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{nope", "not valid JSON"),
        ("\udcff".encode("utf-8", "surrogatepass"), "not valid JSON"),
        (b"[1]", "JSON object"),
    ],
)
def test_malformed_bodies_are_400(gateway: Gateway, content: bytes, expected: str) -> None:
    response = gateway.http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and expected in str(error["message"])
    assert gateway.upstream.bodies == []
    assert gateway.sample("nemo_gateway_requests_total", endpoint="chat", status="400") == 1


def test_oversized_bodies_are_413_declared_or_streamed(make_gateway: MakeGateway) -> None:
    gw = make_gateway(limits=RequestLimits(max_body_bytes=1000))
    declared = gw.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 2000}]})
    assert declared.status_code == 413 and "limit is 1000" in str(error_of(declared)["message"])
    streamed = gw.http.post("/v1/completions", content=iter([b'{"prompt": "', b"x" * 2000, b'"}']))
    assert streamed.status_code == 413 and "exceeds the limit" in str(error_of(streamed)["message"])
    assert gw.upstream.bodies == []


def test_another_model_goes_to_the_server_to_resolve_and_the_served_name_is_the_base(gateway: Gateway) -> None:
    """A name other than the served one may be a LoRA adapter the deployment serves: chat and completions carry it to
    the server, which resolves it or answers 404 naming the served names (tests/integration/test_lora.py). The
    served name is the base model: no name goes."""
    gateway.http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": FRANCE})
    assert gateway.upstream.bodies[-1]["model"] == "gpt-4o"
    gateway.http.post("/v1/completions", json={"model": "gpt-4o", "prompt": "hi"})
    assert gateway.upstream.bodies[-1]["model"] == "gpt-4o"
    gateway.http.post("/v1/completions", json={"model": SERVED, "prompt": "hi"})
    assert gateway.upstream.bodies[-1]["model"] is None


def test_completions_refuse_unknown_fields_and_bad_prompts(gateway: Gateway) -> None:
    unknown = gateway.http.post("/v1/completions", json={"prompt": "hi", "best_of": 3})
    assert unknown.status_code == 400 and error_of(unknown)["param"] == "best_of"
    for prompt in ([1, "a"], [], [[1, -2]], {"text": "hi"}):
        bad = gateway.http.post("/v1/completions", json={"prompt": prompt})
        assert bad.status_code == 400 and error_of(bad)["param"] == "prompt", prompt
    both = gateway.http.post("/v1/completions", json={"prompt": "hi", "top_k": 2, "nvext": {"top_k": 3}})
    assert both.status_code == 400 and error_of(both)["param"] == "nvext.top_k"
    options = gateway.http.post("/v1/completions", json={"prompt": "hi", "stream_options": {"usage": True}})
    assert options.status_code == 400 and error_of(options)["param"] == "stream_options"
    assert gateway.sample("nemo_gateway_requests_total", endpoint="completions", status="400") == 7


def test_unknown_route_and_method_are_openai_errors(gateway: Gateway) -> None:
    missing = gateway.http.post("/v1/embeddings", json={})
    assert missing.status_code == 404
    assert error_of(missing)["type"] == "not_found_error" and "/v1/embeddings" in str(error_of(missing)["message"])
    wrong_method = gateway.http.get("/v1/chat/completions")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert "GET" in str(error_of(wrong_method)["message"])
    assert error_of(wrong_method)["type"] == "invalid_request_error"


class Message(BaseModel):
    role: str


class Typed(BaseModel):
    messages: list[Message]
    n: int = 1


async def typed(body: Typed) -> dict[str, int]:
    return {"n": body.n}


def test_request_validation_errors_are_400_naming_the_field(gateway: Gateway) -> None:
    """No gateway route declares a typed body (the server validates); one added here shows the handler."""
    gateway.app.post("/test/typed")(typed)

    invalid = gateway.http.post("/test/typed", json={"messages": [{"content": "hi"}], "n": "many"})
    assert invalid.status_code == 400
    error = error_of(invalid)
    assert error["type"] == "invalid_request_error" and error["param"] == "messages[0].role"
    assert "messages[0].role: Field required" in str(error["message"]) and "n: " in str(error["message"])
    malformed = gateway.http.post("/test/typed", content=b"{nope", headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and "not valid JSON" in str(error_of(malformed)["message"])


def test_field_path() -> None:
    assert field_path(("body", "messages", 2, "tool_calls", 0, "function")) == "messages[2].tool_calls[0].function"
    assert field_path(("query", "limit")) == "limit"
    assert field_path(("body",)) == ""


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ("text_input: the prompt is 3002 tokens; this deployment accepts at most 2048 (max_input_len)", "prompt"),
        ("max_tokens: must be at least 1, got -1", "max_tokens"),
        ("top_k: must be in [0, 2147483647] (0 = off), got -1", "top_k"),
        ("stop_words: is not valid UTF-8 (invalid start byte at byte 0)", "stop"),
    ],
)
def test_an_ensemble_refusal_is_a_400_naming_the_completion_field(
    make_gateway: MakeGateway, message: str, param: str
) -> None:
    # The ensemble refuses inside its gRPC stream, as text with no status code: the transport reads a refusal of
    # one of the request's inputs as an InputRefusedError, which the client reports naming the field.
    gw = make_gateway(AsyncNemoClient(model=SERVED, transport=ensemble_failing_with(message)))
    for stream in (False, True):
        body = {"prompt": "hi", "max_tokens": 4, "top_k": 5, "stop": "x", "stream": stream}
        response = gw.http.post("/v1/completions", json=body)
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert error["message"] == f"{param}: " + message.partition(": ")[2]  # named by the field the client sent
    assert gw.sample("nemo_gateway_requests_total", endpoint="completions", status="400") == 2


@pytest.mark.parametrize(
    "message",
    ["generation failed: out of memory", "internal error: KeyError('x')", "boom", "bad_words: not one we sent"],
)
def test_other_ensemble_failures_stay_500(make_gateway: MakeGateway, message: str) -> None:
    gw = make_gateway(AsyncNemoClient(model=SERVED, transport=ensemble_failing_with(message)))
    response = gw.http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 4})
    assert response.status_code == 500 and error_of(response)["type"] == "server_error"


def ensemble_failing_with(message: str) -> FakeTransport:
    """A transport whose ``ensemble`` answers every request with ``message`` as Triton sends a model's error: inside
    the stream, decoded as the Triton transport decodes it."""
    return FakeTransport(handlers={"ensemble": lambda inputs: [error_from_message(message, inputs.keys())]})
