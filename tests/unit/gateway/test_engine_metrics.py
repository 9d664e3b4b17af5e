"""Engine figures under NIM's names from Triton's metrics: the tensorrtllm backend's families (as upstream
declares them, tests/data/upstream/tensorrtllm_backend_metrics.json), which the python `tensorrt_llm` models publish
too."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from nemo_gateway.engine_metrics import (
    combined_figures,
    default_metrics_url,
    default_metrics_urls,
    engine_figures,
    parse,
)
from tests.unit.gateway.conftest import Gateway

UPSTREAM = json.loads((Path(__file__).parents[2] / "data/upstream/tensorrtllm_backend_metrics.json").read_text())


def gpu_exposition(values: dict[tuple[str, str], float]) -> str:
    """Triton's text for every gauge family the backend declares, each label value 0 unless given."""
    lines = []
    for family, spec in UPSTREAM["families"].items():
        if spec["kind"] != "gauge":
            continue
        lines.append(f"# TYPE {family} gauge")
        for value in spec["values"]:
            number = values.get((family, value), 0.0)
            lines.append(f'{family}{{{spec["label"]}="{value}",model="tensorrt_llm",version="1"}} {number}')
    return "\n".join(lines) + "\n"


def test_gpu_figures_come_from_the_backend_s_request_and_kv_cache_families() -> None:
    text = gpu_exposition(
        {
            ("nv_trt_llm_request_metrics", "scheduled"): 12,
            ("nv_trt_llm_request_metrics", "waiting"): 3,
            ("nv_trt_llm_request_metrics", "active"): 15,
            ("nv_trt_llm_kv_cache_block_metrics", "fraction"): 0.25,
        }
    )
    assert engine_figures(parse(text)) == {
        "num_requests_running": 12,
        "num_requests_waiting": 3,
        "gpu_cache_usage_perc": 0.25,
        "kv_cache_usage_perc": 0.25,
    }


def test_the_reference_runtime_s_families_give_the_same_figures() -> None:
    """What nemo_runtime.batch_metrics publishes (its own families, not a copy typed here) reads as the GPU's do."""
    from nemo_runtime.batch_metrics import TritonMetrics
    from nemo_runtime.inflight import BatcherStats

    exposition = PrometheusExposition()
    TritonMetrics(exposition, {"model": "tensorrt_llm", "version": "1"}).publish(
        BatcherStats(running=3, waiting=1, max_batch_size=8, cancelled=2, kv_blocks_used=6, kv_blocks_max=24)
    )
    figures = engine_figures(parse(exposition.text()))
    assert figures["num_requests_running"] == 3 and figures["num_requests_waiting"] == 1
    assert figures["kv_cache_usage_perc"] == pytest.approx(6 / 24) == figures["gpu_cache_usage_perc"]


class PrometheusExposition:
    """`pb_utils.MetricFamily` over prometheus_client: the text Triton would serve for the same calls."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry

        class MetricFamily:
            GAUGE, COUNTER = "gauge", "counter"

            def __init__(self, name: str, description: str, kind: str) -> None:
                self.name, self.description, self.kind = name, description, kind
                self.metrics: dict[str, Gauge | Counter] = {}

            def Metric(self, labels: dict[str, str]) -> TritonMetric:
                kind = Gauge if self.kind == self.GAUGE else Counter
                name = self.name.removesuffix("_total") if kind is Counter else self.name
                if name not in self.metrics:
                    self.metrics[name] = kind(name, self.description, list(labels), registry=registry)
                return TritonMetric(self.metrics[name].labels(**labels))

        self.MetricFamily = MetricFamily

    def text(self) -> str:
        return generate_latest(self.registry).decode()


class TritonMetric:
    """`pb_utils.Metric`'s calls on a prometheus_client child."""

    def __init__(self, child: Any) -> None:
        self._child = child

    def set(self, value: float) -> None:
        self._child.set(value)

    def increment(self, value: float) -> None:
        self._child.inc(value)


def test_the_metrics_url_defaults_to_port_8002_of_the_triton_host() -> None:
    assert default_metrics_url("triton.ns.svc:8001") == "http://triton.ns.svc:8002/metrics"
    assert default_metrics_url("localhost:8001") == "http://localhost:8002/metrics"


