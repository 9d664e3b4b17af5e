"""The chat core's answer as a Responses API ``response``: whole (from a ``chat.completion``) or streamed (from
``chat.completion.chunk``s, as the event sequence the openai SDK's ``responses.stream`` accumulates).

The assistant's text becomes one ``message`` output item with an ``output_text`` part; each tool call a
``function_call`` item whose ``call_id`` is the chat core's call id (the id the model reads back with the
call's output). ``finish_reason`` ``length`` makes the response ``incomplete`` (``max_output_tokens``), as on
OpenAI.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nemo_gateway.responses_request import new_item_id, text_part

Event = dict[str, Any]


@dataclass
class ResponseShell:
    """What every form of one response shares: its id, creation time, model, the request's settings."""

    model: str
    echo: Mapping[str, Any]
    metadata: Mapping[str, str]
    store: bool
    id: str = field(default_factory=lambda: new_item_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def object(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Mapping[str, Any] | None = None,
        *,
        error: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The ``response`` object; ``usage`` in the chat shape (prompt/completion tokens)."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None if error is None else dict(error),
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": self.model,
            "output": output,
            **self.echo,
            "metadata": dict(self.metadata),
            "store": self.store,
            "usage": None if usage is None else response_usage(usage),
        }


def response_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def chat_usage(usage: Mapping[str, Any] | None) -> dict[str, int] | None:
    """A Responses ``usage`` in the chat shape the gateway's metrics count."""
    if not usage:
        return None
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def message_item(text: str, status: str = "completed", item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id or new_item_id("msg"),
        "role": "assistant",
        "status": status,
        "content": [text_part("output_text", text)] if status == "completed" else [],
    }


def function_call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": new_item_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def status_of(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def whole_response(shell: ResponseShell, completion: Mapping[str, Any]) -> dict[str, Any]:
    """The ``response`` for a whole ``chat.completion``."""
    choice = completion["choices"][0]
    message = choice["message"]
    output: list[dict[str, Any]] = []
    if message.get("content"):
        output.append(message_item(message["content"]))
    for call in message.get("tool_calls") or []:
        output.append(function_call_item(call["id"], call["function"]["name"], call["function"]["arguments"]))
    return shell.object(status_of(choice.get("finish_reason")), output, completion.get("usage"))


class StreamedResponse:
    """Turns the chat chunks of one answer into Responses stream events, in the order OpenAI sends them.

    ``start()`` once, ``feed(chunk)`` per chat chunk, ``finish()`` (or ``fail(error)``) at the end; each returns
    the events to send. ``response`` is the final object once finished (what a store keeps).
    """

    def __init__(self, shell: ResponseShell) -> None:
        self._shell = shell
        self._sequence = 0
        self._output: list[dict[str, Any]] = []  # items, completed or the one still open (the last)
        self._open: dict[str, Any] | None = None  # the item being written
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> its function_call item
        self._finish_reason: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self.response: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[Event]:
        in_progress = self._shell.object("in_progress", [])
        return [
            self._event("response.created", response=in_progress),
            self._event("response.in_progress", response=in_progress),
        ]

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        events: list[Event] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            self._finish_reason = choice.get("finish_reason") or self._finish_reason
        return events

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        item = self._open
        if item is None or item["type"] != "message":
            events += self._close()
            item = message_item("", "in_progress")
            events += self._add(item)
            item["content"].append(text_part("output_text", ""))
            events.append(self._part_event("response.content_part.added", item))
        item["content"][0]["text"] += text
        events.append(self._in_item("response.output_text.delta", item, content_index=0, delta=text, logprobs=[]))
        return events

    def _call(self, call: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        index = int(call.get("index", len(self._calls)))
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            events += self._close()
            item = function_call_item(call.get("id") or "", function.get("name") or "", "", "in_progress")
            self._calls[index] = item
            events += self._add(item)
        fragment = function.get("arguments") or ""
        if fragment:
            item["arguments"] += fragment
            events.append(self._in_item("response.function_call_arguments.delta", item, delta=fragment))
        return events

    def _add(self, item: dict[str, Any]) -> list[Event]:
        self._open = item
        self._output.append(item)
        return [self._event("response.output_item.added", output_index=len(self._output) - 1, item=_copy(item))]

    def _in_item(self, kind: str, item: dict[str, Any], **fields: Any) -> Event:
        return self._event(kind, item_id=item["id"], output_index=self._output.index(item), **fields)

    def _part_event(self, kind: str, item: dict[str, Any]) -> Event:
        return self._in_item(kind, item, content_index=0, part=dict(item["content"][0]))

    def _close(self) -> list[Event]:
        """The events that end the open item, which is then complete (or incomplete: cut by the length limit)."""
        item, self._open = self._open, None
        if item is None:
            return []
        events: list[Event] = []
        if item["type"] == "message":
            part = item["content"][0]
            events.append(
                self._in_item("response.output_text.done", item, content_index=0, text=part["text"], logprobs=[])
            )
            events.append(self._part_event("response.content_part.done", item))
        else:
            events.append(self._in_item("response.function_call_arguments.done", item, arguments=item["arguments"]))
        item["status"] = status_of(self._finish_reason)
        events.append(self._event("response.output_item.done", output_index=self._output.index(item), item=_copy(item)))
        return events

    def finish(self) -> list[Event]:
        events = self._close()
        status = status_of(self._finish_reason)
        self.response = self._shell.object(status, [_copy(item) for item in self._output], self._usage)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [*events, self._event(kind, response=self.response)]

    def fail(self, error: Mapping[str, Any]) -> list[Event]:
        """The events that end a stream the chat core broke off: ``error``, then ``response.failed``."""
        details = error.get("error", error)
        message = str(details.get("message") or "the generation failed")
        code = details.get("code")
        self.response = self._shell.object(
            "failed",
            [_copy(item) for item in self._output],
            self._usage,
            error={"code": "server_error" if not isinstance(code, str) else code, "message": message},
        )
        return [
            self._event("error", code=None if code is None else str(code), message=message, param=details.get("param")),
            self._event("response.failed", response=self.response),
        ]


def _copy(item: Mapping[str, Any]) -> dict[str, Any]:
    return {**item, "content": [dict(part) for part in item["content"]]} if "content" in item else dict(item)
