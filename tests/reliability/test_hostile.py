"""Hostile input against one Triton + gateway while well-formed streams run.

Every variant of every hostile kind (``tests/reliability/hostile.py``: oversized bodies, deep nesting,
invalid UTF-8 and lone surrogates in JSON and in BYTES tensors, NaN / Infinity / negative / huge numbers,
wrong dtypes and shapes, control-token text in every field, cut streams over HTTP and gRPC) is sent
``repeats`` times, a few at once, through the gateway (on each chat path: ``direct``, the default, and
``chat-model``) and straight to the ``chat``, ``ensemble``, ``preprocessing`` and ``tensorrt_llm`` models.
Meanwhile:

* well-formed greedy streams run back to back, over HTTP (both gateways) and gRPC, and each must equal the
  same request run alone beforehand;
* two slow readers (one reading the gateway's SSE a few hundred bytes at a time from a small socket buffer,
  one reading a gRPC stream a chunk at a time) must receive their whole stream, equal to the reference;
* Triton and both gateways must answer ready every 0.2 s.

Afterwards every batch slot is free again (the cut streams were cancelled, not left to run), and the resident
memory of tritonserver with its python stubs and of each gateway before and after goes, with the counts per
kind and the statuses seen, into ``artifacts/reliability/hostile.json``. Quick: each variant once;
``NEMO_RELIABILITY=full``: ten times, with more background streams and longer slow reads.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from nemo_client.client import AsyncNemoClient
from nemo_protocol.errors import APIError
from nemo_protocol.tekken import Tekkenizer, default_tekken_path
from tests.integration.triton_calls import BatchMetrics, StreamingCall
from tests.reliability import hostile, traffic
from tests.reliability.conftest import BUDGET, FULL, Stack
from tests.reliability.servers import CACHE, MAX_BATCH_SIZE, Gateway, process_group_rss_mib

CONCURRENCY = 4  # hostile requests in flight at once, beside the background streams and slow readers
BACKGROUND_TOKENS = 48
HEALTH_EVERY_S = 0.2
MEMORY_GROWTH_ALLOWED = 1.25  # as the soak: resident memory after ≤ 1.25 × before + 64 MiB
TRANSPORTS = {"http": "direct", "http-chat-model": "chat-model", "grpc": None}
"""Background streams: through each gateway (by its chat path), and gRPC to the chat model."""


@pytest.fixture(scope="module")
def chat_model_gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A second gateway in front of the same Triton, forwarding chat to Triton's ``chat`` model."""
    log = tmp_path_factory.mktemp("hostile") / "gateway-chat-model.log"
    with Gateway(stack.grpc_url, log_path=log, chat_path="chat-model") as gateway:
        yield gateway


@dataclass
class Background:
    """What the well-formed traffic beside the hostile requests saw."""

    streams: Counter[str] = field(default_factory=Counter)  # completed per transport
    wrong: list[str] = field(default_factory=list)
    slow: dict[str, Any] = field(default_factory=dict)
    health: Counter[str] = field(default_factory=Counter)  # "gateway 200", "triton 200", ...


def _stream_body(question: str) -> dict[str, Any]:
    return traffic.ask(
        question, stream=True, stream_options={"include_usage": True}, temperature=0, max_tokens=BACKGROUND_TOKENS
    )


async def _http_stream(http: httpx.AsyncClient, base: str, body: dict[str, Any]) -> tuple[str | None, str]:
    """(what is wrong or None, the streamed text) of a chat stream through the gateway."""
    chunks, done = [], False
    async with http.stream("POST", f"{base}{hostile.CHAT}", json=body) as response:
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {(await response.aread())[:300]!r}", ""
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
    problem = traffic.check_chunks(chunks) or (None if done else "no data: [DONE]")
    return problem, traffic.streamed_text(chunks)


async def _grpc_stream(client: AsyncNemoClient, body: dict[str, Any]) -> tuple[str | None, str]:
    try:
        stream = await client.chat.completions.create_from_body(body, raw=True)
        chunks = [chunk async for chunk in stream]
    except APIError as error:
        return f"{type(error).__name__}: {error}", ""
    return traffic.check_chunks(chunks), traffic.streamed_text(chunks)


async def _stream(target: hostile.Target, transport: str, body: dict[str, Any]) -> tuple[str | None, str]:
    chat_path = TRANSPORTS[transport]
    if chat_path is not None:
        return await _http_stream(target.http, target.gateways[chat_path], body)
    return await _grpc_stream(target.client, body)


async def _references(target: hostile.Target) -> dict[tuple[str, str], str]:
    """Each background request and each slow stream, run alone, one at a time."""
    references = {}
    bodies = {question: _stream_body(question) for question in traffic.QUESTIONS}
    bodies["slow"] = hostile.slow_body(BUDGET.slow_reader_tokens)
    for name, body in bodies.items():
        for transport in TRANSPORTS:
            problem, text = await _stream(target, transport, body)
            assert problem is None, (transport, name, problem)
            references[transport, name] = text
    assert references["http", "slow"] == references["grpc", "slow"]
    return references


