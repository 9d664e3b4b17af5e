"""What the GPU `pytorch` model imports of nemo_runtime is torch-free: it needs no CPU runtime code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nemo_runtime.batch_metrics import GAUGES, KV_CACHE_BLOCKS
from nemo_runtime.engine_state import KV_TOKENS_PER_BLOCK, BatcherStats


@pytest.mark.parametrize("module", ["nemo_runtime.engine_state", "nemo_runtime.batch_metrics", "nemo_runtime.llm_api"])
def test_importing_it_imports_neither_torch_nor_tensorrt_llm(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'tensorrt_llm') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def read(stats: BatcherStats) -> dict[str, float]:
    return {value: float(read(stats)) for value, read in GAUGES[(KV_CACHE_BLOCKS, "kv_cache_block_type")].items()}


def test_the_cpu_engines_block_figures_are_counted_and_reuse_nothing() -> None:
    stats = BatcherStats(running=2, waiting=0, max_batch_size=4, kv_blocks_used=3, kv_blocks_max=12)
    assert read(stats) == {
        "tokens_per": KV_TOKENS_PER_BLOCK,
        "max": 12,
        "used": 3,
        "free": 9,
        "reused": 0,
        "fraction": 0.25,
    }


def test_an_engine_with_a_block_manager_publishes_its_own_block_size_free_and_reused_blocks() -> None:
    stats = BatcherStats(
        running=2, waiting=1, max_batch_size=4, kv_blocks_used=3, kv_blocks_max=12,
        kv_tokens_per_block=32, kv_blocks_free=8, kv_blocks_reused=5,
    )  # fmt: skip
    assert read(stats) == {"tokens_per": 32, "max": 12, "used": 3, "free": 8, "reused": 5, "fraction": 0.25}
