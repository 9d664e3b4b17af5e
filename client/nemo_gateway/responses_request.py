"""A ``POST /v1/responses`` body read into the chat-completions body that the chat core serves.

The Responses API is a second front on the one chat core (``nemo_chat_core``): its input items become chat
messages, its function tools and ``tool_choice`` the chat spellings, ``text.format`` the chat ``response_format``,
``max_output_tokens`` the chat ``max_tokens``. The core then renders the v3 prompt, guides the output and parses
tool calls as it does for chat, so the same conversation gives the same prompt ids through either API.

Items are kept in the Responses shape (each with an id) so that a stored response can list its input and a
later request can continue it (``previous_response_id``): :func:`chat_messages` turns any run of items, earlier
function calls and their outputs included, into the chat messages of the whole conversation.

A field this deployment does not honour is refused (400) by name, as on chat: fields accepted only with the
value that changes nothing are listed in ``_NEUTRAL``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nemo_protocol.errors import BadRequestError

_USED = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "max_output_tokens",
    "temperature", "top_p", "metadata", "store", "stream", "previous_response_id", "user",
})  # fmt: skip
# Accepted only with the value that changes nothing here (the value given, or these).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "include": (None, []),
    "truncation": (None, "disabled"),
    "background": (None, False),
    "reasoning": (None,),
    "service_tier": (None, "auto", "default"),
    "prompt_cache_key": (None,),
}
MAX_METADATA_PAIRS = 16  # OpenAI's bounds on metadata
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
_TOOL_CHOICE_MODES = ("none", "auto", "required")


@dataclass(frozen=True)
class ResponsesRequest:
    """What one ``/v1/responses`` request asks for, checked; ``input_items`` in the stored shape (with ids)."""

    input_items: list[dict[str, Any]]
    instructions: str | None
    chat_fields: dict[str, Any]  # the chat body's fields other than messages
    metadata: dict[str, str]
    store: bool | None  # None: the deployment's default
    stream: bool
    previous_response_id: str | None
    echo: dict[str, Any]  # the request's settings as the Response object repeats them

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ResponsesRequest:
        unknown = sorted(set(body) - _USED - set(_NEUTRAL))
        if unknown:
            accepted = ", ".join(sorted(_USED | set(_NEUTRAL)))
            raise BadRequestError(f"is not supported by this deployment; accepted fields: {accepted}", param=unknown[0])
        for key, neutral in _NEUTRAL.items():
            if key in body and body[key] not in neutral:
                raise BadRequestError(
                    f"is not supported by this deployment (accepted: {', '.join(map(repr, neutral))})", param=key
                )
        if "input" not in body:
            raise BadRequestError("is required: a string or a list of input items", param="input")
        instructions = _optional_str(body, "instructions")
        tools = _tools(body.get("tools"))
        tool_choice = _tool_choice(body.get("tool_choice"))
        chat_fields: dict[str, Any] = {
            key: body[key] for key in ("temperature", "top_p", "parallel_tool_calls", "user") if key in body
        }
        if tools:
            chat_fields["tools"] = tools
        if tool_choice is not None:
            chat_fields["tool_choice"] = tool_choice
        if body.get("max_output_tokens") is not None:
            chat_fields["max_tokens"] = body["max_output_tokens"]
        text = _text_config(body.get("text"))
        response_format = _response_format(text["format"])
        if response_format is not None:
            chat_fields["response_format"] = response_format
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise BadRequestError("must be a boolean", param="stream")
        store = body.get("store")
        if store is not None and not isinstance(store, bool):
            raise BadRequestError("must be a boolean", param="store")
        previous = _optional_str(body, "previous_response_id")
        echo = {
            "instructions": instructions,
            "tools": [dict(tool) for tool in body.get("tools") or []],
            "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "text": text,
            "truncation": "disabled",
            "previous_response_id": previous,
            "user": body.get("user"),
        }
        return cls(
            input_items=input_items(body["input"]),
            instructions=instructions,
            chat_fields=chat_fields,
            metadata=_metadata(body.get("metadata")),
            store=store,
            stream=bool(stream),
            previous_response_id=previous,
            echo=echo,
        )

    def chat_body(self, context: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The chat body for this request after the conversation's earlier ``context`` items (oldest first)."""
        messages = chat_messages([*context, *self.input_items])
        if self.instructions:
            messages.insert(0, {"role": "system", "content": self.instructions})
        body = {"messages": messages, **self.chat_fields}
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body


# ----- input items --------------------------------------------------------------------------------------
def new_item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def input_items(value: Any) -> list[dict[str, Any]]:
    """``input`` as items in the stored shape: a string is one user message; each item checked, given an id."""
    if isinstance(value, str):
        return [_message_item("user", [{"type": "input_text", "text": value}], None)]
    if not isinstance(value, list) or not value:
        raise BadRequestError("must be a string or a non-empty list of input items", param="input")
    return [_input_item(item, f"input[{index}]") for index, item in enumerate(value)]


