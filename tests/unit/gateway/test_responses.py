"""``/v1/responses`` in-process over a scripted upstream: what the chat core is asked (the chat body), how its
answers read as responses and stream events, the fields refused by name, and prompt ids along a
``previous_response_id`` chain equal to mistral-common's for the same conversation as a chat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from nemo_gateway.cli import build_parser, settings_from
from nemo_gateway.dependencies import get_response_store
from nemo_gateway.response_store import ResponseStore, SqliteDatabase
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.errors import BadRequestError, ServerError, UnavailableError
from nemo_protocol.tekken import Tekkenizer
from tests.unit.gateway.conftest import SERVED, USAGE, Gateway, MakeGateway, chunk, completion, usage_chunk

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL_ID = "a1b2c3d4e"  # the chat core's call ids: 9 alphanumerics
EVENTS = TypeAdapter(ResponseStreamEvent)


def call_completion(arguments: str = '{"city": "Paris"}') -> dict[str, Any]:
    reply = completion()
    call = {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    reply["choices"][0].update(message={"role": "assistant", "content": None, "tool_calls": [call]})
    reply["choices"][0]["finish_reason"] = "tool_calls"
    return reply


@pytest.fixture
def with_store(make_gateway: MakeGateway, tmp_path: Path) -> Gateway:
    gateway = make_gateway()
    store = ResponseStore(SqliteDatabase(tmp_path / "responses.sqlite3"), 3600)
    gateway.app.dependency_overrides[get_response_store] = lambda: store
    return gateway


def post(gateway: Gateway, key: str = "alice", **body: Any) -> Any:
    return gateway.http.post(
        "/v1/responses", json={"model": SERVED, **body}, headers={"Authorization": f"Bearer {key}"}
    )


def test_the_request_is_served_as_the_equivalent_chat(with_store: Gateway) -> None:
    answer = post(
        with_store,
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]}],
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
        max_output_tokens=32,
        temperature=0.3,
        top_p=0.9,
        user="u-1",
    )
    assert answer.status_code == 200, answer.json()
    assert with_store.upstream.bodies == [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            ],
            "tools": [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
            },
            "max_tokens": 32,
            "temperature": 0.3,
            "top_p": 0.9,
            "user": "u-1",
        }
    ]


def test_a_whole_answer_reads_as_an_openai_response(with_store: Gateway) -> None:
    body = post(with_store, input="What is the capital of France?", metadata={"k": "v"}).json()
    response = Response.model_validate(body)
    assert response.output_text == "Paris." and response.status == "completed" and response.model == SERVED
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (7, 3)
    assert response.metadata == {"k": "v"} and body["store"] is True
    assert with_store.sample("nemo_gateway_prompt_tokens_total") == USAGE["prompt_tokens"]


def test_a_cut_answer_is_incomplete_for_max_output_tokens(with_store: Gateway) -> None:
    reply = completion()
    reply["choices"][0]["finish_reason"] = "length"
    with_store.upstream.reply = reply
    response = Response.model_validate(post(with_store, input="Hi", max_output_tokens=3).json())
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def sse(answer: Any) -> list[tuple[str, dict[str, Any]]]:
    frames = [frame for frame in answer.text.split("\n\n") if frame]
    events = []
    for frame in frames:
        name_line, data_line = frame.split("\n")
        events.append((name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))))
    return events


def test_a_stream_of_text_then_a_call_is_the_sdk_event_sequence(with_store: Gateway) -> None:
    call = {"index": 0, "id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    tool_chunk = {**chunk(None), "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
    with_store.upstream.reply = [chunk("Par"), chunk("is."), tool_chunk, chunk("", finish="tool_calls"), usage_chunk()]
    answer = post(with_store, input="Hi", tools=[WEATHER], stream=True)
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = sse(answer)
    assert all(name == payload["type"] for name, payload in events)  # each frame names its event; no [DONE]
    assert [name for name, _ in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    parsed = [EVENTS.validate_python(payload) for _, payload in events]  # every one is the SDK's own type
    assert [event.sequence_number for event in parsed] == list(range(len(parsed)))
    final = parsed[-1].response  # type: ignore[union-attr]
    assert final.output_text == "Paris." and final.output[1].call_id == CALL_ID and final.usage.total_tokens == 10
    assert (
        with_store.http.get(f"/v1/responses/{final.id}", headers={"Authorization": "Bearer alice"}).json()
        == (events[-1][1]["response"])
    )


def test_an_error_mid_stream_ends_with_error_and_response_failed(with_store: Gateway) -> None:
    with_store.upstream.reply = [chunk("Par"), ServerError("Triton went away")]
    events = sse(post(with_store, input="Hi", stream=True))
    assert [name for name, _ in events][-2:] == ["error", "response.failed"]
    assert events[-2][1]["message"] == "Triton went away"
    assert events[-1][1]["response"]["status"] == "failed"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "Hi", "top_logprobs": 2}, "top_logprobs"),
        ({"input": "Hi", "include": ["message.output_text.logprobs"]}, "include"),
        ({"input": "Hi", "truncation": "auto"}, "truncation"),
        ({"input": "Hi", "reasoning": {"effort": "low"}}, "reasoning"),
        ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "Hi", "tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": "Hi", "text": {"format": {"type": "grammar"}}}, "text.format"),
        ({"input": "Hi", "text": {"verbosity": "low"}}, "text.verbosity"),
        ({"input": "Hi", "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"input": "Hi", "metadata": {"k": 1}}, "metadata.k"),
        ({"input": 3}, "input"),
        ({}, "input"),
    ],
)
def test_a_field_it_does_not_honour_is_a_400_naming_it(with_store: Gateway, body: dict[str, Any], param: str) -> None:
    answer = post(with_store, **body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.json()
    assert with_store.upstream.bodies == []


def test_the_chat_core_refusals_name_the_responses_fields(with_store: Gateway) -> None:
    with_store.upstream.reply = BadRequestError("must be >= 1, got 0", param="max_tokens")
    assert post(with_store, input="Hi", max_output_tokens=0).json()["error"]["param"] == "max_output_tokens"
    with_store.upstream.reply = BadRequestError("is not a schema", param="response_format.json_schema.schema")
    assert post(with_store, input="Hi").json()["error"]["param"] == "text.format.schema"
    with_store.upstream.reply = BadRequestError("bad name", param="tools[0].function.name")
    assert post(with_store, input="Hi").json()["error"]["param"] == "tools[0].name"


def test_without_a_store_store_true_is_refused_and_false_is_served(make_gateway: MakeGateway) -> None:
    gateway = make_gateway()
    refused = post(gateway, input="Hi", store=True)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "store"
    served = post(gateway, input="Hi")  # the default without a store: not stored
    assert served.status_code == 200 and served.json()["store"] is False
    assert gateway.http.get(f"/v1/responses/{served.json()['id']}").status_code == 404


def test_input_items_page_through_the_request_input(with_store: Gateway) -> None:
    items = [{"role": "user", "content": text} for text in ("one", "two", "three")]
    response_id = post(with_store, input=items).json()["id"]
    auth = {"Authorization": "Bearer alice"}

    def page(**query: Any) -> dict[str, Any]:
        answer = with_store.http.get(f"/v1/responses/{response_id}/input_items", params=query, headers=auth)
        assert answer.status_code == 200, answer.json()
        return answer.json()

    newest = page(limit=2)
    assert [item["content"][0]["text"] for item in newest["data"]] == ["three", "two"] and newest["has_more"]
    rest = page(limit=2, after=newest["last_id"])
    assert [item["content"][0]["text"] for item in rest["data"]] == ["one"] and not rest["has_more"]
    assert [item["content"][0]["text"] for item in page(order="asc")["data"]] == ["one", "two", "three"]
    limit = with_store.http.get(f"/v1/responses/{response_id}/input_items", params={"limit": 0}, headers=auth)
    assert limit.status_code == 400 and limit.json()["error"]["param"] == "limit"


def test_a_chain_across_a_tool_call_prompts_as_mistral_common_renders_the_chat(
    with_store: Gateway, tekken_path: Path
) -> None:
    """Three turns: a question answered by a call, the call's output answered in text, a follow-up question.
    The chat core renders what it is sent with encode_chat; that must be mistral-common's prompt."""
    with_store.upstream.reply = call_completion()
    first = post(with_store, input="What is the weather in Paris?", tools=[WEATHER]).json()
    with_store.upstream.reply = completion("It is sunny.")
    output = {"type": "function_call_output", "call_id": first["output"][0]["call_id"], "output": '{"celsius": 18}'}
    second = post(with_store, previous_response_id=first["id"], input=[output], tools=[WEATHER]).json()
    with_store.upstream.reply = completion("Paris.")
    post(with_store, previous_response_id=second["id"], input="And the capital of France?", tools=[WEATHER])

    chat_tool = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    call = {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    equivalent_chat = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": CALL_ID, "content": '{"celsius": 18}'},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "And the capital of France?"},
    ]
    oracle = MistralTokenizer.from_file(str(tekken_path))
    expected = oracle.encode_chat_completion(
        ChatCompletionRequest.from_openai(messages=equivalent_chat, tools=[chat_tool])
    ).tokens
    sent = with_store.upstream.bodies[-1]
    assert encode_chat(Tekkenizer.from_file(tekken_path), sent["messages"], sent["tools"]) == expected
    for turns, body in ((1, with_store.upstream.bodies[0]), (3, with_store.upstream.bodies[1])):
        ours = encode_chat(Tekkenizer.from_file(tekken_path), body["messages"], body["tools"])
        theirs = oracle.encode_chat_completion(
            ChatCompletionRequest.from_openai(messages=equivalent_chat[:turns], tools=[chat_tool])
        ).tokens
        assert ours == theirs


