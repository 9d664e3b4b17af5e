"""Tool definitions derived from Python functions."""

from __future__ import annotations

from typing import Literal

from nemo_client.tool_runner import function_tool


def get_weather(
    city: str, unit: Literal["c", "f"] = "c", days: int | None = None, tags: list[str] | None = None
) -> dict:
    """Current weather in a city.

    Longer explanation that the model does not need.
    """
    return {}


def test_definition_from_signature_and_docstring() -> None:
    assert function_tool(get_weather) == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"enum": ["c", "f"]},
                    "days": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["city"],
            },
        },
    }


def test_name_override_and_untyped_parameters() -> None:
    def anything(x, y: float, flag: bool) -> None:  # type: ignore[no-untyped-def]
        pass

    definition = function_tool(anything, name="do-it")
    assert definition["function"]["name"] == "do-it"
    assert definition["function"]["parameters"]["properties"] == {
        "x": {},
        "y": {"type": "number"},
        "flag": {"type": "boolean"},
    }
    assert definition["function"]["parameters"]["required"] == ["x", "y", "flag"]
