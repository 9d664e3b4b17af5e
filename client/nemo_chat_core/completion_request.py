"""The OpenAI ``/v1/completions`` request, validated in one place, and the ``ensemble`` requests that serve it.

:meth:`CompletionRequest.from_body` reads a request: the gateway's JSON body (with the server's
:class:`~nemo_protocol.request_limits.RequestLimits`) and the client's ``completions.create`` arguments alike.
Unknown fields, NIM's ``nvext`` spellings of the vLLM extensions, ``stream_options`` and ``user`` are checked
there, then every field; each refusal is a ``BadRequestError`` naming the field. A value no tensor of its type
can hold is refused, and so is every value the ``ensemble`` would refuse whatever the deployment, with the
ensemble's own rules and words: such a request is never sent.

:meth:`CompletionRequest.ensemble_requests` are the ``ensemble`` model's requests, one per choice (prompts x
``n``). What only the deployment can refuse (a prompt longer than ``max_input_len``, ``max_tokens`` beyond
``max_seq_len``, log probs the engine has no logits for), the ensemble refuses naming its input tensor:
:func:`refused_field` names the request field that travels in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nemo_chat_core.log_probs import MAX_TOP_LOGPROBS
from nemo_chat_core.sampling import Sampling
from nemo_chat_core.stop_strings import stop_sequences
from nemo_protocol.end_user import end_user
from nemo_protocol.errors import BadRequestError, NotFoundError
from nemo_protocol.request_limits import RequestLimits

MAX_N = 16
"""The most choices a completion request may ask for (``n``, or prompts x ``n``)."""
DEFAULT_MAX_TOKENS = 16
"""OpenAI's ``max_tokens`` default for completions."""
INT32_MAX = 2**31 - 1

COMPLETION_FIELDS = frozenset(
    {
        "model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop",
        "presence_penalty", "frequency_penalty", "stream", "stream_options", "logprobs", "echo", "n",
        "min_tokens", "ignore_eos", "repetition_penalty", "nvext", "user",
    }
)  # fmt: skip
"""What ``/v1/completions`` accepts; anything else is a 400 naming the field."""

NVEXT_ALIASES = frozenset({"top_k", "repetition_penalty", "min_tokens", "ignore_eos"})
"""NIM's ``nvext`` fields that vLLM (and aiperf) send at the top level; both spellings are accepted."""

STREAM_OPTIONS = frozenset({"include_usage", "continuous_usage_stats"})

ENSEMBLE_INPUT_FIELDS = {
    "text_input": "prompt", "input_ids": "prompt", "max_tokens": "max_tokens", "stop_words": "stop",
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "seed": "seed",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty", "stream": "stream",
    "repetition_penalty": "repetition_penalty", "min_tokens": "min_tokens", "logprobs": "logprobs",
    "exclude_input_in_output": "echo", "lora_name": "model",
}  # fmt: skip
"""The ``ensemble`` input tensor (or the ``tensorrt_llm`` one of the same name) each request field travels in."""

