"""In-flight batching over the reference model: many concurrent requests, one decode step for all.

Thread-safety contract (what the Triton ``tensorrt_llm`` python model relies on):

* ``add_request`` and ``cancel`` may be called from any thread, at any time, including while ``step``
  runs. They only touch a lock-protected inbox and return at once.
* ``step`` must be driven by ONE loop thread. Each call takes the inbox (new requests, cancellations), admits
  waiting requests while a batch slot and KV-cache room are free, runs one batched decode step for every request
  whose prompt is done, then prefills prompts in chunks up to ``max_num_tokens`` tokens in all (less the decoding
  sequences: TensorRT-LLM's chunked context), so a long prompt never stalls the running streams for longer than
  one chunk. It returns what each request produced. A request added during a step joins at the next one.
* KV-cache room (``kv_cache_max_tokens``): a request is admitted only when its prompt plus ``max_new_tokens``
  fits beside what the admitted ones may grow to (TensorRT-LLM's guaranteed-no-evict policy), so the cache never
  outgrows its budget mid-generation; a request that could never fit is refused by ``add_request``. Unless given,
  the budget is ``max_batch_size`` full sequences or what a fraction of the host's available memory holds, whichever
  is less (as TensorRT-LLM sizes its cache from free GPU memory).
* A request appears in ``step``'s results until one result has ``finished=True``; after that its id is
  free for reuse. A cancelled request reports ``finished=True, finish_reason="cancelled"`` once.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from nemo_chat_core.lora import DEFAULT_MAX_LORA_RANK, BaseShapes
from nemo_protocol.errors import ENGINE_OUT_OF_MEMORY
from nemo_protocol.request_ids import new_request_id
from nemo_runtime.lora import DEFAULT_MAX_CACHED_ADAPTERS, LoraCache, RuntimeAdapter
from nemo_runtime.model import DEFAULT_PREFILL_CHUNK_TOKENS, ReferenceModel
from nemo_runtime.sampling import GREEDY, LogitsMask, NoAllowedToken, Sampler, SamplingParams, TokenMask
from nemo_runtime.weights import load_weights

FinishReason = Literal["stop", "length", "cancelled", "error"]
DEFAULT_MAX_NUM_TOKENS = DEFAULT_PREFILL_CHUNK_TOKENS
DEFAULT_KV_CACHE_MEMORY_FRACTION = 0.9  # TensorRT-LLM's KvCacheConfig.free_gpu_memory_fraction default, of host memory


@dataclass(frozen=True)
class StepOutput:
    """What one request produced in one ``step``.

    ``new_token_ids`` holds this step's token (empty when it finished without one). The end id is not
    emitted; the ids of a matched stop word are (as TensorRT-LLM does).
    """

    request_id: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None = None
    log_probs: list[float] = field(default_factory=list)  # of new_token_ids, when the request returns them
    context_logits: torch.Tensor | None = None  # [prompt, vocab], in the request's first output when asked for
    generation_logits: torch.Tensor | None = None  # [len(new_token_ids), vocab], when asked for
    error: str | None = None  # why it ended, with finish_reason "error" (None: no token was allowed)


@dataclass(frozen=True)
class Returns:
    """What a request returns beside its tokens (the tensorrtllm backend's ``return_*`` inputs)."""

    log_probs: bool = False  # the log probability of each token (log-softmax of the scores it was drawn from)
    context_logits: bool = False  # the logits at every prompt position
    generation_logits: bool = False  # the logits each token was chosen from


@dataclass(frozen=True)
class GenerationResult:
    token_ids: list[int]
    finish_reason: FinishReason


@dataclass
class _Request:
    request_id: str
    prompt_ids: list[int]
    max_new_tokens: int
    sampler: Sampler
    end_id: int | None
    stop_words: list[list[int]]
    returns: Returns = Returns()
    adapter: RuntimeAdapter | None = None
    generated: list[int] = field(default_factory=list)
    slot: int = -1
    prefilled: int = 0  # prompt positions in the cache so far (chunked prefill)
    context_chunks: list[torch.Tensor] = field(default_factory=list)  # logits of the prefilled chunks, when returned

    @property
    def kv_tokens(self) -> int:
        """The KV-cache positions it may fill: its prompt and every token it may generate."""
        return len(self.prompt_ids) + self.max_new_tokens

    @property
    def next_position(self) -> int:
        """Position of the last generated token, the input of the next decode step."""
        return len(self.prompt_ids) + len(self.generated) - 1


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, or torch's CPU allocator refusing ("DefaultCPUAllocator: can't
    allocate memory" / "not enough memory")."""
    return isinstance(exc, MemoryError) or "DefaultCPUAllocator" in str(exc)


class ReferenceRuntime:
    """Serve many requests over one :class:`ReferenceModel` with in-flight batching."""

    def __init__(
        self,
        model: ReferenceModel,
        max_batch_size: int = 64,
        max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS,
        kv_cache_max_tokens: int | None = None,
        max_lora_rank: int = DEFAULT_MAX_LORA_RANK,
        max_cached_adapters: int = DEFAULT_MAX_CACHED_ADAPTERS,
        kv_cache_memory_fraction: float = DEFAULT_KV_CACHE_MEMORY_FRACTION,
    ) -> None:
        """``max_num_tokens``: tokens per step, prefill chunks and decodes together; ``kv_cache_max_tokens``: the
        KV-cache positions all admitted requests may fill together (None: ``max_batch_size`` full sequences, or what
        ``kv_cache_memory_fraction`` of the host's available memory holds, whichever is less); ``max_lora_rank``,
        ``max_cached_adapters``: the LoRA cache's limits. ValueError when the memory cannot hold one sequence of
        the model's length."""
        if max_batch_size < 1 or max_num_tokens < 1 or (kv_cache_max_tokens is not None and kv_cache_max_tokens < 1):
            raise ValueError("max_batch_size, max_num_tokens and kv_cache_max_tokens must be >= 1")
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_num_tokens = max_num_tokens
        self.kv_cache_max_tokens = kv_cache_max_tokens or self._memory_budget(kv_cache_memory_fraction)
        self.lora = LoraCache(base_shapes(model), max_lora_rank, max_cached_adapters)
        self._lock = threading.Lock()
        self._pending: deque[_Request] = deque()
        self._cancelled: set[str] = set()
        self._known: set[str] = set()
        self._active: dict[str, _Request] = {}

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_dir: str | Path,
        max_batch_size: int = 64,
        max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS,
        kv_cache_max_tokens: int | None = None,
        max_lora_rank: int = DEFAULT_MAX_LORA_RANK,
        max_cached_adapters: int = DEFAULT_MAX_CACHED_ADAPTERS,
    ) -> ReferenceRuntime:
        model = ReferenceModel(load_weights(checkpoint_dir), prefill_chunk_tokens=max_num_tokens)
        return cls(model, max_batch_size, max_num_tokens, kv_cache_max_tokens, max_lora_rank, max_cached_adapters)

    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_position_embeddings

    def _memory_budget(self, fraction: float) -> int:
        """``max_batch_size`` full sequences, or the positions ``fraction`` of the available memory holds."""
        if not 0 < fraction <= 1:
            raise ValueError(f"kv_cache_memory_fraction must be in (0, 1], got {fraction}")
        available = available_host_memory()
        # a slot's buffer grows by doubling: it may hold twice the positions it is filled with
        holds = int(fraction * available) // (2 * self.model.cache.bytes_per_position)
        if holds < self.max_seq_len:
            raise ValueError(
                f"the KV cache of one {self.max_seq_len}-token sequence does not fit {fraction:.0%} of the host's "
                f"{available / 2**30:.1f} GiB of available memory ({holds} positions): lower max_seq_len, free "
                "memory, or set kv_cache_max_tokens"
            )
        return min(self.max_batch_size * self.max_seq_len, holds)

    def add_request(
        self,
        request_id: str,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams = GREEDY,
        end_id: int | None = None,
        stop_words: Sequence[Sequence[int]] = (),
        token_mask: TokenMask | None = None,
        logits_mask: LogitsMask | None = None,
        returns: Returns = Returns(),
        adapter: RuntimeAdapter | None = None,
    ) -> None:
        """Queue a request (with ``adapter``'s LoRA: from ``self.lora``); it is prefilled by the next ``step``.
        Raises ValueError for a bad request."""
        prompt = [int(t) for t in prompt_ids]
        vocab = self.model.vocab_size
        if not prompt:
            raise ValueError("prompt_ids must not be empty")
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"prompt_ids must be token ids in [0, {vocab})")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if len(prompt) + max_new_tokens > self.max_seq_len:
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                f"maximum sequence length {self.max_seq_len}"
            )
        if len(prompt) + max_new_tokens > self.kv_cache_max_tokens:
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the KV cache's "
                f"capacity of {self.kv_cache_max_tokens} tokens (kv_cache_max_tokens): it could never run"
            )
        words = [[int(t) for t in word] for word in stop_words if len(word) > 0]
        sampler = Sampler(sampling, vocab, token_mask, logits_mask)
        request = _Request(request_id, prompt, max_new_tokens, sampler, end_id, words, returns, adapter)
        with self._lock:
            if request_id in self._known:
                raise ValueError(f"request id {request_id!r} is already in flight")
            self._known.add(request_id)
            self._pending.append(request)

    def cancel(self, request_id: str) -> bool:
        """Ask for a request to stop; returns False when no such request is in flight."""
        with self._lock:
            if request_id not in self._known:
                return False
            self._cancelled.add(request_id)
            return True

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._pending or self._active or self._cancelled)

    def step(self) -> list[StepOutput]:
        """Admit waiting requests, decode one token for each prefilled one, prefill up to ``max_num_tokens``."""
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            dropped = [request for request in self._pending if request.request_id in cancelled]
            self._pending = deque(request for request in self._pending if request.request_id not in cancelled)
        # _finish takes the lock itself: cancelled requests are finished once it is released.
        outputs = [self._finish(request, None, "cancelled") for request in dropped]
        for request_id in cancelled:
            if request_id in self._active:
                outputs.append(self._finish(self._active.pop(request_id), None, "cancelled"))
        self._admit()

        decoding = [request for request in self._active.values() if request.generated]
        if decoding:
            outputs += self._decode(decoding)
        budget = max(self.max_num_tokens - len(decoding), 1)
        for request in [r for r in self._active.values() if not r.generated]:
            if budget <= 0:
                break
            chunk = min(budget, len(request.prompt_ids) - request.prefilled)
            budget -= chunk
            output = self._prefill(request, chunk)
            if output is not None:
                outputs.append(output)
        return outputs

    def _admit(self) -> None:
        """Move waiting requests into the batch, in order, while a slot and their KV-cache room are free."""
        reserved = sum(request.kv_tokens for request in self._active.values())
        with self._lock:
            while (
                self._pending
                and len(self._active) < self.max_batch_size
                and reserved + self._pending[0].kv_tokens <= self.kv_cache_max_tokens
            ):
                request = self._pending.popleft()
                reserved += request.kv_tokens
                request.slot = self.model.cache.acquire()
                self._active[request.request_id] = request

    def _decode(self, batch: list[_Request]) -> list[StepOutput]:
        """One token for each request of ``batch``, decoded together. When that fails (memory, above all: a long
        sequence's cache grows by doubling), each is decoded alone and only those that fail alone end, with an error
        saying why: the others go on. A retry rewrites the cache position the failed step may have written."""
        try:
            logits = self._decode_logits(batch)
        except (RuntimeError, MemoryError):
            return [self._decode_alone(request) for request in batch]
        return [self._advance(request, row) for request, row in zip(batch, logits, strict=True)]

    def _decode_alone(self, request: _Request) -> StepOutput:
        try:
            (row,) = self._decode_logits([request])
        except (RuntimeError, MemoryError) as exc:
            return self._fail(request, f"decoding token {len(request.generated) + 1}", exc)
        return self._advance(request, row)

    def _decode_logits(self, batch: list[_Request]) -> torch.Tensor:
        return self.model.decode(
            [r.slot for r in batch],
            [r.generated[-1] for r in batch],
            [r.next_position for r in batch],
            [r.adapter for r in batch],
        )

    def _prefill(self, request: _Request, chunk: int) -> StepOutput | None:
        """Prefill the next ``chunk`` prompt tokens; the first token's output once the prompt is done. A failure
        (memory, above all) ends this request alone, with an error saying so: the batch goes on."""
        start = request.prefilled
        try:
            logits = self.model.extend(
                request.slot,
                request.prompt_ids[start : start + chunk],
                start,
                request.returns.context_logits,
                request.adapter,
            )
        except (RuntimeError, MemoryError) as exc:
            return self._fail(request, f"prefilling the {len(request.prompt_ids)}-token prompt", exc)
        request.prefilled += chunk
        if request.returns.context_logits:
            request.context_chunks.append(logits)
            logits = logits[-1]
        if request.prefilled < len(request.prompt_ids):
            return None
        context = torch.cat(request.context_chunks) if request.context_chunks else None
        request.context_chunks = []
        return self._advance(request, logits, context)

    def _fail(self, request: _Request, doing: str, exc: BaseException) -> StepOutput:
        """End ``request`` alone after the engine failed ``doing`` its work; the error says whether memory ran out."""
        what = ENGINE_OUT_OF_MEMORY if _out_of_memory(exc) else "the engine failed"
        error = f"{what} {doing} (the requests in flight go on): {exc}"
        return replace(self._finish(request, None, "error"), error=error)

    def _advance(self, request: _Request, logits: torch.Tensor, context: torch.Tensor | None = None) -> StepOutput:
        try:
            token, scores = request.sampler.choose(logits, request.generated)
        except NoAllowedToken:
            return self._finish(request, None, "error")
        if token == request.end_id:
            return self._finish(request, None, "stop", StepOutput("", [], True, context_logits=context))
        returns = request.returns
        extras = StepOutput(
            request.request_id,
            [token],
            False,
            log_probs=[float(torch.log_softmax(scores, -1)[token])] if returns.log_probs else [],
            context_logits=context,
            generation_logits=logits[None] if returns.generation_logits else None,
        )
        request.generated.append(token)
        if any(request.generated[-len(w) :] == w for w in request.stop_words):
            return self._finish(request, token, "stop", extras)
        if len(request.generated) >= request.max_new_tokens:
            return self._finish(request, token, "length", extras)
        return extras

    def _finish(
        self, request: _Request, token: int | None, reason: FinishReason, extras: StepOutput | None = None
    ) -> StepOutput:
        """The request's last output (its log probs and logits taken from ``extras``); frees its slot."""
        if request.slot >= 0:
            self._active.pop(request.request_id, None)
            self.model.cache.release(request.slot)
            request.slot = -1
        with self._lock:
            self._known.discard(request.request_id)
        ids = [] if token is None else [token]
        if extras is None:
            return StepOutput(request.request_id, ids, True, reason)
        return replace(extras, request_id=request.request_id, new_token_ids=ids, finished=True, finish_reason=reason)

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams = GREEDY,
        end_id: int | None = None,
        stop_words: Sequence[Sequence[int]] = (),
        token_mask: TokenMask | None = None,
        adapter: RuntimeAdapter | None = None,
    ) -> GenerationResult:
        """Run one request to completion and return its tokens.

        This drives ``step`` itself: use it when no other thread runs the step loop. Results of other
        requests produced meanwhile are dropped.
        """
        request_id = new_request_id("generate-")
        self.add_request(
            request_id,
            prompt_ids,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            end_id=end_id,
            stop_words=stop_words,
            token_mask=token_mask,
            adapter=adapter,
        )
        tokens: list[int] = []
        while True:
            for out in self.step():
                if out.request_id != request_id:
                    continue
                tokens.extend(out.new_token_ids)
                if out.finished:
                    return GenerationResult(tokens, out.finish_reason or "stop")


def available_host_memory() -> int:
    """Bytes of memory the host can give without swapping (Linux ``MemAvailable``; else the free pages)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def base_shapes(model: ReferenceModel) -> BaseShapes:
    """The sizes a LoRA adapter of ``model`` must fit."""
    c = model.config
    return BaseShapes(
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_layers=c.num_layers,
        num_heads=c.num_heads,
        num_kv_heads=c.num_kv_heads,
        head_dim=c.head_size,
        vocab_size=c.vocab_size,
    )
