"""The load generator keeps the promised concurrency or arrival process and stops by itself.

The target here is an in-process stand-in that answers after a fixed delay and records how many
requests were in flight: what is checked is the generator's scheduling, not a server.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Iterator

import pytest

from nemo_bench.load import Level, StopRule, run_level
from nemo_bench.metrics import RequestRecord
from nemo_bench.targets import SamplingOptions
from nemo_bench.workload import BenchRequest


class DelayTarget:
    description = "in-process target"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0
        self.sent: list[str] = []

    async def send(self, request: BenchRequest, options: SamplingOptions) -> RequestRecord:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.sent.append(request.messages[0]["content"])
        record = RequestRecord(start=time.perf_counter())
        await asyncio.sleep(self.delay_s)
        record.first_token = record.end = time.perf_counter()
        record.output_tokens = 1
        self.in_flight -= 1
        return record

    async def close(self) -> None:
        pass


def _requests() -> Iterator[BenchRequest]:
    return (BenchRequest([{"role": "user", "content": f"prompt {i}"}], 4) for i in itertools.count())


def test_concurrency_level_sends_exactly_the_count_with_that_many_streams() -> None:
    target = DelayTarget(0.01)
    warm, records = asyncio.run(
        run_level(target, _requests(), SamplingOptions(), Level(concurrency=4), StopRule(requests=20), warmup=3)
    )
    assert (len(warm), len(records)) == (3, 20)
    assert target.most_in_flight == 4
    assert len(target.sent) == 23
    assert len(set(target.sent)) == 23  # warm-up prompts are not reused for measured requests


def test_duration_stops_sending_and_waits_for_requests_in_flight() -> None:
    target = DelayTarget(0.05)
    _, records = asyncio.run(
        run_level(target, _requests(), SamplingOptions(), Level(concurrency=2), StopRule(duration_s=0.3))
    )
    assert 4 <= len(records) <= 16
    assert all(r.end > 0 for r in records)  # every request sent was waited for


def test_poisson_arrivals_average_the_requested_rate() -> None:
    target = DelayTarget(0.001)
    _, records = asyncio.run(
        run_level(target, _requests(), SamplingOptions(), Level(rate=200.0), StopRule(requests=200), seed=7)
    )
    starts = sorted(r.start for r in records)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(records) == 200
    # Exponential gaps: mean 1/rate and a coefficient of variation near 1 (a fixed rate would give ~0).
    assert statistics.mean(gaps) == pytest.approx(1 / 200, rel=0.35)
    assert statistics.stdev(gaps) / statistics.mean(gaps) > 0.6


def test_rate_level_respects_its_concurrency_cap() -> None:
    target = DelayTarget(0.05)
    asyncio.run(
        run_level(target, _requests(), SamplingOptions(), Level(rate=500.0, max_concurrency=3), StopRule(requests=30))
    )
    assert target.most_in_flight == 3


@pytest.mark.parametrize(
    ("rule", "message"),
    [({}, "a request count or a duration"), ({"requests": 0}, "at least 1"), ({"duration_s": 0}, "positive")],
)
def test_stop_rule_refuses_a_level_that_would_not_stop(rule: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StopRule(**rule)
