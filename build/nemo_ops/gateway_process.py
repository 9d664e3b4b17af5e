"""nemo-gateway as a child process, for the runs that drive the stack (``make demo``, ``make gpu-check``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from nemo_ops.launcher import free_port
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME


def venv_bin(name: str) -> str:
    """The console script ``name`` beside the running Python: this project's venv, whatever PATH says."""
    return str(Path(sys.executable).with_name(name))


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
