"""Admission: how many generations the gateway runs upstream at once, and what waits or is refused past that.

With ``max_in_flight`` above 0, a generation request takes slots before it is sent to Triton (one, or ``n`` for a
chat request with ``n`` choices, at most ``max_in_flight``) and holds them until its answer ends, a stream's last
event included. When no slot is free it waits, first come first served, unless ``max_queued`` requests wait
already; a request that waited ``max_queue_wait_s`` without a slot is refused too. A refusal is a 429 with an OpenAI
error body (``type`` ``rate_limit_exceeded``, ``code`` the reason) and a ``Retry-After`` header, counted in
``nemo_gateway_requests_shed_total{reason}``: a router, or the OpenAI SDK (which honours ``Retry-After``), can try
again or elsewhere, instead of queueing without end behind the engine's batch.

``max_in_flight`` 0 admits everything (the slots are still counted in the gauges).
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import dataclass
from typing import Protocol

from nemo_protocol.errors import APIError

QUEUE_FULL = "queue_full"
QUEUE_WAIT = "queue_wait"
DEFAULT_MAX_QUEUE_WAIT_S = 10.0
MAX_RETRY_AFTER_S = 60
_HOLD_SMOOTHING = 0.2
"""Weight of the latest hold time in the running estimate that Retry-After is computed from."""


class OverloadedError(APIError):
    """The gateway is at its admission bounds: 429, with the seconds after which a retry may succeed."""

    status_code = 429
    error_type = "rate_limit_exceeded"

    def __init__(self, message: str, *, reason: str, retry_after_s: int) -> None:
        super().__init__(message, code=reason)
        self.reason = reason
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


@dataclass(frozen=True)
class AdmissionLimits:
    max_in_flight: int = 0
    """Slots: generations upstream at once; 0: no bound."""
    max_queued: int | None = None
    """Requests that may wait for a slot; None: as many as ``max_in_flight``."""
    max_queue_wait_s: float = DEFAULT_MAX_QUEUE_WAIT_S
    """Seconds a request may wait for a slot; 0: no bound."""

    def __post_init__(self) -> None:
        if self.max_in_flight < 0:
            raise ValueError(f"max_in_flight must be 0 or more, got {self.max_in_flight}")
        if self.max_queued is not None and self.max_queued < 0:
            raise ValueError(f"max_queued must be 0 or more, got {self.max_queued}")
        if not self.max_queue_wait_s >= 0 or math.isinf(self.max_queue_wait_s):
            raise ValueError(f"max_queue_wait_s must be finite seconds, 0 or more, got {self.max_queue_wait_s}")

    @property
    def queue_depth(self) -> int:
        return self.max_in_flight if self.max_queued is None else self.max_queued


class AdmissionObserver(Protocol):
    """Where admission reports (the gateway's metrics)."""

    def admission_changed(self, in_flight: int, queued: int) -> None: ...

    def waited(self, seconds: float) -> None: ...

    def shed(self, reason: str) -> None: ...


class Slot:
    """Slots held by one request; :meth:`release` (idempotent) gives them back."""

    def __init__(self, admission: Admission, weight: int) -> None:
        self._admission = admission
        self.weight = weight
        self._taken = time.monotonic()
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._give_back(self.weight, time.monotonic() - self._taken)


class Admission:
    """The gateway's slots and the line of requests waiting for them; used inside one event loop."""

    def __init__(self, limits: AdmissionLimits, observer: AdmissionObserver | None = None) -> None:
        self.limits = limits
        self._observer = observer
        self.in_flight = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._hold_s: float | None = None

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def acquire(self, weight: int = 1) -> Slot:
        """Slots for a request that will run ``weight`` generations; OverloadedError when it is refused."""
        bound = self.limits.max_in_flight
        weight = max(1, min(weight, bound)) if bound else max(1, weight)
        if not bound or (not self._waiting and self.in_flight + weight <= bound):
            return self._take(weight)
        if len(self._waiting) >= self.limits.queue_depth:
            raise self._refuse(QUEUE_FULL, f"the gateway is at capacity ({bound} in flight, {self.queued} waiting)")
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (weight, granted)
        self._waiting.append(entry)
        self._report()
        started = time.monotonic()
        timeout = self.limits.max_queue_wait_s or None
        try:
            await asyncio.wait_for(asyncio.shield(granted), timeout)
        except asyncio.TimeoutError:
            if not granted.done():
                self._waiting.remove(entry)
                self._report()
                self._observe_wait(time.monotonic() - started)
                raise self._refuse(
                    QUEUE_WAIT, f"no capacity within {self.limits.max_queue_wait_s:g} s ({bound} in flight)"
                ) from None
        except BaseException:  # cancelled while waiting (the caller went away)
            if granted.done():
                self._give_back(weight, None)  # granted meanwhile: the slots were counted as taken
            else:
                self._waiting.remove(entry)
                self._report()
            raise
        self._observe_wait(time.monotonic() - started)
        return Slot(self, weight)

    def _take(self, weight: int) -> Slot:
        self.in_flight += weight
        self._report()
        return Slot(self, weight)

    def _give_back(self, weight: int, held_s: float | None) -> None:
        self.in_flight -= weight
        if held_s is not None:
            self._hold_s = held_s if self._hold_s is None else (
                _HOLD_SMOOTHING * held_s + (1 - _HOLD_SMOOTHING) * self._hold_s
            )  # fmt: skip
        # First come, first served: the head of the line goes when its slots are free, and nobody passes it.
        while self._waiting and self.in_flight + self._waiting[0][0] <= self.limits.max_in_flight:
            head_weight, granted = self._waiting.popleft()
            self.in_flight += head_weight
            granted.set_result(None)
        self._report()

    def retry_after_s(self) -> int:
        """Seconds until slots are likely free for a newcomer: the line ahead of it times the mean time a request
        holds its slots, over the slots; 1 when nothing is known yet."""
        if self._hold_s is None or not self.limits.max_in_flight:
            return 1
        estimate = self._hold_s * (self.queued + 1) / self.limits.max_in_flight
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(estimate)))

    def _refuse(self, reason: str, message: str) -> OverloadedError:
        if self._observer is not None:
            self._observer.shed(reason)
        retry_after_s = self.retry_after_s()
        return OverloadedError(f"{message}; retry later or elsewhere", reason=reason, retry_after_s=retry_after_s)

    def _observe_wait(self, seconds: float) -> None:
        if self._observer is not None:
            self._observer.waited(seconds)

    def _report(self) -> None:
        if self._observer is not None:
            self._observer.admission_changed(self.in_flight, self.queued)