_SCALARS: dict[str, type[np.generic]] = {
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
"""The request fields sent as scalar tensors of the same name, and their types."""

Prompt = str | tuple[int, ...]
"""Text (encoded after ``<s>`` by the ensemble), or token ids sent as they are."""


@dataclass(frozen=True)
class EnsembleRequest:
    """One choice's ``ensemble`` request: its input tensors, and the prompt text its output starts with (``echo``
    of a text prompt: never searched for stop strings)."""

    inputs: dict[str, np.ndarray[Any, Any]]
    echo: str | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """A ``/v1/completions`` request. Sampling fields left None are not sent (the ensemble's defaults apply)."""

    prompts: tuple[Prompt, ...]
    max_tokens: int = DEFAULT_MAX_TOKENS
    n: int = 1
    stream: bool = False
    echo: bool = False
    stop: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    logprobs: int | None = None
    ignore_eos: bool = False
    model: str | None = None
    user: str | None = None  # the caller's end user, for the server's log (nemo_protocol.end_user)
    include_usage: bool = False  # stream_options.include_usage: the usage on the last chunk
    continuous_usage: bool = False  # stream_options.continuous_usage_stats (vLLM's): the usage so far on each

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, limits: RequestLimits | None = None) -> CompletionRequest:
        """The request a ``/v1/completions`` body (or the client's arguments) asks for; a field given as None is
        absent. ``limits``: the server's bounds, checked first."""
        if limits is not None:
            limits.check_completion(body)
        unknown = sorted(set(body) - COMPLETION_FIELDS)
        if unknown:
            raise BadRequestError(
                f"unsupported field {unknown[0]!r}; accepted: {', '.join(sorted(COMPLETION_FIELDS))}",
                param=unknown[0],
            )
        prompts = completion_prompts(body.get("prompt"))
        user = end_user(body)
        fields = {key: value for key, value in with_nvext(body).items() if value is not None}
        include_usage, continuous_usage = _stream_options(fields.pop("stream_options", None))
        n = fields.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise BadRequestError(f"must be an integer in [1, {MAX_N}], got {n!r}", param="n")
        for prompt in prompts:
            if isinstance(prompt, str):
                _utf8(prompt, "prompt")
        model = fields.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequestError(f"must be a string, got {type(model).__name__}", param="model")
        for name in ("echo", "ignore_eos"):
            if name in fields and not isinstance(fields[name], bool):
                raise BadRequestError(f"must be a boolean, got {type(fields[name]).__name__}", param=name)
        stream, echo = bool(fields.get("stream")), bool(fields.get("echo"))
        if echo and stream:
            raise BadRequestError("is served on whole answers only, not with stream", param="echo")
        max_tokens = _scalar(fields.get("max_tokens", DEFAULT_MAX_TOKENS), np.int32, "max_tokens")
        scalars = {name: _scalar(fields[name], dtype, name) for name, dtype in _SCALARS.items() if name in fields}
        if "seed" in scalars and n > 1:
            _scalar(scalars["seed"] + n - 1, np.uint64, "seed")  # choice i is drawn with seed + i
        _check_served(max_tokens, echo=echo, values=scalars)
        stop = stop_sequences(fields.get("stop"))  # the rule chat requests follow
        for word in stop:
            _utf8(word, "stop")
        if echo and stop and not all(isinstance(prompt, str) for prompt in prompts):
            raise BadRequestError("stop with echo needs the prompt as text, not token ids", param="echo")
        if stream and len(prompts) * n > 1:
            raise BadRequestError("one prompt and n 1 only when streaming", param="n" if n > 1 else "prompt")
        return cls(
            prompts=tuple(prompt if isinstance(prompt, str) else tuple(prompt) for prompt in prompts),
            max_tokens=int(max_tokens),
            n=n,
            stream=stream,
            echo=echo,
            stop=stop,
            ignore_eos=bool(fields.get("ignore_eos")),
            model=model,
            user=user,
            include_usage=include_usage,
            continuous_usage=continuous_usage,
            **scalars,
        )

    def ensemble_requests(self) -> list[EnsembleRequest]:
        """The ``ensemble`` request of each choice: prompt by prompt, ``n`` each; choice i of a prompt is drawn
        with ``seed + i``.

        ``temperature`` without ``top_p`` (or ``top_k``) samples with OpenAI's ``top_p`` default of 1
        (TensorRT-LLM's defaults, ``top_k`` 0 and ``top_p`` 0, would be greedy)."""
        return [
            EnsembleRequest(self._inputs(prompt, copy), prompt if self.echo and isinstance(prompt, str) else None)
            for prompt in self.prompts
            for copy in range(self.n)
        ]

    def _inputs(self, prompt: Prompt, copy: int) -> dict[str, np.ndarray[Any, Any]]:
        if isinstance(prompt, str):
            inputs = {"text_input": np.array([[prompt.encode("utf-8")]], dtype=object)}
        else:
            inputs = {"input_ids": np.array([list(prompt)], dtype=np.int32)}
        inputs["max_tokens"] = np.array([[self.max_tokens]], dtype=np.int32)
        inputs["stream"] = np.array([[self.stream]], dtype=np.bool_)
        values: dict[str, Any] = {name: getattr(self, name) for name in _SCALARS}
        if self.seed is not None:
            values["seed"] = self.seed + copy
        if self.temperature is not None and self.top_p is None and self.top_k is None:
            values["top_p"] = 1.0
        for name, dtype in _SCALARS.items():
            if values[name] is not None:
                inputs[name] = np.array([[values[name]]], dtype=dtype)
        if self.echo:
            inputs["exclude_input_in_output"] = np.array([[False]], dtype=np.bool_)
        if self.ignore_eos:
            inputs["end_id"] = np.array([[-1]], dtype=np.int32)
        if self.stop:
            inputs["stop_words"] = np.array([[word.encode("utf-8") for word in self.stop]], dtype=object)
        if self.model is not None:  # the served model or a LoRA adapter, resolved by the ensemble
            inputs["lora_name"] = np.array([[self.model.encode("utf-8")]], dtype=object)
        return inputs


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


