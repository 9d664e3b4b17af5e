"""The ``ensemble`` tensors of a completion request: a value no tensor of its type can hold is a 400 naming it
(it used to escape as numpy's OverflowError, a 500 through the gateway)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nemo_chat_core.chat_request import ChatRequest
from nemo_chat_core.completion_request import CompletionRequest
from nemo_protocol.errors import BadRequestError


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
