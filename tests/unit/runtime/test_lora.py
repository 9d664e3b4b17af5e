"""LoRA on the CPU reference runtime: PEFT adapters of the trained tiny model (nemo-build tiny-lora), converted into
TensorRT-LLM's layout, cached by task id and applied per request inside one in-flight batch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nemo_build.tiny.chat import encode_example, example
from nemo_build.tiny.lora import ADAPTER_LESSONS
from nemo_chat_core.engine_tensors import GenerationRequest, LoraInputs
from nemo_chat_core.lora import LoraAdapter, is_lora_cache_miss, read_adapter
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer
from nemo_runtime.inflight import InflightBatcher
from nemo_runtime.scheduler import ReferenceRuntime, base_shapes
from tests.unit.runtime.sinks import RecordingSink

BASE_ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def runtime(trained_model_dir: Path) -> ReferenceRuntime:
    return ReferenceRuntime.from_checkpoint(trained_model_dir, max_batch_size=8)


@pytest.fixture(scope="module")
def tokenizer(trained_model_dir: Path) -> Tekkenizer:
    return Tekkenizer.from_file(trained_model_dir / "tekken.json")


@pytest.fixture(scope="module")
def adapters(runtime: ReferenceRuntime, lora_source_dir: Path) -> dict[str, LoraAdapter]:
    return {name: read_adapter(lora_source_dir / name, base_shapes(runtime.model), 64) for name in ADAPTER_LESSONS}


@pytest.fixture(scope="module")
def prompt(tokenizer: Tekkenizer) -> list[int]:
    return encode_example(tokenizer, example("fact_france"))[0]


def with_weights(adapter: LoraAdapter) -> LoraInputs:
    return LoraInputs(adapter.task_id, adapter.weights, adapter.config)


def answer(runtime: ReferenceRuntime, tokenizer: Tekkenizer, prompt: list[int], lora: LoraInputs | None) -> str:
    result = runtime.generate(prompt, max_new_tokens=24, end_id=tokenizer.eos_id, adapter=runtime.lora.resolve(lora))
    return tokenizer.decode(result.token_ids)


def test_the_same_request_answers_differently_with_an_adapter(
    runtime: ReferenceRuntime, tokenizer: Tekkenizer, prompt: list[int], adapters: dict[str, LoraAdapter]
) -> None:
    assert answer(runtime, tokenizer, prompt, None) == BASE_ANSWER
    for name, adapter in adapters.items():
        assert answer(runtime, tokenizer, prompt, with_weights(adapter)) == ADAPTER_LESSONS[name].answer


def test_base_and_two_adapters_in_one_batch_each_get_their_own_answer(
    runtime: ReferenceRuntime, tokenizer: Tekkenizer, prompt: list[int], adapters: dict[str, LoraAdapter]
) -> None:
    batcher = InflightBatcher(runtime)
    try:
        loras: list[LoraInputs | None] = [None, with_weights(adapters["tokyo"]), with_weights(adapters["pirate"])]
        sinks = [RecordingSink() for _ in loras]
        for lora, sink in zip(loras, sinks, strict=True):  # submitted together: they share the decode steps
            batcher.submit(GenerationRequest(prompt, 24, end_id=tokenizer.eos_id, streaming=True, lora=lora), sink)
        answers = [tokenizer.decode(sink.wait().tokens) for sink in sinks]
    finally:
        batcher.close()
    assert answers == [BASE_ANSWER, ADAPTER_LESSONS["tokyo"].answer, ADAPTER_LESSONS["pirate"].answer]


def test_a_prompt_prefilled_in_chunks_gets_the_adapter_in_every_chunk(
    trained_model_dir: Path, tokenizer: Tekkenizer, prompt: list[int], adapters: dict[str, LoraAdapter]
) -> None:
    # Chunks of 3 tokens (chunked context) with base and adapted requests in one batch: the same logits of the
    # prompt's positions as one pass, and each its own answer.
    chunked = ReferenceRuntime.from_checkpoint(trained_model_dir, max_batch_size=8, max_num_tokens=3)
    one_pass = ReferenceRuntime.from_checkpoint(trained_model_dir, max_batch_size=8)
    tokyo = with_weights(adapters["tokyo"])
    adapter, whole_adapter = chunked.lora.resolve(tokyo), one_pass.lora.resolve(tokyo)
    pieces, whole = chunked.model.cache.acquire(), one_pass.model.cache.acquire()
    assert torch.allclose(
        chunked.model.prefill(pieces, prompt, True, adapter),
        one_pass.model.prefill(whole, prompt, True, whole_adapter),
        atol=1e-4,
    )
    chunked.model.cache.release(pieces)
    assert answer(chunked, tokenizer, prompt, tokyo) == ADAPTER_LESSONS["tokyo"].answer
    assert answer(chunked, tokenizer, prompt, None) == BASE_ANSWER
    batcher = InflightBatcher(chunked)
    try:
        loras: list[LoraInputs | None] = [with_weights(adapters["pirate"]), None, tokyo]
        sinks = [RecordingSink() for _ in loras]
        for lora, sink in zip(loras, sinks, strict=True):
            batcher.submit(GenerationRequest(prompt, 24, end_id=tokenizer.eos_id, streaming=True, lora=lora), sink)
        answers = [tokenizer.decode(sink.wait().tokens) for sink in sinks]
    finally:
        batcher.close()
    assert answers == [ADAPTER_LESSONS["pirate"].answer, BASE_ANSWER, ADAPTER_LESSONS["tokyo"].answer]


def test_a_decode_step_mixing_adapters_gives_each_row_its_own_logits(
    runtime: ReferenceRuntime, prompt: list[int], adapters: dict[str, LoraAdapter]
) -> None:
    """One decode step over [base, tokyo, pirate] gives the logits each would get alone."""
    resolved = [
        None,
        runtime.lora.resolve(with_weights(adapters["tokyo"])),
        runtime.lora.resolve(with_weights(adapters["pirate"])),
    ]
    model = runtime.model
    slots = [model.cache.acquire() for _ in resolved]
    try:
        for slot, adapter in zip(slots, resolved, strict=True):
            model.prefill(slot, prompt, adapter=adapter)
        positions, token = [len(prompt)] * 3, prompt[-1]
        mixed = model.decode(slots, [token] * 3, positions, resolved)
        alone = [
            model.decode([slot], [token], [len(prompt)], [adapter])[0]
            for slot, adapter in zip(slots, resolved, strict=True)
        ]
    finally:
        for slot in slots:
            model.cache.release(slot)
    for row, expected in zip(mixed, alone, strict=True):
        torch.testing.assert_close(row, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(mixed[0], mixed[1]) and not torch.allclose(mixed[1], mixed[2])


def test_logits_match_peft_merged_model(
    runtime: ReferenceRuntime,
    trained_model_dir: Path,
    lora_source_dir: Path,
    prompt: list[int],
    adapters: dict[str, LoraAdapter],
) -> None:
    from peft import PeftModel
    from transformers import MistralForCausalLM

    for name, adapter in adapters.items():
        base = MistralForCausalLM.from_pretrained(trained_model_dir, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, lora_source_dir / name).merge_and_unload().eval()
        with torch.no_grad():
            expected = merged(torch.tensor([prompt])).logits[0]
        slot = runtime.model.cache.acquire()
        try:
            got = runtime.model.prefill(
                slot, prompt, all_logits=True, adapter=runtime.lora.resolve(with_weights(adapter))
            )
        finally:
            runtime.model.cache.release(slot)
        # the adapter travels in float16 (the contract's lora_weights type): a few thousandths on logits of ~20
        torch.testing.assert_close(got, expected, atol=2e-2, rtol=0)
        assert expected.argmax(-1)[-1] == got.argmax(-1)[-1]


def test_a_task_the_cache_lacks_is_refused_with_the_backends_error_then_served_once_sent(
    trained_model_dir: Path, adapters: dict[str, LoraAdapter]
) -> None:
    runtime = ReferenceRuntime.from_checkpoint(trained_model_dir, max_batch_size=2, max_cached_adapters=1)
    tokyo, pirate = adapters["tokyo"], adapters["pirate"]
    with pytest.raises(BadRequestError) as miss:
        runtime.lora.resolve(LoraInputs(tokyo.task_id))
    assert miss.value.param == "lora_task_id"
    assert (
        str(miss.value.message)
        == f"LoRA task {tokyo.task_id} not found in cache. Please send LoRA weights with request"
    )
    assert is_lora_cache_miss(str(miss.value))
    sent = runtime.lora.resolve(with_weights(tokyo))
    assert runtime.lora.resolve(LoraInputs(tokyo.task_id)) is sent  # cached: the task id alone now serves
    runtime.lora.resolve(with_weights(pirate))  # evicts tokyo (one adapter cached)
    with pytest.raises(BadRequestError, match="not found in cache"):
        runtime.lora.resolve(LoraInputs(tokyo.task_id))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda w, c: (w, _set(c, (0, 0), 99)), "module id 99 is not served"),
        (lambda w, c: (w, _set(c, (0, 1), 7)), "layer 7 outside"),
        (lambda w, c: (w, _set(c, (0, 2), 65)), "rank 65 outside [1, 64]"),
        (lambda w, c: (w[:, :10], c), "needs"),
        (lambda w, c: (w[:3], c), "one per module"),
    ],
)
def test_weights_that_do_not_fit_are_refused_naming_the_row(
    runtime: ReferenceRuntime, adapters: dict[str, LoraAdapter], change, problem: str
) -> None:
    adapter = adapters["tokyo"]
    weights, config = change(adapter.weights, adapter.config.copy())
    with pytest.raises(BadRequestError, match=re.escape(problem)) as refused:
        runtime.lora.resolve(LoraInputs(12345, weights, config))
    assert refused.value.param == "lora_weights"


def _set(array, index, value):
    array[index] = value
    return array
