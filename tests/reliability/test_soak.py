"""Soak: 64 concurrent streams mixing chat, tools, the ensemble, cancellations and malformed requests.

Every well-formed request completes with well-formed output, streamed answers equal the non-streamed
answer for the same seed, every bad request gets a clear 4xx error, no request is lost or answered
twice, and the server's memory stays flat (resident memory at start and end is printed and kept in
``artifacts/reliability/soak.json``). Quick: 25 s; ``NEMO_RELIABILITY=full``: 4 minutes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable

import httpx

from nemo_client.client import AsyncNemoClient
from tests.reliability import traffic
from tests.reliability.conftest import BUDGET, Stack
from tests.reliability.servers import CACHE, process_group_rss_mib

REQUEST_TIMEOUT_S = 120.0
MEMORY_GROWTH_ALLOWED = 1.25  # resident memory at the end ≤ 1.25 × start (+ 64 MiB for allocator slack)


def _actions(client: AsyncNemoClient, http: httpx.AsyncClient, stack: Stack) -> list[Callable[[int], Awaitable]]:
    base, url = stack.gateway.url, stack.grpc_url

    def pick(n: int) -> tuple[str, int]:
        return traffic.QUESTIONS[n % len(traffic.QUESTIONS)], traffic.SEEDS[n % len(traffic.SEEDS)]

    return [
        lambda n: traffic.grpc_chat(client, *pick(n), stream_it=True),
        lambda n: traffic.grpc_chat(client, *pick(n), stream_it=True),
        lambda n: traffic.grpc_chat(client, *pick(n), stream_it=False),
        lambda n: traffic.http_chat_stream(http, base, *pick(n)),
        lambda n: traffic.grpc_tool_call(client),
        lambda n: traffic.ensemble_text(url),
        lambda n: traffic.cancelled_stream(client),
        lambda n: traffic.grpc_malformed(client, n),
        lambda n: traffic.http_malformed(http, base, n),
    ]


async def _soak(stack: Stack, seconds: float, streams: int) -> tuple[int, list[traffic.Outcome]]:
    sent = 0
    outcomes: list[traffic.Outcome] = []
    async with (
        AsyncNemoClient(stack.grpc_url, timeout=REQUEST_TIMEOUT_S) as client,
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=httpx.Limits(max_connections=streams)) as http,
    ):
        actions = _actions(client, http, stack)
        deadline = time.monotonic() + seconds

        async def worker(seed: int) -> None:
            nonlocal sent
            chooser = random.Random(seed)
            while time.monotonic() < deadline:
                sent += 1
                n = chooser.randrange(1 << 30)
                try:
                    outcome = await asyncio.wait_for(actions[n % len(actions)](n), REQUEST_TIMEOUT_S * 1.5)
                except asyncio.TimeoutError:
                    outcome = traffic.Outcome("lost", False, "no answer within the request timeout")
                outcomes.append(outcome)

        await asyncio.gather(*(worker(seed) for seed in range(streams)))
    return sent, outcomes


def test_soak_mixed_traffic(stack: Stack) -> None:
    group = stack.triton._process.pid  # type: ignore[union-attr]
    asyncio.run(_soak(stack, 3, 8))  # warm every path before the memory baseline
    rss_start = process_group_rss_mib(group)
    sent, outcomes = asyncio.run(_soak(stack, BUDGET.soak_seconds, BUDGET.soak_streams))
    rss_end = process_group_rss_mib(group)

    counts = Counter(o.kind for o in outcomes)
    report = {
        "seconds": BUDGET.soak_seconds, "streams": BUDGET.soak_streams, "requests": sent, "by_kind": counts,
        "rss_start_mib": round(rss_start, 1), "rss_end_mib": round(rss_end, 1),
    }  # fmt: skip
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsoak: {json.dumps(report)}")

    assert len(outcomes) == sent  # nothing lost
    failures = [o for o in outcomes if not o.ok]
    assert not failures, f"{len(failures)} of {sent} failed, e.g. {[(f.kind, f.detail[:300]) for f in failures[:5]]}"
    assert set(counts) == {"grpc_stream", "grpc_whole", "http_stream", "tools", "ensemble", "cancel",
                           "grpc_malformed", "http_malformed"}  # fmt: skip
    ids = [i for o in outcomes for i in o.completion_ids]
    assert len(ids) == len(set(ids)), "a completion id was delivered to two requests"

    whole: dict[tuple[str, int], set[str]] = defaultdict(set)
    streamed: dict[tuple[str, int], set[str]] = defaultdict(set)
    for o in outcomes:
        if o.key is not None and o.text is not None:
            (streamed if o.streamed else whole)[o.key].add(o.text)
    for key, answers in whole.items():
        assert len(answers) == 1, f"{key}: the same seed gave different answers {answers}"
        assert streamed.get(key, answers) == answers, f"{key}: streamed {streamed[key]} != whole {answers}"
    assert rss_end <= rss_start * MEMORY_GROWTH_ALLOWED + 64, report
