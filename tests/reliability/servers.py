"""The real servers the reliability tests and the serving benchmark run against, all on 127.0.0.1.

* :func:`tiny_checkpoint`: the trained tiny model's FP8 TensorRT-LLM checkpoint, built once and cached
  under ``artifacts/`` (``$NEMO_BENCH_CHECKPOINT`` or the demo's checkpoint when they exist);
* :func:`render_cpu_repository`: the CPU model repository over it;
* :class:`Gateway`: ``nemo-gateway`` in its own process group, in front of a Triton gRPC address;
* process inspection: the resident memory of a server's process group, the python backend stub of a model.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from nemo_build.repository import TEMPLATES_DIR, RepositorySettings, render_repository
from nemo_ops.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "artifacts" / "reliability"
LOOPBACK = "127.0.0.1"
MAX_INPUT_LEN = 2048
MAX_SEQ_LEN = 4096
MAX_BATCH_SIZE = 16
SERVED_NAME = "nemo-tiny"


def tiny_checkpoint() -> Path:
    """``$NEMO_BENCH_CHECKPOINT``, else the demo's checkpoint, else one built (and kept) under ``artifacts/``."""
    if os.environ.get("NEMO_BENCH_CHECKPOINT"):
        return Path(os.environ["NEMO_BENCH_CHECKPOINT"])
    demo = ROOT / "artifacts" / "demo" / "checkpoint-fp8"
    if (demo / "config.json").is_file():
        return demo
    from nemo_build.checkpoint import CheckpointOptions, build_checkpoint
    from nemo_build.tiny.model import save_model_dir
    from nemo_build.tiny.train import train_tiny_model
    from nemo_protocol.tekken import default_tekken_path

    model_dir, checkpoint = CACHE / "tiny-model", CACHE / "checkpoint-fp8"
    if not (model_dir / "config.json").is_file():
        model, _ = train_tiny_model(default_tekken_path(), seed=0)
        save_model_dir(model, model_dir, default_tekken_path(), force=True)
    # Up to date (by its manifest) → returns at once; otherwise calibrates and exports again.
    return build_checkpoint(model_dir, checkpoint, CheckpointOptions(device="cpu", calib_data="shipped")).out_dir


def render_cpu_repository(checkpoint: Path, out: Path, *, max_batch_size: int = MAX_BATCH_SIZE) -> Path:
    from nemo_protocol.tekken import default_tekken_path

    settings = RepositorySettings(
        target="cpu",
        model_dir=checkpoint,
        max_batch_size=max_batch_size,
        max_input_len=MAX_INPUT_LEN,
        max_seq_len=MAX_SEQ_LEN,
        served_model_name=SERVED_NAME,
    )
    render_repository(TEMPLATES_DIR, settings, default_tekken_path(), out)
    return out


class Gateway:
    """``nemo-gateway`` on a free loopback port; stopped (its whole process group) on exit."""

    def __init__(
        self, triton_url: str, *, log_path: Path, chat_path: str = "direct", request_timeout_s: float = 120
    ) -> None:
        self.chat_path = chat_path
        self.request_timeout_s = request_timeout_s
        self.port = free_port(LOOPBACK)
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = log_path
        self._triton_url = triton_url
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gateway:
        command = [
            str(Path(sys.executable).with_name("nemo-gateway")),
            "--triton-url", self._triton_url, "--host", LOOPBACK, "--port", str(self.port),
            "--served-model-name", SERVED_NAME, "--log-level", "warning",
            "--request-timeout", str(self.request_timeout_s), "--chat-path", self.chat_path,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_live(timeout_s=60)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None, "the gateway is not running"
        return self._process.pid

    def _wait_live(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"nemo-gateway exited ({self._process.returncode}): {self.log_path.read_text()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/v1/health/live", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"nemo-gateway not live after {timeout_s:.0f} s: {self.log_path.read_text()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_group_rss_mib(group: int) -> float:
    """Resident memory of every process in a process group (tritonserver and its python stubs), MiB."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == group:
            total += int(fields[21]) * page  # field 24 (rss, pages) of /proc/PID/stat
    return total / 2**20


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, all its threads; 0 when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)
