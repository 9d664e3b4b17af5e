"""The ``accuracy`` step of ``make gpu-check --accuracy``: ``nemo-accuracy`` on each profile's deployment.

Each profile served is measured through its gateway on the seed's Table 1 tasks (or ``--accuracy-tasks``) with a
sample limit; the report step writes each run and the table, and with an FP8 and a BF16 profile (``--profile
h100-fp8-tp1-eval,h100-bf16-tp1-eval``) the FP8 − BF16 difference with its paired confidence interval. Multiple-choice
tasks need the prompt's log probabilities, which a pytorch repository returns per request and an engine only when
built with ``gather_context_logits``: preflight refuses other engine profiles.
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


def returns_prompt_log_probs(profile: Profile) -> bool:
    """Whether ``profile``'s deployment answers echo + logprobs: a pytorch one always (per request), an engine only
    when built with ``gather_context_logits``."""
    return profile.runtime != "engine" or bool(profile.flags.get("gather_context_logits"))


def prompt_logprob_profiles() -> list[str]:
    """The shipped profiles whose deployments return the prompt's log probabilities."""
    return [name for name in available_profiles() if returns_prompt_log_probs(load_profile(name))]


def accuracy_problems(profile: Profile) -> list[str]:
    """Why ``profile``'s deployment cannot answer lm-eval's multiple-choice tasks (echo + logprobs)."""
    if returns_prompt_log_probs(profile):
        return []
    return [
        f"--accuracy: the multiple-choice tasks score the prompt's log probabilities (echo + logprobs) and profile "
        f"{profile.name} cannot serve them: its engines are built without gather_context_logits; use a profile "
        f"that can ({', '.join(prompt_logprob_profiles())})"
    ]


def measure_accuracy(base_url: str, model: str, precision: str, model_dir: Path, plan: AccuracyPlan) -> dict[str, Any]:
    """The step: the run document of ``nemo-accuracy run`` against the gateway at ``base_url``."""
    deployment = Deployment(f"{base_url}/v1", model, precision, model_kind(model_dir))
    try:
        return run_accuracy(deployment, plan.tasks, limit=plan.limit, include_path=plan.include_path)
    except RuntimeError as error:
        raise StepFailed(f"lm-eval through {base_url}/v1/completions: {error}") from error
