"""The `tensorrt_llm` tensor contract (the tensorrtllm backend's), in both directions.

`GenerationRequest.from_inputs` reads a request's input tensors as the CPU `tensorrt_llm` model gets
them; `GenerationRequest.to_inputs` writes the tensors the `ensemble` and `chat` models send to
`tensorrt_llm` (either variant). `output_tensors` shapes one response.

Sampling (`nemo_chat_core.sampling.Sampling`) follows TensorRT-LLM: `runtime_top_k` 0 and `runtime_top_p` 0
(the defaults) mean greedy, as does `temperature` 0; otherwise tokens are drawn with the request's `seed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from nemo_chat_core import word_lists
from nemo_chat_core.guided import Guide
from nemo_chat_core.sampling import Sampling
from nemo_chat_core.tensor_values import Inputs, scalar, scalar_tensor, single_text
from nemo_protocol.errors import BadRequestError


@dataclass(frozen=True)
class LoraInputs:
    """A request's LoRA adapter: its task id, and (on the first request for it, or after a cache miss) its weights
    [modules, row] and config [modules, 3] in TensorRT-LLM's layout (nemo_chat_core.lora)."""

    task_id: int
    weights: np.ndarray | None = None
    config: np.ndarray | None = None

    @classmethod
    def from_inputs(cls, get: Inputs) -> LoraInputs | None:
        task_id, weights, config = get("lora_task_id"), get("lora_weights"), get("lora_config")
        if task_id is None:
            if weights is not None or config is not None:
                raise BadRequestError("is required with lora_weights and lora_config", param="lora_task_id")
            return None
        if (weights is None) != (config is None):
            missing = "lora_weights" if weights is None else "lora_config"
            raise BadRequestError("is required with the other LoRA input", param=missing)
        if weights is not None and config is not None and weights.ndim == config.ndim == 3 and len(config) == 1:
            weights, config = weights[0], config[0]  # as the class holds them: without the batch dimension
        return cls(scalar(task_id, "lora_task_id", int, 0), weights, config)

    def to_inputs(self) -> dict[str, np.ndarray]:
        tensors = {"lora_task_id": scalar_tensor(self.task_id, np.uint64)}
        if self.weights is not None and self.config is not None:
            tensors["lora_weights"] = self.weights.astype(np.float16)[None]
            tensors["lora_config"] = self.config.astype(np.int32)[None]
        return tensors


