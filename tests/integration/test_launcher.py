"""`nemo-serve`: readiness, clean shutdown on SIGTERM (python stubs included), the log on failure; what it reads
of a repository (its manifest.json, which Triton ignores), what the docker launcher mounts, and the admin key
that Triton's administrative APIs need. A SIGKILLed launcher takes Triton and its stubs along, a clean stop leaves
nothing behind, and the next start removes what a killed run left, never what a running server uses."""

from __future__ import annotations

import contextlib
import importlib
import json
import mmap
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
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
    TritonServer,
    docker_command,
    package_dirs,
    restricted_api_arguments,
)
from nemo_ops.leftovers import HOST_LABEL, OWNER_FILE, OWNER_LABEL, SHM_DIR, SHM_REGION_PREFIX, Owner, workdir_owner
from nemo_ops.stub_supervisor import stub_processes

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


def ready(process: subprocess.Popen[str]) -> str:
    """The launcher's ready line (its endpoints and log), after which it prints the admin key's."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert READY.search(line), line + (process.stderr.read() if process.stderr else "")
    process.stdout.readline()
    return line


def workdir_of(ready_line: str) -> Path:
    """The run's temp directory: where its default log is."""
    return Path(str(READY_LOG.search(ready_line)[1])).parent  # type: ignore[index]


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it only waits for its parent to collect its status)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def tritonserver_of(launcher: int) -> int:
    """The tritonserver that the launcher ``launcher`` started."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) if entry.name.isdigit() else 0
            if parent == launcher and (entry / "comm").read_text().strip() == "tritonserver":
                return int(entry.name)
    raise AssertionError(f"launcher {launcher} has no tritonserver child")


def regions_of(workdir: Path) -> list[Path]:
    """The shared-memory regions of the run whose temp directory is ``workdir`` (its name is in theirs)."""
    run = workdir.name.removeprefix("nemo-serve-")
    return [path for path in SHM_DIR.glob(f"{SHM_REGION_PREFIX}nemo-serve.*.{run}.*")]


def wait_until(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(condition())  # type: ignore[operator]


@contextlib.contextmanager
def serving(repo: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A running nemo-serve and its ready line; stopped with SIGTERM, then SIGKILL of it and of its Triton's group."""
    process = nemo_serve(repo)
    triton = None
    try:
        line = ready(process)
        triton = tritonserver_of(process.pid)
        yield process, line
    finally:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=30)
        if triton is not None and running(triton):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(triton, signal.SIGKILL)


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
        workdir = key_file.parent
        assert workdir_owner(workdir) == Owner.of(process.pid), "the run's temp directory names its owner"
        assert regions_of(workdir), "the python stub's shared-memory region carries the run's name"
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
    assert not workdir.exists(), "a clean stop removes the run's temp directory (log and generated key included)"
    assert not regions_of(workdir), "and its shared-memory regions"


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
    log = Path(str(re.search(r"; log (\S+):", err)[1]))  # type: ignore[index]
    assert "checkpoint_dir /nowhere" in log.read_text(), "a failed start keeps the log it names"
    assert not (log.parent / "backends").exists() and not (log.parent / "admin-key").exists()
    owner = workdir_owner(log.parent)
    assert owner is not None and owner.is_gone(), "and names its owner, gone now: the next start removes it"


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


def test_a_sigkilled_launcher_takes_tritonserver_and_its_stubs_along(tmp_path: Path) -> None:
    repo = repository(tmp_path, "pass")
    with serving(repo) as (process, line):
        triton = tritonserver_of(process.pid)
        stubs = [pid for pids in stub_processes(triton).values() for pid in pids]
        assert stubs, "the python model runs in a stub, a child of tritonserver"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        # tritonserver gets SIGKILL at once (parent-death signal); the stubs exit when they see it gone.
        assert wait_until(lambda: not running(triton), 10), "tritonserver outlived its launcher"
        assert wait_until(lambda: not any(map(running, stubs)), 30), "a python stub outlived tritonserver"
        assert not stubs_serving(repo)
        owner = workdir_owner(workdir_of(line))
        assert owner is not None and owner.is_gone(), "the killed run's directory is left, naming its gone owner"


