"""Load a TensorRT-LLM checkpoint (``config.json`` + ``rank*.safetensors``) into full-size float32 weights (a Hugging
Face checkpoint goes through nemo_runtime.hf_checkpoint into the same types).

Tensor-parallel ranks are merged back into whole matrices and FP8 weights are dequantized with their
``weights_scaling_factor``. The FP8 activation and KV-cache scales are kept, so the model can quantize
what TensorRT-LLM quantizes at run time (linear-layer inputs, the K and V it caches).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open


class CheckpointError(ValueError):
    """A checkpoint the reference runtime cannot execute; the message names the file, field or tensor at fault."""


SUPPORTED_ARCHITECTURES = ("MistralForCausalLM", "LlamaForCausalLM")
SUPPORTED_QUANT_ALGOS = (None, "FP8")


@dataclass(frozen=True)
class CheckpointConfig:
    """The fields of a TensorRT-LLM checkpoint ``config.json`` that the forward pass depends on."""

    architecture: str
    dtype: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    intermediate_size: int
    norm_epsilon: float
    rotary_base: float
    max_position_embeddings: int
    hidden_act: str
    tp_size: int
    pp_size: int
    quant_algo: str | None
    kv_cache_quant_algo: str | None
    use_parallel_embedding: bool
    embedding_sharding_dim: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckpointConfig:
        try:
            mapping = raw.get("mapping", {})
            quant = raw.get("quantization") or {}
            config = cls(
                architecture=raw["architecture"],
                dtype=raw["dtype"],
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                num_layers=int(raw["num_hidden_layers"]),
                num_heads=int(raw["num_attention_heads"]),
                num_kv_heads=int(raw.get("num_key_value_heads") or raw["num_attention_heads"]),
                head_size=int(raw.get("head_size") or raw["hidden_size"] // raw["num_attention_heads"]),
                intermediate_size=int(raw["intermediate_size"]),
                norm_epsilon=float(raw["norm_epsilon"]),
                rotary_base=float(raw.get("rotary_base", 10000.0)),
                max_position_embeddings=int(raw["max_position_embeddings"]),
                hidden_act=raw["hidden_act"],
                tp_size=int(mapping.get("tp_size", 1)),
                pp_size=int(mapping.get("pp_size", 1)),
                quant_algo=quant.get("quant_algo"),
                kv_cache_quant_algo=quant.get("kv_cache_quant_algo"),
                use_parallel_embedding=bool(raw.get("use_parallel_embedding", False)),
                embedding_sharding_dim=int(raw.get("embedding_sharding_dim", 0)),
            )
        except KeyError as exc:
            raise CheckpointError(f"checkpoint config.json lacks the field {exc.args[0]!r}") from exc
        config._check_supported()
        return config

    def _check_supported(self) -> None:
        problems = []
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            problems.append(f"architecture {self.architecture!r} (accepted: {', '.join(SUPPORTED_ARCHITECTURES)})")
        if self.quant_algo not in SUPPORTED_QUANT_ALGOS:
            problems.append(f"quant_algo {self.quant_algo!r} (accepted: FP8 or none)")
        if self.kv_cache_quant_algo not in SUPPORTED_QUANT_ALGOS:
            problems.append(f"kv_cache_quant_algo {self.kv_cache_quant_algo!r} (accepted: FP8 or none)")
        if self.hidden_act != "silu":
            problems.append(f"hidden_act {self.hidden_act!r} (accepted: silu)")
        if self.pp_size != 1:
            problems.append(f"pipeline parallelism {self.pp_size} (accepted: 1)")
        if problems:
            raise CheckpointError("the reference runtime cannot execute this checkpoint: " + "; ".join(problems))


@dataclass
class Linear:
    """A linear layer: float32 ``weight`` [out, in], and for FP8 the scale of its quantized input."""

    weight: torch.Tensor
    input_scale: float | None = None


@dataclass
class Layer:
    input_norm: torch.Tensor
    qkv: Linear
    dense: Linear
    post_norm: torch.Tensor
    fc: Linear  # HF gate_proj: the SiLU branch
    gate: Linear  # HF up_proj
    proj: Linear  # HF down_proj
    k_cache_scale: float | None
    v_cache_scale: float | None


@dataclass
class Weights:
    config: CheckpointConfig
    embedding: torch.Tensor
    layers: list[Layer]
    final_norm: torch.Tensor
    lm_head: torch.Tensor


def read_config(checkpoint_dir: Path) -> CheckpointConfig:
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{checkpoint_dir} is not a TensorRT-LLM checkpoint: config.json is missing")
    return CheckpointConfig.from_dict(json.loads(path.read_text()))


def load_weights(checkpoint_dir: str | Path) -> Weights:
    """The merged, dequantized weights of a TensorRT-LLM checkpoint (every rank) or of a Hugging Face one (ModelOpt's
    unified FP8 export included: nemo_runtime.hf_checkpoint), told apart by their ``config.json``."""
    from nemo_runtime.hf_checkpoint import is_hf_checkpoint, load_hf_weights  # it imports this module's types

    checkpoint_dir = Path(checkpoint_dir)
    if is_hf_checkpoint(checkpoint_dir):
        return load_hf_weights(checkpoint_dir)
    config = read_config(checkpoint_dir)
    ranks = [_read_rank(checkpoint_dir, rank) for rank in range(config.tp_size)]
    merger = _RankMerger(config, ranks)
    layers = [merger.layer(i) for i in range(config.num_layers)]
    return Weights(
        config=config,
        embedding=merger.embedding(),
        layers=layers,
        final_norm=merger.replicated("transformer.ln_f.weight"),
        lm_head=merger.concat("lm_head.weight", dim=0)[: config.vocab_size],
    )


def _read_rank(checkpoint_dir: Path, rank: int) -> dict[str, torch.Tensor]:
    path = checkpoint_dir / f"rank{rank}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"{checkpoint_dir} is incomplete: config.json says TP ranks exist but {path.name} is missing"
        )
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (safe_open has no __iter__)


class _RankMerger:
    """Undo the tensor-parallel split of each tensor (the layout TensorRT-LLM's Llama model expects)."""

    def __init__(self, config: CheckpointConfig, ranks: list[dict[str, torch.Tensor]]) -> None:
        self.config = config
        self.ranks = ranks

    def _get(self, rank: int, name: str) -> torch.Tensor:
        try:
            return self.ranks[rank][name]
        except KeyError:
            raise CheckpointError(f"checkpoint rank{rank}.safetensors lacks the tensor {name!r}") from None

    def _scale(self, rank: int, name: str) -> float | None:
        tensor = self.ranks[rank].get(name)
        return None if tensor is None else float(tensor.float().reshape(-1)[0])

    def replicated(self, name: str) -> torch.Tensor:
        return self._get(0, name).float()

    def concat(self, name: str, dim: int) -> torch.Tensor:
        return torch.cat([self._get(rank, name).float() for rank in range(len(self.ranks))], dim=dim)

    def embedding(self) -> torch.Tensor:
        name = "transformer.vocab_embedding.weight"
        if not self.config.use_parallel_embedding or len(self.ranks) == 1:
            return self.replicated(name)[: self.config.vocab_size]
        return self.concat(name, dim=self.config.embedding_sharding_dim)[: self.config.vocab_size]

    def _dequantized(self, rank: int, prefix: str) -> torch.Tensor:
        weight = self._get(rank, f"{prefix}.weight")
        scale = self._scale(rank, f"{prefix}.weights_scaling_factor")
        if weight.dtype == torch.float8_e4m3fn:
            if scale is None:
                raise CheckpointError(f"FP8 tensor {prefix}.weight has no weights_scaling_factor")
            return weight.float() * scale
        return weight.float()

    def linear(self, prefix: str, split_dim: int) -> Linear:
        parts = [self._dequantized(rank, prefix) for rank in range(len(self.ranks))]
        return Linear(torch.cat(parts, dim=split_dim), self._scale(0, f"{prefix}.activation_scaling_factor"))

    def qkv(self, prefix: str) -> Linear:
        """Each rank holds [q_r; k_r; v_r]; KV heads are replicated across ranks when there are fewer than TP."""
        config, tp = self.config, len(self.ranks)
        q_rows = config.num_heads // tp * config.head_size
        kv_heads_per_rank = max(1, config.num_kv_heads // tp)
        kv_rows = kv_heads_per_rank * config.head_size
        if config.num_heads % tp or (config.num_kv_heads % tp and tp % config.num_kv_heads):
            raise CheckpointError(
                f"cannot merge {config.num_heads} query / {config.num_kv_heads} KV heads over TP {tp}: "
                "head counts must divide evenly"
            )
        kv_ranks = range(tp) if config.num_kv_heads >= tp else range(0, tp, tp // config.num_kv_heads)
        qs, ks, vs = [], [], []
        for rank in range(tp):
            q, k, v = self._dequantized(rank, prefix).split([q_rows, kv_rows, kv_rows], dim=0)
            qs.append(q)
            if rank in kv_ranks:
                ks.append(k)
                vs.append(v)
        weight = torch.cat([*qs, *ks, *vs], dim=0)
        return Linear(weight, self._scale(0, f"{prefix}.activation_scaling_factor"))

    def layer(self, index: int) -> Layer:
        p = f"transformer.layers.{index}"
        return Layer(
            input_norm=self.replicated(f"{p}.input_layernorm.weight"),
            qkv=self.qkv(f"{p}.attention.qkv"),
            dense=self.linear(f"{p}.attention.dense", split_dim=1),
            post_norm=self.replicated(f"{p}.post_layernorm.weight"),
            fc=self.linear(f"{p}.mlp.fc", split_dim=0),
            gate=self.linear(f"{p}.mlp.gate", split_dim=0),
            proj=self.linear(f"{p}.mlp.proj", split_dim=1),
            k_cache_scale=self._kv_scale(f"{p}.attention", "k"),
            v_cache_scale=self._kv_scale(f"{p}.attention", "v"),
        )

    def _kv_scale(self, prefix: str, which: str) -> float | None:
        if self.config.kv_cache_quant_algo != "FP8":
            return None
        scale = self._scale(0, f"{prefix}.{which}_cache_scaling_factor")
        if scale is None:
            scale = self._scale(0, f"{prefix}.kv_cache_scaling_factor")
        if scale is None:
            raise CheckpointError(f"FP8 KV cache checkpoint lacks {prefix}.kv_cache_scaling_factor")
        return scale
