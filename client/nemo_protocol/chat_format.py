"""Mistral NeMo Instruct's prompt format (v3, Tekken) from OpenAI-shaped chat requests.

``encode_chat`` validates a request and renders it into exactly the ids that mistral-common's
``MistralTokenizer.v3(is_tekken=True).encode_chat_completion`` produces, on the server side:
control tokens come only from this module, text from users and tools is always encoded as text.

The rules mirror mistral-common (normalizer + v3 validator + ``InstructTokenizerV3``):

* system messages are joined with a blank line and prepended to the **last** user message;
* consecutive messages of one role are merged (text joined with a blank line; a system message
  between two user messages keeps them apart);
* ``[AVAILABLE_TOOLS]`` + the tools' JSON go right before the last user message's ``[INST]``;
* an assistant turn is its text (trailing spaces removed) or ``[TOOL_CALLS]`` + a JSON list of
  ``{"name", "arguments", "id"}``, then ``</s>``;
* each tool result is ``[TOOL_RESULTS]{"content": ..., "call_id": ...}[/TOOL_RESULTS]`` with the
  content parsed as JSON when it parses.

OpenAI tool-call ids (``call_...``) are mapped to the 9 alphanumerics the model was trained on by
:func:`to_model_tool_call_id`, the same way for a call and for its result.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer

ROLES = ("system", "user", "assistant", "tool")
# OpenAI's newer name for a system message.
ROLE_ALIASES = {"developer": "system"}
FUNCTION_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MODEL_TOOL_CALL_ID_RE = re.compile(r"^[a-zA-Z0-9]{9}$")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Which role may follow which (mistral-common's v3 validator).
_ALLOWED_NEXT = {
    "system": {"system", "user", "assistant"},
    "user": {"system", "user", "assistant"},
    "assistant": {"assistant", "user", "tool"},
    "tool": {"assistant", "tool", "user"},
}
_MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal"},
    "tool": {"role", "content", "name", "tool_call_id"},
}
_BLANK_LINE = "\n\n"


def to_model_tool_call_id(call_id: str) -> str:
    """Map any tool-call id to 9 alphanumerics: ids that already are stay, others are hashed (base62)."""
    if MODEL_TOOL_CALL_ID_RE.match(call_id):
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode("utf-8")).digest()[:8], "big")
    chars = []
    for _ in range(9):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


@dataclass
class _Call:
    name: str
    arguments: Any
    model_id: str


@dataclass
class _Turn:
    """A message after validation and merging, ready to render."""

    role: str
    text: str = ""
    calls: list[_Call] = field(default_factory=list)
    call_id: str = ""


def encode_chat(
    tokenizer: Tekkenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    allow_final_assistant: bool = False,
) -> list[int]:
    """Validate an OpenAI-shaped conversation and render it into Mistral NeMo Instruct prompt ids.

    ``allow_final_assistant`` accepts a conversation that ends with a complete assistant turn
    (training and calibration data); a serving request must end with a user or tool message.
    Raises :class:`BadRequestError` naming the field and the rule on any invalid input.
    """
    tools_json = _tools_json(tools)
    turns, system_prompt = _validate_messages(messages, allow_final_assistant)
    return _render(tokenizer, turns, system_prompt, tools_json)


# ----- validation ---------------------------------------------------------------------------------------
def _validate_messages(
    messages: Sequence[Mapping[str, Any]], allow_final_assistant: bool
) -> tuple[list[_Turn], str | None]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise BadRequestError("must be a non-empty list of messages", param="messages")
    system_parts: list[str] = []
    turns: list[_Turn] = []
    previous_role: str | None = None
    open_calls: dict[str, str] = {}  # model id -> param of the call still waiting for its result
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = _role(message, where)
        if previous_role is not None and role not in _ALLOWED_NEXT[previous_role]:
            raise BadRequestError(
                f"a '{role}' message cannot follow a '{previous_role}' message", param=f"{where}.role"
            )
        if role != "tool" and open_calls:
            raise BadRequestError(
                f"tool call {', '.join(repr(p) for p in open_calls.values())} has no tool result; "
                "every tool call must be answered by a tool message before the conversation goes on",
                param=where,
            )
        if role == "system":
            text = _text_content(message, where, required=True)
            if text:
                system_parts.append(text)
            # A system message ends a run of same-role messages even though it renders elsewhere.
            turns.append(_Turn("system"))
        elif role == "user":
            _merge_text(turns, "user", _text_content(message, where, required=True))
        elif role == "assistant":
            text = _text_content(message, where, required=False)
            calls = _tool_calls(message, where)
            if text and calls:
                raise BadRequestError("an assistant message has either content or tool_calls, not both", param=where)
            if not text and not calls:
                raise BadRequestError("an assistant message needs non-empty content or tool_calls", param=where)
            if calls:
                open_calls = {call.model_id: f"{where}.tool_calls[{i}]" for i, call in enumerate(calls)}
                if len(open_calls) != len(calls):
                    raise BadRequestError("tool call ids must be unique", param=f"{where}.tool_calls")
                _merge_calls(turns, calls, where)
            else:
                _merge_text(turns, "assistant", text)
        else:
            call_id = _tool_result_id(message, where, open_calls)
            del open_calls[call_id]
            turns.append(_Turn("tool", text=_text_content(message, where, required=False), call_id=call_id))
        previous_role = role
    last_role = previous_role
    if open_calls and not (allow_final_assistant and last_role == "assistant"):
        raise BadRequestError(
            f"tool call {', '.join(repr(p) for p in open_calls.values())} has no tool result",
            param=f"messages[{len(messages) - 1}]",
        )
    if len(messages) == 1 and last_role not in ("user", "system"):
        raise BadRequestError("a conversation starts with a user or system message", param="messages[0].role")
    final_assistant_allowed = allow_final_assistant and last_role == "assistant"
    if len(messages) > 1 and last_role not in ("user", "tool") and not final_assistant_allowed:
        raise BadRequestError(
            f"the last message must be from the user or a tool, not '{last_role}'",
            param=f"messages[{len(messages) - 1}].role",
        )
    rendered = [turn for turn in turns if turn.role != "system"]
    if not rendered or rendered[0].role != "user":
        rendered.insert(0, _Turn("user"))
    return rendered, _BLANK_LINE.join(system_parts) if system_parts else None


def _role(message: Any, where: str) -> str:
    if not isinstance(message, Mapping):
        raise BadRequestError(f"must be an object with 'role' and 'content', got {type(message).__name__}", param=where)
    role = message.get("role")
    role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        raise BadRequestError(
            f"unknown role {message.get('role')!r}; expected one of {', '.join(ROLES)}", param=f"{where}.role"
        )
    unknown = set(message) - _MESSAGE_KEYS[role]
    if unknown:
        raise BadRequestError(
            f"unknown field in a {role} message; accepted fields: {', '.join(sorted(_MESSAGE_KEYS[role]))}",
            param=f"{where}.{sorted(unknown)[0]}",
        )
    if role == "assistant" and message.get("refusal") is not None:
        raise BadRequestError("must be null: refusals cannot be sent back to the model", param=f"{where}.refusal")
    return role


def _text_content(message: Mapping[str, Any], where: str, *, required: bool) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts (joined by a blank line)."""
    content = message.get("content")
    if content is None:
        if required:
            raise BadRequestError("is required for this role", param=f"{where}.content")
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequestError(
            f"must be a string or a list of text parts, got {type(content).__name__}", param=f"{where}.content"
        )
    texts: list[str] = []
    for i, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise BadRequestError(
                f"only text parts {{'type': 'text', 'text': '...'}} are accepted (Mistral NeMo reads text "
                f"only), got {kind!r}",
                param=f"{where}.content[{i}]",
            )
        if part["text"]:
            texts.append(part["text"])
    return _BLANK_LINE.join(texts)


