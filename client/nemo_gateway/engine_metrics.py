"""Engine figures under the names NIM and vLLM dashboards read, derived from Triton's own metrics.

On every ``/v1/metrics`` scrape the gateway reads Triton's metrics endpoint (``--triton-metrics-url``) and
derives:

- ``num_requests_running``: ``nv_trt_llm_request_metrics{request_type="scheduled"}``;
- ``num_requests_waiting``: ``nv_trt_llm_request_metrics{request_type="waiting"}``;
- ``gpu_cache_usage_perc`` (NIM) and ``kv_cache_usage_perc`` (vLLM), 0-1:
  ``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}``.

Every runtime publishes these families: the C++ tensorrtllm backend, and the python `tensorrt_llm` models (the
reference runtime and the stand-in, nemo_runtime.batch_metrics).

``nemo_gateway_engine_metrics_up`` is 1 when Triton's metrics were read, else 0 and the figures above are absent.
The backend's family and label names are held in ``tests/data/upstream/tensorrtllm_backend_metrics.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

TRT_REQUESTS = "nv_trt_llm_request_metrics"
TRT_KV_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"
SCRAPE_TIMEOUT_S = 2.0


def default_metrics_url(triton_url: str) -> str:
    """Triton's metrics endpoint on the gRPC address's host, at Triton's default metrics port 8002."""
    host = urlsplit(f"//{triton_url}").hostname or "localhost"
    return f"http://{host}:8002/metrics"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels (``model`` and ``version`` dropped)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k not in ("model", "version"))
            key = (sample.name, labels)
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    wanted = set(labels.items())
    values = [value for (sample, have), value in samples.items() if sample == name and wanted <= have]
    return sum(values) if values else None


def engine_figures(samples: Samples) -> dict[str, float]:
    """NIM-named figures from the tensorrtllm backend's metric families (what is there)."""
    figures: dict[str, float] = {}
    running = _value(samples, TRT_REQUESTS, request_type="scheduled")
    waiting = _value(samples, TRT_REQUESTS, request_type="waiting")
    usage = _value(samples, TRT_KV_BLOCKS, kv_cache_block_type="fraction")
    for name, value in (("num_requests_running", running), ("num_requests_waiting", waiting)):
        if value is not None:
            figures[name] = value
    if usage is not None:
        figures["gpu_cache_usage_perc"] = figures["kv_cache_usage_perc"] = usage
    return figures


HELP = {
    "num_requests_running": "Requests in the engine's running batch",
    "num_requests_waiting": "Requests queued for the engine's batch",
    "gpu_cache_usage_perc": "KV-cache usage, 0-1 (NIM's name)",
    "kv_cache_usage_perc": "KV-cache usage, 0-1 (vLLM's name)",
}


def families(figures: Mapping[str, float], up: bool) -> Iterable[Metric]:
    yield GaugeMetricFamily("nemo_gateway_engine_metrics_up", "1 when Triton's metrics were read", value=int(up))
    for name, value in figures.items():
        yield GaugeMetricFamily(name, HELP[name], value=value)


async def scrape(url: str) -> Samples | None:
    """Triton's metrics, or None when they cannot be read."""
    try:
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as client:
            response = await client.get(url)
        response.raise_for_status()
        return parse(response.text)
    except (httpx.HTTPError, ValueError):
        return None
