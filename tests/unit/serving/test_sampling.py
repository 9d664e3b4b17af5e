"""One sampling type for the `chat`, `ensemble` and `tensorrt_llm` requests, and the tensors it travels in."""

from __future__ import annotations

import numpy as np
import pytest

from nemo_chat_core.chat_request import ChatRequest
from nemo_chat_core.engine_tensors import GenerationRequest
from nemo_chat_core.sampling import Sampling
from nemo_protocol.errors import BadRequestError
from nemo_serving.ensemble import TextRequest
from tests.unit.serving.ensemble_inputs import preprocessing_outputs

SEEDED = Sampling(temperature=0.7, top_k=40, top_p=0.9, seed=2**64 - 1, repetition_penalty=1.1)


def test_defaults_are_tensorrt_llm_s_greedy_and_neutral() -> None:
    assert Sampling().greedy and not SEEDED.greedy
    assert Sampling(temperature=1.5, top_k=1).greedy and Sampling(temperature=0, top_p=0.5).greedy
    assert "seed" not in Sampling().to_inputs()


def test_generation_tensors_round_trip() -> None:
    request = GenerationRequest(input_ids=[1, 2, 3], max_new_tokens=4, sampling=SEEDED, min_tokens=2)
    tensors = request.to_inputs()
    assert tensors["seed"].dtype == np.uint64 and tensors["runtime_top_k"].tolist() == [[40]]
    back = GenerationRequest.from_inputs(tensors.get)
    assert back.sampling == Sampling(
        temperature=float(np.float32(0.7)),
        top_k=40,
        top_p=float(np.float32(0.9)),
        seed=2**64 - 1,
        repetition_penalty=float(np.float32(1.1)),
    )
    assert back.min_tokens == 2 and back.input_ids == [1, 2, 3]


def test_the_ensemble_reads_top_k_and_top_p_under_its_own_names() -> None:
    tensors = {
        "text_input": np.array([[b"hi"]], dtype=object),
        "max_tokens": np.array([[4]], dtype=np.int32),
        "top_k": np.array([[40]], dtype=np.int32),
        "top_p": np.array([[0.5]], dtype=np.float32),
        "seed": np.array([[7]], dtype=np.uint64),
    }
    text = TextRequest.from_inputs(tensors.get)
    assert text.sampling == Sampling(top_k=40, top_p=0.5, seed=7)
    preprocessed = preprocessing_outputs()
    assert text.generation(preprocessed).sampling is text.sampling


def test_a_chat_request_carries_openai_s_defaults() -> None:
    request = ChatRequest.from_body({"messages": [], "seed": -1, "nvext": {"top_k": 5}})
    assert request.sampling == Sampling(top_p=1.0, top_k=5, seed=2**64 - 1)


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"temperature": -0.1}, "temperature"), ({"top_k": -1}, "runtime_top_k"), ({"top_p": 1.5}, "runtime_top_p")],
)
def test_out_of_range_values_name_the_tensor(fields: dict[str, float], param: str) -> None:
    with pytest.raises(BadRequestError, match=rf"^{param}: must be") as caught:
        Sampling(**fields)  # type: ignore[arg-type]
    assert caught.value.param == param


@pytest.mark.parametrize("temperature", [1e-40, 1e-6, 0.0])
def test_a_vanishing_temperature_is_greedy_and_sent_as_zero(temperature: float) -> None:
    request = ChatRequest.from_body({"messages": [], "temperature": temperature})
    assert request.sampling.greedy and request.sampling.temperature == 0.0
    assert Sampling(temperature=1e-40, top_p=0.9).greedy, "the engine's side holds the same bound"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"nvext": {"top_k": 2**31}}, "nvext.top_k"),
        ({"nvext": {"top_k": 2**63}}, "nvext.top_k"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": float("nan")}, "top_p"),
        ({"presence_penalty": -float("inf")}, "presence_penalty"),
        ({"stream": True, "stream_options": [None, None]}, "stream_options"),
        ({"stream": True, "stream_options": "x"}, "stream_options"),
    ],
)
def test_values_beyond_what_the_engine_takes_are_400(body: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        ChatRequest.from_body({"messages": [], **body})
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ('{"messages": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper"),
        ('{"messages": [{"role": "user", "content": "\\ud800"}]}', "lone surrogate"),
        ('{"messages": [], "temperature": NaN}', "NaN is not a JSON number"),
    ],
)
def test_hostile_bodies_over_grpc_are_400(raw: str, words: str) -> None:
    with pytest.raises(BadRequestError, match=words):
        ChatRequest.parse(raw)


@pytest.mark.parametrize("name", ["temperature", "runtime_top_p", "repetition_penalty"])
def test_non_finite_tensor_values_are_refused_naming_the_tensor(name: str) -> None:
    tensors = {name: np.array([[np.nan]], dtype=np.float32)}
    with pytest.raises(BadRequestError) as caught:
        Sampling.from_inputs(tensors.get)
    assert caught.value.param == name


@pytest.mark.parametrize(
    ("name", "value", "dtype"), [("top_k", -1, np.int32), ("top_p", 1.5, np.float32), ("top_p", np.nan, np.float32)]
)
def test_the_ensemble_s_errors_name_its_own_tensors(name: str, value: float, dtype: type) -> None:
    tensors = {
        "text_input": np.array([[b"hi"]], dtype=object),
        "max_tokens": np.array([[4]], dtype=np.int32),
        name: np.array([[value]], dtype=dtype),
    }
    with pytest.raises(BadRequestError) as caught:
        TextRequest.from_inputs(tensors.get)
    assert caught.value.param == name and str(caught.value).startswith(f"{name}: ")
    with pytest.raises(BadRequestError) as caught:  # the same values sent to tensorrt_llm name its tensors
        Sampling.from_inputs({f"runtime_{name}": tensors[name]}.get)
    assert caught.value.param == f"runtime_{name}"
