"""``nemo-build engine``: TensorRT-LLM checkpoint + profile → engines and a build manifest beside them.

The build manifest (``manifest.json`` beside the engines) records the checkpoint manifest, the profile,
the TensorRT-LLM / TensorRT versions and the GPU. `nemo-serve` calls :func:`check_engine_compatible` before
it starts Triton and refuses engines built for another GPU model or another TensorRT-LLM version.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nemo_build import manifest as mf
from nemo_build.errors import BuildError
from nemo_build.preflight import Machine, preflight_problems, probe_machine
from nemo_build.profiles import Profile


def checkpoint_size(checkpoint_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(checkpoint_dir).glob("rank*.safetensors"))


def read_checkpoint(checkpoint_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, manifest.json) of a checkpoint written by ``nemo-build checkpoint``."""
    checkpoint_dir = Path(checkpoint_dir)
    config_path = checkpoint_dir / "config.json"
    if not config_path.is_file():
        raise BuildError(f"{checkpoint_dir} is not a TensorRT-LLM checkpoint (no config.json)")
    manifest = mf.read_manifest(checkpoint_dir)
    if manifest is None:
        raise BuildError(
            f"{checkpoint_dir} has no manifest.json: build it with `nemo-build checkpoint` so the engine can be "
            "traced to its source"
        )
    return json.loads(config_path.read_text()), manifest


def build_inputs(checkpoint_manifest: dict[str, Any], profile: Profile, machine: Machine) -> dict[str, Any]:
    gpu = machine.gpus[0] if machine.gpus else None
    return {
        "checkpoint_files": checkpoint_manifest.get("files"),
        "checkpoint_inputs": checkpoint_manifest.get("inputs"),
        "profile": profile.as_dict(),
        "tensorrt_llm": machine.trtllm_version,
        "tensorrt": machine.tensorrt_version,
        "gpu": gpu.name if gpu else None,
        "compute_capability": ".".join(map(str, gpu.compute_capability)) if gpu else None,
    }


def build_engine(checkpoint_dir: Path, out_dir: Path, profile: Profile, machine: Machine | None = None) -> bool:
    """Preflight, run ``trtllm-build``, write the build manifest. Returns False when already up to date."""
    if profile.runtime != "engine":
        raise BuildError(
            f"profile {profile.name} is for the {profile.runtime} runtime, which serves the Hugging Face checkpoint "
            "without engines: `nemo-build checkpoint --format hf`, then `nemo-build repository --target pytorch "
            f"--profile {profile.name}` (`make engine PROFILE={profile.name}` runs both)"
        )
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    config, checkpoint_manifest = read_checkpoint(checkpoint_dir)
    machine = machine or probe_machine(out_dir)
    problems = preflight_problems(machine, profile, config, checkpoint_size(checkpoint_dir))
    if problems:
        raise BuildError("cannot build engines here:\n  - " + "\n  - ".join(problems))
    inputs = build_inputs(checkpoint_manifest, profile, machine)
    if mf.is_up_to_date(out_dir, inputs):
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / mf.MANIFEST_NAME).unlink(missing_ok=True)
    argv = profile.argv(checkpoint_dir, out_dir)
    print("running:", " ".join(argv), flush=True)
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        raise BuildError(f"trtllm-build failed with exit status {result.returncode} (its log is above)")
    files = [p.name for p in out_dir.iterdir() if p.is_file() and p.name != mf.MANIFEST_NAME]
    manifest = {
        "kind": "nemo-build engine",
        "inputs": inputs,
        "files": mf.hash_files(out_dir, files, desc="hashing engines"),
        "argv": argv,
        "checkpoint_manifest": checkpoint_manifest,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    mf.write_manifest(out_dir, manifest)
    return True


def check_engine_compatible(engine_dir: Path, gpu_name: str, trtllm_version: str | None) -> dict[str, Any]:
    """Refuse engines built for another GPU model or TensorRT-LLM version (None: not known, not checked).

    Returns the build manifest. `nemo-serve` calls this before it starts Triton on a GPU repository.
    """
    manifest = mf.read_manifest(Path(engine_dir))
    if manifest is None or manifest.get("kind") != "nemo-build engine":
        raise BuildError(f"{engine_dir} has no engine build manifest; build the engines with `nemo-build engine`")
    inputs = manifest["inputs"]
    problems = []
    if inputs.get("gpu") != gpu_name:
        problems.append(f"they were built on {inputs.get('gpu')}, this GPU is {gpu_name}")
    if trtllm_version is not None and inputs.get("tensorrt_llm") != trtllm_version:
        problems.append(f"they were built with TensorRT-LLM {inputs.get('tensorrt_llm')}, this is {trtllm_version}")
    if problems:
        raise BuildError(
            f"the engines in {engine_dir} cannot be served here: "
            + "; ".join(problems)
            + ". Rebuild them with `make engine` on this GPU type in the serving image."
        )
    return manifest


def check_pytorch_compatible(
    environment: dict[str, str | None] | None, repository: Path, gpu_name: str, trtllm_version: str | None
) -> str:
    """Refuse a pytorch repository rendered for another GPU model or TensorRT-LLM version (its manifest's
    `runtime_environment`; a value it lacks, e.g. rendered on a CPU host, or trtllm_version None, is not checked).

    Returns a note for the log. `nemo-serve` calls this before it starts Triton on a pytorch repository.
    """
    environment = environment or {}
    built_gpu, built_trtllm = environment.get("gpu"), environment.get("tensorrt_llm")
    problems, unchecked = [], []
    if built_gpu is None:
        unchecked.append("the GPU (rendered on a host without one)")
    elif built_gpu != gpu_name:
        problems.append(f"it was rendered on {built_gpu}, this GPU is {gpu_name}")
    if built_trtllm is None or trtllm_version is None:
        why = "not recorded" if built_trtllm is None else "unknown here"
        unchecked.append(f"the TensorRT-LLM version ({why})")
    elif built_trtllm != trtllm_version:
        problems.append(f"it was rendered for TensorRT-LLM {built_trtllm}, this is {trtllm_version}")
    if problems:
        raise BuildError(
            f"the pytorch repository {repository} cannot be served here: "
            + "; ".join(problems)
            + ". Re-render it with `make engine PROFILE=<a pytorch profile>` on this GPU type in the serving image."
        )
    gpu, trtllm = built_gpu or "an unknown GPU", built_trtllm or "unknown"
    done = f"pytorch repository rendered on {gpu} for TensorRT-LLM {trtllm}"
    return done + (": compatible" if not unchecked else f": not checked: {', '.join(unchecked)}")
