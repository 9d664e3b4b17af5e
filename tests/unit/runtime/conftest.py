"""Checkpoints of the tiny models for the runtime tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_build.checkpoint import CheckpointOptions, build_checkpoint
from nemo_runtime.scheduler import ReferenceRuntime


@pytest.fixture(scope="session")
def bf16_checkpoint_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random tiny model exported unquantized at TP 1."""
    out = tmp_path_factory.mktemp("ckpt") / "bf16-tp1"
    build_checkpoint(
        tiny_model_dir, out, CheckpointOptions(quant="bf16", kv_cache="bf16", device="cpu", calib_data="shipped")
    )
    return out


@pytest.fixture()
def runtime(fp8_checkpoint_dir: Path) -> ReferenceRuntime:
    """A fresh runtime over the trained tiny model's FP8 checkpoint."""
    return ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir, max_batch_size=8)
