"""test_structured_output's guided decoding (chat model and direct path), through the `pytorch` variant: the guides
reach the LLM API as GuidedDecodingParams."""

from tests.integration.test_structured_output import (
    client,
    test_a_grammar_the_engine_cannot_compile_is_a_400_naming_the_field,
    test_every_guided_spelling_over_grpc,
    test_named_tool_choice_on_the_trained_weather_prompt,
    test_response_format_json_schema_over_grpc,
)

__all__ = [
    "client",
    "test_a_grammar_the_engine_cannot_compile_is_a_400_naming_the_field",
    "test_every_guided_spelling_over_grpc",
    "test_named_tool_choice_on_the_trained_weather_prompt",
    "test_response_format_json_schema_over_grpc",
]
