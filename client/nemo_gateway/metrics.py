"""Prometheus metrics of the gateway, in a registry of its own (served at ``/v1/metrics``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


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

    def count_usage(self, usage: Mapping[str, Any] | None) -> None:
        """Add an OpenAI ``usage`` object's prompt and completion tokens."""
        if usage:
            self.prompt_tokens.inc(usage.get("prompt_tokens") or 0)
            self.completion_tokens.inc(usage.get("completion_tokens") or 0)

    def answered(self, endpoint: str, status: int, latency_s: float | None) -> None:
        """Count one answered request under its endpoint and HTTP status, and observe its latency when known."""
        self.requests.labels(endpoint, str(status)).inc()
        if latency_s is not None:
            self.request_latency.labels(endpoint).observe(latency_s)

    def failed(self, error_type: str) -> None:
        """Count one error answer (an error body, or an error event that ended a stream) by its OpenAI type."""
        self.errors.labels(error_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
