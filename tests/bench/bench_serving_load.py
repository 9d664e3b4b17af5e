"""Serving under load with ``nemo-bench``: the CPU Triton (tiny model) over gRPC and through the gateway.

Concurrency 1, 4 and 16, synthetic prompts of 128 Tekken tokens asking for exactly 32 tokens
(``nvext.ignore_eos``). The gateway's cost is the ratio of its figures to gRPC's at the same level.
Plots go to ``docs/benchmarks/serving_load_{grpc,http}.png``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from nemo_bench.load import Level, StopRule
from nemo_bench.metrics import LevelSummary
from nemo_bench.plot import plot_sweep
from nemo_bench.sweep import sweep
from nemo_bench.targets import GrpcTarget, HttpTarget, SamplingOptions, Target
from nemo_bench.workload import SyntheticPrompts
from nemo_ops.launcher import TritonServer
from nemo_protocol.tekken import Tekkenizer, default_tekken_path
from tests.bench.run import PLOTS_DIR
from tests.bench.timing import markdown_table
from tests.reliability.servers import Gateway, render_cpu_repository, tiny_checkpoint

CONCURRENCY = (1, 4, 16)
INPUT_TOKENS, OUTPUT_TOKENS = 128, 32
REQUESTS_PER_LEVEL = 48
WARMUP = 4


async def _sweep(target: Target, tokenizer: Tekkenizer) -> list[LevelSummary]:
    try:
        result = await sweep(
            target,
            SyntheticPrompts(tokenizer, INPUT_TOKENS, OUTPUT_TOKENS, seed=0),
            SamplingOptions(temperature=0.0, ignore_eos=True),
            [Level(concurrency=c) for c in CONCURRENCY],
            StopRule(requests=REQUESTS_PER_LEVEL),
            warmup=WARMUP,
        )
    finally:
        await target.close()
    if not result.options.ignore_eos:
        raise RuntimeError(f"the server refused ignore_eos: {result.notes}")
    return result.levels


def _row(path: str, level: LevelSummary) -> list[object]:
    return [
        path, int(level.level), f"{level.successes}/{level.requests}", round(level.request_throughput, 2),
        round(level.output_token_throughput, 1), round(level.ttft_ms["p50"], 1), round(level.ttft_ms["p99"], 1),
        round(level.itl_ms["p50"], 2), round(level.e2e_ms["p50"], 1),
    ]  # fmt: skip


def run() -> dict[str, Any]:
    tokenizer = Tekkenizer.from_file(default_tekken_path())
    with tempfile.TemporaryDirectory(prefix="bench-serving-load-") as work:
        repository = render_cpu_repository(tiny_checkpoint(), Path(work) / "repository")
        with (
            TritonServer(repository, log_path=Path(work) / "tritonserver.log") as triton,
            Gateway(triton.grpc_url, log_path=Path(work) / "gateway.log") as gateway,
        ):
            grpc = asyncio.run(_sweep(GrpcTarget(triton.grpc_url, timeout_s=300), tokenizer))
            http = asyncio.run(
                _sweep(HttpTarget(gateway.url, timeout_s=300, max_connections=max(CONCURRENCY)), tokenizer)
            )
    title = f"CPU Triton, tiny model, ISL {INPUT_TOKENS} / OSL {OUTPUT_TOKENS}"
    plot_sweep(PLOTS_DIR / "serving_load_grpc.png", grpc, f"{title}, gRPC")
    plot_sweep(PLOTS_DIR / "serving_load_http.png", http, f"{title}, gateway")
    ratios = [
        [int(g.level), round(h.output_token_throughput / g.output_token_throughput, 2),
         round(h.ttft_ms["p50"] / g.ttft_ms["p50"], 2), round(h.e2e_ms["p50"] / g.e2e_ms["p50"], 2)]
        for g, h in zip(grpc, http, strict=True)
    ]  # fmt: skip
    markdown = "\n\n".join(
        [
            f"`nemo-bench` against the bundled CPU Triton serving the tiny model ({REQUESTS_PER_LEVEL} measured "
            f"requests per level after {WARMUP} warm-up, {INPUT_TOKENS}-token prompts, exactly {OUTPUT_TOKENS} "
            "output tokens). The same sweep runs over gRPC (`nemo_client` → `chat`) and through `nemo-gateway` "
            "(HTTP + SSE → the gateway's direct path → `tensorrt_llm`). "
            "`python -m tests.bench.run bench_serving_load` runs it alone.",
            markdown_table(
                [
                    "path",
                    "concurrency",
                    "ok/sent",
                    "req/s",
                    "output tok/s",
                    "TTFT p50 ms",
                    "TTFT p99 ms",
                    "ITL p50 ms",
                    "e2e p50 ms",
                ],
                [_row("gRPC", level) for level in grpc] + [_row("gateway", level) for level in http],
            ),
            markdown_table(
                ["concurrency", "gateway ÷ gRPC output tok/s", "gateway ÷ gRPC TTFT p50", "gateway ÷ gRPC e2e p50"],
                ratios,
            ),
            "![gRPC](benchmarks/serving_load_grpc.png)\n![gateway](benchmarks/serving_load_http.png)",
        ]
    )
    return {
        "title": "Serving under load (nemo-bench, CPU Triton)",
        "markdown": markdown,
        "data": {"grpc": [level.as_dict() for level in grpc], "http": [level.as_dict() for level in http]},
    }


if __name__ == "__main__":
    print(json.dumps(run()["data"], indent=2, default=str))
