"""Step 1 of ``make gpu-check``: everything about this host that would fail a later step, found at once.

The build's own judgement (GPU model and compute capability for a profile, the pinned TensorRT-LLM, disk) is
:mod:`nemo_build.preflight`'s, which ``nemo-build engine`` runs too; this module adds what the whole check
needs: the model directory, the driver, who builds (a local toolchain or docker) and docker itself, and whether a
given repository can be served here. What the build needs depends on the profile's runtime: the ``engine`` runtime
builds with ``trtllm-build`` at the pinned TensorRT-LLM; the ``pytorch`` runtime builds no engine, only the Hugging
Face FP8 checkpoint and the repository, and serves with the ``tensorrt_llm`` Python package's LLM API (a line
checked against upstream: 1.2 or newer).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from nemo_build.errors import BuildError
from nemo_build.preflight import (
    DISK_MARGIN_BYTES,
    NGC_IMAGE,
    PINNED_TRTLLM,
    Gpu,
    Machine,
    disk_problems,
    engine_disk_bytes,
    gpu_problems,
    probe_machine,
    query_gpus,
    trtllm_problems,
)
from nemo_build.profiles import Profile, load_profile
from nemo_ops.gpu_check.plan import ProfileRun
from nemo_ops.launcher import ServeError, repository_manifest
from nemo_ops.steps import StepFailed

# An FP8 checkpoint of NeMo 12B is ~0.55 of the bf16 weights (embedding and lm_head stay bf16).
CHECKPOINT_FRACTION = {"fp8": 0.6, "bf16": 1.0}
LOCAL_BUILDER = "local trtllm-build"
LOCAL_LLM_API = "local tensorrt_llm (LLM API)"
# The oldest TensorRT-LLM line the pytorch runtime's LLM API names were checked against (tests/data/upstream).
OLDEST_LLM_API = (1, 2)


@dataclass(frozen=True)
class Facts:
    """What preflight learnt about the machine; the report records it."""

    gpus: tuple[Gpu, ...] = ()
    driver: str | None = None
    gpu_memory: str | None = None
    builder: str | None = None  # "local trtllm-build" or the NGC image
    trtllm_version: str | None = None


def probe_driver() -> tuple[str | None, str | None]:
    """(driver version, memory of the first GPU) as nvidia-smi reports them; (None, None) without one."""
    lines = query_gpus("driver_version", "memory.total")
    driver, _, memory = (lines[0] if lines else "").partition(",")
    return driver.strip() or None, memory.strip() or None


def python3_package_version(package: str) -> str | None:
    """The version of ``package`` in the ``python3`` on PATH (the interpreter make_engine.sh runs locally)."""
    python = shutil.which("python3")
    if python is None:
        return None
    script = (
        "import importlib.metadata as m, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try: print(m.version(name)); break\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    try:
        out = subprocess.run(
            [python, "-c", script, package, package.replace("_", "-")],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return None
    return out.strip() or None


def docker_problem() -> str | None:
    """Why docker cannot run the NGC image here, or None when its daemon answers."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    try:
        answer = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except (subprocess.SubprocessError, OSError) as error:
        return f"`docker info` failed ({error})"
    if answer.returncode != 0:
        last = (answer.stderr.strip().splitlines() or ["no message"])[-1]
        return f"docker is installed but its daemon does not answer (`docker info`: {last})"
    return None


def model_dir_problems(model_dir: Path, *, need_weights: bool) -> list[str]:
    if not model_dir.is_dir():
        return [f"MODEL_DIR {model_dir} is not a directory: pass the Hugging Face Mistral NeMo directory"]
    problems = []
    if not (model_dir / "config.json").is_file():
        problems.append(f"MODEL_DIR {model_dir} has no config.json: it is not a Hugging Face model directory")
    if not (model_dir / "tekken.json").is_file():
        problems.append(
            f"MODEL_DIR {model_dir} has no tekken.json (the Tekken tokenizer the repository serves): download the "
            "full model repository, e.g. `huggingface-cli download mistralai/Mistral-Nemo-Instruct-2407 "
            "--local-dir DIR`"
        )
    if need_weights and not any(model_dir.glob("*.safetensors")):
        problems.append(f"MODEL_DIR {model_dir} has no *.safetensors weights")
    return problems


