"""Checks before ``trtllm-build`` spends minutes: GPU, compute capability, TensorRT-LLM, TP, precision, disk.

``probe_machine`` reads the facts (``nvidia-smi``, installed packages, free disk); ``preflight_problems``
judges them against a profile and a checkpoint, so the judgement is testable on any machine. It is made of
``gpu_problems``, ``trtllm_problems``, ``checkpoint_problems`` and ``disk_problems``, for a caller to which
only some of them apply.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # profiles need pyyaml, which serving a repository does not
    from nemo_build.profiles import Profile

PINNED_TRTLLM = "1.2.1"
NGC_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)
# Engines plus TensorRT's scratch: room for about the checkpoint's size again, with margin.
DISK_FACTOR = 1.5
DISK_MARGIN_BYTES = 2 << 30


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int]


@dataclass(frozen=True)
class Machine:
    gpus: tuple[Gpu, ...]
    trtllm_version: str | None
    tensorrt_version: str | None
    trtllm_build_on_path: bool
    free_disk_bytes: int


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def installed_trtllm_version() -> str | None:
    return _package_version("tensorrt_llm") or _package_version("tensorrt-llm")


def query_gpus(*fields: str) -> list[str]:
    """``nvidia-smi --query-gpu=FIELDS`` output, one CSV line per GPU; empty when there is no NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return out.strip().splitlines()


def probe_gpus() -> tuple[Gpu, ...]:
    """The GPUs ``nvidia-smi`` reports; empty when there is no NVIDIA driver."""
    gpus = []
    for line in query_gpus("name", "compute_cap"):
        name, _, cap = line.rpartition(",")
        major, _, minor = cap.strip().partition(".")
        if major.isdigit() and minor.isdigit():
            gpus.append(Gpu(name.strip(), (int(major), int(minor))))
    return tuple(gpus)


def probe_machine(output_dir: Path) -> Machine:
    existing = Path(output_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return Machine(
        gpus=probe_gpus(),
        trtllm_version=installed_trtllm_version(),
        tensorrt_version=_package_version("tensorrt"),
        trtllm_build_on_path=shutil.which("trtllm-build") is not None,
        free_disk_bytes=shutil.disk_usage(existing).free,
    )


def gpu_problems(machine: Machine, profile: Profile) -> list[str]:
    """A GPU, of the model ``profile`` targets, that runs its precision (FP8 needs compute capability 8.9+)."""
    if not machine.gpus:
        return [
            "no NVIDIA GPU found (nvidia-smi is missing or lists none): engines are compiled on the GPU "
            f"model that will serve them; run on a {profile.gpu} host"
        ]
    problems = []
    gpu = machine.gpus[0]
    if profile.gpu.lower() not in gpu.name.lower():
        problems.append(
            f"profile {profile.name} targets {profile.gpu} but this machine has {gpu.name}; engines only run on "
            "the GPU model they were built on: build on the serving GPU type, or pick a profile for this one"
        )
    if profile.precision == "fp8" and gpu.compute_capability < FP8_MIN_COMPUTE_CAPABILITY:
        cap = ".".join(map(str, gpu.compute_capability))
        problems.append(
            f"{gpu.name} has compute capability {cap}; FP8 needs 8.9 or newer (Ada, Hopper, Blackwell): "
            "use a bf16 profile (e.g. a100-bf16-tp2) with a --quant bf16 checkpoint"
        )
    return problems


def trtllm_problems(machine: Machine) -> list[str]:
    """TensorRT-LLM installed with its trtllm-build, at the pinned version."""
    if machine.trtllm_version is None or not machine.trtllm_build_on_path:
        return [
            f"TensorRT-LLM is not installed here (no tensorrt_llm package or no trtllm-build on PATH): run inside "
            f"{NGC_IMAGE} (`make engine` does this when docker is available)"
        ]
    if machine.trtllm_version != PINNED_TRTLLM:
        return [
            f"TensorRT-LLM {machine.trtllm_version} is installed but this project pins {PINNED_TRTLLM} "
            f"(the {NGC_IMAGE} image): engines and the serving backend must come from the same version"
        ]
    return []


def checkpoint_problems(profile: Profile, checkpoint_config: dict[str, Any]) -> list[str]:
    """The checkpoint's TP size, weight precision and KV cache are the ones ``profile`` expects."""
    problems = []
    mapping = checkpoint_config.get("mapping") or {}
    tp = mapping.get("tp_size", 1)
    if tp != profile.tp:
        problems.append(
            f"the checkpoint has TP {tp} but profile {profile.name} needs TP {profile.tp}: "
            f"re-export with `nemo-build checkpoint --tp {profile.tp}` or pick a TP {tp} profile"
        )
    quant = checkpoint_config.get("quantization") or {}
    precision = "fp8" if quant.get("quant_algo") == "FP8" else "bf16"
    kv_cache = "fp8" if quant.get("kv_cache_quant_algo") == "FP8" else "bf16"
    if (precision, kv_cache) != (profile.precision, profile.kv_cache):
        problems.append(
            f"the checkpoint has {precision} weights and a {kv_cache} KV cache but profile {profile.name} "
            f"expects {profile.precision} / {profile.kv_cache}: re-export with "
            f"`nemo-build checkpoint --quant {profile.precision} --kv-cache {profile.kv_cache}`"
        )
    return problems


def engine_disk_bytes(checkpoint_bytes: int) -> int:
    """The free disk building engines from a checkpoint of ``checkpoint_bytes`` needs."""
    return int(checkpoint_bytes * DISK_FACTOR) + DISK_MARGIN_BYTES


def disk_problems(machine: Machine, needed_bytes: int) -> list[str]:
    """At least ``needed_bytes`` free where the engines go."""
    if machine.free_disk_bytes >= needed_bytes:
        return []
    return [
        f"only {machine.free_disk_bytes / 2**30:.1f} GiB free where the engines go; the build needs about "
        f"{needed_bytes / 2**30:.1f} GiB: free space or choose another --out"
    ]


def preflight_problems(
    machine: Machine, profile: Profile, checkpoint_config: dict[str, Any], checkpoint_bytes: int
) -> list[str]:
    """Everything that would make the build fail or produce the wrong engine, each with what to do."""
    return (
        gpu_problems(machine, profile)
        + trtllm_problems(machine)
        + checkpoint_problems(profile, checkpoint_config)
        + disk_problems(machine, engine_disk_bytes(checkpoint_bytes))
    )
