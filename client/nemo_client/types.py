"""The client's parameter and result types: the ``create`` arguments as TypedDicts, and :class:`Health`.

Completions are the ``openai`` package's own types (``ChatCompletion``, ``ChatCompletionChunk``, ``Completion``,
``Model``); these are the types the client adds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired


class ToolRunParams(TypedDict, total=False):
    """The chat-completions arguments other than ``messages``, ``tools`` and ``stream``: ``chat.run_tools`` sends
    them with every call of the model."""

    model: str
    tool_choice: str | Mapping[str, Any]
    parallel_tool_calls: bool
    temperature: float
    top_p: float
    max_tokens: int
    max_completion_tokens: int
    stop: str | Sequence[str]
    seed: int
    presence_penalty: float
    frequency_penalty: float
    n: int
    logprobs: bool
    top_logprobs: int
    response_format: Mapping[str, Any]
    stream_options: Mapping[str, Any]
    user: str
    extra_body: Mapping[str, Any]
    """Fields merged into the request as they are (e.g. ``nvext``)."""
    timeout: float
    """Seconds for the whole call, stream included; defaults to the client's."""


class _ChatCompletionFields(ToolRunParams):
    """Arguments of ``chat.completions.create``: the OpenAI / NIM chat-completions request."""

    messages: Sequence[Mapping[str, Any]]
    tools: NotRequired[Sequence[Mapping[str, Any]]]


class ChatCompletionParams(_ChatCompletionFields):
    stream: NotRequired[bool]


class ChatCompletionNonStreamingParams(_ChatCompletionFields):
    stream: NotRequired[Literal[False]]


class ChatCompletionStreamingParams(_ChatCompletionFields):
    stream: Literal[True]


class _CompletionFields(TypedDict):
    """Arguments of ``completions.create``: raw text generation through the ``ensemble`` model.

    ``prompt`` is text, token ids, or a list of either (one choice per prompt, non-streamed); ``n`` choices
    per prompt are independent generations (``seed``, when given, is the first one's, then ``seed + 1``...).
    ``logprobs`` N gives each token's log probability and the N most likely tokens at its position; ``echo``
    puts the prompt (and, with ``logprobs``, its tokens) before the completion. ``min_tokens``,
    ``ignore_eos``, ``repetition_penalty`` and ``top_k`` are the vLLM / NIM extensions of the same names."""

    prompt: str | Sequence[int] | Sequence[str] | Sequence[Sequence[int]]
    model: NotRequired[str]
    max_tokens: NotRequired[int]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    top_k: NotRequired[int]
    seed: NotRequired[int]
    stop: NotRequired[str | Sequence[str]]
    presence_penalty: NotRequired[float]
    frequency_penalty: NotRequired[float]
    repetition_penalty: NotRequired[float]
    min_tokens: NotRequired[int]
    ignore_eos: NotRequired[bool]
    logprobs: NotRequired[int]
    echo: NotRequired[bool]
    n: NotRequired[int]
    timeout: NotRequired[float]


class CompletionParams(_CompletionFields):
    stream: NotRequired[bool]


class CompletionNonStreamingParams(_CompletionFields):
    stream: NotRequired[Literal[False]]


class CompletionStreamingParams(_CompletionFields):
    stream: Literal[True]


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool
    models: dict[str, bool]
    """Readiness of each model the client calls."""