def _tool_calls(message: Mapping[str, Any], where: str) -> list[_Call]:
    raw = message.get("tool_calls")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequestError("must be a list of tool calls", param=f"{where}.tool_calls")
    calls = []
    for i, call in enumerate(raw):
        path = f"{where}.tool_calls[{i}]"
        function = _function_of(call, path, "{'id', 'type': 'function', 'function': {'name', 'arguments'}}")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise BadRequestError("is required: a non-empty string", param=f"{path}.id")
        name = _function_name(function.get("name"), f"{path}.function.name")
        arguments = _arguments(function.get("arguments"), f"{path}.function.arguments")
        calls.append(_Call(name=name, arguments=arguments, model_id=to_model_tool_call_id(call_id)))
    return calls


def _function_of(item: Any, where: str, shape: str) -> Mapping[str, Any]:
    """The ``function`` object of a tool or a tool call, once its envelope is checked."""
    if not isinstance(item, Mapping):
        raise BadRequestError(f"must be an object {shape}", param=where)
    if item.get("type", "function") != "function":
        raise BadRequestError(f"must be 'function', got {item.get('type')!r}", param=f"{where}.type")
    function = item.get("function")
    if not isinstance(function, Mapping):
        raise BadRequestError(f"is required: an object, as in {shape}", param=f"{where}.function")
    return function


def _function_name(name: Any, param: str) -> str:
    if not isinstance(name, str) or not FUNCTION_NAME_RE.match(name):
        raise BadRequestError(
            f"{name!r} is not a valid function name: 1-64 characters from a-z, A-Z, 0-9, '_' and '-'", param=param
        )
    return name


def _arguments(arguments: Any, param: str) -> Any:
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        raise BadRequestError(f"must be a JSON string, got {type(arguments).__name__}", param=param)
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"is not valid JSON ({exc.msg} at position {exc.pos})", param=param) from None
    if not isinstance(parsed, dict):
        raise BadRequestError(f"must encode a JSON object, got {type(parsed).__name__}", param=param)
    return parsed


