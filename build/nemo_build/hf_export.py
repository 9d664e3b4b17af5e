"""Check ModelOpt's unified Hugging Face export (``--format hf``) against the model it came from.

The export's ``config.json`` is the source's with a ``quantization_config`` added: every field that changes the
numerics must carry over exactly (``rope_theta``, ``head_dim``, ...). ``hf_quant_config.json`` (what TensorRT-LLM's
PyTorch backend reads first) must name ModelOpt as producer and the precisions asked for, and keep ``lm_head``
unquantized. The tensors themselves are judged by executing them (nemo_build.verify).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nemo_build.errors import BuildError
from nemo_build.source import head_dim_of

QUANT_CONFIG_FILE = "hf_quant_config.json"
NUMERIC_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "rms_norm_eps", "rope_theta", "max_position_embeddings", "hidden_act",
)  # fmt: skip


def export_mismatches(
    export_dir: Path, source: dict[str, Any], quant_algo: str | None, kv_cache_quant_algo: str | None
) -> list[str]:
    """Human-readable differences; empty when the export is faithful."""
    exported = json.loads((export_dir / "config.json").read_text())
    problems = [
        f"config.json {name} is {exported.get(name)!r}, the source has {source.get(name)!r}"
        for name in NUMERIC_FIELDS
        if exported.get(name) != source.get(name)
    ]
    if head_dim_of(exported) != head_dim_of(source):
        problems.append(f"config.json head_dim is {head_dim_of(exported)}, the source has {head_dim_of(source)}")
    quantized = quant_algo is not None or kv_cache_quant_algo is not None
    path = export_dir / QUANT_CONFIG_FILE
    if not path.is_file():  # ModelOpt writes one (naming no algorithm) for an unquantized export too
        return [*problems, f"{QUANT_CONFIG_FILE} is missing"] if quantized else problems
    raw = json.loads(path.read_text())
    quantization = raw.get("quantization") or {}
    if (raw.get("producer") or {}).get("name") != "modelopt":
        problems.append(f"{QUANT_CONFIG_FILE} producer is {raw.get('producer')!r}, expected modelopt")
    for key, expected in (("quant_algo", quant_algo), ("kv_cache_quant_algo", kv_cache_quant_algo)):
        if quantization.get(key) != expected:
            problems.append(
                f"{QUANT_CONFIG_FILE} quantization.{key} is {quantization.get(key)!r}, requested {expected!r}"
            )
    if quant_algo is not None and "lm_head" not in (quantization.get("exclude_modules") or []):
        problems.append(f"{QUANT_CONFIG_FILE} quantizes lm_head (exclude_modules lacks it)")
    return problems


def check_export(
    export_dir: Path, source: dict[str, Any], quant_algo: str | None, kv_cache_quant_algo: str | None
) -> None:
    problems = export_mismatches(export_dir, source, quant_algo, kv_cache_quant_algo)
    if problems:
        raise BuildError(
            "the exported Hugging Face checkpoint does not match the source model; refusing to finish:\n  - "
            + "\n  - ".join(problems)
        )
