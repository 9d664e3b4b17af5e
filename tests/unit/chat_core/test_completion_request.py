"""The ``/v1/completions`` request (``nemo_chat_core.completion_request``): the ``ensemble`` tensors it becomes; a
value no tensor of its type can hold is a 400 naming it (it used to escape as numpy's OverflowError, a 500 through
the gateway); the stop rule it shares with chat; and what the ensemble refuses, refused alike before sending."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nemo_chat_core import word_lists
from nemo_chat_core.chat_request import ChatRequest
from nemo_chat_core.completion_request import CompletionRequest, refused_field
from nemo_protocol.errors import BadRequestError
from nemo_serving.ensemble import TextRequest


def completion_inputs(body: dict[str, Any]) -> dict[str, np.ndarray]:
    """The ensemble inputs of a one-choice request."""
    [choice] = CompletionRequest.from_body(body).ensemble_requests()
    return choice.inputs


def test_a_plain_request_becomes_typed_tensors() -> None:
    inputs = completion_inputs({"prompt": "héllo", "max_tokens": 4, "top_k": 2**31 - 1, "seed": 2**64 - 1, "stop": "x"})
    assert inputs["text_input"].tolist() == [["héllo".encode()]]
    assert inputs["top_k"].dtype == np.int32 and inputs["top_k"].item() == 2**31 - 1
    assert inputs["seed"].dtype == np.uint64 and inputs["stop_words"].tolist() == [[b"x"]]


def test_temperature_alone_samples_with_openai_s_top_p_default() -> None:
    sampled = completion_inputs({"prompt": "a", "temperature": 0.8})
    assert sampled["top_p"].item() == 1.0  # TensorRT-LLM's top_k 0 + top_p 0 would be greedy
    assert "top_p" not in completion_inputs({"prompt": "a"})
    assert completion_inputs({"prompt": "a", "temperature": 0.8, "top_p": 0.5})["top_p"].item() == 0.5
    assert "top_p" not in completion_inputs({"prompt": "a", "temperature": 0.8, "top_k": 5})


def test_token_ids_echo_logprobs_and_the_vllm_extensions_become_ensemble_inputs() -> None:
    inputs = completion_inputs(
        {"prompt": [1, 22177], "echo": True, "logprobs": 1, "ignore_eos": True, "min_tokens": 3, "max_tokens": 1}
    )
    assert inputs["input_ids"].tolist() == [[1, 22177]] and "text_input" not in inputs
    assert inputs["exclude_input_in_output"].item() is False
    assert inputs["logprobs"].item() == 1 and inputs["min_tokens"].item() == 3
    assert inputs["end_id"].item() == -1  # ignore_eos: never end at the end id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("echo", "yes"),
        ("ignore_eos", 1),
        ("logprobs", 1.5),
        ("prompt", [1, "a"]),
        ("prompt", [[1], "a"]),
        ("prompt", []),
        ("prompt", [-1]),
        ("prompt", ["a"] * 17),
        ("top_k", 2**31),
        ("max_tokens", 2**40),
        ("max_tokens", 1.5),
        ("seed", -1),
        ("seed", 2**64),
        ("temperature", 1e39),
        ("temperature", float("nan")),
        ("top_p", float("inf")),
        ("temperature", "hot"),
        ("top_k", True),
        ("prompt", "a\ud800"),
        ("stop", ["ok", "\udfff"]),
        ("stop", [1]),
    ],
)
def test_values_no_tensor_can_hold_are_400_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(BadRequestError) as caught:
        completion_inputs({"prompt": "a", field: value})
    assert caught.value.param == field


def test_echo_is_served_on_whole_answers_only() -> None:
    with pytest.raises(BadRequestError) as caught:
        completion_inputs({"prompt": "a", "echo": True, "stream": True})
    assert caught.value.param == "echo"


@pytest.mark.parametrize("stop", ["", ["ok", ""], ["a", "b", "c", "d", "e"], [1], 3, {"x": 1}])
def test_chat_and_completions_refuse_the_same_stop_values_alike(stop: object) -> None:
    refusals = []
    for parse, body in (
        (ChatRequest.from_body, {"messages": [{"role": "user", "content": "hi"}], "stop": stop}),
        (CompletionRequest.from_body, {"prompt": "hi", "stop": stop}),
    ):
        with pytest.raises(BadRequestError) as caught:
            parse(body)
        refusals.append((caught.value.param, caught.value.message))
    assert refusals[0] == refusals[1] and refusals[0][0] == "stop"


@pytest.mark.parametrize("stop", [None, [], "END", ["a", "b", "c", "d"]])
def test_chat_and_completions_take_the_same_stop_values(stop: object) -> None:
    chat = ChatRequest.from_body({"messages": [{"role": "user", "content": "hi"}], "stop": stop})
    assert CompletionRequest.from_body({"prompt": "hi", "stop": stop}).stop == chat.stop


# ----- the ensemble's rules: refused before sending, with the words and the field the ensemble's refusal gives --------
SERVED_RANGES = [
    ("max_tokens", 0),
    ("max_tokens", -3),
    ("logprobs", 21),
    ("logprobs", -1),
    ("temperature", -0.5),
    ("top_k", -1),
    ("top_p", 1.5),
    ("top_p", -0.25),
    ("min_tokens", -1),
]
TENSOR_TYPES = {"max_tokens": np.int32, "logprobs": np.int32, "top_k": np.int32, "min_tokens": np.int32}


def ensemble_refusal(field: str, value: float) -> BadRequestError:
    """What the ``ensemble`` model answers when a stock client sends ``field`` as its tensor, as the caller's error."""
    inputs = {
        "text_input": np.array([[b"hi"]], dtype=object),
        "max_tokens": np.array([[4]], dtype=np.int32),
        field: np.array([[value]], dtype=TENSOR_TYPES.get(field, np.float32)),
    }
    preprocessed = {
        "input_ids": np.array([[1, 22177]], dtype=np.int32),
        "input_lengths": np.array([[2]], dtype=np.int32),
        "request_output_len": np.array([[4]], dtype=np.int32),
        "end_id": np.array([[2]], dtype=np.int32),
        "pad_id": np.array([[11]], dtype=np.int32),
        "stop_words_list": word_lists.word_list([]),
        "bad_words_list": word_lists.word_list([]),
    }
    with pytest.raises(BadRequestError) as refused:
        TextRequest.from_inputs(inputs.get).generation(preprocessed)
    assert refused.value.param is not None
    error = refused_field(refused.value.param, refused.value.message)
    assert error is not None, f"the ensemble refused {refused.value.param}, which carries no request field"
    return error


