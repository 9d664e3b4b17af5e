"""The sync client over a fake transport (no Triton): what each resource sends, what it returns, how errors
surface, and that closing a stream cancels its request. The sync client runs the async one on its loop thread,
so these cover both."""

from __future__ import annotations

import gc
import inspect
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from nemo_client import AsyncNemoClient, NemoClient, Stream
from nemo_client.transport import InputRefusedError
from nemo_client.types import Health
from nemo_protocol.errors import BadRequestError, NotFoundError, ServerError, UnavailableError
from tests.unit.client.fake_transport import (
    HANG,
    FakeTransport,
    chat_chunk,
    chat_completion,
    chat_response,
    error,
    text_response,
    tool_call,
)

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_PARAMETERS = {"served_model_name": "nemo-tiny", "max_seq_len": "1024", "max_input_len": "512"}


def answer(*bodies: dict[str, Any]) -> Any:
    return lambda inputs: [chat_response(body) for body in bodies]


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport(parameters={"chat": CHAT_PARAMETERS})


@pytest.fixture
def client(transport: FakeTransport) -> Iterator[NemoClient]:
    with NemoClient(timeout=60, transport=transport) as client:
        yield client


# ----- chat ----------------------------------------------------------------------------------------------------
def test_a_whole_chat_answer_is_a_chat_completion_of_the_request_the_chat_model_gets(
    client: NemoClient, transport: FakeTransport
) -> None:
    transport.handlers["chat"] = answer(chat_completion("Paris."))
    reply = client.chat.completions.create(messages=FRANCE, temperature=0, extra_body={"nvext": {"top_k": 2}})
    assert isinstance(reply, ChatCompletion) and reply.choices[0].message.content == "Paris."
    assert reply.usage is not None and reply.usage.total_tokens == 7
    [sent] = transport.sent
    assert sent.model == "chat" and sent.request_id
    assert sent.body == {"messages": FRANCE, "temperature": 0, "nvext": {"top_k": 2}}
    assert sent.deadline == pytest.approx(time.monotonic() + 60, abs=5)  # the client's timeout
    assert transport.finished == [sent.request_id] and transport.cancelled == []


def test_a_streamed_chat_answer_is_a_stream_of_chunks(client: NemoClient, transport: FakeTransport) -> None:
    transport.handlers["chat"] = answer(chat_chunk("Par"), chat_chunk("is."), chat_chunk("", finish="stop"))
    stream = client.chat.completions.create(messages=FRANCE, stream=True, timeout=5)
    assert isinstance(stream, Stream) and stream.request_id == transport.sent[0].request_id
    chunks = list(stream)
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "Paris."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert transport.sent[0].body["stream"] is True
    assert transport.sent[0].deadline == pytest.approx(time.monotonic() + 5, abs=2)  # the call's own timeout
    assert transport.cancelled == [] and list(stream) == []


def test_the_client_s_model_is_sent_unless_the_call_names_one(transport: FakeTransport) -> None:
    transport.handlers["chat"] = answer(chat_completion("Paris."))
    with NemoClient(model="nemo-tiny", transport=transport) as client:
        client.chat.completions.create(messages=FRANCE)
        client.chat.completions.create(messages=FRANCE, model="other")
    assert [sent.body["model"] for sent in transport.sent] == ["nemo-tiny", "other"]


def test_the_sync_client_serves_many_threads_at_once(client: NemoClient, transport: FakeTransport) -> None:
    transport.handlers["chat"] = lambda inputs: [chat_response(chat_completion(inputs["request"][0][-40:]))]
    questions = [[{"role": "user", "content": f"question {i}"}] for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda messages: client.chat.completions.create(messages=messages), questions))
    assert all(f"question {i}" in str(reply.choices[0].message.content) for i, reply in enumerate(replies))
    assert len({sent.request_id for sent in transport.sent}) == 16


# ----- errors ----------------------------------------------------------------------------------------------------
def test_the_chat_model_s_error_body_is_the_typed_error_naming_the_field(
    client: NemoClient, transport: FakeTransport
) -> None:
    transport.handlers["chat"] = answer(error("must be in [0, 2], got 3", param="temperature"))
    for stream in (False, True):
        with pytest.raises(BadRequestError) as refused:
            client.chat.completions.create(messages=FRANCE, temperature=3, stream=stream)  # type: ignore[call-overload]
        assert refused.value.param == "temperature" and refused.value.message == "must be in [0, 2], got 3"
    not_found = error("the model 'x' does not exist", param="model", error_type="not_found_error")
    transport.handlers["chat"] = answer(not_found)
    with pytest.raises(NotFoundError):
        client.chat.completions.create(messages=FRANCE, model="x")


