"""`nemo-serve`: readiness, clean shutdown on SIGTERM (python stubs included), the log on failure; what it reads
of a repository (its manifest.json, which Triton ignores), what the docker launcher mounts, and the admin key
that Triton's administrative APIs need."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from nemo_build.repository import MANIFEST_FILE, RepositorySettings, write_repository_manifest
from nemo_ops.launcher import (
    ADMIN_KEY_HEADER,
    CONTAINER_PYTHONPATH,
    SERVING_PACKAGES,
    Ports,
    docker_command,
    package_dirs,
    restricted_api_arguments,
)

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
READY_LOG = re.compile(r" log=(\S+)")


def repository(tmp_path: Path, initialize: str) -> Path:
    """A one-model CPU repository (with its manifest) whose decoupled python model runs `initialize` at load."""
    model = tmp_path / "repo" / "tensorrt_llm"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(
        f"class TritonPythonModel:\n    def initialize(self, args):\n        {initialize}\n"
        "    def execute(self, requests):\n        return None\n"
    )
    settings = RepositorySettings(target="cpu", model_dir=tmp_path, max_batch_size=1, max_input_len=1, max_seq_len=2)
    write_repository_manifest(model.parent, settings, ["tensorrt_llm"])
    return model.parent


def nemo_serve(repo: Path, *extra: str) -> subprocess.Popen[str]:
    command = [str(Path(sys.executable).with_name("nemo-serve")), "--model-repository", str(repo), "--grace", "5"]
    return subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stubs_serving(repo: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args", "ww"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "triton_python_backend_stub" in line and str(repo) in line]


def test_serves_until_sigterm_then_leaves_nothing_running(tmp_path: Path) -> None:
    repo = repository(tmp_path, "pass")
    assert (repo / MANIFEST_FILE).is_file()  # a file at the repository root: Triton loads model directories only
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
        key_line = process.stdout.readline()
        key_file = Path(key_line.rsplit("key: ", 1)[1].strip())
        assert (
            "'nemo-admin-key' HTTP header" in key_line
            and key_file.parent == Path(str(READY_LOG.search(line)[1])).parent
        )
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, "a generated admin key is readable by its owner only"
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


def test_a_given_admin_key_admits_unload_and_nothing_else_does(tmp_path: Path) -> None:
    repo = repository(tmp_path, "pass")
    key_file = tmp_path / "admin-key"
    key_file.write_text("operator-key-0123456789\n")
    process = nemo_serve(repo, "--admin-key-file", str(key_file))
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert READY.search(line), line + (process.stderr.read() if process.stderr else "")
        assert f"key: {key_file}" in process.stdout.readline()
        http_port = int(re.search(r"http=http://127\.0\.0\.1:(\d+)", line)[1])  # type: ignore[index]
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("tensorrt_llm", headers={ADMIN_KEY_HEADER: "operator-key-wrong-456789"})
        assert client.is_model_ready("tensorrt_llm")
        client.unload_model("tensorrt_llm", headers={ADMIN_KEY_HEADER: "operator-key-0123456789"})
        deadline = time.monotonic() + 30
        while client.is_model_ready("tensorrt_llm") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not client.is_model_ready("tensorrt_llm")
        client.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("key", ["short", "has:colon-0123456789", "has space 0123456789"])
def test_an_admin_key_triton_cannot_take_is_refused_at_start(tmp_path: Path, key: str) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text(key)
    process = nemo_serve(repository(tmp_path, "pass"), "--admin-key-file", str(key_file))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "the admin key must be 16 to 256 characters" in err


def test_a_model_that_fails_to_load_exits_with_the_server_log(tmp_path: Path) -> None:
    repo = repository(tmp_path, "raise RuntimeError('checkpoint_dir /nowhere has no config.json')")
    process = nemo_serve(repo)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "checkpoint_dir /nowhere has no config.json" in err
    assert not stubs_serving(repo)


def test_a_repository_without_a_manifest_is_refused_before_triton_starts(tmp_path: Path) -> None:
    repo = repository(tmp_path, "pass")
    (repo / MANIFEST_FILE).unlink()
    process = nemo_serve(repo)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, out + err
    assert f"{repo} is not a rendered model repository: it has no manifest.json (not rendered by `nemo-build" in err
    assert f"--out {repo} --replace" in err
    assert "Triton ready" not in out


def test_the_docker_launcher_mounts_the_packages_where_they_are_installed(tmp_path: Path) -> None:
    found = package_dirs()
    assert set(found) == set(SERVING_PACKAGES) >= {"nemo_serving", "nemo_protocol", "nemo_runtime"}
    for name, path in found.items():
        assert path == Path(importlib.import_module(name).__file__ or "").resolve().parent
    repo, engine = tmp_path / "repo", tmp_path / "engine"
    command = docker_command(repo, engine, "127.0.0.1", Ports(1, 2, 3), "image", found, "k" * 32)
    volumes = sorted(arg.removeprefix("--volume=") for arg in command if arg.startswith("--volume="))
    expected = [f"{path}:{CONTAINER_PYTHONPATH}/{name}:ro" for name, path in found.items()]
    assert volumes == sorted([f"{repo}:{repo}:ro", f"{engine}:{engine}:ro", *expected])
    assert f"--env=PYTHONPATH={CONTAINER_PYTHONPATH}" in command
    assert set(restricted_api_arguments("k" * 32)) <= set(command), "the container's Triton restricts its admin APIs"


def test_packages_are_found_where_python_finds_them_not_beside_nemo_build(tmp_path: Path) -> None:
    # as from an install elsewhere: two of the packages in a site-packages of their own, ahead of this checkout
    site = tmp_path / "site-packages"
    moved = ("nemo_serving", "nemo_runtime")  # neither is imported by nemo_ops.launcher itself
    for name in moved:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
    probe = "import json, nemo_ops.launcher as s; print(json.dumps({k: str(v) for k, v in s.package_dirs().items()}))"
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    expected = {name: str(path) for name, path in package_dirs().items()}
    expected.update({name: str(site.resolve() / name) for name in moved})
    assert json.loads(out) == expected
