"""Engine figures under NIM's names from Triton's metrics: the tensorrtllm backend's families (as upstream
declares them, tests/data/upstream/tensorrtllm_backend_metrics.json) on GPU, the reference runtime's on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_cpu_figures_come_from_the_reference_runtime_s_gauges() -> None:
    labels = 'model="tensorrt_llm",version="1"'
    text = "\n".join(
        [
            "# TYPE nemo_runtime_requests_running gauge",
            f"nemo_runtime_requests_running{{{labels}}} 3",
            "# TYPE nemo_runtime_requests_waiting gauge",
            f"nemo_runtime_requests_waiting{{{labels}}} 1",
            "# TYPE nemo_runtime_batch_slots_free gauge",
            f"nemo_runtime_batch_slots_free{{{labels}}} 5",
        ]
    )
    figures = engine_figures(parse(text + "\n"))
    assert figures["num_requests_running"] == 3 and figures["num_requests_waiting"] == 1
    assert figures["kv_cache_usage_perc"] == pytest.approx(3 / 8)


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
