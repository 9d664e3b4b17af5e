"""encode_chat renders exactly mistral-common's ids for Mistral NeMo Instruct, and refuses invalid requests."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_protocol.chat_format import encode_chat, to_model_tool_call_id
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import LEGACY_CONTROL_TOKENS, Tekkenizer

from .conftest import Oracle
from .conversations import (
    BARE_TOOL,
    CONVERSATIONS,
    WEATHER_TOOL,
    assistant,
    calls,
    result,
    system,
    user,
)


@pytest.mark.parametrize(("name", "messages", "tools"), CONVERSATIONS, ids=[c[0] for c in CONVERSATIONS])
def test_matches_mistral_common(tok: Tekkenizer, oracle: Oracle, name: str, messages: list, tools: list | None) -> None:
    assert encode_chat(tok, messages, tools) == oracle(messages, tools)


def test_reference_example_renders_as_documented(tok: Tekkenizer) -> None:
    messages = [
        system("You are a helpful assistant."),
        user("Hi"),
        assistant("Hello! How can I help?"),
        user("What is 2+2?"),
    ]
    rendered = tok.decode(encode_chat(tok, messages), keep_control_tokens=True)
    assert rendered == (
        "<s>[INST]Hi[/INST]Hello! How can I help?</s>[INST]You are a helpful assistant.\n\nWhat is 2+2?[/INST]"
    )


def test_tools_and_tool_calls_render_in_place(tok: Tekkenizer) -> None:
    messages = [
        user("Weather in Paris?"),
        calls(("call_abc", "get_weather", {"city": "Paris"})),
        result("call_abc", '{"temperature": 21}'),
    ]
    rendered = tok.decode(encode_chat(tok, messages, [WEATHER_TOOL]), keep_control_tokens=True)
    model_id = to_model_tool_call_id("call_abc")
    assert rendered.startswith('<s>[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "get_weather"')
    assert (
        f'[/AVAILABLE_TOOLS][INST]Weather in Paris?[/INST][TOOL_CALLS][{{"name": "get_weather", "arguments": '
        f'{{"city": "Paris"}}, "id": "{model_id}"}}]</s>[TOOL_RESULTS]{{"content": {{"temperature": 21}}, '
        f'"call_id": "{model_id}"}}[/TOOL_RESULTS]'
    ) in rendered


def test_training_conversation_ending_with_assistant(tok: Tekkenizer, oracle: Oracle) -> None:
    text_answer = [user("Hi"), assistant("Hello!")]
    tool_answer = [user("Weather in Paris?"), calls(("abcdefghi", "get_weather", {"city": "Paris"}))]
    for messages, tools in [(text_answer, None), (tool_answer, [WEATHER_TOOL])]:
        with pytest.raises(BadRequestError):
            encode_chat(tok, messages, tools)
        ids = encode_chat(tok, messages, tools, allow_final_assistant=True)
        assert ids == oracle(messages, tools, final_assistant=True)
        assert ids[-1] == tok.eos_id


# ----- tool-call ids -------------------------------------------------------------------------------------
def test_tool_call_ids_map_to_nine_alphanumerics() -> None:
    for openai_id in ["call_abc123", "call_" + "x" * 40, "toolu_01A09q90qw90lq917835lq9", "a", "id with spaces é"]:
        mapped = to_model_tool_call_id(openai_id)
        assert re.fullmatch(r"[a-zA-Z0-9]{9}", mapped)
        assert mapped == to_model_tool_call_id(openai_id), "mapping is deterministic"
    assert to_model_tool_call_id("abcDEF123") == "abcDEF123", "model-shaped ids are kept"
    assert to_model_tool_call_id("call_1") != to_model_tool_call_id("call_2")


def test_call_and_result_share_the_mapped_id(tok: Tekkenizer) -> None:
    messages = [
        user("x"),
        calls(("call_very_long_openai_id_0001", "ping", {})),
        result("call_very_long_openai_id_0001", "ok"),
    ]
    rendered = tok.decode(encode_chat(tok, messages, [BARE_TOOL]), keep_control_tokens=True)
    model_id = to_model_tool_call_id("call_very_long_openai_id_0001")
    assert rendered.count(f'"{model_id}"') == 2
    assert "call_very_long" not in rendered


# ----- injection -----------------------------------------------------------------------------------------
def _control_ids(tok: Tekkenizer, ids: list[int]) -> list[int]:
    return [i for i in ids if tok.is_control(i)]


@pytest.mark.parametrize("token", LEGACY_CONTROL_TOKENS)
def test_control_token_text_never_becomes_a_control_id(tok: Tekkenizer, token: str) -> None:
    def conversation(text: str) -> list[dict[str, Any]]:
        return [
            system(f"sys {text}"),
            user(f"user {text}"),
            calls(("call_1", "get_weather", {"city": text})),
            result("call_1", json.dumps({"note": text})),
            assistant(text),
            user([{"type": "text", "text": text}]),
            calls(("call_2", "get_weather", {"city": "x"})),
            result("call_2", f"plain {text}"),
        ]

    injected = encode_chat(tok, conversation(token), [WEATHER_TOOL])
    neutral = encode_chat(tok, conversation("plain"), [WEATHER_TOOL])
    assert _control_ids(tok, injected) == _control_ids(tok, neutral)
    assert token in tok.decode(injected)


# ----- invalid requests ----------------------------------------------------------------------------------
_CALL = calls(("call_1", "ping", {}))
INVALID: list[tuple[str, Any, Any, str, str]] = [
    ("empty conversation", [], None, "messages", "non-empty list"),
    ("messages not a list", "hello", None, "messages", "non-empty list"),
    ("message not an object", ["hi"], None, "messages[0]", "must be an object"),
    ("unknown role", [{"role": "robot", "content": "x"}], None, "messages[0].role", "unknown role 'robot'"),
    ("missing role", [{"content": "x"}], None, "messages[0].role", "unknown role None"),
    ("unknown field", [{"role": "user", "content": "x", "contnet": "y"}], None, "messages[0].contnet", "unknown field"),
    ("user without content", [{"role": "user"}], None, "messages[0].content", "is required"),
    ("content of wrong type", [user(42)], None, "messages[0].content", "string or a list of text parts"),
    (
        "image part",
        [user([{"type": "image_url", "image_url": {"url": "http://x"}}])],
        None,
        "messages[0].content[0]",
        "only text parts",
    ),
    (
        "content and tool calls together",
        [user("x"), {**_CALL, "content": "also text"}, result("call_1", "ok")],
        [BARE_TOOL],
        "messages[1]",
        "either content or tool_calls, not both",
    ),
    ("empty assistant", [user("x"), assistant(""), user("y")], None, "messages[1]", "needs non-empty content"),
    (
        "bad function name in call",
        [user("x"), calls(("call_1", "get weather!", {})), result("call_1", "ok")],
        None,
        "messages[1].tool_calls[0].function.name",
        "not a valid function name",
    ),
    (
        "malformed arguments JSON",
        [user("x"), calls(("call_1", "ping", '{"city": ')), result("call_1", "ok")],
        None,
        "messages[1].tool_calls[0].function.arguments",
        "not valid JSON",
    ),
    (
        "arguments not an object",
        [user("x"), calls(("call_1", "ping", "[1, 2]")), result("call_1", "ok")],
        None,
        "messages[1].tool_calls[0].function.arguments",
        "JSON object",
    ),
    (
        "tool call without id",
        [user("x"), {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "ping"}}]}],
        None,
        "messages[1].tool_calls[0].id",
        "is required",
    ),
    (
        "duplicate tool call ids",
        [user("x"), calls(("same", "ping", {}), ("same", "ping", {})), result("same", "a")],
        None,
        "messages[1].tool_calls",
        "unique",
    ),
    (
        "tool message without a matching call",
        [user("x"), _CALL, result("call_999", "ok")],
        None,
        "messages[2].tool_call_id",
        "does not answer a tool call",
    ),
    (
        "second result for one call",
        [user("x"), _CALL, result("call_1", "a"), result("call_1", "b")],
        None,
        "messages[3].tool_call_id",
        "does not answer a tool call",
    ),
    (
        "tool message without id",
        [user("x"), _CALL, {"role": "tool", "content": "ok"}],
        None,
        "messages[2].tool_call_id",
        "is required",
    ),
    (
        "missing tool result",
        [user("x"), calls(("c1", "ping", {}), ("c2", "ping", {})), result("c1", "ok")],
        None,
        "messages[2]",
        "has no tool result",
    ),
    (
        "conversation goes on before results",
        [user("x"), _CALL, user("hello?")],
        None,
        "messages[2]",
        "has no tool result",
    ),
    ("tool after user", [user("x"), result("call_1", "ok")], None, "messages[1].role", "cannot follow a 'user'"),
    (
        "system after assistant",
        [user("x"), assistant("y"), system("z"), user("w")],
        None,
        "messages[2].role",
        "cannot follow",
    ),
    (
        "last message from assistant",
        [user("x"), assistant("y")],
        None,
        "messages[1].role",
        "last message must be from the user or a tool",
    ),
    ("single assistant message", [assistant("hi")], None, "messages[0].role", "starts with a user or system"),
    (
        "refusal sent back",
        [user("x"), {"role": "assistant", "content": "no", "refusal": "no"}, user("y")],
        None,
        "messages[1].refusal",
        "must be null",
    ),
    ("tools not a list", [user("x")], {"type": "function"}, "tools", "must be a list"),
    ("tool of unknown type", [user("x")], [{"type": "retrieval"}], "tools[0].type", "must be 'function'"),
    ("tool without function", [user("x")], [{"type": "function"}], "tools[0].function", "is required"),
    (
        "bad tool name",
        [user("x")],
        [{"type": "function", "function": {"name": "x" * 65}}],
        "tools[0].function.name",
        "1-64 characters",
    ),
    ("duplicate tool names", [user("x")], [BARE_TOOL, BARE_TOOL], "tools[1].function.name", "defined twice"),
    (
        "parameters not an object",
        [user("x")],
        [{"type": "function", "function": {"name": "f", "parameters": "string"}}],
        "tools[0].function.parameters",
        "JSON Schema object",
    ),
    (
        "strict not a boolean",
        [user("x")],
        [{"type": "function", "function": {"name": "f", "strict": "yes"}}],
        "tools[0].function.strict",
        "must be a boolean",
    ),
    (
        "unknown key on a function",
        [user("x")],
        [{"type": "function", "function": {"name": "f", "examples": []}}],
        "tools[0].function.examples",
        "accepted: name, description, parameters, strict",
    ),
    (
        "unknown key on a tool",
        [user("x")],
        [{"type": "function", "function": {"name": "f"}, "cache_control": {}}],
        "tools[0].cache_control",
        "accepted: type, function",
    ),
]


@pytest.mark.parametrize(("name", "messages", "tools", "param", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_requests_name_the_field_and_rule(
    tok: Tekkenizer, name: str, messages: Any, tools: Any, param: str, message: str
) -> None:
    with pytest.raises(BadRequestError) as raised:
        encode_chat(tok, messages, tools)
    assert raised.value.param == param
    assert message in raised.value.message
    assert str(raised.value).startswith(param)


# ----- generated conversations ---------------------------------------------------------------------------
_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
_NAMES = st.sampled_from(["get_weather", "ping", "get-time_v2"])
_ARGS = st.dictionaries(
    st.sampled_from(["city", "n", "flag", "ünï"]), st.one_of(_TEXT, st.integers(), st.booleans()), max_size=3
)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [system(draw(_TEXT)) for _ in range(draw(st.integers(0, 2)))]
    call_number = 0
    for turn in range(draw(st.integers(1, 4))):
        messages += [user(draw(_TEXT)) for _ in range(draw(st.integers(1, 2)))]
        if draw(st.booleans()) and turn < 3:
            pairs = []
            for _ in range(draw(st.integers(1, 3))):
                call_number += 1
                pairs.append((f"call_{call_number}_{draw(st.integers(0, 99))}", draw(_NAMES), draw(_ARGS)))
            messages.append(calls(*pairs))
            for call_id, _, _ in draw(st.permutations(pairs)):
                messages.append(result(call_id, draw(st.one_of(_TEXT, _ARGS.map(json.dumps)))))
            if draw(st.booleans()):
                break
        if draw(st.booleans()):
            messages.append(assistant(draw(_TEXT.filter(bool))))
        else:
            break
    if messages[-1]["role"] == "assistant":
        messages.append(user(draw(_TEXT)))
    return messages


@settings(max_examples=150, deadline=None)
@given(conversations(), st.booleans())
def test_generated_conversations_match_mistral_common(
    tok: Tekkenizer, oracle: Oracle, messages: list[dict[str, Any]], with_tools: bool
) -> None:
    tools = [WEATHER_TOOL, BARE_TOOL] if with_tools else None
    assert encode_chat(tok, messages, tools) == oracle(messages, tools)