def with_nvext(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with its ``nvext`` fields at the top level; 400 when a field is given both ways, differently."""
    nvext = body.get("nvext")
    if nvext is None:
        return {key: value for key, value in body.items() if key != "nvext"}
    if not isinstance(nvext, dict) or set(nvext) - NVEXT_ALIASES:
        raise BadRequestError(f"accepted keys: {', '.join(sorted(NVEXT_ALIASES))}", param="nvext")
    merged = {key: value for key, value in body.items() if key != "nvext"}
    for key, value in nvext.items():
        if key in merged and merged[key] != value:
            raise BadRequestError(f"differs from the top-level {key} ({merged[key]!r}): give one", param=f"nvext.{key}")
        merged[key] = value
    return merged


def refused_field(tensor: str, reason: str) -> BadRequestError | NotFoundError | None:
    """The ``ensemble``'s refusal of its input ``tensor`` as the caller's error, naming the request field that
    travels in it (a ``model`` it does not serve: a 404); None for a tensor no field travels in (the refusal is not
    the caller's)."""
    field = ENSEMBLE_INPUT_FIELDS.get(tensor)
    if field is None:
        return None
    return (NotFoundError if field == "model" else BadRequestError)(reason, param=field)


def _check_served(max_tokens: int, *, echo: bool, values: Mapping[str, Any]) -> None:
    """What the ``ensemble`` refuses whatever the deployment, refused before the request is sent: the rules of
    ``nemo_serving.ensemble.TextRequest`` (``max_tokens``, ``logprobs``), of the ``tensorrt_llm`` request
    (``min_tokens``) and of :class:`Sampling`, the type the ensemble reads its sampling inputs into, with the
    same words; errors name the request's fields. What depends on the deployment (the prompt's and the
    sequence's lengths, the logits the engine gathers) only the ensemble can refuse: see :func:`refused_field`."""
    least = 0 if echo else 1  # with echo the prompt alone may be the answer
    if max_tokens < least:
        raise BadRequestError(f"must be at least {least}, got {max_tokens}", param="max_tokens")
    logprobs = values.get("logprobs")
    if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
        raise BadRequestError(f"must be in [0, {MAX_TOP_LOGPROBS}], got {logprobs}", param="logprobs")
    if values.get("min_tokens", 0) < 0:
        raise BadRequestError(f"must be >= 0, got {values['min_tokens']}", param="min_tokens")
    defaults = Sampling()
    try:
        Sampling(
            temperature=values.get("temperature", defaults.temperature),
            top_k=values.get("top_k", defaults.top_k),
            top_p=values.get("top_p", defaults.top_p),
            repetition_penalty=values.get("repetition_penalty", defaults.repetition_penalty),
            presence_penalty=values.get("presence_penalty", defaults.presence_penalty),
            frequency_penalty=values.get("frequency_penalty", defaults.frequency_penalty),
        )
    except BadRequestError as exc:  # Sampling names the tensorrt_llm tensors; the ensemble's are the fields' names
        raise BadRequestError(exc.message, param=_SAMPLING_TENSORS.get(exc.param or "", exc.param)) from None


_SAMPLING_TENSORS = {"runtime_top_k": "top_k", "runtime_top_p": "top_p"}


def _stream_options(options: Any) -> tuple[bool, bool]:
    """``include_usage`` and ``continuous_usage_stats``; 400 naming ``stream_options`` for anything else."""
    if options is None:
        return False, False
    if (
        not isinstance(options, dict)
        or set(options) - STREAM_OPTIONS
        or not all(isinstance(value, bool) for value in options.values())
    ):
        accepted = ", ".join(sorted(STREAM_OPTIONS))
        raise BadRequestError(f"must be an object of booleans: {accepted}", param="stream_options")
    return bool(options.get("include_usage")), bool(options.get("continuous_usage_stats"))


def _token_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= INT32_MAX for t in value)
    )


def _scalar(value: Any, dtype: type[np.generic], param: str) -> Any:
    """``value`` when a tensor of ``dtype`` holds it: an integer within its range, or a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(f"must be a number, got {type(value).__name__}", param=param)
    if np.issubdtype(dtype, np.integer):
        bounds = np.iinfo(dtype)  # type: ignore[type-var]  # an integer dtype, checked on the line above
        if not isinstance(value, int) or not bounds.min <= value <= bounds.max:
            raise BadRequestError(f"must be an integer in [{bounds.min}, {bounds.max}], got {value}", param=param)
    elif not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
        raise BadRequestError(f"must be a finite number, got {value}", param=param)
    return value


def _utf8(text: str, param: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(
            f"contains a lone surrogate at character {exc.start}: text must be valid Unicode", param=param
        ) from None
