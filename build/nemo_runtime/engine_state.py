"""What every python `tensorrt_llm` engine shares, torch-free: the sink a request's responses go to, the batch
state it publishes (:class:`BatcherStats`, read by nemo_runtime.batch_metrics) and the loop base that exposes it.

The CPU engines (nemo_runtime.inflight, nemo_runtime.stand_in) and the GPU one driving TensorRT-LLM's LLM API
(nemo_runtime.llm_api) all use it; nothing here imports torch, so the GPU model imports no CPU runtime code.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from nemo_chat_core.engine_tensors import GenerationRequest, LogOutputs
from nemo_protocol.errors import BadRequestError

KV_TOKENS_PER_BLOCK = 64
"""Tokens per KV-cache block in the block figures the CPU engines publish (the profiles' tokens_per_block)."""


def kv_blocks(tokens: int) -> int:
    """The KV-cache blocks ``tokens`` positions fill."""
    return -(-tokens // KV_TOKENS_PER_BLOCK)


def ids_outside_vocabulary(request: GenerationRequest, vocab: int) -> BadRequestError | None:
    """A stop or bad word or the end id holding an id outside ``[0, vocab)``, named by its tensor (refused up front:
    inside the engine it would fail the request unnamed, or every request in flight)."""
    for name, words in (("stop_words_list", request.stop_words), ("bad_words_list", request.bad_words)):
        outside = [token for word in words for token in word if not 0 <= token < vocab]
        if outside:
            return BadRequestError(f"holds {outside[0]}, not a token id in [0, {vocab})", param=name)
    if request.end_id is not None and not 0 <= request.end_id < vocab:
        return BadRequestError(f"{request.end_id} is not a token id in [0, {vocab})", param="end_id")
    return None


def beyond_sequence_length(request: GenerationRequest, max_seq_len: int) -> BadRequestError | None:
    """A request whose prompt and ``request_output_len`` exceed ``max_seq_len``, named by the output length."""
    longest = max_seq_len - len(request.input_ids)
    if request.max_new_tokens > longest:
        return BadRequestError(
            f"{request.max_new_tokens} tokens after a {len(request.input_ids)}-token prompt exceed the model's "
            f"maximum sequence length {max_seq_len} (at most {max(longest, 0)})",
            param="request_output_len",
        )
    return None


class InFlight(Protocol):
    """What lora_stats reads of an in-flight request."""

    @property
    def adapter(self) -> str | None: ...  # its LoRA adapter's name

    @property
    def running(self) -> bool: ...  # holding a batch slot


def lora_stats(active: Iterable[InFlight], requests: Counter[str], max_lora: int) -> dict[str, Any]:
    """The LoRA fields of BatcherStats: adapters running and waiting, the cache's size, requests per adapter."""
    running = sorted({a.adapter for a in active if a.adapter is not None and a.running})
    waiting = sorted({a.adapter for a in active if a.adapter is not None and not a.running})
    return {
        "lora_running": tuple(running),
        "lora_waiting": tuple(waiting),
        "max_lora": max_lora,
        "lora_requests": tuple(sorted(requests.items())),
    }


class Sink(Protocol):
    """Where one request's responses go (a Triton response sender, in the model)."""

    def send(self, token_ids: list[int], final: bool, logs: LogOutputs | None = None) -> None: ...

    def fail(self, message: str) -> None: ...

    def is_cancelled(self) -> bool: ...


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of an engine's batch state.

    The CPU engines count KV-cache blocks of KV_TOKENS_PER_BLOCK positions themselves and reuse none; an engine
    with a real block manager (TensorRT-LLM's, read from its iteration stats) reports its own block size, free
    and reused blocks.
    """

    running: int  # requests holding a batch slot (prefilled, decoding)
    waiting: int  # requests submitted and not yet admitted to the batch (every slot taken)
    max_batch_size: int
    cancelled: int = 0  # requests ended early since start: client cancellation, `stop`, a vanished client
    kv_blocks_used: int = 0  # KV-cache blocks the running requests' positions fill
    kv_blocks_max: int = 0  # KV-cache blocks a full batch of sequences of the longest length fills
    kv_tokens_per_block: int = KV_TOKENS_PER_BLOCK
    kv_blocks_free: int | None = None  # None: kv_blocks_max - kv_blocks_used
    kv_blocks_reused: int = 0  # blocks a request took over from the reuse cache (prefix reuse)
    lora_running: tuple[str, ...] = ()  # the LoRA adapters of the running requests, by name, sorted
    lora_waiting: tuple[str, ...] = ()  # the LoRA adapters of the waiting requests
    max_lora: int = 0  # adapters the engine holds at once (its LoRA cache)
    lora_requests: tuple[tuple[str, int], ...] = ()  # (adapter, requests submitted for it since start), sorted

    @property
    def slots_free(self) -> int:
        return self.max_batch_size - self.running

    @property
    def kv_free(self) -> int:
        return self.kv_blocks_max - self.kv_blocks_used if self.kv_blocks_free is None else self.kv_blocks_free


class BatchLoop:
    """An engine's step loop on a thread of its own: what nemo_runtime.batch_metrics reads of it (its batch state
    now, or once it changes) and how it stops.

    Subclasses hold ``_lock``, ``_changed`` (a Condition on it, notified on every change), ``_closed``, ``_wake``
    (set to wake the loop) and ``_thread`` (the loop), and give ``_snapshot()`` (called under the lock).
    """

    _lock: threading.Lock
    _changed: threading.Condition
    _closed: bool
    _wake: threading.Event
    _thread: threading.Thread

    def _snapshot(self) -> BatcherStats:
        raise NotImplementedError

    def stats(self) -> BatcherStats:
        with self._lock:
            return self._snapshot()

    def wait_for_change(self, since: BatcherStats | None, timeout: float) -> BatcherStats:
        """The stats once they differ from `since` (at once when they do already), or after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._snapshot() != since or self._closed, timeout)
            return self._snapshot()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._wake.set()
        self._thread.join(timeout=10)
