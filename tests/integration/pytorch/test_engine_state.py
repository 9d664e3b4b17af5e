"""What only the `pytorch` variant shows: the repository it serves and the KV-cache figures it publishes, which come
from the LLM's iteration stats (`get_stats_async`: kvCacheStats, inflightBatchingStats) rather than being counted."""

from __future__ import annotations

import json
import time

from nemo_ops.launcher import TritonServer
from tests.integration.conftest import MAX_BATCH_SIZE, MAX_SEQ_LEN
from tests.integration.test_serving import batch_metrics, long_generation
from tests.integration.triton_calls import BatchMetrics, StreamingCall

__all__ = ["batch_metrics"]
TOKENS_PER_BLOCK = 32  # the repository's tokens_per_block (conftest), the executor's KV block size


def test_the_repository_is_the_pytorch_variant_on_modelopt_s_fp8_export(triton: TritonServer) -> None:
    manifest = triton.manifest
    assert triton.target == "pytorch" and manifest.settings["tokens_per_block"] == TOKENS_PER_BLOCK
    quantization = json.loads((manifest.model_dir / "hf_quant_config.json").read_text())["quantization"]
    assert quantization["quant_algo"] == quantization["kv_cache_quant_algo"] == "FP8"
    assert manifest.settings["kv_cache_dtype"] == "auto"  # the KV-cache precision is the export's
    assert (manifest.model_dir / "config.json").is_file() and "architectures" in (
        manifest.model_dir / "config.json"
    ).read_text()
    assert (triton.repository / "tensorrt_llm" / "hf_tokenizer" / "tokenizer.json").is_file()


def test_the_kv_cache_block_figures_are_the_executor_s_and_move_as_requests_run(
    url: str, batch_metrics: BatchMetrics
) -> None:
    batch_metrics.idle()
    calls = [StreamingCall(url, "tensorrt_llm", long_generation(MAX_SEQ_LEN - 8)) for _ in range(MAX_BATCH_SIZE)]
    for call in calls:
        assert call.next()
    busy = batch_metrics.wait_for(requests_running=MAX_BATCH_SIZE, requests_waiting=0)
    assert busy["kv_tokens_per_block"] == TOKENS_PER_BLOCK
    assert busy["kv_blocks_max"] == MAX_BATCH_SIZE * -(-MAX_SEQ_LEN // TOKENS_PER_BLOCK)
    start = busy["kv_cache_fraction"]
    assert start >= MAX_BATCH_SIZE / busy["kv_blocks_max"]
    deadline = time.monotonic() + 30
    while (now := batch_metrics.read())["kv_cache_fraction"] <= start:  # the sequences grow past their blocks
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    assert now["kv_cache_fraction"] == now["kv_blocks_used"] / now["kv_blocks_max"]
    for call in calls:
        call.cancel()
    done = batch_metrics.wait_for(requests_running=0, requests_waiting=0, requests_active=0, kv_blocks_used=0)
    assert done["kv_cache_fraction"] == 0
