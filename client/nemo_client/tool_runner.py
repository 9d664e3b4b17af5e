"""The function-calling loop: ask the model, run the tools it calls, send the results back, repeat.

Tools are plain Python callables (sync or async). Their OpenAI definitions are derived from their
signatures and docstrings unless given. Arguments the model produces are validated against each
tool's JSON Schema before the tool runs; a validation failure, an unknown tool or an exception in a
tool is reported back to the model as the tool's result, so the model can correct itself.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import jsonschema
from openai.types.chat import ChatCompletion, ChatCompletionMessageToolCall
from typing_extensions import Unpack

from nemo_client.types import ToolRunParams
from nemo_protocol.errors import NemoError

if TYPE_CHECKING:
    from nemo_client.resources.chat import AsyncChatCompletions

_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


class ToolLoopError(NemoError):
    """The model was still calling tools after ``max_steps`` rounds; ``messages`` holds the transcript."""

    def __init__(self, message: str, messages: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.messages = messages


@dataclass
class ToolRun:
    """The final answer and the whole conversation that led to it."""

    completion: ChatCompletion
    messages: list[dict[str, Any]]
    tool_calls: list[ChatCompletionMessageToolCall] = field(default_factory=list)

    @property
    def content(self) -> str | None:
        return self.completion.choices[0].message.content


def function_tool(function: Callable[..., Any], name: str | None = None) -> dict[str, Any]:
    """An OpenAI tool definition from a function's signature, type hints and docstring."""
    hints = typing.get_type_hints(function)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        schema, optional = _schema_for(hints.get(parameter.name, Any))
        properties[parameter.name] = schema
        if parameter.default is parameter.empty and not optional:
            required.append(parameter.name)
    doc = inspect.getdoc(function) or ""
    return {
        "type": "function",
        "function": {
            "name": name or function.__name__,
            "description": doc.split("\n\n")[0].strip(),
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _schema_for(annotation: Any) -> tuple[dict[str, Any], bool]:
    """JSON Schema for a type hint, and whether the hint admits None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        schema, _ = _schema_for(rest[0]) if len(rest) == 1 else ({}, False)
        return schema, len(rest) < len(args)
    if origin is typing.Literal:
        return {"enum": list(args)}, False
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}, False
    if annotation is list or origin in (list, Sequence, tuple):
        return ({"type": "array", "items": _schema_for(args[0])[0]} if args else {"type": "array"}), False
    if annotation is dict or origin in (dict, Mapping):
        return {"type": "object"}, False
    return {}, False


async def run_tools(
    completions: AsyncChatCompletions,
    *,
    messages: Sequence[Mapping[str, Any]],
    tools: Mapping[str, Callable[..., Any]],
    tool_definitions: Sequence[Mapping[str, Any]] | None = None,
    max_steps: int = 8,
    **params: Unpack[ToolRunParams],
) -> ToolRun:
    """Loop until the model answers without calling a tool, at most ``max_steps`` model calls.

    ``params`` go to each ``create`` call (``temperature``, ``max_tokens``, ``seed``, ...). Parallel tool calls
    run concurrently.
    """
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    if cast(Mapping[str, Any], params).get("stream"):  # not a ToolRunParams key: refused for untyped callers
        raise ValueError("run_tools collects whole answers; do not pass stream=True")
    definitions = _definitions(tools, tool_definitions)
    schemas = {d["function"]["name"]: d["function"].get("parameters") or {} for d in definitions}
    transcript = [dict(m) for m in messages]
    all_calls: list[ChatCompletionMessageToolCall] = []
    for _ in range(max_steps):
        completion = await completions.create(messages=transcript, tools=definitions, **params)
        message = completion.choices[0].message
        calls = [call for call in message.tool_calls or [] if call.type == "function"]
        if not calls:
            return ToolRun(completion=completion, messages=transcript, tool_calls=all_calls)
        all_calls += calls
        transcript.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for c in calls
                ],
            }
        )
        results = await asyncio.gather(*(_call_tool(call, tools, schemas) for call in calls))
        transcript += [
            {"role": "tool", "tool_call_id": call.id, "content": result}
            for call, result in zip(calls, results, strict=True)
        ]
    raise ToolLoopError(f"the model was still calling tools after {max_steps} steps", transcript)


def _definitions(
    tools: Mapping[str, Callable[..., Any]], given: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    if given is None:
        return [function_tool(function, name) for name, function in tools.items()]
    definitions = [dict(d) for d in given]
    names = {d.get("function", {}).get("name") for d in definitions}
    if names != set(tools):
        raise ValueError(
            f"tool_definitions name {sorted(n for n in names if n)} but tools has {sorted(tools)}; they must match"
        )
    return definitions


async def _call_tool(
    call: ChatCompletionMessageToolCall, tools: Mapping[str, Callable[..., Any]], schemas: Mapping[str, Any]
) -> str:
    name = call.function.name
    function = tools.get(name)
    if function is None:
        return _error(f"unknown tool {name!r}; available: {', '.join(sorted(tools))}")
    try:
        arguments = json.loads(call.function.arguments or "{}")
        jsonschema.validate(arguments, schemas.get(name) or {})
    except json.JSONDecodeError as exc:
        return _error(f"arguments are not valid JSON: {exc.msg}")
    except jsonschema.ValidationError as exc:
        return _error(f"arguments do not match the schema of {name!r}: {exc.message}")
    try:
        if inspect.iscoroutinefunction(function):
            result = await function(**arguments)
        else:
            result = await asyncio.to_thread(function, **arguments)
    except Exception as exc:  # the model gets to see and handle the tool's failure
        return _error(f"{name} failed: {type(exc).__name__}: {exc}")
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)
