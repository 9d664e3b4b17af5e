"""LoRA on the CPU reference runtime: adapters cached by task id as the tensorrtllm backend caches them, and their
low-rank updates applied per request inside a batch that mixes adapters and the base model.

A request names its adapter by ``lora_task_id``; the first one for a task (or one after the task was evicted) also
carries ``lora_weights`` and ``lora_config`` in TensorRT-LLM's converter layout (nemo_chat_core.lora). A request
naming a task the cache does not hold, without weights, is refused with the backend's own "not found in cache"
error, which the senders answer by sending the request again with the weights.

Each adapted linear layer computes ``x W^T + (x A^T) B^T`` for the rows of the batch that use the adapter (B holds
the ``alpha / r`` scale, as the converter folds it in); rows of the base model cost nothing extra.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nemo_chat_core.engine_tensors import LoraInputs
from nemo_chat_core.lora import BaseShapes, cache_miss_message, module_weights
from nemo_protocol.errors import BadRequestError

DEFAULT_MAX_CACHED_ADAPTERS = 8


@dataclass(frozen=True)
class RuntimeAdapter:
    """One adapter's matrices by (layer, TensorRT-LLM module): A^T [in, r] and B^T [r, out], float32."""

    task_id: int
    matrices: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]

    def delta(self, layer: int, module: str, x: torch.Tensor) -> torch.Tensor | None:
        pair = self.matrices.get((layer, module))
        return None if pair is None else (x @ pair[0]) @ pair[1]


class LoraCache:
    """Adapters by task id, least recently used evicted past ``max_adapters``; thread-safe."""

    def __init__(self, base: BaseShapes, max_rank: int, max_adapters: int = DEFAULT_MAX_CACHED_ADAPTERS) -> None:
        if max_adapters < 1:
            raise ValueError("max_adapters must be >= 1")
        self.base = base
        self.max_rank = max_rank
        self.max_adapters = max_adapters
        self._lock = threading.Lock()
        self._adapters: OrderedDict[int, RuntimeAdapter] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._adapters)

    def resolve(self, lora: LoraInputs | None) -> RuntimeAdapter | None:
        """The adapter a request uses (None: the base model); BadRequestError naming the tensor otherwise."""
        if lora is None:
            return None
        if lora.weights is None or lora.config is None:
            with self._lock:
                adapter = self._adapters.get(lora.task_id)
                if adapter is None:
                    raise BadRequestError(cache_miss_message(lora.task_id), param="lora_task_id")
                self._adapters.move_to_end(lora.task_id)
                return adapter
        try:
            modules = module_weights(lora.weights, lora.config, self.base, self.max_rank)
        except ValueError as exc:
            raise BadRequestError(str(exc), param="lora_weights") from None
        adapter = RuntimeAdapter(
            lora.task_id,
            {
                (m.layer, m.module): (torch.from_numpy(m.down).T.contiguous(), torch.from_numpy(m.up).T.contiguous())
                for m in modules
            },
        )
        with self._lock:
            self._adapters[lora.task_id] = adapter
            self._adapters.move_to_end(lora.task_id)
            while len(self._adapters) > self.max_adapters:
                self._adapters.popitem(last=False)  # in-flight requests keep their own reference
        return adapter


class BatchLora:
    """Which rows of a batch (decode: one per sequence; prefill: every token of one sequence) use which adapter."""

    def __init__(self, adapters: Sequence[RuntimeAdapter | None], rows_are_tokens: bool = False) -> None:
        groups: dict[int, tuple[RuntimeAdapter, list[int]]] = {}
        for row, adapter in enumerate(adapters):
            if adapter is not None:
                groups.setdefault(id(adapter), (adapter, []))[1].append(row)
        every_row = rows_are_tokens or (len(groups) == 1 and len(next(iter(groups.values()))[1]) == len(adapters))
        self._groups = [(adapter, None if every_row else torch.tensor(rows)) for adapter, rows in groups.values()]

    @staticmethod
    def of(adapters: Sequence[RuntimeAdapter | None]) -> BatchLora | None:
        """None when no row uses an adapter (the base model's forward pass, unchanged)."""
        return BatchLora(adapters) if any(a is not None for a in adapters) else None

    def add(self, out: torch.Tensor, x: torch.Tensor, layer: int, modules: Sequence[tuple[str, int, int]]) -> None:
        """Add each adapter's update of ``modules`` ((name, first, end) columns of ``out``) to its rows, in place."""
        for adapter, rows in self._groups:
            inputs = x if rows is None else x[rows]
            for module, first, end in modules:
                delta = adapter.delta(layer, module, inputs)
                if delta is None:
                    continue
                if rows is None:
                    out[..., first:end] += delta
                else:
                    out[rows, first:end] += delta
