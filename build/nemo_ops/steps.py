"""Running the serving stack's processes for a run that drives it, and reporting that run's steps.

``make demo`` (:mod:`nemo_ops.demo`) and ``make gpu-check`` (:mod:`nemo_ops.gpu_check`) both start
Triton and nemo-gateway, ask them for a chat and a ``get_weather`` tool call, and print each step as it
runs: ``▶ step N/M name: title``, then ``done in X s``, and a summary at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_ops.launcher import free_port
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME

WEATHER = {"Paris": {"conditions": "sunny", "celsius": 18}, "Tokyo": {"conditions": "rainy", "celsius": 12}}


def venv_bin(name: str) -> str:
    """The console script ``name`` beside the running Python: this project's venv, whatever PATH says."""
    return str(Path(sys.executable).with_name(name))


def get_weather(city: str) -> dict[str, Any]:
    """Current weather in a city."""
    return WEATHER.get(city, {"conditions": "unknown", "celsius": None})


@contextlib.contextmanager
def gateway(triton_url: str, ready_timeout_s: float = 60) -> Iterator[str]:
    """nemo-gateway on a free loopback port in front of Triton's gRPC ``triton_url``: its URL once it is ready.

    Raises ``RuntimeError`` when it exits or is not ready within ``ready_timeout_s``; stopped on leaving.
    """
    port = free_port()
    process = subprocess.Popen(
        [venv_bin("nemo-gateway"), "--triton-url", triton_url, "--port", str(port), "--log-level", "warning"],
        env={**os.environ, "NIM_SERVED_MODEL_NAME": DEFAULT_SERVED_MODEL_NAME},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nemo-gateway did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


# --------------------------------------------------------------------------------------------- steps


class StepFailed(Exception):
    """A check of a step failed; the message says why and what to do."""


@dataclass
class StepRecord:
    number: int
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    detail: str = ""


class RunAborted(Exception):
    """The run stopped at a failed step: ``<program>: step N (<name>) failed: <why and what to do>``."""

    def __init__(self, program: str, record: StepRecord) -> None:
        super().__init__(f"{program}: step {record.number} ({record.name}) failed: {record.detail}")
        self.record = record


def _bold(text: str) -> str:
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() else text


class Steps:
    """The planned steps of ``program``'s run, by name and in order.

    Prints each step as it starts and how long it took, keeps a :class:`StepRecord` of each (ok, failed,
    skipped) and turns the first failure into :class:`RunAborted`, which names the step: a
    :class:`StepFailed` with its message, any other exception with its type and message.
    """

    def __init__(self, program: str, names: Sequence[str]) -> None:
        self.program = program
        self.names = tuple(names)
        self.records: list[StepRecord] = []

    def number(self, name: str) -> int:
        return self.names.index(name) + 1

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        number = self.number(name)
        print(_bold(f"\n▶ step {number}/{len(self.names)} {name}: {title}"), flush=True)
        started = time.perf_counter()
        try:
            yield
        except StepFailed as error:
            raise self._failed(number, name, started, str(error)) from error
        except Exception as error:  # an unexpected failure still names its step
            raise self._failed(number, name, started, f"{type(error).__name__}: {error}") from error
        record = StepRecord(number, name, "ok", round(time.perf_counter() - started, 2))
        self.records.append(record)
        print(f"  done in {record.seconds:.1f} s", flush=True)

    def _failed(self, number: int, name: str, started: float, why: str) -> RunAborted:
        record = StepRecord(number, name, "failed", round(time.perf_counter() - started, 2), why)
        self.records.append(record)
        return RunAborted(self.program, record)

    def skip(self, name: str, why: str) -> None:
        number = self.number(name)
        print(_bold(f"\n▷ step {number}/{len(self.names)} {name}: skipped ({why})"), flush=True)
        self.records.append(StepRecord(number, name, "skipped", 0.0, why))

    def summary(self) -> None:
        print(_bold("\nSummary"))
        width = max(map(len, self.names), default=0)
        for record in self.records:
            print(f"  {record.seconds:8.1f} s  {record.number} {record.name:<{width}} {record.status}")
