"""The ``accuracy`` step of ``make gpu-check --accuracy``: ``nemo-accuracy`` on each profile's deployment.

Each profile served is measured through its gateway on the seed's Table 1 tasks (or ``--accuracy-tasks``) with a
sample limit; the report step writes each run and the table, and with an FP8 and a BF16 profile (``--profile
h100-fp8-tp1-eval,h100-bf16-tp1-eval``) the FP8 − BF16 difference with its paired confidence interval. Multiple-choice
tasks need the prompt's log probabilities, which only an engine built with ``gather_context_logits`` returns:
preflight refuses other profiles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_build.profiles import Profile, available_profiles, load_profile
from nemo_ops.accuracy.harness import Deployment, run_accuracy
from nemo_ops.accuracy.tasks import TaskSpec
from nemo_ops.steps import StepFailed

NEMO_HIDDEN_SIZE = 5120  # Mistral NeMo 12B; anything else is a test model


@dataclass(frozen=True)
class AccuracyPlan:
    tasks: tuple[TaskSpec, ...]
    limit: int
    include_path: Path | None = None


def model_kind(model_dir: Path) -> str:
    """base or instruct (by the directory's name, as Mistral names them: Mistral-Nemo-Base-2407, …-Instruct-2407),
    or tiny for a model that is not NeMo 12B's shape."""
    try:
        hidden = json.loads((model_dir / "config.json").read_text()).get("hidden_size")
    except (OSError, json.JSONDecodeError):
        hidden = None
    if hidden != NEMO_HIDDEN_SIZE:
        return "tiny"
    return "base" if "base" in model_dir.resolve().name.lower() else "instruct"


def prompt_logprob_profiles() -> list[str]:
    """The shipped profiles whose deployments return the prompt's log probabilities."""
    return [name for name in available_profiles("engine") if load_profile(name).flags.get("gather_context_logits")]


def accuracy_problems(profile: Profile) -> list[str]:
    """Why ``profile``'s deployment cannot answer lm-eval's multiple-choice tasks (echo + logprobs)."""
    if profile.runtime == "engine" and profile.flags.get("gather_context_logits"):
        return []
    why = (
        "its engines are built without gather_context_logits"
        if profile.runtime == "engine"
        else "a pytorch repository does not return them (nemo-build renders --target pytorch with context logits off)"
    )
    return [
        f"--accuracy: the multiple-choice tasks score the prompt's log probabilities (echo + logprobs) and profile "
        f"{profile.name} cannot serve them: {why}; use a profile that can ({', '.join(prompt_logprob_profiles())})"
    ]


def measure_accuracy(base_url: str, model: str, precision: str, model_dir: Path, plan: AccuracyPlan) -> dict[str, Any]:
    """The step: the run document of ``nemo-accuracy run`` against the gateway at ``base_url``."""
    deployment = Deployment(f"{base_url}/v1", model, precision, model_kind(model_dir))
    try:
        return run_accuracy(deployment, plan.tasks, limit=plan.limit, include_path=plan.include_path)
    except RuntimeError as error:
        raise StepFailed(f"lm-eval through {base_url}/v1/completions: {error}") from error
