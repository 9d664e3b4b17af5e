"""Which Triton `nemo-serve --launcher auto` starts for each kind of repository and host.

A pytorch repository is TensorRT-LLM's LLM API: on a GPU host it must run where TensorRT-LLM is (a local
tritonserver with the tensorrt_llm package beside it, else the NGC image), as an engine repository does; only on a
host without a GPU does the pytriton wheel's Triton serve it (the CPU reference runtime underneath). The GPU host
here is the stand-in of tests/gpu_host (its nvidia-smi first on PATH, TensorRT-LLM's package metadata on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_ops.launcher import ServeError, TritonServer, auto_launcher, check_launcher
from tests.gpu_host.host import GpuHost
from tests.unit.ops.repositories import manifest_only_repository


@pytest.mark.parametrize(
    ("target", "gpu_host", "tritonserver", "tensorrt_llm", "expected"),
    [
        ("pytorch", True, True, True, "local"),  # inside the 26.07 image, or a tritonserver + tensorrt-llm wheel
        ("pytorch", True, True, False, "docker"),  # a tritonserver without TensorRT-LLM cannot run the LLM API
        ("pytorch", True, False, True, "docker"),
        ("pytorch", False, True, True, "pytriton"),  # no GPU: the CPU Triton
        ("pytorch", False, False, False, "pytriton"),
        ("gpu", True, True, False, "local"),  # the tensorrtllm backend ships in the tritonserver it comes with
        ("gpu", True, False, False, "docker"),
        ("cpu", True, True, True, "pytriton"),
        ("stand-in", True, True, True, "pytriton"),
    ],
)
def test_auto_picks_the_triton_that_can_run_the_repository(
    target: str, gpu_host: bool, tritonserver: bool, tensorrt_llm: bool, expected: str
) -> None:
    chosen = auto_launcher(target, gpu_host=gpu_host, local_tritonserver=tritonserver, local_tensorrt_llm=tensorrt_llm)
    assert chosen == expected


@pytest.mark.parametrize(
    ("target", "launcher", "refusal"),
    [
        ("gpu", "pytriton", "the pytriton wheel has no tensorrtllm backend"),
        ("cpu", "local", "launcher 'local' serves GPU repositories; this one is cpu"),
        ("stand-in", "docker", "launcher 'docker' serves GPU repositories; this one is stand-in"),
    ],
)
def test_a_named_launcher_that_cannot_serve_the_repository_is_refused(target: str, launcher: str, refusal: str) -> None:
    with pytest.raises(ServeError, match=refusal):
        check_launcher(target, launcher)


@pytest.mark.parametrize("launcher", ["pytriton", "local", "docker"])
def test_a_pytorch_repository_takes_every_named_launcher(launcher: str) -> None:
    assert check_launcher("pytorch", launcher) == launcher


def _launcher_on(repo: Path) -> str:
    server = TritonServer(repo)
    try:
        return server.launcher
    finally:
        server.stop()  # removes the run's temp directory; nothing was started


def test_nemo_serve_auto_serves_a_pytorch_repository_where_tensorrt_llm_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = manifest_only_repository(tmp_path / "repo", "pytorch", tmp_path)
    system_path = "/usr/bin:/bin"  # no tritonserver, whatever this machine has
    monkeypatch.setenv("PATH", system_path)
    if Path("/usr/bin/nvidia-smi").exists() or Path("/bin/nvidia-smi").exists():
        pytest.skip("this machine has an nvidia-smi of its own")
    assert _launcher_on(repo) == "pytriton", "no GPU: the CPU Triton"

    host = GpuHost(tmp_path / "host")
    for name, value in host.env({"PATH": system_path}).items():
        monkeypatch.setenv(name, value)
    assert _launcher_on(repo) == "docker", "a GPU and no local tritonserver: the NGC image"

    tritonserver = host.bin / "tritonserver"
    tritonserver.write_text("#!/bin/sh\nexit 1\n")
    tritonserver.chmod(0o755)
    assert _launcher_on(repo) == "docker", "a local tritonserver without the tensorrt_llm package cannot serve it"

    monkeypatch.syspath_prepend(str(host.site))  # TensorRT-LLM 1.2.1's package metadata, as the image has it
    assert _launcher_on(repo) == "local"
