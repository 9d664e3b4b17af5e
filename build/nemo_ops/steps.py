"""The steps of a run that drives the serving stack, reported as they run.

``make demo`` (:mod:`nemo_ops.demo`) and ``make gpu-check`` (:mod:`nemo_ops.gpu_check`) print each step as it
runs: ``▶ step N/M name: title``, then ``done in X s``, and a summary at the end; the first failed step ends the
run with :class:`RunAborted`, which names it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


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
