"""Step 2 of ``make gpu-check``: ``make_engine.sh`` builds the FP8 checkpoint, the engines and the repository.

Nothing here needs the source tree. ``make_engine.sh`` runs from a tree laid out as the source tree
(``scripts/``, ``requirements/``, ``build/``): it puts ``build/`` on ``PYTHONPATH`` and, without a local
``trtllm-build``, mounts the tree into the NGC image. This step writes that tree to ``OUT/make-engine/``
afresh each run: the script and the constraints file from this package's data (``data/``; in the source
tree, links to ``scripts/make_engine.sh`` and ``requirements/constraints.txt``), the packages the build
imports from wherever Python finds them (this checkout or a site-packages), and a profile given as a
``.yaml`` file.
"""

from __future__ import annotations

import shutil
from importlib.resources import as_file, files
from pathlib import Path

from nemo_ops.gpu_check.commands import run_logged
from nemo_ops.gpu_check.preflight import repository_problems
from nemo_ops.launcher import package_dirs
from nemo_ops.steps import StepFailed

# What nemo-build checkpoint / engine / repository import: the runtime verifies the checkpoint, the protocol
# tokenizes the calibration text and renders chats.
BUILD_PACKAGES = ("nemo_build", "nemo_runtime", "nemo_protocol")
TREE_NAME = "make-engine"
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc")


def _copy_data(name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with as_file(files("nemo_ops.gpu_check") / "data" / name) as source:
        shutil.copyfile(source, dest)


def stage_tree(out: Path, profile_name: str) -> tuple[Path, str]:
    """``OUT/make-engine/``, what make_engine.sh runs from, and the profile argument to give it."""
    tree = out.resolve() / TREE_NAME
    shutil.rmtree(tree, ignore_errors=True)
    _copy_data("make_engine.sh", tree / "scripts" / "make_engine.sh")
    _copy_data("constraints.txt", tree / "requirements" / "constraints.txt")
    for name, source in package_dirs(BUILD_PACKAGES).items():
        # symlinks=False: the templates (a link in the source tree) are copied, so the tree stands on its own
        shutil.copytree(source, tree / "build" / name, symlinks=False, ignore=_SKIPPED)
    profile = profile_name
    if profile_name.endswith((".yaml", ".yml")):
        copied = tree / "profiles" / Path(profile_name).name
        copied.parent.mkdir()
        shutil.copyfile(profile_name, copied)
        profile = str(copied.relative_to(tree))  # the script resolves it from the tree (inside the image too)
    return tree, profile


def build_engines(model_dir: Path, profile_name: str, out: Path) -> Path:
    """Step 2: make_engine.sh; returns OUT/repository."""
    log = out / "logs" / "make_engine.log"
    tree, profile = stage_tree(out, profile_name)
    command = ["bash", str(tree / "scripts" / "make_engine.sh"), str(model_dir.resolve()), profile, str(out.resolve())]
    status, tail = run_logged(command, log, cwd=tree)
    if status != 0:
        raise StepFailed(
            f"make_engine.sh exited with status {status}; its last lines:\n{tail}\n"
            f"(full log: {log}; the first error above it is the cause)"
        )
    repository = out / "repository"
    problems = repository_problems(repository)
    if problems:
        raise StepFailed(f"make_engine.sh finished but the repository is not servable: {'; '.join(problems)}")
    return repository