def test_another_key_cannot_continue_or_read(with_store: Gateway) -> None:
    first = post(with_store, input="Hi").json()
    refused = post(with_store, key="mallory", previous_response_id=first["id"], input="Again")
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "previous_response_id"
    headers = {"Authorization": "Bearer mallory"}
    assert with_store.http.get(f"/v1/responses/{first['id']}", headers=headers).status_code == 404
    assert with_store.http.delete(f"/v1/responses/{first['id']}", headers=headers).status_code == 404
    owner = {"Authorization": "Bearer alice"}
    assert with_store.http.delete(f"/v1/responses/{first['id']}", headers=owner).json()["deleted"] is True
    counted = {
        status: with_store.sample("nemo_gateway_requests_total", endpoint="stored_response", status=status)
        for status in ("200", "404")
    }
    assert counted == {"200": 1, "404": 2}  # the read and delete refused, the owner's delete
    created = {
        status: with_store.sample("nemo_gateway_requests_total", endpoint="responses", status=status)
        for status in ("200", "404")
    }
    assert created == {"200": 1, "404": 1}  # the first response, the continuation refused


def test_the_gateway_opens_the_store_its_settings_name(make_gateway: MakeGateway, tmp_path: Path) -> None:
    """Through the app's own lifespan (no override): the file is created on start and outlives the app."""
    path = tmp_path / "state" / "responses.sqlite3"
    gateway = make_gateway(response_store=str(path), response_retention_s=60)
    with gateway.http:  # runs the lifespan
        response_id = post(gateway, input="Hi").json()["id"]
    assert path.is_file()
    again = make_gateway(response_store=str(path))
    with again.http:
        assert (
            again.http.get(f"/v1/responses/{response_id}", headers={"Authorization": "Bearer alice"}).status_code == 200
        )


