"""A child started by nemo_ops.launcher.start_child dies with the process that started it, SIGKILL included, and
not before: not when the thread that asked for it ends. Real processes: a parent (a Python process) starts a
`sleep`, prints its pid and waits; the test kills the parent or lets a thread end and watches the `sleep`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PARENT = """
import subprocess, sys, threading
from nemo_ops.launcher import die_with_parent, start_child

how = sys.argv[1]
children = []
def start():
    if how == "raw":  # the parent-death signal alone, from a thread that then ends
        children.append(subprocess.Popen(["sleep", "300"], preexec_fn=die_with_parent()))
    else:
        children.append(start_child(["sleep", "300"]))
if how == "main":
    start()
else:
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
print(children[0].pid, flush=True)
sys.stdin.read()
"""


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def wait_until(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


Parent = Callable[[str], tuple[subprocess.Popen[str], int]]


@pytest.fixture
def parent() -> Iterator[Parent]:
    """Call with how the child is started: (the parent, the child's pid); both are killed at the end."""
    started: list[tuple[subprocess.Popen[str], int]] = []

    def start(how: str) -> tuple[subprocess.Popen[str], int]:
        process = subprocess.Popen(
            [sys.executable, "-c", PARENT, how], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        child = int(process.stdout.readline())
        started.append((process, child))
        return process, child

    yield start
    for process, child in started:
        process.kill()
        process.wait(timeout=10)
        if running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("how", ["main", "thread"])
def test_the_child_dies_with_its_sigkilled_parent_and_not_before(parent: Parent, how: str) -> None:
    process, child = parent(how)
    time.sleep(0.5)
    assert running(child), "alive while its parent runs, though the thread that asked for it has ended"
    process.kill()
    process.wait(timeout=10)
    assert wait_until(lambda: not running(child), 10), "the child outlived its SIGKILLed parent"


def test_the_parent_death_signal_alone_fires_when_the_forking_thread_ends(parent: Parent) -> None:
    # Why start_child forks from the main thread or from one that never ends.
    process, child = parent("raw")
    assert wait_until(lambda: not running(child), 10)
    assert process.poll() is None
