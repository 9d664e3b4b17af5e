"""The in-flight batcher's state as Triton custom metrics (the python backend's `pb_utils.MetricFamily`).

Triton serves them at its metrics port (`/metrics`), labelled with the model's name and version:

| metric | kind | what | NIM / vLLM counterpart |
| --- | --- | --- | --- |
| `nemo_runtime_requests_running` | gauge | requests holding a batch slot | `num_requests_running` |
| `nemo_runtime_requests_waiting` | gauge | requests queued for a slot | `num_requests_waiting` |
| `nemo_runtime_batch_slots_free` | gauge | `max_batch_size` - running | `num_request_max` - running |
| `nemo_runtime_requests_cancelled_total` | counter | requests ended early since start | |

A `MetricsPublisher` thread follows `InflightBatcher.wait_for_change()` and sets only the values that
changed: the step loop never waits on Triton (each metric update is a message to the Triton process),
and a steady batch costs nothing. Updates are coalesced to at most one per `min_interval_s`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from nemo_runtime.inflight import BatcherStats, InflightBatcher

PREFIX = "nemo_runtime_"
GAUGES: dict[str, tuple[str, Callable[[BatcherStats], int]]] = {
    f"{PREFIX}requests_running": ("Requests holding a batch slot (prefilled, decoding)", lambda s: s.running),
    f"{PREFIX}requests_waiting": ("Requests queued for a batch slot", lambda s: s.waiting),
    f"{PREFIX}batch_slots_free": ("Batch slots free (max_batch_size minus running)", lambda s: s.slots_free),
}
COUNTERS: dict[str, tuple[str, Callable[[BatcherStats], int]]] = {
    f"{PREFIX}requests_cancelled_total": (
        "Requests ended before finishing (client cancellation, the stop input)",
        lambda s: s.cancelled,
    ),
}
NAMES = (*GAUGES, *COUNTERS)


class TritonMetrics:
    """The metric families and metrics in Triton. `pb_utils` is `triton_python_backend_utils` (passed in: it is
    importable only inside Triton)."""

    def __init__(self, pb_utils: Any, labels: Mapping[str, str]) -> None:
        self._families: list[Any] = []
        self._metrics: dict[str, tuple[Any, Callable[[BatcherStats], int], bool]] = {}
        kinds = ((GAUGES, pb_utils.MetricFamily.GAUGE, False), (COUNTERS, pb_utils.MetricFamily.COUNTER, True))
        for table, kind, counter in kinds:
            for name, (description, read) in table.items():
                family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
                self._families.append(family)
                self._metrics[name] = (family.Metric(labels=dict(labels)), read, counter)
        self._last: dict[str, int] = {}

    def publish(self, stats: BatcherStats) -> None:
        for name, (metric, read, counter) in self._metrics.items():
            value, last = read(stats), self._last.get(name)
            if counter:
                if value > (last or 0):
                    metric.increment(value - (last or 0))
            elif value != last:
                metric.set(value)
            self._last[name] = value

    def close(self) -> None:
        # Triton requires a family to outlive its metrics.
        self._metrics.clear()
        self._families.clear()


class MetricsPublisher:
    """Publishes the batcher's stats from its own thread whenever they change. Call `close()` to stop it."""

    def __init__(
        self, batcher: InflightBatcher, publish: Callable[[BatcherStats], None], min_interval_s: float = 0.01
    ) -> None:
        self._batcher = batcher
        self._publish = publish
        self._min_interval_s = min_interval_s
        self._stopped = threading.Event()
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="batcher-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        published: BatcherStats | None = None
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
