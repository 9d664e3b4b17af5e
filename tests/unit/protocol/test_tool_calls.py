"""Generated ids become OpenAI content or tool calls, identically in one go and while streaming."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from nemo_protocol.tekken import Tekkenizer
from nemo_protocol.tool_calls import (
    ContentDelta,
    OutputParser,
    ParsedOutput,
    ToolCallDelta,
    new_tool_call_id,
    parse_output,
)

from .corpus import MULTILINGUAL


def _ids_factory():
    counter = itertools.count(1)
    return lambda: f"id{next(counter):07d}"


def _tool_output(tok: Tekkenizer, text: str) -> list[int]:
    return [tok.control_id("[TOOL_CALLS]"), *tok.encode(text), tok.eos_id]


def _stream(tok: Tekkenizer, ids: list[int], rng: random.Random) -> tuple[list, ParsedOutput]:
    parser = OutputParser(tok, new_id=_ids_factory())
    deltas, start = [], 0
    while start < len(ids):
        size = rng.choice([1, 1, 2, 4])
        deltas += parser.feed(ids[start : start + size])
        start += size
    deltas += parser.finish()
    return deltas, parser.result()


def test_content_output(tok: Tekkenizer) -> None:
    parsed = parse_output(tok, [*tok.encode(MULTILINGUAL["mixed"]), tok.eos_id])
    assert parsed == ParsedOutput(content=MULTILINGUAL["mixed"], tool_calls=[], tool_call_error=None)


def test_parallel_tool_calls(tok: Tekkenizer) -> None:
    text = (
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_weather", "arguments": {"city": "東京"}}]'
    )
    parsed = parse_output(tok, _tool_output(tok, text), new_id=_ids_factory())
    assert parsed.content is None
    assert parsed.tool_call_error is None
    assert [(c.id, c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [
        ("id0000001", "get_weather", {"city": "Paris"}),
        ("id0000002", "get_weather", {"city": "東京"}),
    ]
    assert parsed.tool_calls[1].arguments == '{"city": "東京"}', "arguments are a JSON string, unicode kept"


def test_fresh_ids_have_the_model_shape(tok: Tekkenizer) -> None:
    ids = {new_tool_call_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[a-zA-Z0-9]{9}", i) for i in ids)
    parsed = parse_output(tok, _tool_output(tok, '[{"name": "ping", "arguments": {}}]'))
    assert re.fullmatch(r"[a-zA-Z0-9]{9}", parsed.tool_calls[0].id)


def test_braces_and_quotes_inside_strings(tok: Tekkenizer) -> None:
    text = r'[{"name": "echo", "arguments": {"text": "a } ] { [ \" \\ done"}}]'
    parsed = parse_output(tok, _tool_output(tok, text))
    assert json.loads(parsed.tool_calls[0].arguments) == {"text": 'a } ] { [ " \\ done'}


def test_string_arguments_and_missing_arguments(tok: Tekkenizer) -> None:
    text = '[{"name": "a", "arguments": "{\\"x\\": 1}"}, {"name": "b"}]'
    parsed = parse_output(tok, _tool_output(tok, text))
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [("a", '{"x": 1}'), ("b", "{}")]


def test_tool_call_text_is_not_a_tool_call(tok: Tekkenizer) -> None:
    text = '[TOOL_CALLS][{"name": "ping", "arguments": {}}]'
    parsed = parse_output(tok, [*tok.encode(text), tok.eos_id])
    assert parsed.tool_calls == []
    assert parsed.content == text


def test_tool_calls_stream_as_soon_as_each_object_closes(tok: Tekkenizer) -> None:
    first = '[{"name": "get_weather", "arguments": {"city": "Paris"}}'
    second = ', {"name": "ping", "arguments": {}}]'
    parser = OutputParser(tok, new_id=_ids_factory())
    deltas = parser.feed([tok.control_id("[TOOL_CALLS]"), *tok.encode(first)])
    assert [d.call.name for d in deltas if isinstance(d, ToolCallDelta)] == ["get_weather"]
    deltas = parser.feed(tok.encode(second))
    assert [(d.index, d.call.name) for d in deltas if isinstance(d, ToolCallDelta)] == [(1, "ping")]
    assert parser.finish() == []


MALFORMED = [
    ("truncated", '[{"name": "get_weather", "arguments": {"city": "Par', [], "ended inside a tool call"),
    ("not a list", "I will call get_weather now", [], "expected a JSON list"),
    ("invalid JSON object", '[{"name": "get_weather", "arguments": {city: Paris}}]', [], "not valid JSON"),
    ("no name", '[{"arguments": {}}]', [], "no valid 'name'"),
    ("bad name", '[{"name": "rm -rf", "arguments": {}}]', [], "no valid 'name'"),
    ("arguments not an object", '[{"name": "f", "arguments": [1]}]', [], "must be a JSON object"),
    ("string arguments not JSON", '[{"name": "f", "arguments": "city=Paris"}]', [], "are not JSON"),
    ("empty list", "[]", [], "not followed by any tool call"),
    ("trailing text", '[{"name": "ok", "arguments": {}}] and more', ["ok"], "expected a JSON list"),
    ("second object broken", '[{"name": "ok", "arguments": {}}, {"name": 5}]', ["ok"], "no valid 'name'"),
]


@pytest.mark.parametrize(("case", "text", "good_calls", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_tool_calls_are_reported_as_content(
    tok: Tekkenizer, case: str, text: str, good_calls: list[str], reason: str
) -> None:
    parsed = parse_output(tok, _tool_output(tok, text))
    assert parsed.tool_call_error is not None and reason in parsed.tool_call_error
    assert [c.name for c in parsed.tool_calls] == good_calls
    assert parsed.content, "the text that did not parse is returned, not dropped"
    assert parsed.content in text


@pytest.mark.parametrize(
    "text",
    [
        MULTILINGUAL["emoji"],
        MULTILINGUAL["chinese"],
        '[{"name": "get_weather", "arguments": {"city": "Zürich 🇨🇭"}}, {"name": "ping", "arguments": {}}]',
        '[{"name": "ok", "arguments": {}}, {"name": 5}]',
        '[{"name": "get_weather", "arguments": {"city": "Par',
    ],
)
def test_streaming_equals_batch(tok: Tekkenizer, text: str) -> None:
    as_tools = _tool_output(tok, text)
    as_content = [*tok.encode(text), tok.eos_id]
    for ids in (as_tools, as_content):
        batch = parse_output(tok, ids, new_id=_ids_factory())
        for seed in range(10):
            deltas, streamed = _stream(tok, ids, random.Random(seed))
            assert streamed == batch
            assert "".join(d.text for d in deltas if isinstance(d, ContentDelta)) == (batch.content or "")
            assert [d.call for d in deltas if isinstance(d, ToolCallDelta)] == batch.tool_calls
            assert all("\ufffd" not in d.text for d in deltas if isinstance(d, ContentDelta))
