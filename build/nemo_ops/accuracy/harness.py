"""``nemo-accuracy run``: lm-eval's ``local-completions`` through a deployment's ``/v1/completions``, every sample's
score kept.

Tasks are run in groups of the same number of few-shot examples (lm-eval takes one ``num_fewshot`` per call). A
task that is an lm-eval group (MMLU: 57 subjects) is scored over the samples of all its subtasks, the mean of the
per-sample metric; ``--limit`` applies per subtask, as lm-eval applies it. Seeds are lm-eval's fixed defaults, so
two deployments see the same samples and the same few-shot examples, which the paired comparison relies on.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from nemo_ops.accuracy.tasks import TaskSpec

MODEL_KINDS = ("base", "instruct", "tiny")
"""base or instruct: Mistral NeMo 12B; tiny: the CPU test model, whose scores mean nothing."""
PROMPT_PREFIX_TOKEN = 1  # <s>: lm-eval's prefix for a loglikelihood request whose context is empty


@dataclass(frozen=True)
class Deployment:
    """What is measured: the gateway's OpenAI base URL (``http://host:port/v1``) and what it serves."""

    base_url: str
    model: str  # the served model name
    precision: str  # fp8, bf16 or another label
    model_kind: str  # one of MODEL_KINDS


def served_model(base_url: str, timeout_s: float = 30) -> str:
    """The first model ``GET /v1/models`` lists."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=timeout_s) as response:
        listed = json.load(response)["data"]
    if not listed:
        raise RuntimeError(f"{base_url}/models lists no model")
    return str(listed[0]["id"])


def _leaves(task: str, groups: Mapping[str, Sequence[str]]) -> list[str]:
    """The lm-eval tasks (not groups) that ``task`` stands for."""
    children = groups.get(task)
    if not children:
        return [task]
    return [leaf for child in children for leaf in _leaves(child, groups)]


def task_samples(spec: TaskSpec, evaluation: Mapping[str, Any]) -> dict[str, float]:
    """``<subtask>/<doc id>`` → the sample's ``spec.metric``, from lm-eval's results with logged samples."""
    groups = evaluation.get("group_subtasks", {})
    scores: dict[str, float] = {}
    for leaf in _leaves(spec.lm_eval_task, groups):
        for sample in evaluation["samples"].get(leaf, []):
            if spec.metric not in sample:
                raise RuntimeError(
                    f"lm-eval's {leaf} samples have no {spec.metric!r}; they have "
                    f"{', '.join(key for key, value in sample.items() if isinstance(value, (int, float)))}"
                )
            scores[f"{leaf}/{sample['doc_id']}"] = float(sample[spec.metric])
    if not scores:
        raise RuntimeError(f"lm-eval scored no sample of {spec.lm_eval_task}")
    return scores


Evaluate = Callable[..., Mapping[str, Any]]


def _lm_eval() -> tuple[Evaluate, Callable[..., Any]]:
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError as error:
        raise RuntimeError(
            "nemo-accuracy needs lm-eval: pip install 'mistral-nemo-trtllm[accuracy]' (lm-eval 0.4.13)"
        ) from error
    return simple_evaluate, TaskManager


def run_accuracy(
    deployment: Deployment,
    tasks: Sequence[TaskSpec],
    *,
    limit: int | None,
    include_path: Path | None = None,
    num_concurrent: int = 8,
    timeout_s: float = 600,
) -> dict[str, Any]:
    """Every task through the deployment; the run document (settings, per task its score and every sample's)."""
    simple_evaluate, task_manager_class = _lm_eval()
    task_manager = task_manager_class(include_path=str(include_path) if include_path else None)
    model_args = {
        "base_url": f"{deployment.base_url.rstrip('/')}/completions",
        "model": deployment.model,
        "tokenizer_backend": "remote",
        "custom_prefix_token_id": PROMPT_PREFIX_TOKEN,
        "num_concurrent": num_concurrent,
        "max_retries": 1,
        "timeout": timeout_s,
    }
    started = dt.datetime.now(dt.timezone.utc)
    clock = time.perf_counter()
    results: dict[str, Any] = {}
    for fewshot in sorted({spec.fewshot for spec in tasks}):
        group = [spec for spec in tasks if spec.fewshot == fewshot]
        print(f"  lm-eval: {', '.join(spec.lm_eval_task for spec in group)}, {fewshot}-shot, limit {limit}", flush=True)
        evaluation = simple_evaluate(
            model="local-completions",
            model_args=model_args,
            tasks=[spec.lm_eval_task for spec in group],
            num_fewshot=fewshot,
            limit=limit,
            batch_size=1,
            log_samples=True,
            bootstrap_iters=0,  # the comparison's interval is ours (paired); lm-eval's own stderr is not used
            task_manager=task_manager,
        )
        if evaluation is None:
            raise RuntimeError("lm-eval returned no results")
        for spec in group:
            samples = task_samples(spec, evaluation)
            score = 100 * sum(samples.values()) / len(samples)
            results[spec.name] = {**asdict(spec), "score": score, "n": len(samples), "samples": samples}
            print(f"  {spec.name}: {score:.1f} ({spec.metric}, {len(samples)} samples)", flush=True)
    return {
        "kind": "nemo-accuracy-run",
        "deployment": asdict(deployment),
        "limit": limit,
        "lm_eval": version("lm_eval"),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - clock, 1),
        "tasks": results,
    }
