"""The `ensemble`'s LoRA inputs: an adapter by `lora_name` (OpenAI's `model`) or by the stock `lora_task_id`, the
request it sends to `tensorrt_llm`, and the one it sends again when the engine does not hold the adapter."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nemo_chat_core.engine_tensors import GenerationRequest, LoraInputs
from nemo_chat_core.lora import AdapterRegistry, BaseShapes, LoraAdapter
from nemo_protocol.errors import BadRequestError, NotFoundError
from nemo_serving.ensemble import Adapted, TextRequest

BASE_NAME = "nemo"
GENERATION = GenerationRequest(input_ids=[1, 2, 3], max_new_tokens=4)


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path, lora_source_dir: Path
) -> AdapterRegistry:
    source = tmp_path_factory.mktemp("adapters")
    shutil.copytree(lora_source_dir / "tokyo", source / "tokyo")
    base = BaseShapes.from_config(json.loads((trained_model_dir / "config.json").read_text()))
    return AdapterRegistry(source, base, 64)


def request(**inputs: Any) -> TextRequest:
    tensors = {"text_input": np.array([[b"The capital"]], dtype=object), "max_tokens": np.array([[4]], np.int32)}
    tensors.update(inputs)
    return TextRequest.from_inputs(tensors.get)


def parts(adapted: Adapted) -> tuple[GenerationRequest, GenerationRequest | None, LoraAdapter | None]:
    return adapted.generation, adapted.resend, adapted.adapter


def name(text: str) -> np.ndarray:
    return np.array([[text.encode()]], dtype=object)


def test_an_adapter_by_name_goes_by_task_id_and_again_with_its_weights(registry: AdapterRegistry) -> None:
    tokyo = registry.get("tokyo")
    assert tokyo is not None
    sent, resend, adapter = parts(request(lora_name=name("tokyo")).adapted(GENERATION, registry, BASE_NAME))
    assert adapter == tokyo
    assert sent.lora is not None and (sent.lora.task_id, sent.lora.weights) == (tokyo.task_id, None)
    assert resend is not None and resend.lora is not None and resend.lora.task_id == tokyo.task_id
    assert np.array_equal(resend.lora.weights, tokyo.weights) and np.array_equal(resend.lora.config, tokyo.config)
    assert (resend.input_ids, resend.max_new_tokens) == (GENERATION.input_ids, GENERATION.max_new_tokens)


@pytest.mark.parametrize("adapters", ["registry", None])
def test_the_served_name_or_none_is_the_base_model(adapters: str | None, registry: AdapterRegistry) -> None:
    served = registry if adapters else None
    for req in (request(lora_name=name(BASE_NAME)), request()):
        assert req.adapted(GENERATION, served, BASE_NAME) == Adapted(GENERATION, None, None)


def test_an_unknown_name_is_a_404_naming_the_tensor_and_the_served_names(registry: AdapterRegistry) -> None:
    with pytest.raises(NotFoundError) as refused:
        request(lora_name=name("gpt-4o")).adapted(GENERATION, registry, BASE_NAME)
    assert refused.value.param == "lora_name" and "serves 'nemo', 'tokyo'" in refused.value.message
    with pytest.raises(NotFoundError) as unserved:
        request(lora_name=name("tokyo")).adapted(GENERATION, None, BASE_NAME)
    assert unserved.value.param == "lora_name" and "this deployment serves 'nemo'" in unserved.value.message


def test_the_stock_inputs_go_on_as_they_are_and_a_task_of_the_source_is_resent(registry: AdapterRegistry) -> None:
    tokyo = registry.get("tokyo")
    assert tokyo is not None
    weights, config = tokyo.weights.astype(np.float16)[None], tokyo.config.astype(np.int32)[None]
    task = np.array([[tokyo.task_id]], dtype=np.uint64)
    sent, resend, adapter = parts(
        request(lora_task_id=task, lora_weights=weights, lora_config=config).adapted(GENERATION, registry, BASE_NAME)
    )
    assert sent.lora is not None and np.array_equal(sent.lora.weights, weights[0]) and resend is None
    assert adapter == tokyo  # a task of the deployment's source: named in the LoRA metrics
    sent, resend, adapter = parts(request(lora_task_id=task).adapted(GENERATION, registry, BASE_NAME))
    assert sent.lora is not None and sent.lora.weights is None and adapter == tokyo
    assert resend is not None and resend.lora is not None and np.array_equal(resend.lora.weights, tokyo.weights)
    other = np.array([[tokyo.task_id + 1]], dtype=np.uint64)  # the client's own id: no weights known here
    assert request(lora_task_id=other).adapted(GENERATION, registry, BASE_NAME) == Adapted(
        replace(GENERATION, lora=LoraInputs(tokyo.task_id + 1)), None, None
    )


def test_an_adapter_by_name_and_by_task_id_is_refused() -> None:
    with pytest.raises(BadRequestError, match="by lora_name or by lora_task_id, not both") as refused:
        request(lora_name=name("tokyo"), lora_task_id=np.array([[7]], dtype=np.uint64))
    assert refused.value.param == "lora_name"
