"""Running the commands of ``make gpu-check``'s steps: echoed as they run, logged, their last lines kept."""

from __future__ import annotations

import collections
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

LOG_TAIL_LINES = 40


def run_logged(command: Sequence[str], log_path: Path, *, cwd: Path | None = None) -> tuple[int, str]:
    """Run ``command``, echoing its output indented and writing it to ``log_path``: (status, last lines)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    print("  $ " + shlex.join(command), flush=True)
    with (
        log_path.open("w", encoding="utf-8") as log,
        subprocess.Popen(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        ) as process,
    ):
        assert process.stdout is not None
        try:
            for line in process.stdout:
                log.write(line)
                print("  │ " + line, end="", flush=True)
                tail.append(line.rstrip())
        except BaseException:
            process.terminate()
            raise
        status = process.wait()
    return status, "\n".join(tail)