def _input_item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise BadRequestError("must be an input item object", param=where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "system", "developer", "assistant"):
            raise BadRequestError(
                f"must be 'user', 'system', 'developer' or 'assistant', got {role!r}", param=f"{where}.role"
            )
        return _message_item(role, _content_parts(item.get("content"), role, f"{where}.content"), item.get("id"))
    if kind == "function_call":
        name, arguments, call_id = (_required_str(item, key, where) for key in ("name", "arguments", "call_id"))
        return {
            "type": "function_call",
            "id": item.get("id") or new_item_id("fc"),
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }
    if kind == "function_call_output":
        call_id = _required_str(item, "call_id", where)
        return {
            "type": "function_call_output",
            "id": item.get("id") or new_item_id("fco"),
            "call_id": call_id,
            "output": _call_output(item.get("output"), f"{where}.output"),
            "status": "completed",
        }
    raise BadRequestError(
        f"input items of type {kind!r} are not supported; accepted: message, function_call, function_call_output",
        param=f"{where}.type",
    )


def _message_item(role: str, content: list[dict[str, Any]], item_id: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id if isinstance(item_id, str) else new_item_id("msg"),
        "role": role,
        "content": content,
        "status": "completed",
    }


def _content_parts(content: Any, role: str, where: str) -> list[dict[str, Any]]:
    """A message's content as text parts: ``input_text`` (``output_text`` for the assistant, annotations dropped)."""
    kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        return [text_part(kind, content)]
    if not isinstance(content, list):
        raise BadRequestError("must be a string or a list of content parts", param=where)
    parts = []
    for index, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") not in ("input_text", "output_text"):
            got = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise BadRequestError(
                f"only text parts (input_text, output_text) are accepted (Mistral NeMo reads text only), got {got!r}",
                param=f"{where}[{index}]",
            )
        if not isinstance(part.get("text"), str):
            raise BadRequestError("must be a string", param=f"{where}[{index}].text")
        parts.append(text_part(kind, part["text"]))
    return parts


def text_part(kind: str, text: str) -> dict[str, Any]:
    """A content part: ``input_text``, or ``output_text`` (the assistant's, with its empty annotations and logprobs)."""
    part: dict[str, Any] = {"type": kind, "text": text}
    if kind == "output_text":
        part.update(annotations=[], logprobs=[])
    return part


def _call_output(output: Any, where: str) -> str:
    """A function call's output: a string, or text parts (joined)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(
        isinstance(part, Mapping) and part.get("type") == "input_text" and isinstance(part.get("text"), str)
        for part in output
    ):
        return "".join(part["text"] for part in output)
    raise BadRequestError("must be a string or a list of input_text parts", param=where)


def chat_messages(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of a run of stored items: messages as they are (text parts), consecutive function
    calls as one assistant message with those tool calls, each call's output as a tool message."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            parts = [{"type": "text", "text": part["text"]} for part in item["content"]]
            messages.append({"role": item["role"], "content": parts})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "tool_calls": [call]})
        else:  # function_call_output
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


# ----- tools and output format ----------------------------------------------------------------------------
def _tools(value: Any) -> list[dict[str, Any]]:
    """Responses function tools (``{"type": "function", "name", "parameters", ...}``) in the chat shape."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequestError("must be a list of tools", param="tools")
    tools = []
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            got = tool.get("type") if isinstance(tool, Mapping) else type(tool).__name__
            raise BadRequestError(f"only function tools are supported, got {got!r}", param=f"{where}.type")
        unknown = sorted(set(tool) - {"type", "name", "description", "parameters", "strict"})
        if unknown:
            raise BadRequestError(
                "is not supported (accepted: name, description, parameters, strict)", param=f"{where}.{unknown[0]}"
            )
        function = {
            key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None
        }
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any) -> Any:
    if value is None or value in _TOOL_CHOICE_MODES:
        return value
    if isinstance(value, Mapping) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}
    raise BadRequestError(
        "must be 'none', 'auto', 'required' or {'type': 'function', 'name': ...}", param="tool_choice"
    )


def _text_config(value: Any) -> dict[str, Any]:
    """``text``: only ``format`` (``text``, ``json_object``, ``json_schema``); the default is plain text."""
    if value is None:
        return {"format": {"type": "text"}}
    if not isinstance(value, Mapping):
        raise BadRequestError("must be an object with format", param="text")
    unknown = sorted(key for key in value if key != "format" and value[key] is not None)
    if unknown:
        raise BadRequestError("is not supported (accepted: format)", param=f"text.{unknown[0]}")
    fmt = value.get("format") or {"type": "text"}
    if not isinstance(fmt, Mapping) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise BadRequestError("must be {'type': 'text' | 'json_object' | 'json_schema', ...}", param="text.format")
    return {"format": dict(fmt)}


def _response_format(fmt: Mapping[str, Any]) -> dict[str, Any] | None:
    """``text.format`` as the chat ``response_format`` (json_schema's fields move under ``json_schema``)."""
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if fmt.get(key) is not None}
    return {"type": "json_schema", "json_schema": schema}


# ----- small fields ---------------------------------------------------------------------------------------
def _metadata(value: Any) -> dict[str, str]:
    """OpenAI's metadata: at most 16 pairs of strings, keys up to 64 characters, values up to 512."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_METADATA_PAIRS:
        raise BadRequestError(f"must be an object of at most {MAX_METADATA_PAIRS} string pairs", param="metadata")
    for key, text in value.items():
        if len(key) > MAX_METADATA_KEY or not isinstance(text, str) or len(text) > MAX_METADATA_VALUE:
            raise BadRequestError(
                f"keys must be at most {MAX_METADATA_KEY} characters and values strings of at most "
                f"{MAX_METADATA_VALUE}",
                param=f"metadata.{key}",
            )
    return dict(value)


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequestError("must be a string", param=key)
    return value


def _required_str(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise BadRequestError("is required: a string", param=f"{where}.{key}")
    return value
