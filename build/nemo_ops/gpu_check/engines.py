"""Step 2 of ``make gpu-check``: ``scripts/make_engine.sh`` builds the FP8 checkpoint, engines and repository."""

from __future__ import annotations

from pathlib import Path

from nemo_ops.gpu_check.commands import run_logged
from nemo_ops.gpu_check.preflight import repository_problems
from nemo_ops.steps import StepFailed

ROOT = Path(__file__).resolve().parents[3]
MAKE_ENGINE = ROOT / "scripts" / "make_engine.sh"


def _script_path(path: Path) -> str:
    """``path`` for make_engine.sh, which runs from the project root (inside the image: mounted at /workspace)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def build_engines(model_dir: Path, profile_name: str, out: Path) -> Path:
    """Step 2: make_engine.sh; returns OUT/repository."""
    log = out / "logs" / "make_engine.log"
    profile = _script_path(Path(profile_name)) if profile_name.endswith((".yaml", ".yml")) else profile_name
    command = [str(MAKE_ENGINE), str(model_dir.resolve()), profile, _script_path(out)]
    status, tail = run_logged(command, log, cwd=ROOT)
    if status != 0:
        raise StepFailed(
            f"scripts/make_engine.sh exited with status {status}; its last lines:\n{tail}\n"
            f"(full log: {log}; the first error above it is the cause)"
        )
    repository = out / "repository"
    problems = repository_problems(repository)
    if problems:
        raise StepFailed(f"make_engine.sh finished but the repository is not servable: {'; '.join(problems)}")
    return repository