# The repository target each runtime serves (nemo-build repository --target).
RUNTIME_TARGET = {"engine": "gpu", "pytorch": "pytorch"}


def repository_problems(repository: Path, runtime: str | None = None) -> list[str]:
    """Why ``repository`` cannot be served as it is: for GPU ones, that what it serves (the engine directory or the
    Hugging Face checkpoint) exists here; with ``runtime``, that it is that runtime's repository."""
    try:
        manifest = repository_manifest(repository)
    except ServeError as error:
        return [str(error)]
    problems = []
    if runtime is not None and manifest.target != RUNTIME_TARGET[runtime]:
        problems.append(
            f"{repository} is a --target {manifest.target} repository, not the {runtime} runtime's "
            f"(--target {RUNTIME_TARGET[runtime]}): pass the profile it was built with"
        )
    served = {"gpu": "engine directory", "pytorch": "Hugging Face checkpoint"}.get(manifest.target)
    if served is not None and not (manifest.model_dir / "config.json").is_file():
        problems.append(
            f"{repository} serves the {served} {manifest.model_dir}, which does not exist on this machine "
            "(rendered on another machine or inside a container?): render the repository where it is served"
        )
    return problems


def engine_builder(*, build: bool, runtime: str = "engine") -> str | None:
    """Who builds: for engines a local trtllm-build, for the pytorch runtime the ``python3`` on PATH when it has
    tensorrt_llm; else make_engine.sh's docker run of the NGC image. None when nothing is built."""
    if not build:
        return None
    if runtime == "pytorch":
        return LOCAL_LLM_API if python3_package_version("tensorrt_llm") else NGC_IMAGE
    return LOCAL_BUILDER if shutil.which("trtllm-build") else NGC_IMAGE


def trtllm_version(builder: str | None) -> str | None:
    """The TensorRT-LLM that builds (or, not building, serves): the pinned image's, or the local ``python3``'s."""
    local = builder in (LOCAL_BUILDER, LOCAL_LLM_API) or (builder is None and shutil.which("tritonserver") is not None)
    return python3_package_version("tensorrt_llm") if local else PINNED_TRTLLM


def llm_api_problems(version: str | None) -> list[str]:
    """The pytorch runtime's needs of the local TensorRT-LLM: installed, and a line the LLM API was checked for."""
    if version is None:
        return [
            f"the pytorch runtime needs the tensorrt_llm Python package (its LLM API); python3 on PATH has none: run "
            f"inside {NGC_IMAGE} (make_engine.sh does when docker is available) or `pip install tensorrt-llm`"
        ]
    parts = version.split(".")
    numbers = tuple(int(part) for part in parts[:2] if part.isdigit())
    if len(numbers) < 2 or numbers < OLDEST_LLM_API:
        oldest = ".".join(map(str, OLDEST_LLM_API))
        return [
            f"TensorRT-LLM {version} is installed; the pytorch runtime uses the LLM API as TensorRT-LLM {oldest} and "
            f"newer define it (checked against upstream): install {PINNED_TRTLLM} or newer"
        ]
    return []


def tool_problems(builder: str | None, runtime: str = "engine") -> list[str]:
    """Docker, when building (no local toolchain) or serving (no local Triton that runs the runtime) needs it."""
    serves_locally = shutil.which("tritonserver") is not None and (
        runtime == "engine" or python3_package_version("tensorrt_llm") is not None
    )
    needs = [what for what, needed in (("build", builder == NGC_IMAGE), ("serve", not serves_locally)) if needed]
    why = docker_problem() if needs else None
    if why is None:
        return []
    local = "trtllm-build and tritonserver" if runtime == "engine" else "tensorrt_llm (python3) and tritonserver"
    return [
        f"{why}; without {local} here, docker is what runs {NGC_IMAGE} to {' and '.join(needs)}: install "
        "docker with the NVIDIA container toolkit (daemon running, your user in the docker group), or run inside "
        "that image"
    ]


