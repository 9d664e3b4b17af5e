"""LoRA adapters served by name: a directory of Hugging Face PEFT adapters, read, checked against the base model
and converted into the tensors the `tensorrt_llm` contract carries (the tensorrtllm backend's ``lora_task_id``,
``lora_weights``, ``lora_config``).

Layout (TensorRT-LLM's ``examples/hf_lora_convert.py``, held in tests/data/upstream/tensorrt_llm_lora.json): one
row of ``lora_weights`` per (layer, module): PEFT's ``lora_A`` [r, in] flattened, then ``lora_B`` [out, r] scaled
by ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA) flattened, zero-padded to the longest row; its ``lora_config`` row
is ``(module id, layer, r)``. The backend caches an adapter's weights under its task id: a request naming a task it
does not hold, without the weights, fails with "LoRA task N not found in cache" and is sent again with them
(:func:`is_lora_cache_miss`).

A task id is derived from the adapter's name and file contents, so an adapter replaced on disk under the same name
gets a new id and a cache never serves its old weights.

:class:`AdapterRegistry` scans the source directory (one adapter per subdirectory, named by it) again whenever it
is asked and ``rescan_interval_s`` has passed: adapters added or removed appear or go without a restart. An
adapter that does not fit the base model is refused with a message naming it and the problem; the others serve.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nemo_chat_core.engine_tensors import GenerationRequest, LoraInputs
from nemo_protocol.errors import NotFoundError

logger = logging.getLogger("nemo_chat_core.lora")

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

MODULE_IDS: dict[str, int] = {
    "attn_q": 1,
    "attn_k": 2,
    "attn_v": 3,
    "attn_dense": 4,
    "mlp_h_to_4h": 5,
    "mlp_4h_to_h": 6,
    "mlp_gate": 7,
}
"""TensorRT-LLM's ``LoraManager.LORA_MODULE_IDS`` for the modules of a Mistral / Llama layer."""
HF_MODULES: dict[str, str] = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_dense",
    "gate_proj": "mlp_h_to_4h",
    "down_proj": "mlp_4h_to_h",
    "up_proj": "mlp_gate",
}
"""PEFT's (Hugging Face) module names → TensorRT-LLM's, as its converter maps them for Llama-family models."""
UNSERVED_PEFT_OPTIONS = ("use_dora", "modules_to_save", "fan_in_fan_out", "lora_bias", "trainable_token_indices")
"""PEFT options that change what an adapter computes beyond ``x A^T B^T``: refused rather than served wrong."""
MODULE_NAMES = {module_id: name for name, module_id in MODULE_IDS.items()}
DEFAULT_MAX_LORA_RANK = 64  # trtllm-build's default --max_lora_rank
_PEFT_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)\.weight$")
_CACHE_MISS = re.compile(r"LoRA task (\d+) not found in cache")


class AdapterError(ValueError):
    """An adapter the deployment cannot serve; the message names the adapter and the problem."""


@dataclass(frozen=True)
class BaseShapes:
    """The sizes of the base model an adapter must fit (from its Hugging Face ``config.json``)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BaseShapes:
        """From a Hugging Face or a TensorRT-LLM checkpoint's ``config.json`` (``head_dim`` / ``head_size``)."""
        heads = int(config["num_attention_heads"])
        return cls(
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config.get("head_size") or int(config["hidden_size"]) // heads),
            vocab_size=int(config["vocab_size"]),
        )

    def to_text(self) -> str:
        """``hidden_size=5120,intermediate_size=...``: a model-config parameter (no quotes to escape)."""
        return ",".join(f"{key}={value}" for key, value in asdict(self).items())

    @classmethod
    def from_text(cls, text: str) -> BaseShapes:
        try:
            return cls(**{key: int(value) for key, _, value in (item.partition("=") for item in text.split(","))})
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"LoRA base model sizes {text!r} are not key=integer pairs of {cls.__name__}: {exc}"
            ) from None

    def module_dims(self, module: str) -> tuple[int, int]:
        """(in, out) features of a TensorRT-LLM LoRA module of one layer."""
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {
            "attn_q": (self.hidden_size, q),
            "attn_k": (self.hidden_size, kv),
            "attn_v": (self.hidden_size, kv),
            "attn_dense": (q, self.hidden_size),
            "mlp_h_to_4h": (self.hidden_size, self.intermediate_size),
            "mlp_gate": (self.hidden_size, self.intermediate_size),
            "mlp_4h_to_h": (self.intermediate_size, self.hidden_size),
        }[module]


@dataclass(frozen=True)
class LoraAdapter:
    """One adapter as the engine takes it: ``weights`` float16 [modules, row], ``config`` int32 [modules, 3]."""

    name: str
    task_id: int
    rank: int
    modules: tuple[str, ...]  # TensorRT-LLM module names it adapts
    weights: np.ndarray
    config: np.ndarray


