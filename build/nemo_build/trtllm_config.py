"""Check an exported TensorRT-LLM checkpoint ``config.json`` against the Hugging Face config it came from.

Every field that changes the numerics must carry over exactly. (With transformers 5.x, for instance,
ModelOpt's export silently drops ``rotary_base`` and TensorRT-LLM falls back to 10000.)
"""

from __future__ import annotations

import math
from typing import Any

from nemo_build.errors import BuildError
from nemo_build.source import head_dim_of

_MISSING = object()


def _hf_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint field name → the value the HF config implies for it."""
    return {
        "rotary_base": float(hf.get("rope_theta", 10000.0)),
        "head_size": head_dim_of(hf),
        "norm_epsilon": float(hf["rms_norm_eps"]),
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["hidden_size"],
        "num_attention_heads": hf["num_attention_heads"],
        "num_key_value_heads": hf.get("num_key_value_heads", hf["num_attention_heads"]),
        "num_hidden_layers": hf["num_hidden_layers"],
        "intermediate_size": hf["intermediate_size"],
        "max_position_embeddings": hf["max_position_embeddings"],
        "hidden_act": hf["hidden_act"],
        "position_embedding_type": "rope_gpt_neox",
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def config_mismatches(
    checkpoint: dict[str, Any],
    hf: dict[str, Any],
    tp: int,
    quant_algo: str | None,
    kv_cache_quant_algo: str | None,
) -> list[str]:
    """Human-readable differences; empty when the checkpoint config is faithful."""
    problems = []
    for name, expected in _hf_fields(hf).items():
        got = checkpoint.get(name, _MISSING)
        if got is _MISSING:
            problems.append(f"{name} is missing (expected {expected!r})")
        elif not _same(got, expected):
            problems.append(f"{name} is {got!r}, the Hugging Face config implies {expected!r}")
    mapping = checkpoint.get("mapping") or {}
    if mapping.get("tp_size") != tp:
        problems.append(f"mapping.tp_size is {mapping.get('tp_size')!r}, requested {tp}")
    quant = checkpoint.get("quantization") or {}
    if quant.get("quant_algo") != quant_algo:
        problems.append(f"quantization.quant_algo is {quant.get('quant_algo')!r}, requested {quant_algo!r}")
    if quant.get("kv_cache_quant_algo") != kv_cache_quant_algo:
        problems.append(
            f"quantization.kv_cache_quant_algo is {quant.get('kv_cache_quant_algo')!r}, "
            f"requested {kv_cache_quant_algo!r}"
        )
    return problems


def check_config(
    checkpoint: dict[str, Any],
    hf: dict[str, Any],
    tp: int,
    quant_algo: str | None,
    kv_cache_quant_algo: str | None,
) -> None:
    problems = config_mismatches(checkpoint, hf, tp, quant_algo, kv_cache_quant_algo)
    if problems:
        raise BuildError(
            "the exported checkpoint config.json does not match the source model; refusing to finish:\n  - "
            + "\n  - ".join(problems)
        )
