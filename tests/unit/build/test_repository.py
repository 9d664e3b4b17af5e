"""`nemo-build repository`: rendering, validation against Triton's ModelConfig, the manifest, refusals."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import nemo_build
from nemo_build.errors import BuildError
from nemo_build.profiles import load_profile
from nemo_build.repository import (
    GPU_DEFAULT_FRONTEND_INSTANCES,
    MANIFEST_FILE,
    TEMPLATES_DIR,
    add_repository_parser,
    read_repository_manifest,
    run_repository,
)
from tests.gpu_host.conformance import gpu_repository_problems
from tests.unit.build.model_configs import load

MODELS = ["chat", "ensemble", "postprocessing", "preprocessing", "tensorrt_llm"]


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nemo-build")
    add_repository_parser(parser.add_subparsers())
    return parser.parse_args(["repository", *argv])


def models_and_files(repository: Path) -> tuple[list[str], list[str]]:
    """(model directories, files) at the root of a rendered repository."""
    entries = sorted(repository.iterdir())
    return [p.name for p in entries if p.is_dir()], [p.name for p in entries if not p.is_dir()]


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    engine = tmp_path / "engine"
    engine.mkdir()
    build = {"max_batch_size": 64, "max_input_len": 8192, "max_seq_len": 16384}
    (engine / "config.json").write_text(json.dumps({"build_config": build}))
    return engine


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(
        json.dumps({"architecture": "LlamaForCausalLM", "max_position_embeddings": 1024})
    )
    return checkpoint


def render(tmp_path: Path, tekken_path: Path, *argv: str) -> Path:
    out = tmp_path / "repo"
    assert run_repository(parse_args("--tokenizer", str(tekken_path), "--out", str(out), *argv)) == 0
    return out


def test_gpu_repository_serves_the_engine_with_inflight_batching(
    tmp_path: Path, tekken_path: Path, engine_dir: Path
) -> None:
    out = render(tmp_path, tekken_path, "--target", "gpu", "--engine", str(engine_dir), "--no-kv-cache-reuse")
    assert models_and_files(out) == (MODELS, [MANIFEST_FILE])
    config = load(out / "tensorrt_llm" / "config.pbtxt")
    params = {key: value.string_value for key, value in config.parameters.items()}
    assert config.backend == "tensorrtllm" and config.model_transaction_policy.decoupled
    assert config.max_batch_size == 64
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["gpt_model_path"] == str(engine_dir.resolve())
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.9"
    assert params["batch_scheduler_policy"] == "max_utilization"
    assert params["enable_chunked_context"] == "true" and params["enable_kv_cache_reuse"] == "false"
    assert params["cancellation_check_period_ms"] == "100"
    assert (out / "tensorrt_llm" / "1").is_dir() and not (out / "tensorrt_llm" / "1" / "model.py").exists()
    assert gpu_repository_problems(out) == []
    pre = {key: value.string_value for key, value in load(out / "preprocessing" / "config.pbtxt").parameters.items()}
    assert (pre["max_input_len"], pre["max_seq_len"]) == ("8192", "16384")
    assert (out / pre["tokenizer_file"]).read_bytes() == tekken_path.read_bytes()


def test_an_engine_whose_input_limit_is_its_sequence_limit_renders(tmp_path: Path, tekken_path: Path) -> None:
    # every shipped profile builds so (trtllm-build keeps both values in build_config)
    engine = tmp_path / "engine"
    engine.mkdir()
    build = {"max_batch_size": 64, "max_input_len": 16384, "max_seq_len": 16384}
    (engine / "config.json").write_text(json.dumps({"build_config": build}))
    out = render(tmp_path, tekken_path, "--target", "gpu", "--engine", str(engine))
    pre = {key: value.string_value for key, value in load(out / "preprocessing" / "config.pbtxt").parameters.items()}
    assert (pre["max_input_len"], pre["max_seq_len"]) == ("16384", "16384")


def test_replace_swaps_in_a_new_repository(tmp_path: Path, tekken_path: Path, engine_dir: Path) -> None:
    out = render(tmp_path, tekken_path, "--target", "gpu", "--engine", str(engine_dir))
    (out / "stale.txt").write_text("from the last render")
    assert run_repository(parse_args(
        "--tokenizer", str(tekken_path), "--out", str(out), "--target", "gpu", "--engine", str(engine_dir),
        "--max-batch-size", "8", "--replace",
    )) == 0  # fmt: skip
    assert not (out / "stale.txt").exists()
    assert load(out / "tensorrt_llm" / "config.pbtxt").max_batch_size == 8
    assert read_repository_manifest(out).settings["max_batch_size"] == 8  # the new render's manifest
    assert sorted(p.name for p in out.parent.iterdir()) == ["engine", "repo"]


def test_the_manifest_says_what_the_repository_serves(
    tmp_path: Path, tekken_path: Path, engine_dir: Path, checkpoint_dir: Path
) -> None:
    gpu = render(
        tmp_path / "g", tekken_path, "--target", "gpu", "--engine", str(engine_dir), "--served-model-name", "nemo"
    )
    data = json.loads((gpu / MANIFEST_FILE).read_text())
    assert data["kind"] == "nemo-build repository" and data["format"] == 1
    assert data["nemo_build"] == nemo_build.__version__
    assert (data["target"], data["model_dir"], data["served_model_name"]) == ("gpu", str(engine_dir.resolve()), "nemo")
    assert data["models"] == MODELS and data["tokenizer_file"] == "preprocessing/tekken.json"
    assert data["settings"]["max_batch_size"] == 64 and data["settings"]["enable_kv_cache_reuse"] is True
    params = load(gpu / "tensorrt_llm" / "config.pbtxt").parameters
    assert params["gpt_model_path"].string_value == data["model_dir"]  # the manifest and the config agree

    cpu = render(tmp_path / "c", tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir))
    manifest = read_repository_manifest(cpu)
    assert (manifest.target, manifest.model_dir, manifest.models) == ("cpu", checkpoint_dir.resolve(), tuple(MODELS))
    assert manifest.repository == cpu and manifest.nemo_build_version == nemo_build.__version__
    params = load(cpu / "tensorrt_llm" / "config.pbtxt").parameters
    assert params["checkpoint_dir"].string_value == str(manifest.model_dir)


def _no_manifest(repo: Path) -> None:
    (repo / MANIFEST_FILE).unlink()


def _edit(**changes: object) -> Callable[[Path], None]:
    def edit(repo: Path) -> None:
        data = json.loads((repo / MANIFEST_FILE).read_text())
        (repo / MANIFEST_FILE).write_text(json.dumps({**data, **changes}))

    return edit


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (shutil.rmtree, "is not a rendered model repository: no such directory"),
        (_no_manifest, "is not a rendered model repository: it has no manifest.json .not rendered by `nemo-build"),
        (lambda repo: (repo / MANIFEST_FILE).write_text("{not json"), "not readable JSON"),
        (_edit(kind="engine"), "is not a `nemo-build repository` manifest"),
        (_edit(format=2, nemo_build="9.0"), "has format 2 .nemo_build 9.0.; this nemo_build .* reads format 1"),
        (_edit(target="tpu", model_dir=""), "damaged: target 'tpu' .*; model_dir ''"),
        (lambda repo: shutil.rmtree(repo / "chat"), "lists model.s. chat that"),
    ],
)
def test_a_repository_without_a_usable_manifest_is_refused_with_how_to_re_render_it(
    tmp_path: Path, tekken_path: Path, checkpoint_dir: Path, damage: Callable[[Path], None], phrase: str
) -> None:
    repo = render(tmp_path, tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir))
    damage(repo)
    with pytest.raises(BuildError, match=phrase) as refused:
        read_repository_manifest(repo)
    assert "nemo-build repository --target gpu|cpu" in str(refused.value)
    assert f"--out {repo} --replace" in str(refused.value)


def test_cpu_and_gpu_tensorrt_llm_expose_the_same_tensors(
    tmp_path: Path, tekken_path: Path, engine_dir: Path, checkpoint_dir: Path
) -> None:
    gpu = render(tmp_path / "g", tekken_path, "--target", "gpu", "--engine", str(engine_dir))
    cpu = render(tmp_path / "c", tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir))
    gpu_config, cpu_config = load(gpu / "tensorrt_llm" / "config.pbtxt"), load(cpu / "tensorrt_llm" / "config.pbtxt")
    assert cpu_config.backend == "python" and (cpu / "tensorrt_llm" / "1" / "model.py").is_file()
    assert list(cpu_config.input) == list(gpu_config.input)
    assert list(cpu_config.output) == list(gpu_config.output)
    names = {tensor.name for tensor in cpu_config.input}
    assert {"input_ids", "request_output_len", "end_id", "streaming", "seed", "stop_words_list", "stop"} <= names
    cpu_params = {key: value.string_value for key, value in cpu_config.parameters.items()}
    assert cpu_params["checkpoint_dir"] == str(checkpoint_dir.resolve())
    assert cpu_config.max_batch_size == 16  # the CPU default; lengths from the checkpoint
    pre = load(cpu / "preprocessing" / "config.pbtxt").parameters
    assert (pre["max_input_len"].string_value, pre["max_seq_len"].string_value) == ("512", "1024")


def test_flags_override_the_engine_limits(tmp_path: Path, tekken_path: Path, engine_dir: Path) -> None:
    out = render(
        tmp_path, tekken_path, "--target", "gpu", "--engine", str(engine_dir), "--max-batch-size", "8",
        "--preprocessing-instances", "3",
    )  # fmt: skip
    assert load(out / "tensorrt_llm" / "config.pbtxt").max_batch_size == 8
    assert load(out / "preprocessing" / "config.pbtxt").instance_group[0].count == 3
    assert gpu_repository_problems(out) == []


def test_the_cpu_runtime_takes_its_prefill_chunk_and_kv_budget_from_the_flags(
    tmp_path: Path, tekken_path: Path, checkpoint_dir: Path
) -> None:
    out = render(
        tmp_path, tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir), "--max-num-tokens", "512",
        "--max-tokens-in-paged-kv-cache", "4096",
    )  # fmt: skip
    params = {key: value.string_value for key, value in load(out / "tensorrt_llm" / "config.pbtxt").parameters.items()}
    assert params["max_num_tokens"] == "512" and params["max_tokens_in_paged_kv_cache"] == "4096"
    default = render(tmp_path / "default", tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir))
    params = {k: v.string_value for k, v in load(default / "tensorrt_llm" / "config.pbtxt").parameters.items()}
    assert params["max_num_tokens"] == "8192" and params["max_tokens_in_paged_kv_cache"] == "0"


def copy_templates(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates, ignore=shutil.ignore_patterns("__pycache__"))
    return templates


def test_an_unfilled_placeholder_is_refused_and_nothing_is_written(
    tmp_path: Path, tekken_path: Path, checkpoint_dir: Path
) -> None:
    templates = copy_templates(tmp_path)
    config = templates / "postprocessing" / "config.pbtxt"
    config.write_text(config.read_text() + 'parameters { key: "x" value: { string_value: "${no_such_value}" } }\n')
    out = tmp_path / "repo"
    args = parse_args(
        "--target", "cpu", "--checkpoint", str(checkpoint_dir), "--tokenizer", str(tekken_path), "--out", str(out),
        "--templates", str(templates),
    )  # fmt: skip
    with pytest.raises(BuildError, match="no_such_value"):
        run_repository(args)
    assert not out.exists()


def test_a_config_triton_cannot_parse_is_refused(tmp_path: Path, tekken_path: Path, checkpoint_dir: Path) -> None:
    templates = copy_templates(tmp_path)
    config = templates / "chat" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 0", "max_batch_size: zero"))
    out = tmp_path / "repo"
    args = parse_args(
        "--target", "cpu", "--checkpoint", str(checkpoint_dir), "--tokenizer", str(tekken_path), "--out", str(out),
        "--templates", str(templates),
    )  # fmt: skip
    with pytest.raises(BuildError, match="not a valid Triton model config"):
        run_repository(args)


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--target", "gpu", "--checkpoint", "{ckpt}"], "pass --engine"),
        (["--target", "cpu", "--engine", "{engine}"], "pass --checkpoint"),
        (["--target", "gpu", "--engine", "{ckpt}"], "build_config"),
        (["--target", "cpu", "--checkpoint", "{engine}"], "not a TensorRT-LLM checkpoint"),
        (["--target", "cpu", "--checkpoint", "{ckpt}", "--max-input-len", "4097"], "may not exceed max_seq_len"),
        (
            ["--target", "cpu", "--checkpoint", "{ckpt}", "--max-tokens-in-paged-kv-cache", "1000"],
            r"max_tokens_in_paged_kv_cache 1000 \(0, or at least max_seq_len 1024",
        ),
        (["--target", "gpu", "--engine", "{engine}", "--max-num-tokens", "64"], "--max-num-tokens only apply to"),
        (
            ["--target", "gpu", "--engine", "{engine}", "--max-tokens-in-paged-kv-cache", "64"],
            "--max-tokens-in-paged-kv-cache only apply to --target cpu",
        ),
    ],
)
def test_wrong_inputs_are_refused_with_what_is_accepted(
    tmp_path: Path, tekken_path: Path, engine_dir: Path, checkpoint_dir: Path, argv: list[str], phrase: str
) -> None:
    argv = [a.format(ckpt=checkpoint_dir, engine=engine_dir) for a in argv]
    with pytest.raises(BuildError, match=phrase):
        run_repository(parse_args(*argv, "--tokenizer", str(tekken_path), "--out", str(tmp_path / "repo")))


def test_an_existing_repository_is_not_overwritten(tmp_path: Path, tekken_path: Path, checkpoint_dir: Path) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BuildError, match="not empty"):
        run_repository(
            parse_args(
                "--target",
                "cpu",
                "--checkpoint",
                str(checkpoint_dir),
                "--tokenizer",
                str(tekken_path),
                "--out",
                str(out),
            )
        )
    assert (out / "keep.txt").read_text() == "mine"


FRONTEND_MODELS = ("chat", "ensemble", "preprocessing", "postprocessing")


def instance_counts(repository: Path) -> dict[str, int]:
    return {model: load(repository / model / "config.pbtxt").instance_group[0].count for model in FRONTEND_MODELS}


def test_frontend_instances_scale_every_python_frontend_model(
    tmp_path: Path, tekken_path: Path, checkpoint_dir: Path
) -> None:
    default = render(tmp_path / "d", tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir))
    assert instance_counts(default) == dict.fromkeys(FRONTEND_MODELS, 1)
    scaled = render(
        tmp_path / "s", tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir),
        "--frontend-instances", "3", "--postprocessing-instances", "2",
    )  # fmt: skip
    assert instance_counts(scaled) == {"chat": 3, "ensemble": 3, "preprocessing": 3, "postprocessing": 2}
    assert read_repository_manifest(scaled).settings["frontend_instances"] == 3
    with pytest.raises(BuildError, match=r"frontend_instances 0 \(must be >= 1\)"):
        render(tmp_path / "z", tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir),
               "--frontend-instances", "0")  # fmt: skip


def test_gpu_frontend_instances_default_to_the_engine_build_profile(
    tmp_path: Path, tekken_path: Path, engine_dir: Path
) -> None:
    from nemo_build.manifest import write_manifest
    from nemo_build.profiles import load_profile

    no_manifest = render(tmp_path / "a", tekken_path, "--target", "gpu", "--engine", str(engine_dir))
    assert instance_counts(no_manifest) == dict.fromkeys(FRONTEND_MODELS, GPU_DEFAULT_FRONTEND_INSTANCES)
    profile = load_profile("h200-fp8-tp1")
    assert profile.frontend_instances is not None
    write_manifest(engine_dir, {"inputs": {"profile": profile.as_dict()}})
    from_profile = render(tmp_path / "b", tekken_path, "--target", "gpu", "--engine", str(engine_dir))
    assert instance_counts(from_profile) == dict.fromkeys(FRONTEND_MODELS, profile.frontend_instances)
    flag = render(
        tmp_path / "c", tekken_path, "--target", "gpu", "--engine", str(engine_dir), "--frontend-instances", "2"
    )
    assert instance_counts(flag) == dict.fromkeys(FRONTEND_MODELS, 2)
    assert gpu_repository_problems(flag) == []


def test_stand_in_serves_the_tensor_contract_with_no_model(tmp_path: Path, tekken_path: Path, engine_dir: Path) -> None:
    from nemo_build.profiles import DEFAULT_PROFILE, load_profile

    out = render(tmp_path, tekken_path, "--target", "stand-in", "--stand-in-tokens-per-s", "1500")
    gpu = render(tmp_path / "g", tekken_path, "--target", "gpu", "--engine", str(engine_dir))
    assert models_and_files(out) == (MODELS, [MANIFEST_FILE])
    config, gpu_config = load(out / "tensorrt_llm" / "config.pbtxt"), load(gpu / "tensorrt_llm" / "config.pbtxt")
    assert config.backend == "python" and config.model_transaction_policy.decoupled
    assert list(config.input) == list(gpu_config.input) and list(config.output) == list(gpu_config.output)
    assert "stand_in" in (out / "tensorrt_llm" / "1" / "model.py").read_text()
    params = {key: value.string_value for key, value in config.parameters.items()}
    assert (params["tokens_per_s"], params["end_after_tokens"]) == ("1500.0", "0")
    flags = load_profile(DEFAULT_PROFILE).flags
    assert config.max_batch_size == flags["max_batch_size"]
    pre = load(out / "preprocessing" / "config.pbtxt").parameters
    assert int(pre["max_seq_len"].string_value) == flags["max_seq_len"]
    manifest = read_repository_manifest(out)
    assert manifest.target == "stand-in" and manifest.settings["stand_in_tokens_per_s"] == 1500.0


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--target", "stand-in", "--checkpoint", "{ckpt}"], "pass neither --engine nor --checkpoint"),
        (
            ["--target", "cpu", "--checkpoint", "{ckpt}", "--stand-in-tokens-per-s", "9"],
            "only apply to --target stand-in",
        ),
        (["--target", "stand-in", "--stand-in-tokens-per-s", "0"], "stand_in_tokens_per_s 0.0 \\(a positive number\\)"),
        (["--target", "stand-in", "--stand-in-end-after-tokens", "-1"], "stand_in_end_after_tokens -1"),
    ],
)
def test_stand_in_options_are_checked(
    tmp_path: Path, tekken_path: Path, checkpoint_dir: Path, argv: list[str], phrase: str
) -> None:
    argv = [a.format(ckpt=checkpoint_dir) for a in argv]
    with pytest.raises(BuildError, match=phrase):
        run_repository(parse_args(*argv, "--tokenizer", str(tekken_path), "--out", str(tmp_path / "repo")))


def test_the_ensemble_knows_which_logits_the_engine_returns(
    tmp_path: Path, tekken_path: Path, engine_dir: Path
) -> None:
    """echo + logprobs needs gather_context_logits, logprobs > 0 gather_generation_logits: the ensemble refuses
    them by name on an engine built without (the default profiles); the CPU runtime always returns both."""

    def ensemble_params(out: Path) -> dict[str, str]:
        return {key: value.string_value for key, value in load(out / "ensemble" / "config.pbtxt").parameters.items()}

    plain = render(tmp_path / "plain", tekken_path, "--target", "gpu", "--engine", str(engine_dir))
    assert (ensemble_params(plain)["context_logits"], ensemble_params(plain)["generation_logits"]) == ("false", "false")
    config = json.loads((engine_dir / "config.json").read_text())
    config["build_config"]["gather_context_logits"] = True
    (engine_dir / "config.json").write_text(json.dumps(config))
    gathering = render(tmp_path / "gathering", tekken_path, "--target", "gpu", "--engine", str(engine_dir))
    assert ensemble_params(gathering)["context_logits"] == "true"
    assert ensemble_params(gathering)["generation_logits"] == "false"


def built_with(engine_dir: Path, profile: str) -> Path:
    """``engine_dir`` as `nemo-build engine` leaves it: the model's sizes in its config, the profile in its manifest."""
    config = json.loads((engine_dir / "config.json").read_text())
    config["pretrained_config"] = {
        "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_size": 16, "vocab_size": 131072,
    }  # fmt: skip
    (engine_dir / "config.json").write_text(json.dumps(config))
    manifest = {"kind": "nemo-build engine", "inputs": {"profile": load_profile(profile).as_dict()}}
    (engine_dir / "manifest.json").write_text(json.dumps(manifest))
    return engine_dir


