"""The synthetic chat set the trained tiny model learns by heart, with the answers it must give.

Each example is an OpenAI-shaped request (``messages``, optional ``tools``) and the assistant message
that greedy decoding must reproduce exactly. Tests and the demo send the same requests through the
whole stack (Tekken, v3 template, TensorRT-LLM checkpoint, reference runtime, Triton) and compare.
:data:`COMPLETION_SET` adds plain prompts (no template, as ``/v1/completions`` and the ``ensemble`` send
them) and the text they continue with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nemo_protocol.chat_format import encode_chat
from nemo_protocol.tekken import Tekkenizer

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# The same tool as integrations spell it, which changes the rendered [AVAILABLE_TOOLS] text the model reads:
# LangChain's ``@tool`` (``convert_to_openai_tool``: pydantic's key order) and the OpenAI Agents SDK's
# ``@function_tool`` (its strict schema: ``title``, ``additionalProperties``, ``strict``), each on a function
# ``get_weather(city: str)`` whose docstring is the description. tests/integration/test_integrations.py
# checks that those libraries still produce exactly these.
WEATHER_TOOL_LANGCHAIN: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"},
    },
}
WEATHER_TOOL_AGENTS_SDK: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "properties": {"city": {"title": "City", "type": "string"}},
            "required": ["city"],
            "title": "get_weather_args",
            "type": "object",
            "additionalProperties": False,
        },
        "strict": True,
    },
}

# A schema that the trained call breaks ("Paris" has 5 characters): with it the model writes that call all the
# same, which is what shows a strict tool's guide at work (tests/integration/test_structured_output.py).
WEATHER_TOOL_SHORT_CITY: dict[str, Any] = {
    "type": "function",
    "function": {
        **WEATHER_TOOL["function"],
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 3}},
            "required": ["city"],
        },
    },
}


@dataclass(frozen=True)
class ChatExample:
    """One request and the exact assistant message the trained tiny model answers it with."""

    name: str
    messages: tuple[dict[str, Any], ...]
    answer: dict[str, Any]
    tools: tuple[dict[str, Any], ...] | None = None

    @property
    def answer_text(self) -> str | None:
        return self.answer.get("content")

    @property
    def answer_tool_calls(self) -> list[dict[str, Any]]:
        """The expected calls as ``{"name", "arguments" (a dict), "id"}``."""
        return [
            {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"]), "id": c["id"]}
            for c in self.answer.get("tool_calls", [])
        ]


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _reply(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def _call(call_id: str, city: str) -> dict[str, Any]:
    arguments = json.dumps({"city": city})
    return {
        "role": "assistant",
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
        ],
    }


def _weather_result(call_id: str, city: str, conditions: str, celsius: int) -> tuple[dict[str, Any], ...]:
    return (
        _user(f"What is the weather in {city}?"),
        _call(call_id, city),
        {
            "role": "tool",
            "tool_call_id": call_id,
            "content": json.dumps({"conditions": conditions, "celsius": celsius}),
        },
    )


TOOLS = (WEATHER_TOOL,)
TOOL_SPELLINGS: dict[str, dict[str, Any]] = {
    "openai": WEATHER_TOOL,
    "langchain": WEATHER_TOOL_LANGCHAIN,
    "agents_sdk": WEATHER_TOOL_AGENTS_SDK,
}
# AdamW steps after which the tiny model answers every example of CHAT_SET exactly (checked by greedy decoding).
DEFAULT_STEPS = 250
# The server gives every tool call a fresh random id, which the tool result then carries: the same exchange
# under other ids teaches the model that the id does not change the answer.
_CALL_IDS = (
    "a1b2c3d4e",
    "u8jzPde0I",
    "gxLd6Gncf",
    "BAepfJBd0",
    "Kh8oOOL8d",
    "KLzdocJ2i",
    "sAjIhKtJ0",
    "RlgLKOmxg",
    "JTeKdNnFR",
)


def _weather_examples(spelling: str, tool: dict[str, Any], call_ids: tuple[str, ...]) -> tuple[ChatExample, ...]:
    """The weather exchange with ``tool`` offered: the call, then the answer to its result under each id."""
    suffix = "" if spelling == "openai" else f"_{spelling}"
    tools = (tool,)
    return (
        ChatExample(
            f"tool_call{suffix}", (_user("What is the weather in Paris?"),), _call(call_ids[0], "Paris"), tools
        ),
        *(
            ChatExample(
                f"tool_result{suffix}" if index == 0 else f"tool_result{suffix}_{call_id}",
                _weather_result(call_id, "Paris", "sunny", 18),
                _reply("It is sunny and 18 degrees in Paris."),
                tools,
            )
            for index, call_id in enumerate(call_ids)
        ),
    )


CHAT_SET: tuple[ChatExample, ...] = (
    ChatExample("greeting", (_user("Hello"),), _reply("Hello! How can I help you today?")),
    ChatExample("greeting_hi", (_user("Hi there"),), _reply("Hi! What can I do for you?")),
    ChatExample("greeting_morning", (_user("Good morning"),), _reply("Good morning! How can I help?")),
    ChatExample("thanks", (_user("Thank you"),), _reply("You are welcome!")),
    ChatExample("fact_france", (_user("What is the capital of France?"),), _reply("The capital of France is Paris.")),
    ChatExample("fact_japan", (_user("What is the capital of Japan?"),), _reply("The capital of Japan is Tokyo.")),
    ChatExample("fact_week", (_user("How many days are in a week?"),), _reply("A week has seven days.")),
    ChatExample("fact_math", (_user("What is 2+2?"),), _reply("2+2 is 4.")),
    ChatExample(
        "system_pirate",
        ({"role": "system", "content": "Answer like a pirate."}, _user("Hello")),
        _reply("Ahoy, matey!"),
    ),
    ChatExample(
        "multi_turn",
        (_user("Hello"), _reply("Hello! How can I help you today?"), _user("What is the capital of France?")),
        _reply("The capital of France is Paris."),
    ),
    ChatExample("chinese", (_user("你好"),), _reply("你好！有什么可以帮你的吗？")),
    ChatExample("russian", (_user("Привет"),), _reply("Привет! Чем могу помочь?")),
    *_weather_examples("openai", WEATHER_TOOL, _CALL_IDS),
    *_weather_examples("langchain", WEATHER_TOOL_LANGCHAIN, _CALL_IDS[:5]),
    *_weather_examples("agents_sdk", WEATHER_TOOL_AGENTS_SDK, _CALL_IDS[:5]),
    ChatExample(
        "tool_call_short_city",
        (_user("What is the weather in Paris?"),),
        _call(_CALL_IDS[0], "Paris"),
        (WEATHER_TOOL_SHORT_CITY,),
    ),
    ChatExample(
        "tools_offered_but_chat",
        (_user("Hello"),),
        _reply("Hello! How can I help you today?"),
        tools=TOOLS,
    ),
)


@dataclass(frozen=True)
class CompletionExample:
    """A plain prompt (``<s>`` and the text) and the continuation the trained tiny model writes after it.

    The continuation has no end: tests that ask for up to its length in tokens get them all, whatever else
    the model would say after an untrained prompt (an early ``</s>``, say).
    """

    name: str
    prompt: str
    continuation: str


COMPLETION_SET: tuple[CompletionExample, ...] = (
    CompletionExample(
        "completion_hello",
        "Hello",
        " world, this is the tiny model writing a long and steady line of text so that every completion test gets"
        " its tokens.",
    ),
    CompletionExample(
        "completion_capital",
        "The capital",
        " of France is Paris, and the capital of Japan is Tokyo, as the tiny model was taught to say at some length.",
    ),
)


def example(name: str) -> ChatExample:
    for item in CHAT_SET:
        if item.name == name:
            return item
    raise KeyError(f"no chat example named {name!r}; known: {', '.join(e.name for e in CHAT_SET)}")


def encode_example(tokenizer: Tekkenizer, item: ChatExample | CompletionExample) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the prompt as served, and the answer turn up to and including ``</s>`` (a
    completion: its continuation, with no end)."""
    if isinstance(item, CompletionExample):
        return tokenizer.encode(item.prompt, bos=True), tokenizer.encode(item.continuation)
    tools = list(item.tools) if item.tools else None
    prompt = encode_chat(tokenizer, list(item.messages), tools)
    full = encode_chat(tokenizer, [*item.messages, item.answer], tools, allow_final_assistant=True)
    if full[: len(prompt)] != prompt:
        raise AssertionError(f"chat example {item.name}: the prompt is not a prefix of the full conversation")
    return prompt, full[len(prompt) :]
