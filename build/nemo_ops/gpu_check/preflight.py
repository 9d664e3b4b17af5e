"""Step 1 of ``make gpu-check``: everything about this host that would fail a later step, found at once.

The build's own judgement (GPU model and compute capability for a profile, the pinned TensorRT-LLM, disk) is
:mod:`nemo_build.preflight`'s, which ``nemo-build engine`` runs too; this module adds what the whole check
needs: the model directory, the driver, who builds the engines (a local trtllm-build or docker) and docker
itself, and whether a given repository can be served here.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from nemo_build.errors import BuildError
from nemo_build.preflight import (
    DISK_MARGIN_BYTES,
    NGC_IMAGE,
    PINNED_TRTLLM,
    Gpu,
    disk_problems,
    engine_disk_bytes,
    gpu_problems,
    probe_machine,
    query_gpus,
    trtllm_problems,
)
from nemo_build.profiles import Profile, load_profile
from nemo_ops.launcher import ServeError, repository_manifest
from nemo_ops.steps import StepFailed

# An FP8 checkpoint of NeMo 12B is ~0.55 of the bf16 weights (embedding and lm_head stay bf16).
CHECKPOINT_FRACTION = {"fp8": 0.6, "bf16": 1.0}
LOCAL_BUILDER = "local trtllm-build"


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


def repository_problems(repository: Path) -> list[str]:
    """Why ``repository`` cannot be served as it is; for GPU ones, that its engine directory exists here."""
    try:
        manifest = repository_manifest(repository)
    except ServeError as error:
        return [str(error)]
    if manifest.target == "gpu":
        engine = manifest.model_dir
        if not (engine / "config.json").is_file():
            return [
                f"{repository} serves the engine directory {engine}, which does not exist on this machine "
                "(rendered on another machine or inside a container?): render the repository where it is served"
            ]
    return []


def engine_builder(*, build: bool) -> str | None:
    """Who builds the engines: a local trtllm-build, else make_engine.sh's docker run of the NGC image."""
    if not build:
        return None
    return LOCAL_BUILDER if shutil.which("trtllm-build") else NGC_IMAGE


def trtllm_version(builder: str | None) -> str | None:
    """The TensorRT-LLM that builds (or, not building, serves): the pinned image's, or the local ``python3``'s."""
    local = builder == LOCAL_BUILDER or (builder is None and shutil.which("tritonserver") is not None)
    return python3_package_version("tensorrt_llm") if local else PINNED_TRTLLM


def tool_problems(builder: str | None) -> list[str]:
    """Docker, when building (no trtllm-build) or serving (no tritonserver) needs it."""
    needs = [what for what, needed in (("build the engines", builder == NGC_IMAGE),
                                       ("serve them", shutil.which("tritonserver") is None)) if needed]  # fmt: skip
    why = docker_problem() if needs else None
    if why is None:
        return []
    missing = ", ".join(n for n in ("trtllm-build", "tritonserver") if shutil.which(n) is None)
    return [
        f"{why}; with no {missing} on PATH, docker is what runs {NGC_IMAGE} to {' and '.join(needs)}: install "
        "docker with the NVIDIA container toolkit (daemon running, your user in the docker group), or run inside "
        "that image"
    ]


def build_disk_bytes(model_dir: Path, profile: Profile) -> int:
    """The free disk make_engine.sh needs in OUT: the checkpoint it writes first, then the engines built from it."""
    weights = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    checkpoint = int(weights * CHECKPOINT_FRACTION[profile.precision])
    return checkpoint + engine_disk_bytes(checkpoint)


def preflight(model_dir: Path, profile_name: str, out: Path, repository: Path | None) -> tuple[Facts, Profile]:
    """Step 1: everything that would fail later, all at once. ``repository`` set means: do not build."""
    build = repository is None
    problems: list[str] = []
    machine = probe_machine(out)
    driver, memory = probe_driver()
    for gpu in machine.gpus:
        cap = ".".join(map(str, gpu.compute_capability))
        print(f"  GPU: {gpu.name}, compute capability {cap}, driver {driver}, {memory}")
    builder = engine_builder(build=build)
    version = trtllm_version(builder)
    profile: Profile | None = None
    try:
        profile = load_profile(profile_name)
        print(f"  profile: {profile.name} ({profile.gpu}, {profile.precision}, KV {profile.kv_cache}, TP {profile.tp})")
    except BuildError as error:
        problems.append(str(error))
    if profile is not None:
        # make_engine.sh exports the checkpoint the profile expects, so only the machine is judged here.
        problems += gpu_problems(machine, profile)
        if builder == LOCAL_BUILDER:  # make_engine.sh runs python3: its TensorRT-LLM builds (the image's is pinned)
            problems += trtllm_problems(replace(machine, trtllm_version=version))
        problems += disk_problems(machine, build_disk_bytes(model_dir, profile) if build else DISK_MARGIN_BYTES)
    elif not machine.gpus:
        problems.append("no NVIDIA GPU found (nvidia-smi is missing or lists none): run this on the GPU host")
    problems += model_dir_problems(model_dir, need_weights=build)
    problems += tool_problems(builder)
    if repository is not None:
        problems += repository_problems(repository)
    if problems:
        hint = "\n  (Without a GPU, `make demo` runs the same stack on CPU.)" if not machine.gpus else ""
        raise StepFailed(f"{len(problems)} problem(s):\n  - " + "\n  - ".join(problems) + hint)
    assert profile is not None
    print(f"  model: {model_dir}")
    print(f"  engines built by: {builder or 'not built (--skip-build)'}; TensorRT-LLM {version}")
    return Facts(machine.gpus, driver, memory, builder, version), profile


def profile_or_none(name: str) -> Profile | None:
    try:
        return load_profile(name)
    except BuildError:
        return None


def gpu_facts() -> Facts:
    """What the report records when preflight is skipped."""
    driver, memory = probe_driver()
    return Facts(probe_machine(Path.cwd()).gpus, driver, memory, None, trtllm_version(None))
