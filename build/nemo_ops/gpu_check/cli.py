"""``python -m nemo_ops.gpu_check`` (``make gpu-check``): the arguments, and the steps run in order."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nemo_build.preflight import NGC_IMAGE, PINNED_TRTLLM
from nemo_build.profiles import DEFAULT_PROFILE, available_profiles
from nemo_build.repository import TOKENIZER_FILE
from nemo_ops import gpu_check
from nemo_ops.gpu_check.bench import (
    DEFAULT_BENCH_CONCURRENCY,
    DEFAULT_BENCH_REQUESTS,
    DEFAULT_BENCH_TOKENS,
    BenchPlan,
    bench,
)
from nemo_ops.gpu_check.engines import build_engines
from nemo_ops.gpu_check.preflight import gpu_facts, preflight, profile_or_none
from nemo_ops.gpu_check.report import DEFAULT_RESULTS_ROOT, Run, default_results_dir, write_report
from nemo_ops.gpu_check.servers import DEFAULT_READY_TIMEOUT_S, start_gateway, start_triton
from nemo_ops.gpu_check.smoke import smoke
from nemo_ops.steps import RunAborted, StepRecord, Steps

STEP_NAMES = ("preflight", "build", "serve", "gateway", "smoke", "bench", "report")
DEFAULT_OUT = Path("artifacts/gpu-check")
EPILOG = f"""\
needs:   an NVIDIA GPU host and its driver; docker with the NVIDIA container toolkit (the build and Triton
         then run in {NGC_IMAGE}, TensorRT-LLM {PINNED_TRTLLM}),
         or trtllm-build and tritonserver on PATH; the Hugging Face Mistral NeMo Instruct directory
         (config.json, tekken.json, *.safetensors); ~50 GB of disk (the image, OUT).
takes:   the first run roughly 30-60 min (image pull, FP8 calibration, engine build, engine load);
         then minutes with --skip-build (estimates).
results: docs/gpu/<UTC date>-<gpu>-<profile>/ (results.json, README.md, bench/) unless --results-dir;
         docs/gpu is --results-root's default, relative to the current directory (make gpu-check runs in the
         project root, whose docs/gpu/ keeps the committed runs);
         checkpoint, engines, repository and logs (logs/make_engine.log, logs/tritonserver.log) in --out.
         See docs/gpu/README.md.

examples:
  make gpu-check MODEL_DIR=/models/Mistral-Nemo-Instruct-2407
  python -m nemo_ops.gpu_check --model-dir /models/Mistral-Nemo-Instruct-2407 --profile l40s-fp8-tp1
  python -m nemo_ops.gpu_check --model-dir /models/Mistral-Nemo-Instruct-2407 --skip-build   # reuse OUT/repository
  python -m nemo_ops.gpu_check --model-dir DIR --skip-preflight --repository artifacts/demo/repository \\
      --results-dir /tmp/check        # the steps after the build against any rendered repository (CPU too)

