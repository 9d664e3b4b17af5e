"""Admission: at most --max-in-flight generations upstream, at most --max-queued waiting for a slot, at most
--max-queue-wait-s of waiting; past that a 429 with Retry-After, counted. Streams hold their slot until they end."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.requests import ClientDisconnect

from nemo_chat_core.completion_request import CompletionRequest
from nemo_client.streaming import AsyncStream
from nemo_gateway.admission import QUEUE_FULL, QUEUE_WAIT, Admission, AdmissionLimits, OverloadedError
from nemo_gateway.app import create_app
from nemo_gateway.cli import build_parser, settings_from
from nemo_gateway.dependencies import get_client
from nemo_gateway.metrics import GatewayMetrics
from nemo_gateway.settings import GatewaySettings
from tests.unit.gateway.conftest import FRANCE, SERVED, chunk, completion, usage_chunk

# --- Admission itself ------------------------------------------------------------------------------------------


def test_unbounded_admission_admits_everything_and_counts_it() -> None:
    metrics = GatewayMetrics()

    async def run() -> None:
        admission = Admission(AdmissionLimits(), observer=metrics)
        slots = [await admission.acquire() for _ in range(100)] + [await admission.acquire(4)]
        assert (
            admission.in_flight == 104 and metrics.registry.get_sample_value("nemo_gateway_admission_in_flight") == 104
        )
        for slot in slots:
            slot.release()
            slot.release()  # idempotent
        assert admission.in_flight == 0

    asyncio.run(run())


def test_past_the_slots_requests_wait_first_come_first_served_and_past_the_queue_are_refused() -> None:
    metrics = GatewayMetrics()

    async def run() -> None:
        admission = Admission(AdmissionLimits(max_in_flight=2, max_queued=2, max_queue_wait_s=0), observer=metrics)
        first, second = await admission.acquire(), await admission.acquire()
        order: list[str] = []

        async def waiter(name: str) -> None:
            slot = await admission.acquire()
            order.append(name)
            slot.release()

        waiters = [asyncio.create_task(waiter("a")), asyncio.create_task(waiter("b"))]
        await asyncio.sleep(0.01)
        assert (admission.in_flight, admission.queued) == (2, 2)
        assert metrics.registry.get_sample_value("nemo_gateway_admission_queued") == 2
        with pytest.raises(OverloadedError) as refused:
            await admission.acquire()
        assert refused.value.status_code == 429 and refused.value.reason == QUEUE_FULL
        assert refused.value.to_openai()["error"]["type"] == "rate_limit_exceeded"
        assert refused.value.to_openai()["error"]["code"] == QUEUE_FULL
        assert int(refused.value.headers["Retry-After"]) >= 1
        first.release()
        second.release()
        await asyncio.gather(*waiters)
        assert order == ["a", "b"] and (admission.in_flight, admission.queued) == (0, 0)

    asyncio.run(run())
    assert metrics.registry.get_sample_value("nemo_gateway_requests_shed_total", {"reason": QUEUE_FULL}) == 1
    assert metrics.registry.get_sample_value("nemo_gateway_requests_shed_total", {"reason": QUEUE_WAIT}) == 0
    assert metrics.registry.get_sample_value("nemo_gateway_admission_wait_seconds_count") == 2


def test_a_request_that_waits_too_long_is_refused_and_leaves_the_line() -> None:
    async def run() -> None:
        admission = Admission(AdmissionLimits(max_in_flight=1, max_queue_wait_s=0.05))
        held = await admission.acquire()
        with pytest.raises(OverloadedError) as refused:
            await admission.acquire()
        assert refused.value.reason == QUEUE_WAIT and admission.queued == 0
        held.release()
        (await admission.acquire()).release()

    asyncio.run(run())


def test_no_queue_refuses_at_once_and_a_cancelled_waiter_leaves_the_line() -> None:
    async def run() -> None:
        none_wait = Admission(AdmissionLimits(max_in_flight=1, max_queued=0))
        held = await none_wait.acquire()
        with pytest.raises(OverloadedError, match="at capacity"):
            await none_wait.acquire()
        held.release()

        admission = Admission(AdmissionLimits(max_in_flight=1))  # the queue: as deep as the slots
        held = await admission.acquire()
        waiting = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0.01)
        assert admission.queued == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert admission.queued == 0
        held.release()
        assert admission.in_flight == 0

    asyncio.run(run())


def test_a_request_of_n_generations_takes_n_slots_and_nobody_passes_it_in_line() -> None:
    async def run() -> None:
        admission = Admission(AdmissionLimits(max_in_flight=3, max_queued=4, max_queue_wait_s=0))
        one = await admission.acquire()
        big = asyncio.create_task(admission.acquire(3))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(admission.acquire(1))
        await asyncio.sleep(0.01)
        assert not big.done() and not small.done(), "2 slots are free, but the head of the line needs 3"
        one.release()
        big_slot = await big
        assert admission.in_flight == 3 and not small.done()
        big_slot.release()
        (await small).release()
        huge = await admission.acquire(10)  # more than there are: all of them
        assert huge.weight == 3 and admission.in_flight == 3
        huge.release()

    asyncio.run(run())


def test_retry_after_follows_the_time_slots_are_held() -> None:
    admission = Admission(AdmissionLimits(max_in_flight=4))
    assert admission.retry_after_s() == 1  # nothing known yet
    admission._hold_s = 10.0  # requests hold their slots 10 s on average
    assert admission.retry_after_s() == 3  # 10 s x 1 / 4 slots
    admission._hold_s = 1000.0
    assert admission.retry_after_s() == 60  # bounded


def test_the_limits_are_checked() -> None:
    for bad in ({"max_in_flight": -1}, {"max_queued": -1}, {"max_queue_wait_s": -1.0},
                {"max_queue_wait_s": float("nan")}, {"max_queue_wait_s": float("inf")}):  # fmt: skip
        with pytest.raises(ValueError):
            AdmissionLimits(**bad)
    assert AdmissionLimits(max_in_flight=8).queue_depth == 8
    assert AdmissionLimits(max_in_flight=8, max_queued=0).queue_depth == 0


# --- The flags --------------------------------------------------------------------------------------------------


def test_the_flags_and_their_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    defaults = settings_from(parser, parser.parse_args([]))
    assert defaults.admission == AdmissionLimits(max_in_flight=0, max_queued=None, max_queue_wait_s=10.0)
    assert defaults.triton_lb_policy == "round_robin"
    args = ["--max-in-flight", "64", "--max-queued", "256", "--max-queue-wait-s", "2.5", "--triton-lb-policy",
            "least_requests", "--triton-url", "dns:///triton-headless.ns.svc.cluster.local:8001"]  # fmt: skip
    settings = settings_from(parser, parser.parse_args(args))
    assert settings.admission == AdmissionLimits(64, 256, 2.5)
    assert settings.triton_lb_policy == "least_requests"
    monkeypatch.setenv("NEMO_GATEWAY_MAX_IN_FLIGHT", "16")
    monkeypatch.setenv("NEMO_GATEWAY_MAX_QUEUED", "0")
    monkeypatch.setenv("NEMO_GATEWAY_MAX_QUEUE_WAIT_S", "30")
    monkeypatch.setenv("NEMO_GATEWAY_TRITON_LB_POLICY", "pick_first")
    monkeypatch.setenv("NEMO_GATEWAY_TRITON_RESOLVE_INTERVAL_S", "1.5")
    parser = build_parser()
    settings = settings_from(parser, parser.parse_args([]))
    assert settings.admission == AdmissionLimits(16, 0, 30.0)
    assert (settings.triton_lb_policy, settings.triton_resolve_interval_s) == ("pick_first", 1.5)


@pytest.mark.parametrize(
    "args",
    [
        ["--max-in-flight", "-1"],
        ["--max-queued", "x"],
        ["--max-queue-wait-s", "-2"],
        ["--max-queue-wait-s", "inf"],
        ["--triton-lb-policy", "random"],
        ["--triton-resolve-interval-s", "soon"],
    ],
)
def test_bad_values_are_refused_by_the_parser(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(args)
    assert args[0] in capsys.readouterr().err


def test_a_bad_policy_in_the_environment_or_a_bad_target_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        settings_from(parser, parser.parse_args(["--triton-url", "ipv4:10.0.0.1"]))
    assert "--triton-url" in capsys.readouterr().err
    monkeypatch.setenv("NEMO_GATEWAY_TRITON_LB_POLICY", "random")
    parser = build_parser()
    with pytest.raises(SystemExit):
        settings_from(parser, parser.parse_args([]))
    assert "NEMO_GATEWAY_TRITON_LB_POLICY is 'random'" in capsys.readouterr().err


# --- Through the gateway ----------------------------------------------------------------------------------------


class HeldUpstream:
    """A Triton client whose answers wait until released: each request holds its slot until then."""

    def __init__(self) -> None:
        self.chat = self.completions = self
        self.release = asyncio.Event()
        self.started = 0

    async def create_from_body(self, body: dict[str, Any], *, timeout: float | None = None, raw: bool = False) -> Any:
        self.started += 1
        if body.get("stream"):
            return AsyncStream(self._items(), "req-1")
        await self.release.wait()
        return completion()

    async def create_from_request(self, request: CompletionRequest, *, timeout: float | None = None) -> Any:
        return await self.create_from_body({"stream": request.stream})

    async def _items(self) -> AsyncIterator[dict[str, Any]]:
        yield chunk("Par")
        await self.release.wait()
        yield chunk("is.", finish="stop")
        yield usage_chunk()


def _gateway(upstream: HeldUpstream, **limits: Any) -> tuple[httpx.AsyncClient, GatewayMetrics]:
    app = create_app(GatewaySettings(served_model_name=SERVED, admission=AdmissionLimits(**limits)))
    app.dependency_overrides[get_client] = lambda: upstream
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30)
    return http, app.state.metrics


def _value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def _until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_past_the_bounds_the_gateway_answers_429_with_retry_after_and_counts_it() -> None:
    upstream = HeldUpstream()

    async def run() -> GatewayMetrics:
        http, metrics = _gateway(upstream, max_in_flight=1, max_queued=0)
        async with http:
            stream = asyncio.create_task(
                http.post("/v1/chat/completions", json={"messages": FRANCE, "stream": True})
            )  # holds the one slot until its stream ends
            await _until(lambda: upstream.started == 1)
            assert _value(metrics, "nemo_gateway_admission_in_flight") == 1
            refused = await http.post("/v1/chat/completions", json={"messages": FRANCE})
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            error = refused.json()["error"]
            assert (error["type"], error["code"]) == ("rate_limit_exceeded", "queue_full")
            assert "retry later or elsewhere" in error["message"]
            # A completion is a generation too; a request the gateway refuses on its own checks takes no slot.
            assert (await http.post("/v1/completions", json={"prompt": "hi"})).status_code == 429
            twice = {"messages": FRANCE, "top_k": 1, "nvext": {"top_k": 2}}
            assert (await http.post("/v1/chat/completions", json=twice)).status_code == 400
            assert (await http.post("/v1/chat/completions", json={"messages": FRANCE, "n": 0})).status_code == 400
            upstream.release.set()
            answer = await stream
            assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
            assert _value(metrics, "nemo_gateway_admission_in_flight") == 0
            again = await http.post("/v1/chat/completions", json={"messages": FRANCE})
            assert again.status_code == 200
            text = (await http.get("/v1/metrics")).text
            assert 'nemo_gateway_requests_shed_total{reason="queue_full"} 2.0' in text
            assert "nemo_gateway_admission_max_in_flight 1.0" in text
            assert "nemo_gateway_admission_queued 0.0" in text
        return metrics

    metrics = asyncio.run(run())
    assert _value(metrics, "nemo_gateway_requests_total", endpoint="chat", status="429") == 1
    assert _value(metrics, "nemo_gateway_requests_total", endpoint="completions", status="429") == 1
    assert _value(metrics, "nemo_gateway_errors_total", type="rate_limit_exceeded") == 2
    assert _value(metrics, "nemo_gateway_in_flight_requests") == 0


def test_a_queued_request_is_served_when_a_slot_frees_or_refused_after_the_wait() -> None:
    upstream = HeldUpstream()

    async def run() -> None:
        http, metrics = _gateway(upstream, max_in_flight=1, max_queued=1, max_queue_wait_s=5)
        async with http:
            first = asyncio.create_task(http.post("/v1/chat/completions", json={"messages": FRANCE}))
            await _until(lambda: upstream.started == 1)
            queued = asyncio.create_task(http.post("/v1/chat/completions", json={"messages": FRANCE}))
            await _until(lambda: _value(metrics, "nemo_gateway_admission_queued") == 1)
            assert (await http.post("/v1/chat/completions", json={"messages": FRANCE})).status_code == 429
            upstream.release.set()
            assert (await first).status_code == 200 and (await queued).status_code == 200
            assert upstream.started == 2

        upstream.release.clear()
        http, metrics = _gateway(upstream, max_in_flight=1, max_queued=1, max_queue_wait_s=0.1)
        async with http:
            first = asyncio.create_task(http.post("/v1/chat/completions", json={"messages": FRANCE}))
            await _until(lambda: upstream.started == 3)
            late = await http.post("/v1/chat/completions", json={"messages": FRANCE})
            assert late.status_code == 429 and late.json()["error"]["code"] == "queue_wait"
            assert _value(metrics, "nemo_gateway_requests_shed_total", reason="queue_wait") == 1
            upstream.release.set()
            assert (await first).status_code == 200

    asyncio.run(run())


def test_a_chat_request_with_n_choices_holds_n_slots() -> None:
    upstream = HeldUpstream()

    async def run() -> None:
        http, metrics = _gateway(upstream, max_in_flight=2, max_queued=0)
        async with http:
            pair = asyncio.create_task(http.post("/v1/chat/completions", json={"messages": FRANCE, "n": 2}))
            await _until(lambda: upstream.started == 2)
            assert _value(metrics, "nemo_gateway_admission_in_flight") == 2
            assert (await http.post("/v1/chat/completions", json={"messages": FRANCE})).status_code == 429
            upstream.release.set()
            answer = await pair
            assert answer.status_code == 200 and len(answer.json()["choices"]) == 2

    asyncio.run(run())


def test_without_bounds_nothing_is_refused() -> None:
    upstream = HeldUpstream()

    async def run() -> None:
        http, metrics = _gateway(upstream)
        async with http:
            calls = [
                asyncio.create_task(http.post("/v1/chat/completions", json={"messages": FRANCE})) for _ in range(20)
            ]
            await _until(lambda: upstream.started == 20)
            assert _value(metrics, "nemo_gateway_admission_in_flight") == 20
            upstream.release.set()
            assert [answer.status_code for answer in await asyncio.gather(*calls)] == [200] * 20
            text = (await http.get("/v1/metrics")).text
            assert "nemo_gateway_admission_max_in_flight 0.0" in text
            assert 'nemo_gateway_requests_shed_total{reason="queue_full"} 0.0' in text

    asyncio.run(run())


@pytest.mark.parametrize(
    ("spec_version", "leave_after_s"),
    [("2.0", 0.0), ("2.0", 0.2), ("2.4", 0.0)],
    ids=["disconnect-at-once", "disconnect-mid-stream", "send-fails"],
)
def test_a_stream_whose_client_leaves_gives_its_slot_back(spec_version: str, leave_after_s: float) -> None:
    """However the client leaves (before the events begin, or mid-stream; the ASGI server telling it by a disconnect
    message or by a failing send), the upstream stream is closed and the slot is free again."""
    upstream = HeldUpstream()
    app = create_app(GatewaySettings(served_model_name=SERVED, admission=AdmissionLimits(max_in_flight=1)))
    app.dependency_overrides[get_client] = lambda: upstream
    body = json.dumps({"messages": FRANCE, "stream": True}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "server": ("gateway", 80), "client": ("127.0.0.1", 1),
        "headers": [(b"host", b"gateway"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await asyncio.sleep(leave_after_s)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if spec_version == "2.4" and message["type"] == "http.response.body":  # ASGI 2.4: no disconnect message
            raise OSError("the client went away")
        sent.append(message)

    async def run() -> None:
        with contextlib.suppress(ClientDisconnect):  # what Starlette raises to the server under ASGI 2.4
            await app(scope, receive, send)
        admission: Admission = app.state.admission
        assert admission.in_flight == 0
        assert app.state.metrics.registry.get_sample_value("nemo_gateway_in_flight_requests") == 0

    asyncio.run(run())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
