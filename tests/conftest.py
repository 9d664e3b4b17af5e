"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tekken_path() -> Path:
    """The NeMo Tekken file shipped by mistral-common (the tokenizer Mistral NeMo uses)."""
    from nemo_protocol.tekken import default_tekken_path

    return default_tekken_path()


# ----- build stage: tiny NeMo-shaped models and checkpoints, built once and cached ------------------------
# Cached under artifacts/test-cache/<name>-<key>, where the key hashes the code and versions that decide
# the bytes produced; a change to any of them builds afresh. Built in a temporary directory and renamed
# into place, so concurrent sessions never see a half-written model.
# Every file of the packages the build imports (the runtime verifies, the protocol tokenizes and renders chats),
# data included, rather than a hand-kept list that misses the next dependency.
_BUILD_PACKAGES = ("nemo_build", "nemo_runtime", "nemo_protocol")
_TEST_CACHE = Path(__file__).resolve().parents[1] / "artifacts" / "test-cache"


def _build_cache_key(extra: str) -> str:
    import hashlib
    import importlib
    from importlib.metadata import version

    digest = hashlib.sha256(extra.encode())
    for package in _BUILD_PACKAGES:
        root = Path(importlib.import_module(package).__file__ or "").parent
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            if path.suffix in (".py", ".json", ".jsonl", ".yaml"):
                digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    for dist in ("torch", "transformers", "nvidia-modelopt"):
        digest.update(f"{dist}={version(dist)}".encode())
    return digest.hexdigest()[:16]


def _cached_build(name: str, build) -> Path:  # build: Callable[[Path], None] writing into the given directory
    import shutil
    import tempfile

    target = _TEST_CACHE / f"{name}-{_build_cache_key(name)}"
    if (target / ".complete").is_file():
        return target
    _TEST_CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=_TEST_CACHE))
    try:
        build(staging / "out")
        (staging / "out" / ".complete").touch()
        if target.exists():
            shutil.rmtree(target)
        (staging / "out").rename(target)
    except OSError:
        if not (target / ".complete").is_file():  # not a lost race with another session
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tekken_path: Path) -> Path:
    """The random-weight tiny NeMo-shaped Hugging Face checkpoint (``nemo-build tiny-model``, seed 0)."""
    from nemo_build.tiny.model import random_tiny_model, save_model_dir

    return _cached_build("tiny-random", lambda out: save_model_dir(random_tiny_model(0), out, tekken_path, False))


@pytest.fixture(scope="session")
def trained_model_dir(tekken_path: Path) -> Path:
    """The tiny model trained on ``nemo_build.tiny.chat.CHAT_SET`` (``nemo-build tiny-model --trained``)."""
    from nemo_build.tiny.model import save_model_dir
    from nemo_build.tiny.train import train_tiny_model

    def build(out: Path) -> None:
        model, _ = train_tiny_model(tekken_path, seed=0)
        save_model_dir(model, out, tekken_path, False)

    return _cached_build("tiny-trained", build)


@pytest.fixture(scope="session")
def lora_source_dir(trained_model_dir: Path) -> Path:
    """A LoRA adapter source (``nemo-build tiny-lora``): one PEFT adapter per subdirectory, ``tokyo`` and ``pirate``,
    each changing the trained tiny model's answer to "What is the capital of France?"."""
    from nemo_build.tiny.lora import ADAPTER_LESSONS, train_tiny_lora

    def build(out: Path) -> None:
        for name, lesson in ADAPTER_LESSONS.items():
            train_tiny_lora(trained_model_dir, lesson, out / name)

    return _cached_build(f"tiny-lora-{trained_model_dir.name}", build)


@pytest.fixture(scope="session")
def hf_fp8_checkpoint_dir(trained_model_dir: Path) -> Path:
    """ModelOpt's unified Hugging Face FP8 export of the trained tiny model (the PyTorch runtime's input), verified;
    the same options and calibration set as ``fp8_checkpoint_dir``."""
    from nemo_build.checkpoint import CheckpointOptions, build_checkpoint

    options = CheckpointOptions(quant="fp8", kv_cache="fp8", format="hf", device="cpu", calib_data="shipped")
    return _cached_build(
        f"tiny-trained-hf-fp8-{trained_model_dir.name}",
        lambda out: build_checkpoint(trained_model_dir, out, options, verify=True),
    )


@pytest.fixture(scope="session")
def fp8_checkpoint_dir(trained_model_dir: Path) -> Path:
    """TensorRT-LLM checkpoint of the trained tiny model: FP8 weights, FP8 KV cache, TP 1, verified."""
    from nemo_build.checkpoint import CheckpointOptions, build_checkpoint

    options = CheckpointOptions(quant="fp8", kv_cache="fp8", tp=1, device="cpu", calib_data="shipped")
    return _cached_build(
        f"tiny-trained-fp8-{trained_model_dir.name}",
        lambda out: build_checkpoint(trained_model_dir, out, options, verify=True),
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on a free loopback port for the session (tests/postgres_server.py)."""
    from tests.postgres_server import PostgresServer

    with PostgresServer() as server:
        yield server.url
