"""Fixtures shared by the unit tests: the Tekken tokenizer and a small real reference runtime (random weights)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from nemo_protocol.tekken import Tekkenizer
from nemo_runtime.model import ReferenceModel
from nemo_runtime.scheduler import ReferenceRuntime
from nemo_runtime.weights import CheckpointConfig, Layer, Linear, Weights

VOCAB = 1024  # Tekken ids below 1024 are control tokens and single bytes: enough for the runtime tests


@pytest.fixture(scope="session")
def tok(tekken_path: Path) -> Tekkenizer:
    return Tekkenizer.from_file(tekken_path)


def _random_weights(seed: int) -> Weights:
    """A 2-layer Llama-layout model with random float32 weights (a real model, just untrained)."""
    generator = torch.Generator().manual_seed(seed)
    hidden, heads, kv_heads, head, ffn = 32, 4, 2, 8, 64

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.5

    config = CheckpointConfig.from_dict(
        {
            "architecture": "MistralForCausalLM",
            "dtype": "float32",
            "vocab_size": VOCAB,
            "hidden_size": hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_size": head,
            "intermediate_size": ffn,
            "norm_epsilon": 1e-5,
            "rotary_base": 1e6,
            "max_position_embeddings": 256,
            "hidden_act": "silu",
        }
    )
    layers = [
        Layer(
            input_norm=torch.ones(hidden),
            qkv=Linear(rand((heads + 2 * kv_heads) * head, hidden)),
            dense=Linear(rand(hidden, heads * head)),
            post_norm=torch.ones(hidden),
            fc=Linear(rand(ffn, hidden)),
            gate=Linear(rand(ffn, hidden)),
            proj=Linear(rand(hidden, ffn)),
            k_cache_scale=None,
            v_cache_scale=None,
        )
        for _ in range(2)
    ]
    return Weights(config, rand(VOCAB, hidden), layers, torch.ones(hidden), rand(VOCAB, hidden))


@pytest.fixture(scope="session")
def weights() -> Weights:
    return _random_weights(seed=0)


@pytest.fixture
def new_runtime(weights: Weights) -> Callable[..., ReferenceRuntime]:
    """A fresh runtime (own KV cache) over the shared weights."""

    def make(max_batch_size: int = 8) -> ReferenceRuntime:
        return ReferenceRuntime(ReferenceModel(weights), max_batch_size=max_batch_size)

    return make
