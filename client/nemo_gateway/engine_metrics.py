"""Engine figures under the names NIM and vLLM dashboards read, derived from Triton's own metrics.

On every ``/v1/metrics`` scrape the gateway reads the metrics endpoint of every Triton server it sends requests to
(``--triton-metrics-url``, comma-separated; by default port 8002 of each server: each address of a ``dns:///``
name, as the gateway's balancer last looked it up, each address of an ``ipv4:`` list, or the host of
``host:port``) and derives, summed over the servers:

- ``num_requests_running``: ``nv_trt_llm_request_metrics{request_type="scheduled"}``;
- ``num_requests_waiting``: ``nv_trt_llm_request_metrics{request_type="waiting"}``;
- ``gpu_cache_usage_perc`` (NIM) and ``kv_cache_usage_perc`` (vLLM), 0-1:
  ``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}``, the mean over the servers.

Every runtime publishes these families: the C++ tensorrtllm backend, and the python `tensorrt_llm` models (the
reference runtime and the stand-in, nemo_runtime.batch_metrics).

``nemo_gateway_engine_metrics_up`` is 1 when every server's metrics were read, else 0; the figures come from the
servers that were read (``nemo_gateway_engine_metrics_servers`` of them) and are absent when none was.
The backend's family and label names are held in ``tests/data/upstream/tensorrtllm_backend_metrics.json``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from nemo_client.grpc_target import parse_target

TRT_REQUESTS = "nv_trt_llm_request_metrics"
TRT_KV_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"
SCRAPE_TIMEOUT_S = 2.0


TRITON_METRICS_PORT = 8002


def metrics_url(host: str) -> str:
    """Triton's metrics endpoint on ``host`` (an IPv6 address in brackets or not), at its default port."""
    host = host.strip("[]")
    return (
        f"http://[{host}]:{TRITON_METRICS_PORT}/metrics"
        if ":" in host
        else f"http://{host}:{TRITON_METRICS_PORT}/metrics"
    )


def default_metrics_urls(triton_url: str, servers: Sequence[str] = ()) -> list[str]:
    """The metrics endpoints of the Triton servers: of ``servers`` (``address:port``, the balancer's) when given,
    else of every host ``triton_url`` names (a DNS name as it is; ``localhost`` for a unix socket)."""
    hosts = [server.rpartition(":")[0] for server in servers] or list(parse_target(triton_url).hosts)
    return [metrics_url(host) for host in hosts or ["localhost"]]


def default_metrics_url(triton_url: str) -> str:
    """The metrics endpoint of the first host ``triton_url`` names."""
    return default_metrics_urls(triton_url)[0]


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


def combined_figures(per_server: Sequence[Samples]) -> dict[str, float]:
    """The figures of several servers: requests summed, KV-cache usage the mean of the servers that report it."""
    figures: dict[str, float] = {}
    usages: list[float] = []
    for samples in per_server:
        for name, value in engine_figures(samples).items():
            if name == "kv_cache_usage_perc":
                usages.append(value)
            elif name != "gpu_cache_usage_perc":
                figures[name] = figures.get(name, 0.0) + value
    if usages:
        figures["gpu_cache_usage_perc"] = figures["kv_cache_usage_perc"] = sum(usages) / len(usages)
    return figures


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


def families(figures: Mapping[str, float], up: bool, servers: int | None = None) -> Iterable[Metric]:
    yield GaugeMetricFamily("nemo_gateway_engine_metrics_up", "1 when every Triton's metrics were read", value=int(up))
    if servers is not None:
        yield GaugeMetricFamily(
            "nemo_gateway_engine_metrics_servers", "Triton servers whose metrics were read", value=servers
        )
    for name, value in figures.items():
        yield GaugeMetricFamily(name, HELP[name], value=value)


async def scrape(url: str, client: httpx.AsyncClient | None = None) -> Samples | None:
    """Triton's metrics, or None when they cannot be read."""
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as own:
                response = await own.get(url)
        else:
            response = await client.get(url)
        response.raise_for_status()
        return parse(response.text)
    except (httpx.HTTPError, ValueError):
        return None


async def scrape_all(urls: Sequence[str]) -> list[Samples | None]:
    """Every endpoint's metrics (None where they cannot be read), read at once."""
    async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as client:
        return list(await asyncio.gather(*(scrape(url, client) for url in urls)))
