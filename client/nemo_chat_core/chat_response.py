"""OpenAI chat-completions response objects: streamed chunks, the whole completion, usage."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nemo_protocol.request_ids import new_request_id
from nemo_protocol.tool_calls import ToolCall


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def tool_call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


class ResponseBuilder:
    """Builds the objects of one response; they share an id, creation time and model name."""

    def __init__(self, model: str) -> None:
        self.id = new_request_id("chatcmpl-")
        self.created = int(time.time())
        self.model = model

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", [choice])

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def role_chunk(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def content_chunk(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def tool_call_chunk(self, index: int, call: ToolCall) -> dict[str, Any]:
        return self._chunk({"tool_calls": [{"index": index, **tool_call_dict(call)}]})

    def finish_chunk(self, finish_reason: str) -> dict[str, Any]:
        return self._chunk({}, finish_reason)

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk", []), "usage": usage.as_dict()}

    def completion(
        self, content: str | None, tool_calls: list[ToolCall], finish_reason: str, usage: Usage
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = [tool_call_dict(call) for call in tool_calls]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope("chat.completion", [choice]), "usage": usage.as_dict()}
