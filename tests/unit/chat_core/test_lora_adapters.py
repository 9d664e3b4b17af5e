"""The LoRA adapter source: PEFT adapters read, checked against the base model and converted into TensorRT-LLM's
layout (tests/data/upstream/tensorrt_llm_lora.json); bad adapters refused by name while the others serve; adds and
removals seen without a restart."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from nemo_chat_core import lora
from nemo_chat_core.engine_tensors import GenerationRequest, LoraInputs
from nemo_chat_core.lora import (
    HF_MODULES,
    MODULE_IDS,
    AdapterError,
    AdapterRegistry,
    BaseShapes,
    read_adapter,
    task_id_of,
)
from nemo_protocol.errors import NotFoundError
from tests.manual_clock import ManualClock

UPSTREAM = json.loads((Path(__file__).parents[2] / "data" / "upstream" / "tensorrt_llm_lora.json").read_text())


@pytest.fixture(scope="module")
def base(trained_model_dir: Path) -> BaseShapes:
    return BaseShapes.from_config(json.loads((trained_model_dir / "config.json").read_text()))


@pytest.fixture()
def source(tmp_path: Path, lora_source_dir: Path) -> Path:
    shutil.copytree(lora_source_dir / "tokyo", tmp_path / "tokyo")
    return tmp_path


def edit_config(adapter: Path, **changes: Any) -> None:
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(adapter: Path, change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
    path = adapter / "adapter_model.safetensors"
    save_file(change(load_file(str(path))), str(path))


def test_module_ids_and_names_are_tensorrt_llms(base: BaseShapes) -> None:
    assert {name: MODULE_IDS[name] for name in UPSTREAM["module_ids_used"]} == UPSTREAM["module_ids_used"]
    assert UPSTREAM["hf_modules_to_trtllm_modules"] == HF_MODULES


def test_the_layout_is_the_converters(source: Path, base: BaseShapes) -> None:
    """Each row: lora_A [r, in] flattened, then lora_B [out, r] times alpha / r flattened, padded; config rows
    (module id, layer, r)."""
    adapter = read_adapter(source / "tokyo", base, 64)
    tensors = load_file(str(source / "tokyo" / "adapter_model.safetensors"))
    peft = json.loads((source / "tokyo" / "adapter_config.json").read_text())
    scale = peft["lora_alpha"] / peft["r"]
    row = adapter.config.tolist().index([MODULE_IDS["mlp_4h_to_h"], 1, 8])
    down = tensors["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    up = tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    expected = np.concatenate([down.ravel(), (up * scale).ravel()]).astype(np.float16)
    np.testing.assert_array_equal(adapter.weights[row, : expected.size], expected)
    assert not adapter.weights[row, expected.size :].any()
    assert adapter.weights.dtype == np.float16 and adapter.config.dtype == np.int32
    assert adapter.weights.shape[0] == adapter.config.shape[0] == 2 * len(HF_MODULES)
    inputs = GenerationRequest([1, 2], 4, lora=LoraInputs(adapter.task_id, adapter.weights, adapter.config)).to_inputs()
    for name, spec in UPSTREAM["request_inputs"].items():
        assert inputs[name].dtype == np.dtype(spec["numpy_dtype"]), name
        assert inputs[name].ndim == len(spec["dims"]) + 1, name  # plus the batch dimension
    parsed = GenerationRequest.from_inputs(inputs.get).lora
    assert parsed is not None and parsed.task_id == adapter.task_id


def test_the_task_id_follows_name_and_contents(source: Path, base: BaseShapes) -> None:
    first = read_adapter(source / "tokyo", base, 64).task_id
    assert read_adapter(source / "tokyo", base, 64).task_id == first
    edit_config(source / "tokyo", lora_alpha=32)
    assert read_adapter(source / "tokyo", base, 64).task_id != first  # new weights never served under the old id
    assert 0 <= first < 2**63 and task_id_of("a") != task_id_of("b")


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda a: (a / "adapter_model.safetensors").unlink(), "adapter_model.safetensors is missing"),
        (lambda a: (a / "adapter_config.json").unlink(), "adapter_config.json is missing"),
        (lambda a: (a / "adapter_model.safetensors").write_bytes(b"\x00" * 7), "not a readable safetensors file"),
        (lambda a: (a / "adapter_config.json").write_text("{r: 8"), "not valid JSON"),
        (lambda a: edit_config(a, r=128), "rank 128 is above this deployment's maximum LoRA rank 64"),
        (lambda a: edit_config(a, target_modules=["q_proj", "lm_head"]), "target modules ['lm_head'] are not served"),
        (lambda a: edit_config(a, use_dora=True), "use_dora=True is not served"),
        (
            lambda a: edit_tensors(
                a,
                lambda t: {
                    k: np.zeros((v.shape[0], 2 * v.shape[1]), v.dtype) if "lora_A" in k else v for k, v in t.items()
                },
            ),
            "an adapter trained for another base model",
        ),
        (
            lambda a: edit_tensors(a, lambda t: {k.replace("layers.1.", "layers.5."): v for k, v in t.items()}),
            "is for layer 5; the base model has 2 layers",
        ),
        (
            lambda a: edit_tensors(
                a, lambda t: {**t, "base_model.model.lm_head.lora_B.weight": np.zeros((1000, 8), np.float32)}
            ),
            "not the base model's vocabulary 131072",
        ),
        (
            lambda a: edit_tensors(a, lambda t: {k: v for k, v in t.items() if "q_proj.lora_B" not in k}),
            "attn_q has lora_B missing",
        ),
    ],
)
def test_a_bad_adapter_is_refused_by_name_and_the_others_keep_serving(
    source: Path, lora_source_dir: Path, base: BaseShapes, spoil: Callable[[Path], None], problem: str
) -> None:
    shutil.copytree(source / "tokyo", source / "bad")
    spoil(source / "bad")
    with pytest.raises(AdapterError) as refused:
        read_adapter(source / "bad", base, 64)
    assert str(refused.value).startswith("adapter 'bad': ") and problem in str(refused.value)
    registry = AdapterRegistry(source, base, 64, rescan_interval_s=0)
    assert registry.names() == ["tokyo"] and problem in registry.refused()["bad"]
    with pytest.raises(NotFoundError) as not_found:
        registry.resolve("bad", "base")
    assert problem in not_found.value.message and "'tokyo'" in not_found.value.message
    assert registry.resolve("tokyo", "base") is not None


def test_adds_and_removals_are_seen_without_a_restart(
    source: Path, lora_source_dir: Path, base: BaseShapes, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    monkeypatch.setattr(lora, "time", clock)
    registry = AdapterRegistry(source, base, 64, rescan_interval_s=0.2)
    assert registry.names() == ["tokyo"]
    shutil.copytree(lora_source_dir / "pirate", source / "pirate")
    clock.now += 0.15
    assert registry.names() == ["tokyo"]  # not before the rescan interval
    clock.now += 0.1
    assert registry.names() == ["pirate", "tokyo"]
    shutil.rmtree(source / "tokyo")
    clock.now += 0.25
    assert registry.names() == ["pirate"]
    with pytest.raises(NotFoundError, match="'base', 'pirate'"):
        registry.resolve("tokyo", "base")
    assert registry.resolve(None, "base") is None and registry.resolve("base", "base") is None