def _tool_result_id(message: Mapping[str, Any], where: str, open_calls: Mapping[str, str]) -> str:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequestError("is required: the id of the tool call this answers", param=f"{where}.tool_call_id")
    if (name := message.get("name")) is not None:
        _function_name(name, f"{where}.name")
    model_id = to_model_tool_call_id(call_id)
    if model_id not in open_calls:
        raise BadRequestError(
            f"{call_id!r} does not answer a tool call of the preceding assistant message "
            "(unknown id, or a second result for the same call)",
            param=f"{where}.tool_call_id",
        )
    return model_id


def _merge_text(turns: list[_Turn], role: str, text: str) -> None:
    if turns and turns[-1].role == role:
        previous = turns[-1]
        previous.text = previous.text + _BLANK_LINE + text if previous.text and text else previous.text + text
    else:
        turns.append(_Turn(role, text=text))


def _merge_calls(turns: list[_Turn], calls: list[_Call], where: str) -> None:
    # A preceding assistant turn with calls would still wait for its results, so only text can precede.
    if turns and turns[-1].role == "assistant":
        raise BadRequestError(
            "consecutive assistant messages merge into one turn, which cannot mix content and tool calls", param=where
        )
    turns.append(_Turn("assistant", calls=calls))


# ----- tools --------------------------------------------------------------------------------------------
# OpenAI's function tool. `strict` is not rendered (nor by mistral-common): the server enforces it instead.
_TOOL_KEYS = ("type", "function")
_FUNCTION_KEYS = ("name", "description", "parameters", "strict")


def _known_keys(item: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(item) - set(known))
    if unknown:
        raise BadRequestError(f"unknown key; accepted: {', '.join(known)}", param=f"{where}.{unknown[0]}")


def _tools_json(tools: Sequence[Mapping[str, Any]] | None) -> str | None:
    if tools is None:
        return None
    if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence):
        raise BadRequestError("must be a list of tools", param="tools")
    if not tools:
        return None
    rendered = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        function = _function_of(tool, where, "{'type': 'function', 'function': {'name', ...}}")
        _known_keys(tool, _TOOL_KEYS, where)
        _known_keys(function, _FUNCTION_KEYS, f"{where}.function")
        name = _function_name(function.get("name"), f"{where}.function.name")
        if name in seen:
            raise BadRequestError(f"{name!r} is defined twice", param=f"{where}.function.name")
        seen.add(name)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise BadRequestError("must be a string", param=f"{where}.function.description")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise BadRequestError("must be a JSON Schema object", param=f"{where}.function.parameters")
        if not isinstance(function.get("strict", False), bool):
            raise BadRequestError("must be a boolean", param=f"{where}.function.strict")
        rendered.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": description or "",
                    "parameters": dict(parameters) if parameters is not None else {},
                },
            }
        )
    return json.dumps(rendered, ensure_ascii=False)


# ----- rendering ----------------------------------------------------------------------------------------
def _render(tokenizer: Tekkenizer, turns: list[_Turn], system_prompt: str | None, tools_json: str | None) -> list[int]:
    control = tokenizer.control_id
    inst, end_inst, eos = control("[INST]"), control("[/INST]"), tokenizer.eos_id
    last_user = max(i for i, turn in enumerate(turns) if turn.role == "user")
    ids = [tokenizer.bos_id]
    for index, turn in enumerate(turns):
        if turn.role == "user":
            text = turn.text
            if index == last_user:
                if tools_json is not None:
                    ids.append(control("[AVAILABLE_TOOLS]"))
                    ids += tokenizer.encode(tools_json)
                    ids.append(control("[/AVAILABLE_TOOLS]"))
                if system_prompt:
                    text = system_prompt + _BLANK_LINE + text
            ids.append(inst)
            ids += tokenizer.encode(text)
            ids.append(end_inst)
        elif turn.role == "assistant":
            if turn.calls:
                calls = [{"name": c.name, "arguments": c.arguments, "id": c.model_id} for c in turn.calls]
                ids.append(control("[TOOL_CALLS]"))
                ids += tokenizer.encode(json.dumps(calls, ensure_ascii=False))
            else:
                ids += tokenizer.encode(turn.text.rstrip(" "))
            ids.append(eos)
        else:
            result = {"content": _parse_json_or_text(turn.text), "call_id": turn.call_id}
            ids.append(control("[TOOL_RESULTS]"))
            ids += tokenizer.encode(json.dumps(result, ensure_ascii=False))
            ids.append(control("[/TOOL_RESULTS]"))
    return ids


def _parse_json_or_text(text: str) -> Any:
    """Tool output as the model saw it in training: parsed when it is JSON, else the string itself."""
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