Exit status 0 when every step passed; 1 at the first failed step ("gpu-check: step N (name) failed: ...");
2 for bad arguments.
"""


def _concurrency(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"comma-separated positive integers, got {text!r}")
    return values


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"a positive number, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-check",
        description=gpu_check.__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="Hugging Face Mistral NeMo (Instruct) directory")
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"build profile name or .yaml path (default %(default)s; known: {', '.join(available_profiles())})",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="engines, repository and logs (default %(default)s)"
    )
    parser.add_argument(
        "--results-root",
        type=Path,
        default=DEFAULT_RESULTS_ROOT,
        help="folder the dated results folder goes in (default %(default)s, relative to the current directory)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="where the report goes (default RESULTS_ROOT/<UTC date>-<gpu>-<profile>, see --results-root)",
    )
    reuse = parser.add_argument_group("reuse and testing")
    reuse.add_argument("--skip-build", action="store_true", help="skip step 2 and serve the existing OUT/repository")
    reuse.add_argument(
        "--repository",
        type=Path,
        help="serve this rendered repository instead of OUT/repository (implies --skip-build)",
    )
    reuse.add_argument(
        "--skip-preflight",
        action="store_true",
        help="skip step 1 (its checks need a GPU): with --repository, runs steps 3-7 on any machine, CPU included",
    )
    tuning = parser.add_argument_group("serving and bench")
    tuning.add_argument(
        "--ready-timeout",
        type=_positive(float),
        default=DEFAULT_READY_TIMEOUT_S,
        help="seconds to wait for Triton to load the engine (default %(default)s)",
    )
    tuning.add_argument(
        "--bench-concurrency",
        type=_concurrency,
        default=DEFAULT_BENCH_CONCURRENCY,
        help="nemo-bench concurrency levels (default 1,8,32)",
    )
    tuning.add_argument(
        "--bench-requests",
        type=_positive(int),
        default=DEFAULT_BENCH_REQUESTS,
        help="measured requests per level (default %(default)s)",
    )
    tuning.add_argument(
        "--bench-input-tokens",
        type=_positive(int),
        default=DEFAULT_BENCH_TOKENS,
        help="prompt length (default %(default)s)",
    )
    tuning.add_argument(
        "--bench-output-tokens",
        type=_positive(int),
        default=DEFAULT_BENCH_TOKENS,
        help="max_tokens per request (default %(default)s)",
    )
    return parser


def run_check(args: argparse.Namespace) -> Path:
    """Steps 1-7; returns the results folder. Raises :class:`RunAborted` at the first failed step."""
    out: Path = args.out
    run = Run(started=dt.datetime.now(dt.timezone.utc), model_dir=args.model_dir, profile_name=args.profile)
    steps = Steps("gpu-check", STEP_NAMES)
    repository: Path | None = args.repository or (out / "repository" if args.skip_build else None)
    try:
        if args.skip_preflight:
            steps.skip("preflight", "--skip-preflight")
            run.facts, run.profile = gpu_facts(), profile_or_none(args.profile)
        else:
            with steps.step("preflight", "GPU, model directory, profile, toolchain"):
                run.facts, run.profile = preflight(args.model_dir, args.profile, out, repository)
        if repository is not None:
            steps.skip("build", f"serving {repository}")
        else:
            with steps.step("build", "scripts/make_engine.sh: FP8 checkpoint → engines → repository"):
                repository = build_engines(args.model_dir, args.profile, out)
        run.repository = repository
        bench_dir = out / "bench"
        with contextlib.ExitStack() as servers:
            with steps.step("serve", f"Triton on {repository} (ready timeout {args.ready_timeout:.0f} s)"):
                server = start_triton(repository, out, args.ready_timeout, servers)
                run.launcher, run.target = server.launcher, server.target
            with steps.step("gateway", "nemo-gateway in front of Triton's gRPC endpoint"):
                base_url = start_gateway(server, servers)
            with steps.step("smoke", "chat, streamed chat, tool call → tool result → answer (openai SDK)"):
                run.smoke = smoke(base_url)
            plan = BenchPlan(
                args.bench_concurrency, args.bench_requests, args.bench_input_tokens, args.bench_output_tokens
            )
            with steps.step("bench", f"nemo-bench, concurrency {','.join(map(str, plan.concurrency))}"):
                run.bench = bench(base_url, run.smoke["model"], repository / TOKENIZER_FILE, plan, bench_dir)
        profile_name = run.profile.name if run.profile else Path(args.profile).stem
        results_dir = args.results_dir or default_results_dir(
            run.started.date(), run.facts.gpus, profile_name, args.results_root
        )
        report_started = time.perf_counter()
        with steps.step("report", f"results in {results_dir}"):
            document = run.document(steps.records)
            seconds = round(time.perf_counter() - report_started, 2)  # the writing below takes milliseconds
            document["steps"].append(asdict(StepRecord(steps.number("report"), "report", "ok", seconds)))
            write_report(results_dir, document, bench_dir)
    finally:
        steps.summary()
    return results_dir


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results_dir = run_check(args)
    except RunAborted as failure:
        print(f"\n{failure}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ngpu-check: interrupted (servers stopped)", file=sys.stderr)
        return 130
    print(f"\ngpu-check: every step passed; results in {results_dir}")
    return 0
