"""The Responses API end to end on the real Triton with the trained tiny model: the openai SDK's
``responses.create`` / ``.stream`` / ``.parse``, stored responses and ``previous_response_id`` across a tool call,
the OpenAI Agents SDK's default (Responses) model running its tool loop, and the stores: a SQLite file that
outlives a gateway restart, and a PostgreSQL server shared by two gateways.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from pydantic import BaseModel, Field

from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_gateway.settings import GatewaySettings
from nemo_ops import weather_tool
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.tekken import Tekkenizer
from tests.integration.gateways import SERVED, running_gateway

FRANCE = "What is the capital of France?"
FRANCE_ANSWER = "The capital of France is Paris."
PARIS_WEATHER = "What is the weather in Paris?"
WEATHER_ANSWER = "It is sunny and 18 degrees in Paris."
PARIS = weather_tool.get_weather("Paris")  # what the trained model answers from
# The trained weather tool in the Responses spelling (the function's fields beside "type").
WEATHER = {"type": "function", **WEATHER_TOOL["function"]}


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("responses") / "responses.sqlite3"


@pytest.fixture(scope="module")
def gateway_with_store(url: str, store_file: Path) -> Iterator[str]:
    with running_gateway(
        GatewaySettings(triton_url=url, served_model_name=SERVED, response_store=str(store_file))
    ) as base:
        yield base


@pytest.fixture(scope="module")
def sdk(gateway_with_store: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_with_store}/v1", api_key="alice", max_retries=0, timeout=120)


def _sdk(base: str, key: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)


def test_create_answers_stores_and_lists_the_input(sdk: openai.OpenAI, tekken_path: Path) -> None:
    response = sdk.responses.create(model=SERVED, input=FRANCE, temperature=0, metadata={"case": "france"})
    assert response.status == "completed" and response.output_text == FRANCE_ANSWER
    prompt = encode_chat(Tekkenizer.from_file(tekken_path), [{"role": "user", "content": FRANCE}])
    assert response.usage is not None and response.usage.input_tokens == len(prompt)
    assert response.usage.output_tokens > 0 and response.metadata == {"case": "france"}

    again = sdk.responses.retrieve(response.id)
    assert again.output_text == FRANCE_ANSWER and again.id == response.id
    items = sdk.responses.input_items.list(response.id)
    assert [(item.type, item.role, item.content[0].text) for item in items.data] == [  # type: ignore[union-attr]
        ("message", "user", FRANCE)
    ]

    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_instructions_become_the_system_prompt(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(model=SERVED, instructions="Answer like a pirate.", input="Hello", temperature=0)
    assert response.output_text == "Ahoy, matey!"


def test_the_raw_stream_is_the_event_sequence_openai_sends(sdk: openai.OpenAI) -> None:
    events = list(sdk.responses.create(model=SERVED, input=FRANCE, temperature=0, stream=True))
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == FRANCE_ANSWER and completed.usage.output_tokens > 0
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == FRANCE_ANSWER
    assert sdk.responses.retrieve(completed.id).output_text == FRANCE_ANSWER  # stored before the last event


def test_the_sdk_stream_helper_accumulates_the_answer(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model=SERVED, input=FRANCE, temperature=0) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == FRANCE_ANSWER == final.output_text


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_previous_response_id_continues_across_a_tool_call(sdk: openai.OpenAI, stream: bool, tekken_path: Path) -> None:
    first = _create(sdk, stream, input=PARIS_WEATHER, tools=[WEATHER], temperature=0)
    [call] = first.output
    assert (
        call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    )
    assert first.status == "completed"

    output = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(PARIS)}
    second = _create(sdk, stream, previous_response_id=first.id, input=[output], tools=[WEATHER], temperature=0)
    assert second.output_text == WEATHER_ANSWER and second.previous_response_id == first.id
    # The second prompt held the whole conversation (the question, the call and its output), as mistral-common
    # renders the same chat.
    function = {"name": call.name, "arguments": call.arguments}
    chat = [
        {"role": "user", "content": PARIS_WEATHER},
        {"role": "assistant", "tool_calls": [{"id": call.call_id, "type": "function", "function": function}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": json.dumps(PARIS)},
    ]
    oracle = MistralTokenizer.from_file(str(tekken_path))
    expected = oracle.encode_chat_completion(ChatCompletionRequest.from_openai(messages=chat, tools=[WEATHER_TOOL]))
    assert second.usage is not None and second.usage.input_tokens == len(expected.tokens)


def _create(sdk: openai.OpenAI, stream: bool, **params: Any) -> Any:
    if not stream:
        return sdk.responses.create(model=SERVED, **params)
    with sdk.responses.stream(model=SERVED, **params) as events:
        kinds = [event.type for event in events]
        final = events.get_final_response()
    if final.output and final.output[0].type == "function_call":
        assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    return final


class Capital(BaseModel):
    city: str = Field(max_length=12)
    country: Literal["France", "Japan", "Italy"]


def test_parse_holds_the_output_to_a_pydantic_schema(sdk: openai.OpenAI) -> None:
    response = sdk.responses.parse(model=SERVED, input=FRANCE, text_format=Capital, temperature=0, max_output_tokens=60)
    assert isinstance(response.output_parsed, Capital)  # the guide's doing: the tiny model never writes JSON


def test_a_response_belongs_to_the_api_key_that_stored_it(sdk: openai.OpenAI, gateway_with_store: str) -> None:
    response = sdk.responses.create(model=SERVED, input=FRANCE, temperature=0, max_output_tokens=4)
    mallory = _sdk(gateway_with_store, "mallory")
    with pytest.raises(openai.NotFoundError) as read:
        mallory.responses.retrieve(response.id)
    assert read.value.body["param"] == "response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as continued:
        mallory.responses.create(model=SERVED, previous_response_id=response.id, input="Thank you")
    assert continued.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        mallory.responses.delete(response.id)
    assert sdk.responses.retrieve(response.id).id == response.id


def test_a_gateway_restart_keeps_what_was_stored(url: str, tmp_path: Path) -> None:
    settings = GatewaySettings(triton_url=url, served_model_name=SERVED, response_store=str(tmp_path / "store.db"))
    with running_gateway(settings) as base:
        stored = _sdk(base).responses.create(model=SERVED, input=FRANCE, temperature=0)
    with running_gateway(settings) as base:
        assert _sdk(base).responses.retrieve(stored.id).output_text == FRANCE_ANSWER


def test_the_agents_sdk_default_model_runs_its_tool_loop_whole_and_streamed(gateway_with_store: str) -> None:
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # the SDK would export traces to api.openai.com
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city"""  # the description the tiny model was trained on
        calls.append(city)
        return json.dumps(weather_tool.get_weather(city))

    client = openai.AsyncOpenAI(base_url=f"{gateway_with_store}/v1", api_key="alice", max_retries=0)
    agent = Agent(
        name="weather",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=SERVED, openai_client=client),
        model_settings=ModelSettings(temperature=0),
    )

    async def run_whole_then_streamed() -> tuple[Any, Any]:  # one loop: the client's connections live in it
        whole = await Runner.run(agent, PARIS_WEATHER)
        streamed = Runner.run_streamed(agent, PARIS_WEATHER)
        async for _ in streamed.stream_events():
            pass
        return whole, streamed

    whole, streamed = asyncio.run(run_whole_then_streamed())
    assert whole.final_output == WEATHER_ANSWER, [response.output for response in whole.raw_responses]
    assert streamed.final_output == WEATHER_ANSWER and calls == ["Paris", "Paris"]


