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
from nemo_ops.accuracy.tasks import TABLE1, TABLE1_NAME, TaskSpec, parse_tasks
from nemo_ops.gpu_check.accuracy import AccuracyPlan, accuracy_problems, measure_accuracy
from nemo_ops.gpu_check.bench import (
    DEFAULT_BENCH_CONCURRENCY,
    DEFAULT_BENCH_REQUESTS,
    DEFAULT_BENCH_TOKENS,
    BenchPlan,
    bench,
)
from nemo_ops.gpu_check.compare import comparison, render_comparison
from nemo_ops.gpu_check.engines import build_engines
from nemo_ops.gpu_check.needle import long_context, long_context_problems
from nemo_ops.gpu_check.plan import (
    PER_RUN_STEPS,
    PlanError,
    ProfileRun,
    build_title,
    planned_steps,
    profile_runs,
    step_name,
)
from nemo_ops.gpu_check.preflight import OLDEST_LLM_API, gpu_facts, preflight, profile_or_none
from nemo_ops.gpu_check.report import DEFAULT_RESULTS_ROOT, Run, default_results_dir, write_comparison, write_report
from nemo_ops.gpu_check.servers import DEFAULT_READY_TIMEOUT_S, start_gateway, start_triton
from nemo_ops.gpu_check.smoke import smoke
from nemo_ops.steps import RunAborted, StepRecord, Steps

