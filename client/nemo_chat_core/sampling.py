"""How a request picks its tokens: one type for the `chat`, `ensemble` and `tensorrt_llm` requests.

Values follow TensorRT-LLM: `top_k` 0 and `top_p` 0 (the defaults) switch those filters off, and a request
is greedy when both are off, or `temperature` is below MIN_TEMPERATURE, or `top_k` is 1; otherwise tokens are
drawn with the request's `seed`. The penalties are neutral at their defaults. An OpenAI request's own ranges (and its
`top_p` default of 1) are checked where it is parsed (`nemo_chat_core.chat_request`); the rules here are the
engine's, and errors name the `tensorrt_llm` tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nemo_chat_core.tensor_values import Inputs, scalar, scalar_tensor
from nemo_protocol.errors import BadRequestError

INT32_MAX = 2**31 - 1
MIN_TEMPERATURE = 1e-5
"""Below this a temperature is greedy (vLLM's bound): logits divided by it overflow float32 to inf and nan."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        for name, tensor in (
            ("temperature", "temperature"),
            ("top_p", "runtime_top_p"),
            ("repetition_penalty", "repetition_penalty"),
            ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"),
        ):
            if not math.isfinite(getattr(self, name)):
                raise BadRequestError(f"must be a finite number, got {getattr(self, name)}", param=tensor)
        if self.temperature < 0:
            raise BadRequestError(f"must be >= 0, got {self.temperature}", param="temperature")
        if not 0 <= self.top_k <= INT32_MAX:
            raise BadRequestError(f"must be in [0, {INT32_MAX}] (0 = off), got {self.top_k}", param="runtime_top_k")
        if not 0.0 <= self.top_p <= 1.0:
            raise BadRequestError(f"must be in [0, 1] (0 = off), got {self.top_p}", param="runtime_top_p")

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE or self.top_k == 1 or (self.top_k == 0 and self.top_p == 0)

    @classmethod
    def from_inputs(cls, get: Inputs, *, top_k: str = "runtime_top_k", top_p: str = "runtime_top_p") -> Sampling:
        """Read from a request's tensors; those left out keep the defaults. `top_k` and `top_p` name their
        tensors (the `ensemble` model calls them `top_k` and `top_p`), in errors too."""
        seed = get("seed")
        try:
            return cls(
                temperature=scalar(get("temperature"), "temperature", float, 1.0),
                top_k=scalar(get(top_k), top_k, int, 0),
                top_p=scalar(get(top_p), top_p, float, 0.0),
                seed=None if seed is None else scalar(seed, "seed", int, 0),
                repetition_penalty=scalar(get("repetition_penalty"), "repetition_penalty", float, 1.0),
                presence_penalty=scalar(get("presence_penalty"), "presence_penalty", float, 0.0),
                frequency_penalty=scalar(get("frequency_penalty"), "frequency_penalty", float, 0.0),
            )
        except BadRequestError as exc:
            # __post_init__ names the `tensorrt_llm` tensors; the caller sent these under its own names.
            renamed = {"runtime_top_k": top_k, "runtime_top_p": top_p}.get(exc.param or "", exc.param)
            if renamed == exc.param:
                raise
            raise BadRequestError(exc.message, param=renamed) from None

    def to_inputs(self) -> dict[str, np.ndarray]:
        """The `tensorrt_llm` input tensors of these parameters, batch size 1 (`seed` only when set)."""

        tensors = {
            "temperature": scalar_tensor(self.temperature, np.float32),
            "runtime_top_k": scalar_tensor(self.top_k, np.int32),
            "runtime_top_p": scalar_tensor(self.top_p, np.float32),
            "repetition_penalty": scalar_tensor(self.repetition_penalty, np.float32),
            "presence_penalty": scalar_tensor(self.presence_penalty, np.float32),
            "frequency_penalty": scalar_tensor(self.frequency_penalty, np.float32),
        }
        if self.seed is not None:
            tensors["seed"] = scalar_tensor(self.seed, np.uint64)
        return tensors
