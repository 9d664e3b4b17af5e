"""The batch state of a python `tensorrt_llm` model as Triton custom metrics (`pb_utils.MetricFamily`), under the C++
tensorrtllm backend's names, so that dashboards, the HPA, the gateway's `/v1/metrics` and the Gateway
API Inference Extension's endpoint picker (engine type `triton-tensorrt-llm`) read one set of names on every runtime.

Triton serves them at its metrics port (`/metrics`), labelled with the model's name and version. The families, label
names and label values are the backend's (tests/data/upstream/tensorrtllm_backend_metrics.json), with its meanings:

| metric | label value | what |
| --- | --- | --- |
| `nv_trt_llm_request_metrics{request_type=...}` | `active` | requests in the engine: running + waiting |
| | `max` | `max_batch_size` |
| | `scheduled` | requests holding a batch slot (prefilled, decoding) |
| | `waiting` | requests queued for a slot (`active` - `scheduled`, as the backend computes it) |
| `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=...}` | `tokens_per` | positions per block (64 on CPU) |
| | `max` | blocks a full batch of sequences of `max_seq_len` positions fills |
| | `used` | blocks the running requests' positions fill |
| | `free` | `max` - `used` |
| | `reused` | 0: the CPU engines reuse no cached prefix |
| | `fraction` | `used` / `max` |

The `pytorch` model (TensorRT-LLM's LLM API, nemo_runtime.llm_api) fills the KV-cache values from the executor's
iteration stats (`kvCacheStats`: its own block size, free and reused blocks), as the C++ backend does.
| `nemo_runtime_requests_cancelled_total` | | requests ended early since start (a counter the backend lacks) |

LoRA (the Gateway API Inference Extension's model server protocol, in vLLM's names, which its endpoint picker reads):
| `vllm:lora_requests_info{running_lora_adapters, waiting_lora_adapters, max_lora}` | | the time the labels last became
the state; the labels list the adapters (comma-separated names) of the running and the waiting requests and the adapters
the engine holds at once. One series per set of labels seen (Triton keeps a series once made, as vLLM's gauge does):
the newest, the largest value, is the state now, as the endpoint picker reads it (getLatestLoraMetric). |
| `nemo_runtime_lora_requests_total{lora_name}` | | requests submitted for each adapter since start |

The engine runtime's C++ backend publishes no LoRA metric: there the `lora_requests` model publishes these two
families (LoraMetrics) from the frontends' reports of their adapter requests (nemo_serving.lora_requests).

The backend's `context` request count is not published: the CPU engines prefill within a decode step and keep no
count of it between steps.

A `MetricsPublisher` thread follows `wait_for_change()` and sets only the values that changed: the step loop never
waits on Triton (each metric update is a message to the Triton process), and a steady batch costs nothing but a
change of KV-cache block. Updates are coalesced to at most one per `min_interval_s`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from nemo_runtime.engine_state import BatcherStats

REQUESTS = "nv_trt_llm_request_metrics"
KV_CACHE_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"
CANCELLED = "nemo_runtime_requests_cancelled_total"
LORA_INFO = "vllm:lora_requests_info"
LORA_REQUESTS = "nemo_runtime_lora_requests_total"
GAUGES: dict[tuple[str, str], dict[str, Callable[[BatcherStats], float]]] = {
    (REQUESTS, "request_type"): {
        "active": lambda s: s.running + s.waiting,
        "max": lambda s: s.max_batch_size,
        "scheduled": lambda s: s.running,
        "waiting": lambda s: s.waiting,
    },
    (KV_CACHE_BLOCKS, "kv_cache_block_type"): {
        "tokens_per": lambda s: s.kv_tokens_per_block,
        "max": lambda s: s.kv_blocks_max,
        "used": lambda s: s.kv_blocks_used,
        "free": lambda s: s.kv_free,
        "reused": lambda s: s.kv_blocks_reused,
        "fraction": lambda s: s.kv_blocks_used / s.kv_blocks_max if s.kv_blocks_max else 0.0,
    },
}
DESCRIPTIONS = {
    REQUESTS: "TRT LLM request metrics",
    KV_CACHE_BLOCKS: "TRT LLM KV cache block metrics",
    CANCELLED: "Requests ended before finishing (client cancellation, the stop input)",
    LORA_INFO: "Running stats on lora requests.",
    LORA_REQUESTS: "Requests submitted for each LoRA adapter",
}


class LoraState(Protocol):
    """What the LoRA metrics read: BatcherStats, or the frontends' reports of the engine runtime's adapter requests
    (nemo_serving.lora_requests, published by the `lora_requests` model)."""

    @property
    def lora_running(self) -> tuple[str, ...]: ...  # the adapters of the running requests, by name, sorted

    @property
    def lora_waiting(self) -> tuple[str, ...]: ...  # the adapters of the waiting requests

    @property
    def max_lora(self) -> int: ...  # adapters the engine holds at once; 0: no LoRA, no info gauge

    @property
    def lora_requests(self) -> tuple[tuple[str, int], ...]: ...  # (adapter, requests since start), sorted


def lora_info_labels(stats: LoraState) -> dict[str, str]:
    """The labels of the LoRA info gauge (the protocol's lora_info_labels) for ``stats``."""
    return {
        "running_lora_adapters": ",".join(stats.lora_running),
        "waiting_lora_adapters": ",".join(stats.lora_waiting),
        "max_lora": str(stats.max_lora),
    }


S = TypeVar("S")


class Followed(Protocol[S]):
    """What the publisher follows: the in-flight batcher, the stand-in engine, the book of LoRA requests."""

    def wait_for_change(self, since: S | None, timeout: float) -> S: ...


class LoraMetrics:
    """The LoRA info gauge and the requests-per-adapter counters in Triton (``pb_utils`` as for TritonMetrics)."""

    def __init__(self, pb_utils: Any, labels: Mapping[str, str]) -> None:
        gauge, counter = pb_utils.MetricFamily.GAUGE, pb_utils.MetricFamily.COUNTER
        self._labels = dict(labels)
        self._info_family = pb_utils.MetricFamily(name=LORA_INFO, description=DESCRIPTIONS[LORA_INFO], kind=gauge)
        self._requests_family = pb_utils.MetricFamily(
            name=LORA_REQUESTS, description=DESCRIPTIONS[LORA_REQUESTS], kind=counter
        )
        self._info: dict[tuple[tuple[str, str], ...], Any] = {}  # the info series by their labels
        self._info_now: tuple[tuple[str, str], ...] | None = None  # the labels of the state now
        self._requests: dict[str, tuple[Any, int]] = {}  # adapter → (counter, requests counted)

    def publish(self, stats: LoraState) -> None:
        if stats.max_lora:
            labels = tuple(lora_info_labels(stats).items())
            if labels != self._info_now:  # the series of the state now gets the newest time
                metric = self._info.get(labels)
                if metric is None:
                    metric = self._info[labels] = self._info_family.Metric(labels={**self._labels, **dict(labels)})
                metric.set(time.time())
                self._info_now = labels
        for name, count in stats.lora_requests:
            counter, counted = self._requests.get(name) or (
                self._requests_family.Metric(labels={**self._labels, "lora_name": name}),
                0,
            )
            if count > counted:
                counter.increment(count - counted)
            self._requests[name] = (counter, count)

    def close(self) -> None:
        # Triton requires a family to outlive its metrics: the metrics go first.
        self._info.clear()
        self._requests.clear()
        self._info_family = self._requests_family = None


class TritonMetrics:
    """The metric families and metrics in Triton. `pb_utils` is `triton_python_backend_utils` (passed in: it is
    importable only inside Triton)."""

    def __init__(self, pb_utils: Any, labels: Mapping[str, str]) -> None:
        gauge, counter = pb_utils.MetricFamily.GAUGE, pb_utils.MetricFamily.COUNTER
        self._families: list[Any] = []
        self._gauges: list[tuple[Any, Callable[[BatcherStats], float]]] = []
        for (name, label), values in GAUGES.items():
            family = pb_utils.MetricFamily(name=name, description=DESCRIPTIONS[name], kind=gauge)
            self._families.append(family)
            self._gauges += [(family.Metric(labels={**labels, label: value}), read) for value, read in values.items()]
        cancelled = pb_utils.MetricFamily(name=CANCELLED, description=DESCRIPTIONS[CANCELLED], kind=counter)
        self._families.append(cancelled)
        self._cancelled = cancelled.Metric(labels=dict(labels))
        self._last_gauges: list[float | None] = [None] * len(self._gauges)
        self._last_cancelled = 0
        self._lora = LoraMetrics(pb_utils, labels)

    def publish(self, stats: BatcherStats) -> None:
        for index, (metric, read) in enumerate(self._gauges):
            value = float(read(stats))
            if value != self._last_gauges[index]:
                metric.set(value)
                self._last_gauges[index] = value
        if stats.cancelled > self._last_cancelled:
            self._cancelled.increment(stats.cancelled - self._last_cancelled)
            self._last_cancelled = stats.cancelled
        self._lora.publish(stats)

    def close(self) -> None:
        # Triton requires a family to outlive its metrics.
        self._gauges.clear()
        self._lora.close()
        self._cancelled = None
        self._families.clear()


class MetricsPublisher(Generic[S]):
    """Publishes the batcher's stats from its own thread whenever they change. Call `close()` to stop it."""

    def __init__(self, batcher: Followed[S], publish: Callable[[S], None], min_interval_s: float = 0.01) -> None:
        self._batcher = batcher
        self._publish = publish
        self._min_interval_s = min_interval_s
        self._stopped = threading.Event()
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="batcher-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        published: S | None = None
        while not self._stopped.is_set():
            stats = self._batcher.wait_for_change(published, timeout=0.25)
            if stats == published:
                continue
            try:
                self._publish(stats)
            except Exception:  # metrics must never take serving down; retried at the next change
                self.failures += 1
            else:
                published = stats
            self._stopped.wait(self._min_interval_s)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
