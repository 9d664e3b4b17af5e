"""Steps 3 and 4 of ``make gpu-check``: Triton on the repository, then nemo-gateway in front of it."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from nemo_ops.gateway_process import gateway
from nemo_ops.gpu_check.commands import run_logged
from nemo_ops.launcher import ServeError, TritonServer
from nemo_ops.steps import StepFailed

DEFAULT_READY_TIMEOUT_S = 900.0  # a 12B engine loads in minutes; the first start may also pull the image


def ensure_image(image: str, log: Path) -> None:
    """Pull ``image`` unless docker has it, so the ready timeout measures the server, not the download."""
    present = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if present.returncode == 0:
        return
    print(f"  pulling {image} (once; about 20 GB)", flush=True)
    status, tail = run_logged(["docker", "pull", image], log)
    if status != 0:
        raise StepFailed(f"`docker pull {image}` failed (status {status}):\n{tail}")


def start_triton(
    repository: Path, out: Path, ready_timeout_s: float, stack: contextlib.ExitStack, launcher: str = "auto"
) -> TritonServer:
    """Step 3: Triton on ``repository``, ready; ``stack`` stops it."""
    try:
        server = TritonServer(repository, log_path=out / "logs" / "tritonserver.log", launcher=launcher)
    except ServeError as error:
        raise StepFailed(str(error)) from error
    print(f"  repository {repository} ({server.target}), launcher {server.launcher}, log {server.log_path}")
    if server.launcher == "docker":
        ensure_image(server.image, out / "logs" / "docker-pull.log")
    server.start()
    stack.callback(_stop, server)
    try:
        server.wait_ready(ready_timeout_s)
    except ServeError as error:
        raise StepFailed(
            f"{error}\n(an engine that was still loading needs a longer --ready-timeout; otherwise the errors "
            "above say why it did not load)"
        ) from error
    print(f"  Triton gRPC at {server.grpc_url}, HTTP at {server.http_url}")
    return server


def _stop(server: TritonServer) -> None:
    started = time.perf_counter()
    print("\n  stopping Triton ...", flush=True)
    server.stop()
    print(f"  Triton stopped in {time.perf_counter() - started:.1f} s", flush=True)


def start_gateway(server: TritonServer, stack: contextlib.ExitStack) -> str:
    """Step 4: nemo-gateway in front of Triton; ``stack`` stops it (before Triton)."""
    try:
        url = stack.enter_context(gateway(server.grpc_url))
    except RuntimeError as error:
        raise StepFailed(
            f"{error} (its /v1/health/ready checks Triton at {server.grpc_url} and its chat model): "
            f"see the gateway's output above and Triton's log {server.log_path}"
        ) from error
    print(f"  gateway at {url}")
    return url
