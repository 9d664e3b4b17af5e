"""Load a Hugging Face checkpoint, ModelOpt's unified FP8 export included, into the reference runtime's weights.

This is what TensorRT-LLM's PyTorch backend loads: ``config.json`` (``architectures``, ``head_dim``,
``rope_theta``, ...), the ``*.safetensors`` files, and for a ModelOpt FP8 export ``hf_quant_config.json``
(``quantization.quant_algo`` / ``kv_cache_quant_algo`` / ``exclude_modules``; TensorRT-LLM reads it before the
``quantization_config`` of ``config.json``). Each quantized linear layer stores an FP8 E4M3 ``weight`` with a float32
``weight_scale`` and ``input_scale``; an FP8 KV cache adds ``self_attn.k_proj.k_scale`` and ``v_proj.v_scale``.

Q, K and V (and gate / up) are dequantized one by one and fused as TensorRT-LLM fuses them; the fused layer's input
is quantized with the largest of the three input scales, as the PyTorch backend's fused loaders do (ModelOpt
calibrates them on the same input, so they are equal in practice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from nemo_runtime.weights import CheckpointConfig, CheckpointError, Layer, Linear, Weights

QUANT_CONFIG_FILE = "hf_quant_config.json"


def is_hf_checkpoint(checkpoint_dir: Path) -> bool:
    """A Hugging Face ``config.json`` names ``architectures`` (a TensorRT-LLM one, ``architecture``)."""
    path = checkpoint_dir / "config.json"
    return path.is_file() and "architectures" in json.loads(path.read_text())


def read_hf_config(checkpoint_dir: Path) -> CheckpointConfig:
    raw = json.loads((checkpoint_dir / "config.json").read_text())
    quant = _quantization(checkpoint_dir, raw)
    try:
        architectures = raw["architectures"]
        heads = int(raw["num_attention_heads"])
        return CheckpointConfig.from_dict(
            {
                "architecture": architectures[0] if architectures else "",
                "dtype": raw.get("dtype") or raw.get("torch_dtype") or "bfloat16",
                "vocab_size": raw["vocab_size"],
                "hidden_size": raw["hidden_size"],
                "num_hidden_layers": raw["num_hidden_layers"],
                "num_attention_heads": heads,
                "num_key_value_heads": raw.get("num_key_value_heads") or heads,
                "head_size": raw.get("head_dim") or int(raw["hidden_size"]) // heads,
                "intermediate_size": raw["intermediate_size"],
                "norm_epsilon": raw["rms_norm_eps"],
                "rotary_base": raw.get("rope_theta", 10000.0),
                "max_position_embeddings": raw["max_position_embeddings"],
                "hidden_act": raw["hidden_act"],
                "quantization": quant,
            }
        )
    except KeyError as exc:
        raise CheckpointError(f"{checkpoint_dir}/config.json lacks the field {exc.args[0]!r}") from exc


def _quantization(checkpoint_dir: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """``hf_quant_config.json``'s quantization, or the ``quantization_config`` of ``config.json`` (ModelOpt's)."""
    path = checkpoint_dir / QUANT_CONFIG_FILE
    if path.is_file():
        quantization = json.loads(path.read_text()).get("quantization")
        if not isinstance(quantization, dict):
            raise CheckpointError(f"{path} has no 'quantization' object")
        return quantization
    embedded = raw.get("quantization_config") or {}
    if embedded and embedded.get("quant_method") != "modelopt":
        raise CheckpointError(
            f"{checkpoint_dir}/config.json is quantized by {embedded.get('quant_method')!r}; the reference runtime "
            "executes ModelOpt FP8 exports (hf_quant_config.json) and unquantized checkpoints"
        )
    return {k: embedded.get(k) for k in ("quant_algo", "kv_cache_quant_algo") if embedded.get(k)}


def load_hf_weights(checkpoint_dir: Path) -> Weights:
    config = read_hf_config(checkpoint_dir)
    tensors = _HfTensors(checkpoint_dir)
    return Weights(
        config=config,
        embedding=tensors.get("model.embed_tokens.weight").float()[: config.vocab_size],
        layers=[tensors.layer(config, i) for i in range(config.num_layers)],
        final_norm=tensors.get("model.norm.weight").float(),
        lm_head=tensors.lm_head(checkpoint_dir)[: config.vocab_size],
    )


class _HfTensors:
    def __init__(self, checkpoint_dir: Path) -> None:
        files = sorted(checkpoint_dir.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{checkpoint_dir} holds no *.safetensors file")
        self.tensors: dict[str, torch.Tensor] = {}
        for path in files:
            with safe_open(str(path), framework="pt") as handle:
                self.tensors.update({name: handle.get_tensor(name) for name in handle.keys()})  # noqa: SIM118

    def get(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise CheckpointError(f"the checkpoint lacks the tensor {name!r}") from None

    def lm_head(self, checkpoint_dir: Path) -> torch.Tensor:
        if "lm_head.weight" not in self.tensors and json.loads((checkpoint_dir / "config.json").read_text()).get(
            "tie_word_embeddings"
        ):
            return self.get("model.embed_tokens.weight").float()
        return self.get("lm_head.weight").float()

    def scale(self, name: str) -> float | None:
        tensor = self.tensors.get(name)
        return None if tensor is None else float(tensor.float().reshape(-1)[0])

    def dequantized(self, prefix: str) -> torch.Tensor:
        weight = self.get(f"{prefix}.weight")
        if weight.dtype != torch.float8_e4m3fn:
            return weight.float()
        scale = self.scale(f"{prefix}.weight_scale")
        if scale is None:
            raise CheckpointError(f"FP8 tensor {prefix}.weight has no weight_scale")
        return weight.float() * scale

    def fused(self, prefixes: list[str]) -> Linear:
        """The layers' weights stacked (dim 0), their input quantized with the largest input scale."""
        scales = [self.scale(f"{prefix}.input_scale") for prefix in prefixes]
        present = [s for s in scales if s is not None]
        if present and len(present) != len(scales):
            raise CheckpointError(f"some of {', '.join(prefixes)} have an input_scale and some do not")
        weight = torch.cat([self.dequantized(prefix) for prefix in prefixes], dim=0)
        return Linear(weight, max(present) if present else None)

    def layer(self, config: CheckpointConfig, index: int) -> Layer:
        p = f"model.layers.{index}"
        attention, mlp = f"{p}.self_attn", f"{p}.mlp"
        fp8_kv = config.kv_cache_quant_algo == "FP8"
        k_scale = self.scale(f"{attention}.k_proj.k_scale") if fp8_kv else None
        v_scale = self.scale(f"{attention}.v_proj.v_scale") if fp8_kv else None
        if fp8_kv and (k_scale is None or v_scale is None):
            raise CheckpointError(f"FP8 KV cache checkpoint lacks {attention}.k_proj.k_scale / v_proj.v_scale")
        return Layer(
            input_norm=self.get(f"{p}.input_layernorm.weight").float(),
            qkv=self.fused([f"{attention}.q_proj", f"{attention}.k_proj", f"{attention}.v_proj"]),
            dense=self.fused([f"{attention}.o_proj"]),
            post_norm=self.get(f"{p}.post_attention_layernorm.weight").float(),
            fc=self.fused([f"{mlp}.gate_proj"]),
            gate=self.fused([f"{mlp}.up_proj"]),
            proj=self.fused([f"{mlp}.down_proj"]),
            k_cache_scale=k_scale,
            v_cache_scale=v_scale,
        )