def test_adapters_are_served_by_engines_built_with_lora_up_to_their_rank(
    tmp_path: Path, tekken_path: Path, engine_dir: Path
) -> None:
    engines = built_with(engine_dir, "h100-fp8-tp1")  # lora: max_rank 64
    gpu = ["--target", "gpu", "--engine", str(engines), "--lora-dir", "/opt/nemo/lora"]
    for rank, out in (([], "profile"), (["--max-lora-rank", "64"], "at-most")):
        chat = load(render(tmp_path / out, tekken_path, *gpu, *rank) / "chat" / "config.pbtxt").parameters
        assert (chat["lora_dir"].string_value, chat["max_lora_rank"].string_value) == ("/opt/nemo/lora", "64")
    with pytest.raises(BuildError, match=r"--max-lora-rank 128 is above the max_lora_rank 64 the engines in .* use at"):
        render(tmp_path / "above", tekken_path, *gpu, "--max-lora-rank", "128")


def test_adapters_are_refused_for_engines_built_without_the_lora_plugin(
    tmp_path: Path, tekken_path: Path, engine_dir: Path
) -> None:
    engines = built_with(engine_dir, "h200-fp8-tp1")  # no lora section
    with pytest.raises(BuildError, match="profile 'h200-fp8-tp1', which has no lora section: they have no LoRA plugin"):
        render(tmp_path / "repo", tekken_path, "--target", "gpu", "--engine", str(engines), "--lora-dir", "/lora")
    assert render(tmp_path / "base", tekken_path, "--target", "gpu", "--engine", str(engines)).is_dir()
