"""``nemo-accuracy``: ``run`` one deployment, ``report`` runs side by side."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemo_ops import accuracy
from nemo_ops.accuracy.harness import MODEL_KINDS, Deployment, run_accuracy, served_model
from nemo_ops.accuracy.report import accuracy_table, save_accuracy, write_accuracy
from nemo_ops.accuracy.tasks import TABLE1, TABLE1_NAME, parse_tasks

DEFAULT_LIMIT = 200
RUN_KIND = "nemo-accuracy-run"
_TABLE1_TASKS = ", ".join(f"{t.name} ({t.lm_eval_task}, {t.fewshot}-shot, {t.metric})" for t in TABLE1)
EPILOG = f"""\
tasks:   {TABLE1_NAME} (default) = {_TABLE1_TASKS};
         lm-eval downloads their datasets from the Hugging Face hub (set HF_HOME; offline, pre-fetch them).
needs:   pip install 'mistral-nemo-trtllm[accuracy]' (lm-eval); a gateway (nemo-gateway) in front of the deployment.
         Multiple-choice tasks score the prompt's log probabilities (echo + logprobs): on a GPU, an engine built with
         gather_context_logits (the *-eval profiles), or a pytorch repository (per request).

examples:
  nemo-accuracy run --base-url http://localhost:8000/v1 --precision fp8 --model-kind instruct --out docs/gpu/acc
  nemo-accuracy run --base-url http://localhost:8001/v1 --precision bf16 --model-kind instruct --out docs/gpu/acc
      # the second run into the same folder: accuracy.md then has FP8 - BF16 with its 95% interval
  nemo-accuracy report docs/gpu/acc/fp8.json docs/gpu/acc/bf16.json --out docs/gpu/acc
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-accuracy",
        description=accuracy.__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="measure one deployment; writes OUT/<precision>.json and OUT/accuracy.md")
    run.add_argument("--base-url", required=True, help="the gateway's OpenAI base URL, e.g. http://localhost:8000/v1")
    run.add_argument("--model", help="the served model name (default: the first in GET /v1/models)")
    run.add_argument("--precision", required=True, help="what the deployment computes in: fp8, bf16 (or a label)")
    run.add_argument(
        "--model-kind", required=True, choices=MODEL_KINDS, help="which model is served (tiny: the CPU test model)"
    )
    run.add_argument(
        "--tasks", default=TABLE1_NAME, help=f"{TABLE1_NAME} or TASK:SHOTS:METRIC,... (default %(default)s)"
    )
    run.add_argument("--include-path", type=Path, help="a folder of lm-eval task YAML files (local tasks)")
    run.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help="samples per task (per subtask for MMLU; default %(default)s)"
    )
    run.add_argument("--num-concurrent", type=int, default=8, help="requests in flight (default %(default)s)")
    run.add_argument("--out", type=Path, required=True, help="folder for the run and the report")
    report = commands.add_parser("report", help="the table of one or more runs (FP8 - BF16 when both are given)")
    report.add_argument("runs", type=Path, nargs="+", help="run files written by `nemo-accuracy run`")
    report.add_argument("--out", type=Path, required=True, help="folder for accuracy.md and accuracy.json")
    return parser


def read_run(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable run file ({error})") from error
    if not isinstance(doc, dict) or doc.get("kind") != RUN_KIND:
        raise ValueError(f"{path}: not a run file written by `nemo-accuracy run`")
    return doc


def precision_order(run: dict[str, Any]) -> int:
    """FP8 first, BF16 next, others after."""
    return {"fp8": 0, "bf16": 1}.get(run["deployment"]["precision"], 2)


def runs_in(folder: Path) -> list[dict[str, Any]]:
    """The run files already in ``folder``."""
    if not folder.is_dir():
        return []
    return [read_run(path) for path in sorted(folder.glob("*.json")) if path.name != "accuracy.json"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "report":
        try:
            runs = [read_run(path) for path in args.runs]
        except ValueError as error:
            parser.error(str(error))
        write_accuracy(args.out, accuracy_table(runs))
        return 0
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as error:
        parser.error(str(error))
    if args.limit < 1 or args.num_concurrent < 1:
        parser.error("--limit and --num-concurrent take positive integers")
    model = args.model or served_model(args.base_url)
    deployment = Deployment(args.base_url, model, args.precision, args.model_kind)
    try:
        run = run_accuracy(
            deployment, tasks, limit=args.limit, include_path=args.include_path, num_concurrent=args.num_concurrent
        )
    except RuntimeError as error:
        print(f"nemo-accuracy: {error}", file=sys.stderr)
        return 1
    others = [doc for doc in runs_in(args.out) if doc["deployment"]["precision"] != args.precision]
    save_accuracy(args.out, sorted([run, *others], key=precision_order))
    return 0