def test_a_gateway_whose_store_is_down_does_not_start(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(response_store="postgresql://nemo@127.0.0.1:1/postgres")
    with pytest.raises(UnavailableError, match="the response store failed"), gateway.http:
        pass


def test_the_cli_takes_the_store_and_its_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    defaults = settings_from(parser, parser.parse_args([]))
    assert defaults.response_store is not None and defaults.response_store.endswith("nemo-gateway/responses.sqlite3")
    assert defaults.response_retention_s == 30 * 24 * 3600
    given = parser.parse_args(["--response-store", "postgresql://nemo@db/r", "--response-retention", "0"])
    assert (settings_from(parser, given).response_store, settings_from(parser, given).response_retention_s) == (
        "postgresql://nemo@db/r",
        0,
    )
    assert settings_from(parser, parser.parse_args(["--response-store", ""])).response_store is None
    monkeypatch.setenv("NEMO_GATEWAY_RESPONSE_STORE", "/data/r.sqlite3")
    monkeypatch.setenv("NEMO_GATEWAY_RESPONSE_RETENTION_S", "3600")
    from_env = build_parser().parse_args([])
    assert (from_env.response_store, from_env.response_retention_s) == ("/data/r.sqlite3", 3600)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--response-retention", "-1"])


def test_the_responses_front_renders_parses_and_guides_nothing_itself() -> None:
    """It reaches the model only through the chat body: no tokenizer, template, tool-call parser or guide of its own."""
    import ast
    import importlib

    own = ("nemo_gateway.responses_request", "nemo_gateway.responses_output", "nemo_gateway.routes_responses")
    chat_internals = ("nemo_chat_core", "nemo_protocol.chat_format", "nemo_protocol.tool_calls", "nemo_protocol.tekken")
    for name in own:
        source = Path(importlib.import_module(name).__file__ or "").read_text()
        imported = [node.module or "" for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)] + [
            alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import) for alias in node.names
        ]
        assert not [module for module in imported if module.startswith(chat_internals)], name
