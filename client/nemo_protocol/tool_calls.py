"""Turn generated ids into OpenAI content and tool calls, in one go or while they stream.

Mistral NeMo answers a tool request with the control token ``[TOOL_CALLS]`` (id 9, never the text
``"[TOOL_CALLS]"``) followed by a JSON list ``[{"name": ..., "arguments": {...}}, ...]``. Output that
starts with that id is parsed as tool calls; any other output is content.

Each tool call is emitted as soon as its JSON object closes, with a fresh 9-character id and its
arguments as a JSON string (the OpenAI shape). Malformed tool-call output is never dropped: the
text that could not be parsed is returned as content, and :attr:`OutputParser.tool_call_error`
says what was wrong. Tool calls emitted before the fault stand. :func:`parse_output` runs the same
parser over a finished output, so batch and streaming results are identical.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nemo_protocol.chat_format import FUNCTION_NAME_RE
from nemo_protocol.tekken import Tekkenizer

_ID_ALPHABET = string.ascii_letters + string.digits
_WHITESPACE = " \t\r\n"


def new_tool_call_id() -> str:
    """A fresh tool-call id in the form the model was trained on: 9 random alphanumerics."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


@dataclass(frozen=True)
class ToolCall:
    """One function call, OpenAI-shaped: ``arguments`` is a JSON string encoding an object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    call: ToolCall


Delta = ContentDelta | ToolCallDelta


@dataclass
class ParsedOutput:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_error: str | None = None


class _Malformed(Exception):
    pass


class OutputParser:
    """Incremental parser of one generated output. Feed ids with :meth:`feed`, end with :meth:`finish`."""

    def __init__(self, tokenizer: Tekkenizer, *, new_id: Callable[[], str] = new_tool_call_id) -> None:
        self._tool_calls_id = tokenizer.control_id("[TOOL_CALLS]")
        self._decoder = tokenizer.incremental_decoder()
        self._new_id = new_id
        self._mode: str | None = None  # None until the first id, then "content" or "tools"
        self.content_parts: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.tool_call_error: str | None = None
        # Tool-call scanner state over the not yet consumed text.
        self._buffer = ""
        self._text_before_first_call = ""
        self._scan = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._list_open = False

    @property
    def is_tool_call_output(self) -> bool:
        """True once the output has started with ``[TOOL_CALLS]``."""
        return self._mode == "tools"

    def feed(self, ids: Iterable[int] | int) -> list[Delta]:
        """Add generated ids; returns the content and tool calls they complete."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        if self._mode is None and ids:
            self._mode = "tools" if ids[0] == self._tool_calls_id else "content"
        return self._take_text(self._decoder.feed(ids))

    def finish(self) -> list[Delta]:
        """End of output: flushes held-back bytes and reports an unfinished tool call as content."""
        deltas = self._take_text(self._decoder.flush())
        if self._mode != "tools" or self.tool_call_error is not None:
            return deltas
        if self._depth > 0:
            deltas += self._fail("the output ended inside a tool call's JSON")
        elif not self.tool_calls:
            deltas += self._fail("[TOOL_CALLS] was not followed by any tool call")
        return deltas

    def result(self) -> ParsedOutput:
        """What the output amounts to so far (complete after :meth:`finish`)."""
        content = "".join(self.content_parts)
        return ParsedOutput(
            content=content if content or not self.tool_calls else None,
            tool_calls=list(self.tool_calls),
            tool_call_error=self.tool_call_error,
        )

    # ----- internals --------------------------------------------------------------------------------
    def _take_text(self, text: str) -> list[Delta]:
        if not text:
            return []
        if self._mode != "tools" or self.tool_call_error is not None:
            self.content_parts.append(text)
            return [ContentDelta(text)]
        self._buffer += text
        if not self.tool_calls:
            self._text_before_first_call += text
        return self._scan_tool_calls()

    def _fail(self, reason: str) -> list[Delta]:
        """Give up on tool calls: the text not understood (all of it when no call parsed) becomes content."""
        self.tool_call_error = reason
        text = self._buffer if self.tool_calls else self._text_before_first_call
        self._buffer = self._text_before_first_call = ""
        if not text:
            return []
        self.content_parts.append(text)
        return [ContentDelta(text)]

    def _scan_tool_calls(self) -> list[Delta]:
        """Consume the buffered text; ``self._buffer`` keeps the unconsumed rest (an open object from its ``{``)."""
        deltas: list[Delta] = []
        buffer, position = self._buffer, self._scan
        while position < len(buffer):
            char = buffer[position]
            if self._depth == 0:
                if char in _WHITESPACE or (char == "," and self._list_open):
                    pass
                elif char == "[" and not self._list_open:
                    self._list_open = True
                elif char == "]" and self._list_open:
                    self._list_open = False
                elif char == "{":
                    buffer, position = buffer[position:], 0
                    self._depth = 1
                else:
                    self._buffer = buffer[position:]
                    return deltas + self._fail(f"expected a JSON list of tool calls, found {char!r}")
            elif self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    try:
                        call = self._tool_call(buffer[: position + 1])
                    except _Malformed as exc:
                        self._buffer = buffer
                        return deltas + self._fail(str(exc))
                    deltas.append(ToolCallDelta(len(self.tool_calls), call))
                    self.tool_calls.append(call)
                    buffer, position = buffer[position + 1 :], -1
            position += 1
        if self._depth == 0:
            buffer, position = "", 0
        self._buffer, self._scan = buffer, position
        return deltas

    def _tool_call(self, text: str) -> ToolCall:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _Malformed(f"a tool call is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise _Malformed("a tool call must be a JSON object")
        name = obj.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME_RE.match(name):
            raise _Malformed(f"a tool call has no valid 'name' (got {name!r})")
        arguments = obj.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                raise _Malformed(f"the arguments of {name!r} are not JSON") from None
        if not isinstance(arguments, dict):
            raise _Malformed(f"the arguments of {name!r} must be a JSON object")
        return ToolCall(id=self._new_id(), name=name, arguments=json.dumps(arguments, ensure_ascii=False))


def parse_output(
    tokenizer: Tekkenizer, ids: Iterable[int], *, new_id: Callable[[], str] = new_tool_call_id
) -> ParsedOutput:
    """Parse a finished output: content, or tool calls when it starts with ``[TOOL_CALLS]``."""
    parser = OutputParser(tokenizer, new_id=new_id)
    parser.feed(ids)
    parser.finish()
    return parser.result()
