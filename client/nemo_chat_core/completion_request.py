"""A completion request as the ``ensemble`` model's input tensors: one set per prompt, each value in the
type of its tensor (a value no tensor of its type can hold is a 400 naming the field)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nemo_protocol.errors import BadRequestError

MAX_N = 16
"""The most choices a completion request may ask for (``n``, or prompts x ``n``)."""


def completion_prompts(prompt: Any) -> list[str | list[int]]:
    """The prompts of a completion request: text, token ids, or a list of either; 400 naming ``prompt``."""
    if isinstance(prompt, str) or _token_ids(prompt):
        return [prompt if isinstance(prompt, str) else list(prompt)]
    if (
        isinstance(prompt, list)
        and prompt
        and (all(isinstance(p, str) for p in prompt) or all(map(_token_ids, prompt)))
    ):
        if len(prompt) > MAX_N:
            raise BadRequestError(f"at most {MAX_N} prompts per request, got {len(prompt)}", param="prompt")
        return [p if isinstance(p, str) else list(p) for p in prompt]
    raise BadRequestError(
        "must be a string, a list of token ids, or a non-empty list of strings or of token-id lists", param="prompt"
    )


def _token_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= INT32_MAX for t in value)
    )


def completion_inputs(
    params: Mapping[str, Any], prompt: str | Sequence[int] | None = None, *, seed: int | None = None
) -> dict[str, Any]:
    """The ``ensemble`` model's input tensors for one prompt of a completion request; BadRequestError for a value
    no tensor of its type can hold (the server checks the ranges it serves).

    ``temperature`` without ``top_p`` samples with OpenAI's ``top_p`` default of 1 (TensorRT-LLM's defaults,
    ``top_k`` 0 and ``top_p`` 0, would be greedy)."""
    if prompt is None:
        prompts = completion_prompts(params.get("prompt"))
        if len(prompts) > 1:
            raise BadRequestError("one prompt per ensemble request", param="prompt")
        prompt = prompts[0]
    if isinstance(prompt, str):
        inputs: dict[str, Any] = {"text_input": np.array([[_utf8(prompt, "prompt")]], dtype=object)}
    else:
        inputs = {"input_ids": np.array([list(prompt)], dtype=np.int32)}
    inputs["max_tokens"] = _scalar_tensor(params.get("max_tokens", 16), np.int32, "max_tokens")
    inputs["stream"] = np.array([[bool(params.get("stream"))]], dtype=np.bool_)
    values = {**params, "seed": params.get("seed") if seed is None else seed}
    if values.get("temperature") is not None and values.get("top_p") is None and values.get("top_k") is None:
        values["top_p"] = 1.0
    for name, dtype in _COMPLETION_SCALARS.items():
        if values.get(name) is not None:
            inputs[name] = _scalar_tensor(values[name], dtype, name)
    for name in ("echo", "ignore_eos"):
        if values.get(name) is not None and not isinstance(values[name], bool):
            raise BadRequestError(f"must be a boolean, got {type(values[name]).__name__}", param=name)
    if values.get("echo") and values.get("stream"):
        raise BadRequestError("is served on whole answers only, not with stream", param="echo")
    if values.get("echo"):
        inputs["exclude_input_in_output"] = np.array([[False]], dtype=np.bool_)
    if values.get("ignore_eos"):
        inputs["end_id"] = np.array([[-1]], dtype=np.int32)
    stop = stop_words(params.get("stop"))
    if stop:
        inputs["stop_words"] = np.array([[_utf8(word, "stop") for word in stop]], dtype=object)
    return inputs


def stop_words(stop: Any) -> list[str]:
    if not stop:
        return []
    words = [stop] if isinstance(stop, str) else stop
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise BadRequestError("must be a string or a list of strings", param="stop")
    return words


_COMPLETION_SCALARS: dict[str, type[np.generic]] = {
    "temperature": np.float32,
    "top_p": np.float32,
    "top_k": np.int32,
    "seed": np.uint64,
    "presence_penalty": np.float32,
    "frequency_penalty": np.float32,
    "repetition_penalty": np.float32,
    "min_tokens": np.int32,
    "logprobs": np.int32,
}
INT32_MAX = 2**31 - 1


def _scalar_tensor(value: Any, dtype: type[np.generic], param: str) -> np.ndarray[Any, Any]:
    """``[[value]]`` as ``dtype``: an integer within its range, or a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(f"must be a number, got {type(value).__name__}", param=param)
    if np.issubdtype(dtype, np.integer):
        bounds = np.iinfo(dtype)  # type: ignore[type-var]  # an integer dtype, checked on the line above
        if not isinstance(value, int) or not bounds.min <= value <= bounds.max:
            raise BadRequestError(f"must be an integer in [{bounds.min}, {bounds.max}], got {value}", param=param)
    elif not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
        raise BadRequestError(f"must be a finite number, got {value}", param=param)
    return np.array([[value]], dtype=dtype)


def _utf8(text: str, param: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(
            f"contains a lone surrogate at character {exc.start}: text must be valid Unicode", param=param
        ) from None
