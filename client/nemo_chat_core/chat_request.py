"""Validation of an OpenAI chat-completions request body for the `chat` model.

Every problem raises `BadRequestError` naming the field (OpenAI's `param`) and what is accepted.
The conversation itself (`messages`, `tools`) is validated by `nemo_protocol.chat_format.encode_chat`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nemo_chat_core.guided import GUIDED_FIELDS, Guide, field_guides, response_format_guide
from nemo_chat_core.log_probs import MAX_TOP_LOGPROBS
from nemo_chat_core.sampling import INT32_MAX, MIN_TEMPERATURE, Sampling
from nemo_chat_core.stop_strings import stop_sequences
from nemo_protocol.end_user import end_user
from nemo_protocol.errors import BadRequestError
from nemo_protocol.json_values import parse_json_object

SEED_MODULUS = 2**64

# Fields accepted and used; fields accepted only with values that change nothing (_check_unsupported).
_USED = {
    "messages", "tools", "tool_choice", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "stream", "stream_options", "presence_penalty", "frequency_penalty", "logprobs",
    "top_logprobs", "n", "response_format", "nvext", "parallel_tool_calls", "min_tokens", "user", *GUIDED_FIELDS,
}  # fmt: skip
_NEUTRAL_ONLY = {"metadata", "store", "logit_bias", "model"}  # model: checked by ChatEndpoint
_NVEXT = {"top_k", "repetition_penalty", "ignore_eos", "min_tokens", *GUIDED_FIELDS}
_STREAM_OPTIONS = {"include_usage", "continuous_usage_stats"}


@dataclass(frozen=True)
class ToolChoice:
    """`auto` (the model decides), `none` (tools hidden), `required` (some call), or one named function."""

    mode: str
    function: str | None = None

    @property
    def enforced(self) -> bool:
        return self.mode in ("required", "function")


@dataclass(frozen=True)
class ChatRequest:
    messages: list[Any]
    tools: list[Any] | None
    tool_choice: ToolChoice
    sampling: Sampling
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    logprobs: bool
    ignore_eos: bool = False  # NIM's nvext.ignore_eos: generate exactly max_tokens (benchmarks)
    guide: Guide | None = None  # response_format or a guided_* field: the output is held to it
    model: str | None = None  # the served name the client asked for (None: whatever is served)
    continuous_usage: bool = False  # stream_options.continuous_usage_stats: usage so far in every chunk
    min_tokens: int = 0  # no end of sequence before this many tokens (vLLM / aiperf: min_tokens)
    top_logprobs: int = 0  # with logprobs: the most likely alternatives of each token
    parallel_tool_calls: bool = True  # False: at most one tool call
    user: str | None = None  # the caller's end user, for the server's log (nemo_protocol.end_user)

    @classmethod
    def parse(cls, raw: bytes | str) -> ChatRequest:
        return cls.from_body(parse_json_object(raw))

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChatRequest:
        unknown = sorted(set(body) - _USED - _NEUTRAL_ONLY)
        if unknown:
            raise BadRequestError(
                f"unknown field; accepted fields: {', '.join(sorted(_USED | _NEUTRAL_ONLY))}", param=unknown[0]
            )
        if "messages" not in body:
            raise BadRequestError("is required", param="messages")
        _check_unsupported(body)
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise BadRequestError(f"must be a list of tools, got {_kind(tools)}", param="tools")
        stream = _optional(body, "stream", bool, False)
        stream_options = body.get("stream_options")
        include_usage = continuous_usage = False
        if stream_options is not None:
            if not stream:
                raise BadRequestError("is only allowed when stream is true", param="stream_options")
            if not isinstance(stream_options, dict) or set(stream_options) - _STREAM_OPTIONS:
                raise BadRequestError(
                    f"must be an object with only {', '.join(sorted(_STREAM_OPTIONS))}", param="stream_options"
                )
            include_usage = _optional(stream_options, "include_usage", bool, False, "stream_options.include_usage")
            continuous_usage = _optional(
                stream_options, "continuous_usage_stats", bool, False, "stream_options.continuous_usage_stats"
            )
        nvext = body.get("nvext") or {}
        if not isinstance(nvext, dict) or set(nvext) - _NVEXT:
            raise BadRequestError(f"accepted keys: {', '.join(sorted(_NVEXT))}", param="nvext")
        return cls(
            messages=body["messages"],
            tools=tools or None,
            tool_choice=_tool_choice(body.get("tool_choice"), tools or []),
            sampling=_sampling(body, nvext),
            max_tokens=_max_tokens(body),
            stop=stop_sequences(body.get("stop")),
            stream=stream,
            include_usage=include_usage,
            continuous_usage=continuous_usage,
            min_tokens=_min_tokens(body, nvext),
            logprobs=_optional(body, "logprobs", bool, False),
            top_logprobs=_top_logprobs(body),
            ignore_eos=_optional(nvext, "ignore_eos", bool, False, "nvext.ignore_eos"),
            guide=_guide(body, nvext),
            model=body.get("model"),
            parallel_tool_calls=_optional(body, "parallel_tool_calls", bool, True),
            user=end_user(body),
        )


def _guide(body: Mapping[str, Any], nvext: Mapping[str, Any]) -> Guide | None:
    """The one output constraint asked for: ``response_format``, or a ``guided_*`` field (top level or nvext)."""
    guides = field_guides(nvext, "nvext.") + field_guides(body)
    if body.get("response_format") is not None:
        from_format = response_format_guide(body["response_format"])
        guides = [from_format, *guides] if from_format is not None else guides
    if len(guides) > 1:
        raise BadRequestError(
            f"cannot be combined with {guides[0].param}: give one output constraint", param=guides[1].param
        )
    return guides[0] if guides else None


def _top_logprobs(body: Mapping[str, Any]) -> int:
    top = _integer(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
    if top and body.get("logprobs") is not True:
        raise BadRequestError("needs logprobs: true", param="top_logprobs")
    return top


def _min_tokens(body: Mapping[str, Any], nvext: Mapping[str, Any]) -> int:
    """``min_tokens`` (top level, as vLLM takes it) or ``nvext.min_tokens``; both given must agree."""
    top = _integer(body, "min_tokens", 0, 0, INT32_MAX, "min_tokens")
    nested = _integer(nvext, "min_tokens", 0, 0, INT32_MAX, "nvext.min_tokens")
    if "min_tokens" in body and "min_tokens" in nvext and top != nested:
        raise BadRequestError(f"differs from min_tokens ({top}); give one", param="nvext.min_tokens")
    return top if "min_tokens" in body else nested


def _sampling(body: Mapping[str, Any], nvext: Mapping[str, Any]) -> Sampling:
    """The sampling fields within OpenAI's ranges (NIM's `nvext` for `top_k` and `repetition_penalty`).

    A temperature below MIN_TEMPERATURE is sent as 0 (greedy), as vLLM does: dividing logits by it overflows."""
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    return Sampling(
        temperature=0.0 if temperature < MIN_TEMPERATURE else temperature,
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        top_k=_integer(nvext, "top_k", 0, 0, INT32_MAX, "nvext.top_k"),
        seed=_seed(body.get("seed")),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        repetition_penalty=_number(nvext, "repetition_penalty", 1.0, 0.0, None, "nvext.repetition_penalty", True),
    )


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _optional(body: Mapping[str, Any], key: str, kind: type, default: Any, param: str | None = None) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise BadRequestError(f"must be a {kind.__name__}, got {_kind(value)}", param=param or key)
    return value


def _number(
    body: Mapping[str, Any],
    key: str,
    default: float,
    low: float,
    high: float | None,
    param: str | None = None,
    low_open: bool = False,
) -> float:
    value = body.get(key)
    param = param or key
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(f"must be a number, got {_kind(value)}", param=param)
    if not math.isfinite(value):  # 1e999 parses as infinity
        raise BadRequestError(f"must be a finite number, got {value}", param=param)
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'∞)' if high is None else f'{high:g}]'}"
        raise BadRequestError(f"must be in {bounds}, got {value}", param=param)
    return float(value)


def _integer(
    body: Mapping[str, Any], key: str, default: int, low: int, high: int | None, param: str | None = None
) -> int:
    value = body.get(key)
    param = param or key
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequestError(f"must be an integer, got {_kind(value)}", param=param)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise BadRequestError(f"must be {bounds}, got {value}", param=param)
    return value


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if body.get(key) is None:
        return None
    return _integer(body, key, 0, 1, None)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequestError(f"must be an integer, got {_kind(value)}", param="seed")
    return value % SEED_MODULUS


def _tool_choice(value: Any, tools: list[Any]) -> ToolChoice:
    if value is None:
        return ToolChoice("auto")
    if value in ("auto", "none", "required"):
        if value == "required" and not tools:
            raise BadRequestError("'required' needs at least one tool in 'tools'", param="tool_choice")
        return ToolChoice(value)
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        names = [t.get("function", {}).get("name") for t in tools if isinstance(t, dict)]
        if name not in names:
            raise BadRequestError(
                f"{name!r} is not one of the request's tools ({', '.join(map(str, names)) or 'none given'})",
                param="tool_choice.function.name",
            )
        return ToolChoice("function", name)
    raise BadRequestError(
        "must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}", param="tool_choice"
    )


def _check_unsupported(body: Mapping[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise BadRequestError(f"only 1 choice per request is served, got {body.get('n')!r}", param="n")
    if body.get("store") not in (None, False):
        raise BadRequestError("completions are not stored by this deployment (accepted: false)", param="store")
    if body.get("metadata") not in (None, {}):
        raise BadRequestError("is only used with store, which this deployment does not offer", param="metadata")
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise BadRequestError(f"must be a string, got {_kind(body['model'])}", param="model")
    if body.get("logit_bias") not in (None, {}):
        raise BadRequestError("is not supported by this deployment", param="logit_bias")
