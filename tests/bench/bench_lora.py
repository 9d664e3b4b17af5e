"""LoRA on the CPU reference runtime: decode tokens/s of a batch of 8 with no adapter, one adapter for every request,
and 4 adapters mixed in the batch, side by side; and what the first request to an adapter costs (reading the PEFT
files and converting them to TensorRT-LLM's layout, then loading the engine's cache from the sent weights) against
a request whose adapter the engine holds.

Adapters: rank 8 on q, k, v, o, gate, up and down of every layer, random weights written as PEFT files (the rate
does not depend on what an adapter learned).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from nemo_chat_core.engine_tensors import LoraInputs
from nemo_chat_core.lora import HF_MODULES, BaseShapes, LoraAdapter, read_adapter
from nemo_protocol.tekken import Tekkenizer, default_tekken_path
from nemo_runtime.lora import RuntimeAdapter
from nemo_runtime.scheduler import ReferenceRuntime, base_shapes
from tests.bench.timing import markdown_table
from tests.reliability.servers import tiny_checkpoint

BATCH = 8
DECODE_TOKENS = 48
RANK = 8
REPEATS = 5
MIXES = {"no adapter": 0, "1 adapter": 1, "4 adapters mixed": 4}


def write_peft_adapter(directory: Path, base: BaseShapes, seed: int) -> Path:
    """A PEFT adapter directory of rank RANK on every served module, random weights."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(base.num_layers):
        for hf_module, module in HF_MODULES.items():
            in_dim, out_dim = base.module_dims(module)
            group = "self_attn" if hf_module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{group}.{hf_module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.normal(0, 0.02, (RANK, in_dim)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(0, 0.02, (out_dim, RANK)).astype(np.float32)
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": 2 * RANK, "target_modules": list(HF_MODULES)}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def _decode_tokens_per_s(runtime: ReferenceRuntime, prompt: list[int], adapters: list[RuntimeAdapter | None]) -> float:
    for index in range(BATCH):
        runtime.add_request(str(index), prompt, max_new_tokens=DECODE_TOKENS, adapter=adapters[index % len(adapters)])
    runtime.step()  # prefill: not part of the decode rate
    started, produced = time.perf_counter(), 0
    while runtime.has_work():
        produced += sum(len(output.new_token_ids) for output in runtime.step())
    return produced / (time.perf_counter() - started)


def _first_request_ms(runtime: ReferenceRuntime, directory: Path, name: str) -> dict[str, float]:
    """Milliseconds to read and convert the adapter, to load the cache from its weights, to find it cached."""
    started = time.perf_counter()
    adapter: LoraAdapter = read_adapter(directory, base_shapes(runtime.model), 64, name)
    read = time.perf_counter()
    runtime.lora.resolve(LoraInputs(adapter.task_id, adapter.weights, adapter.config))
    loaded = time.perf_counter()
    runtime.lora.resolve(LoraInputs(adapter.task_id))
    cached = time.perf_counter()
    return {
        "read_convert_ms": 1000 * (read - started),
        "cache_load_ms": 1000 * (loaded - read),
        "cached_ms": 1000 * (cached - loaded),
    }


def run() -> dict[str, Any]:
    tokenizer = Tekkenizer.from_file(default_tekken_path())
    prompt = [tokenizer.bos_id, tokenizer.control_id("[INST]"), *tokenizer.encode("What is the capital of France?"), 4]
    runtime = ReferenceRuntime.from_checkpoint(tiny_checkpoint(), max_batch_size=BATCH)
    base = base_shapes(runtime.model)
    with tempfile.TemporaryDirectory() as tmp:
        directories = [write_peft_adapter(Path(tmp) / f"a{i}", base, i) for i in range(4)]
        costs = [_first_request_ms(runtime, directory, directory.name) for directory in directories]
        size_kib = (directories[0] / "adapter_model.safetensors").stat().st_size / 1024
        adapters = [runtime.lora.resolve(LoraInputs(read_adapter(d, base, 64).task_id)) for d in directories]
    mixes: dict[str, list[RuntimeAdapter | None]] = {
        "no adapter": [None],
        "1 adapter": adapters[:1],
        "4 adapters mixed": list(adapters),
    }
    samples: dict[str, list[float]] = {name: [] for name in mixes}
    for _ in range(REPEATS):  # alternate, so that every mix sees the same machine
        for name, mix in mixes.items():
            samples[name].append(_decode_tokens_per_s(runtime, prompt, mix))
    rates = {name: statistics.median(values) for name, values in samples.items()}
    rows = [[name, round(rate), f"{100 * (1 - rate / rates['no adapter']):.1f} %"] for name, rate in rates.items()]
    first = {key: statistics.median(cost[key] for cost in costs) for key in costs[0]}
    markdown = "\n\n".join(
        [
            f"Reference runtime, FP8 checkpoint of the trained tiny model, batch {BATCH}, {DECODE_TOKENS} decode steps "
            f"per request, median of {REPEATS} alternating runs. Adapters: rank {RANK} on q, k, v, o, gate, up and "
            f"down of every layer ({size_kib:.0f} KiB of PEFT weights each). `python -m tests.bench.run bench_lora` "
            "runs it alone.",
            markdown_table(["decode tokens/s", f"batch {BATCH}", "slower than no adapter"], rows),
            "The first request to an adapter (median of 4 adapters): the sender reads and converts the PEFT files, "
            "the engine misses its cache, and the request goes again with the weights, which the engine loads:",
            markdown_table(
                ["step", "ms"],
                [
                    ["read + convert (sender)", round(first["read_convert_ms"], 2)],
                    ["cache load from the sent weights (engine)", round(first["cache_load_ms"], 2)],
                    ["cached lookup (every later request)", round(first["cached_ms"], 4)],
                ],
            ),
        ]
    )
    return {
        "title": "LoRA adapters (CPU reference runtime)",
        "markdown": markdown,
        "data": {"rates": rates, "first": first},
    }


if __name__ == "__main__":
    print(run()["markdown"])
