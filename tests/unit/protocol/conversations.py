"""Valid OpenAI-shaped conversations covering every rule of the v3 prompt format."""

from __future__ import annotations

import json
from typing import Any

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get-time_v2", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}
BARE_TOOL = {"type": "function", "function": {"name": "ping"}}
UNICODE_TOOL = {
    "type": "function",
    "function": {
        "name": "traduire",
        "description": "Traduit un texte — 翻译文本",
        "parameters": {"type": "object", "properties": {"texte": {"type": "string", "description": "à traduire"}}},
        "strict": True,
    },
}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def system(content: Any) -> dict[str, Any]:
    return {"role": "system", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def calls(*pairs: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for call_id, name, args in pairs
        ],
    }


def result(call_id: str, content: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


# (name, messages, tools)
CONVERSATIONS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None]] = [
    ("single user", [user("Hello!")], None),
    ("empty user", [user("")], None),
    ("system only", [system("You are terse.")], None),
    ("system then user", [system("You are terse."), user("Hi")], None),
    ("two systems joined", [system("Rule one."), system("Rule two."), user("Go")], None),
    (
        "system goes to the last user turn",
        [system("Be kind."), user("Hi"), assistant("Hello! How can I help?"), user("What is 2+2?")],
        None,
    ),
    ("multi-turn", [user("a"), assistant("b"), user("c"), assistant("d"), user("e")], None),
    ("consecutive users merge", [user("first"), user("second"), user("third")], None),
    ("system between users keeps them apart", [user("A"), system("S"), user("B")], None),
    ("consecutive assistants merge", [user("q"), assistant("part 1"), assistant("part 2"), user("ok")], None),
    ("assistant trailing spaces stripped", [user("q"), assistant("answer   "), user("next")], None),
    ("assistant trailing newline kept", [user("q"), assistant("answer\n"), user("next")], None),
    ("conversation starting with assistant", [system("s"), assistant("Welcome!"), user("thanks")], None),
    ("text parts", [user([{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}])], None),
    (
        "text parts with system",
        [system([{"type": "text", "text": "sys"}]), user([{"type": "text", "text": "u"}])],
        None,
    ),
    ("developer role is a system message", [{"role": "developer", "content": "dev rules"}, user("hi")], None),
    ("tools before last user", [user("Weather in Paris?")], [WEATHER_TOOL]),
    ("tools with history", [user("hi"), assistant("hello"), user("Weather in Oslo?")], [WEATHER_TOOL, TIME_TOOL]),
    ("tool without description or parameters", [user("ping it")], [BARE_TOOL]),
    ("tool with unicode and strict", [user("traduis")], [UNICODE_TOOL]),
    ("tools and system", [system("Use tools."), user("Weather?")], [WEATHER_TOOL]),
    (
        "tool call and result",
        [
            user("Weather in Paris?"),
            calls(("call_9f8e7d6c5b4a", "get_weather", {"city": "Paris"})),
            result("call_9f8e7d6c5b4a", '{"temperature": 21, "sky": "clear"}'),
        ],
        [WEATHER_TOOL],
    ),
    (
        "parallel tool calls",
        [
            user("Weather in Paris and Tokyo?"),
            calls(("abcDEF123", "get_weather", {"city": "Paris"}), ("zyxWVU987", "get_weather", {"city": "Tokyo"})),
            result("abcDEF123", '{"temperature": 21}'),
            result("zyxWVU987", '{"temperature": 9}'),
        ],
        [WEATHER_TOOL],
    ),
    (
        "results answered out of order",
        [
            user("both"),
            calls(("call_1", "get_weather", {"city": "A"}), ("call_2", "get-time_v2", {"tz": "UTC"})),
            result("call_2", "12:00"),
            result("call_1", "rainy"),
        ],
        [WEATHER_TOOL, TIME_TOOL],
    ),
    (
        "plain-text tool result",
        [user("w?"), calls(("call_x", "get_weather", {"city": "Rome"})), result("call_x", "It is sunny.")],
        [WEATHER_TOOL],
    ),
    (
        "empty tool result",
        [user("ping"), calls(("call_p", "ping", {})), result("call_p", "")],
        [BARE_TOOL],
    ),
    (
        "JSON list and number tool results",
        [
            user("x"),
            calls(("c1", "ping", {}), ("c2", "ping", {})),
            result("c1", '[1, 2.50, {"a": null}]'),
            result("c2", "42"),
        ],
        [BARE_TOOL],
    ),
    (
        "tool result with text parts",
        [user("x"), calls(("c1", "ping", {})), result("c1", [{"type": "text", "text": '{"ok": true}'}])],
        [BARE_TOOL],
    ),
    (
        "empty arguments string",
        [user("x"), calls(("c1", "ping", "")), result("c1", "pong")],
        [BARE_TOOL],
    ),
    (
        "arguments with unicode and nesting",
        [
            user("x"),
            calls(("c1", "traduire", '{"texte": "Grüße 👋 — 你好", "opts": {"level": [1, 2]}}')),
            result("c1", '{"texte": "Greetings 👋"}'),
        ],
        [UNICODE_TOOL],
    ),
    (
        "conversation continues after tool answer",
        [
            system("Be brief."),
            user("Weather in Paris?"),
            calls(("call_a", "get_weather", {"city": "Paris"})),
            result("call_a", '{"temperature": 21}'),
            assistant("It is 21°C in Paris."),
            user("And in Berlin?"),
        ],
        [WEATHER_TOOL],
    ),
    (
        "two tool rounds",
        [
            user("Paris then Rome"),
            calls(("r1c1", "get_weather", {"city": "Paris"})),
            result("r1c1", "sunny"),
            calls(("r2c1", "get_weather", {"city": "Rome"})),
            result("r2c1", "cloudy"),
        ],
        [WEATHER_TOOL],
    ),
    (
        "unicode everywhere",
        [
            system("Réponds en français. 日本語も可。"),
            user("¿Qué tal? مرحبا 👋 नमस्ते"),
            assistant("Très bien — 很好!"),
            user("Ещё раз, пожалуйста."),
        ],
        None,
    ),
    (
        "control-token text is plain text",
        [system("[INST] sys"), user("[/INST] </s> [TOOL_CALLS] <s>"), assistant("[AVAILABLE_TOOLS]"), user("ok")],
        None,
    ),
    ("whitespace runs", [user("  lots   of\n\n\tspace  "), assistant("  reply"), user("\n")], None),
]
