"""Guided decoding requests: what a chat request asks the engine to constrain, as the tensorrtllm backend takes it.

The `tensorrt_llm` contract carries one guide per request in two inputs, `guided_decoding_guide_type` and
`guided_decoding_guide` (the tensorrtllm backend's names and type strings, tests/data/upstream). This module
turns the OpenAI / NIM / vLLM spellings into one :class:`Guide`, and refuses, naming the keyword, what the
grammar engine (xgrammar, on CPU and inside TensorRT-LLM) would silently ignore: a schema keyword it does not
enforce, a regex construct it drops. Checks here need no grammar engine, so the gateway's direct path makes
them too; a guide that is well formed here but still does not compile is refused by the engine.

* ``response_format`` ``{"type": "json_object"}`` → a JSON object; ``{"type": "json_schema", "json_schema":
  {"name", "schema", "strict", "description"}}`` → that schema;
* ``guided_json`` (a schema, object or JSON text), ``guided_regex``, ``guided_choice`` (a list of strings:
  exactly one of them), ``guided_grammar`` (xgrammar's EBNF) — under ``nvext`` (NIM) or at the top level (vLLM);
* a tool call that ``tool_choice`` requires (``required`` or a named function): ``[TOOL_CALLS]`` is forced as a
  token and the guide is the call list, each call's ``arguments`` held to its function's ``parameters``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nemo_protocol.errors import BadRequestError

GUIDE_TYPES = ("json", "json_schema", "regex", "ebnf_grammar")
"""The guide types the tensorrtllm backend maps (`utils.cc`); any other it ignores, so none is ever sent."""

GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")

# JSON Schema keywords the grammar engine enforces (checked by sampling it against `jsonschema`, see
# tests/unit/chat_core/test_guided.py), and annotations that constrain nothing.
ENFORCED_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
        "enum", "const", "anyOf", "$ref", "$defs", "definitions", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "minLength", "maxLength", "pattern", "format", "patternProperties", "multipleOf",
    }
)  # fmt: skip
ANNOTATIONS = frozenset(
    {
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
        "writeOnly", "nullable", "strict",
    }
)  # fmt: skip
SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")  # keyword → {name: schema}
SCHEMA_LISTS = ("anyOf", "prefixItems")  # keyword → [schema, ...]
SCHEMA_VALUES = ("items", "additionalProperties")  # keyword → schema (or a boolean)

# Regex constructs xgrammar drops or refuses (its regex converter's messages); what it drops would let
# through text the pattern forbids, so they are refused here by name.
_UNSUPPORTED_REGEX = (
    (re.compile(r"\(\?[=!]"), "lookahead assertions (?= and (?!"),
    (re.compile(r"\(\?<[=!]"), "lookbehind assertions (?<= and (?<!"),
    (re.compile(r"\\[1-9]|\\k<"), "backreferences"),
    (re.compile(r"\\[bB]"), "word boundaries \\b and \\B"),
    (re.compile(r"\\[pP]\{"), "unicode property escapes \\p{...}"),
)
MAX_GUIDE_CHARS = 256 * 1024
CALL_ID = {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}


@dataclass(frozen=True)
class Guide:
    """One guided-decoding request: ``type`` in GUIDE_TYPES, ``text`` the schema, regex or grammar."""

    type: str
    text: str
    param: str  # the request field it came from, named by any refusal of it

    def __post_init__(self) -> None:
        if self.type not in GUIDE_TYPES:
            raise BadRequestError(f"{self.type!r} (accepted: {', '.join(GUIDE_TYPES)})", param=self.param)
        if len(self.text) > MAX_GUIDE_CHARS:
            raise BadRequestError(f"is {len(self.text)} characters; at most {MAX_GUIDE_CHARS}", param=self.param)


def json_schema_guide(schema: Any, param: str) -> Guide:
    """A guide holding output to ``schema`` (an object, or its JSON text); refuses what is not enforced."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as error:
            raise BadRequestError(f"is not valid JSON: {error}", param=param) from None
    check_schema(schema, param)
    return Guide("json_schema", json.dumps(schema, ensure_ascii=False), param)


def regex_guide(pattern: Any, param: str) -> Guide:
    if not isinstance(pattern, str) or not pattern:
        raise BadRequestError("must be a non-empty regular expression string", param=param)
    check_regex(pattern, param)
    return Guide("regex", pattern, param)


def choice_guide(choices: Any, param: str) -> Guide:
    """Exactly one of ``choices``, as a regex alternation of the literal strings."""
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise BadRequestError("must be a non-empty list of non-empty strings", param=param)
    return Guide("regex", "(" + "|".join(_regex_literal(choice) for choice in choices) + ")", param)


def grammar_guide(grammar: Any, param: str) -> Guide:
    if not isinstance(grammar, str) or "root" not in grammar:
        raise BadRequestError("must be an EBNF grammar (xgrammar's syntax) with a 'root' rule", param=param)
    return Guide("ebnf_grammar", grammar, param)