def test_an_error_in_the_middle_of_a_stream_raises_there_and_releases_the_stream(
    client: NemoClient, transport: FakeTransport
) -> None:
    transport.handlers["chat"] = answer(chat_chunk("Par"), error("the engine failed", error_type="server_error"))
    stream = client.chat.completions.create(messages=FRANCE, stream=True)
    assert next(stream).choices[0].delta.content == "Par"
    with pytest.raises(ServerError, match="the engine failed"):
        next(stream)
    assert list(stream) == []  # closed: nothing more, and no second close


def test_transport_errors_reach_the_caller_as_they_are(transport: FakeTransport) -> None:
    transport.down = UnavailableError("Triton is unreachable")
    with NemoClient(transport=transport) as client:
        with pytest.raises(UnavailableError, match="unreachable"):
            client.chat.completions.create(messages=FRANCE)
        with pytest.raises(UnavailableError):
            client.completions.create(prompt="Hello")
        with pytest.raises(UnavailableError):
            client.models.list()
        assert client.health() == Health(live=False, ready=False, models={"chat": False, "ensemble": False})


def test_a_request_the_client_can_refuse_is_never_sent(client: NemoClient, transport: FakeTransport) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(messages=[{"role": "user", "content": "\ud800"}])
    assert refused.value.param == "messages[0].content"
    with pytest.raises(TypeError, match="unexpected argument"):
        client.chat.completions.create(messages=FRANCE, temprature=0.2)  # type: ignore[call-arg]
    with pytest.raises(BadRequestError) as refused:
        client.completions.create(prompt="Hello", n=17)
    assert refused.value.param == "n"
    assert transport.sent == []


def test_a_completion_the_ensemble_would_refuse_is_never_sent(client: NemoClient, transport: FakeTransport) -> None:
    for field, value in (("max_tokens", 0), ("top_p", 1.5), ("logprobs", 21)):
        with pytest.raises(BadRequestError) as refused:
            client.completions.create(prompt="Hello", **{field: value})  # type: ignore[call-overload]
        assert refused.value.param == field
    with pytest.raises(TypeError, match="unexpected argument"):
        client.completions.create(prompt="Hello", best_of=2)  # type: ignore[call-overload]
    assert transport.sent == []


@pytest.mark.parametrize("stream", [False, True])
def test_the_ensemble_s_refusal_of_an_input_names_the_field_it_carries(
    client: NemoClient, transport: FakeTransport, stream: bool
) -> None:
    reason = "the prompt is 3002 tokens; this deployment accepts at most 2048 (max_input_len)"
    transport.handlers["ensemble"] = lambda inputs: [InputRefusedError("text_input", reason)]
    with pytest.raises(BadRequestError) as refused:
        client.completions.create(prompt="Hello " * 3000, stream=stream)  # type: ignore[call-overload]
    assert (refused.value.param, refused.value.message) == ("prompt", reason)  # raised by create, streamed too
    transport.handlers["ensemble"] = lambda inputs: [InputRefusedError("bad_words", "no field travels in it")]
    with pytest.raises(InputRefusedError):  # a ServerError: not the caller's to fix
        client.completions.create(prompt="Hello", stream=stream)  # type: ignore[call-overload]


# ----- closing a stream --------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["close", "with", "garbage"])
def test_closing_a_stream_cancels_its_request(client: NemoClient, transport: FakeTransport, how: str) -> None:
    transport.handlers["chat"] = lambda inputs: [chat_response(chat_chunk("Par")), HANG]
    stream = client.chat.completions.create(messages=FRANCE, stream=True)
    request_id = stream.request_id
    if how == "close":
        assert next(stream).choices[0].delta.content == "Par"
        stream.close()
        stream.close()  # twice is harmless
        assert list(stream) == []
    elif how == "with":
        with stream:
            next(stream)
    else:
        del stream
        gc.collect()
        deadline = time.monotonic() + 5  # the finalizer schedules the close on the loop; it does not wait
        while not transport.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
    assert transport.cancelled == [request_id]


def test_a_streamed_completion_closed_early_is_cancelled(client: NemoClient, transport: FakeTransport) -> None:
    transport.handlers["ensemble"] = lambda inputs: [text_response("Hel", prompt_tokens=2, generated=1), HANG]
    with client.completions.create(prompt="Hi", stream=True) as stream:
        assert next(stream).choices[0].text == "Hel"
    assert transport.cancelled == [transport.sent[0].request_id]


