"""Long prompts in the reference runtime: chunked prefill (the profiles' max_num_tokens) gives what one pass
gives, interleaves with running decodes, keeps memory linear in the prompt; the KV-cache budget queues or refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import MistralForCausalLM

from nemo_protocol.errors import ENGINE_OUT_OF_MEMORY
from nemo_runtime.model import ReferenceModel
from nemo_runtime.scheduler import ReferenceRuntime
from nemo_runtime.weights import load_weights
from tests.unit.runtime.test_runtime import PROMPTS, drain, tokens


@pytest.mark.parametrize("chunk", [5, 16, 40])
def test_a_prompt_prefilled_in_chunks_reproduces_the_hf_model(
    tiny_model_dir: Path, bf16_checkpoint_dir: Path, chunk: int
) -> None:
    hf = MistralForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.randint(1000, 131072, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits[0]
    model = ReferenceModel(load_weights(bf16_checkpoint_dir), prefill_chunk_tokens=chunk)
    slot = model.cache.acquire()
    prefill = model.prefill(slot, ids[0, :32].tolist(), all_logits=True)
    decoded = [model.decode([slot], [int(ids[0, p])], [p])[0] for p in range(32, 40)]
    assert torch.allclose(torch.cat([prefill, torch.stack(decoded)]), expected, atol=1e-5, rtol=1e-4)


def test_chunked_and_one_pass_prefill_agree_on_a_long_prompt(bf16_checkpoint_dir: Path) -> None:
    weights = load_weights(bf16_checkpoint_dir)
    ids = torch.randint(1000, 131072, (3000,), generator=torch.Generator().manual_seed(2)).tolist()
    one_pass, chunked = ReferenceModel(weights, prefill_chunk_tokens=4096), ReferenceModel(weights, 256)
    whole, pieces = one_pass.cache.acquire(), chunked.cache.acquire()
    # the last position's logits, and every position's keys and values in the cache (what decoding reads next)
    assert torch.allclose(chunked.prefill(pieces, ids), one_pass.prefill(whole, ids), atol=1e-5)
    for layer in range(len(weights.layers)):
        for store in ("k", "v"):
            cached = getattr(chunked.cache, store)[pieces][layer][:, :3000]
            assert torch.allclose(cached, getattr(one_pass.cache, store)[whole][layer][:, :3000], atol=1e-5)


def test_greedy_outputs_are_the_same_whatever_the_chunk_size(fp8_checkpoint_dir: Path) -> None:
    one_pass = ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir, max_batch_size=8)
    chunked = ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir, max_batch_size=8, max_num_tokens=3)
    for prompt in PROMPTS:
        assert chunked.generate(prompt, max_new_tokens=12) == one_pass.generate(prompt, max_new_tokens=12)


def test_a_long_prompt_prefills_a_chunk_per_step_while_the_others_keep_decoding(fp8_checkpoint_dir: Path) -> None:
    runtime = ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir, max_batch_size=8, max_num_tokens=64)
    expected = runtime.generate(PROMPTS[0], max_new_tokens=12).token_ids
    long_prompt = PROMPTS[1] * 60  # 360 tokens: 6 chunks of 64 less the decoding sequence's token
    runtime.add_request("short", PROMPTS[0], max_new_tokens=12)
    short = runtime.step()
    runtime.add_request("long", long_prompt, max_new_tokens=2)
    steps = [runtime.step() for _ in range(6)]
    per_step = [[output.request_id for output in outputs] for outputs in steps]
    assert per_step[:5] == [["short"]] * 5  # the long prompt's chunks so far produced no output; "short" went on
    assert per_step[5] == ["short", "long"]  # 6 x 63 >= 360: its prompt is done and its first token out
    results = drain(runtime)
    assert len(tokens(results["long"])) == 1 and results["long"][-1].finished
    short += [output for outputs in steps for output in outputs if output.request_id == "short"] + results["short"]
    assert tokens(short) == expected  # the interleaved chunks changed nothing for it


def test_prefill_memory_grows_linearly_not_with_the_square_of_the_prompt(fp8_checkpoint_dir: Path) -> None:
    """A 24,000-token prompt: a score matrix of it would be 24k x 24k x 8 heads x 4 bytes = 18 GB per layer."""
    script = """
