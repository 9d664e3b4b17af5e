"""A stand-in for the `tensorrt_llm` engine: GPU-like token rates on CPU, with no model behind them.

`nemo-build repository --target stand-in` serves this instead of an engine, to measure everything above
`tensorrt_llm` (the `chat`, `ensemble`, `preprocessing` and `postprocessing` models, the gateway, the
client) at the token rates a GPU produces. It keeps the tensor contract and the in-flight batching of the
CPU `tensorrt_llm` model (nemo_runtime.inflight) and replaces the model by a clock:

* an engine step runs every 1 / `tokens_per_s` seconds and gives one token to every running request, so
  each stream gets `tokens_per_s` tokens/s and the engine `tokens_per_s` x running streams; at most
  `max_batch_size` requests run, the others wait for a slot (FIFO) and join at the next step after one
  frees. A request that arrives while the engine is idle gets its first token at once; one that arrives
  while it runs, at the next step. A step that starts late (the loop fell behind) is not made up for by
  a burst beyond one step: the rate then drops, as a GPU's does when its steps take longer;
* tokens are ordinary text tokens of the Tekken vocabulary (:data:`TEXT`, one sentence after another, so
  the detokenized output reads as text), never control tokens; the sentence a request starts at depends
  on its prompt only: the same prompt streams the same tokens;
* a request ends after `max_new_tokens` (`length`), when a stop word was generated (`stop`, the stop word
  included, as TensorRT-LLM does), or, only when `end_after_tokens` > 0 and the request has an `end_id`,
  at the end id after `max(end_after_tokens, min_tokens)` tokens (`stop`, the end id not returned).
  `bad_words_list` is accepted and not applied (the text never changes); sampling parameters are
  accepted and change nothing; the penalties are refused as the CPU model refuses them
  (:func:`nemo_runtime.inflight.unsupported`), and so are log probs and logits (it has no model);
* `stop(tag)` (the `stop` input) ends the requests submitted with that tag at the next step; whether a
  client cancelled is asked at most every `cancellation_check_s` (each ask crosses to the Triton
  process), like the tensorrtllm backend's `cancellation_check_period_ms`.

Per token the loop does a list lookup and the sink's `send` (one Triton response): no tensors, no logits.
`stats()` / `wait_for_change()` / `close()` are InflightBatcher's (nemo_runtime.engine_state.BatchLoop), so
nemo_runtime.batch_metrics publishes the same metrics.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nemo_chat_core.engine_tensors import GenerationRequest
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer
from nemo_runtime.engine_state import KV_TOKENS_PER_BLOCK, BatcherStats, BatchLoop, Sink, kv_blocks
from nemo_runtime.inflight import unsupported

DEFAULT_TOKENS_PER_S = 200.0
DEFAULT_CANCELLATION_CHECK_S = 0.1
IDLE_WAIT_S = 0.05
TEXT = (
    "The quick brown fox jumps over the lazy dog. ",
    "A stand-in engine streams these sentences at a fixed rate, one token per step for every request. ",
    "No model runs here: the tokens come from a clock, so the servers above it are what gets measured. ",
    "Every request with the same prompt receives the same words in the same order. ",
    "Real engines write better prose, but they also need a GPU to do it. ",
)
"""What the stand-in says, one sentence after another (each encoded on its own; together they decode to the text)."""


def text_token_ids(tokenizer: Tekkenizer, sentences: Sequence[str] = TEXT) -> list[list[int]]:
    """The Tekken ids of each sentence; refuses a sentence that encodes to a control token."""
    encoded = [tokenizer.encode(sentence) for sentence in sentences]
    for sentence, ids in zip(sentences, encoded, strict=True):
        if not ids or any(tokenizer.is_control(token) for token in ids):
            raise ValueError(f"the stand-in sentence {sentence!r} does not encode to text tokens only")
    return encoded


@dataclass
class _Stream:
    request: GenerationRequest
    sink: Sink
    tag: str
    start: int  # index into the token cycle of the first token
    end_at: int | None  # tokens after which the end id comes (None: never)
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False


class StandInEngine(BatchLoop):
    """The step loop of the stand-in engine (a daemon thread). Call `close()` to stop it."""

    def __init__(
        self,
        sentences: Sequence[Sequence[int]],
        *,
        tokens_per_s: float = DEFAULT_TOKENS_PER_S,
        max_batch_size: int = 64,
        max_seq_len: int = 16384,
        vocab_size: int = 131072,
        end_after_tokens: int = 0,
        cancellation_check_s: float = DEFAULT_CANCELLATION_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not math.isfinite(tokens_per_s) or tokens_per_s <= 0:
            raise ValueError(f"tokens_per_s must be a positive number, got {tokens_per_s}")
        if max_batch_size < 1 or max_seq_len < 2 or end_after_tokens < 0 or cancellation_check_s <= 0:
            raise ValueError("max_batch_size >= 1, max_seq_len >= 2, end_after_tokens >= 0, cancellation_check_s > 0")
        if not sentences or not all(sentences):
            raise ValueError("the stand-in needs at least one non-empty sentence of token ids")
        self.tokens_per_s = tokens_per_s
        self.period_s = 1.0 / tokens_per_s
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.end_after_tokens = end_after_tokens
        self.cancellation_check_s = cancellation_check_s
        self._cycle: list[int] = [int(token) for sentence in sentences for token in sentence]
        self._starts: list[int] = [0, *itertools.accumulate(len(sentence) for sentence in sentences[:-1])]
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified whenever stats() changes
        self._waiting: deque[_Stream] = deque()
        self._running: list[_Stream] = []
        self._stop_tags: set[str] = set()
        self._cancelled = 0
        self.steps = 0  # engine steps run so far (each gave one token to every running request)
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="stand-in-engine", daemon=True)
        self._thread.start()

    # ----- what the model calls ---------------------------------------------------------------------
    def tokens_for(self, prompt: Sequence[int], count: int) -> list[int]:
        """The first `count` tokens a request with this prompt receives (ends aside)."""
        start = self._start(prompt)
        return [self._cycle[(start + n) % len(self._cycle)] for n in range(count)]

    def submit(self, request: GenerationRequest, sink: Sink, tag: str = "") -> None:
        """Queue a request; raises BadRequestError (nothing queued) when it cannot be served."""
        problem = unsupported(request)
        if problem is not None:
            raise problem
        for name in ("return_log_probs", "return_context_logits", "return_generation_logits"):
            if getattr(request, name):
                raise BadRequestError("is not supported by the stand-in engine (it has no model)", param=name)
        prompt = request.input_ids
        if any(not 0 <= token < self.vocab_size for token in prompt):
            raise BadRequestError(f"prompt_ids must be token ids in [0, {self.vocab_size})", param="input_ids")
        if len(prompt) + request.max_new_tokens > self.max_seq_len:
            raise BadRequestError(
                f"prompt ({len(prompt)} tokens) + max_new_tokens ({request.max_new_tokens}) exceeds the model's "
                f"maximum sequence length {self.max_seq_len}",
                param="input_ids",
            )
        end_at = None
        if self.end_after_tokens and request.end_id is not None:
            end_at = max(self.end_after_tokens, request.min_tokens)
        stream = _Stream(request, sink, tag, self._start(prompt), end_at)
        with self._lock:
            self._waiting.append(stream)
            self._changed.notify_all()
        self._wake.set()

    def stop(self, tag: str) -> int:
        """End the in-flight requests submitted with `tag` (the `stop` input) at the next step; returns how many."""
        if not tag:
            return 0
        with self._lock:
            count = sum(stream.tag == tag for stream in (*self._waiting, *self._running))
            if count:
                self._stop_tags.add(tag)
        self._wake.set()
        return count

    @property
    def active_requests(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._running)

    def _snapshot(self) -> BatcherStats:  # under self._lock
        used = sum(kv_blocks(len(stream.request.input_ids) + len(stream.generated)) for stream in self._running)
        return BatcherStats(
            len(self._running),
            len(self._waiting),
            self.max_batch_size,
            self._cancelled,
            kv_blocks_used=used,
            kv_blocks_max=self.max_batch_size * kv_blocks(self.max_seq_len),
        )

    def _start(self, prompt: Sequence[int]) -> int:
        digest = zlib.crc32(array("q", prompt).tobytes())
        return self._starts[digest % len(self._starts)]

    # ----- the loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        next_step: float | None = None  # when the next step is due; None while idle
        next_cancel_check = 0.0
        while not self._closed:
            with self._lock:
                busy = bool(self._running or self._waiting)
            if not busy:
                next_step = None
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            now = self._clock()
            if next_step is None:
                next_step = now
            elif now < next_step:
                self._wake.wait(next_step - now)  # woken early by close(), a stop or a new request
                self._wake.clear()
                if self._clock() < next_step:
                    continue
            if self._clock() >= next_cancel_check:
                self._check_cancelled()
                next_cancel_check = self._clock() + self.cancellation_check_s
            self._step()
            next_step += self.period_s
            now = self._clock()
            if next_step < now - self.period_s:  # more than a step behind: run on from now, no burst
                next_step = now

    def _check_cancelled(self) -> None:
        with self._lock:
            streams = [*self._waiting, *self._running]
        for stream in streams:
            try:
                stream.cancelled = stream.cancelled or stream.sink.is_cancelled()
            except Exception:
                stream.cancelled = True

    def _step(self) -> None:
        with self._lock:
            stop_tags, self._stop_tags = self._stop_tags, set()
            if stop_tags:
                for stream in (*self._waiting, *self._running):
                    stream.cancelled = stream.cancelled or stream.tag in stop_tags
            left = [stream for stream in self._waiting if stream.cancelled]  # cancelled before they ran
            if left:
                self._waiting = deque(stream for stream in self._waiting if not stream.cancelled)
            admitted = 0
            while self._waiting and len(self._running) < self.max_batch_size:
                self._running.append(self._waiting.popleft())
                admitted += 1
            running = self._running  # only this thread changes it
        for stream in left:
            self._finish(stream, None)
        self.steps += 1
        cycle, length = self._cycle, len(self._cycle)
        crossed_a_block = False
        for stream in running:
            request, generated = stream.request, stream.generated
            count = len(generated)
            crossed_a_block |= (len(request.input_ids) + count) % KV_TOKENS_PER_BLOCK == 0
            if stream.cancelled or (stream.end_at is not None and count >= stream.end_at):
                self._finish(stream, None)  # cancelled, or the end id came: it is not returned
                left.append(stream)
                continue
            token = cycle[(stream.start + count) % length]
            generated.append(token)
            if count + 1 >= request.max_new_tokens or (
                request.stop_words and any(generated[-len(word) :] == word for word in request.stop_words)
            ):
                self._finish(stream, token)
                left.append(stream)
            elif request.streaming and not self._send(stream, [token], False):
                left.append(stream)  # the client is gone: no more responses
        if crossed_a_block and not (left or admitted):  # only the KV-cache figures changed
            with self._lock:
                self._changed.notify_all()
        if left or admitted:
            with self._lock:
                gone = {id(stream) for stream in left}
                self._running = [stream for stream in self._running if id(stream) not in gone]
                self._cancelled += sum(stream.cancelled for stream in left)
                self._changed.notify_all()

    def _finish(self, stream: _Stream, token: int | None) -> None:
        """Send the last response: the last token (streaming), everything (not streaming), or just the end."""
        request = stream.request
        if request.streaming:
            self._send(stream, [] if token is None else [token], True)
        else:
            prefix = [] if request.exclude_input_in_output else request.input_ids
            self._send(stream, prefix + stream.generated, True)

    def _send(self, stream: _Stream, token_ids: list[int], final: bool) -> bool:
        """False when the client is gone (the stream then ends without another response)."""
        try:
            stream.sink.send(token_ids, final)
        except Exception:
            stream.cancelled = True
            return False
        return True