@dataclass(frozen=True)
class GenerationRequest:
    """One request to `tensorrt_llm`."""

    input_ids: list[int]
    max_new_tokens: int
    end_id: int | None = None
    pad_id: int = 0
    streaming: bool = False
    sampling: Sampling = field(default_factory=Sampling)
    min_tokens: int = 0
    stop_words: list[list[int]] = field(default_factory=list)
    bad_words: list[list[int]] = field(default_factory=list)
    return_log_probs: bool = False
    return_context_logits: bool = False
    return_generation_logits: bool = False
    exclude_input_in_output: bool = True
    guide: Guide | None = None  # guided decoding: the output follows this schema, regex or grammar
    lora: LoraInputs | None = None  # the LoRA adapter to apply (None: the base model)

    def __post_init__(self) -> None:
        if not self.input_ids:
            raise BadRequestError("the prompt has no tokens", param="input_ids")
        if self.max_new_tokens < 1:
            raise BadRequestError(f"must be at least 1, got {self.max_new_tokens}", param="request_output_len")
        if self.min_tokens < 0:
            raise BadRequestError(f"must be >= 0, got {self.min_tokens}", param="min_tokens")

    @classmethod
    def from_inputs(cls, get: Inputs, *, exclude_input_default: bool = True) -> GenerationRequest:
        """Parse one request's tensors (batch size 1) into a request; errors name the tensor."""
        ids_tensor = get("input_ids")
        if ids_tensor is None:
            raise BadRequestError("is required", param="input_ids")
        if ids_tensor.ndim == 2 and ids_tensor.shape[0] != 1:
            raise BadRequestError(
                f"one sequence per request is accepted, got a batch of {ids_tensor.shape[0]}", param="input_ids"
            )
        ids = ids_tensor.reshape(-1).tolist()
        length = scalar(get("input_lengths"), "input_lengths", int, len(ids))
        if not 0 < length <= len(ids):
            raise BadRequestError(f"{length} does not fit the {len(ids)} input_ids", param="input_lengths")
        output_len = get("request_output_len")
        if output_len is None:
            raise BadRequestError("is required", param="request_output_len")
        beam_width = scalar(get("beam_width"), "beam_width", int, 1)
        if beam_width != 1:
            raise BadRequestError(f"only 1 (no beam search) is served, got {beam_width}", param="beam_width")
        return cls(
            input_ids=ids[:length],
            max_new_tokens=scalar(output_len, "request_output_len", int, 0),
            end_id=scalar(get("end_id"), "end_id", int, None),
            pad_id=scalar(get("pad_id"), "pad_id", int, 0),
            streaming=scalar(get("streaming"), "streaming", bool, False),
            sampling=Sampling.from_inputs(get),
            min_tokens=scalar(get("min_tokens"), "min_tokens", int, 0),
            stop_words=word_lists.words(get("stop_words_list"), "stop_words_list"),
            bad_words=word_lists.words(get("bad_words_list"), "bad_words_list"),
            return_log_probs=scalar(get("return_log_probs"), "return_log_probs", bool, False),
            return_context_logits=scalar(get("return_context_logits"), "return_context_logits", bool, False),
            return_generation_logits=scalar(get("return_generation_logits"), "return_generation_logits", bool, False),
            exclude_input_in_output=scalar(
                get("exclude_input_in_output"), "exclude_input_in_output", bool, exclude_input_default
            ),
            guide=_guide(get),
            lora=LoraInputs.from_inputs(get),
        )

    def to_inputs(self) -> dict[str, np.ndarray]:
        """The input tensors of this request, batch size 1."""
        tensors = {
            "input_ids": np.array([self.input_ids], dtype=np.int32),
            "input_lengths": scalar_tensor(len(self.input_ids), np.int32),
            "request_output_len": scalar_tensor(self.max_new_tokens, np.int32),
            "pad_id": scalar_tensor(self.pad_id, np.int32),
            "streaming": scalar_tensor(self.streaming, np.bool_),
            **self.sampling.to_inputs(),
            "min_tokens": scalar_tensor(self.min_tokens, np.int32),
            "return_log_probs": scalar_tensor(self.return_log_probs, np.bool_),
            "return_context_logits": scalar_tensor(self.return_context_logits, np.bool_),
            "return_generation_logits": scalar_tensor(self.return_generation_logits, np.bool_),
            "exclude_input_in_output": scalar_tensor(self.exclude_input_in_output, np.bool_),
        }
        if self.end_id is not None:
            tensors["end_id"] = scalar_tensor(self.end_id, np.int32)
        if self.stop_words:
            tensors["stop_words_list"] = word_lists.word_list(self.stop_words)[None]
        if self.bad_words:
            tensors["bad_words_list"] = word_lists.word_list(self.bad_words)[None]
        if self.guide is not None:
            tensors["guided_decoding_guide_type"] = np.array([[self.guide.type.encode()]], dtype=object)
            tensors["guided_decoding_guide"] = np.array([[self.guide.text.encode("utf-8")]], dtype=object)
        if self.lora is not None:
            tensors.update(self.lora.to_inputs())
        return tensors


def _guide(get: Inputs) -> Guide | None:
    """The request's guide: both guided-decoding inputs, or neither."""
    kind, text = get("guided_decoding_guide_type"), get("guided_decoding_guide")
    if kind is None and text is None:
        return None
    if kind is None or text is None:
        missing = "guided_decoding_guide_type" if kind is None else "guided_decoding_guide"
        raise BadRequestError("is required with the other guided-decoding input", param=missing)
    guide_type = single_text(kind, "guided_decoding_guide_type")
    return Guide(guide_type, single_text(text, "guided_decoding_guide"), "guided_decoding_guide_type")