async def _background_worker(
    index: int, target: hostile.Target, references: dict[tuple[str, str], str], stop: asyncio.Event, seen: Background
) -> None:
    transport = list(TRANSPORTS)[index % len(TRANSPORTS)]
    round_ = 0
    while not stop.is_set() or round_ == 0:
        question = traffic.QUESTIONS[(index + round_) % len(traffic.QUESTIONS)]
        problem, text = await _stream(target, transport, _stream_body(question))
        if problem is None and text != references[transport, question]:
            problem = f"{text!r} != alone {references[transport, question]!r}"
        if problem is not None:
            seen.wrong.append(f"{transport} {question!r}: {problem}"[:400])
        seen.streams[transport] += 1
        round_ += 1


async def _slow_readers(target: hostile.Target, references: dict[tuple[str, str], str], seen: Background) -> None:
    body = hostile.slow_body(BUDGET.slow_reader_tokens)
    read_bytes, pause = (256, 0.02) if FULL else (512, 0.02)

    async def http_reader() -> None:
        text, done, seconds = await hostile.http_slow_read(target.gateways["direct"], body, read_bytes, pause)
        identical = text == references["http", "slow"]
        seen.slow["http"] = {"seconds": round(seconds, 1), "complete": done, "identical": identical}
        if not done or not identical:
            seen.wrong.append(f"http slow reader: done={done}, {text[:200]!r}")

    async def grpc_reader() -> None:
        started = time.monotonic()
        text = await hostile.grpc_slow_read(target.client, body, pause)
        identical = text == references["grpc", "slow"]
        seen.slow["grpc"] = {"seconds": round(time.monotonic() - started, 1), "complete": True, "identical": identical}
        if not identical:
            seen.wrong.append(f"grpc slow reader: {text[:200]!r}")

    await asyncio.gather(http_reader(), grpc_reader())