def task_id_of(name: str, *contents: bytes) -> int:
    """A stable uint64 id (kept below 2**63) for an adapter's name and file contents."""
    digest = hashlib.sha256(name.encode("utf-8"))
    for content in contents:
        digest.update(hashlib.sha256(content).digest())
    return int.from_bytes(digest.digest()[:8], "big") & (2**63 - 1)


def is_lora_cache_miss(message: str) -> bool:
    """Whether an engine error is the backend's "task not found in cache": resend the request with its weights."""
    return _CACHE_MISS.search(message) is not None


def cache_miss_message(task_id: int) -> str:
    """The tensorrtllm backend's error for a task id it holds no weights for (PeftCacheManager's wording)."""
    return f"LoRA task {task_id} not found in cache. Please send LoRA weights with request"


def read_adapter(directory: Path, base: BaseShapes, max_rank: int, name: str | None = None) -> LoraAdapter:
    """Read, check and convert the PEFT adapter in ``directory``; AdapterError naming it and the problem."""
    directory = Path(directory)
    name = name or directory.name
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise AdapterError(f"adapter {name!r}: {path.name} is missing (a PEFT adapter directory holds both)")
    config_bytes, weights_bytes = config_path.read_bytes(), weights_path.read_bytes()
    try:
        peft_config = json.loads(config_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterError(f"adapter {name!r}: {ADAPTER_CONFIG} is not valid JSON ({exc})") from None
    if not isinstance(peft_config, dict):
        raise AdapterError(f"adapter {name!r}: {ADAPTER_CONFIG} is not a JSON object")
    tensors = _read_safetensors(name, weights_bytes)
    weights, config, rank, modules = convert_peft(name, peft_config, tensors, base, max_rank)
    return LoraAdapter(name, task_id_of(name, config_bytes, weights_bytes), rank, modules, weights, config)


def _read_safetensors(name: str, content: bytes) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        return load(content)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise AdapterError(f"adapter {name!r}: {ADAPTER_WEIGHTS} is not a readable safetensors file ({exc})") from None


def convert_peft(
    name: str, peft_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], base: BaseShapes, max_rank: int
) -> tuple[np.ndarray, np.ndarray, int, tuple[str, ...]]:
    """PEFT's config and tensors → (``lora_weights`` [modules, row] float16, ``lora_config`` [modules, 3] int32,
    rank, TensorRT-LLM modules), in TensorRT-LLM's converter layout."""

    def refuse(problem: str) -> AdapterError:
        return AdapterError(f"adapter {name!r}: {problem}")

    if peft_config.get("peft_type", "LORA") != "LORA":
        raise refuse(f"peft_type {peft_config.get('peft_type')!r} is not served (accepted: LORA)")
    for key in UNSERVED_PEFT_OPTIONS:
        if peft_config.get(key):
            raise refuse(
                f"{key}={peft_config[key]!r} is not served (plain LoRA: {', '.join(UNSERVED_PEFT_OPTIONS)} off)"
            )
    if peft_config.get("bias", "none") != "none":
        raise refuse(f"bias={peft_config['bias']!r} is not served (accepted: 'none')")
    if peft_config.get("rank_pattern") or peft_config.get("alpha_pattern"):
        raise refuse("rank_pattern / alpha_pattern (a rank per module) is not served: one rank per adapter")
    rank, alpha = peft_config.get("r"), peft_config.get("lora_alpha")
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, int | float):
        raise refuse(f"adapter_config.json needs an integer r >= 1 and a number lora_alpha, got r={rank!r}")
    if rank > max_rank:
        raise refuse(f"rank {rank} is above this deployment's maximum LoRA rank {max_rank}")
    targets = peft_config.get("target_modules")
    target_names = [targets] if isinstance(targets, str) else list(targets or [])
    unknown = sorted(set(target_names) - set(HF_MODULES))
    if unknown:
        raise refuse(f"target modules {unknown} are not served (accepted: {', '.join(HF_MODULES)})")
    scale = alpha / (rank**0.5 if peft_config.get("use_rslora") else rank)
    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, tensor in tensors.items():
        match = _PEFT_KEY.match(key)
        if match is None:
            if "embed_tokens" in key or "lm_head" in key:
                _check_vocab(refuse, key, tensor, base)
            raise refuse(f"tensor {key!r} is not a LoRA weight of a served module (accepted: {', '.join(HF_MODULES)})")
        layer, hf_module, which = int(match[1]), match[3], match[4]
        if hf_module not in HF_MODULES:
            raise refuse(f"tensor {key!r} adapts {hf_module!r}, not served (accepted: {', '.join(HF_MODULES)})")
        if layer >= base.num_layers:
            raise refuse(f"tensor {key!r} is for layer {layer}; the base model has {base.num_layers} layers")
        pairs.setdefault((layer, HF_MODULES[hf_module]), {})[which] = tensor
    if not pairs:
        raise refuse(f"{ADAPTER_WEIGHTS} holds no LoRA weights")
    rows, config = [], []
    for (layer, module), pair in sorted(pairs.items(), key=lambda item: (item[0][0], MODULE_IDS[item[0][1]])):
        if set(pair) != {"A", "B"}:
            raise refuse(f"layer {layer} {module} has lora_{'A' if 'A' not in pair else 'B'} missing")
        in_dim, out_dim = base.module_dims(module)
        down, up = pair["A"], pair["B"]
        if down.shape != (rank, in_dim) or up.shape != (out_dim, rank):
            raise refuse(
                f"layer {layer} {module} has lora_A {list(down.shape)} and lora_B {list(up.shape)}; the base model "
                f"needs [{rank}, {in_dim}] and [{out_dim}, {rank}] (an adapter trained for another base model?)"
            )
        rows.append(np.concatenate([down.astype(np.float32).ravel(), (up.astype(np.float32) * scale).ravel()]))
        config.append((MODULE_IDS[module], layer, rank))
    width = max(row.size for row in rows)
    weights = np.zeros((len(rows), width), dtype=np.float16)
    for index, row in enumerate(rows):
        weights[index, : row.size] = row
    modules = tuple(sorted({module for _, module in pairs}, key=MODULE_IDS.__getitem__))
    return weights, np.array(config, dtype=np.int32), rank, modules


