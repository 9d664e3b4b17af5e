"""Reliability tests against a real Triton (CPU, tiny model) and a real nemo-gateway, all on 127.0.0.1.

``make test`` runs the quick variants; ``make test-reliability`` sets ``NEMO_RELIABILITY=full`` for the
long ones (a soak of several minutes, a longer fuzz pass, each hostile input sent ten times). Every server
started here is stopped with its whole process group, also when a test fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nemo_ops.launcher import TritonServer
from tests.reliability.servers import Gateway, render_cpu_repository, tiny_checkpoint

FULL = os.environ.get("NEMO_RELIABILITY", "quick") == "full"


@dataclass(frozen=True)
class Budget:
    """How long and how hard each test pushes, quick (``make test``) or full (``make test-reliability``)."""

    soak_seconds: float
    soak_streams: int
    fuzz_examples: int
    hostile_repeats: int
    """How many times the hostile-input suite sends each variant of each kind."""
    hostile_streams: int
    """Well-formed streams kept running meanwhile."""
    slow_reader_tokens: int
    """Length of the streams the slow readers read."""


BUDGET = (
    Budget(soak_seconds=240, soak_streams=64, fuzz_examples=400, hostile_repeats=10, hostile_streams=8,
           slow_reader_tokens=1000)
    if FULL
    else Budget(soak_seconds=25, soak_streams=64, fuzz_examples=40, hostile_repeats=1, hostile_streams=3,
                slow_reader_tokens=200)
)  # fmt: skip


@dataclass
class Stack:
    triton: TritonServer
    gateway: Gateway

    @property
    def grpc_url(self) -> str:
        return self.triton.grpc_url


@pytest.fixture(scope="session")
def reliability_checkpoint(request: pytest.FixtureRequest) -> Path:
    """The session's tiny FP8 checkpoint when the build stage provides one, else the cached one."""
    try:
        return Path(request.getfixturevalue("fp8_checkpoint_dir"))
    except pytest.FixtureLookupError:
        return tiny_checkpoint()


@pytest.fixture(scope="session")
def reliability_repository(tmp_path_factory: pytest.TempPathFactory, reliability_checkpoint: Path) -> Path:
    return render_cpu_repository(reliability_checkpoint, tmp_path_factory.mktemp("reliability") / "repository")


def start_stack(repository: Path, workdir: Path) -> Iterator[Stack]:
    with (
        TritonServer(repository, log_path=workdir / "tritonserver.log") as triton,
        Gateway(triton.grpc_url, log_path=workdir / "gateway.log") as gateway,
    ):
        yield Stack(triton, gateway)


@pytest.fixture(scope="session")
def stack(reliability_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Triton + gateway shared by the tests that leave them healthy (soak, fuzz, nemo-bench)."""
    yield from start_stack(reliability_repository, tmp_path_factory.mktemp("stack"))
