"""Engine figures under NIM's names from Triton's metrics: the tensorrtllm backend's families (as upstream
declares them, tests/data/upstream/tensorrtllm_backend_metrics.json), which the python `tensorrt_llm` models publish
too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from nemo_gateway.engine_metrics import default_metrics_url, engine_figures, parse
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