def test_without_triton_s_metrics_the_gateway_says_so_and_keeps_its_own(make_gateway: object) -> None:
    gateway: Gateway = make_gateway(triton_metrics_url="http://127.0.0.1:9/metrics")  # type: ignore[operator]
    gateway.http.post("/v1/completions", json={"prompt": "hi"})
    text = gateway.http.get("/v1/metrics").text
    assert "nemo_gateway_engine_metrics_up 0.0" in text
    assert "num_requests_running" not in text
    for name in ("prompt_tokens_total", "generation_tokens_total", "time_to_first_token_seconds_bucket",
                 "time_per_output_token_seconds_bucket", "e2e_request_latency_seconds_bucket"):  # fmt: skip
        assert f"\n{name}" in text or f"# TYPE {name.removesuffix('_bucket')}" in text, name


def test_the_default_metrics_urls_are_port_8002_of_every_server_the_target_names() -> None:
    assert default_metrics_urls("ipv4:10.0.0.1:8001,10.0.0.2:8001") == [
        "http://10.0.0.1:8002/metrics",
        "http://10.0.0.2:8002/metrics",
    ]
    assert default_metrics_urls("ipv6:[fd00::1]:8001") == ["http://[fd00::1]:8002/metrics"]
    # A DNS name: each address the balancer found for it; the name itself before it looked.
    headless = "dns:///triton-headless.ns.svc.cluster.local:8001"
    assert default_metrics_urls(headless) == ["http://triton-headless.ns.svc.cluster.local:8002/metrics"]
    assert default_metrics_urls(headless, ["10.1.0.7:8001", "[fd00::9]:8001"]) == [
        "http://10.1.0.7:8002/metrics",
        "http://[fd00::9]:8002/metrics",
    ]
    assert default_metrics_url(headless) == "http://triton-headless.ns.svc.cluster.local:8002/metrics"
    assert default_metrics_urls("unix:/run/triton.sock") == ["http://localhost:8002/metrics"]


def test_the_figures_of_several_servers_are_summed_and_the_kv_cache_usage_averaged() -> None:
    one = parse(gpu_exposition({("nv_trt_llm_request_metrics", "scheduled"): 12,
                                ("nv_trt_llm_request_metrics", "waiting"): 3,
                                ("nv_trt_llm_kv_cache_block_metrics", "fraction"): 0.5}))  # fmt: skip
    two = parse(gpu_exposition({("nv_trt_llm_request_metrics", "scheduled"): 4,
                                ("nv_trt_llm_kv_cache_block_metrics", "fraction"): 0.25}))  # fmt: skip
    assert combined_figures([one, two]) == {
        "num_requests_running": 16,
        "num_requests_waiting": 3,
        "gpu_cache_usage_perc": 0.375,
        "kv_cache_usage_perc": 0.375,
    }
    assert combined_figures([one]) == engine_figures(one)
    assert combined_figures([]) == {}


@pytest.fixture
def triton_metrics_servers() -> Iterator[list[str]]:
    """Two HTTP servers answering /metrics as two Triton servers would."""
    texts = [
        gpu_exposition({("nv_trt_llm_request_metrics", "scheduled"): 5, ("nv_trt_llm_request_metrics", "waiting"): 1}),
        gpu_exposition({("nv_trt_llm_request_metrics", "scheduled"): 2, ("nv_trt_llm_request_metrics", "waiting"): 4}),
    ]
    servers = []
    for text in texts:

        class Handler(BaseHTTPRequestHandler):
            body = text.encode()

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(self.body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{server.server_address[1]}/metrics" for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_gateway_reads_every_server_s_metrics_and_says_how_many(
    make_gateway: object, triton_metrics_servers: list[str]
) -> None:
    urls = ",".join(triton_metrics_servers)
    gateway: Gateway = make_gateway(triton_metrics_url=urls)  # type: ignore[operator]
    text = gateway.http.get("/v1/metrics").text
    assert "nemo_gateway_engine_metrics_up 1.0" in text and "nemo_gateway_engine_metrics_servers 2.0" in text
    assert "\nnum_requests_running 7.0" in text and "\nnum_requests_waiting 5.0" in text
    gateway = make_gateway(triton_metrics_url=f"{urls},http://127.0.0.1:9/metrics")  # type: ignore[operator]
    text = gateway.http.get("/v1/metrics").text
    assert "nemo_gateway_engine_metrics_up 0.0" in text and "nemo_gateway_engine_metrics_servers 2.0" in text
    assert "\nnum_requests_running 7.0" in text, "the figures of the servers that were read"
