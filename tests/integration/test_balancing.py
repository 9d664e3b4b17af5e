"""One gateway in front of three Triton servers (CPU, the stand-in engine, one rendered repository), all on loopback.

The gateway's target lists the three gRPC addresses (``ipv4:A,B,C``), as the headless Service's DNS name resolves to
every ready Triton pod in the chart. Where each request went is read from each Triton's own
``nv_inference_request_success{model="tensorrt_llm"}`` counter (the gateway's direct path calls that model once per
chat request). One scenario, in order:

1. B and C are up, A is not started yet: every request succeeds (on B and C);
2. A is started after the gateway: it gets requests within 10 s of being ready;
3. 90 requests spread within ±15% of an even third per server;
4. B is stopped while streams run: only streams in flight on B may fail; every request sent after the stop
   succeeds (a request B refuses while shutting down goes to another server).

And admission through the real gateway: past ``--max-in-flight`` and ``--max-queued``, a 429 with Retry-After.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_build.repository import TEMPLATES_DIR, RepositorySettings, render_repository
from nemo_gateway.admission import AdmissionLimits
from nemo_gateway.settings import GatewaySettings
from nemo_ops.launcher import TritonServer
from tests.integration.gateways import SERVED, running_gateway

TOKENS_PER_S = 100.0
SHORT, LONG = 4, 250  # output tokens: a request of a few ms, a stream of about 2.5 s
SPREAD_REQUESTS = 90
CONCURRENCY = 9
COUNTER = re.compile(r'^nv_inference_request_success\{model="tensorrt_llm",version="1"\} (\S+)$', re.M)
QUESTION = [{"role": "user", "content": "Which server answers?"}]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, tekken_path: Path) -> Path:
    settings = RepositorySettings(
        target="stand-in",
        model_dir=tekken_path,
        max_batch_size=16,
        max_input_len=512,
        max_seq_len=1024,
        served_model_name=SERVED,
        stand_in_tokens_per_s=TOKENS_PER_S,
    )
    out = tmp_path_factory.mktemp("balancing") / "repository"
    render_repository(TEMPLATES_DIR, settings, tekken_path, out)
    return out


@pytest.fixture(scope="module")
def servers(repository: Path) -> Iterator[dict[str, TritonServer]]:
    """Three servers on one repository, not started (each test starts what it needs); all stopped at the end."""
    made = {name: TritonServer(repository, grace_s=8) for name in "ABC"}
    try:
        yield made
    finally:
        for server in made.values():
            server.stop()


def start(*servers: TritonServer) -> None:
    """Start the servers not started yet, side by side, and wait until each is ready."""
    starting = [server for server in servers if server.pid is None]
    for server in starting:
        server.start()
    for server in starting:  # once each: wait_ready starts the server's stub supervisor
        server.wait_ready()


def served(server: TritonServer) -> float:
    """Requests `tensorrt_llm` completed on this server so far (0 when it is not running)."""
    try:
        with urllib.request.urlopen(f"http://{server.host}:{server.ports.metrics}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    match = COUNTER.search(text)
    return float(match.group(1)) if match else 0.0


def chat(http: httpx.Client, max_tokens: int) -> str | None:
    """One streamed chat request through the gateway: None when it succeeded, else what went wrong."""
    body = {"model": SERVED, "messages": QUESTION, "max_tokens": max_tokens, "stream": True,
            "nvext": {"ignore_eos": True}}  # fmt: skip
    try:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {response.read().decode()}"
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if lines[-1] != "data: [DONE]":
        return f"the stream ended with {lines[-1]}"
    return None


def in_flight_on(http: httpx.Client, server: TritonServer) -> float:
    """The gateway's requests in flight to ``server`` (its /v1/metrics)."""
    text = http.get("/v1/metrics").text
    match = re.search(
        rf'^nemo_gateway_triton_requests_in_flight\{{server="{re.escape(server.grpc_url)}"\}} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


@pytest.mark.timeout(420)
def test_one_gateway_spreads_requests_over_three_tritons_that_come_and_go(servers: dict[str, TritonServer]) -> None:
    a, b, c = servers["A"], servers["B"], servers["C"]
    start(b, c)
    target = "ipv4:" + ",".join(server.grpc_url for server in (a, b, c))
    settings = GatewaySettings(triton_url=target, served_model_name=SERVED, request_timeout_s=60)
    with (
        running_gateway(settings) as base,
        httpx.Client(base_url=base, timeout=60) as http,
        ThreadPoolExecutor(CONCURRENCY) as pool,
    ):

        def run(count: int, max_tokens: int = SHORT) -> list[str | None]:
            return list(pool.map(lambda _: chat(http, max_tokens), range(count)))

        # 1. A is not started: every request goes to B or C, and none fails.
        assert run(12) == [None] * 12
        assert served(b) + served(c) == 12

        # 2. A started after the gateway gets requests within 10 s of being ready.
        start(a)
        ready = time.monotonic()
        while served(a) == 0:
            assert time.monotonic() - ready < 10, "the Triton started after the gateway got no request within 10 s"
            assert run(3) == [None] * 3
        print(f"A got its first request {time.monotonic() - ready:.2f} s after it was ready")

        # 3. 90 requests spread evenly, within ±15% of a third each.
        before = {name: served(server) for name, server in servers.items()}
        assert run(SPREAD_REQUESTS) == [None] * SPREAD_REQUESTS
        counts = {name: served(server) - before[name] for name, server in servers.items()}
        print(f"{SPREAD_REQUESTS} requests per server: {counts}")
        assert sum(counts.values()) == SPREAD_REQUESTS
        even = SPREAD_REQUESTS / 3
        assert all(abs(count - even) <= 0.15 * even for count in counts.values()), counts

        # 4. B stops while streams run on all three: only streams that were on B may fail; every request sent after
        # the stop succeeds.
        streams = [pool.submit(chat, http, LONG) for _ in range(6)]
        deadline = time.monotonic() + 10
        while in_flight_on(http, b) < 2:
            assert time.monotonic() < deadline, "the streams did not reach B"
            time.sleep(0.05)
        on_b = in_flight_on(http, b)
        stopping = threading.Thread(target=b.stop)
        stopping.start()
        with ThreadPoolExecutor(3) as senders:  # while B shuts down, and after
            after_stop = list(senders.map(lambda _: chat(http, SHORT), range(30)))
        stopping.join()
        assert after_stop == [None] * 30, [problem for problem in after_stop if problem]
        assert run(15) == [None] * 15, "after B is gone"
        failed = [problem for problem in (stream.result() for stream in streams) if problem]
        print(f"streams in flight on B at its stop: {on_b:.0f}; streams that failed: {failed}")
        assert len(failed) <= on_b, failed
        assert served(b) == 0  # gone


def test_past_its_admission_bounds_the_gateway_answers_429_with_retry_after(servers: dict[str, TritonServer]) -> None:
    server = servers["C"]
    start(server)
    settings = GatewaySettings(
        triton_url=server.grpc_url, served_model_name=SERVED, admission=AdmissionLimits(2, 1, 30.0)
    )
    with running_gateway(settings) as base, httpx.Client(base_url=base, timeout=60) as http:

        def ask(_: Any) -> httpx.Response:
            body = {"model": SERVED, "messages": QUESTION, "max_tokens": 150, "nvext": {"ignore_eos": True}}
            return http.post("/v1/chat/completions", json=body)

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, range(6)))
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200, 200, 200, 429, 429, 429], "2 run, 1 waits for a slot, 3 are refused"
        for refused in (answer for answer in answers if answer.status_code == 429):
            assert refused.json()["error"]["type"] == "rate_limit_exceeded"
            assert int(refused.headers["Retry-After"]) >= 1
        text = http.get("/v1/metrics").text
        assert 'nemo_gateway_requests_shed_total{reason="queue_full"} 3.0' in text
        assert "nemo_gateway_admission_in_flight 0.0" in text and "nemo_gateway_admission_queued 0.0" in text
