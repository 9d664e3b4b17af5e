"""`nemo-serve`: readiness, clean shutdown on SIGTERM (python stubs included), the log on failure."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CONFIG = """
name: "tensorrt_llm"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "x" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
READY = re.compile(r"nemo-serve: Triton ready .* grpc=127\.0\.0\.1:(\d+)")


def repository(tmp_path: Path, initialize: str) -> Path:
    """A one-model repository whose decoupled python model runs `initialize` at load."""
    model = tmp_path / "repo" / "tensorrt_llm"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(
        f"class TritonPythonModel:\n    def initialize(self, args):\n        {initialize}\n"
        "    def execute(self, requests):\n        return None\n"
    )
    return model.parent


def nemo_serve(repo: Path) -> subprocess.Popen[str]:
    command = [str(Path(sys.executable).with_name("nemo-serve")), "--model-repository", str(repo), "--grace", "5"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stubs_serving(repo: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args", "ww"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "triton_python_backend_stub" in line and str(repo) in line]


def test_serves_until_sigterm_then_leaves_nothing_running(tmp_path: Path) -> None:
    repo = repository(tmp_path, "pass")
    process = nemo_serve(repo)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = READY.search(line)
        assert match, line + (process.stderr.read() if process.stderr else "")
        port = int(match.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert stubs_serving(repo)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "nemo-serve: stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
    deadline = time.monotonic() + 5
    while stubs_serving(repo) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stubs_serving(repo)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_model_that_fails_to_load_exits_with_the_server_log(tmp_path: Path) -> None:
    repo = repository(tmp_path, "raise RuntimeError('checkpoint_dir /nowhere has no config.json')")
    process = nemo_serve(repo)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "checkpoint_dir /nowhere has no config.json" in err
    assert not stubs_serving(repo)
