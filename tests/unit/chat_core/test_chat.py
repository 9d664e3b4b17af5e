"""The `chat` model's logic: OpenAI request validation, prompt rendering, OpenAI responses."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from nemo_chat_core.chat import ChatEndpoint
from nemo_chat_core.engine_tensors import LogOutputs
from nemo_chat_core.length_limits import LengthLimits
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.errors import BadRequestError, NotFoundError
from nemo_protocol.tekken import Tekkenizer
from tests.unit.chat_core.chat_bodies import TOOLS, USER, body, one_token_chunks


def run(endpoint: ChatEndpoint, raw: str, output_ids: list[int]) -> tuple[list[dict[str, Any]], list[bool]]:
    chat = endpoint.prepare(raw)
    cancelled: list[bool] = []
    events = list(endpoint.respond(chat, one_token_chunks(output_ids), lambda: cancelled.append(True)))
    return events, cancelled


@pytest.mark.parametrize(
    ("raw", "param", "phrase"),
    [
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", None, "JSON object"),
        (body(temperature="hot"), "temperature", "must be a number"),
        (body(temperature=3), "temperature", "[0, 2]"),
        (body(max_tokens=0), "max_tokens", ">= 1"),
        (body(max_tokens=True), "max_tokens", "integer"),
        (body(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
        (body(frobnicate=1), "frobnicate", "unknown field"),
        (body(n=2), "n", "only 1"),
        (body(stream_options={"include_usage": True}), "stream_options", "stream is true"),
        (body(tool_choice="required"), "tool_choice", "at least one tool"),
        (
            body(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}),
            "tool_choice.function.name",
            "get_weather",
        ),
        (body(presence_penalty=0.5), "presence_penalty", "CPU reference runtime"),
        (body(logprobs="yes"), "logprobs", "must be a bool"),
        (body(response_format={"type": "xml"}), "response_format.type", "json_schema"),
        (json.dumps({"messages": [{"role": "user", "content": "x " * 300}]}), "messages", "at most 256"),
        (body(max_tokens=510), "max_tokens", "do not fit"),
        (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}), "messages[0].role", ""),
    ],
)
def test_invalid_requests_name_the_field(endpoint: ChatEndpoint, raw: str, param: str | None, phrase: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        endpoint.prepare(raw)
    assert caught.value.param == param
    assert phrase in str(caught.value)


def test_prompt_is_rendered_on_the_server_with_tools_unless_hidden(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    assert endpoint.prepare(body(tools=TOOLS)).generation.input_ids == encode_chat(tok, USER, TOOLS)
    assert endpoint.prepare(body(tools=TOOLS, tool_choice="none")).generation.input_ids == encode_chat(tok, USER)


def test_sampling_parameters_reach_the_generation(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    generation = endpoint.prepare(body(temperature=0.3, top_p=0.9, seed=-1, max_tokens=7)).generation
    sampling = generation.sampling
    assert (sampling.temperature, sampling.top_p, generation.max_new_tokens) == (
        pytest.approx(0.3),
        pytest.approx(0.9),
        7,
    )
    assert sampling.seed == 2**64 - 1 and generation.end_id == tok.eos_id and generation.streaming
    assert endpoint.prepare(body(temperature=0)).generation.sampling.greedy
    assert endpoint.prepare(body(nvext={"ignore_eos": True})).generation.end_id is None


def test_non_streaming_completion_with_usage_and_length(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    output = tok.encode("Sunny, 22°C in Paris.")
    events, _ = run(endpoint, body(max_tokens=len(output)), output)
    assert len(events) == 1
    completion = events[0]
    assert completion["object"] == "chat.completion" and completion["model"] == "nemo-test"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Sunny, 22°C in Paris."}
    assert completion["choices"][0]["finish_reason"] == "length"
    prompt_tokens = len(encode_chat(tok, USER))
    assert completion["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(output),
        "total_tokens": prompt_tokens + len(output),
    }


def test_streaming_chunks_role_first_then_content_then_finish_and_usage(
    endpoint: ChatEndpoint, tok: Tekkenizer
) -> None:
    text = "你好 🙂 مرحبا"
    events, _ = run(endpoint, body(stream=True, stream_options={"include_usage": True}), tok.encode(text))
    assert {e["object"] for e in events} == {"chat.completion.chunk"} and len({e["id"] for e in events}) == 1
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [e["choices"][0]["delta"]["content"] for e in events[1:-2]]
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == len(tok.encode(text))


def test_stop_sequence_ends_the_text_and_the_generation(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    output = tok.encode("It is sunny.\nUser: and tomorrow?")
    events, cancelled = run(endpoint, body(stop="\nUser"), output)
    choice = events[0]["choices"][0]
    assert choice["message"]["content"] == "It is sunny."
    assert choice["finish_reason"] == "stop"
    assert cancelled == [True]
    assert events[0]["usage"]["completion_tokens"] < len(output)


def tool_call_output(tok: Tekkenizer, calls: str) -> list[int]:
    return [tok.control_id("[TOOL_CALLS]"), *tok.encode(calls)]


def test_tool_calls_are_parsed_streamed_and_finish_with_tool_calls(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    output = tool_call_output(tok, '[{"name": "get_weather", "arguments": {"city": "Paris"}}]')
    events, _ = run(endpoint, body(tools=TOOLS, stream=True), output)
    calls = [d["tool_calls"][0] for e in events if "tool_calls" in (d := e["choices"][0]["delta"])]
    assert len(calls) == 1
    assert calls[0]["index"] == 0 and calls[0]["type"] == "function" and len(calls[0]["id"]) == 9
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    whole, _ = run(endpoint, body(tools=TOOLS), output)
    message = whole[0]["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "get_weather"


def test_named_tool_choice_forces_the_call_token_and_guides_the_call(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    chat = endpoint.prepare(body(tools=TOOLS, tool_choice=named))
    prompt = encode_chat(tok, USER, TOOLS)
    assert chat.generation.input_ids == [*prompt, tok.control_id("[TOOL_CALLS]")]  # no text forced after it
    assert chat.generation.guide is not None and chat.generation.guide.type == "json_schema"
    schema = json.loads(chat.generation.guide.text)
    assert schema["maxItems"] == 1 and schema["items"]["properties"]["name"] == {"const": "get_weather"}
    assert schema["items"]["properties"]["arguments"] == TOOLS[0]["function"]["parameters"]
    output = tok.encode('[{"name": "get_weather", "arguments": {"city": "Oslo"}}]')
    events = list(endpoint.respond(chat, one_token_chunks(output), lambda: None))
    call = events[0]["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert events[0]["choices"][0]["finish_reason"] == "tool_calls"


def test_required_tool_choice_refuses_output_that_is_no_call(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    events, _ = run(endpoint, body(tools=TOOLS, tool_choice="required"), tok.encode("I will not call tools."))
    assert events[-1]["error"]["param"] == "tool_choice"
    assert "not one" in events[-1]["error"]["message"]


def test_the_model_asked_for_must_be_the_one_served(endpoint: ChatEndpoint) -> None:
    assert endpoint.prepare(body(model="nemo-test")).request.model == "nemo-test"
    with pytest.raises(NotFoundError) as missing:
        endpoint.prepare(body(model="gpt-4o"))
    assert missing.value.param == "model" and "'nemo-test'" in missing.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"store": True}, "store"), ({"metadata": {"team": "a"}}, "metadata"), ({"model": 3}, "model")],
)
def test_fields_that_would_be_ignored_are_refused_by_name(
    endpoint: ChatEndpoint, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequestError) as refused:
        endpoint.prepare(body(**fields))
    assert refused.value.param == param
    endpoint.prepare(body(store=False, metadata={}))  # what they mean when neutral is served


@pytest.mark.parametrize(
    ("user", "phrase"),
    [(7, "must be a string, got int"), ("", "1-256 printable"), ("u" * 257, "1-256 printable"), ("a\nb", "printable")],
)
def test_user_must_be_a_short_printable_string(endpoint: ChatEndpoint, user: Any, phrase: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        endpoint.prepare(body(user=user))
    assert refused.value.param == "user" and phrase in refused.value.message


def test_a_request_that_names_its_user_is_logged_with_the_answer_s_id(tok: Tekkenizer) -> None:
    lines: list[str] = []
    endpoint = ChatEndpoint(tok, LengthLimits(256, 512), "nemo-test", supports_penalties=False, log=lines.append)
    for stream in (False, True):
        events = list(
            endpoint.respond(endpoint.prepare(body(user="alice-42", stream=stream)), [tok.encode("Hi")], lambda: None)
        )
        assert lines.pop() == f"{events[0]['id']} answers end user 'alice-42'"
    list(endpoint.respond(endpoint.prepare(body()), [tok.encode("Hi")], lambda: None))
    assert lines == []  # no user named, nothing logged


def test_min_tokens_top_level_or_nvext_reaches_the_engine(endpoint: ChatEndpoint) -> None:
    assert endpoint.prepare(body(min_tokens=5, max_tokens=20)).generation.min_tokens == 5
    assert endpoint.prepare(body(nvext={"min_tokens": 3})).generation.min_tokens == 3
    for fields, param in (
        ({"min_tokens": 5, "nvext": {"min_tokens": 6}}, "nvext.min_tokens"),
        ({"min_tokens": 30, "max_tokens": 20}, "min_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
    ):
        with pytest.raises(BadRequestError) as refused:
            endpoint.prepare(body(**fields))
        assert refused.value.param == param


def test_continuous_usage_stats_puts_the_usage_so_far_in_every_chunk(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    events, _ = run(endpoint, body(stream=True, stream_options=options), tok.encode("Hello there"))
    counts = [event["usage"]["completion_tokens"] for event in events]
    assert all("usage" in event for event in events) and counts == sorted(counts)
    assert counts[0] == 0 and counts[-1] == events[-1]["usage"]["completion_tokens"] > 0
    plain, _ = run(endpoint, body(stream=True), tok.encode("Hello there"))
    assert not any("usage" in event for event in plain)


def logged(ids: list[int], top: int = 0) -> list[tuple[list[int], LogOutputs]]:
    """One engine response per id, with the log probs (and logits, for top-N) the engine returns."""
    logits = np.zeros((1, 131072), dtype=np.float32)
    out = []
    for index, token in enumerate(ids):
        row = logits.copy()
        row[0, token] = 5.0
        row[0, 1000 + index] = 4.0  # a runner-up that differs per position
        out.append(([token], LogOutputs(log_probs=[-0.25 * (index + 1)], generation_logits=row if top else None)))
    return out


def test_logprobs_and_top_logprobs_whole_and_streamed(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    ids = tok.encode("Hi there")
    chat = endpoint.prepare(body(logprobs=True, top_logprobs=2))
    assert chat.generation.return_log_probs and chat.generation.return_generation_logits
    [completion] = list(endpoint.respond(chat, logged(ids, top=2), lambda: None))
    content = completion["choices"][0]["logprobs"]["content"]
    assert [entry["logprob"] for entry in content] == [-0.25 * (i + 1) for i in range(len(ids))]  # the engine's
    assert "".join(entry["token"] for entry in content) == "Hi there"
    assert [entry["top_logprobs"][1]["token"] for entry in content] == [
        tok.id_to_piece(1000 + i) for i in range(len(ids))
    ]
    assert all(bytes(entry["bytes"]) == tok.token_bytes(t) for entry, t in zip(content, ids, strict=True))
    streamed = list(endpoint.respond(endpoint.prepare(body(logprobs=True, stream=True)), logged(ids), lambda: None))
    entries = [
        e
        for event in streamed
        if event["choices"]
        for e in (event["choices"][0].get("logprobs") or {}).get("content", [])
    ]
    assert [entry["logprob"] for entry in entries] == [entry["logprob"] for entry in content]
    assert all(entry["top_logprobs"] == [] for entry in entries)


def test_logprobs_requests_that_cannot_be_served_are_refused(endpoint: ChatEndpoint, tok: Tekkenizer) -> None:
    no_logits = ChatEndpoint(tok, LengthLimits(256, 512), "nemo-test", supports_penalties=True, generation_logits=False)
    no_logits.prepare(body(logprobs=True))  # the chosen tokens' log probs need no gathered logits
    for target, fields, param in (
        (endpoint, {"top_logprobs": 2}, "top_logprobs"),
        (endpoint, {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        (no_logits, {"logprobs": True, "top_logprobs": 1}, "top_logprobs"),
    ):
        with pytest.raises(BadRequestError) as refused:
            target.prepare(body(**fields))
        assert refused.value.param == param
