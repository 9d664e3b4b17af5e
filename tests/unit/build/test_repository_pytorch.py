"""`nemo-build repository --target pytorch`: the `tensorrt_llm` model on TensorRT-LLM's LLM API (PyTorch backend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from nemo_build.errors import BuildError
from nemo_build.profiles import PROFILES_DIR, load_profile
from nemo_build.repository import (
    HF_TOKENIZER_DIR,
    MANIFEST_FILE,
    profile_llm_settings,
    read_repository_manifest,
    run_repository,
)
from nemo_runtime.llm_api import LlmSettings
from tests.unit.build.test_repository import MODELS, models_and_files, parse_args


def load(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


@pytest.fixture
def hf_checkpoint(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "hf"
    checkpoint.mkdir()
    config = {"architectures": ["MistralForCausalLM"], "max_position_embeddings": 4096, "vocab_size": 131072}
    (checkpoint / "config.json").write_text(json.dumps(config))
    return checkpoint


@pytest.fixture
def hf_tokenizer(tmp_path: Path) -> Path:
    directory = tmp_path / "tokenizer"
    directory.mkdir()
    (directory / "tokenizer.json").write_text("{}")
    return directory


def render(tmp_path: Path, tekken_path: Path, *argv: str) -> Path:
    out = tmp_path / "repo"
    assert (
        run_repository(parse_args("--tokenizer", str(tekken_path), "--out", str(out), "--target", "pytorch", *argv))
        == 0
    )
    return out


def test_the_pytorch_repository_runs_the_llm_api_behind_the_same_tensors(
    tmp_path: Path, tekken_path: Path, hf_checkpoint: Path
) -> None:
    out = render(tmp_path, tekken_path, "--checkpoint", str(hf_checkpoint))
    assert models_and_files(out) == (MODELS, [MANIFEST_FILE])
    config = load(out / "tensorrt_llm" / "config.pbtxt")
    assert config.backend == "python" and config.model_transaction_policy.decoupled
    assert (out / "tensorrt_llm" / "1" / "model.py").is_file()
    # the tokenizer for guided decoding is written into the repository from the Tekken file
    assert (out / HF_TOKENIZER_DIR / "tokenizer.json").is_file()
    params = parameters(config)
    assert params["checkpoint_dir"] == str(hf_checkpoint.resolve()) and params["tokenizer_dir"] == HF_TOKENIZER_DIR
    # limits and LLM arguments from the default profile (h100-fp8-tp1), the sequence capped by the checkpoint
    assert config.max_batch_size == 64 and params["max_seq_len"] == "4096" and params["max_num_tokens"] == "8192"
    assert params["tokens_per_block"] == "64" and params["tensor_parallel_size"] == "1"
    assert params["kv_cache_dtype"] == "auto" and params["cuda_graph_batch_sizes"] == ""
    assert params["enable_chunked_context"] == params["enable_kv_cache_reuse"] == "true"
    assert params["generation_logits"] == "false"  # the profile gathers no logits: the ensemble refuses by name
    assert load(out / "chat" / "config.pbtxt").instance_group[0].count == 4  # the profile's frontend_instances
    # every parameter the engine reads is rendered, and reads back as the settings
    settings = LlmSettings.from_parameters(params, lambda name: out / params[name])
    assert settings.model_dir == hf_checkpoint.resolve() and settings.tokenizer_dir == out / HF_TOKENIZER_DIR
    assert (settings.max_batch_size, settings.max_seq_len, settings.tokens_per_block) == (64, 4096, 64)
    manifest = read_repository_manifest(out)
    assert manifest.target == "pytorch" and manifest.model_dir == hf_checkpoint.resolve()
    assert manifest.settings["tokenizer_dir"] is None and manifest.settings["max_num_tokens"] == 8192


def test_the_cpu_and_pytorch_models_share_the_tensor_contract(
    tmp_path: Path, tekken_path: Path, hf_checkpoint: Path, hf_tokenizer: Path
) -> None:
    pytorch = render(
        tmp_path / "p", tekken_path, "--checkpoint", str(hf_checkpoint), "--hf-tokenizer", str(hf_tokenizer)
    )
    cpu_checkpoint = tmp_path / "trtllm"
    cpu_checkpoint.mkdir()
    (cpu_checkpoint / "config.json").write_text(json.dumps({"architecture": "X", "max_position_embeddings": 1024}))
    cpu = tmp_path / "c" / "repo"
    run_repository(parse_args("--tokenizer", str(tekken_path), "--out", str(cpu), "--target", "cpu",
                              "--checkpoint", str(cpu_checkpoint)))  # fmt: skip
    ours, theirs = load(pytorch / "tensorrt_llm" / "config.pbtxt"), load(cpu / "tensorrt_llm" / "config.pbtxt")
    assert list(ours.input) == list(theirs.input) and list(ours.output) == list(theirs.output)


def test_flags_and_a_profile_set_the_llm_arguments(
    tmp_path: Path, tekken_path: Path, hf_checkpoint: Path, hf_tokenizer: Path
) -> None:
    out = render(
        tmp_path, tekken_path, "--checkpoint", str(hf_checkpoint), "--profile", "a100-bf16-tp2",
        "--max-batch-size", "8", "--cuda-graph-batch-sizes", "8, 1,2", "--kv-cache-dtype", "fp8",
        "--hf-tokenizer", str(hf_tokenizer), "--no-kv-cache-reuse", "--max-num-tokens", "2048",
        "--kv-cache-free-gpu-mem-fraction", "0.8",
    )  # fmt: skip
    params = parameters(load(out / "tensorrt_llm" / "config.pbtxt"))
    assert params["cuda_graph_batch_sizes"] == "1,2,8" and params["kv_cache_dtype"] == "fp8"
    assert params["tokenizer_dir"] == str(hf_tokenizer.resolve()) and not (out / HF_TOKENIZER_DIR).exists()
    assert params["enable_kv_cache_reuse"] == "false" and params["max_num_tokens"] == "2048"
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.8" and params["max_batch_size"] == "8"
    assert params["tensor_parallel_size"] == str(load_profile("a100-bf16-tp2").tp)
    assert read_repository_manifest(out).settings["tokenizer_dir"] == str(hf_tokenizer)


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--target", "pytorch", "--engine", "{ckpt}"], "pass --checkpoint DIR"),
        (["--target", "pytorch", "--checkpoint", "{trtllm}"], "not a Hugging Face checkpoint config"),
        (
            ["--target", "cpu", "--checkpoint", "{trtllm}", "--cuda-graph-batch-sizes", "1"],
            "only apply to --target pytorch",
        ),
        (
            ["--target", "cpu", "--checkpoint", "{trtllm}", "--profile", "h100-fp8-tp1"],
            "only apply to --target pytorch",
        ),
        (["--target", "pytorch", "--checkpoint", "{ckpt}", "--cuda-graph-batch-sizes", "1,x"], "integers separated"),
        (
            ["--target", "pytorch", "--checkpoint", "{ckpt}", "--cuda-graph-batch-sizes", "128"],
            "each in \\[1, max_batch",
        ),
        (["--target", "pytorch", "--checkpoint", "{ckpt}", "--hf-tokenizer", "{ckpt}"], "tokenizer.json is missing"),
        (
            ["--target", "pytorch", "--checkpoint", "{ckpt}", "--stand-in-tokens-per-s", "9"],
            "only apply to --target stand-in",
        ),
        (["--target", "pytorch", "--checkpoint", "{ckpt}", "--tokens-per-block", "0"], "tokens_per_block 0"),
    ],
)
def test_wrong_pytorch_inputs_are_refused_with_what_is_accepted(
    tmp_path: Path, tekken_path: Path, hf_checkpoint: Path, argv: list[str], phrase: str
) -> None:
    trtllm = tmp_path / "trtllm"
    trtllm.mkdir()
    (trtllm / "config.json").write_text(json.dumps({"architecture": "X", "max_position_embeddings": 1024}))
    argv = [a.format(ckpt=hf_checkpoint, trtllm=trtllm) for a in argv]
    with pytest.raises(BuildError, match=phrase):
        run_repository(parse_args(*argv, "--tokenizer", str(tekken_path), "--out", str(tmp_path / "repo")))
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("profile", sorted(path.stem for path in PROFILES_DIR.glob("*.yaml")))
def test_every_shipped_profile_gives_the_pytorch_settings(profile: str) -> None:
    settings = profile_llm_settings(load_profile(profile))
    assert {"max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens", "tokens_per_block"} <= set(settings)
    assert all(
        settings[key] >= 1 for key in ("max_batch_size", "max_seq_len", "max_num_tokens", "tensor_parallel_size")
    )


def test_a_pytorch_profile_s_llm_arguments_become_the_repository_s(
    tmp_path: Path, tekken_path: Path, hf_checkpoint: Path
) -> None:
    profile = load_profile("h100-fp8-tp1-pytorch")
    settings = profile_llm_settings(profile)
    kv, graphs = profile.llm["kv_cache_config"], profile.llm["cuda_graph_config"]
    assert settings["kv_cache_free_gpu_mem_fraction"] == kv["free_gpu_memory_fraction"]
    assert settings["enable_kv_cache_reuse"] == kv["enable_block_reuse"]
    assert settings["tokens_per_block"] == kv["tokens_per_block"]
    assert settings["enable_chunked_context"] == profile.llm["enable_chunked_prefill"]
    assert settings["cuda_graph_batch_sizes"] == tuple(graphs["batch_sizes"])
    assert settings["max_num_tokens"] == profile.llm["max_num_tokens"]

    out = render(tmp_path, tekken_path, "--checkpoint", str(hf_checkpoint), "--profile", profile.name)
    params = parameters(load(out / "tensorrt_llm" / "config.pbtxt"))
    assert params["cuda_graph_batch_sizes"] == ",".join(str(size) for size in graphs["batch_sizes"])
    assert params["kv_cache_free_gpu_mem_fraction"] == str(kv["free_gpu_memory_fraction"])
    assert params["max_seq_len"] == "4096"  # capped by the checkpoint's max_position_embeddings

    flags = ("--kv-cache-free-gpu-mem-fraction", "0.5", "--no-chunked-context", "--no-kv-cache-reuse",
             "--cuda-graph-batch-sizes", "1,2")  # fmt: skip
    out = render(tmp_path / "flags", tekken_path, "--checkpoint", str(hf_checkpoint), "--profile", profile.name, *flags)
    params = parameters(load(out / "tensorrt_llm" / "config.pbtxt"))
    assert (params["kv_cache_free_gpu_mem_fraction"], params["cuda_graph_batch_sizes"]) == ("0.5", "1,2")
    assert params["enable_chunked_context"] == params["enable_kv_cache_reuse"] == "false"


def test_the_manifest_records_the_gpu_and_tensorrt_llm_it_was_rendered_for(
    tmp_path: Path, tekken_path: Path, hf_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nemo_build import preflight

    monkeypatch.setattr(preflight, "probe_gpus", lambda: (preflight.Gpu("NVIDIA H100 80GB HBM3", (9, 0)),))
    monkeypatch.setattr(preflight, "installed_trtllm_version", lambda: "1.2.1")
    out = render(tmp_path, tekken_path, "--checkpoint", str(hf_checkpoint))
    manifest = read_repository_manifest(out)
    assert manifest.runtime_environment == {"gpu": "NVIDIA H100 80GB HBM3", "tensorrt_llm": "1.2.1"}

    monkeypatch.setattr(preflight, "probe_gpus", lambda: ())
    monkeypatch.setattr(preflight, "installed_trtllm_version", lambda: None)
    out = render(tmp_path / "cpu", tekken_path, "--checkpoint", str(hf_checkpoint))
    assert read_repository_manifest(out).runtime_environment == {"gpu": None, "tensorrt_llm": None}
    data = json.loads((out / MANIFEST_FILE).read_text())
    data["runtime_environment"] = {"gpu": 3}
    (out / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BuildError, match="runtime_environment"):
        read_repository_manifest(out)
