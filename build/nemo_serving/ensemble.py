"""The `ensemble` model: text in, text out, over `preprocessing` and `tensorrt_llm`.

Streamed text is cut only at character boundaries: one incremental decoder per request holds back
the bytes of a character split over tokens, and byte-level BPE keeps every space inside its token,
so no chunk carries a broken character and no space is lost (the stock ensemble's defect).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

from nemo_chat_core import word_lists
from nemo_chat_core.engine_tensors import GenerationRequest, LogOutputs, LoraInputs
from nemo_chat_core.log_probs import (
    MAX_TOP_LOGPROBS,
    TokenLogProb,
    chosen,
    completion_logprobs,
    prompt_log_probs,
    scored,
)
from nemo_chat_core.lora import AdapterRegistry, LoraAdapter, requested_adapter, with_weights
from nemo_chat_core.sampling import Sampling
from nemo_chat_core.tensor_values import Inputs, scalar, single_text, string_tensor, texts
from nemo_protocol.errors import BadRequestError, NotFoundError
from nemo_protocol.tekken import Tekkenizer

PREPROCESSING_OUTPUTS = [
    "input_ids",
    "input_lengths",
    "request_output_len",
    "stop_words_list",
    "bad_words_list",
    "end_id",
    "pad_id",
]


@dataclass(frozen=True)
class TextRequest:
    """The `ensemble` model's inputs. Sampling inputs left out keep TensorRT-LLM's defaults (greedy).

    The prompt is `text_input` (encoded after `<s>`) or `input_ids` (token ids, used as they are). With
    `exclude_input_in_output` false a whole answer starts with the prompt (`max_tokens` may then be 0: the prompt
    only). `return_log_probs` adds `output_log_probs` / `cum_log_probs`; `logprobs` N adds a `logprobs` JSON
    object in OpenAI's completions shape with the N most likely tokens at each position (the prompt's too when
    it is in the output).

    A LoRA adapter of the deployment is named by `lora_name` (this ensemble's addition: OpenAI's `model`; the served
    model's name means the base model), or given as the stock `lora_task_id` (with `lora_weights` and `lora_config`
    on its first request), passed on to `tensorrt_llm` as they are.
    """

    text: str
    max_tokens: int
    stream: bool = False
    sampling: Sampling = field(default_factory=Sampling)
    stop_words: tuple[str, ...] = ()
    bad_words: tuple[str, ...] = ()
    prompt_ids: tuple[int, ...] = ()
    exclude_input_in_output: bool = True
    return_log_probs: bool = False
    logprobs: int | None = None
    min_tokens: int = 0
    end_id: int | None = None  # overrides the tokenizer's; -1: generate until max_tokens (ignore the end id)
    lora_name: str | None = None
    lora: LoraInputs | None = None

    @property
    def echo(self) -> bool:
        """The output starts with the prompt: `exclude_input_in_output` false on a whole answer (streamed, only new
        text comes, as from the tensorrtllm backend)."""
        return not self.exclude_input_in_output and not self.stream

    def __post_init__(self) -> None:
        least = 0 if self.echo else 1
        if self.max_tokens < least:
            raise BadRequestError(f"must be at least {least}, got {self.max_tokens}", param="max_tokens")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequestError(f"must be in [0, {MAX_TOP_LOGPROBS}], got {self.logprobs}", param="logprobs")

    @classmethod
    def from_inputs(cls, get: Inputs) -> TextRequest:
        text, ids, max_tokens = get("text_input"), get("input_ids"), get("max_tokens")
        if (text is None) == (ids is None):
            raise BadRequestError("give the prompt as text_input or as input_ids, not both", param="text_input")
        if max_tokens is None:
            raise BadRequestError("is required", param="max_tokens")
        for name in ("beam_width", "num_return_sequences"):
            value = scalar(get(name), name, int, 1)
            if value != 1:
                raise BadRequestError(f"only 1 is served, got {value}", param=name)
        for name in ("return_context_logits", "return_generation_logits", "return_perf_metrics"):
            if scalar(get(name), name, bool, False):
                raise BadRequestError("is not served by this ensemble (false only); see logprobs", param=name)
        if texts(get("embedding_bias_words"), "embedding_bias_words"):
            raise BadRequestError("is not served by this ensemble (no embedding bias)", param="embedding_bias_words")
        scalar(get("length_penalty"), "length_penalty", float, 1.0)  # beam search only: no effect at beam width 1
        logprobs = get("logprobs")
        end_id = scalar(get("end_id"), "end_id", int, None)
        lora_name, lora = get("lora_name"), LoraInputs.from_inputs(get)
        if lora_name is not None and lora is not None:
            raise BadRequestError("name the adapter by lora_name or by lora_task_id, not both", param="lora_name")
        return cls(
            text="" if text is None else single_text(text, "text_input"),
            max_tokens=scalar(max_tokens, "max_tokens", int, 0),
            stream=scalar(get("stream"), "stream", bool, False),
            sampling=Sampling.from_inputs(get, top_k="top_k", top_p="top_p"),
            stop_words=tuple(texts(get("stop_words"), "stop_words")),
            bad_words=tuple(texts(get("bad_words"), "bad_words")),
            prompt_ids=() if ids is None else tuple(_prompt_ids(ids)),
            exclude_input_in_output=scalar(get("exclude_input_in_output"), "exclude_input_in_output", bool, True),
            return_log_probs=scalar(get("return_log_probs"), "return_log_probs", bool, False),
            logprobs=None if logprobs is None else scalar(logprobs, "logprobs", int, 0),
            min_tokens=scalar(get("min_tokens"), "min_tokens", int, 0),
            end_id=end_id,
            lora_name=None if lora_name is None else single_text(lora_name, "lora_name"),
            lora=lora,
        )

    def check_logits(self, *, context: bool, generation: bool) -> None:
        """400 naming the field when the engine does not return the logits its log probs need."""
        if self.logprobs is None:
            return
        if self.echo and not context:
            raise BadRequestError(
                "with logprobs needs the prompt's logits: this engine was built without gather_context_logits",
                param="exclude_input_in_output",
            )
        if self.logprobs > 0 and not generation:
            raise BadRequestError(
                "above 0 needs the generation logits: this engine was built without gather_generation_logits "
                "(logprobs 0 gives each token's own log probability)",
                param="logprobs",
            )

    def preprocessing_inputs(self) -> dict[str, np.ndarray]:
        tensors = {
            "text_input": np.array([[self.text.encode("utf-8")]], dtype=object),
            "max_tokens": np.array([[max(self.max_tokens, 1)]], dtype=np.int32),
        }
        if self.stop_words:
            tensors["stop_words"] = np.array([[w.encode("utf-8") for w in self.stop_words]], dtype=object)
        if self.bad_words:
            tensors["bad_words"] = np.array([[w.encode("utf-8") for w in self.bad_words]], dtype=object)
        return tensors

    def generation(self, preprocessed: dict[str, np.ndarray]) -> GenerationRequest:
        """The `tensorrt_llm` request from `preprocessing`'s outputs (batch size 1)."""
        length = int(preprocessed["input_lengths"].reshape(-1)[0])
        ids = list(self.prompt_ids) or preprocessed["input_ids"].reshape(-1)[:length].tolist()
        end_id = int(preprocessed["end_id"].reshape(-1)[0]) if self.end_id is None else self.end_id
        return GenerationRequest(
            input_ids=ids,
            max_new_tokens=int(preprocessed["request_output_len"].reshape(-1)[0]),
            end_id=None if end_id < 0 else end_id,
            pad_id=int(preprocessed["pad_id"].reshape(-1)[0]),
            streaming=self.stream,
            sampling=self.sampling,
            min_tokens=self.min_tokens,
            stop_words=word_lists.words(preprocessed["stop_words_list"], "stop_words"),
            bad_words=word_lists.words(preprocessed["bad_words_list"], "bad_words"),
            return_log_probs=self.return_log_probs or self.logprobs is not None,
            return_context_logits=self.logprobs is not None and self.echo,
            return_generation_logits=bool(self.logprobs),
        )

    def adapted(self, generation: GenerationRequest, adapters: AdapterRegistry | None, base_name: str) -> Adapted:
        """``generation`` with the request's LoRA adapter. An unknown ``lora_name`` is a NotFoundError naming the
        tensor and the served names."""
        if self.lora is not None:
            known = adapters.find(self.lora.task_id) if adapters is not None else None
            generation = replace(generation, lora=self.lora)
            return Adapted(generation, with_weights(generation, known if self.lora.weights is None else None), known)
        try:
            adapter = requested_adapter(adapters, self.lora_name, base_name)
        except NotFoundError as exc:
            raise NotFoundError(exc.message, param="lora_name") from None
        if adapter is not None:
            generation = replace(generation, lora=LoraInputs(adapter.task_id))
        return Adapted(generation, with_weights(generation, adapter), adapter)