import json, resource, sys, torch
from nemo_runtime.scheduler import ReferenceRuntime
runtime = ReferenceRuntime.from_checkpoint(sys.argv[1], max_batch_size=1, max_num_tokens=4096)
runtime.generate([1, 3], max_new_tokens=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ids = torch.randint(1000, 131072, (24000,), generator=torch.Generator().manual_seed(0)).tolist()
result = runtime.generate(ids, max_new_tokens=2)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tokens": len(result.token_ids), "growth_mib": (after - before) / 1024}))
"""
    run = subprocess.run(
        [sys.executable, "-c", script, str(fp8_checkpoint_dir)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    assert measured["tokens"] == 2
    # the KV cache (24k positions x 512 bytes = 12 MiB) and chunk-sized activations; nothing near 18 GB
    assert measured["growth_mib"] < 512, measured


def test_the_kv_cache_budget_queues_what_does_not_fit_now_and_refuses_what_never_could(
    fp8_checkpoint_dir: Path,
) -> None:
    runtime = ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir, max_batch_size=8, kv_cache_max_tokens=40)
    with pytest.raises(ValueError, match=r"exceeds the KV cache's capacity of 40 tokens \(kv_cache_max_tokens\)"):
        runtime.add_request("never", PROMPTS[0], max_new_tokens=36)  # 5 + 36 = 41
    expected = {str(i): runtime.generate(p, max_new_tokens=20).token_ids for i, p in enumerate(PROMPTS[:2])}
    runtime.add_request("0", PROMPTS[0], max_new_tokens=20)  # 25 positions
    runtime.add_request("1", PROMPTS[1], max_new_tokens=20)  # 26: waits until "0" is done (51 > 40)
    first = [output.request_id for output in runtime.step()]
    assert first == ["0"]
    results = drain(runtime)
    order = [request_id for request_id, outputs in results.items()]
    assert order == ["0", "1"] and {k: tokens(v) for k, v in results.items()} == {
        "0": expected["0"][1:],
        "1": expected["1"],
    }
    assert runtime.model.cache.positions_held == 0  # every slot given back


def test_a_decode_that_runs_out_of_memory_ends_that_request_alone(
    fp8_checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long sequence's cache grows by doubling, during decode: when that allocation fails, the batch step is
    retried request by request, the one whose cache could not grow ends with an out-of-memory error, and the others
    go on, token for token as they would alone. (The allocator's refusal is injected for one slot: the real one
    takes a 100k-token prompt to reach, minutes of prefill here.)"""
    runtime = ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir, max_batch_size=8)
    expected = runtime.generate(PROMPTS[0], max_new_tokens=20).token_ids
    runtime.add_request("grows", PROMPTS[1], max_new_tokens=20)
    runtime.add_request("goes-on", PROMPTS[0], max_new_tokens=20)
    first = runtime.step()
    cache = runtime.model.cache
    failing_slot = runtime._active["grows"].slot
    reserve = cache.reserve

    def refusing(slot: int, length: int) -> None:
        if slot == failing_slot and length > 10:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
        reserve(slot, length)

    monkeypatch.setattr(cache, "reserve", refusing)
    results = drain(runtime)
    (ended,) = [output for output in results["grows"] if output.finished]
    assert ended.finish_reason == "error" and ended.error is not None
    assert ended.error.startswith(f"{ENGINE_OUT_OF_MEMORY} decoding token")
    assert "(the requests in flight go on)" in ended.error
    assert tokens([o for o in first if o.request_id == "goes-on"] + results["goes-on"]) == expected
    assert failing_slot in cache.free_slots and not runtime.has_work()


def test_the_default_kv_budget_is_what_the_hosts_memory_holds_when_that_is_less(
    fp8_checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without kv_cache_max_tokens the budget is max_batch_size full sequences, or the positions 90% of the host's
    available memory holds (buffers grow by doubling: half of them), whichever is less; a host that cannot hold one
    sequence is refused at start, saying what to change."""
    runtime = ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir, max_batch_size=2)
    per_position = runtime.model.cache.bytes_per_position
    assert per_position == 512  # 2 (K, V) x layers x KV heads x head size x 4 bytes on the tiny model
    assert runtime.kv_cache_max_tokens == 2 * runtime.max_seq_len  # this host holds more
    model = runtime.model
    scarce = 3 * runtime.max_seq_len * 2 * per_position  # memory for 3 sequences of buffers twice their length
    monkeypatch.setattr("nemo_runtime.scheduler.available_host_memory", lambda: scarce)
    assert ReferenceRuntime(model, max_batch_size=8).kv_cache_max_tokens == int(0.9 * scarce) // (2 * per_position)
    monkeypatch.setattr("nemo_runtime.scheduler.available_host_memory", lambda: runtime.max_seq_len * per_position)
    with pytest.raises(ValueError, match=r"does not fit 90% of the host's .* lower max_seq_len, free memory"):
        ReferenceRuntime(model, max_batch_size=8)
    assert ReferenceRuntime(model, max_batch_size=8, kv_cache_max_tokens=runtime.max_seq_len).kv_cache_max_tokens
