"""The `pytorch` engine uses only names TensorRT-LLM's LLM API has: checked against the names recorded from upstream
(tests/data/upstream/tensorrt_llm_llm_api.json) for the 1.2 line and the newest one, through the fake generated from
them, which refuses any other argument, field or attribute."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from nemo_chat_core.engine_tensors import GenerationRequest
from nemo_chat_core.guided import GUIDE_TYPES, Guide
from nemo_chat_core.sampling import Sampling
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.tekken import Tekkenizer
from nemo_runtime.llm_api import LlmApiEngine, LlmSettings, guided_decoding_kwargs, llm_kwargs, sampling_kwargs
from tests.source_tree import PROJECT
from tests.unit.runtime.fake_trtllm import LINES, as_api, fake_line
from tests.unit.runtime.sinks import RecordingSink

UPSTREAM = json.loads((PROJECT / "tests/data/upstream/tensorrt_llm_llm_api.json").read_text())
GUIDE_TEXTS = {"json": "", "json_schema": '{"type": "object"}', "regex": "[a-z]+", "ebnf_grammar": 'root ::= "a"'}
REQUESTS = [
    GenerationRequest(input_ids=[1, 2], max_new_tokens=4),
    GenerationRequest(
        input_ids=[1, 2],
        max_new_tokens=4,
        end_id=2,
        pad_id=11,
        sampling=Sampling(
            temperature=0.8,
            top_k=20,
            top_p=0.9,
            seed=3,
            repetition_penalty=1.2,
            presence_penalty=0.5,
            frequency_penalty=0.25,
        ),
        min_tokens=2,
        stop_words=[[5], [6, 7]],
        bad_words=[[8], [9, 10]],
        return_log_probs=True,
        return_context_logits=True,
        return_generation_logits=True,
    ),
    *(
        GenerationRequest(input_ids=[1], max_new_tokens=4, guide=Guide(kind, GUIDE_TEXTS[kind], "g"))
        for kind in GUIDE_TYPES
    ),
]


@pytest.fixture(scope="module", params=LINES)
def fake(request: pytest.FixtureRequest) -> SimpleNamespace:
    return fake_line(request.param)


def sampling_params(fake: SimpleNamespace, request: GenerationRequest) -> tuple[object, dict[str, object]]:
    kwargs = sampling_kwargs(request)
    guided = {}
    if request.guide is not None:
        guided = guided_decoding_kwargs(request.guide)
        kwargs["guided_decoding"] = fake.GuidedDecodingParams(**guided)
    return fake.SamplingParams(**kwargs), {**kwargs, **guided}


def test_every_sampling_and_guided_decoding_field_the_engine_sets_is_upstream_s(fake: SimpleNamespace) -> None:
    for request in REQUESTS:
        sampling_params(fake, request)  # the fake refuses a name its line lacks


def test_every_llm_argument_the_engine_passes_is_upstream_s(fake: SimpleNamespace, tmp_path: Path) -> None:
    for settings in (
        LlmSettings(model_dir=tmp_path, tokenizer_dir=None, max_batch_size=8, max_seq_len=1024),
        LlmSettings(
            model_dir=tmp_path,
            tokenizer_dir=tmp_path,
            max_batch_size=8,
            max_seq_len=1024,
            cuda_graph_batch_sizes=(1, 2, 8),
            kv_cache_dtype="fp8",
            tensor_parallel_size=2,
        ),
    ):
        kwargs = llm_kwargs(settings, as_api(fake))  # KvCacheConfig and CudaGraphConfig refuse unknown fields
        assert set(kwargs) <= fake.TORCH_LLM_ARGS | set(fake.INIT_PARAMS)


def test_the_fake_refuses_what_upstream_lacks_naming_it(fake: SimpleNamespace) -> None:
    with pytest.raises(TypeError, match=r"'stop_ids'.*has no such field"):
        fake.SamplingParams(stop_ids=[1])
    with pytest.raises(TypeError, match="'free_gpu_mem_fraction'"):
        fake.KvCacheConfig(free_gpu_mem_fraction=0.5)
    with pytest.raises(TypeError, match="keyword arguments only"):
        fake.SamplingParams(2)
    with pytest.raises(ValueError, match="LLM got invalid argument: enable_trt_overlap"):
        fake.LLM("/nowhere", enable_trt_overlap=True)
    params = fake.SamplingParams(max_tokens=3)
    with pytest.raises(AttributeError):
        params.stop_words = [[1]]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = params.beam_width  # type: ignore[attr-defined]


def test_the_newest_line_s_unverified_names_are_exactly_those_the_engine_uses_beyond_what_was_read() -> None:
    """`unverified` lists the names the engine uses that the newest sources read here did not show: it must follow
    the engine (a new use of an unread name has to be added, and so be seen), and a name shown since must leave it."""
    newest = UPSTREAM["lines"]["newest"]
    used_sampling = {name for request in REQUESTS for name in sampling_kwargs(request)} | {"guided_decoding"}
    used_guided = {name for kind in GUIDE_TYPES for name in guided_decoding_kwargs(Guide(kind, GUIDE_TEXTS[kind], "g"))}
    unverified = newest["unverified"]
    assert set(unverified["SamplingParams"]) == used_sampling - set(newest["classes"]["SamplingParams"]["fields"])
    assert set(unverified["GuidedDecodingParams"]) == used_guided
    assert set(unverified["LLM.generate_async"]) == {"inputs", "sampling_params", "streaming"}


def test_every_source_is_recorded_with_repository_path_commit_and_date() -> None:
    provenance = UPSTREAM["provenance"]
    for key, source in provenance.items():
        assert {"repo", "path", "commit", "read_on", "ref", "notes"} <= set(source), key
        assert source["read_on"] == UPSTREAM["read_on"]
        assert source["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", source["commit"]), key
        assert source["commit"] is not None or "http" in source["path"] or source["repo"] == "this project", key
    for line in UPSTREAM["lines"].values():
        sources = [c["source"] for c in line["classes"].values()] + [f["source"] for f in line["functions"].values()]
        assert set(sources) <= set(provenance)
    assert UPSTREAM["lines"]["1.2"]["unverified"] == {}


@pytest.fixture(scope="module")
def served(fake: SimpleNamespace, hf_fp8_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory,
           tekken_path: Path) -> Iterator[LlmApiEngine]:  # fmt: skip
    from nemo_build.hf_tokenizer import write_hf_tokenizer

    tokenizer_dir = write_hf_tokenizer(tekken_path, tmp_path_factory.mktemp("hf") / "tokenizer")
    settings = LlmSettings(
        model_dir=hf_fp8_checkpoint_dir, tokenizer_dir=tokenizer_dir, max_batch_size=4, max_seq_len=256
    )
    engine = LlmApiEngine(settings, as_api(fake), stats_timeout_s=0.2, stats_pause_s=0.01)
    yield engine
    engine.close()


def test_a_request_using_every_output_runs_on_each_line(served: LlmApiEngine, tok: Tekkenizer) -> None:
    """What the engine reads of RequestOutput and CompletionOutput (the fake's objects hold nothing else), and the
    generate_async and get_stats_async arguments it passes, exist on the line."""
    prompt = encode_chat(tok, [{"role": "user", "content": "What is the capital of France?"}])
    for streaming in (True, False):
        sink = RecordingSink()
        request = GenerationRequest(
            input_ids=prompt, max_new_tokens=12, end_id=tok.eos_id, streaming=streaming, stop_words=[[1046, 1]],
            return_log_probs=True, return_context_logits=True, return_generation_logits=True,
            guide=Guide("regex", "The [a-z ]+", "g"),
        )  # fmt: skip
        served.submit(request, sink)
        sink.wait()
        assert sink.error is None and sink.tokens and tok.decode(sink.tokens).startswith("The ")
        assert any(log is not None and log.log_probs for log in sink.logs)