async def _health(stack: Stack, gateways: dict[str, str], stop: asyncio.Event, seen: Background) -> None:
    probes = {f"gateway-{path}": f"{url}/v1/health/ready" for path, url in gateways.items()}
    probes["triton"] = f"{stack.triton.http_url}/v2/health/ready"
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            for name, url in probes.items():
                try:
                    status = str((await http.get(url)).status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                seen.health[f"{name} {status}"] += 1
            await asyncio.sleep(HEALTH_EVERY_S)


async def _send_all(sends: list[hostile.Send]) -> list[hostile.Seen]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(send: hostile.Send) -> hostile.Seen:
        async with gate:
            return await send()

    return list(await asyncio.gather(*(one(send) for send in sends)))


def _rss(stack: Stack, chat_model_gateway: Gateway) -> dict[str, float]:
    """Resident memory (MiB) of each server's process group: tritonserver with its python stubs, each gateway."""
    groups = {
        "tritonserver_and_stubs": stack.triton._process.pid,  # type: ignore[union-attr]
        "gateway_direct": stack.gateway.pid,
        "gateway_chat_model": chat_model_gateway.pid,
    }
    return {name: round(process_group_rss_mib(group), 1) for name, group in groups.items()}


@dataclass
class Run:
    warmup: list[hostile.Seen]
    seen: list[hostile.Seen]
    background: Background
    rss_before: dict[str, float]
    rss_after: dict[str, float]
    seconds: float
    variants: dict[str, int]


async def _run(stack: Stack, chat_model_gateway: Gateway, tokenizer: Tekkenizer) -> Run:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
    async with (
        httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as http,
        AsyncNemoClient(stack.grpc_url, timeout=120) as client,
    ):
        gateways = {"direct": stack.gateway.url, "chat-model": chat_model_gateway.url}
        target = hostile.Target(gateways, stack.grpc_url, http, client, tokenizer)
        kinds = hostile.catalogue(target)
        references = await _references(target)
        warmup = await _send_all([send for variants in kinds.values() for send in variants])  # every path once
        rss_before = _rss(stack, chat_model_gateway)

        sends = [send for variants in kinds.values() for send in variants for _ in range(BUDGET.hostile_repeats)]
        random.Random(0).shuffle(sends)
        stop, seen = asyncio.Event(), Background()
        started = time.monotonic()
        workers = [
            asyncio.create_task(_background_worker(i, target, references, stop, seen))
            for i in range(BUDGET.hostile_streams)
        ]
        health = asyncio.create_task(_health(stack, gateways, stop, seen))
        slow = asyncio.create_task(_slow_readers(target, references, seen))
        results = await _send_all(sends)
        await slow  # the slow readers span the hostile pass
        stop.set()
        await asyncio.gather(*workers, health)
        seconds = time.monotonic() - started
    rss_after = _rss(stack, chat_model_gateway)
    return Run(warmup, results, seen, rss_before, rss_after, seconds, {k: len(v) for k, v in kinds.items()})


def test_hostile_input_leaves_the_server_and_other_streams_intact(stack: Stack, chat_model_gateway: Gateway) -> None:
    tokenizer = Tekkenizer.from_file(default_tekken_path())
    # The template's own control tokens, and only those, whatever text the fields hold.
    assert hostile.control_ids_of(tokenizer, hostile.CONTROL_TEXT) == hostile.control_ids_of(tokenizer, "x")
    batch = BatchMetrics(stack.triton.host, stack.triton.ports.metrics)
    before = batch.idle()

    run = asyncio.run(_run(stack, chat_model_gateway, tokenizer))

    slots = batch.wait_for(timeout=30, requests_running=0, requests_waiting=0, batch_slots_free=MAX_BATCH_SIZE)
    cancelled = slots["requests_cancelled_total"] - before["requests_cancelled_total"]
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    for seen in run.seen:
        statuses[seen.kind][seen.status] += 1
    report = {
        "mode": "full" if FULL else "quick",
        "repeats": BUDGET.hostile_repeats,
        "seconds": round(run.seconds, 1),
        "sent": {kind: sum(counter.values()) for kind, counter in sorted(statuses.items())},
        "statuses": {kind: dict(counter) for kind, counter in sorted(statuses.items())},
        "total_sent": len(run.seen),
        "warmup_sent": len(run.warmup),
        "background_streams": {"workers": BUDGET.hostile_streams, "completed": dict(run.background.streams),
                               "wrong": len(run.background.wrong)},
        "slow_readers": run.background.slow,
        "health_polls": dict(run.background.health),
        "cancelled_by_cut_streams": cancelled,
        "batch_after": slots,
        "rss_mib": {"before": run.rss_before, "after": run.rss_after},
    }  # fmt: skip
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "hostile.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nhostile: {json.dumps(report)}")

    failures = [seen for seen in run.warmup + run.seen if not seen.ok]
    assert not failures, f"{len(failures)} unexpected answers, e.g. {[(f.kind, f.detail) for f in failures[:6]]}"
    assert report["sent"] == {kind: count * BUDGET.hostile_repeats for kind, count in sorted(run.variants.items())}
    assert not run.background.wrong, run.background.wrong[:5]
    assert sum(run.background.streams.values()) >= BUDGET.hostile_streams, run.background.streams
    assert set(run.background.streams) == set(TRANSPORTS), run.background.streams
    assert run.background.slow["http"]["identical"] and run.background.slow["grpc"]["identical"], run.background.slow
    assert {key.split()[1] for key in run.background.health} == {"200"}, run.background.health
    # Each cut stream had thousands of tokens to go: its slot came back because it was cancelled.
    warm_and_measured = 1 + BUDGET.hostile_repeats
    assert cancelled >= warm_and_measured * sum(run.variants[kind] for kind in hostile.CUTS_THAT_CANCEL), report
    for name, after in run.rss_after.items():
        assert after <= run.rss_before[name] * MEMORY_GROWTH_ALLOWED + 64, report
    with httpx.Client(timeout=60) as http:
        for gateway in (stack.gateway, chat_model_gateway):
            answer = http.post(f"{gateway.url}{hostile.CHAT}", json=traffic.ask("Hello", temperature=0))
            assert answer.json()["choices"][0]["message"]["content"] == "Hello! How can I help you today?"


@pytest.mark.parametrize(
    "hostile_tensors",
    [
        {"bad_words_list": np.array([[[2**30], [1]]], dtype=np.int32)},
        {"end_id": np.array([[2**30]], dtype=np.int32), "min_tokens": np.array([[4]], dtype=np.int32)},
    ],
    ids=["bad_words_list", "end_id"],
)
def test_out_of_vocabulary_ids_in_word_lists_fail_only_their_own_request(
    stack: Stack, hostile_tensors: dict[str, np.ndarray]
) -> None:
    inputs = hostile.trtllm_inputs(output_len=300)
    bystander = StreamingCall(stack.grpc_url, "tensorrt_llm", inputs)
    assert bystander.next(60)
    refused = StreamingCall(stack.grpc_url, "tensorrt_llm", hostile.trtllm_inputs(**hostile_tensors)).finish(60)
    result = bystander.finish(120)
    assert result.error is None, f"a bystander stream failed: {result.error}"
    assert sum(out["output_ids"].size for out in result.outputs) == 300
    assert refused.error is not None and refused.error.split(":")[0] in hostile_tensors


def test_a_request_output_len_beyond_the_model_is_refused_naming_it(stack: Stack) -> None:
    refused = StreamingCall(stack.grpc_url, "tensorrt_llm", hostile.trtllm_inputs(output_len=2**31 - 1)).finish(60)
    assert refused.error is not None and refused.error.startswith("request_output_len: "), refused.error
