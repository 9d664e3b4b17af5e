"""Structured output end to end on the real Triton: gRPC (`chat` model and the direct path), the gateway, the
openai SDK's ``.parse()``, LangChain's ``with_structured_output`` and a named ``tool_choice``.

The served model is the trained tiny one: it knows a few canned answers, never JSON. Whatever JSON comes
back is the guide's doing, and must parse and validate (`jsonschema`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from nemo_build.tiny.chat import WEATHER_TOOL, WEATHER_TOOL_SHORT_CITY
from nemo_client import NemoClient
from nemo_protocol.errors import BadRequestError

SERVED = "nemo-tiny"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
PARIS_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "country": {"enum": ["France", "Japan", "Italy"]},
        "population": {"type": "integer", "minimum": 0, "maximum": 40000000},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
    },
    "required": ["city", "country", "population"],
    "additionalProperties": False,
}


CHOICES = ["Paris", "Lyon", "Nice"]
DAY = "[A-Z][a-z]{2,8} [0-9]{1,2}"


class Capital(BaseModel):
    city: str = Field(max_length=12)
    country: Literal["France", "Japan", "Italy"]
    population: int = Field(ge=0, le=40_000_000)


@pytest.fixture(scope="module", params=["chat model", "direct"])
def client(request: pytest.FixtureRequest, url: str, tekken_path: Path) -> Iterator[NemoClient]:
    direct = request.param == "direct"
    with NemoClient(url, timeout=120, direct=direct, tokenizer_file=tekken_path if direct else None) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=2)


def text_of(reply: Any) -> str:
    return reply.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_json_schema_over_grpc(client: NemoClient, stream: bool) -> None:
    params: dict[str, Any] = {
        "messages": FRANCE,
        "response_format": {"type": "json_schema", "json_schema": {"name": "capital", "schema": CITY, "strict": True}},
        "max_tokens": 120,
        "temperature": 0,
    }
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **params))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].choices[0].finish_reason == "stop"
    else:
        reply = client.chat.completions.create(**params)
        text = text_of(reply)
        assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), CITY)


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ({"extra_body": {"nvext": {"guided_choice": CHOICES}}}, lambda text: text in CHOICES),
        ({"extra_body": {"guided_regex": DAY}}, lambda text: re.fullmatch(DAY, text)),
        (
            {"extra_body": {"nvext": {"guided_grammar": 'root ::= "yes" | "no" | "maybe " [0-9]'}}},
            lambda text: re.fullmatch("yes|no|maybe [0-9]", text),
        ),
    ],
)  # fmt: skip
def test_every_guided_spelling_over_grpc(client: NemoClient, extra: dict[str, Any], check: Any) -> None:
    text = text_of(client.chat.completions.create(messages=FRANCE, max_tokens=60, temperature=0, **extra))
    assert check(text), text


def test_json_object_starts_an_object_and_stays_in_json(client: NemoClient) -> None:
    # The trained tiny model has no JSON in it: keys run until max_tokens. What it writes is still an object's start.
    reply = client.chat.completions.create(
        messages=FRANCE, response_format={"type": "json_object"}, max_tokens=16, temperature=0
    )
    text = text_of(reply)
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        assert reply.choices[0].finish_reason == "length" and text.startswith("{")
        assert not re.search(r"[\x00-\x1f]", text)  # no raw control characters, which JSON strings may not hold


def test_named_tool_choice_on_the_trained_weather_prompt(client: NemoClient) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(
        messages=PARIS_WEATHER, tools=[WEATHER_TOOL], tool_choice=named, temperature=0
    )
    [call] = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert arguments["city"] == "Paris"  # the trained answer, now valid by construction too


def test_required_tool_choice_on_a_question_the_model_answers_in_text(client: NemoClient) -> None:
    # The tiny model answers this in prose; "required" makes it a call all the same, valid for the tool.
    reply = client.chat.completions.create(messages=FRANCE, tools=[WEATHER_TOOL], tool_choice="required", temperature=0)
    [call] = reply.choices[0].message.tool_calls
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


def short_city_tool(strict: bool) -> dict[str, Any]:
    """The weather tool with at most 3 characters of city, for which the model was trained to call with "Paris"."""
    tool = json.loads(json.dumps(WEATHER_TOOL_SHORT_CITY))
    tool["function"]["strict"] = strict
    return tool


@pytest.mark.parametrize("stream", [False, True])
def test_a_strict_tool_under_auto_gets_arguments_that_match_its_schema(client: NemoClient, stream: bool) -> None:
    def calls_of(tool: dict[str, Any]) -> tuple[list[str], str]:
        # one call: held off its trained call, the model would go on writing calls until max_tokens
        params: dict[str, Any] = {
            "messages": PARIS_WEATHER, "tools": [tool], "temperature": 0, "max_tokens": 60, "parallel_tool_calls": False
        }  # fmt: skip
        if not stream:
            reply = client.chat.completions.create(**params)
            calls = reply.choices[0].message.tool_calls or []
            return [call.function.arguments for call in calls], reply.choices[0].finish_reason
        chunks = list(client.chat.completions.create(stream=True, **params))
        deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
        return [delta.function.arguments for delta in deltas], chunks[-1].choices[0].finish_reason

    loose, strict = short_city_tool(strict=False), short_city_tool(strict=True)
    assert calls_of(loose) == (['{"city": "Paris"}'], "tool_calls")  # the model's trained call breaks the schema
    [arguments], finish_reason = calls_of(strict)
    assert finish_reason == "tool_calls"
    jsonschema.validate(json.loads(arguments), strict["function"]["parameters"])
    # and a strict tool the model does not call leaves its answer alone (strict is not in the prompt: as trained)
    strict_weather = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    hello = client.chat.completions.create(
        messages=[{"role": "user", "content": "Hello"}], tools=[strict_weather], temperature=0
    )
    assert hello.choices[0].message.content == "Hello! How can I help you today?"


def test_a_grammar_the_engine_cannot_compile_is_a_400_naming_the_field(client: NemoClient) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(messages=FRANCE, extra_body={"guided_grammar": "root ::= ("})
    assert refused.value.param == "guided_grammar"
    assert client.chat.completions.create(messages=FRANCE, temperature=0).choices[0].message.content


def test_openai_sdk_parse_with_a_pydantic_model(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.parse(
        model=SERVED, messages=FRANCE, response_format=Capital, max_tokens=120, temperature=0
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Capital)


def test_langchain_with_structured_output_json_schema_and_function_calling(gateway: str) -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        model=SERVED, base_url=f"{gateway}/v1", api_key="unused", temperature=0, max_tokens=120, max_retries=0
    )
    # (json_mode asks for any object: keys are free text, which the tiny model never closes; see the json_object test)
    for method in ("json_schema", "function_calling"):
        result = model.with_structured_output(Capital, method=method).invoke(FRANCE[0]["content"])
        assert isinstance(result, Capital), (method, result)


def test_an_unenforceable_schema_is_a_400_naming_the_keyword_and_is_not_retried(
    gateway: str, sdk: openai.OpenAI
) -> None:
    schema = {"type": "object", "properties": {"ids": {"type": "array", "uniqueItems": True}}}
    before = _requests_total(gateway)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model=SERVED,
            messages=FRANCE,
            response_format={"type": "json_schema", "json_schema": {"name": "ids", "schema": schema}},
        )
    assert refused.value.body["param"] == "response_format.json_schema.schema.properties.ids"
    assert "'uniqueItems'" in refused.value.body["message"]
    assert _requests_total(gateway) == before + 1  # one request: a 400 is not retried


def _requests_total(gateway: str) -> float:
    text = httpx.get(f"{gateway}/v1/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nemo_gateway_requests_total{") and 'endpoint="chat' in line
    )
