"""Load generation: a fixed number of concurrent streams, or Poisson arrivals at a request rate.

A level first runs its warm-up requests (not measured), then sends measured requests until the
request count is reached or the duration has passed (whichever comes first); requests in flight at
that point finish and are counted. Prompts are prepared before the level starts.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from nemo_bench.metrics import RequestRecord
from nemo_bench.targets import SamplingOptions, Target
from nemo_bench.workload import BenchRequest

MAX_PREPARED_PROMPTS = 1024
"""Distinct prompts prepared per level; a longer level cycles through them."""


@dataclass(frozen=True)
class StopRule:
    """When a level stops sending: after ``requests`` measured requests and/or ``duration_s`` seconds."""

    requests: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.requests is None and self.duration_s is None:
            raise ValueError("a level needs a request count or a duration")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"the request count must be at least 1, got {self.requests}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"the duration must be positive, got {self.duration_s}")


@dataclass(frozen=True)
class Level:
    """``concurrency`` streams at once, or ``rate`` requests per second (Poisson) with an optional cap."""

    concurrency: int | None = None
    rate: float | None = None
    max_concurrency: int | None = None

    @property
    def mode(self) -> str:
        return "concurrency" if self.concurrency is not None else "rate"

    @property
    def value(self) -> float:
        return float(self.concurrency if self.concurrency is not None else self.rate)  # type: ignore[arg-type]

    @property
    def warmup_concurrency(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        return max(1, min(self.max_concurrency or 64, round(self.rate or 1)))

    def label(self) -> str:
        return f"concurrency {self.concurrency}" if self.mode == "concurrency" else f"rate {self.rate:g}/s"


def prepare(
    requests: Iterator[BenchRequest], stop: StopRule, warmup: int
) -> tuple[list[BenchRequest], Iterator[BenchRequest]]:
    """Warm-up requests and an endless iterator over the prepared measured ones."""
    warm = list(itertools.islice(requests, warmup))
    wanted = min(stop.requests or MAX_PREPARED_PROMPTS, MAX_PREPARED_PROMPTS)
    prepared = list(itertools.islice(requests, wanted))
    return warm, itertools.cycle(prepared)


async def _closed_loop(
    target: Target,
    requests: Iterator[BenchRequest],
    options: SamplingOptions,
    concurrency: int,
    may_send: Callable[[int], bool],
    on_done: Callable[[RequestRecord], None],
) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while may_send(issued):
            issued += 1
            record = await target.send(next(requests), options)
            records.append(record)
            on_done(record)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


async def _open_loop(
    target: Target,
    requests: Iterator[BenchRequest],
    options: SamplingOptions,
    level: Level,
    seed: int,
    may_send: Callable[[int], bool],
    on_done: Callable[[RequestRecord], None],
) -> list[RequestRecord]:
    arrivals = random.Random(seed)
    cap = asyncio.Semaphore(level.max_concurrency) if level.max_concurrency else None
    records: list[RequestRecord] = []

    async def one(request: BenchRequest) -> None:
        if cap is None:
            record = await target.send(request, options)
        else:
            async with cap:
                record = await target.send(request, options)
        records.append(record)
        on_done(record)

    tasks: list[asyncio.Task[None]] = []
    next_arrival = time.perf_counter()
    while may_send(len(tasks)):
        delay = next_arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(next(requests))))
        next_arrival += arrivals.expovariate(level.rate or 1.0)
    await asyncio.gather(*tasks)
    return records


async def run_level(
    target: Target,
    requests: Iterator[BenchRequest],
    options: SamplingOptions,
    level: Level,
    stop: StopRule,
    *,
    warmup: int = 0,
    seed: int = 0,
    on_done: Callable[[RequestRecord], None] = lambda record: None,
    on_measured: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """Run one level; returns (warm-up records, measured records). ``on_measured``: awaited between the warm-up
    and the measured requests."""
    warm_requests, measured = prepare(requests, stop, warmup)
    warm_iter = iter(warm_requests)
    warm = await _closed_loop(
        target, warm_iter, options, min(level.warmup_concurrency, max(warmup, 1)), lambda n: n < warmup, lambda r: None
    )
    if on_measured is not None:
        await on_measured()
    deadline = None if stop.duration_s is None else time.perf_counter() + stop.duration_s

    def may_send(issued: int) -> bool:
        if stop.requests is not None and issued >= stop.requests:
            return False
        return deadline is None or time.perf_counter() < deadline

    if level.concurrency is not None:
        records = await _closed_loop(target, measured, options, level.concurrency, may_send, on_done)
    else:
        records = await _open_loop(target, measured, options, level, seed, may_send, on_done)
    return warm, records
