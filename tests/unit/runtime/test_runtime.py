"""The reference runtime: faithful to the HF model, batching-invariant, seeded sampling, stops, masks, cancel."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from transformers import MistralForCausalLM

from nemo_runtime.model import ReferenceModel
from nemo_runtime.sampling import SamplingParams
from nemo_runtime.scheduler import ReferenceRuntime, StepOutput
from nemo_runtime.weights import load_weights

PROMPTS = [[1, 3, 22177, 4304, 4], [1, 3, 1784, 1395, 1032, 4], [1, 3, 9999, 4], [1, 5, 6, 3, 12345, 22177, 4304, 4]]


def drain(runtime: ReferenceRuntime) -> dict[str, list[StepOutput]]:
    results: dict[str, list[StepOutput]] = {}
    while runtime.has_work():
        for out in runtime.step():
            results.setdefault(out.request_id, []).append(out)
    return results


def tokens(outs: list[StepOutput]) -> list[int]:
    return [t for o in outs for t in o.new_token_ids]


def test_prefill_and_decode_reproduce_the_hf_model(tiny_model_dir: Path, bf16_checkpoint_dir: Path) -> None:
    hf = MistralForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.randint(1000, 131072, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(ids).logits[0]
    model = ReferenceModel(load_weights(bf16_checkpoint_dir))
    slot = model.cache.acquire()
    prefill = model.prefill(slot, ids[0, :16].tolist(), all_logits=True)
    decoded = [model.decode([slot], [int(ids[0, p])], [p])[0] for p in range(16, 24)]
    got = torch.cat([prefill, torch.stack(decoded)])
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_batched_decode_matches_one_request_at_a_time(runtime: ReferenceRuntime) -> None:
    alone = [runtime.generate(p, max_new_tokens=12).token_ids for p in PROMPTS]
    for i, prompt in enumerate(PROMPTS):
        runtime.add_request(str(i), prompt, max_new_tokens=12)
    together = drain(runtime)
    assert [tokens(together[str(i)]) for i in range(len(PROMPTS))] == alone
    assert all(len(t) == 12 for t in alone)


def test_requests_join_while_others_decode_and_wait_for_a_free_slot(runtime: ReferenceRuntime) -> None:
    runtime.max_batch_size = 2
    expected = {str(i): runtime.generate(p, max_new_tokens=6).token_ids for i, p in enumerate(PROMPTS)}
    runtime.add_request("0", PROMPTS[0], max_new_tokens=6)
    first = runtime.step()
    assert [(o.request_id, len(o.new_token_ids)) for o in first] == [("0", 1)]
    for i in (1, 2, 3):
        runtime.add_request(str(i), PROMPTS[i], max_new_tokens=6)
    second = runtime.step()  # "0" decodes, "1" is prefilled, "2" and "3" wait for a slot
    assert sorted(o.request_id for o in second) == ["0", "1"]
    results = drain(runtime)
    results["0"] = [*first, *second[:1], *results["0"]]
    results["1"] = [second[1], *results["1"]]
    assert {k: tokens(v) for k, v in results.items()} == expected


def test_sampling_is_seeded_per_request_and_independent_of_the_batch(runtime: ReferenceRuntime) -> None:
    params = SamplingParams(temperature=1.5, top_k=50, top_p=0.95, seed=1234)
    alone = runtime.generate(PROMPTS[0], max_new_tokens=10, sampling=params).token_ids
    assert runtime.generate(PROMPTS[0], max_new_tokens=10, sampling=params).token_ids == alone
    other = runtime.generate(PROMPTS[0], max_new_tokens=10, sampling=SamplingParams(1.5, 50, 0.95, seed=99))
    assert other.token_ids != alone
    runtime.add_request("sampled", PROMPTS[0], max_new_tokens=10, sampling=params)
    for i, prompt in enumerate(PROMPTS[1:]):
        runtime.add_request(f"noise{i}", prompt, max_new_tokens=10, sampling=SamplingParams(1.0, seed=i))
    assert tokens(drain(runtime)["sampled"]) == alone


def test_top_k_one_is_greedy(runtime: ReferenceRuntime) -> None:
    greedy = runtime.generate(PROMPTS[1], max_new_tokens=8).token_ids
    top1 = runtime.generate(PROMPTS[1], max_new_tokens=8, sampling=SamplingParams(temperature=2.0, top_k=1))
    assert top1.token_ids == greedy


def test_end_id_stop_words_and_length(runtime: ReferenceRuntime) -> None:
    free = runtime.generate(PROMPTS[2], max_new_tokens=8).token_ids
    by_length = runtime.generate(PROMPTS[2], max_new_tokens=3)
    assert (by_length.token_ids, by_length.finish_reason) == (free[:3], "length")
    by_end = runtime.generate(PROMPTS[2], max_new_tokens=8, end_id=free[2])
    assert (by_end.token_ids, by_end.finish_reason) == (free[:2], "stop")  # the end id is not emitted
    by_word = runtime.generate(PROMPTS[2], max_new_tokens=8, stop_words=[[free[3], free[4]], [-5]])
    assert (by_word.token_ids, by_word.finish_reason) == (free[:5], "stop")  # the stop word is emitted


def test_token_mask_hook_constrains_every_step(runtime: ReferenceRuntime) -> None:
    allowed = [1000 + i for i in range(5)]
    seen: list[list[int]] = []

    def mask(generated: list[int]) -> list[int]:
        seen.append(list(generated))
        return allowed[len(generated) % 5 :][:1]  # exactly one allowed id per step

    result = runtime.generate(PROMPTS[0], max_new_tokens=6, token_mask=mask)
    assert result.token_ids == [1000, 1001, 1002, 1003, 1004, 1000]
    assert seen[:3] == [[], [1000], [1000, 1001]]
    nothing = runtime.generate(PROMPTS[0], max_new_tokens=4, token_mask=lambda _: torch.zeros(131072, dtype=bool))
    assert nothing.finish_reason == "error"


def test_cancel_from_another_thread(runtime: ReferenceRuntime) -> None:
    runtime.add_request("long", PROMPTS[0], max_new_tokens=500)
    runtime.add_request("short", PROMPTS[1], max_new_tokens=3)
    runtime.step()
    worker = threading.Thread(target=runtime.cancel, args=("long",))
    worker.start()
    worker.join()
    results = drain(runtime)
    assert results["long"][-1].finished and results["long"][-1].finish_reason == "cancelled"
    assert results["short"][-1].finish_reason == "length"
    assert not runtime.cancel("long")  # finished requests are forgotten; the id can be reused
    runtime.add_request("long", PROMPTS[0], max_new_tokens=1)


def drain_on_a_thread(runtime: ReferenceRuntime) -> dict[str, list[StepOutput]]:
    """`drain`, failing with a message (not hanging the suite) when a step never returns."""
    results: dict[str, list[StepOutput]] = {}
    worker = threading.Thread(target=lambda: results.update(drain(runtime)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "step() never returned (deadlock)"
    return results


def test_cancelling_a_queued_request_finishes_it_while_the_others_complete(runtime: ReferenceRuntime) -> None:
    runtime.max_batch_size = 1
    runtime.add_request("running", PROMPTS[0], max_new_tokens=6)
    runtime.add_request("queued", PROMPTS[1], max_new_tokens=6)
    runtime.add_request("next", PROMPTS[2], max_new_tokens=6)
    first = runtime.step()
    assert [o.request_id for o in first] == ["running"]
    assert runtime.cancel("queued")
    results = drain_on_a_thread(runtime)
    assert [(o.new_token_ids, o.finished, o.finish_reason) for o in results["queued"]] == [([], True, "cancelled")]
    assert len(tokens(first) + tokens(results["running"])) == 6
    assert results["running"][-1].finish_reason == "length"
    assert len(tokens(results["next"])) == 6 and results["next"][-1].finish_reason == "length"
    assert not runtime.cancel("queued")  # forgotten once finished


def test_cancelled_requests_give_their_kv_cache_slots_back(runtime: ReferenceRuntime) -> None:
    """Running and queued requests cancelled, more of them than the cache has slots: the cache never grows."""
    cache = runtime.model.cache
    slots = cache.num_slots
    runtime.max_batch_size = 2
    for round_ in range(slots):
        ids = [f"{round_}-{i}" for i in range(4)]
        for request_id in ids:
            runtime.add_request(request_id, PROMPTS[0], max_new_tokens=500)
        runtime.step()
        runtime.step()  # two requests hold a slot, two wait for one
        assert all(runtime.cancel(request_id) for request_id in ids)
        results = drain_on_a_thread(runtime)
        assert {request_id: results[request_id][-1].finish_reason for request_id in ids} == dict.fromkeys(
            ids, "cancelled"
        )
    assert cache.num_slots == slots
    assert sorted(cache.free_slots) == list(range(slots))  # every slot free once idle


def test_bad_requests_are_refused(runtime: ReferenceRuntime) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        runtime.add_request("a", [], max_new_tokens=4)
    with pytest.raises(ValueError, match=r"token ids in \[0, 131072\)"):
        runtime.add_request("a", [131072], max_new_tokens=4)
    with pytest.raises(ValueError, match="exceeds the model's maximum sequence length 131072"):
        runtime.add_request("a", [1] * 131000, max_new_tokens=400)
    runtime.add_request("a", [1, 3], max_new_tokens=4)
    with pytest.raises(ValueError, match="already in flight"):
        runtime.add_request("a", [1, 3], max_new_tokens=4)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)


def test_tp2_checkpoint_merges_into_the_same_weights(trained_model_dir: Path, tmp_path: Path) -> None:
    from nemo_build.checkpoint import CheckpointOptions, build_checkpoint

    one = tmp_path / "tp1"
    two = tmp_path / "tp2"
    build_checkpoint(
        trained_model_dir,
        one,
        CheckpointOptions(quant="bf16", kv_cache="bf16", tp=1, device="cpu", calib_data="shipped"),
    )
    build_checkpoint(
        trained_model_dir,
        two,
        CheckpointOptions(quant="bf16", kv_cache="bf16", tp=2, device="cpu", calib_data="shipped"),
    )
    assert sorted(p.name for p in two.glob("rank*.safetensors")) == ["rank0.safetensors", "rank1.safetensors"]
    a, b = load_weights(one), load_weights(two)
    assert torch.equal(a.embedding, b.embedding) and torch.equal(a.lm_head, b.lm_head)
    for la, lb in zip(a.layers, b.layers, strict=True):
        for name in ("qkv", "dense", "fc", "gate", "proj"):
            assert torch.equal(getattr(la, name).weight, getattr(lb, name).weight), name


def test_output_rows_that_are_all_zero_are_skipped_exactly(bf16_checkpoint_dir: Path) -> None:
    weights = load_weights(bf16_checkpoint_dir)
    keep = torch.randperm(weights.lm_head.shape[0], generator=torch.Generator().manual_seed(1))[:100]
    sparse_head = torch.zeros_like(weights.lm_head)
    sparse_head[keep] = weights.lm_head[keep]
    weights.lm_head = sparse_head
    model = ReferenceModel(weights)
    hidden = torch.randn(3, weights.lm_head.shape[1], generator=torch.Generator().manual_seed(2))
    normed = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + model.config.norm_epsilon)
    expected = (normed * weights.final_norm) @ sparse_head.T
    got = model.logits(hidden)
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-6)
    dropped = torch.ones(sparse_head.shape[0], dtype=torch.bool)
    dropped[keep] = False
    assert torch.count_nonzero(got[:, dropped]) == 0