def test_an_unhonoured_field_is_a_400_naming_it(gateway_with_store: str) -> None:
    answer = httpx.post(
        f"{gateway_with_store}/v1/responses", json={"model": SERVED, "input": "Hi", "top_logprobs": 2}, timeout=30
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "top_logprobs"


def test_two_gateways_share_a_postgres_store(url: str, postgres_url: str) -> None:
    """A conversation begun on one replica goes on on another, and either reads what the other stored."""
    settings = GatewaySettings(triton_url=url, served_model_name=SERVED, response_store=postgres_url)
    with running_gateway(settings) as one, running_gateway(settings) as two:
        first = _sdk(one).responses.create(model=SERVED, input=PARIS_WEATHER, tools=[WEATHER], temperature=0)
        [call] = first.output
        assert call.type == "function_call"
        output = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(PARIS)}
        second = _sdk(two).responses.create(
            model=SERVED, previous_response_id=first.id, input=[output], tools=[WEATHER], temperature=0
        )
        assert second.output_text == WEATHER_ANSWER
        assert _sdk(one).responses.retrieve(second.id).output_text == WEATHER_ANSWER
        with pytest.raises(openai.NotFoundError):
            _sdk(two, "mallory").responses.retrieve(first.id)


def test_the_chat_model_path_serves_responses_too(url: str) -> None:
    """Through Triton's chat model instead of the gateway's own chat core; no store: nothing is kept."""
    with running_gateway(GatewaySettings(triton_url=url, served_model_name=SERVED, direct=False)) as base:
        sdk = _sdk(base)
        answer = sdk.responses.create(model=SERVED, input=FRANCE, temperature=0)
        assert answer.output_text == FRANCE_ANSWER
        with sdk.responses.stream(model=SERVED, input=PARIS_WEATHER, tools=[WEATHER], temperature=0) as stream:
            final = stream.get_final_response()
        [call] = final.output
        assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(answer.id)
