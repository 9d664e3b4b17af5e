"""One real Triton server (CPU, the bundled tritonserver) for the whole integration session.

It serves the repository rendered by `nemo-build repository --target cpu` over the tiny FP8
checkpoint of the trained NeMo-shaped model, on free loopback ports, and is always stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nemo_build.repository import TEMPLATES_DIR, RepositorySettings, render_repository
from nemo_gateway.settings import GatewaySettings
from nemo_ops.launcher import TritonServer
from tests.integration.gateways import SERVED, running_gateway

MAX_INPUT_LEN = 384
MAX_SEQ_LEN = 4096  # long enough for a generation that outlasts the test unless cancelled
MAX_BATCH_SIZE = 16


@pytest.fixture(scope="session")
def serving_checkpoint(fp8_checkpoint_dir: Path) -> Path:
    """The tiny trained model's FP8 TensorRT-LLM checkpoint (the build stage's session fixture)."""
    return fp8_checkpoint_dir


@pytest.fixture(scope="session")
def serving_lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session server's LoRA adapter source: empty, so that every test sees the base model alone unless it adds
    adapters (tests/integration/test_lora.py adds them, and removes them when done)."""
    return tmp_path_factory.mktemp("lora-source")


def serving_repository(out: Path, target: str, model_dir: Path, tekken_path: Path, **settings: Any) -> Path:
    """A repository rendered at ``out`` with the integration suite's limits and served name (``settings`` may
    override them)."""
    limits = RepositorySettings(
        target=target,
        model_dir=model_dir,
        **{
            "max_batch_size": MAX_BATCH_SIZE,
            "max_input_len": MAX_INPUT_LEN,
            "max_seq_len": MAX_SEQ_LEN,
            "served_model_name": SERVED,
            **settings,
        },
    )
    render_repository(TEMPLATES_DIR, limits, tekken_path, out)
    return out


@pytest.fixture(scope="session")
def cpu_repository(
    tmp_path_factory: pytest.TempPathFactory, serving_checkpoint: Path, tekken_path: Path, serving_lora_dir: Path
) -> Path:
    out = tmp_path_factory.mktemp("serving") / "repository"
    return serving_repository(out, "cpu", serving_checkpoint, tekken_path, lora_dir=serving_lora_dir)


@pytest.fixture(scope="session")
def triton(cpu_repository: Path) -> Iterator[TritonServer]:
    with TritonServer(cpu_repository) as server:
        yield server


@pytest.fixture(scope="session")
def url(triton: TritonServer) -> str:
    return triton.grpc_url


@pytest.fixture(scope="module")
def gateway(url: str) -> Iterator[str]:
    """nemo-gateway (default settings: the direct path) in front of the session's Triton; test_gateway has its own."""
    with running_gateway(GatewaySettings(triton_url=url, served_model_name=SERVED)) as base:
        yield base