# ----- completions, models, health ---------------------------------------------------------------------------
def test_a_whole_completion_from_the_ensemble(client: NemoClient, transport: FakeTransport) -> None:
    transport.handlers["ensemble"] = lambda inputs: [
        text_response(" world", prompt_tokens=2, generated=1),
        text_response(", and more. END", prompt_tokens=2, generated=6, finish="length"),
    ]
    reply = client.completions.create(prompt="Hello", max_tokens=6, temperature=0.5, stop=[" END"], seed=3)
    assert isinstance(reply, Completion) and reply.object == "text_completion"
    [choice] = reply.choices
    assert (choice.text, choice.finish_reason) == (" world, and more.", "stop")  # cut before the stop string
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 6)
    [sent] = transport.sent
    assert sent.model == "ensemble"
    assert sent.inputs["text_input"].tolist() == [[b"Hello"]] and sent.inputs["max_tokens"].item() == 6
    assert sent.inputs["top_p"].item() == 1.0 and sent.inputs["seed"].item() == 3
    assert sent.inputs["stop_words"].tolist() == [[b" END"]]


def test_a_streamed_completion_from_the_ensemble(client: NemoClient, transport: FakeTransport) -> None:
    transport.handlers["ensemble"] = lambda inputs: [
        text_response(" wor", prompt_tokens=2, generated=1),
        text_response("ld", prompt_tokens=2, generated=2, finish="length"),
    ]
    stream = client.completions.create(prompt="Hello", max_tokens=2, stream=True)
    pieces = list(stream)
    assert [(p.choices[0].text, p.choices[0].finish_reason) for p in pieces] == [(" wor", None), ("ld", "length")]
    assert pieces[-1].usage is not None and pieces[-1].usage.completion_tokens == 2
    assert transport.sent[0].inputs["stream"].item() is True and transport.cancelled == []


def test_prompts_times_n_are_one_ensemble_request_each_seed_plus_i(
    client: NemoClient, transport: FakeTransport
) -> None:
    transport.handlers["ensemble"] = lambda inputs: [
        text_response(f" {int(inputs['seed'].item())}", prompt_tokens=len(inputs["input_ids"][0]), generated=1)
    ]
    reply = client.completions.create(prompt=[[1, 2], [1, 2, 3]], n=2, seed=10)
    assert [choice.text for choice in reply.choices] == [" 10", " 11", " 10", " 11"]
    assert [choice.index for choice in reply.choices] == [0, 1, 2, 3]
    assert reply.usage is not None and reply.usage.prompt_tokens == 2 + 3  # each prompt counted once
    assert reply.usage.completion_tokens == 4
    assert [sent.inputs["input_ids"].tolist() for sent in transport.sent] == [[[1, 2]]] * 2 + [[[1, 2, 3]]] * 2


def test_models_list_the_served_chat_model(client: NemoClient) -> None:
    [model] = client.models.list()
    assert isinstance(model, Model)
    assert (model.id, model.owned_by, model.model_extra) == ("nemo-tiny", "mistralai", {"max_model_len": 1024})


def test_health_reports_the_server_and_each_model(transport: FakeTransport) -> None:
    with NemoClient(transport=transport) as client:
        assert client.health() == Health(live=True, ready=True, models={"chat": True, "ensemble": True})
        transport.not_ready = {"ensemble"}
        assert client.health() == Health(live=True, ready=False, models={"chat": True, "ensemble": False})
    assert transport.closed


# ----- tools, options ----------------------------------------------------------------------------------------
def test_run_tools_runs_plain_functions_between_model_calls(client: NemoClient, transport: FakeTransport) -> None:
    def get_weather(city: str) -> dict[str, Any]:
        """Current weather in a city."""
        return {"city": city, "sky": "sunny"}

    replies = iter([tool_call("get_weather", {"city": "Paris"}), chat_completion("Sunny in Paris.")])
    transport.handlers["chat"] = lambda inputs: [chat_response(next(replies))]
    run = client.chat.run_tools(messages=FRANCE, tools={"get_weather": get_weather}, temperature=0)
    assert run.content == "Sunny in Paris." and [call.function.name for call in run.tool_calls] == ["get_weather"]
    result = '{"city": "Paris", "sky": "sunny"}'
    assert run.messages[-1] == {"role": "tool", "tool_call_id": "call-1", "content": result}
    first, second = (sent.body for sent in transport.sent)
    assert first["tools"][0]["function"]["name"] == "get_weather" and first["temperature"] == 0
    assert second["messages"] == run.messages


def test_the_sync_and_async_clients_take_the_same_options() -> None:
    sync, async_ = inspect.signature(NemoClient), inspect.signature(AsyncNemoClient)
    assert list(sync.parameters.values()) == list(async_.parameters.values())
    assert all(p.annotation != "Any" for p in sync.parameters.values())
