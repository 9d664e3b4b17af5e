"""The frontend's CPU per streamed token, at GPU token rates: every process, every path, against the floor.

Triton serves the stand-in `tensorrt_llm` (``nemo-build repository --target stand-in``): the engine's tensor
contract and in-flight batching with no model behind it, :data:`TOKENS_PER_S` tokens/s per stream, so that
16 streams ask for 16,000 tokens/s, more than the 2-core frontend can carry. What remains is the frontend:

* ``floor``: the bench process streams `tensorrt_llm` itself (prompt ids in, token ids out), no python frontend;
* ``gRPC → chat``: ``nemo_client`` through Triton's ``chat`` model (the chat core in a python stub);
* ``gRPC direct``: ``nemo_client(direct=True)``, the chat core in the client, streaming `tensorrt_llm`;
* ``gateway → chat`` and ``gateway direct``: the openai-style SSE client through ``nemo-gateway`` on each path.

For each path: CPU seconds used by tritonserver, each python stub, the gateway and the client (this process),
read from ``/proc`` around the run and divided by the tokens streamed. ``frontend`` is everything but the
`tensorrt_llm` stub (the stand-in engine; on a GPU the C++ backend). Capacity = 1 / frontend CPU per token:
the tokens/s one core of frontend carries.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_bench.load import Level, StopRule, run_level
from nemo_bench.metrics import LevelSummary, RequestRecord, summarize
from nemo_bench.targets import GrpcTarget, HttpTarget, SamplingOptions, Target
from nemo_bench.workload import BenchRequest, SyntheticPrompts
from nemo_build.repository import TEMPLATES_DIR, RepositorySettings, render_repository
from nemo_chat_core.engine_tensors import GenerationRequest, output_token_ids
from nemo_client.transport import deadline_after
from nemo_client.triton_transport import TritonTransport
from nemo_ops.launcher import TritonServer
from nemo_ops.stub_supervisor import stub_processes
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.request_ids import new_request_id
from nemo_protocol.tekken import Tekkenizer, default_tekken_path
from tests.bench.timing import markdown_table
from tests.reliability.servers import SERVED_NAME, Gateway, process_cpu_seconds

GPU_ANCHOR_TOKENS_PER_S = 28_312  # TensorRT-LLM's Llama-3.1-8B FP8, one H100, 128/128 (notes/REFERENCE.md §3)
TOKENS_PER_S = 1000.0  # per stream: 16 streams ask for 16,000 tokens/s
CONCURRENCY = 16
INPUT_TOKENS, OUTPUT_TOKENS = 64, 256
REQUESTS, WARMUP = 48, 8
ROUNDS = 3  # every path once per round, in turn: each figure is the median over the rounds
ENGINE = "tensorrt_llm"


class EngineTarget:
    """The floor: `tensorrt_llm` streamed by this process (prompt rendered here, ids counted, nothing decoded)."""

    def __init__(self, url: str, tokenizer: Tekkenizer, *, timeout_s: float) -> None:
        self.description = f"grpc://{url} (model {ENGINE}, raw ids)"
        self._tokenizer = tokenizer
        self._transport = TritonTransport(url)
        self._timeout_s = timeout_s

    async def send(self, request: BenchRequest, options: SamplingOptions) -> RequestRecord:
        record = RequestRecord(start=time.perf_counter(), input_tokens=request.input_tokens)
        ids = encode_chat(self._tokenizer, request.messages)
        generation = GenerationRequest(ids, request.max_tokens, end_id=None, streaming=True)
        responses = self._transport.stream(
            ENGINE, generation.to_inputs(), request_id=new_request_id(numeric=True), deadline=deadline_after(300)
        )
        async for outputs in responses:
            count = len(output_token_ids(outputs.get("output_ids"), outputs.get("sequence_length")))
            if count and record.first_token is None:
                record.first_token = time.perf_counter()
            record.output_tokens += count
        record.end = time.perf_counter()
        return record

    async def close(self) -> None:
        await self._transport.close()


@dataclass
class PathRun:
    summary: LevelSummary
    tokens: int  # streamed in the run, warm-up included (what the CPU time was spent on)
    cpu_s: dict[str, float]  # process → CPU seconds over the run

    def per_token_ms(self, process: str) -> float:
        return 1000 * self.cpu_s.get(process, 0.0) / self.tokens

    @property
    def frontend_ms(self) -> float:
        return sum(self.per_token_ms(process) for process in self.cpu_s if process != ENGINE)


@dataclass
class PathResult:
    """One path's runs, one a round; figures are medians over them."""

    name: str
    runs: list[PathRun]

    def per_token_ms(self, process: str) -> float:
        return statistics.median(run.per_token_ms(process) for run in self.runs)

    @property
    def frontend_ms(self) -> float:
        return statistics.median(run.frontend_ms for run in self.runs)

    @property
    def processes(self) -> set[str]:
        return {process for run in self.runs for process in run.cpu_s}

    def median(self, figure: Callable[[LevelSummary], float]) -> float:
        return statistics.median(figure(run.summary) for run in self.runs)


