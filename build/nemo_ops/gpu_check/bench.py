"""Step 6 of ``make gpu-check``: a short nemo-bench concurrency sweep through the gateway."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_ops.gateway_process import venv_bin
from nemo_ops.gpu_check.commands import run_logged
from nemo_ops.steps import StepFailed

DEFAULT_BENCH_CONCURRENCY = (1, 8, 32)
DEFAULT_BENCH_REQUESTS = 64
DEFAULT_BENCH_TOKENS = 128


@dataclass(frozen=True)
class BenchPlan:
    concurrency: tuple[int, ...] = DEFAULT_BENCH_CONCURRENCY
    requests: int = DEFAULT_BENCH_REQUESTS
    input_tokens: int = DEFAULT_BENCH_TOKENS
    output_tokens: int = DEFAULT_BENCH_TOKENS


def bench_summary(levels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a level: the figures the report shows."""
    return [
        {
            "concurrency": level["level"],
            "requests": level["requests"],
            "successes": level["successes"],
            "errors": level["errors"],
            "request_throughput": level["request_throughput"],
            "output_token_throughput": level["output_token_throughput"],
            "mean_output_tokens": level["mean_output_tokens"],
            **{f"{m}_p{q}_ms": level[f"{m}_ms"].get(f"p{q}") for m in ("ttft", "itl", "e2e") for q in (50, 99)},
        }
        for level in levels
    ]


def bench(base_url: str, model: str, tokenizer: Path, plan: BenchPlan, out: Path) -> dict[str, Any]:
    """Step 6: nemo-bench through the gateway into ``out``; fails on any error or an empty level."""
    command = [
        venv_bin("nemo-bench"), "--http-url", base_url, "--model", model, "--tokenizer", str(tokenizer),
        "--concurrency", ",".join(map(str, plan.concurrency)), "--requests", str(plan.requests),
        "--input-tokens", str(plan.input_tokens), "--output-tokens", str(plan.output_tokens),
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    status, tail = run_logged(command, out / "nemo-bench.log")
    if status != 0:
        raise StepFailed(f"nemo-bench exited with status {status}:\n{tail}")
    document = json.loads((out / "results.json").read_text())
    summary = bench_summary(document["levels"])
    for level, row in zip(document["levels"], summary, strict=True):
        if row["errors"] or not row["output_token_throughput"]:
            first = "; ".join(level.get("first_errors") or []) or "no tokens"
            raise StepFailed(f"nemo-bench at concurrency {row['concurrency']}: errors {row['errors']} ({first})")
    return {"settings": document["settings"], "levels": summary}
