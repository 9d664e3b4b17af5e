"""Bounds on what one request may ask for, set by whoever serves it (the gateway's flags and chart values).

The engine bounds tokens (max_input_len, max_seq_len) and the ``chat`` model validates every field; these
limits come first and are cheap: they refuse the request whose sheer size would cost the server before it
is even validated — thousands of messages to render, megabytes of tool schemas in every prompt, a stop
string longer than any output it could match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nemo_protocol.errors import BadRequestError
from nemo_protocol.json_values import MAX_JSON_DEPTH

# A 128k-token prompt is 0.7-2.4 MB of JSON in English, Chinese or Arabic (measured; non-ASCII text escaped as \uXXXX
# takes 6 bytes a character): 16 MiB leaves 128 bytes per token.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body, in bytes (413 beyond it)."""
    max_json_depth: int = 64
    """Deepest nesting of objects and lists in a body (tool parameter schemas are the deepest legitimate part)."""
    max_messages: int = 1000
    """Most messages in one chat request."""
    max_tools: int = 128
    """Most tools in one chat request (OpenAI's own limit)."""
    max_tool_bytes: int = 64 * 1024
    """Largest tool definition, in bytes of its JSON: every tool is rendered into the prompt."""
    max_stop_chars: int = 256
    """Longest stop string, in characters."""
    max_output_tokens: int = 0
    """Largest ``max_tokens`` / ``max_completion_tokens``; 0 leaves only the engine's max_seq_len to bound it."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            least = 0 if name == "max_output_tokens" else 1
            if value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        if self.max_json_depth > MAX_JSON_DEPTH:
            raise ValueError(f"max_json_depth must be at most {MAX_JSON_DEPTH} (the chat model's bound)")

    def check_chat(self, body: Mapping[str, Any]) -> None:
        """BadRequestError naming the first field of a ``/v1/chat/completions`` body beyond a limit."""
        messages = body.get("messages")
        if isinstance(messages, list) and len(messages) > self.max_messages:
            raise BadRequestError(
                f"has {len(messages)} messages; this server accepts at most {self.max_messages}", param="messages"
            )
        tools = body.get("tools")
        if isinstance(tools, list):
            if len(tools) > self.max_tools:
                raise BadRequestError(
                    f"has {len(tools)} tools; this server accepts at most {self.max_tools}", param="tools"
                )
            for index, tool in enumerate(tools):
                size = len(json.dumps(tool, ensure_ascii=False).encode("utf-8", "surrogatepass"))
                if size > self.max_tool_bytes:
                    raise BadRequestError(
                        f"is {size} bytes of JSON; this server accepts tool definitions of at most "
                        f"{self.max_tool_bytes} bytes",
                        param=f"tools[{index}]",
                    )
        self._check_common(body)

    def check_completion(self, body: Mapping[str, Any]) -> None:
        """BadRequestError naming the first field of a ``/v1/completions`` body beyond a limit."""
        self._check_common(body)

    def _check_common(self, body: Mapping[str, Any]) -> None:
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
        for index, text in enumerate(stops):
            if isinstance(text, str) and len(text) > self.max_stop_chars:
                raise BadRequestError(
                    f"is {len(text)} characters; this server accepts stop strings of at most {self.max_stop_chars}",
                    param="stop" if isinstance(stop, str) else f"stop[{index}]",
                )
        if not self.max_output_tokens:
            return
        for key in ("max_completion_tokens", "max_tokens"):
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > self.max_output_tokens:
                raise BadRequestError(
                    f"is {value}; this server generates at most {self.max_output_tokens} tokens per request",
                    param=key,
                )
