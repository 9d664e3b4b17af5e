"""nemo-gateway on a real HTTP socket in front of the real Triton: the official openai SDK, SSE,
OpenAI error bodies, auth, body limits, readiness, disconnects and metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_client import NemoClient
from nemo_gateway.settings import GatewaySettings
from nemo_ops.launcher import TritonServer
from nemo_protocol.request_limits import RequestLimits
from tests.integration.conftest import MAX_BATCH_SIZE, MAX_SEQ_LEN
from tests.integration.gateways import SERVED, free_port, running_gateway
from tests.integration.triton_calls import BatchMetrics

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
PARIS_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def gateway(url: str) -> Iterator[str]:
    with running_gateway(
        GatewaySettings(triton_url=url, served_model_name=SERVED, limits=RequestLimits(max_body_bytes=64 * 1024))
    ) as base:
        yield base


@pytest.fixture(scope="module")
def sdk(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def grpc_client(url: str) -> Iterator[NemoClient]:
    with NemoClient(url, timeout=120) as client:
        yield client


def test_openai_sdk_chat_equals_nemo_client(sdk: openai.OpenAI, grpc_client: NemoClient) -> None:
    for params in ({"temperature": 0}, {"temperature": 1.0, "seed": 11}):
        via_gateway = sdk.chat.completions.create(model=SERVED, messages=FRANCE, **params)
        via_grpc = grpc_client.chat.completions.create(messages=FRANCE, **params)
        assert via_gateway.choices[0].message.content == via_grpc.choices[0].message.content
        assert via_gateway.choices[0].finish_reason == "stop"
        assert via_gateway.usage == via_grpc.usage
        assert via_gateway.model == via_grpc.model


def test_openai_sdk_streaming(sdk: openai.OpenAI, grpc_client: NemoClient) -> None:
    whole = grpc_client.chat.completions.create(messages=FRANCE, temperature=0).choices[0].message.content
    chunks = list(sdk.chat.completions.create(model=SERVED, messages=FRANCE, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "usage only when stream_options asks for it"
    with_usage = list(
        sdk.chat.completions.create(
            model=SERVED, messages=FRANCE, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens > 0


def test_openai_sdk_tool_round_trip(sdk: openai.OpenAI, grpc_client: NemoClient) -> None:
    reply = sdk.chat.completions.create(model=SERVED, messages=PARIS_WEATHER, tools=[WEATHER_TOOL], temperature=0)
    assert reply.choices[0].finish_reason == "tool_calls"
    [call] = reply.choices[0].message.tool_calls
    same = grpc_client.chat.completions.create(messages=PARIS_WEATHER, tools=[WEATHER_TOOL], temperature=0)
    assert (call.function.name, call.function.arguments) == (
        same.choices[0].message.tool_calls[0].function.name,
        same.choices[0].message.tool_calls[0].function.arguments,
    )
    streamed = list(
        sdk.chat.completions.create(
            model=SERVED, messages=PARIS_WEATHER, tools=[WEATHER_TOOL], temperature=0, stream=True
        )
    )
    deltas = [d for c in streamed if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [d.function.name for d in deltas] == ["get_weather"]
    result = {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"conditions": "sunny", "celsius": 18})}
    answer = sdk.chat.completions.create(
        model=SERVED,
        messages=[*PARIS_WEATHER, reply.choices[0].message.model_dump(exclude_none=True), result],
        tools=[WEATHER_TOOL],
        temperature=0,
    )
    assert answer.choices[0].message.content == "It is sunny and 18 degrees in Paris."


def test_openai_sdk_completions_and_models(sdk: openai.OpenAI, grpc_client: NemoClient) -> None:
    text = sdk.completions.create(model=SERVED, prompt="Hello", max_tokens=8, temperature=0)
    assert (
        text.choices[0].text
        == grpc_client.completions.create(prompt="Hello", max_tokens=8, temperature=0).choices[0].text
    )
    assert text.choices[0].finish_reason == "length"
    assert [m.id for m in sdk.models.list()] == [SERVED]


def test_errors_are_openai_bodies_with_status_codes(gateway: str, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model=SERVED, messages=[{"role": "robot", "content": "hi"}])
    assert raised.value.status_code == 400
    assert raised.value.body["param"] == "messages[0].role" and raised.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="gpt-4o", messages=FRANCE)
    assert "gpt-4o" in missing.value.body["message"]
    bad_json = httpx.post(
        f"{gateway}/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    too_big = httpx.post(
        f"{gateway}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 70_000}]}
    )
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]["message"]
    unknown = httpx.post(f"{gateway}/v1/completions", json={"prompt": "hi", "best_of": 3})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "best_of"
    no_route = httpx.post(f"{gateway}/v1/embeddings", json={"input": "hi"})
    assert no_route.status_code == 404 and no_route.json()["error"]["type"] == "not_found_error"
    wrong_method = httpx.delete(f"{gateway}/v1/models")
    assert wrong_method.status_code == 405 and "DELETE" in wrong_method.json()["error"]["message"]
    # The server kept serving through all of that.
    assert sdk.chat.completions.create(model=SERVED, messages=FRANCE, temperature=0).choices[0].message.content


def test_api_key(url: str) -> None:
    settings = GatewaySettings(triton_url=url, served_model_name=SERVED, api_key="s3cret")
    with running_gateway(settings) as base:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model=SERVED, messages=FRANCE, temperature=0).choices[0].message.content
        assert httpx.get(f"{base}/v1/health/live").status_code == 200, "probes need no key"


def test_503_with_a_clear_body_while_triton_is_unreachable() -> None:
    settings = GatewaySettings(triton_url=f"127.0.0.1:{free_port()}", served_model_name=SERVED)
    with running_gateway(settings) as base:
        assert httpx.get(f"{base}/v1/health/live").status_code == 200
        ready = httpx.get(f"{base}/v1/health/ready", timeout=30)
        assert ready.status_code == 503 and "not reachable" in ready.json()["message"]
        chat = httpx.post(f"{base}/v1/chat/completions", json={"messages": FRANCE}, timeout=30)
        assert chat.status_code == 503
        assert (
            chat.json()["error"]["type"] == "service_unavailable" and "unreachable" in chat.json()["error"]["message"]
        )


def test_client_disconnect_cancels_the_upstream_request(gateway: str, sdk: openai.OpenAI, triton: TritonServer) -> None:
    endless = {
        "model": SERVED,
        "messages": FRANCE,
        "stream": True,
        "max_tokens": MAX_SEQ_LEN - 64,
        "nvext": {"ignore_eos": True},
    }
    batch = BatchMetrics(triton.host, triton.ports.metrics)
    before = batch.idle()
    clients = [httpx.Client(timeout=60) for _ in range(MAX_BATCH_SIZE)]
    responses = []
    for client in clients:
        response = client.send(
            client.build_request("POST", f"{gateway}/v1/chat/completions", json=endless), stream=True
        )
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        responses.append((response, lines))
    batch.wait_for(requests_running=MAX_BATCH_SIZE, batch_slots_free=0)
    for (response, _), client in zip(responses, clients, strict=True):
        response.close()
        client.close()
    # Each stream was thousands of tokens from its end: the slots come back only because they were cancelled.
    after = batch.wait_for(requests_running=0, batch_slots_free=MAX_BATCH_SIZE)
    assert after["requests_cancelled_total"] - before["requests_cancelled_total"] == MAX_BATCH_SIZE
    with ThreadPoolExecutor(MAX_BATCH_SIZE) as pool:
        answers = list(
            pool.map(
                lambda _: sdk.chat.completions.create(model=SERVED, messages=FRANCE, temperature=0, timeout=60),
                range(MAX_BATCH_SIZE),
            )
        )
    assert all(a.choices[0].message.content == "The capital of France is Paris." for a in answers)


def _metric_samples(gateway: str) -> dict[str, float]:
    text = httpx.get(f"{gateway}/v1/metrics").text
    return {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")
    }


def test_metrics_count_requests_tokens_and_first_token_latency(gateway: str, sdk: openai.OpenAI) -> None:
    ok = 'nemo_gateway_requests_total{endpoint="chat",status="200"}'
    refused = 'nemo_gateway_requests_total{endpoint="chat",status="400"}'
    invalid = 'nemo_gateway_errors_total{type="invalid_request_error"}'
    before = _metric_samples(gateway)
    assert before["nemo_gateway_in_flight_requests"] == 0, "no request of an earlier test is still being counted"
    list(sdk.chat.completions.create(model=SERVED, messages=FRANCE, temperature=0, stream=True))
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=SERVED, messages=[{"role": "robot", "content": "hi"}])
    after = _metric_samples(gateway)
    assert after[ok] - before.get(ok, 0) == 1
    assert after[refused] - before.get(refused, 0) == 1
    assert after[invalid] - before.get(invalid, 0) == 1
    assert after["nemo_gateway_completion_tokens_total"] > before.get("nemo_gateway_completion_tokens_total", 0)
    assert after["nemo_gateway_prompt_tokens_total"] > before.get("nemo_gateway_prompt_tokens_total", 0)
    first_tokens = "nemo_gateway_time_to_first_token_seconds_count"
    assert after[first_tokens] - before.get(first_tokens, 0) == 1
    assert after["nemo_gateway_in_flight_requests"] == 0
