"""In-flight (continuous) batching of `tensorrt_llm` requests over the CPU reference runtime.

One loop thread drives `ReferenceRuntime.step()`: requests submitted from Triton's `execute` join the
running batch at the next step, every active request decodes one token per step, and each sink gets
its tokens as they come (streaming) or all at once at the end. Before every step the loop asks each
sink whether its client cancelled, so a cancelled request leaves the batch (and frees its KV slot)
within one decode step.

`stats()` is the batcher's state (requests running in a batch slot, waiting for one, cancelled so far);
`wait_for_change()` lets another thread follow it (nemo_runtime.batch_metrics publishes it as Triton
metrics) without the loop doing anything but update counters under the lock it already takes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from nemo_chat_core.engine_tensors import GenerationRequest, LogOutputs
from nemo_protocol.errors import BadRequestError
from nemo_protocol.request_ids import new_request_id
from nemo_runtime.engine_state import (
    KV_TOKENS_PER_BLOCK,
    BatcherStats,
    BatchLoop,
    Sink,
    beyond_sequence_length,
    ids_outside_vocabulary,
    kv_blocks,
    lora_stats,
)
from nemo_runtime.guided import GrammarEngine
from nemo_runtime.sampling import GREEDY, SamplingParams, TokenMask
from nemo_runtime.scheduler import ReferenceRuntime, Returns, StepOutput

IDLE_WAIT_S = 0.05
__all__ = ["KV_TOKENS_PER_BLOCK", "BatchLoop", "BatcherStats", "InflightBatcher", "Sink", "kv_blocks", "unsupported"]


def unsupported(request: GenerationRequest) -> BadRequestError | None:
    """What the reference runtime cannot do for this request, as an error naming the tensor."""
    checks = [
        ("repetition_penalty", request.sampling.repetition_penalty != 1.0, "1.0"),
        ("presence_penalty", request.sampling.presence_penalty != 0.0, "0"),
        ("frequency_penalty", request.sampling.frequency_penalty != 0.0, "0"),
    ]
    for name, used, neutral in checks:
        if used:
            return BadRequestError(
                f"is not supported by the CPU reference runtime (accepted: {neutral}); the GPU engine supports it",
                param=name,
            )
    return None


def sampling_params(request: GenerationRequest) -> SamplingParams:
    sampling = request.sampling
    if sampling.greedy:
        return GREEDY
    return SamplingParams(
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p if sampling.top_p > 0 else 1.0,
        seed=sampling.seed,
    )


def token_mask(request: GenerationRequest, vocab_size: int) -> TokenMask | None:
    """Bans the last token of every bad word whose prefix was just generated, and `end_id` before `min_tokens`."""
    bad_words = [word for word in request.bad_words if word]
    end_id, min_tokens = request.end_id, request.min_tokens
    if not bad_words and (end_id is None or min_tokens == 0):
        return None

    def mask(generated: Sequence[int]) -> torch.Tensor | None:
        banned = [
            word[-1]
            for word in bad_words
            if len(word) == 1 or list(generated[len(generated) - len(word) + 1 :]) == word[:-1]
        ]
        if end_id is not None and len(generated) < min_tokens:
            banned.append(end_id)
        if not banned:
            return None
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[banned] = False
        return allowed

    return mask


@dataclass
class _Active:
    request: GenerationRequest
    sink: Sink
    tag: str
    generated: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)  # of `generated`, when the request returns them
    context_logits: torch.Tensor | None = None
    generation_logits: list[torch.Tensor] = field(default_factory=list)
    running: bool = False  # admitted: it has produced its first step output and holds a slot
    adapter: str | None = None  # the name of its LoRA adapter

    @property
    def positions(self) -> int:
        """The sequence positions its KV cache holds."""
        return len(self.request.input_ids) + len(self.generated)

    def returns(self) -> Returns:
        request = self.request
        return Returns(request.return_log_probs, request.return_context_logits, request.return_generation_logits)

    def logs(self, output: StepOutput) -> LogOutputs | None:
        """What a response carries beside its ids: this step's (streaming) or the whole generation's."""
        returns = self.returns()
        if returns == Returns():
            return None
        streaming = self.request.streaming
        generation_logits = [output.generation_logits] if streaming else self.generation_logits
        context_logits = output.context_logits if streaming else self.context_logits
        return LogOutputs(
            log_probs=(output.log_probs if streaming else self.log_probs) if returns.log_probs else None,
            cum_log_prob=sum(self.log_probs) if returns.log_probs else None,
            context_logits=None if context_logits is None else context_logits.numpy(),
            generation_logits=(
                torch.cat([g for g in generation_logits if g is not None]).numpy()
                if returns.generation_logits and any(g is not None for g in generation_logits)
                else None
            ),
        )


class InflightBatcher(BatchLoop):
    """Owns the step loop of one `ReferenceRuntime`. Call `close()` to stop it."""

    def __init__(
        self,
        runtime: ReferenceRuntime,
        grammar: GrammarEngine | None = None,
        adapter_name: Callable[[int], str] = str,
    ) -> None:
        self._runtime = runtime
        self._grammar = grammar  # guided decoding (None: guided requests are refused)
        self._adapter_name = adapter_name  # a LoRA task id's adapter name, for the metrics
        self._lora_requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified whenever stats() changes
        self._active: dict[str, _Active] = {}
        self._running = 0
        self._cancelled = 0
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="inflight-batcher", daemon=True)
        self._thread.start()

    @property
    def active_requests(self) -> int:
        with self._lock:
            return len(self._active)

    def _snapshot(self) -> BatcherStats:  # under self._lock
        running, max_batch_size = self._running, self._runtime.max_batch_size
        used = sum(kv_blocks(active.positions) for active in self._active.values() if active.running)
        return BatcherStats(
            running,
            len(self._active) - running,
            max_batch_size,
            self._cancelled,
            kv_blocks_used=used,
            kv_blocks_max=kv_blocks(self._runtime.kv_cache_max_tokens),
            **lora_stats(self._active.values(), self._lora_requests, self._runtime.lora.max_adapters),
        )

    def submit(self, request: GenerationRequest, sink: Sink, tag: str = "") -> None:
        """Queue a request; raises BadRequestError (nothing queued) when it cannot be served."""
        problem = unsupported(request) or self._out_of_range(request)
        if problem is not None:
            raise problem
        guided = None
        if request.guide is not None:
            if self._grammar is None:
                raise BadRequestError("this model serves no guided decoding", param="guided_decoding_guide_type")
            guided = self._grammar.mask(request.guide)
        adapter = self._runtime.lora.resolve(request.lora)  # BadRequestError: a cache miss, or bad weights
        runtime_id = new_request_id()
        name = None if request.lora is None else self._adapter_name(request.lora.task_id)
        with self._lock:
            self._active[runtime_id] = _Active(request, sink, tag, adapter=name)
            if name is not None:
                self._lora_requests[name] += 1
            self._changed.notify_all()
        try:
            self._runtime.add_request(
                runtime_id,
                request.input_ids,
                max_new_tokens=request.max_new_tokens,
                sampling=sampling_params(request),
                end_id=request.end_id,
                stop_words=request.stop_words,
                token_mask=token_mask(request, self._runtime.model.vocab_size),
                logits_mask=guided,
                returns=self._active[runtime_id].returns(),
                adapter=adapter,
            )
        except ValueError as exc:
            with self._lock:
                del self._active[runtime_id]
                self._changed.notify_all()
            raise BadRequestError(str(exc), param="input_ids") from None
        self._wake.set()

    def _out_of_range(self, request: GenerationRequest) -> BadRequestError | None:
        """Ids outside the vocabulary and lengths beyond the model, named by their tensor (refused up front: inside
        the batch step they would fail every request in flight)."""
        return ids_outside_vocabulary(request, self._runtime.model.vocab_size) or beyond_sequence_length(
            request, self._runtime.max_seq_len
        )

    def stop(self, tag: str) -> int:
        """End the in-flight requests submitted with `tag` (the `stop` input); returns how many."""
        with self._lock:
            ids = [runtime_id for runtime_id, active in self._active.items() if tag and active.tag == tag]
        for runtime_id in ids:
            self._runtime.cancel(runtime_id)
        self._wake.set()
        return len(ids)

    # ----- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed:
            if not self._runtime.has_work():
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            self._cancel_abandoned()
            try:
                outputs = self._runtime.step()
            except Exception as exc:  # a bug or resource failure: fail the batch, keep serving
                self._fail_all(f"generation failed: {exc}")
                continue
            for output in outputs:
                self._deliver(output)

    def _cancel_abandoned(self) -> None:
        with self._lock:
            items = list(self._active.items())
        for runtime_id, active in items:
            try:
                cancelled = active.sink.is_cancelled()
            except Exception:
                cancelled = True
            if cancelled:
                self._runtime.cancel(runtime_id)

    def _deliver(self, output: StepOutput) -> None:
        with self._lock:
            active = self._active.get(output.request_id)
            if active is not None and output.finished:
                del self._active[output.request_id]
                self._running -= active.running
                self._cancelled += output.finish_reason == "cancelled"
                self._changed.notify_all()
            elif active is not None and not active.running:
                active.running = True
                self._running += 1
                self._changed.notify_all()
        if active is None:
            return
        before = kv_blocks(active.positions)
        active.generated.extend(output.new_token_ids)
        if active.running and kv_blocks(active.positions) != before:  # the KV-cache figures changed
            with self._lock:
                self._changed.notify_all()
        active.log_probs.extend(output.log_probs)
        if output.context_logits is not None:
            active.context_logits = output.context_logits
        if output.generation_logits is not None:
            active.generation_logits.append(output.generation_logits)
        request = active.request
        try:
            if output.finish_reason == "error":
                active.sink.fail(
                    output.error or "the token constraints (bad_words_list / min_tokens / the guide) allowed no token"
                )
            elif request.streaming:
                if output.new_token_ids or output.finished:
                    active.sink.send(output.new_token_ids, output.finished, active.logs(output))
            elif output.finished:
                prefix = [] if request.exclude_input_in_output else request.input_ids
                active.sink.send(prefix + active.generated, True, active.logs(output))
        except Exception:
            # The client is gone: stop generating for it.
            if not output.finished:
                self._runtime.cancel(output.request_id)

    def _fail_all(self, message: str) -> None:
        with self._lock:
            items, self._active = list(self._active.items()), {}
            self._running = 0
            self._changed.notify_all()
        for runtime_id, active in items:
            self._runtime.cancel(runtime_id)
            try:
                active.sink.fail(message)
            except Exception:
                continue
