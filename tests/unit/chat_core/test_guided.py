"""Structured output in the chat core: which guide a request makes, what is refused by name, how calls end."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from nemo_chat_core.chat import ChatEndpoint
from nemo_chat_core.guided import GUIDE_TYPES, Guide, check_schema, choice_guide
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer
from tests.unit.chat_core.chat_bodies import TOOLS, body, one_token_chunks

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def guide_of(endpoint: ChatEndpoint, **fields: Any) -> Guide | None:
    return endpoint.prepare(body(**fields)).generation.guide


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}}, Guide("json_schema", '{"type": "object"}', "response_format")),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
                }
            },
            Guide("json_schema", json.dumps(SCHEMA), "response_format.json_schema.schema"),
        ),
        ({"nvext": {"guided_json": SCHEMA}}, Guide("json_schema", json.dumps(SCHEMA), "nvext.guided_json")),
        ({"guided_json": json.dumps(SCHEMA)}, Guide("json_schema", json.dumps(SCHEMA), "guided_json")),
        ({"nvext": {"guided_regex": "[0-9]+"}}, Guide("regex", "[0-9]+", "nvext.guided_regex")),
        ({"guided_choice": ["a.b", "c"]}, Guide("regex", r"(a\.b|c)", "guided_choice")),
        ({"guided_grammar": 'root ::= "x"'}, Guide("ebnf_grammar", 'root ::= "x"', "guided_grammar")),
    ],
)
def test_each_spelling_makes_its_guide(endpoint: ChatEndpoint, fields: dict[str, Any], expected: Guide | None) -> None:
    assert guide_of(endpoint, **fields) == expected
    assert expected is None or expected.type in GUIDE_TYPES


@pytest.mark.parametrize(
    ("schema", "param", "phrase"),
    [
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "s", "'oneOf' is not enforced"),
        ({"type": "object", "properties": {"a": {"allOf": [{}, {}]}}}, "s.properties.a", "'allOf'"),
        ({"type": "integer", "not": {"const": 3}}, "s", "'not'"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "s", "'uniqueItems'"),
        ({"type": "array", "contains": {"const": 1}}, "s", "'contains'"),
        ({"type": "object", "propertyNames": {"maxLength": 2}}, "s", "'propertyNames'"),
        ({"type": "object", "dependentRequired": {"a": ["b"]}}, "s", "'dependentRequired'"),
        ({"type": "object", "minProperties": 1}, "s", "'minProperties'"),
        ({"if": {"type": "string"}, "then": {"maxLength": 2}}, "s", "'if'"),
        ({"anyOf": [{"type": "object", "unevaluatedProperties": False}]}, "s.anyOf[0]", "'unevaluatedProperties'"),
        ({"$ref": "https://example.com/schema.json"}, "s.$ref", "within the schema"),
        ({"type": "number", "multipleOf": 0.5}, "s.multipleOf", "integers only"),
        ({"type": "string", "pattern": "^(?=a)b"}, "s.pattern", "lookahead"),
        ({"type": "string", "pattern": r"\bword"}, "s.pattern", "word boundaries"),
        ({"type": "string", "pattern": "(a"}, "s.pattern", "not a valid regular expression"),
        ({"type": "array", "items": [{"type": "integer"}]}, "s.items", "tuples go in prefixItems"),
    ],
)
def test_what_the_grammar_engine_would_ignore_is_refused_naming_the_keyword(
    schema: dict[str, Any], param: str, phrase: str
) -> None:
    with pytest.raises(BadRequestError) as refused:
        check_schema(schema, "s")
    assert refused.value.param == param and phrase in refused.value.message


def test_annotations_and_enforced_keywords_pass() -> None:
    check_schema(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "T", "description": "d",
            "type": "object", "additionalProperties": False, "required": ["a"],
            "properties": {"a": {"type": "integer", "minimum": 0, "multipleOf": 2, "default": 2, "examples": [4]},
                           "b": {"anyOf": [{"$ref": "#/$defs/c"}, {"type": "null"}]}},
            "$defs": {"c": {"type": "string", "pattern": "^[a-z]+$", "format": "email", "maxLength": 9}},
        },
        "s",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "json_object"}, "nvext": {"guided_regex": "x"}}, "nvext.guided_regex"),
        ({"guided_json": SCHEMA, "guided_choice": ["a"]}, "guided_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
         "response_format.json_schema.name"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "extra": 1}}},
         "response_format.json_schema.extra"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}},
         "response_format.json_schema.strict"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_grammar": "x ::= 1"}, "guided_grammar"),
        ({"nvext": {"guided_regex": "(?<=a)b"}}, "nvext.guided_regex"),
        ({"response_format": {"type": "json_object"}, "tools": TOOLS, "tool_choice": "required"}, "response_format"),
        ({"response_format": {"type": "json_object"}, "nvext": {"ignore_eos": True}}, "nvext.ignore_eos"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
          "tool_choice": "required"}, "tools[0].function.parameters"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ],
)  # fmt: skip
def test_bad_output_constraints_are_refused_by_name(endpoint: ChatEndpoint, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        endpoint.prepare(body(**fields))
    assert refused.value.param == param, refused.value


def test_required_tool_choice_guides_a_list_of_calls_to_any_tool(endpoint: ChatEndpoint) -> None:
    second = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    guide = guide_of(endpoint, tools=[*TOOLS, second], tool_choice="required")
    assert guide is not None and guide.param == "tool_choice"
    schema = json.loads(guide.text)
    assert [option["properties"]["name"]["const"] for option in schema["items"]["anyOf"]] == ["get_weather", "get_time"]
    assert schema["minItems"] == 1 and "maxItems" not in schema
    one = json.loads(guide_of(endpoint, tools=TOOLS, tool_choice="required", parallel_tool_calls=False).text)  # type: ignore[union-attr]
    assert one["maxItems"] == 1


def test_choices_are_literal_strings(endpoint: ChatEndpoint) -> None:
    choices = ["a+b", "(x)", "[y]", "1.5", "a|b", "back\\slash", "über"]
    pattern = choice_guide(choices, "guided_choice").text
    assert [c for c in choices if re.fullmatch(pattern, c)] == choices
    assert not re.fullmatch(pattern, "aab") and not re.fullmatch(pattern, "a")


def run(endpoint: ChatEndpoint, fields: dict[str, Any], output: list[int]) -> list[dict[str, Any]]:
    chat = endpoint.prepare(body(**fields))
    return list(endpoint.respond(chat, one_token_chunks(output), lambda: None))


def test_a_required_call_cut_by_max_tokens_is_a_call_with_finish_length(
    endpoint: ChatEndpoint, tok: Tekkenizer
) -> None:
    written = tok.encode('[{"name": "get_weather", "arguments": {"city": "Os')
    for stream in (False, True):
        events = run(
            endpoint, {"tools": TOOLS, "tool_choice": "required", "max_tokens": len(written), "stream": stream}, written
        )
        assert "error" not in events[-1], events[-1]
        if stream:
            [call_chunk] = [e for e in events if e["choices"] and e["choices"][0]["delta"].get("tool_calls")]
            call = call_chunk["choices"][0]["delta"]["tool_calls"][0]
            assert events[-1]["choices"][0]["finish_reason"] == "length"
        else:
            call = events[0]["choices"][0]["message"]["tool_calls"][0]
            assert events[0]["choices"][0]["finish_reason"] == "length"
        assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Os'}


def test_a_required_call_cut_before_its_name_is_a_400_naming_max_tokens(
    endpoint: ChatEndpoint, tok: Tekkenizer
) -> None:
    written = tok.encode('[{"na')
    [error] = run(endpoint, {"tools": TOOLS, "tool_choice": "required", "max_tokens": len(written)}, written)
    assert error["error"]["code"] == 400 and error["error"]["param"] == "max_tokens"
    assert error["error"]["type"] == "invalid_request_error"


def test_parallel_tool_calls_false_keeps_the_first_call_and_ends(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    call = '{"name": "get_weather", "arguments": {"city": "%s"}}'
    two = [tok.control_id("[TOOL_CALLS]"), *tok.encode(f"[{call % 'Oslo'}, {call % 'Rome'}]")]
    calls = {}
    for parallel in (True, False):
        events = run(endpoint, {"tools": TOOLS, "parallel_tool_calls": parallel}, two)
        calls[parallel] = [
            json.loads(c["function"]["arguments"])["city"] for c in events[0]["choices"][0]["message"]["tool_calls"]
        ]
        assert events[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert calls == {True: ["Oslo", "Rome"], False: ["Oslo"]}


STRICT_TOOL = {"type": "function", "function": {**TOOLS[0]["function"], "strict": True}}
LOOSE_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def run_resumed(
    endpoint: ChatEndpoint, fields: dict[str, Any], first: list[int], follow_up: list[int]
) -> tuple[list[dict[str, Any]], list[Any], list[bool]]:
    """``respond`` over ``first``, then ``follow_up`` for each continuation it starts: (events, the continuation
    requests, the cancels of the first generation)."""
    chat = endpoint.prepare(body(**fields))
    resumed: list[Any] = []
    cancelled: list[bool] = []

    def resume(request: Any) -> tuple[list[list[int]], Any]:
        resumed.append(request)
        return one_token_chunks(follow_up), lambda: None

    events = list(endpoint.respond(chat, one_token_chunks(first), lambda: cancelled.append(True), resume))
    return events, resumed, cancelled


def test_a_strict_tool_under_auto_gets_its_call_from_a_guided_continuation(
    endpoint: ChatEndpoint, tok: Tekkenizer
) -> None:
    marker = tok.control_id("[TOOL_CALLS]")
    call = tok.encode('[{"name": "get_weather", "arguments": {"city": "Oslo"}}]')
    prompt = endpoint.prepare(body(tools=[STRICT_TOOL, LOOSE_TOOL])).generation.input_ids
    for stream in (False, True):
        # the free generation writes [TOOL_CALLS] and goes on (unguided, in the same chunk): only the marker counts
        events, [resumed], cancelled = run_resumed(
            endpoint,
            {"tools": [STRICT_TOOL, LOOSE_TOOL], "max_tokens": 40, "stream": stream,
             "stream_options": {"include_usage": True} if stream else None},
            [marker, *tok.encode("{bad")],
            call,
        )  # fmt: skip
        assert cancelled == [True]
        assert (
            resumed.input_ids == [*prompt, marker] and resumed.max_new_tokens == 39 and resumed.guide.param == "tools"
        )
        options = json.loads(resumed.guide.text)["items"]["anyOf"]
        assert [o["properties"]["arguments"] for o in options] == [
            TOOLS[0]["function"]["parameters"],
            {"type": "object"},
        ]
        if stream:
            [call_chunk] = [e for e in events if e["choices"] and e["choices"][0]["delta"].get("tool_calls")]
            function = call_chunk["choices"][0]["delta"]["tool_calls"][0]["function"]
            assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
            usage = events[-1]["usage"]
        else:
            function = events[0]["choices"][0]["message"]["tool_calls"][0]["function"]
            assert events[0]["choices"][0]["finish_reason"] == "tool_calls"
            usage = events[0]["usage"]
        assert function == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
        assert usage["completion_tokens"] == 1 + len(call)  # the marker, then the call


def test_auto_without_strict_tools_or_without_a_call_needs_no_continuation(
    endpoint: ChatEndpoint, tok: Tekkenizer
) -> None:
    marker = tok.control_id("[TOOL_CALLS]")
    call = [marker, *tok.encode('[{"name": "get_weather", "arguments": {"city": "Oslo"}}]')]
    events, resumed, _ = run_resumed(endpoint, {"tools": TOOLS}, call, [])
    assert resumed == [] and events[0]["choices"][0]["finish_reason"] == "tool_calls"
    events, resumed, _ = run_resumed(endpoint, {"tools": [STRICT_TOOL]}, tok.encode("It is sunny."), [])
    assert resumed == [] and events[0]["choices"][0]["message"]["content"] == "It is sunny."
    assert endpoint.prepare(body(tools=[STRICT_TOOL], tool_choice="none")).call_guide is None


def test_a_strict_call_begun_as_max_tokens_ran_out_is_a_400_naming_max_tokens(
    endpoint: ChatEndpoint, tok: Tekkenizer
) -> None:
    events, resumed, _ = run_resumed(
        endpoint, {"tools": [STRICT_TOOL], "max_tokens": 1}, [tok.control_id("[TOOL_CALLS]")], []
    )
    assert resumed == []
    [error] = events
    assert error["error"]["code"] == 400 and error["error"]["param"] == "max_tokens"


def test_a_strict_tool_whose_schema_cannot_be_enforced_is_refused_by_name(endpoint: ChatEndpoint) -> None:
    unenforceable = {"type": "object", "properties": {"ids": {"type": "array", "uniqueItems": True}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": unenforceable, "strict": True}}
    with pytest.raises(BadRequestError) as refused:
        endpoint.prepare(body(tools=[tool]))
    assert refused.value.param == "tools[0].function.parameters.properties.ids"
    assert "uniqueItems" in refused.value.message
    loose = {"type": "function", "function": {"name": "f", "parameters": unenforceable}}
    assert endpoint.prepare(body(tools=[loose])).call_guide is None  # not strict: nothing to enforce
