"""The `tensorrt_llm` tensor contract (the tensorrtllm backend's), in both directions.

`GenerationRequest.from_inputs` reads a request's input tensors as the CPU `tensorrt_llm` model gets
them; `GenerationRequest.to_inputs` writes the tensors the `ensemble` and `chat` models send to
`tensorrt_llm` (either variant). `output_tensors` shapes one response.

Sampling follows TensorRT-LLM: `runtime_top_k` 0 and `runtime_top_p` 0 (the defaults) mean greedy, as
does `temperature` 0; otherwise tokens are drawn with the request's `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nemo_protocol.errors import InvalidRequestError

from nemo_serving import word_lists
from nemo_serving.tensors import Inputs, scalar


@dataclass(frozen=True)
class GenerationRequest:
    """One request to `tensorrt_llm`."""

    input_ids: list[int]
    max_new_tokens: int
    end_id: int | None = None
    pad_id: int = 0
    streaming: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    stop_words: list[list[int]] = field(default_factory=list)
    bad_words: list[list[int]] = field(default_factory=list)
    return_log_probs: bool = False
    exclude_input_in_output: bool = True

    def __post_init__(self) -> None:
        if not self.input_ids:
            raise InvalidRequestError("input_ids", "the prompt has no tokens")
        if self.max_new_tokens < 1:
            raise InvalidRequestError("request_output_len", f"must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InvalidRequestError("temperature", f"must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidRequestError("runtime_top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise InvalidRequestError("runtime_top_p", f"must be in [0, 1] (0 = off), got {self.top_p}")
        if self.min_tokens < 0:
            raise InvalidRequestError("min_tokens", f"must be >= 0, got {self.min_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1 or (self.top_k == 0 and self.top_p == 0)

    @classmethod
    def from_inputs(cls, get: Inputs, *, exclude_input_default: bool = True) -> GenerationRequest:
        """Parse one request's tensors (batch size 1) into a request; errors name the tensor."""
        ids_tensor = get("input_ids")
        if ids_tensor is None:
            raise InvalidRequestError("input_ids", "is required")
        if ids_tensor.ndim == 2 and ids_tensor.shape[0] != 1:
            raise InvalidRequestError(
                "input_ids", f"one sequence per request is accepted, got a batch of {ids_tensor.shape[0]}"
            )
        ids = ids_tensor.reshape(-1).tolist()
        length = scalar(get("input_lengths"), "input_lengths", int, len(ids))
        if not 0 < length <= len(ids):
            raise InvalidRequestError("input_lengths", f"{length} does not fit the {len(ids)} input_ids")
        output_len = get("request_output_len")
        if output_len is None:
            raise InvalidRequestError("request_output_len", "is required")
        seed = get("seed")
        beam_width = scalar(get("beam_width"), "beam_width", int, 1)
        if beam_width != 1:
            raise InvalidRequestError("beam_width", f"only 1 (no beam search) is served, got {beam_width}")
        return cls(
            input_ids=ids[:length],
            max_new_tokens=scalar(output_len, "request_output_len", int, 0),
            end_id=scalar(get("end_id"), "end_id", int, None),  # type: ignore[arg-type]
            pad_id=scalar(get("pad_id"), "pad_id", int, 0),
            streaming=scalar(get("streaming"), "streaming", bool, False),
            temperature=scalar(get("temperature"), "temperature", float, 1.0),
            top_k=scalar(get("runtime_top_k"), "runtime_top_k", int, 0),
            top_p=scalar(get("runtime_top_p"), "runtime_top_p", float, 0.0),
            seed=None if seed is None else scalar(seed, "seed", int, 0),
            repetition_penalty=scalar(get("repetition_penalty"), "repetition_penalty", float, 1.0),
            presence_penalty=scalar(get("presence_penalty"), "presence_penalty", float, 0.0),
            frequency_penalty=scalar(get("frequency_penalty"), "frequency_penalty", float, 0.0),
            min_tokens=scalar(get("min_tokens"), "min_tokens", int, 0),
            stop_words=word_lists.words(get("stop_words_list"), "stop_words_list"),
            bad_words=word_lists.words(get("bad_words_list"), "bad_words_list"),
            return_log_probs=scalar(get("return_log_probs"), "return_log_probs", bool, False),
            exclude_input_in_output=scalar(
                get("exclude_input_in_output"), "exclude_input_in_output", bool, exclude_input_default
            ),
        )

    def to_inputs(self) -> dict[str, np.ndarray]:
        """The input tensors of this request, batch size 1."""

        def one(value: object, dtype: type) -> np.ndarray:
            return np.array([[value]], dtype=dtype)

        tensors = {
            "input_ids": np.array([self.input_ids], dtype=np.int32),
            "input_lengths": one(len(self.input_ids), np.int32),
            "request_output_len": one(self.max_new_tokens, np.int32),
            "pad_id": one(self.pad_id, np.int32),
            "streaming": one(self.streaming, np.bool_),
            "temperature": one(self.temperature, np.float32),
            "runtime_top_k": one(self.top_k, np.int32),
            "runtime_top_p": one(self.top_p, np.float32),
            "repetition_penalty": one(self.repetition_penalty, np.float32),
            "presence_penalty": one(self.presence_penalty, np.float32),
            "frequency_penalty": one(self.frequency_penalty, np.float32),
            "min_tokens": one(self.min_tokens, np.int32),
            "return_log_probs": one(self.return_log_probs, np.bool_),
            "exclude_input_in_output": one(self.exclude_input_in_output, np.bool_),
        }
        if self.end_id is not None:
            tensors["end_id"] = one(self.end_id, np.int32)
        if self.seed is not None:
            tensors["seed"] = one(self.seed, np.uint64)
        if self.stop_words:
            tensors["stop_words_list"] = word_lists.word_list(self.stop_words)[None]
        if self.bad_words:
            tensors["bad_words_list"] = word_lists.word_list(self.bad_words)[None]
        return tensors


def stop_inputs() -> dict[str, np.ndarray]:
    """The tensors of a `stop` request: with the id of an in-flight request, it ends that request."""
    return {
        "input_ids": np.zeros((1, 1), dtype=np.int32),
        "input_lengths": np.ones((1, 1), dtype=np.int32),
        "request_output_len": np.ones((1, 1), dtype=np.int32),
        "stop": np.ones((1, 1), dtype=np.bool_),
    }


def output_tensors(token_ids: list[int]) -> dict[str, np.ndarray]:
    """One response of `tensorrt_llm`: `output_ids` [1, beam 1, n] and `sequence_length` [1, 1]."""
    return {
        "output_ids": np.array([[token_ids]], dtype=np.int32).reshape(1, 1, len(token_ids)),
        "sequence_length": np.array([[len(token_ids)]], dtype=np.int32),
    }


def output_token_ids(output_ids: np.ndarray | None, sequence_length: np.ndarray | None) -> list[int]:
    """The ids of one response (first beam), cut at its `sequence_length`."""
    if output_ids is None or output_ids.size == 0:
        return []
    ids = output_ids.reshape(-1, output_ids.shape[-1])[0]
    count = ids.shape[0] if sequence_length is None else int(sequence_length.reshape(-1)[0])
    return ids[:count].tolist()
