"""`nemo-build repository`: the `lora_requests` model that publishes the engine runtime's LoRA metrics (the C++
tensorrtllm backend publishes none), rendered for `gpu` with adapters only, with one instance, and the `chat`
model's parameter that makes it report there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tritonclient.grpc.model_config_pb2 import TYPE_INT32, TYPE_STRING, ModelInstanceGroup

from nemo_build.errors import BuildError
from nemo_build.manifest import write_manifest
from nemo_build.profiles import load_profile
from nemo_build.repository import (
    LORA_REQUESTS_MODEL,
    TEMPLATES_DIR,
    RepositorySettings,
    read_repository_manifest,
    render_repository,
)
from nemo_serving.lora_requests import RECORDED, REPORT_INPUTS
from tests.gpu_host.conformance import gpu_repository_problems
from tests.unit.build.model_configs import load
from tests.unit.build.test_repository import MODELS, render

# Mistral NeMo 12B's sizes, as trtllm-build writes them into the engine's config.json
NEMO_PRETRAINED = {
    "architecture": "MistralForCausalLM",
    "hidden_size": 5120,
    "intermediate_size": 14336,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_size": 128,
    "vocab_size": 131072,
}


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    engine = tmp_path / "engine"
    engine.mkdir()
    build = {"max_batch_size": 64, "max_input_len": 8192, "max_seq_len": 16384}
    (engine / "config.json").write_text(json.dumps({"build_config": build, "pretrained_config": NEMO_PRETRAINED}))
    return engine


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    return adapters


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    config = {**NEMO_PRETRAINED, "max_position_embeddings": 1024}
    (checkpoint / "config.json").write_text(json.dumps(config))
    return checkpoint


def parameters(repository: Path, model: str) -> dict[str, str]:
    return {key: value.string_value for key, value in load(repository / model / "config.pbtxt").parameters.items()}


def test_a_gpu_repository_with_adapters_has_one_lora_requests_model_the_chat_model_reports_to(
    tmp_path: Path, tekken_path: Path, engine_dir: Path, lora_dir: Path
) -> None:
    profile = load_profile("h100-fp8-tp1")  # engines built with LoRA: its lora section sizes the GPU's adapters
    write_manifest(engine_dir, {"inputs": {"profile": profile.as_dict()}})
    out = render(tmp_path, tekken_path, "--target", "gpu", "--engine", str(engine_dir), "--lora-dir", str(lora_dir))
    assert read_repository_manifest(out).models == tuple(sorted([*MODELS, LORA_REQUESTS_MODEL]))
    assert gpu_repository_problems(out) == []

    config = load(out / LORA_REQUESTS_MODEL / "config.pbtxt")
    assert config.backend == "python" and not config.model_transaction_policy.decoupled
    assert profile.frontend_instances and profile.frontend_instances > 1  # many chat processes, one publisher
    assert [(group.count, group.kind) for group in config.instance_group] == [(1, ModelInstanceGroup.KIND_CPU)]
    assert parameters(out, LORA_REQUESTS_MODEL) == {"max_lora": str(profile.lora["max_loras"])}
    # the tensors the frontends' reporter sends and reads (nemo_serving.lora_requests)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        (n, TYPE_STRING, [-1]) for n in REPORT_INPUTS
    ]
    assert [(t.name, t.data_type) for t in config.output] == [(RECORDED, TYPE_INT32)]
    assert (out / LORA_REQUESTS_MODEL / "1" / "model.py").is_file()

    assert parameters(out, "chat")["lora_requests_model"] == LORA_REQUESTS_MODEL
    assert read_repository_manifest(out).settings["lora_metrics_from_frontends"] is True


def test_without_adapters_or_on_the_python_runtimes_there_is_no_lora_requests_model(
    tmp_path: Path, tekken_path: Path, engine_dir: Path, lora_dir: Path, checkpoint_dir: Path
) -> None:
    gpu = render(tmp_path / "g", tekken_path, "--target", "gpu", "--engine", str(engine_dir))
    cpu = render(
        tmp_path / "c", tekken_path, "--target", "cpu", "--checkpoint", str(checkpoint_dir), "--lora-dir", str(lora_dir)
    )  # the CPU runtime publishes the LoRA metrics itself
    for repository in (gpu, cpu):
        assert read_repository_manifest(repository).models == tuple(MODELS)
        assert parameters(repository, "chat")["lora_requests_model"] == ""


def test_a_cpu_repository_may_render_it_to_check_the_frontends_reports(
    tmp_path: Path, tekken_path: Path, checkpoint_dir: Path, lora_dir: Path
) -> None:
    settings = RepositorySettings(
        target="cpu", model_dir=checkpoint_dir, max_batch_size=4, max_input_len=256, max_seq_len=512,
        lora_dir=lora_dir, lora_metrics_from_frontends=True, max_loras=3, frontend_instances=2,
    )  # fmt: skip
    models = render_repository(TEMPLATES_DIR, settings, tekken_path, tmp_path / "repo")
    assert LORA_REQUESTS_MODEL in models
    assert parameters(tmp_path / "repo", LORA_REQUESTS_MODEL) == {"max_lora": "3"}
    assert load(tmp_path / "repo" / LORA_REQUESTS_MODEL / "config.pbtxt").instance_group[0].count == 1
    assert parameters(tmp_path / "repo", "chat")["lora_requests_model"] == LORA_REQUESTS_MODEL


@pytest.mark.parametrize(
    ("target", "with_adapters"),
    [("pytorch", True), ("stand-in", False), ("cpu", False), ("gpu", False)],
)
def test_frontend_lora_metrics_are_refused_where_nothing_would_report_or_the_runtime_publishes(
    tmp_path: Path, target: str, with_adapters: bool
) -> None:
    with pytest.raises(BuildError, match="lora_metrics_from_frontends: only with lora_dir, on gpu"):
        RepositorySettings(
            target=target, model_dir=tmp_path, max_batch_size=4, max_input_len=256, max_seq_len=512,
            lora_dir=tmp_path if with_adapters else None, lora_metrics_from_frontends=True,
        )  # fmt: skip
