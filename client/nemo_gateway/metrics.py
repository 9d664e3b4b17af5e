"""Prometheus metrics of the gateway, in a registry of its own (served at ``/v1/metrics``).

Beside its ``nemo_gateway_*`` metrics the gateway keeps the request figures NIM and vLLM dashboards read, under
their names: ``prompt_tokens_total``, ``generation_tokens_total``, ``time_to_first_token_seconds``,
``time_per_output_token_seconds`` (per stream: the time after the first token over the tokens after it) and
``e2e_request_latency_seconds``; the engine's (requests running and waiting, KV-cache usage) come from Triton
at each scrape (:mod:`nemo_gateway.engine_metrics`).

Admission (:mod:`nemo_gateway.admission`): ``nemo_gateway_admission_in_flight`` (slots held),
``nemo_gateway_admission_queued`` (requests waiting for one), ``nemo_gateway_admission_max_in_flight`` (the bound;
0: none), ``nemo_gateway_admission_wait_seconds`` and ``nemo_gateway_requests_shed_total{reason}`` (429s:
``queue_full``, ``queue_wait``). The Triton servers requests go to (:mod:`nemo_client.balancer`):
``nemo_gateway_triton_servers`` and, per server, ``nemo_gateway_triton_requests_in_flight{server}``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from nemo_client.balancer import EndpointState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nemo_gateway_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.errors = Counter(
            "nemo_gateway_errors", "Requests that ended in an error", ["type"], registry=self.registry
        )
        self.in_flight = Gauge("nemo_gateway_in_flight_requests", "Requests being served", registry=self.registry)
        self.time_to_first_token = Histogram(
            "nemo_gateway_time_to_first_token_seconds",
            "Time from request to the first streamed token",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "nemo_gateway_request_duration_seconds",
            "Time from request to the last byte of the answer",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter("nemo_gateway_prompt_tokens", "Prompt tokens processed", registry=self.registry)
        self.completion_tokens = Counter(
            "nemo_gateway_completion_tokens", "Completion tokens generated", registry=self.registry
        )
        self.admission_in_flight = Gauge(
            "nemo_gateway_admission_in_flight",
            "Admission slots held: generations upstream (a request with n choices holds n)",
            registry=self.registry,
        )
        self.admission_queued = Gauge(
            "nemo_gateway_admission_queued", "Requests waiting for an admission slot", registry=self.registry
        )
        self.admission_max_in_flight = Gauge(
            "nemo_gateway_admission_max_in_flight", "Admission slots (--max-in-flight; 0: no bound)",
            registry=self.registry,
        )  # fmt: skip
        self.admission_wait = Histogram(
            "nemo_gateway_admission_wait_seconds",
            "Time a request waited for an admission slot (refused ones included)",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.requests_shed = Counter(
            "nemo_gateway_requests_shed",
            "Requests refused with 429 at the admission bounds, by reason (queue_full, queue_wait)",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("queue_full", "queue_wait"):
            self.requests_shed.labels(reason)
        # NIM's / vLLM's names
        self.nim_prompt_tokens = Counter("prompt_tokens", "Prompt tokens processed", registry=self.registry)
        self.nim_generation_tokens = Counter("generation_tokens", "Tokens generated", registry=self.registry)
        self.nim_time_to_first_token = Histogram(
            "time_to_first_token_seconds", "Time to the first token", buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.time_per_output_token = Histogram(
            "time_per_output_token_seconds",
            "Time per output token after the first, per stream",
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.e2e_request_latency = Histogram(
            "e2e_request_latency_seconds", "Time from request to its last token", buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip

    def count_usage(self, usage: Mapping[str, Any] | None) -> None:
        """Add an OpenAI ``usage`` object's prompt and completion tokens."""
        if usage:
            for counters, key in (
                ((self.prompt_tokens, self.nim_prompt_tokens), "prompt_tokens"),
                ((self.completion_tokens, self.nim_generation_tokens), "completion_tokens"),
            ):
                for counter in counters:
                    counter.inc(usage.get(key) or 0)

    def first_token(self, seconds: float) -> None:
        self.time_to_first_token.observe(seconds)
        self.nim_time_to_first_token.observe(seconds)

    def generation_done(self, seconds: float, first_token_s: float | None, usage: Mapping[str, Any] | None) -> None:
        """A generation ended ``seconds`` after its request; a stream's first token came after ``first_token_s``."""
        self.e2e_request_latency.observe(seconds)
        tokens = int((usage or {}).get("completion_tokens") or 0)
        if first_token_s is not None and tokens > 1:
            self.time_per_output_token.observe((seconds - first_token_s) / (tokens - 1))

    def answered(self, endpoint: str, status: int, latency_s: float | None) -> None:
        """Count one answered request under its endpoint and HTTP status, and observe its latency when known."""
        self.requests.labels(endpoint, str(status)).inc()
        if latency_s is not None:
            self.request_latency.labels(endpoint).observe(latency_s)

    def failed(self, error_type: str) -> None:
        """Count one error answer (an error body, or an error event that ended a stream) by its OpenAI type."""
        self.errors.labels(error_type).inc()

    # AdmissionObserver
    def admission_changed(self, in_flight: int, queued: int) -> None:
        self.admission_in_flight.set(in_flight)
        self.admission_queued.set(queued)

    def waited(self, seconds: float) -> None:
        self.admission_wait.observe(seconds)

    def shed(self, reason: str) -> None:
        self.requests_shed.labels(reason).inc()

    def render(self, engine: Iterable[Metric] = ()) -> bytes:
        """The exposition text: the gateway's metrics, then the ``engine`` figures."""
        extra = CollectorRegistry(auto_describe=False)
        extra.register(_Fixed(list(engine)))
        return generate_latest(self.registry) + generate_latest(extra)


def triton_server_families(servers: Sequence[EndpointState]) -> Iterable[Metric]:
    """The Triton servers the gateway sends requests to now, and each one's requests in flight from it."""
    yield GaugeMetricFamily("nemo_gateway_triton_servers", "Triton servers requests go to", value=len(servers))
    in_flight = GaugeMetricFamily(
        "nemo_gateway_triton_requests_in_flight", "Requests in flight to each Triton server", labels=["server"]
    )
    connected = GaugeMetricFamily(
        "nemo_gateway_triton_server_connected", "1 while connected to the Triton server", labels=["server"]
    )
    for server in servers:
        in_flight.add_metric([server.name], server.in_flight)
        connected.add_metric([server.name], int(server.connected))
    yield in_flight
    yield connected


class _Fixed:
    """A collector of metric families computed beforehand."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
