"""Per-request records and the per-level summary NVIDIA reports for NIMs (genai-perf definitions).

* time to first token (TTFT): request sent → first chunk carrying generated text or a tool call;
* inter-token latency (ITL): ``(e2e − TTFT) / (output_tokens − 1)`` per request;
* end-to-end latency: request sent → last byte of the stream;
* request and output-token throughput: successful requests and their output tokens over the span from
  the first measured request's start to the last one's end.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50, 90, 99)


@dataclass
class RequestRecord:
    """What one request did, in seconds on the monotonic clock."""

    start: float
    end: float = 0.0
    first_token: float | None = None
    output_tokens: int = 0
    input_tokens: int | None = None
    """Prompt tokens as the server counted them (usage), else as the workload measured them."""
    error_type: str | None = None
    error_message: str | None = None
    endpoint: str | None = None
    """Which of several endpoints the benchmark sent it to (None: there was one)."""

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start

    @property
    def e2e(self) -> float:
        return self.end - self.start

    @property
    def itl(self) -> float | None:
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _distribution_ms(values: Sequence[float]) -> dict[str, float]:
    stats = {f"p{q}": percentile(values, q) * 1000 for q in PERCENTILES}
    stats["mean"] = (sum(values) / len(values) * 1000) if values else math.nan
    return stats


@dataclass(frozen=True)
class LevelSummary:
    """One load level: a concurrency (``mode == "concurrency"``) or a request rate (``"rate"``)."""

    mode: str
    level: float
    requests: int
    successes: int
    errors: dict[str, int]
    duration_s: float
    request_throughput: float
    output_token_throughput: float
    mean_input_tokens: float
    mean_output_tokens: float
    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2e_ms: dict[str, float]
    first_errors: list[str] = field(default_factory=list)
    """Up to three distinct error messages, so that a failing level says why."""
    spread: dict[str, int] = field(default_factory=dict)
    """Requests per server: as the Triton servers counted them (``--spread-metrics-url``), else per endpoint of the
    benchmark's own when it had several; empty when neither."""

    @property
    def spread_deviation(self) -> float | None:
        """The largest departure of a server's share from an even one, as a fraction of the even share."""
        if len(self.spread) < 2 or not sum(self.spread.values()):
            return None
        even = sum(self.spread.values()) / len(self.spread)
        return max(abs(count - even) for count in self.spread.values()) / even

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LevelSummary:
        """The inverse of :meth:`as_dict`, reading a ``results.json`` level (null stats become NaN)."""

        def stats(values: dict[str, Any]) -> dict[str, float]:
            return {key: math.nan if value is None else float(value) for key, value in values.items()}

        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        return cls(
            mode=data["mode"],
            level=float(data["level"]),
            requests=int(data["requests"]),
            successes=int(data["successes"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            duration_s=number(data["duration_s"]),
            request_throughput=number(data["request_throughput"]),
            output_token_throughput=number(data["output_token_throughput"]),
            mean_input_tokens=number(data["mean_input_tokens"]),
            mean_output_tokens=number(data["mean_output_tokens"]),
            ttft_ms=stats(data["ttft_ms"]),
            itl_ms=stats(data["itl_ms"]),
            e2e_ms=stats(data["e2e_ms"]),
            first_errors=list(data.get("first_errors", [])),
            spread={str(k): int(v) for k, v in (data.get("spread") or {}).items()},
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "level": self.level,
            "requests": self.requests,
            "successes": self.successes,
            "errors": dict(self.errors),
            "duration_s": self.duration_s,
            "request_throughput": self.request_throughput,
            "output_token_throughput": self.output_token_throughput,
            "mean_input_tokens": self.mean_input_tokens,
            "mean_output_tokens": self.mean_output_tokens,
            "ttft_ms": dict(self.ttft_ms),
            "itl_ms": dict(self.itl_ms),
            "e2e_ms": dict(self.e2e_ms),
            "first_errors": list(self.first_errors),
            "spread": dict(self.spread),
        }


def summarize(
    mode: str, level: float, records: Sequence[RequestRecord], spread: Mapping[str, int] | None = None
) -> LevelSummary:
    """The level's summary; ``spread``: requests per server as the servers counted them (else per endpoint of the
    records, when they went to several)."""
    good = [r for r in records if r.ok]
    if spread is None:
        endpoints = Counter(r.endpoint for r in records if r.endpoint is not None)
        spread = dict(sorted(endpoints.items())) if len(endpoints) > 1 else {}
    span = (max(r.end for r in records) - min(r.start for r in records)) if records else 0.0
    output_tokens = sum(r.output_tokens for r in good)
    inputs = [r.input_tokens for r in good if r.input_tokens is not None]
    messages = list(dict.fromkeys(f"{r.error_type}: {r.error_message}" for r in records if not r.ok))
    return LevelSummary(
        mode=mode,
        level=level,
        requests=len(records),
        successes=len(good),
        errors=dict(Counter(r.error_type for r in records if r.error_type is not None)),
        duration_s=span,
        request_throughput=len(good) / span if span > 0 else 0.0,
        output_token_throughput=output_tokens / span if span > 0 else 0.0,
        mean_input_tokens=sum(inputs) / len(inputs) if inputs else math.nan,
        mean_output_tokens=output_tokens / len(good) if good else math.nan,
        ttft_ms=_distribution_ms([r.ttft for r in good if r.ttft is not None]),
        itl_ms=_distribution_ms([r.itl for r in good if r.itl is not None]),
        e2e_ms=_distribution_ms([r.e2e for r in good]),
        first_errors=messages[:3],
        spread=dict(spread),
    )