@pytest.mark.parametrize(("field", "value"), SERVED_RANGES)
def test_what_the_ensemble_refuses_is_refused_before_sending_naming_the_same_field(field: str, value: float) -> None:
    with pytest.raises(BadRequestError) as caught:
        CompletionRequest.from_body({"prompt": "hi", "max_tokens": 4, field: value})
    server = ensemble_refusal(field, value)
    assert (caught.value.param, caught.value.message) == (server.param, server.message) == (field, server.message)


def test_echo_may_ask_for_the_prompt_alone_as_the_ensemble_serves_it() -> None:
    [choice] = CompletionRequest.from_body({"prompt": "hi", "max_tokens": 0, "echo": True}).ensemble_requests()
    assert choice.inputs["max_tokens"].item() == 0 and choice.echo == "hi"


@pytest.mark.parametrize(
    ("tensor", "field"),
    [("text_input", "prompt"), ("input_ids", "prompt"), ("stop_words", "stop"), ("exclude_input_in_output", "echo")],
)
def test_a_refusal_only_the_deployment_can_make_names_the_field_its_tensor_carries(tensor: str, field: str) -> None:
    error = refused_field(tensor, "the prompt is 3002 tokens; this deployment accepts at most 2048 (max_input_len)")
    assert error is not None and error.param == field and error.message.startswith("the prompt is")
    assert refused_field("bad_words", "not a field of a completion request") is None