def stop_inputs() -> dict[str, np.ndarray]:
    """The tensors of a `stop` request: with the id of an in-flight request, it ends that request."""
    return {
        "input_ids": np.zeros((1, 1), dtype=np.int32),
        "input_lengths": np.ones((1, 1), dtype=np.int32),
        "request_output_len": np.ones((1, 1), dtype=np.int32),
        "stop": np.ones((1, 1), dtype=np.bool_),
    }


@dataclass(frozen=True)
class LogOutputs:
    """What a `tensorrt_llm` response carries beside its ids when the request asked for it (`return_*`)."""

    log_probs: list[float] | None = None  # `output_log_probs`: one per id of the response
    cum_log_prob: float | None = None  # `cum_log_probs`: the sum over every id generated so far
    context_logits: np.ndarray | None = None  # `context_logits` [prompt, vocab] float32 (first response)
    generation_logits: np.ndarray | None = None  # `generation_logits` [ids, vocab] float32


def output_tensors(token_ids: list[int], logs: LogOutputs | None = None) -> dict[str, np.ndarray]:
    """One response of `tensorrt_llm`: `output_ids` [1, beam 1, n] and `sequence_length` [1, 1], plus the
    log probs [1, 1, n] and [1, 1] and the logits [1, prompt, vocab] and [1, 1, n, vocab] that were asked for."""
    tensors: dict[str, np.ndarray] = {
        "output_ids": np.array([[token_ids]], dtype=np.int32).reshape(1, 1, len(token_ids)),
        "sequence_length": np.array([[len(token_ids)]], dtype=np.int32),
    }
    if logs is None:
        return tensors
    if logs.log_probs is not None:
        tensors["output_log_probs"] = np.array(logs.log_probs, dtype=np.float32).reshape(1, 1, -1)
        tensors["cum_log_probs"] = np.array([[logs.cum_log_prob or 0.0]], dtype=np.float32)
    if logs.context_logits is not None:
        tensors["context_logits"] = logs.context_logits.astype(np.float32)[None]
    if logs.generation_logits is not None:
        tensors["generation_logits"] = logs.generation_logits.astype(np.float32)[None, None]
    return tensors


def engine_logs(outputs: Mapping[str, np.ndarray]) -> LogOutputs:
    """What one `tensorrt_llm` response (its output tensors by name) carries beside its ids."""
    cum, context, generation = (
        outputs.get("cum_log_probs"),
        outputs.get("context_logits"),
        outputs.get("generation_logits"),
    )
    return LogOutputs(
        log_probs=output_log_probs(outputs.get("output_log_probs")),
        cum_log_prob=None if cum is None else float(cum.reshape(-1)[0]),
        context_logits=None if context is None else context.reshape(-1, context.shape[-1]),
        generation_logits=None if generation is None else generation.reshape(-1, generation.shape[-1]),
    )


def output_log_probs(output_log_probs: np.ndarray | None) -> list[float] | None:
    """The log probability of each generated id of one response (first beam; the prompt's ids have none),
    or None when the response carries none (the request did not set `return_log_probs`)."""
    if output_log_probs is None or output_log_probs.size == 0:
        return None
    return [float(v) for v in output_log_probs.reshape(-1, output_log_probs.shape[-1])[0]]


def output_token_ids(output_ids: np.ndarray | None, sequence_length: np.ndarray | None) -> list[int]:
    """The ids of one response (first beam), cut at its `sequence_length`."""
    if output_ids is None or output_ids.size == 0:
        return []
    ids = output_ids.reshape(-1, output_ids.shape[-1])[0]
    count = ids.shape[0] if sequence_length is None else int(sequence_length.reshape(-1)[0])
    return ids[:count].tolist()
