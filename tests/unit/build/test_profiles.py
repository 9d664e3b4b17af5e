"""Build profiles → trtllm-build argv, checked against trtllm-build 1.2.1's flag set (tests/data/upstream)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from nemo_build.errors import BuildError
from nemo_build.profiles import (
    DEFAULT_PROFILE,
    LLM_CUDA_GRAPH_KEYS,
    LLM_KEYS,
    LLM_KV_CACHE_KEYS,
    available_profiles,
    load_profile,
    parse_flag_overrides,
)
from tests.gpu_host.trtllm_build import parser as trtllm_build_parser
from tests.source_tree import PROJECT

UPSTREAM_LLM_API = json.loads((PROJECT / "tests/data/upstream/tensorrt_llm_llm_api.json").read_text())


def test_the_required_profiles_exist() -> None:
    assert {"h100-fp8-tp1", "h100-fp8-tp2-128k", "l40s-fp8-tp1", "a100-bf16-tp2"} <= set(available_profiles())
    assert DEFAULT_PROFILE == "h100-fp8-tp1"


def test_every_profile_names_its_runtime_and_the_engine_one_stays_the_default() -> None:
    assert set(available_profiles()) == set(available_profiles("engine")) | set(available_profiles("pytorch"))
    assert "h100-fp8-tp1-pytorch" in available_profiles("pytorch")
    assert load_profile(DEFAULT_PROFILE).runtime == "engine"


@pytest.mark.parametrize("name", available_profiles("engine"))
def test_profile_argv_is_accepted_by_trtllm_build(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    argv = profile.argv(tmp_path / "ckpt", tmp_path / "engine")
    assert argv[0] == "trtllm-build"
    args = trtllm_build_parser().parse_args(argv[1:])
    assert args.checkpoint_dir == str(tmp_path / "ckpt")
    assert args.output_dir == str(tmp_path / "engine")
    assert args.max_seq_len >= args.max_input_len
    assert args.kv_cache_type == "paged"
    assert args.remove_input_padding == "enable" and args.use_paged_context_fmha == "enable"
    assert (args.use_fp8_context_fmha == "enable") == (profile.kv_cache == "fp8")


def test_profiles_fix_what_the_issue_asks() -> None:
    h100 = load_profile("h100-fp8-tp1")
    long = load_profile("h100-fp8-tp2-128k")
    a100 = load_profile("a100-bf16-tp2")
    assert (h100.gpu, h100.precision, h100.tp) == ("H100", "fp8", 1)
    assert (long.tp, long.flags["max_seq_len"]) == (2, 131072)
    assert (load_profile("l40s-fp8-tp1").gpu, a100.precision, a100.tp) == ("L40S", "bf16", 2)


def test_the_flag_table_rejects_what_trtllm_build_rejects() -> None:
    parser = trtllm_build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--max_output_len", "10"])  # removed long before 1.2
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--gemm_plugin", "int8"])


def test_a_profile_file_path_works_and_bad_profiles_are_explained(tmp_path: Path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text(load_profile("h100-fp8-tp1").path.read_text().replace("max_batch_size: 64", "max_batch_size: 8"))
    assert load_profile(good).flags["max_batch_size"] == 8

    with pytest.raises(BuildError, match=r"no build profile 'h200'.*h100-fp8-tp1"):
        load_profile("h200")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ngpu: H100\nprecision: int4\nkv_cache: bf16\ntp: 1\n"
        "trtllm_build: {max_batch_size: 8, max_input_len: 4096, max_seq_len: 2048, output_dir: x, "
        "use_fp8_context_fmha: enable}\n"
    )
    with pytest.raises(BuildError) as err:
        load_profile(bad)
    message = str(err.value)
    for expected in (
        "precision is 'int4'",
        "trtllm_build lacks max_num_tokens",
        "may not set output_dir",
        "max_input_len is larger than max_seq_len",
        "use_fp8_context_fmha needs an FP8 KV cache",
    ):
        assert expected in message


def test_single_flags_can_be_overridden_and_are_validated_again() -> None:
    profile = load_profile("h100-fp8-tp1")
    bigger = profile.with_flags(parse_flag_overrides(["max_batch_size=128", "multiple_profiles=disable"]))
    assert (bigger.flags["max_batch_size"], bigger.flags["multiple_profiles"]) == (128, "disable")
    assert bigger.flags["max_seq_len"] == profile.flags["max_seq_len"]
    args = trtllm_build_parser().parse_args(bigger.argv(Path("c"), Path("e"))[1:])
    assert args.max_batch_size == 128
    with pytest.raises(BuildError, match="max_input_len is larger than max_seq_len"):
        profile.with_flags(parse_flag_overrides(["max_input_len=99999"]))
    with pytest.raises(BuildError, match="may not set output_dir"):
        profile.with_flags(parse_flag_overrides(["output_dir=/tmp/x"]))
    with pytest.raises(BuildError, match="write FLAG=VALUE"):
        parse_flag_overrides(["--max_batch_size", "8"])


def test_the_serving_section_gives_frontend_defaults_and_never_changes_the_build(tmp_path: Path) -> None:
    profile = load_profile("h100-fp8-tp1")
    assert profile.frontend_instances == 4
    assert "serving" not in profile.as_dict()  # what the engine manifest compares: serving changes never rebuild
    assert profile.with_flags({"max_batch_size": 32}).frontend_instances == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text(profile.path.read_text().replace("frontend_instances: 4", "frontend_instances: 0\n  threads: 2"))
    with pytest.raises(BuildError) as err:
        load_profile(bad)
    assert "serving.frontend_instances is 0 (a positive integer)" in str(err.value)
    assert "serving.threads is not a setting (accepted: frontend_instances)" in str(err.value)


def test_logit_gathering_is_a_profile_switch_trtllm_build_accepts(tmp_path: Path) -> None:
    """echo + logprobs need the context logits, logprobs > 0 the generation logits: off by default (memory)."""
    default = load_profile(DEFAULT_PROFILE)
    off = trtllm_build_parser().parse_args(default.argv(tmp_path / "c", tmp_path / "e")[1:])
    assert not off.gather_context_logits and not off.gather_generation_logits
    switches = ["gather_context_logits=true", "gather_generation_logits=true"]
    gathering = default.with_flags(parse_flag_overrides(switches))
    argv = gathering.argv(tmp_path / "c", tmp_path / "e")
    on = trtllm_build_parser().parse_args(argv[1:])
    assert on.gather_context_logits and on.gather_generation_logits
    assert "--gather_context_logits" in argv and "true" not in argv
    off_again = default.with_flags({"gather_context_logits": False})
    assert "--gather_context_logits" not in off_again.argv(tmp_path, tmp_path)
    with pytest.raises(BuildError, match="gather_context_logits is 'yes'"):
        default.with_flags({"gather_context_logits": "yes"})


def _upstream_fields(line: str, cls: str) -> set[str]:
    return set(UPSTREAM_LLM_API["lines"][line]["classes"][cls]["fields"])


@pytest.mark.parametrize("line", sorted(UPSTREAM_LLM_API["lines"]))
def test_the_llm_arguments_a_pytorch_profile_may_set_are_upstream_s_names(line: str) -> None:
    assert set(LLM_KEYS) <= _upstream_fields(line, "TorchLlmArgs")
    assert set(LLM_KV_CACHE_KEYS) <= _upstream_fields(line, "KvCacheConfig")
    assert set(LLM_CUDA_GRAPH_KEYS) <= _upstream_fields(line, "CudaGraphConfig")


@pytest.mark.parametrize("name", available_profiles("pytorch"))
def test_a_pytorch_profile_gives_llm_arguments_and_builds_no_engines(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    assert profile.flags == {} and {"max_batch_size", "max_seq_len", "max_num_tokens"} <= set(profile.llm)
    assert set(profile.llm) <= set(LLM_KEYS)
    assert profile.as_dict()["runtime"] == "pytorch" and "trtllm_build" not in profile.as_dict()
    with pytest.raises(BuildError, match="builds no engines"):
        profile.argv(tmp_path / "ckpt", tmp_path / "engine")
    with pytest.raises(BuildError, match="no trtllm_build flags"):
        profile.with_flags({"max_batch_size": 8})
    assert profile.with_flags({}) is profile  # `nemo-build engine` without --set reaches its own refusal


def test_nemo_build_engine_refuses_a_pytorch_profile_saying_what_builds_it(tmp_path: Path) -> None:
    from nemo_build.engine import build_engine

    with pytest.raises(BuildError, match=r"make engine PROFILE=h100-fp8-tp1-pytorch"):
        build_engine(tmp_path / "ckpt", tmp_path / "engine", load_profile("h100-fp8-tp1-pytorch"))


def test_the_pytorch_h100_profile_has_the_engine_profile_s_limits() -> None:
    engine, pytorch = load_profile("h100-fp8-tp1"), load_profile("h100-fp8-tp1-pytorch")
    assert (pytorch.gpu, pytorch.precision, pytorch.kv_cache, pytorch.tp) == ("H100", "fp8", "fp8", 1)
    for key in ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens"):
        assert pytorch.llm[key] == engine.flags[key], key
    assert pytorch.frontend_instances == engine.frontend_instances


def test_bad_runtimes_and_llm_sections_are_explained(tmp_path: Path) -> None:
    head = "name: p\ngpu: H100\nprecision: fp8\nkv_cache: fp8\ntp: 1\n"
    cases = {
        "runtime: tensorrt\ntrtllm_build: {}\n": "runtime is 'tensorrt' (accepted: engine, pytorch)",
        "runtime: pytorch\ntrtllm_build: {max_batch_size: 8}\n": "a pytorch profile has no trtllm_build section",
        "llm: {max_batch_size: 8}\ntrtllm_build: {}\n": "an engine profile has no llm section",
        "runtime: pytorch\n": "lacks llm",
        "runtime: pytorch\nllm: {max_batch_size: 8, max_input_len: 4096, max_seq_len: 2048, free_gpu_mem: 0.5, "
        "kv_cache_config: {free_gpu_memory_fraction: 1.5, dtype: fp8}, cuda_graph_config: {batch_sizes: [1, 16]}, "
        "enable_chunked_prefill: yes-please}\n": (
            "llm lacks max_num_tokens",
            "llm.free_gpu_mem is not an accepted LLM argument",
            "llm.kv_cache_config.dtype is not an accepted LLM argument",
            "free_gpu_memory_fraction is 1.5 (in (0, 1])",
            "batch_sizes is [1, 16] (integers in [1, max_batch_size])",
            "llm.enable_chunked_prefill is 'yes-please' (a bool)",
            "llm.max_input_len is larger than llm.max_seq_len",
        ),
    }
    for index, (body, expected) in enumerate(cases.items()):
        path = tmp_path / f"p{index}.yaml"
        path.write_text(head + body)
        with pytest.raises(BuildError) as err:
            load_profile(path)
        for phrase in (expected,) if isinstance(expected, str) else expected:
            assert phrase in str(err.value), (body, str(err.value))