def _processes(triton: TritonServer, gateway: Gateway | None) -> dict[str, list[int]]:
    assert triton.pid is not None
    found = {"tritonserver": [triton.pid], **stub_processes(triton.pid), "client": [os.getpid()]}
    if gateway is not None:
        found["gateway"] = [gateway.pid]
    return found


def _cpu(processes: dict[str, list[int]]) -> dict[str, float]:
    own = os.times()
    cpu = {name: sum(process_cpu_seconds(pid) for pid in pids) for name, pids in processes.items()}
    cpu["client"] = own.user + own.system  # this process, all threads (its own /proc entry rounds to ticks)
    return cpu


def _measure(
    name: str, make_target: Callable[[], Target], processes: dict[str, list[int]], requests: Iterator[BenchRequest]
) -> PathRun:
    options = SamplingOptions(temperature=0.0, ignore_eos=True, model=SERVED_NAME)

    async def go() -> tuple[list[RequestRecord], list[RequestRecord]]:
        target = make_target()
        try:
            return await run_level(
                target, requests, options, Level(concurrency=CONCURRENCY), StopRule(requests=REQUESTS), warmup=WARMUP
            )
        finally:
            await target.close()

    before = _cpu(processes)
    warm, measured = asyncio.run(go())
    after = _cpu(processes)
    summary = summarize("concurrency", CONCURRENCY, measured)
    if summary.successes != REQUESTS:
        raise RuntimeError(f"{name}: {summary.successes}/{REQUESTS} requests succeeded: {summary.first_errors}")
    tokens = sum(record.output_tokens for record in [*warm, *measured])
    cpu = {process: after[process] - before[process] for process in processes}
    return PathRun(summary, tokens, {process: seconds for process, seconds in cpu.items() if seconds > 0})


def run() -> dict[str, Any]:
    tekken = default_tekken_path()
    tokenizer = Tekkenizer.from_file(tekken)
    prompts = iter(SyntheticPrompts(tokenizer, INPUT_TOKENS, OUTPUT_TOKENS, seed=0))
    with tempfile.TemporaryDirectory(prefix="bench-frontend-") as work:
        settings = RepositorySettings(
            target="stand-in",
            model_dir=tekken,
            max_batch_size=64,
            max_input_len=2048,
            max_seq_len=4096,
            served_model_name=SERVED_NAME,
            stand_in_tokens_per_s=TOKENS_PER_S,
        )
        repository = Path(work) / "repository"
        render_repository(TEMPLATES_DIR, settings, tekken, repository)
        with (
            TritonServer(repository, log_path=Path(work) / "tritonserver.log") as triton,
            Gateway(triton.grpc_url, log_path=Path(work) / "gateway-chat.log", chat_path="chat-model") as via_chat,
            Gateway(triton.grpc_url, log_path=Path(work) / "gateway-direct.log", chat_path="direct") as direct,
        ):
            url = triton.grpc_url
            paths: list[tuple[str, Callable[[], Target], Gateway | None]] = [
                ("floor: raw tensorrt_llm", lambda: EngineTarget(url, tokenizer, timeout_s=300), None),
                ("gRPC → chat model", lambda: GrpcTarget(url, timeout_s=300), None),
                ("gRPC direct", lambda: GrpcTarget(url, timeout_s=300, direct=True, tokenizer_file=tekken), None),
                (
                    "gateway → chat model",
                    lambda: HttpTarget(via_chat.url, timeout_s=300, max_connections=CONCURRENCY),
                    via_chat,
                ),
                ("gateway direct", lambda: HttpTarget(direct.url, timeout_s=300, max_connections=CONCURRENCY), direct),
            ]
            results = [PathResult(name, []) for name, _, _ in paths]
            for _ in range(ROUNDS):
                for result, (name, make_target, gateway) in zip(results, paths, strict=True):
                    result.runs.append(_measure(name, make_target, _processes(triton, gateway), prompts))
    return _report(results)


