"""The per-request bounds a deployment sets: each refusal names the field and the limit."""

from __future__ import annotations

from typing import Any

import pytest

from nemo_protocol.errors import BadRequestError
from nemo_protocol.request_limits import RequestLimits

LIMITS = RequestLimits(max_messages=3, max_tools=2, max_tool_bytes=200, max_stop_chars=5, max_output_tokens=100)
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
MESSAGE = {"role": "user", "content": "hi"}


def refusal(body: dict[str, Any], *, chat: bool = True) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        (LIMITS.check_chat if chat else LIMITS.check_completion)(body)
    return caught.value


def test_a_body_within_every_limit_passes() -> None:
    LIMITS.check_chat({"messages": [MESSAGE] * 3, "tools": [TOOL] * 2, "stop": ["12345"], "max_tokens": 100})
    LIMITS.check_completion({"prompt": "x", "stop": "12345", "max_tokens": 100})


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": [MESSAGE] * 4}, "messages", "at most 3"),
        ({"messages": [MESSAGE], "tools": [TOOL] * 3}, "tools", "at most 2"),
        ({"messages": [MESSAGE], "tools": [TOOL, {**TOOL, "description": "x" * 300}]}, "tools[1]", "200 bytes"),
        ({"messages": [MESSAGE], "stop": "123456"}, "stop", "at most 5"),
        ({"messages": [MESSAGE], "stop": ["1", "123456"]}, "stop[1]", "at most 5"),
        ({"messages": [MESSAGE], "max_tokens": 101}, "max_tokens", "at most 100"),
        ({"messages": [MESSAGE], "max_completion_tokens": 2**63}, "max_completion_tokens", "at most 100"),
    ],
)
def test_each_limit_is_a_400_naming_its_field(body: dict[str, Any], param: str, words: str) -> None:
    error = refusal(body)
    assert error.param == param and words in error.message


def test_completions_share_the_stop_and_token_limits() -> None:
    assert refusal({"prompt": "x", "stop": "123456"}, chat=False).param == "stop"
    assert refusal({"prompt": "x", "max_tokens": 500}, chat=False).param == "max_tokens"


def test_no_output_token_limit_by_default_and_malformed_fields_left_to_the_validator() -> None:
    RequestLimits().check_chat({"messages": "not a list", "tools": {}, "stop": 3, "max_tokens": 10**30})


@pytest.mark.parametrize(
    "bad", [{"max_messages": 0}, {"max_output_tokens": -1}, {"max_json_depth": 257}, {"max_body_bytes": 0}]
)
def test_nonsensical_limits_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        RequestLimits(**bad)
