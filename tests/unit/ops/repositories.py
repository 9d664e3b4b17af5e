"""A rendered repository as far as nemo-serve and gpu-check's preflight read one: its manifest and a
tensorrt_llm model folder, no model to load (for tests that only decide, never start Triton)."""

from __future__ import annotations

from pathlib import Path

from nemo_build.repository import RepositorySettings, write_repository_manifest


def manifest_only_repository(repo: Path, target: str, model_dir: Path) -> Path:
    (repo / "tensorrt_llm").mkdir(parents=True)
    backend = "tensorrtllm" if target == "gpu" else "python"
    (repo / "tensorrt_llm" / "config.pbtxt").write_text(f'backend: "{backend}"\n')
    settings = RepositorySettings(target=target, model_dir=model_dir, max_batch_size=1, max_input_len=1, max_seq_len=2)
    write_repository_manifest(repo, settings, ["tensorrt_llm"])
    return repo
