"""The ``get_weather`` tool that ``make demo`` and ``make gpu-check`` answer the model's tool calls with.

Its schema is :data:`nemo_build.tiny.chat.WEATHER_TOOL`; the tiny model was trained to answer Paris's result.
"""

from __future__ import annotations

from typing import Any

WEATHER = {"Paris": {"conditions": "sunny", "celsius": 18}, "Tokyo": {"conditions": "rainy", "celsius": 12}}


def get_weather(city: str) -> dict[str, Any]:
    """Current weather in a city."""
    return WEATHER.get(city, {"conditions": "unknown", "celsius": None})