def _projection(results: list[PathResult]) -> str:
    """Cores of frontend a GPU's token rate needs on each path, from the CPU per token measured here."""
    rows = [
        [result.name, round(result.frontend_ms, 3), round(GPU_ANCHOR_TOKENS_PER_S * result.frontend_ms / 1000, 1)]
        for result in results[1:]
    ]
    return "\n\n".join(
        [
            f"GPU projection: an H100 streaming {GPU_ANCHOR_TOKENS_PER_S:,} tokens/s (TensorRT-LLM's published "
            "Llama-3.1-8B FP8 figure at 128/128; NeMo 12B is larger, so this is an upper bound on its rate) needs "
            "this many cores of frontend on each path, at this machine's per-core speed. On the `chat` model path "
            "they must come from python stubs inside the Triton pod (one core per instance at best: "
            "`--frontend-instances`); on the direct path they are gateway replicas or the calling services.",
            markdown_table(["path", "frontend ms/tok", "cores for the H100's rate"], rows),
        ]
    )


def _report(results: list[PathResult]) -> dict[str, Any]:
    processes = ["tritonserver", "chat", ENGINE, "gateway", "client"]
    floor, chat = results[0], results[1]
    rows = []
    for result in results:
        rows.append(
            [
                result.name,
                round(result.median(lambda s: s.output_token_throughput)),
                *[round(result.per_token_ms(p), 3) if p in result.processes else "–" for p in processes],
                round(result.frontend_ms, 3),
                round(1000 / result.frontend_ms),
                round(result.median(lambda s: s.ttft_ms["p50"]), 1),
                round(result.median(lambda s: s.itl_ms["p50"]), 2),
            ]
        )
    ratios = [
        [
            result.name,
            round(
                result.median(lambda s: s.output_token_throughput) / chat.median(lambda s: s.output_token_throughput),
                2,
            ),
            round(result.frontend_ms / chat.frontend_ms, 2),
            round(result.frontend_ms / floor.frontend_ms, 2),
        ]
        for result in results
    ]
    markdown = "\n\n".join(
        [
            f"Triton serves the stand-in `tensorrt_llm` (`nemo-build repository --target stand-in "
            f"--stand-in-tokens-per-s {TOKENS_PER_S:g}`: the engine's tensors and batching, no model), so "
            f"{CONCURRENCY} streams ask for {CONCURRENCY * TOKENS_PER_S:,.0f} tokens/s, more than the frontend "
            f"carries on 2 cores. {REQUESTS} measured requests per path and round after {WARMUP} warm-up, "
            f"{ROUNDS} rounds (every path once per round, in turn; medians over the rounds), {INPUT_TOKENS}-token "
            f"prompts, exactly {OUTPUT_TOKENS} output tokens, concurrency {CONCURRENCY}, one instance of each model. "
            "CPU is per streamed token, in ms, per process, read from /proc around each run; `frontend` is all but "
            "the `tensorrt_llm` stub (the engine: C++ on a GPU), and capacity is the tokens/s one core of that "
            "frontend carries. `python -m tests.bench.run bench_frontend` runs it alone.",
            markdown_table(
                [
                    "path",
                    "output tok/s",
                    *[f"{p} ms/tok" for p in processes],
                    "frontend ms/tok",
                    "frontend tok/s per core",
                    "TTFT p50 ms",
                    "ITL p50 ms",
                ],
                rows,
            ),
            markdown_table(
                ["path", "tok/s ÷ gRPC → chat", "frontend CPU ÷ gRPC → chat", "frontend CPU ÷ floor"], ratios
            ),
            _projection(results),
        ]
    )
    return {
        "title": "Frontend CPU per streamed token (stand-in engine at GPU rates)",
        "markdown": markdown,
        "data": [
            {
                "path": result.name,
                "frontend_ms_per_token": result.frontend_ms,
                "runs": [
                    {"tokens": run.tokens, "cpu_s": run.cpu_s, "summary": run.summary.as_dict()} for run in result.runs
                ],
            }
            for result in results
        ],
    }


if __name__ == "__main__":
    print(run()["markdown"])