def _check_vocab(refuse: Callable[[str], AdapterError], key: str, tensor: np.ndarray, base: BaseShapes) -> None:
    """An output-head or embedding LoRA (not served) sized for another vocabulary: say so, the likelier mistake."""
    spans_vocabulary = "lm_head.lora_B" in key or "embed_tokens.lora_embedding_A" in key
    if spans_vocabulary and max(tensor.shape) != base.vocab_size:
        raise refuse(
            f"tensor {key!r} has shape {list(tensor.shape)}: not the base model's vocabulary {base.vocab_size} "
            "(an adapter trained for another base model?)"
        )


@dataclass(frozen=True)
class ModuleWeights:
    """One module of one layer: the down projection A [r, in] and the scaled up projection B [out, r]."""

    layer: int
    module: str
    down: np.ndarray
    up: np.ndarray


def module_weights(weights: np.ndarray, config: np.ndarray, base: BaseShapes, max_rank: int) -> list[ModuleWeights]:
    """The rows of ``lora_weights`` / ``lora_config`` (a batch of one, or without the batch dimension) as matrices,
    checked against the base model; ValueError naming the tensor and row at fault."""
    weights = weights.reshape(-1, weights.shape[-1]) if weights.ndim >= 2 else weights
    config = config.reshape(-1, 3) if config.size % 3 == 0 else config
    if weights.ndim != 2 or config.ndim != 2 or config.shape[1] != 3:
        raise ValueError(f"lora_config must be [modules, 3] and lora_weights [modules, row], got {list(config.shape)}")
    if weights.shape[0] != config.shape[0]:
        raise ValueError(f"lora_weights has {weights.shape[0]} rows and lora_config {config.shape[0]}: one per module")
    out = []
    for index, (module_id, layer, rank) in enumerate(config.tolist()):
        module = MODULE_NAMES.get(module_id)
        if module is None:
            raise ValueError(f"lora_config row {index}: module id {module_id} is not served (accepted: {MODULE_IDS})")
        if not 0 <= layer < base.num_layers:
            raise ValueError(f"lora_config row {index}: layer {layer} outside [0, {base.num_layers})")
        if not 1 <= rank <= max_rank:
            raise ValueError(f"lora_config row {index}: rank {rank} outside [1, {max_rank}] (the maximum LoRA rank)")
        in_dim, out_dim = base.module_dims(module)
        size = rank * (in_dim + out_dim)
        if size > weights.shape[1]:
            raise ValueError(
                f"lora_weights row {index} holds {weights.shape[1]} values; {module} rank {rank} needs {size}"
            )
        row = weights[index].astype(np.float32)
        down = row[: rank * in_dim].reshape(rank, in_dim)
        up = row[rank * in_dim : size].reshape(out_dim, rank)
        out.append(ModuleWeights(layer, module, down, up))
    return out


@dataclass(frozen=True)
class _Scanned:
    signature: tuple[tuple[str, int, int], ...]  # (file, size, mtime_ns) of both files
    adapter: LoraAdapter | None
    problem: str | None


