"""Agent frameworks through the gateway on the real Triton: LangChain's ``@tool`` and the OpenAI Agents SDK's
``@function_tool`` each make the weather call and answer from its result, on CPU with the trained tiny model.

The frameworks spell the tool their own way (key order, ``title``, ``additionalProperties``, ``strict``), and
the tiny model reads the rendered text: it was trained on each spelling (``nemo_build.tiny.chat``). The first
tests hold that the frameworks still spell it so; the others run each framework's own tool loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai

from nemo_build.tiny.chat import WEATHER_TOOL_AGENTS_SDK, WEATHER_TOOL_LANGCHAIN

SERVED = "nemo-tiny"
QUESTION = "What is the weather in Paris?"
ANSWER = "It is sunny and 18 degrees in Paris."
PARIS = {"conditions": "sunny", "celsius": 18}


def _weather(city: str) -> str:
    return json.dumps(PARIS if city == "Paris" else {"error": f"no weather for {city}"})


def _langchain_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city"""
        return _weather(city)

    return get_weather


def _agents_sdk_tool(calls: list[str]) -> Any:
    from agents import function_tool

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city"""
        calls.append(city)
        return _weather(city)

    return get_weather


def test_the_frameworks_spell_the_tool_as_the_tiny_model_learned_it() -> None:
    from agents.models.chatcmpl_converter import Converter
    from langchain_core.utils.function_calling import convert_to_openai_tool

    assert convert_to_openai_tool(_langchain_tool()) == WEATHER_TOOL_LANGCHAIN
    assert Converter.tool_to_openai(_agents_sdk_tool([])) == WEATHER_TOOL_AGENTS_SDK


def test_langchain_bind_tools_calls_the_tool_and_answers_from_its_result(gateway: str) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    get_weather = _langchain_tool()
    model = ChatOpenAI(model=SERVED, base_url=f"{gateway}/v1", api_key="unused", temperature=0, max_retries=0)
    with_tools = model.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage(QUESTION)]
    reply = with_tools.invoke(messages)
    assert [(call["name"], call["args"]) for call in reply.tool_calls] == [("get_weather", {"city": "Paris"})]
    messages += [reply, get_weather.invoke(reply.tool_calls[0])]  # a ToolMessage carrying the call's id
    assert with_tools.invoke(messages).content == ANSWER

    streamed = None
    for chunk in with_tools.stream([HumanMessage(QUESTION)]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    assert [(call["name"], call["args"]) for call in streamed.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_the_agents_sdk_runs_its_tool_loop_to_the_answer(gateway: str) -> None:
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # the SDK would export traces to api.openai.com
    calls: list[str] = []
    agent = Agent(
        name="weather",
        tools=[_agents_sdk_tool(calls)],
        model=OpenAIChatCompletionsModel(
            model=SERVED, openai_client=openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)
        ),
        model_settings=ModelSettings(temperature=0),
    )

    async def run_whole_then_streamed() -> tuple[Any, Any, list[str]]:  # one loop: the client's connections live in it
        whole = await Runner.run(agent, QUESTION)
        calls_whole = calls[:]
        streamed = Runner.run_streamed(agent, QUESTION)
        async for _ in streamed.stream_events():
            pass
        return whole, streamed, calls_whole

    whole, streamed, calls_whole = asyncio.run(run_whole_then_streamed())
    assert calls_whole == ["Paris"], [response.output for response in whole.raw_responses]
    assert whole.final_output == ANSWER
    assert calls == ["Paris", "Paris"] and streamed.final_output == ANSWER