@dataclass(frozen=True)
class Adapted:
    """The `tensorrt_llm` request of an `ensemble` request, with its LoRA adapter."""

    generation: GenerationRequest
    resend: GenerationRequest | None  # with the adapter's weights, for the engine's cache miss (None: none known)
    adapter: LoraAdapter | None  # the deployment's adapter it uses (None: the base model, or a task id of the caller's)


def _prompt_ids(ids: np.ndarray) -> list[int]:
    values = ids.reshape(-1).tolist()
    if not values:
        raise BadRequestError("the prompt has no tokens", param="input_ids")
    return [int(v) for v in values]


class TextResponses:
    """Turns `tensorrt_llm`'s responses into the `ensemble`'s: text cut only at character boundaries, the
    prompt first when it is in the output, the log probs asked for, and in the last response the finish
    reason; every response has the token counts so far (`num_input_tokens`, `num_output_tokens`).

    Streamed, `feed` returns what came before once something new arrives, so the last response always has
    content to carry with the finish reason; whole, everything goes out with `finish`.
    """

    def __init__(self, tokenizer: Tekkenizer, request: TextRequest, prompt_ids: list[int]) -> None:
        self._tokenizer = tokenizer
        self._request = request
        self._prompt_ids = prompt_ids
        self._decoder = tokenizer.incremental_decoder()
        self.generated = 0
        self._sent_chars = 0
        echo = request.echo
        self._text = [request.text or tokenizer.decode(prompt_ids)] if echo else []
        self._log_probs: list[float] = []
        self._cum_log_prob = 0.0
        self._tokens: list[TokenLogProb] = []
        self._prompt_pending = echo and request.logprobs is not None
        self._fed = False  # the first response waits for the prompt's log probs, which come with the first ids

    def feed(self, ids: list[int], logs: LogOutputs | None = None) -> dict[str, np.ndarray] | None:
        ready = self._take() if self._request.stream and self._fed and self._has_content() else None
        self._fed = True
        ids = ids[: max(self._request.max_tokens - self.generated, 0)]
        self.generated += len(ids)
        self._text.append(self._decoder.feed(ids))
        if logs is not None:
            self._add_logs(ids, logs)
        return ready

    def finish(self) -> dict[str, np.ndarray]:
        self._text.append(self._decoder.flush())
        final = self._take()
        reason = "length" if self.generated >= self._request.max_tokens else "stop"
        final["finish_reason"] = string_tensor(reason)[None]
        return final

    def _add_logs(self, ids: list[int], logs: LogOutputs) -> None:
        log_probs = (logs.log_probs or [])[: len(ids)]
        self._log_probs += log_probs
        self._cum_log_prob += sum(log_probs)
        top_n = self._request.logprobs
        if top_n is None:
            return
        if self._prompt_pending and logs.context_logits is not None:
            self._tokens += prompt_log_probs(self._prompt_ids, logs.context_logits, top_n)
            self._prompt_pending = False
        if top_n and logs.generation_logits is not None:
            scored_ids = scored(ids, logs.generation_logits[: len(ids)], top_n)
            self._tokens += [replace(t, log_prob=p) for t, p in zip(scored_ids, log_probs, strict=True)]
        else:
            self._tokens += chosen(ids, log_probs)

    def _has_content(self) -> bool:
        return any(self._text) or bool(self._tokens) or bool(self._log_probs)

    def _take(self) -> dict[str, np.ndarray]:
        text = "".join(self._text)
        tensors = {
            "text_output": string_tensor(text),  # shape [1], as the stock postprocessing sends it
            "num_input_tokens": np.array([[len(self._prompt_ids)]], dtype=np.int32),
            "num_output_tokens": np.array([[self.generated]], dtype=np.int32),  # so far
            "batch_index": _zero(),
            "sequence_index": _zero(),
        }
        if self._request.return_log_probs:
            tensors["output_log_probs"] = np.array([self._log_probs], dtype=np.float32)
            tensors["cum_log_probs"] = np.array([[self._cum_log_prob]], dtype=np.float32)
        if self._request.logprobs is not None:
            body = completion_logprobs(
                self._tokenizer, self._tokens, top_n=self._request.logprobs, text_offset=self._sent_chars
            )
            tensors["logprobs"] = string_tensor(json.dumps(body))[None]
        self._sent_chars += len(text)
        self._text, self._log_probs, self._tokens = [], [], []
        return tensors


def _zero() -> np.ndarray:
    """`batch_index` / `sequence_index`: one request, one sequence."""
    return np.zeros((1, 1), dtype=np.int32)
