"""Check a Hugging Face model directory before spending minutes on it.

Accepts ``MistralForCausalLM`` checkpoints (Mistral NeMo 12B Base / Instruct, and the tiny NeMo-shaped
test model). Other Mistral-family sizes pass with a warning; anything else is refused with a message
that says what was found and what is accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_build.errors import BuildError

ACCEPTED_ARCHITECTURES = ("MistralForCausalLM",)
ACCEPTED_DTYPES = ("bfloat16", "float16", "float32")

# Mistral NeMo 12B (Base and Instruct): the values the profiles and the serving side are sized for.
NEMO_12B = {
    "hidden_size": 5120,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 14336,
    "vocab_size": 131072,
    "rope_theta": 1_000_000.0,
}
# What every NeMo-shaped model (12B or the tiny test model) must share with it to serve with Tekken.
NEMO_VOCAB_SIZE = 131072


@dataclass(frozen=True)
class SourceModel:
    """A validated Hugging Face model directory."""

    path: Path
    config: dict[str, Any]
    tekken_path: Path
    dtype: str
    weight_files: tuple[Path, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def is_nemo_12b(self) -> bool:
        return all(self.config.get(k) == v for k, v in NEMO_12B.items())

    @property
    def head_dim(self) -> int:
        return head_dim_of(self.config)


def head_dim_of(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def load_source(model_dir: str | Path) -> SourceModel:
    """Validate ``model_dir`` and describe it; raises :class:`BuildError` with what to fix."""
    path = Path(model_dir)
    if not path.exists():
        raise BuildError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise BuildError(f"{path} is a file; --model-dir takes a Hugging Face model directory")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise BuildError(
            f"{path} is not a Hugging Face model directory (no config.json); expected the directory of "
            "mistralai/Mistral-Nemo-Base-2407 or -Instruct-2407, or one written by `nemo-build tiny-model`"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise BuildError(f"{config_path} is not valid JSON: {exc}") from exc

    architectures = config.get("architectures") or []
    if not any(a in ACCEPTED_ARCHITECTURES for a in architectures):
        raise BuildError(
            f"{path} holds a {architectures or 'model with no `architectures` field'}; accepted: "
            f"{', '.join(ACCEPTED_ARCHITECTURES)} (Mistral NeMo). ModelOpt needs `architectures` set to export."
        )
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    if dtype not in ACCEPTED_DTYPES:
        raise BuildError(f"{config_path}: torch_dtype {dtype or 'missing'!r}; accepted: {', '.join(ACCEPTED_DTYPES)}")

    tekken = path / "tekken.json"
    if not tekken.is_file():
        raise BuildError(
            f"{path} has no tekken.json; Mistral NeMo ships its Tekken tokenizer beside config.json "
            "and calibration, verification and serving all use it"
        )
    weight_files = _weight_files(path)
    warnings = tuple(_shape_warnings(config))
    return SourceModel(path, config, tekken, dtype, weight_files, warnings)


def _weight_files(path: Path) -> tuple[Path, ...]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise BuildError(f"{path} is incomplete: {index.name} lists {', '.join(missing)} which are missing")
        return tuple(path / n for n in names)
    single = path / "model.safetensors"
    if single.is_file():
        return (single,)
    raise BuildError(
        f"{path} has no safetensors weights (model.safetensors or model.safetensors.index.json + shards); "
        "PyTorch .bin checkpoints are not accepted"
    )


def _shape_warnings(config: dict[str, Any]) -> list[str]:
    if config.get("vocab_size") != NEMO_VOCAB_SIZE:
        raise BuildError(
            f"vocab_size is {config.get('vocab_size')}, but the Tekken tokenizer Mistral NeMo serves with "
            f"has {NEMO_VOCAB_SIZE} ids; this pipeline builds Mistral NeMo (and NeMo-shaped) models only"
        )
    warnings = []
    different = {k: (config.get(k), v) for k, v in NEMO_12B.items() if k != "head_dim" and config.get(k) != v}
    if head_dim_of(config) != NEMO_12B["head_dim"]:
        different["head_dim"] = (head_dim_of(config), NEMO_12B["head_dim"])
    if different:
        listed = ", ".join(f"{k}={got} (NeMo 12B: {want})" for k, (got, want) in different.items())
        warnings.append(f"not Mistral NeMo 12B dimensions: {listed}; building it anyway")
    window = config.get("sliding_window")
    if window is not None and window < int(config.get("max_position_embeddings", 0)):
        warnings.append(f"sliding_window={window} is set; TensorRT-LLM checkpoints exported here use full attention")
    return warnings