def build_disk_bytes(model_dir: Path, profile: Profile) -> int:
    """The free disk make_engine.sh needs in OUT: the checkpoint it writes first, then (engine runtime) the engines
    built from it."""
    weights = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    checkpoint = int(weights * CHECKPOINT_FRACTION[profile.precision])
    if profile.runtime == "pytorch":
        return checkpoint + DISK_MARGIN_BYTES
    return checkpoint + engine_disk_bytes(checkpoint)


def profile_problems(
    machine: Machine, model_dir: Path, profile: Profile, repository: Path | None
) -> tuple[list[str], str | None, str | None]:
    """What would fail building (``repository`` None) or serving one profile here, judged by what its runtime
    needs; with who builds and the TensorRT-LLM version that builds (or serves)."""
    build = repository is None
    builder = engine_builder(build=build, runtime=profile.runtime)
    version = trtllm_version(builder)
    # make_engine.sh exports the checkpoint the profile expects, so only the machine is judged here.
    problems = gpu_problems(machine, profile)
    if profile.runtime == "pytorch":
        if builder == LOCAL_LLM_API or (not build and version is not None):  # python3's LLM API builds or serves
            problems += llm_api_problems(version)
    elif builder == LOCAL_BUILDER:  # make_engine.sh runs python3: its TensorRT-LLM builds (the image's is pinned)
        problems += trtllm_problems(replace(machine, trtllm_version=version))
    problems += disk_problems(machine, build_disk_bytes(model_dir, profile) if build else DISK_MARGIN_BYTES)
    problems += tool_problems(builder, profile.runtime)
    if repository is not None:
        problems += repository_problems(repository, profile.runtime)
    return problems, builder, version


def preflight(
    model_dir: Path, runs: Sequence[ProfileRun], later_steps: Sequence[Callable[[Profile], list[str]]] = ()
) -> tuple[list[Facts], list[Profile]]:
    """Step 1: everything that would fail later, for every profile to run, all at once; per profile what was learnt
    and the profile. ``later_steps`` judge what the optional steps (accuracy, long context) need of a profile."""
    problems: list[str] = []
    machine = probe_machine(runs[0].out)
    driver, memory = probe_driver()
    for gpu in machine.gpus:
        cap = ".".join(map(str, gpu.compute_capability))
        print(f"  GPU: {gpu.name}, compute capability {cap}, driver {driver}, {memory}")
    facts: list[Facts] = []
    profiles: list[Profile] = []
    for run in runs:
        try:
            profile = load_profile(run.profile)
        except BuildError as error:
            problems.append(str(error))
            continue
        print(
            f"  profile: {profile.name} ({profile.runtime} runtime, {profile.gpu}, {profile.precision}, "
            f"KV {profile.kv_cache}, TP {profile.tp})"
        )
        found, builder, version = profile_problems(probe_machine(run.out), model_dir, profile, run.repository)
        found += [problem for judge in later_steps for problem in judge(profile)]
        problems += [f"{profile.name}: {problem}" if len(runs) > 1 else problem for problem in found]
        profiles.append(profile)
        facts.append(Facts(machine.gpus, driver, memory, builder, version))
    if not profiles and not machine.gpus:
        problems.append("no NVIDIA GPU found (nvidia-smi is missing or lists none): run this on the GPU host")
    problems += model_dir_problems(model_dir, need_weights=any(run.repository is None for run in runs))
    if problems:
        hint = "\n  (Without a GPU, `make demo` runs the same stack on CPU.)" if not machine.gpus else ""
        raise StepFailed(f"{len(problems)} problem(s):\n  - " + "\n  - ".join(problems) + hint)
    print(f"  model: {model_dir}")
    for profile, fact in zip(profiles, facts, strict=True):
        builder = fact.builder or "nobody (--skip-build)"
        print(f"  {profile.name}: built by {builder}; TensorRT-LLM {fact.trtllm_version}")
    return facts, profiles


def profile_or_none(name: str) -> Profile | None:
    try:
        return load_profile(name)
    except BuildError:
        return None


def gpu_facts() -> Facts:
    """What the report records when preflight is skipped."""
    driver, memory = probe_driver()
    return Facts(probe_machine(Path.cwd()).gpus, driver, memory, None, trtllm_version(None))