@pytest.mark.timeout(400)
def test_the_next_start_removes_what_a_killed_run_left_and_nothing_a_running_server_uses(tmp_path: Path) -> None:
    repo = repository(tmp_path, "pass")
    tag = uuid.uuid4().hex
    stale_region = SHM_DIR / f"{SHM_REGION_PREFIX}{tag}-stale"  # Triton's default name: no owner in it
    mapped_region = SHM_DIR / f"{SHM_REGION_PREFIX}{tag}-mapped"
    open_region = SHM_DIR / f"{SHM_REGION_PREFIX}{tag}-open"
    legacy_empty = Path(tempfile.mkdtemp(prefix="nemo-serve-"))  # as an older nemo-serve left it: no owner file
    legacy_full = Path(tempfile.mkdtemp(prefix="nemo-serve-"))
    (legacy_full / "tritonserver.log").write_text("someone's log\n")
    for region in (stale_region, mapped_region, open_region):
        region.write_bytes(b"\0" * mmap.PAGESIZE)
    for old in (legacy_empty, legacy_full):
        os.utime(old, (time.time() - 600, time.time() - 600))
    held = open_region.open("rb")  # held open, not mapped
    with mapped_region.open("r+b") as handle:
        mapping = mmap.mmap(handle.fileno(), 0)  # mapped, not held open
    try:
        with serving(repo) as (_, other_line):  # a server that keeps running throughout
            other_dir = workdir_of(other_line)
            other_regions = regions_of(other_dir)
            assert other_regions
            # A run killed outright: tritonserver and its stubs at once (they remove no region), then its launcher,
            # stopped first so that it cannot clean up after them.
            with serving(repo) as (killed, killed_line):
                killed_dir = workdir_of(killed_line)
                killed_regions = regions_of(killed_dir)
                triton = tritonserver_of(killed.pid)
                os.kill(killed.pid, signal.SIGSTOP)
                os.killpg(triton, signal.SIGKILL)
                os.kill(killed.pid, signal.SIGKILL)
                killed.wait(timeout=10)
                assert wait_until(lambda: not running(triton), 10)
            assert killed_regions and all(region.exists() for region in killed_regions), "the killed run left them"
            assert killed_dir.is_dir()

            with serving(repo) as (nxt, _):
                pass  # it removed the leftovers before starting Triton
            assert nxt.stderr is not None
            assert "nemo-serve: removed what killed runs left: " in nxt.stderr.read()
            assert not any(region.exists() for region in killed_regions), "the killed run's regions are removed"
            assert not killed_dir.exists(), "and its directory"
            assert not stale_region.exists(), "a default-named region that no process holds is removed"
            assert mapped_region.exists() and open_region.exists(), "one that a process maps or holds open is not"
            assert not legacy_empty.exists(), "an old empty directory without an owner is removed"
            assert (legacy_full / "tritonserver.log").is_file(), "one with files in it is not: its owner is unknown"
            assert all(region.exists() for region in other_regions), "the running server's regions are untouched"
            assert other_dir.is_dir() and (other_dir / OWNER_FILE).is_file(), "and so is its directory"
            http = re.search(r"http=(\S+)", other_line)[1]  # type: ignore[index]
            with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=5) as response:
                assert response.status == 200, "and it still serves"
    finally:
        mapping.close()
        held.close()
        for region in (stale_region, mapped_region, open_region):
            region.unlink(missing_ok=True)
        for directory in (legacy_empty, legacy_full):
            shutil.rmtree(directory, ignore_errors=True)


def test_the_docker_launcher_names_and_labels_its_container_for_removal(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "tensorrt_llm").mkdir(parents=True)
    (repo / "tensorrt_llm" / "config.pbtxt").write_text('backend: "tensorrtllm"\n')
    settings = RepositorySettings(target="gpu", model_dir=tmp_path, max_batch_size=1, max_input_len=1, max_seq_len=2)
    write_repository_manifest(repo, settings, ["tensorrt_llm"])
    server = TritonServer(repo, launcher="docker", image="image")
    try:
        command, _ = server.command_and_env()
        assert command[:4] == ["docker", "run", "--rm", "--init"], "removed when it stops; an init reaps the stubs"
        assert f"--name={server.container_name}" in command, "the launcher's stop removes it by name"
        owner = Owner.current()
        assert f"--label={OWNER_LABEL}={owner}" in command and f"--label={HOST_LABEL}={socket.gethostname()}" in command
        assert command.index("--init") < command.index("image"), "docker's options, not Triton's"
    finally:
        server.stop()
    assert not server.workdir.exists()
