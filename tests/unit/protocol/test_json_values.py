"""Request bodies: standard JSON only, nesting bounded without recursion, text that is valid Unicode."""

from __future__ import annotations

import json

import pytest

from nemo_protocol.errors import BadRequestError
from nemo_protocol.json_values import MAX_JSON_DEPTH, check_json_value, parse_json_object


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def test_a_plain_body_parses() -> None:
    assert parse_json_object('{"messages": [{"role": "user", "content": "héllo 🙂"}]}')["messages"][0]["role"] == "user"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 100_000])
def test_deep_nesting_is_a_400_never_a_recursion_error(depth: int) -> None:
    raw = '{"messages": ' + nested(depth) + "}"
    with pytest.raises(BadRequestError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
        parse_json_object(raw)


def test_the_depth_limit_names_where_it_is_crossed() -> None:
    body = {"tools": [{"function": {"parameters": json.loads(nested(10, "[", "]"))}}]}
    with pytest.raises(BadRequestError) as caught:
        check_json_value(body, max_depth=8)
    assert caught.value.param is not None and caught.value.param.startswith("tools[0].function.parameters")
    check_json_value(body, max_depth=16)  # within the limit


@pytest.mark.parametrize("surrogate", ["\\ud800", "\\udfff", "a\\udbffb"])
def test_a_lone_surrogate_is_a_400_naming_the_field(surrogate: str) -> None:
    raw = '{"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "tool_calls": [{"id": "%s"}]}]}'
    with pytest.raises(BadRequestError, match="lone surrogate") as caught:
        parse_json_object(raw % surrogate)
    assert caught.value.param == "messages[1].tool_calls[0].id"


def test_a_surrogate_pair_is_one_valid_character() -> None:
    assert parse_json_object('{"content": "\\ud83d\\ude42"}')["content"] == "🙂"


def test_a_surrogate_in_a_key_is_named_with_escapes() -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_json_object('{"nvext": {"\\ud800": 1}}')
    assert caught.value.param == "nvext.\\ud800"
    json.dumps(caught.value.to_openai()).encode("utf-8")  # the error body itself can be sent


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    with pytest.raises(BadRequestError, match=f"{constant.lstrip('-')} is not a JSON number") as caught:
        parse_json_object('{"temperature": ' + constant + "}")
    assert caught.value.param == "temperature"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"nvext": {"top_k": NaN}}', "nvext.top_k"),
        ('{"messages": [{"role": "user", "content": "hi"}], "stop": ["a", Infinity]}', "stop[1]"),
        ('{"tools": [{"function": {"parameters": {"default": -Infinity}}}]}', "tools[0].function.parameters.default"),
    ],
)
def test_a_non_number_is_refused_naming_the_field_that_holds_it(raw: str, param: str) -> None:
    with pytest.raises(BadRequestError, match="is not a JSON number") as caught:
        parse_json_object(raw)
    assert caught.value.param == param
    assert str(caught.value).startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": "\xff"}', "not valid JSON"),
        ('{"seed": ' + "9" * 5000 + "}", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_other_malformed_bodies_are_400(raw: bytes | str, expected: str) -> None:
    with pytest.raises(BadRequestError, match=expected):
        parse_json_object(raw)


@pytest.mark.parametrize("literal", ["1e999", "-1e999", "1" + "0" * 400 + ".0"])
def test_a_number_that_overflows_to_infinity_is_refused_naming_the_field(literal: str) -> None:
    with pytest.raises(BadRequestError, match="must be a finite number") as caught:
        parse_json_object('{"messages": [], "nvext": {"repetition_penalty": ' + literal + "}}")
    assert caught.value.param == "nvext.repetition_penalty"
    with pytest.raises(BadRequestError, match="must be a finite number") as caught:
        check_json_value({"top_p": float("nan")})  # a body built in python, before it is sent
    assert caught.value.param == "top_p"
    check_json_value({"seed": 10**400, "temperature": 1e308})  # large but finite: for the fields to judge


def test_the_first_problem_in_document_order_is_named() -> None:
    raw = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "ok"},
                {"role": "assistant", "tool_calls": [{"id": "\ud800", "function": {"name": "f"}}]},
                {"role": "tool", "tool_call_id": "\ud800", "content": "\udfff"},
            ],
            "stop": ["\ud800"],
        }
    )
    with pytest.raises(BadRequestError) as caught:
        parse_json_object(raw)
    assert caught.value.param == "messages[1].tool_calls[0].id"
