"""Validation of an OpenAI chat-completions request body for the `chat` model.

Every problem raises `InvalidRequestError` naming the field (OpenAI's `param`) and what is accepted.
The conversation itself (`messages`, `tools`) is validated by `nemo_protocol.chat_format.encode_chat`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nemo_protocol.errors import InvalidRequestError

SEED_MODULUS = 2**64

# Fields accepted and used; fields accepted and ignored (they do not change the result).
_USED = {
    "messages", "tools", "tool_choice", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "stream", "stream_options", "presence_penalty", "frequency_penalty", "logprobs",
    "top_logprobs", "n", "response_format", "nvext",
}  # fmt: skip
_IGNORED = {"model", "user", "parallel_tool_calls", "metadata", "store", "logit_bias"}
_NVEXT = {"top_k", "repetition_penalty", "ignore_eos"}


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
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int | None
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    logprobs: bool
    ignore_eos: bool = False  # NIM's nvext.ignore_eos: generate exactly max_tokens (benchmarks)

    @classmethod
    def parse(cls, raw: bytes | str) -> ChatRequest:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequestError("", f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("", "the request body must be a JSON object")
        return cls.from_body(body)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChatRequest:
        unknown = sorted(set(body) - _USED - _IGNORED)
        if unknown:
            raise InvalidRequestError(
                unknown[0], f"unknown field; accepted fields: {', '.join(sorted(_USED | _IGNORED))}"
            )
        if "messages" not in body:
            raise InvalidRequestError("messages", "is required")
        _check_unsupported(body)
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise InvalidRequestError("tools", f"must be a list of tools, got {_kind(tools)}")
        stream = _optional(body, "stream", bool, False)
        stream_options = body.get("stream_options")
        include_usage = False
        if stream_options is not None:
            if not stream:
                raise InvalidRequestError("stream_options", "is only allowed when stream is true")
            if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
                raise InvalidRequestError("stream_options", "must be an object with only 'include_usage'")
            include_usage = _optional(stream_options, "include_usage", bool, False, "stream_options.include_usage")
        nvext = body.get("nvext") or {}
        if not isinstance(nvext, dict) or set(nvext) - _NVEXT:
            raise InvalidRequestError("nvext", f"accepted keys: {', '.join(sorted(_NVEXT))}")
        return cls(
            messages=body["messages"],
            tools=tools or None,
            tool_choice=_tool_choice(body.get("tool_choice"), tools or []),
            temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
            top_k=_integer(nvext, "top_k", 0, 0, None, "nvext.top_k"),
            max_tokens=_max_tokens(body),
            stop=_stop(body.get("stop")),
            seed=_seed(body.get("seed")),
            stream=stream,
            include_usage=include_usage,
            presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
            frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
            repetition_penalty=_number(nvext, "repetition_penalty", 1.0, 0.0, None, "nvext.repetition_penalty", True),
            logprobs=_optional(body, "logprobs", bool, False),
            ignore_eos=_optional(nvext, "ignore_eos", bool, False, "nvext.ignore_eos"),
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
        raise InvalidRequestError(param or key, f"must be a {kind.__name__}, got {_kind(value)}")
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
        raise InvalidRequestError(param, f"must be a number, got {_kind(value)}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'∞)' if high is None else f'{high:g}]'}"
        raise InvalidRequestError(param, f"must be in {bounds}, got {value}")
    return float(value)


def _integer(
    body: Mapping[str, Any], key: str, default: int, low: int, high: int | None, param: str | None = None
) -> int:
    value = body.get(key)
    param = param or key
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(param, f"must be an integer, got {_kind(value)}")
    if value < low or (high is not None and value > high):
        raise InvalidRequestError(param, f"must be >= {low}, got {value}")
    return value


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if body.get(key) is None:
        return None
    return _integer(body, key, 0, 1, None)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise InvalidRequestError("stop", "must be a non-empty string or a list of up to 4 non-empty strings")
    if len(stops) > 4:
        raise InvalidRequestError("stop", f"accepts at most 4 sequences, got {len(stops)}")
    return tuple(stops)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError("seed", f"must be an integer, got {_kind(value)}")
    return value % SEED_MODULUS


def _tool_choice(value: Any, tools: list[Any]) -> ToolChoice:
    if value is None:
        return ToolChoice("auto")
    if value in ("auto", "none", "required"):
        if value == "required" and not tools:
            raise InvalidRequestError("tool_choice", "'required' needs at least one tool in 'tools'")
        return ToolChoice(value)
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        names = [t.get("function", {}).get("name") for t in tools if isinstance(t, dict)]
        if name not in names:
            raise InvalidRequestError(
                "tool_choice.function.name",
                f"{name!r} is not one of the request's tools ({', '.join(map(str, names)) or 'none given'})",
            )
        return ToolChoice("function", name)
    raise InvalidRequestError(
        "tool_choice",
        "must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
    )


def _check_unsupported(body: Mapping[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise InvalidRequestError("n", f"only 1 choice per request is served, got {body.get('n')!r}")
    if body.get("logit_bias") not in (None, {}):
        raise InvalidRequestError("logit_bias", "is not supported by this deployment")
    if body.get("top_logprobs") not in (None, 0):
        raise InvalidRequestError("top_logprobs", "is not supported by this deployment")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise InvalidRequestError(
            "response_format", "only {'type': 'text'} is supported (schema-constrained output is not available yet)"
        )
