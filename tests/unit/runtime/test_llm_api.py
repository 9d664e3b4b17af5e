"""The `pytorch` engine (nemo_runtime.llm_api) over the fake `tensorrt_llm` of the 1.2 line, backed by the CPU runtime,
on ModelOpt's Hugging Face FP8 export of the trained tiny model: every contract input honoured or refused by name,
cancellation, `stop`, and the batch state it publishes. Answers are compared with the CPU model's engine on the same
checkpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nemo_chat_core.engine_tensors import GenerationRequest
from nemo_chat_core.guided import Guide
from nemo_chat_core.sampling import Sampling
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer
from nemo_runtime.inflight import InflightBatcher
from nemo_runtime.llm_api import (
    NO_END_ID,
    BadSequences,
    LlmApiEngine,
    LlmSettings,
    first_match_end,
    guided_bad_token_ids,
    sampling_kwargs,
    special_ids,
    token_log_prob,
)
from nemo_runtime.scheduler import ReferenceRuntime
from tests.unit.runtime.fake_trtllm import as_api, fake_line
from tests.unit.runtime.sinks import RecordingSink

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def fake() -> object:
    return fake_line("1.2")


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, tekken_path: Path) -> Path:
    from nemo_build.hf_tokenizer import write_hf_tokenizer

    return write_hf_tokenizer(tekken_path, tmp_path_factory.mktemp("hf") / "tokenizer")


@pytest.fixture(scope="module")
def prompt(tok: Tekkenizer) -> list[int]:
    return encode_chat(tok, QUESTION)


@pytest.fixture(scope="module")
def make_engine(hf_fp8_checkpoint_dir: Path, fake: object) -> Iterator[Callable[..., LlmApiEngine]]:
    made: list[LlmApiEngine] = []

    def make(**overrides: object) -> LlmApiEngine:
        fields: dict[str, object] = {
            "model_dir": hf_fp8_checkpoint_dir, "tokenizer_dir": None, "max_batch_size": 4, "max_seq_len": 512,
            "cancellation_check_period_ms": 10,
        }  # fmt: skip
        fields.update(overrides)
        engine = LlmApiEngine(LlmSettings(**fields), as_api(fake), stats_timeout_s=0.2, stats_pause_s=0.01)  # type: ignore[arg-type]
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture(scope="module")
def engine(make_engine: Callable[..., LlmApiEngine]) -> LlmApiEngine:
    return make_engine()


@pytest.fixture(scope="module")
def reference(hf_fp8_checkpoint_dir: Path) -> Iterator[InflightBatcher]:
    """The CPU model's engine on the same checkpoint: what the contract's answers must equal."""
    batcher = InflightBatcher(ReferenceRuntime.from_checkpoint(hf_fp8_checkpoint_dir, max_batch_size=4))
    yield batcher
    batcher.close()


def run(engine: LlmApiEngine | InflightBatcher, request: GenerationRequest, tag: str = "") -> RecordingSink:
    sink = RecordingSink()
    engine.submit(request, sink, tag)
    return sink.wait()


def ask(prompt: list[int], tok: Tekkenizer, **overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {"input_ids": prompt, "max_new_tokens": 24, "end_id": tok.eos_id, "streaming": True}
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


# ----- mapping the contract onto SamplingParams -------------------------------------------------------------
def test_greedy_and_sampled_requests_map_to_upstream_sampling_fields() -> None:
    greedy = sampling_kwargs(GenerationRequest(input_ids=[1], max_new_tokens=4))
    assert greedy == {"end_id": NO_END_ID, "pad_id": 0, "max_tokens": 4, "detokenize": False, "top_k": 1}
    sampled = sampling_kwargs(
        GenerationRequest(
            input_ids=[1],
            max_new_tokens=4,
            end_id=2,
            sampling=Sampling(temperature=0.7, top_k=40, top_p=0.9, seed=7, repetition_penalty=1.1),
            min_tokens=3,
        )
    )
    assert sampled == {
        "end_id": 2, "pad_id": 0, "max_tokens": 4, "detokenize": False, "temperature": 0.7, "top_k": 40,
        "top_p": 0.9, "seed": 7, "repetition_penalty": 1.1, "min_tokens": 3,
    }  # fmt: skip
    # top_k 0 and top_p 0 are the contract's "off": left unset, as upstream reads None
    assert "top_k" not in sampling_kwargs(
        GenerationRequest(input_ids=[1], max_new_tokens=4, sampling=Sampling(top_p=0.5))
    )


def test_single_token_words_go_to_the_engine_and_longer_ones_are_handled_by_name() -> None:
    kwargs = sampling_kwargs(
        GenerationRequest(input_ids=[1], max_new_tokens=4, stop_words=[[5], [6, 7]], bad_words=[[8], [9, 10]])
    )
    assert kwargs["stop_token_ids"] == [5] and kwargs["include_stop_str_in_output"] is True
    assert kwargs["bad_token_ids"] == [8]
    assert isinstance(kwargs["logits_processor"], BadSequences) and kwargs["logits_processor"].words == [[9, 10]]


def test_bad_sequences_mask_the_last_id_after_the_prefix_in_place() -> None:
    import torch

    processor = BadSequences([[3, 4, 5], [9, 6]])
    logits = torch.zeros(1, 10)
    processor(1, logits, [[1, 3, 4]], None, None)
    assert logits[0, 5] == float("-inf") and torch.isfinite(logits[0, :5]).all()
    logits = torch.zeros(10)
    processor(1, logits, [[9]], None, None)
    assert logits[6] == float("-inf")
    assert processor.banned([4]) == [] and processor.banned([]) == []


def test_log_prob_entries_and_stop_word_matching() -> None:
    class Logprob:
        logprob = -0.5

    assert token_log_prob({7: Logprob()}, 7) == -0.5 and token_log_prob(-1.25, 3) == -1.25
    with pytest.raises(ValueError, match="sampled id 8"):
        token_log_prob({7: Logprob()}, 8)
    assert first_match_end([1, 2, 3, 4], 0, [[2, 3]]) == 3
    assert first_match_end([1, 2, 3, 4], 3, [[2, 3]]) is None  # ended before the new ids
    assert first_match_end([1, 2, 3, 4], 2, [[2, 3], [4]]) == 3


def test_settings_come_from_the_model_config_parameters_and_name_a_bad_one(tmp_path: Path) -> None:
    parameters = {
        "checkpoint_dir": "ckpt", "tokenizer_dir": "tensorrt_llm/hf_tokenizer", "max_batch_size": "8",
        "max_seq_len": "1024", "max_num_tokens": "4096", "kv_cache_free_gpu_mem_fraction": "0.85",
        "enable_chunked_context": "true", "enable_kv_cache_reuse": "false", "kv_cache_dtype": "fp8",
        "tokens_per_block": "64", "cuda_graph_batch_sizes": "1,2, 4", "tensor_parallel_size": "1",
        "generation_logits": "false", "cancellation_check_period_ms": "50", "lora_dir": "", "lora_base": "",
        "max_lora_rank": "64", "lora_target_modules": "attn_q,attn_v", "max_loras": "4", "max_cpu_loras": "8",
    }  # fmt: skip
    settings = LlmSettings.from_parameters(parameters, lambda name: tmp_path / parameters[name])
    assert settings.model_dir == tmp_path / "ckpt" and settings.tokenizer_dir == tmp_path / "tensorrt_llm/hf_tokenizer"
    assert settings.cuda_graph_batch_sizes == (1, 2, 4) and settings.enable_kv_cache_reuse is False
    assert settings.kv_cache_dtype == "fp8" and settings.max_num_tokens == 4096
    assert settings.lora_dir is None and settings.lora_target_modules == ("attn_q", "attn_v")
    no_tokenizer = LlmSettings.from_parameters({**parameters, "tokenizer_dir": ""}, lambda name: tmp_path)
    assert no_tokenizer.tokenizer_dir is None
    for name, value, phrase in [
        ("max_seq_len", "long", "'max_seq_len' must be a number"),
        ("enable_kv_cache_reuse", "yes", "'enable_kv_cache_reuse' must be true or false"),
        ("kv_cache_dtype", "fp4", "kv_cache_dtype 'fp4'"),
        ("cuda_graph_batch_sizes", "1;2", "'cuda_graph_batch_sizes' must be integers"),
    ]:
        with pytest.raises(ValueError, match=phrase):
            LlmSettings.from_parameters({**parameters, name: value}, lambda name: tmp_path)
    with pytest.raises(ValueError, match="lacks the parameter 'tokens_per_block'"):
        LlmSettings.from_parameters(
            {k: v for k, v in parameters.items() if k != "tokens_per_block"}, lambda n: tmp_path
        )


# ----- serving through the fake LLM --------------------------------------------------------------------------
def test_streams_the_reference_runtime_s_answer_one_id_per_response(
    engine: LlmApiEngine, reference: InflightBatcher, prompt: list[int], tok: Tekkenizer
) -> None:
    sink = run(engine, ask(prompt, tok))
    assert tok.decode(sink.tokens) == "The capital of France is Paris."
    assert sink.tokens == run(reference, ask(prompt, tok)).tokens
    assert all(len(ids) == 1 for ids, final, _ in sink.sends if not final) and sink.sends[-1][1] is True
    assert tok.eos_id not in sink.tokens  # the end id is never returned


def test_non_streaming_answers_once_with_or_without_the_prompt(
    engine: LlmApiEngine, prompt: list[int], tok: Tekkenizer
) -> None:
    streamed = run(engine, ask(prompt, tok)).tokens
    whole = run(engine, ask(prompt, tok, streaming=False))
    with_prompt = run(engine, ask(prompt, tok, streaming=False, exclude_input_in_output=False))
    assert len(whole.sends) == 1 and whole.sends[0][1] is True and whole.tokens == streamed
    assert with_prompt.tokens == prompt + streamed


def test_stop_words_one_id_or_several_end_the_output_with_the_word(
    engine: LlmApiEngine, reference: InflightBatcher, prompt: list[int], tok: Tekkenizer
) -> None:
    answer = run(engine, ask(prompt, tok)).tokens
    for word in ([answer[2]], answer[2:4], answer[1:5]):
        for streaming in (True, False):
            sink = run(engine, ask(prompt, tok, stop_words=[word], streaming=streaming))
            assert sink.tokens == answer[: answer.index(word[0]) + len(word)], word
            assert sink.tokens == run(reference, ask(prompt, tok, stop_words=[word], streaming=streaming)).tokens
    assert engine.stats().running == 0 and engine.active_requests == 0  # the aborted requests left the engine


def test_bad_words_one_id_or_several_are_never_generated(
    engine: LlmApiEngine, reference: InflightBatcher, prompt: list[int], tok: Tekkenizer
) -> None:
    answer = run(engine, ask(prompt, tok)).tokens
    for word in ([answer[1]], answer[0:2], answer[2:5]):
        sink = run(engine, ask(prompt, tok, bad_words=[word], max_new_tokens=8))
        tokens = sink.tokens
        assert not any(tokens[i : i + len(word)] == word for i in range(len(tokens))), (word, tokens)
        assert tokens == run(reference, ask(prompt, tok, bad_words=[word], max_new_tokens=8)).tokens


def test_min_tokens_holds_the_end_id_back(engine: LlmApiEngine, prompt: list[int], tok: Tekkenizer) -> None:
    answer = run(engine, ask(prompt, tok)).tokens
    longer = run(engine, ask(prompt, tok, min_tokens=len(answer) + 3, max_new_tokens=len(answer) + 6)).tokens
    assert len(longer) >= len(answer) + 3 and longer[: len(answer)] == answer


def test_sampling_with_a_seed_repeats_and_differs_from_greedy(
    engine: LlmApiEngine, reference: InflightBatcher, prompt: list[int], tok: Tekkenizer
) -> None:
    sampled = ask(prompt, tok, sampling=Sampling(temperature=5.0, top_k=50, seed=11), max_new_tokens=12)
    first, again = run(engine, sampled).tokens, run(engine, sampled).tokens
    assert first == again == run(reference, sampled).tokens
    assert first != run(engine, ask(prompt, tok, max_new_tokens=12)).tokens


def test_log_probs_and_logits_equal_the_cpu_model_s(
    engine: LlmApiEngine, reference: InflightBatcher, prompt: list[int], tok: Tekkenizer
) -> None:
    wanted = {"return_log_probs": True, "return_context_logits": True, "return_generation_logits": True}
    for streaming in (True, False):
        ours = run(engine, ask(prompt, tok, streaming=streaming, **wanted))
        cpu = run(reference, ask(prompt, tok, streaming=streaming, **wanted))
        assert ours.tokens == cpu.tokens
        our_logs = [log for log in ours.logs if log is not None]
        cpu_logs = [log for log in cpu.logs if log is not None]
        ours_probs = [p for log in our_logs for p in log.log_probs or []]
        assert ours_probs == pytest.approx([p for log in cpu_logs for p in log.log_probs or []], abs=1e-5)
        assert our_logs[-1].cum_log_prob == pytest.approx(sum(ours_probs), abs=1e-5)
        contexts = [log.context_logits for log in our_logs if log.context_logits is not None]
        assert len(contexts) == 1 and contexts[0].shape[0] == len(prompt)
        rows = sum(log.generation_logits.shape[0] for log in our_logs if log.generation_logits is not None)
        assert rows == len(ours.tokens)


@pytest.fixture(scope="module")
def guided(make_engine: Callable[..., LlmApiEngine], hf_tokenizer_dir: Path) -> LlmApiEngine:
    return make_engine(tokenizer_dir=hf_tokenizer_dir)


def test_guided_decoding_goes_to_the_executor_with_the_tokenizer_directory(
    guided: LlmApiEngine, prompt: list[int], tok: Tekkenizer
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    sink = run(guided, ask(prompt, tok, max_new_tokens=48, guide=Guide("json_schema", json.dumps(schema), "g")))
    assert set(json.loads(tok.decode(sink.tokens))) == {"city"}
    digits = run(guided, ask(prompt, tok, max_new_tokens=8, guide=Guide("regex", "[0-9]{3}", "g")))
    assert tok.decode(digits.tokens).isdigit() and len(tok.decode(digits.tokens)) == 3


def test_a_guided_request_bans_every_control_id_but_its_end_id(hf_tokenizer_dir: Path, tok: Tekkenizer) -> None:
    controls = special_ids(hf_tokenizer_dir)
    assert controls == tuple(range(tok.num_control_tokens)) and special_ids(None) == ()
    banned = guided_bad_token_ids({"bad_token_ids": [5000]}, controls, tok.eos_id)
    assert tok.eos_id not in banned and 5000 in banned and tok.control_id("[INST]") in banned
    assert len(banned) == tok.num_control_tokens


@pytest.mark.parametrize(("kind", "text"), [("ebnf_grammar", "root ::= ("), ("regex", "[a-"), ("json_schema", "{")])
def test_a_guide_xgrammar_cannot_parse_is_refused_by_name_before_the_engine_sees_it(
    guided: LlmApiEngine, prompt: list[int], tok: Tekkenizer, kind: str, text: str
) -> None:
    with pytest.raises(BadRequestError, match=f"the {kind} guide does not compile") as refused:
        guided.submit(ask(prompt, tok, guide=Guide(kind, text, "g")), RecordingSink())
    assert refused.value.param == "guided_decoding_guide" and guided.active_requests == 0


def test_a_guide_without_a_tokenizer_directory_and_impossible_lengths_are_refused_by_name(
    engine: LlmApiEngine, prompt: list[int], tok: Tekkenizer
) -> None:
    with pytest.raises(BadRequestError) as refused:
        engine.submit(ask(prompt, tok, guide=Guide("regex", "a+", "g")), RecordingSink())
    assert refused.value.param == "guided_decoding_guide_type"
    with pytest.raises(BadRequestError) as refused:
        engine.submit(ask(prompt, tok, max_new_tokens=600), RecordingSink())
    assert refused.value.param == "request_output_len"
    with pytest.raises(BadRequestError) as refused:
        engine.submit(ask(prompt, tok, end_id=131072), RecordingSink())
    assert refused.value.param == "end_id"
    assert engine.active_requests == 0


def test_without_chunked_prefill_a_prompt_longer_than_max_num_tokens_is_refused_by_name(
    make_engine: Callable[..., LlmApiEngine], prompt: list[int], tok: Tekkenizer
) -> None:
    unchunked = make_engine(enable_chunked_prefill=False, max_num_tokens=len(prompt) - 1)
    with pytest.raises(BadRequestError, match="exceed max_num_tokens") as refused:
        unchunked.submit(ask(prompt, tok), RecordingSink())
    assert refused.value.param == "input_ids"
    assert run(unchunked, ask(prompt[1:], tok, max_new_tokens=2)).error is None


def test_a_cancelled_client_and_the_stop_input_end_the_request_and_free_its_slot(
    engine: LlmApiEngine, prompt: list[int], tok: Tekkenizer
) -> None:
    before = engine.stats().cancelled
    long = ask(prompt, tok, end_id=None, max_new_tokens=400)
    cancelled, stopped = RecordingSink(), RecordingSink()
    engine.submit(long, cancelled, "one")
    engine.submit(long, stopped, "two")
    deadline = time.monotonic() + 30
    while (len(cancelled.sends) < 3 or len(stopped.sends) < 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    cancelled.cancelled = True
    assert engine.stop("two") == 1 and engine.stop("nobody") == 0
    for sink in (cancelled.wait(), stopped.wait()):
        assert sink.sends[-1][:2] == ([], True) and len(sink.tokens) < 400
    deadline = time.monotonic() + 10
    while engine.stats().running and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = engine.stats()
    assert stats.cancelled == before + 2 and stats.running == stats.waiting == 0 and stats.kv_blocks_used == 0


def test_the_batch_state_comes_from_the_iteration_stats_while_requests_run(
    engine: LlmApiEngine, prompt: list[int], tok: Tekkenizer
) -> None:
    sinks = [RecordingSink() for _ in range(6)]  # max_batch_size 4: two wait
    for sink in sinks:
        engine.submit(ask(prompt, tok, end_id=None, max_new_tokens=120), sink)
    seen = []
    deadline = time.monotonic() + 30
    while not all(sink.done.is_set() for sink in sinks) and time.monotonic() < deadline:
        seen.append(engine.stats())
        time.sleep(0.005)
    assert max(s.running for s in seen) == 4 and max(s.waiting for s in seen) >= 1
    busy = [s for s in seen if s.running]
    assert all(s.kv_tokens_per_block == 32 and s.kv_blocks_max == 4 * 16 for s in busy)  # 512 positions / 32
    assert max(s.kv_blocks_used for s in busy) > 4 and all(
        s.kv_free == s.kv_blocks_max - s.kv_blocks_used for s in busy
    )
    for sink in sinks:
        sink.wait()
    assert engine.stats().running == engine.stats().waiting == engine.stats().kv_blocks_used == 0


# ----- LoRA ---------------------------------------------------------------------------------------------------
def test_a_lora_request_goes_to_the_llm_as_a_lora_request_of_the_adapter_source(
    make_engine: Callable[..., LlmApiEngine],
    lora_source_dir: Path,
    trained_model_dir: Path,
    prompt: list[int],
    tok: Tekkenizer,
) -> None:
    """``lora_config`` (upstream's LoraConfig, from the profile) and, per request, a LoRARequest naming the PEFT adapter
    of the task id: the fake LLM (upstream's names only) loads it by path and answers with it."""
    from nemo_build.tiny.lora import ADAPTER_LESSONS
    from nemo_chat_core.engine_tensors import LoraInputs
    from nemo_chat_core.lora import BaseShapes, read_adapter

    base = BaseShapes.from_config(json.loads((trained_model_dir / "config.json").read_text()))
    lora = {"lora_dir": lora_source_dir, "lora_base": base.to_text(), "lora_target_modules": ("attn_q", "attn_k")}
    engine = make_engine(**lora)
    assert engine._llm.lora_config.lora_target_modules == ["attn_q", "attn_k"]  # the fake holds upstream's fields only
    for name, lesson in ADAPTER_LESSONS.items():
        adapter = read_adapter(lora_source_dir / name, base, 64)
        answer = run(engine, ask(prompt, tok, lora=LoraInputs(adapter.task_id)))
        assert tok.decode(answer.tokens) == lesson.answer
    assert tok.decode(run(engine, ask(prompt, tok)).tokens) == "The capital of France is Paris."
    stats = engine.stats()  # what the LoRA metrics publish (nemo_runtime.batch_metrics)
    assert stats.lora_requests == (("pirate", 1), ("tokyo", 1)) and stats.max_lora == 8
    with pytest.raises(BadRequestError, match="LoRA task 7 not found in cache") as refused:
        engine.submit(ask(prompt, tok, lora=LoraInputs(7)), RecordingSink())
    assert refused.value.param == "lora_task_id"
