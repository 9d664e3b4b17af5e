"""Chat request bodies and engine output chunks the chat core's tests share."""

from __future__ import annotations

import json
from typing import Any

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def body(**fields: Any) -> str:
    return json.dumps({"messages": USER, **fields})


def one_token_chunks(ids: list[int]) -> list[list[int]]:
    return [[i] for i in ids]
