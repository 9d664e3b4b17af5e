"""What one ``make gpu-check`` run does: the profiles it builds and serves, in order, and the steps for each.

One profile (``--profile h100-fp8-tp1``): the seven steps, OUT as given. Several (``--profile A,B``, or
``--runtimes engine,pytorch``, which takes ``--profile`` and its twin for the other runtime: the shipped profile
for the same GPU, precision, KV cache, TP and limits), each in turn in ``OUT/<profile>/``: built, served, smoked and
benched, its servers stopped before the next starts (one GPU), then a ``compare`` step puts them side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_build.errors import BuildError
from nemo_build.profiles import RUNTIMES, Profile, available_profiles, load_profile

# The limits that make two profiles comparable: the same model on the same GPU, serving the same requests.
TWIN_KEYS = ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens")
# What each repository target runs (nemo-build repository --target): the runtime a report names.
TARGET_RUNTIME = {"gpu": "engine", "pytorch": "pytorch", "cpu": "cpu reference", "stand-in": "stand-in"}
PER_RUN_STEPS = ("build", "serve", "gateway", "smoke", "bench")


class PlanError(ValueError):
    """The arguments name no runnable set of profiles; the message says what to pass."""


@dataclass(frozen=True)
class ProfileRun:
    """One profile to build (unless ``repository`` is given) and serve."""

    profile: str  # a profile name or a .yaml path, as given
    out: Path  # its engines or checkpoint, repository and logs
    repository: Path | None  # serve this one as it is (no build); None: build into out/repository

    @property
    def label(self) -> str:
        return Path(self.profile).stem if self.profile.endswith((".yaml", ".yml")) else self.profile


def serving_limits(profile: Profile) -> dict[str, Any]:
    """The limits a profile serves with, whatever its runtime (trtllm-build flags or LLM arguments)."""
    section = profile.flags if profile.runtime == "engine" else profile.llm
    return {key: section.get(key) for key in TWIN_KEYS}


def _shape(profile: Profile) -> tuple[object, ...]:
    return profile.gpu, profile.precision, profile.kv_cache, profile.tp, serving_limits(profile)


def twin_profile(profile: Profile, runtime: str) -> str:
    """The shipped profile of ``runtime`` for the same GPU, precision, KV cache, TP and limits as ``profile``."""
    if profile.runtime == runtime:
        return profile.name
    twins = [name for name in available_profiles(runtime) if _shape(load_profile(name)) == _shape(profile)]
    if len(twins) != 1:
        found = f"several ({', '.join(twins)})" if twins else "none"
        raise PlanError(
            f"--runtimes: profile {profile.name} has {found} for the {runtime} runtime with the same GPU, precision, "
            f"KV cache, TP and limits ({', '.join(TWIN_KEYS)}): name both profiles instead, --profile A,B"
        )
    return twins[0]


def _runtimes(text: str) -> tuple[str, ...]:
    runtimes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [runtime for runtime in runtimes if runtime not in RUNTIMES]
    if not runtimes or unknown or len(set(runtimes)) != len(runtimes):
        raise PlanError(f"--runtimes is {text!r}: comma-separated, each once, from {', '.join(RUNTIMES)}")
    return runtimes


def profile_runs(
    profiles: str,
    out: Path,
    *,
    runtimes: str | None = None,
    repositories: Sequence[Path] = (),
    skip_build: bool = False,
) -> list[ProfileRun]:
    """The runs, in order. ``profiles`` is comma-separated; ``repositories`` (serve these, no build) pairs with
    them one to one, or one profile with several repositories (a CPU test serving a repository of each runtime)."""
    names = [name.strip() for name in profiles.split(",") if name.strip()]
    if not names:
        raise PlanError("--profile names no profile")
    if runtimes is not None:
        if len(names) != 1:
            raise PlanError("--runtimes takes one --profile, whose twins it finds; or name every profile instead")
        try:
            base = load_profile(names[0])
        except BuildError as error:
            raise PlanError(str(error)) from error
        names = [twin_profile(base, runtime) for runtime in _runtimes(runtimes)]
    if repositories and len(names) == 1:
        names = names * len(repositories)
    if repositories and len(repositories) != len(names):
        raise PlanError(f"--repository names {len(repositories)} repositories for {len(names)} profiles: one each")
    several = len(names) > 1
    labels = [ProfileRun(name, out, None).label for name in names]
    if several and not repositories and len(set(labels)) != len(labels):
        raise PlanError(f"--profile names a profile twice ({', '.join(labels)}): each is built once")
    runs = []
    for index, name in enumerate(names):
        run_out = out / labels[index] if several and not repositories else out
        repository = repositories[index] if repositories else (run_out / "repository" if skip_build else None)
        runs.append(ProfileRun(name, run_out, repository))
    return runs


def build_title(profile: Profile | None) -> str:
    """What step 2 does for a profile, by its runtime."""
    if profile is None:
        return "scripts/make_engine.sh: checkpoint → repository"
    precision = profile.precision.upper() if profile.precision == "fp8" else profile.precision
    if profile.runtime == "pytorch":
        return f"scripts/make_engine.sh: Hugging Face {precision} checkpoint → repository (LLM API, no engines)"
    return f"scripts/make_engine.sh: {precision} checkpoint → trtllm-build engines → repository"


def step_name(step: str, run: ProfileRun, runs: Sequence[ProfileRun]) -> str:
    """A per-profile step's name: ``serve``, or ``serve <profile>`` when several profiles run."""
    return f"{step} {run.label}" if len(runs) > 1 else step


def planned_steps(runs: Sequence[ProfileRun], extra: Sequence[str] = ()) -> list[str]:
    """Every step of the run in order: preflight, each profile's build … bench and ``extra`` steps (long-context,
    accuracy), compare when several profiles run, report."""
    steps = ["preflight"]
    for run in runs:
        steps += [step_name(step, run, runs) for step in (*PER_RUN_STEPS, *extra)]
    if len(runs) > 1:
        steps.append("compare")
    return [*steps, "report"]