STEP_NAMES = ("preflight", *PER_RUN_STEPS, "report")  # one profile
DEFAULT_OUT = Path("artifacts/gpu-check")
EPILOG = f"""\
needs:   an NVIDIA GPU host and its driver; docker with the NVIDIA container toolkit (the build and Triton
         then run in {NGC_IMAGE}, TensorRT-LLM {PINNED_TRTLLM}),
         or on PATH what the profile's runtime needs: trtllm-build and tritonserver (engine), or a python3 with the
         tensorrt_llm package ({".".join(map(str, OLDEST_LLM_API))} or newer: its LLM API) and tritonserver (pytorch);
         the Hugging Face Mistral NeMo Instruct directory (config.json, tekken.json, *.safetensors);
         ~50 GB of disk (the image, OUT), per profile.
takes:   the first run roughly 30-60 min (image pull, FP8 calibration, engine build, engine load);
         then minutes with --skip-build (estimates).
results: docs/gpu/<UTC date>-<gpu>-<profile>/ (results.json, README.md, bench/) unless --results-dir;
         with several profiles docs/gpu/<UTC date>-<gpu>-<profile 1>-vs-<profile 2>/: comparison.json and
         README.md (tokens/s, TTFT and ITL side by side) and a subfolder of each profile's report;
         docs/gpu is --results-root's default, relative to the current directory (make gpu-check runs in the
         project root, whose docs/gpu/ keeps the committed runs);
         checkpoint, engines, repository and logs (logs/make_engine.log, logs/tritonserver.log) in --out.
         See docs/gpu/README.md.

examples:
  make gpu-check MODEL_DIR=/models/Mistral-Nemo-Instruct-2407
  python -m nemo_ops.gpu_check --model-dir /models/Mistral-Nemo-Instruct-2407 --profile l40s-fp8-tp1
  python -m nemo_ops.gpu_check --model-dir /models/Mistral-Nemo-Instruct-2407 --skip-build   # reuse OUT/repository
  make gpu-check MODEL_DIR=/models/Mistral-Nemo-Instruct-2407 RUNTIMES=engine,pytorch
      # h100-fp8-tp1 and its pytorch twin h100-fp8-tp1-pytorch, one after the other, side by side
  python -m nemo_ops.gpu_check --model-dir DIR --profile h100-fp8-tp1,h100-fp8-tp1-pytorch   # the same, named
  make gpu-check MODEL_DIR=... PROFILE=h100-fp8-tp1-128k GPU_CHECK_ARGS=--long-context   # 16k/64k/128k needles
  make gpu-check MODEL_DIR=... PROFILE=h100-fp8-tp1-eval,h100-bf16-tp1-eval GPU_CHECK_ARGS=--accuracy
      # lm-eval on the seed's Table 1 through each deployment; accuracy/ has FP8 - BF16 with its 95% interval
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


def _paths(text: str) -> tuple[Path, ...]:
    return tuple(Path(part.strip()) for part in text.split(",") if part.strip())


def _tasks(text: str) -> tuple[TaskSpec, ...]:
    try:
        return parse_tasks(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
        help=(
            "build profile name or .yaml path, or several comma-separated: each is built, served and benched in turn "
            f"(in OUT/<profile>/) and compared (default %(default)s; known: {', '.join(available_profiles())})"
        ),
    )
    parser.add_argument(
        "--runtimes",
        help=(
            "comma-separated runtimes (engine, pytorch): --profile and its twin of each other runtime (the shipped "
            "profile for the same GPU, precision, KV cache, TP and limits), in this order, side by side"
        ),
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
        type=_paths,
        default=(),
        help=(
            "serve this rendered repository instead of OUT/repository (implies --skip-build); several, "
            "comma-separated: one per profile, each served in turn and compared"
        ),
    )
    reuse.add_argument(
        "--skip-preflight",
        action="store_true",
        help="skip step 1 (its checks need a GPU): with --repository, runs steps 3-7 on any machine, CPU included",
    )
    tuning = parser.add_argument_group("serving and bench")
    tuning.add_argument(
        "--launcher",
        choices=("auto", "pytriton", "local", "docker"),
        default="auto",
        help="how Triton runs, as nemo-serve --launcher (default auto: a local tritonserver that runs the "
        "repository's runtime, else the NGC image; pytriton on a host without a GPU)",
    )
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
    parser.add_argument(
        "--long-context",
        action="store_true",
        help="after bench, a needle at depths 0.1, 0.5, 0.9 of 16k, 64k and 128k-token haystacks, each answer checked "
        "and its TTFT recorded (sizes past the profile's limits are skipped: h100-fp8-tp1-128k serves all three)",
    )
    accuracy = parser.add_argument_group("accuracy (nemo-accuracy through each deployment)")
    accuracy.add_argument(
        "--accuracy",
        action="store_true",
        help="after bench, lm-eval's local-completions through the gateway on the seed's Table 1 tasks; the "
        "profiles must return prompt log probabilities (the *-eval ones); with an FP8 and a BF16 profile the report "
        "has FP8 - BF16 with its 95%% interval",
    )
    accuracy.add_argument(
        "--accuracy-limit", type=_positive(int), default=200, help="samples per task (default %(default)s)"
    )
    accuracy.add_argument(
        "--accuracy-tasks",
        type=_tasks,
        default=TABLE1,
        help=f"{TABLE1_NAME} or TASK:SHOTS:METRIC,... (default {TABLE1_NAME})",
    )
    accuracy.add_argument("--accuracy-include-path", type=Path, help="a folder of lm-eval task YAML files")
    return parser


def _serve_and_measure(
    args: argparse.Namespace, plan: ProfileRun, run: Run, steps: Steps, names: list[str], label: str
) -> None:
    """One profile's steps after preflight: build (unless its repository is given), serve, gateway, smoke, bench and
    the optional ones (``label`` names its accuracy run); its servers are stopped before this returns."""
    name = dict(zip((*PER_RUN_STEPS, *optional_steps(args)), names, strict=True))
    repository = plan.repository
    if repository is not None:
        steps.skip(name["build"], f"serving {repository}")
    else:
        with steps.step(name["build"], build_title(run.profile)):
            repository = build_engines(args.model_dir, plan.profile, plan.out)
    run.repository = repository
    bench_dir = plan.out / "bench"
    with contextlib.ExitStack() as servers:
        with steps.step(name["serve"], f"Triton on {repository} (ready timeout {args.ready_timeout:.0f} s)"):
            server = start_triton(repository, plan.out, args.ready_timeout, servers, args.launcher)
            run.launcher, run.target = server.launcher, server.target
        with steps.step(name["gateway"], "nemo-gateway in front of Triton's gRPC endpoint"):
            base_url = start_gateway(server, servers)
        with steps.step(name["smoke"], "chat, streamed chat, tool call → tool result → answer (openai SDK)"):
            run.smoke = smoke(base_url)
        bench_plan = BenchPlan(
            args.bench_concurrency, args.bench_requests, args.bench_input_tokens, args.bench_output_tokens
        )
        with steps.step(name["bench"], f"nemo-bench, concurrency {','.join(map(str, bench_plan.concurrency))}"):
            run.bench = bench(base_url, run.smoke["model"], repository / TOKENIZER_FILE, bench_plan, bench_dir)
        if "long-context" in name:
            settings = server.manifest.settings
            limits = (int(settings["max_input_len"]), int(settings["max_seq_len"]))
            with steps.step(name["long-context"], "a needle at several depths of 16k, 64k and 128k-token haystacks"):
                run.long_context = long_context(base_url, run.smoke["model"], repository / TOKENIZER_FILE, limits)
        if "accuracy" in name:
            accuracy = accuracy_plan(args)
            tasks = ", ".join(f"{task.name} {task.fewshot}-shot" for task in accuracy.tasks)
            with steps.step(name["accuracy"], f"lm-eval through /v1/completions ({tasks}; limit {accuracy.limit})"):
                run.accuracy = measure_accuracy(base_url, run.smoke["model"], label, args.model_dir, accuracy)


def optional_steps(args: argparse.Namespace) -> tuple[str, ...]:
    """The steps after bench that the arguments ask for, in the order they run."""
    wanted = (("long-context", args.long_context), ("accuracy", args.accuracy))
    return tuple(step for step, asked in wanted if asked)


def accuracy_labels(runs: Sequence[Run]) -> list[str]:
    """What each run's accuracy is labelled with: its precision (fp8, bf16: the report's FP8 − BF16 pairs them), or,
    when several runs share one, the precision and the profile."""
    precisions = [run.profile.precision if run.profile else "unknown" for run in runs]
    return [
        precision if precisions.count(precision) == 1 else f"{precision}-{run.profile_name}"
        for precision, run in zip(precisions, runs, strict=True)
    ]


def accuracy_plan(args: argparse.Namespace) -> AccuracyPlan:
    return AccuracyPlan(args.accuracy_tasks, args.accuracy_limit, args.accuracy_include_path)


def run_check(args: argparse.Namespace, plans: list[ProfileRun]) -> Path:
    """Every step for every profile in ``plans``; returns the results folder. Raises :class:`RunAborted` at the
    first failed step."""
    started = dt.datetime.now(dt.timezone.utc)
    runs = [Run(started=started, model_dir=args.model_dir, profile_name=plan.profile) for plan in plans]
    steps = Steps("gpu-check", planned_steps(plans, optional_steps(args)))
    try:
        if args.skip_preflight:
            steps.skip("preflight", "--skip-preflight")
            for run in runs:
                run.facts, run.profile = gpu_facts(), profile_or_none(run.profile_name)
        else:
            with steps.step("preflight", "GPU, model directory, profiles, what each runtime needs"):
                judges = [judge for judge, asked in ((long_context_problems, args.long_context),
                                                     (accuracy_problems, args.accuracy)) if asked]  # fmt: skip
                facts, profiles = preflight(args.model_dir, plans, judges)
            for run, fact, profile in zip(runs, facts, profiles, strict=True):
                run.facts, run.profile = fact, profile
        for plan, run, label in zip(plans, runs, accuracy_labels(runs), strict=True):
            names = [step_name(step, plan, plans) for step in (*PER_RUN_STEPS, *optional_steps(args))]
            _serve_and_measure(args, plan, run, steps, names, label)
        gpus = runs[0].facts.gpus
        labels = [run.profile.name if run.profile else plan.label for plan, run in zip(plans, runs, strict=True)]
        results_dir = args.results_dir or default_results_dir(
            started.date(), gpus, "-vs-".join(labels), args.results_root
        )
        if len(plans) > 1:
            with steps.step("compare", f"{' vs '.join(labels)} side by side"):
                folders = [f"{index}-{label}" for index, label in enumerate(labels, 1)]
                documents = [run.document(steps.records) for run in runs]
                side_by_side = comparison(documents, folders)
                print(render_comparison(side_by_side))
        report_started = time.perf_counter()
        with steps.step("report", f"results in {results_dir}"):
            seconds = round(time.perf_counter() - report_started, 2)  # the writing below takes milliseconds
            report_record = asdict(StepRecord(steps.number("report"), "report", "ok", seconds))
            if len(plans) == 1:
                document = runs[0].document(steps.records)
                document["steps"].append(report_record)
                write_report(results_dir, document, plans[0].out / "bench", runs[0].accuracy)
            else:
                for plan, run, folder in zip(plans, runs, folders, strict=True):
                    document = run.document(steps.records)
                    document["steps"].append(report_record)
                    write_report(results_dir / folder, document, plan.out / "bench", run.accuracy)
                write_comparison(results_dir, side_by_side, [run.accuracy for run in runs if run.accuracy])
    finally:
        steps.summary()
    return results_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plans = profile_runs(
            args.profile, args.out, runtimes=args.runtimes, repositories=args.repository, skip_build=args.skip_build
        )
    except PlanError as error:
        parser.error(str(error))
    try:
        results_dir = run_check(args, plans)
    except RunAborted as failure:
        print(f"\n{failure}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ngpu-check: interrupted (servers stopped)", file=sys.stderr)
        return 130
    print(f"\ngpu-check: every step passed; results in {results_dir}")
    return 0