class AdapterRegistry:
    """The adapters of a source directory by name, rescanned at most every ``rescan_interval_s`` when asked."""

    def __init__(
        self, source: Path, base: BaseShapes, max_rank: int = DEFAULT_MAX_LORA_RANK, rescan_interval_s: float = 1.0
    ) -> None:
        self.source = Path(source)
        self.base = base
        self.max_rank = max_rank
        self.rescan_interval_s = rescan_interval_s
        self._lock = threading.Lock()
        self._scanned: dict[str, _Scanned] = {}
        self._scanned_at = -float("inf")

    def _refresh(self) -> dict[str, _Scanned]:
        with self._lock:
            now = time.monotonic()
            if now - self._scanned_at >= self.rescan_interval_s:
                self._scanned = self._scan()
                self._scanned_at = now
            return self._scanned

    def _scan(self) -> dict[str, _Scanned]:
        found: dict[str, _Scanned] = {}
        directories = sorted(p for p in self.source.iterdir() if p.is_dir()) if self.source.is_dir() else []
        for directory in directories:
            name = directory.name
            if name.startswith("."):
                continue  # half-copied adapters (an atomic rename target) and hidden folders
            signature = _signature(directory)
            known = self._scanned.get(name)
            if known is not None and known.signature == signature:
                found[name] = known
                continue
            try:
                found[name] = _Scanned(signature, read_adapter(directory, self.base, self.max_rank, name), None)
                logger.info("LoRA adapter %r loaded from %s", name, directory)
            except (AdapterError, OSError) as exc:
                found[name] = _Scanned(signature, None, str(exc))
                logger.warning("LoRA adapter refused: %s", exc)
        return found

    def names(self) -> list[str]:
        """The adapters served now, by name."""
        return [name for name, scanned in self._refresh().items() if scanned.adapter is not None]

    def refused(self) -> dict[str, str]:
        """The adapters of the source that are not served, with the reason."""
        return {name: s.problem for name, s in self._refresh().items() if s.problem is not None}

    def get(self, name: str) -> LoraAdapter | None:
        scanned = self._refresh().get(name)
        return None if scanned is None else scanned.adapter

    def find(self, task_id: int) -> LoraAdapter | None:
        """The served adapter with ``task_id`` (None: no served adapter has it, removed say)."""
        for scanned in self._refresh().values():
            if scanned.adapter is not None and scanned.adapter.task_id == task_id:
                return scanned.adapter
        return None

    def name_of(self, task_id: int) -> str:
        """The name of the served adapter with ``task_id`` (its id as text when none has it: removed, say)."""
        adapter = self.find(task_id)
        return str(task_id) if adapter is None else adapter.name

    def resolve(self, model: str | None, base_name: str) -> LoraAdapter | None:
        """The adapter a request's ``model`` names; None for the base model (or no name); NotFoundError naming the
        served names (and why, when the name is a refused adapter) otherwise."""
        if model is None or model == base_name:
            return None
        scanned = self._refresh().get(model)
        if scanned is not None and scanned.adapter is not None:
            return scanned.adapter
        served = ", ".join(repr(n) for n in [base_name, *self.names()])
        why = f" ({scanned.problem})" if scanned is not None and scanned.problem else ""
        raise NotFoundError(f"the model {model!r} does not exist{why}; this server serves {served}", param="model")


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for file in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        try:
            stat = (directory / file).stat()
            out.append((file, stat.st_size, stat.st_mtime_ns))
        except OSError:
            out.append((file, -1, -1))
    return tuple(out)


def requested_adapter(registry: AdapterRegistry | None, model: str | None, base_name: str) -> LoraAdapter | None:
    """The adapter a request's ``model`` names (None: the base model, or no name); NotFoundError naming the served
    names otherwise, also where the deployment serves no adapters."""
    if registry is not None:
        return registry.resolve(model, base_name)
    if model is not None and model != base_name:
        raise NotFoundError(
            f"the model {model!r} is not served here; this deployment serves {base_name!r}", param="model"
        )
    return None


def served_names(base_name: str, registry: AdapterRegistry | None) -> list[str]:
    """The base model's name, then every adapter's."""
    return [base_name, *(registry.names() if registry is not None else [])]


def with_weights(generation: GenerationRequest, adapter: LoraAdapter | None) -> GenerationRequest | None:
    """``generation`` carrying its adapter's weights and config, to send again after the engine's cache miss; None
    when it has no adapter (a miss cannot be its error)."""
    if adapter is None or generation.lora is None:
        return None
    return replace(generation, lora=LoraInputs(adapter.task_id, adapter.weights, adapter.config))
