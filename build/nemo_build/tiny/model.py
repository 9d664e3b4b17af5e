"""A few-MB Hugging Face checkpoint shaped like Mistral NeMo where it matters, for tests and the demo.

Same as NeMo: ``MistralForCausalLM``, vocab 131072 (the Tekken ids), a head_dim that is not
hidden / heads, 4 query heads per KV head (NeMo: 32 / 8), rope_theta 1e6, 128k positions, bf16 safetensors shards
with an index, ``tekken.json`` beside them. Small: 2 layers, hidden 64. Deterministic from the seed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import MistralConfig, MistralForCausalLM

from nemo_build.atomic_dir import atomic_directory, refuse_to_overwrite
from nemo_build.errors import BuildError

TINY_CONFIG = {
    "architectures": ["MistralForCausalLM"],
    "vocab_size": 131072,
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 16,  # != 64 / 8, like NeMo's 128 != 5120 / 32
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 131072,  # the 128k context NeMo is made for
    "rms_norm_eps": 1e-5,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 11,
    "torch_dtype": "bfloat16",
}
SHARD_SIZE = "12MB"  # the 16 MB embedding and lm_head each get a shard: an index is always written


def tiny_config() -> MistralConfig:
    return MistralConfig(**TINY_CONFIG)


def random_tiny_model(seed: int) -> MistralForCausalLM:
    torch.manual_seed(seed)
    return MistralForCausalLM(tiny_config()).eval()


def save_model_dir(model: MistralForCausalLM, out_dir: Path, tekken_path: Path, force: bool) -> Path:
    """Write ``model`` in bf16 with ``tekken.json`` to ``out_dir`` (atomically: a crash leaves no half model)."""
    out_dir = Path(out_dir)
    refuse_to_overwrite(out_dir, force)
    if not Path(tekken_path).is_file():
        raise BuildError(f"Tekken file {tekken_path} does not exist")
    with atomic_directory(out_dir) as staging:
        bf16 = model.to(torch.bfloat16)  # type: ignore[arg-type]  # transformers wraps .to untyped
        bf16.save_pretrained(staging, max_shard_size=SHARD_SIZE)
        shutil.copyfile(tekken_path, staging / "tekken.json")
    return out_dir