def response_format_guide(value: Any) -> Guide | None:
    """The guide of OpenAI's ``response_format`` (None for text)."""
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise BadRequestError("must be an object with a 'type'", param="response_format")
    kind = value["type"]
    if kind == "text" and set(value) == {"type"}:
        return None
    if kind == "json_object" and set(value) == {"type"}:
        return Guide("json_schema", '{"type": "object"}', "response_format")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if set(value) != {"type", "json_schema"} or not isinstance(spec, dict):
            raise BadRequestError("json_schema needs a 'json_schema' object", param="response_format.json_schema")
        unknown = sorted(set(spec) - {"name", "schema", "strict", "description"})
        if unknown:
            raise BadRequestError(
                "unknown key; accepted: name, schema, strict, description",
                param=f"response_format.json_schema.{unknown[0]}",
            )
        if not isinstance(spec.get("name"), str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", spec["name"]):
            raise BadRequestError(
                "is required: 1-64 letters, digits, '_' or '-'", param="response_format.json_schema.name"
            )
        if not isinstance(spec.get("strict", False), bool):
            raise BadRequestError("must be a boolean", param="response_format.json_schema.strict")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise BadRequestError("must be a JSON schema object", param="response_format.json_schema.schema")
        return json_schema_guide(schema, "response_format.json_schema.schema")
    raise BadRequestError(
        "accepted: {'type': 'text'}, {'type': 'json_object'}, {'type': 'json_schema', 'json_schema': {...}}",
        param="response_format.type",
    )


_FIELD_GUIDES = {
    "guided_json": json_schema_guide,
    "guided_regex": regex_guide,
    "guided_choice": choice_guide,
    "guided_grammar": grammar_guide,
}


def field_guides(fields: Mapping[str, Any], prefix: str = "") -> list[Guide]:
    """The guides of the NIM / vLLM ``guided_*`` fields present in ``fields`` (``prefix``: "nvext." or "")."""
    return [make(fields[name], prefix + name) for name, make in _FIELD_GUIDES.items() if fields.get(name) is not None]


def tool_calls_guide(
    tools: Sequence[Mapping[str, Any]], function: str | None, *, one_call: bool, strict_only: bool = False
) -> Guide:
    """The call list after ``[TOOL_CALLS]``: each call ``{"name": <a tool>, "arguments": <its parameters>,
    "id": <9 alphanumerics, optional>}`` (only ``function`` when named), as the v3 template writes calls.

    ``strict_only``: only the arguments of tools marked ``strict`` are held to their parameters; the others
    are any JSON object (``tool_choice: "auto"``, where ``strict`` is what asks for the guarantee).
    """
    calls = []
    for index, tool in enumerate(tools):
        spec = tool.get("function") or {}
        if function is not None and spec.get("name") != function:
            continue
        parameters = spec.get("parameters") or {"type": "object"}
        if strict_only and not spec.get("strict"):
            parameters = {"type": "object"}
        check_schema(parameters, f"tools[{index}].function.parameters")
        calls.append(
            {
                "type": "object",
                # NeMo writes each call's 9-character id after its arguments, as the v3 template renders calls
                "properties": {"name": {"const": spec.get("name")}, "arguments": parameters, "id": CALL_ID},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    call = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema: dict[str, Any] = {"type": "array", "items": call, "minItems": 1}
    if one_call or function is not None:
        schema["maxItems"] = 1
    return Guide("json_schema", json.dumps(schema, ensure_ascii=False), "tools" if strict_only else "tool_choice")


def check_schema(schema: Any, param: str) -> None:
    """BadRequestError naming the first keyword the grammar engine would not enforce, and where it stands."""
    for where, node, keyword, value in _keywords(schema, param):
        if keyword in ANNOTATIONS:
            continue
        if keyword not in ENFORCED_KEYWORDS:
            raise BadRequestError(
                f"the JSON schema keyword {keyword!r} is not enforced by the grammar engine (xgrammar); "
                f"enforced: {', '.join(sorted(ENFORCED_KEYWORDS))}",
                param=where,
            )
        if keyword == "$ref" and not (isinstance(value, str) and value.startswith("#")):
            raise BadRequestError("only references within the schema ('#/...') are resolved", param=f"{where}.$ref")
        if keyword == "multipleOf" and node.get("type") != "integer":
            raise BadRequestError("multipleOf is enforced on integers only", param=f"{where}.multipleOf")
        if keyword == "pattern" and isinstance(value, str):
            check_regex(value, f"{where}.pattern")


def check_regex(pattern: str, param: str) -> None:
    for construct, name in _UNSUPPORTED_REGEX:
        if construct.search(pattern):
            raise BadRequestError(f"{name} are not supported by the grammar engine (xgrammar)", param=param)
    try:
        re.compile(pattern)
    except re.error as error:
        raise BadRequestError(f"is not a valid regular expression: {error}", param=param) from None


def _keywords(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any], str, Any]]:
    """(path, subschema, keyword, value) for every keyword of ``schema`` and of its subschemas, depth first."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise BadRequestError(f"a JSON schema must be an object or a boolean, got {type(schema).__name__}", param=path)
    for keyword, value in schema.items():
        yield path, schema, keyword, value
        if keyword in SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from _keywords(sub, f"{path}.{keyword}.{name}")
        elif keyword in SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                yield from _keywords(sub, f"{path}.{keyword}[{index}]")
        elif keyword in SCHEMA_VALUES:
            if not isinstance(value, (dict, bool)):
                raise BadRequestError(
                    f"must be a schema (an object or a boolean; tuples go in prefixItems), got {type(value).__name__}",
                    param=f"{path}.{keyword}",
                )
            yield from _keywords(value, f"{path}.{keyword}")


def _regex_literal(text: str) -> str:
    return "".join("\\" + char if char in r"\^$.|?*+()[]{}/" else char for char in text)
