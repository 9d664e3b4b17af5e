"""`nemo-serve`: start a real Triton server on a rendered model repository.

CPU (the repository's `tensorrt_llm` model uses the python backend): the `tritonserver` binary, the
python backend and the stub matching this interpreter come from the `nvidia-pytriton` wheel, so no
container is needed. GPU (`backend: "tensorrtllm"`): a local `tritonserver` when one is on PATH,
otherwise the NGC TensorRT-LLM image through docker.

The server binds to the requested host (127.0.0.1 unless told otherwise), takes free ports unless
ports are given, is polled until ready, and is stopped with SIGTERM, a bounded grace period, then
SIGKILL of its whole process group (python backend stubs included: a decoupled python model can keep
tritonserver alive long after SIGTERM).

The server dies with its launcher: tritonserver (or `docker run`) gets SIGKILL when the thread that started it
ends (Linux's parent-death signal), and its python stubs exit on their own once it is gone. A run keeps its files in
a `nemo-serve-*` temp directory, removed on stop; what a killed run leaves (that directory, the python backend's
shared-memory regions, a docker container) carries its owner and is removed by the next start once that owner is
gone (:mod:`nemo_ops.leftovers`).

What the repository serves (target, engine or checkpoint directory) comes from the `manifest.json` that
`nemo-build repository` writes at its root, never from the rendered configs.

Triton's administrative APIs (model load/unload and load with config or file overrides, shared-memory
registration, statistics, trace and log settings) answer only requests that carry the admin key in the
`nemo-admin-key` header (`--grpc-restricted-protocol` / `--http-restricted-api`); health,
metadata and inference stay open. The key comes from `--admin-key-file` or `$NEMO_TRITON_ADMIN_KEY`, or is
generated for the run and written, readable by its owner only, beside the server log.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from nemo_build import __version__
from nemo_build.errors import BuildError
from nemo_build.preflight import NGC_IMAGE, PINNED_TRTLLM, installed_trtllm_version, probe_gpus
from nemo_build.repository import RepositoryManifest, read_repository_manifest
from nemo_ops.leftovers import (
    OWNER_FILE,
    SHM_DIR,
    Owner,
    container_labels,
    make_workdir,
    remove_leftovers,
    shm_region_prefix,
)
from nemo_ops.stub_supervisor import StubSupervisor

DEFAULT_HOST = "127.0.0.1"
DEFAULT_READY_TIMEOUT_S = 300.0
DEFAULT_GRACE_S = 10.0
LOG_TAIL_LINES = 60
# What the repository's python models import (nemo_runtime: the CPU tensorrt_llm model). The docker launcher mounts
# each package directory, wherever it is installed, under CONTAINER_PYTHONPATH.
SERVING_PACKAGES = ("nemo_serving", "nemo_protocol", "nemo_runtime", "nemo_chat_core")
CONTAINER_PYTHONPATH = "/opt/nemo-serve/python"


ADMIN_KEY_HEADER = "nemo-admin-key"
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"
"""The metadata key a gRPC call carries the admin key in: Triton prefixes the configured header on gRPC."""
ADMIN_KEY_ENV = "NEMO_TRITON_ADMIN_KEY"
RESTRICTED_APIS = ("shared-memory", "model-repository", "statistics", "trace", "logging")
"""Triton's API groups that need the admin key: every one that changes the server's state, and statistics.
`model-config` stays open, read-only: clients read the served model name from the `chat` model's config."""
# Triton splits the flag value at ':' and '=', and the key travels in a header: URL-safe characters only.
_ADMIN_KEY_FORM = re.compile(r"[A-Za-z0-9._~-]{16,256}")


class ServeError(RuntimeError):
    """The server could not be prepared, started or made ready."""


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int
    metrics: int


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS reports free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def choose_ports(host: str, grpc: int = 0, http: int = 0, metrics: int = 0) -> Ports:
    """The given ports, with 0 replaced by distinct free ports."""
    chosen: list[int] = []
    for wanted in (grpc, http, metrics):
        port = wanted
        while port == 0 or port in chosen:
            port = free_port(host)
        chosen.append(port)
    return Ports(*chosen)


def repository_manifest(repository: Path) -> RepositoryManifest:
    """The repository's `manifest.json` (target, engine or checkpoint directory); ServeError when it has none."""
    try:
        return read_repository_manifest(repository)
    except BuildError as error:
        raise ServeError(str(error)) from error


def package_dirs(names: Sequence[str] = SERVING_PACKAGES) -> dict[str, Path]:
    """Where each package is installed (source tree or site-packages), from its `__file__`, without importing it."""
    found: dict[str, Path] = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ServeError(f"package {name} is not importable here; the repository's python models import it")
        found[name] = Path(spec.origin).resolve().parent
    return found


# --------------------------------------------------------------------------- CPU: the pytriton wheel


@dataclass(frozen=True)
class PytritonTriton:
    """Paths of the Triton build that ships inside the `nvidia-pytriton` wheel."""

    root: Path  # site-packages/pytriton/tritonserver
    libs: Path  # site-packages/nvidia_pytriton.libs

    @classmethod
    def locate(cls) -> PytritonTriton:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServeError(
                "the CPU Triton comes from the nvidia-pytriton wheel, which is not installed "
                "(pip install 'mistral-nemo-trtllm[serve]')"
            )
        package = Path(next(iter(spec.submodule_search_locations)))
        found = cls(root=package / "tritonserver", libs=package.parent / "nvidia_pytriton.libs")
        if not found.binary.is_file():
            raise ServeError(f"nvidia-pytriton is installed but {found.binary} is missing")
        return found

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    def stub(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise ServeError(f"nvidia-pytriton ships no python backend stub for Python {version} ({stub})")
        return stub

    def prepare_backends(self, dest: Path) -> Path:
        """A backend directory holding the python backend with the stub for this interpreter."""
        python_dir = dest / "python"
        shutil.copytree(self.root / "backends" / "python", python_dir, dirs_exist_ok=True)
        shutil.copy2(self.stub(), python_dir / "triton_python_backend_stub")
        return dest

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with the wheel's libraries, this interpreter's libpython and bin/ dir in front."""
        env = dict(base)
        lib_dirs = [str(self.libs)]
        libpython_dir = sysconfig.get_config_var("LIBDIR")
        if libpython_dir:
            lib_dirs.append(libpython_dir)
        if env.get("LD_LIBRARY_PATH"):
            lib_dirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
        # The stub runs model.py with the interpreter found first on PATH: this one, with its packages.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


def check_admin_key(key: str) -> str:
    """``key`` if it can be Triton's admin key (16-256 URL-safe characters), else ServeError."""
    if not _ADMIN_KEY_FORM.fullmatch(key):
        raise ServeError(
            f"the admin key must be 16 to 256 characters from A-Z a-z 0-9 . _ ~ - (got {len(key)} characters)"
        )
    return key


def read_admin_key(path: Path | None) -> str | None:
    """The admin key from ``path`` (surrounding whitespace stripped), else from $NEMO_TRITON_ADMIN_KEY, else None."""
    if path is not None:
        try:
            return check_admin_key(path.read_text().strip())
        except OSError as error:
            raise ServeError(f"cannot read the admin key file {path}: {error.strerror}") from None
    key = os.environ.get(ADMIN_KEY_ENV)
    return check_admin_key(key) if key else None


def write_admin_key(key: str, path: Path) -> Path:
    """Write ``key`` to ``path``, readable and writable by its owner only (created so, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return path


def restricted_api_arguments(admin_key: str) -> list[str]:
    """The flags that put RESTRICTED_APIS behind the admin key, on gRPC and HTTP alike."""
    restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={check_admin_key(admin_key)}"
    return [f"--grpc-restricted-protocol={restriction}", f"--http-restricted-api={restriction}"]


def triton_arguments(
    repository: Path, host: str, ports: Ports, admin_key: str, shm_prefix: str | None = None
) -> list[str]:
    """tritonserver flags shared by every launcher; ``shm_prefix`` names the python stubs' shared-memory regions
    (:func:`nemo_ops.leftovers.shm_region_prefix`: their owner, for the cleanup after a killed run)."""
    prefix = [f"--backend-config=python,shm-region-prefix-name={shm_prefix}"] if shm_prefix else []
    return [
        f"--model-repository={repository}",
        f"--grpc-address={host}",
        f"--grpc-port={ports.grpc}",
        f"--http-address={host}",
        f"--http-port={ports.http}",
        f"--metrics-address={host}",
        f"--metrics-port={ports.metrics}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=5",
        # Explicit model control (every model loaded at start) lets the stub supervisor reload a model.
        "--model-control-mode=explicit",
        "--load-model=*",
        *restricted_api_arguments(admin_key),
        *prefix,
    ]


def docker_command(
    repository: Path,
    engine_dir: Path,
    host: str,
    ports: Ports,
    image: str,
    packages: dict[str, Path],
    admin_key: str,
    *,
    name: str | None = None,
    labels: dict[str, str] | None = None,
) -> list[str]:
    """`docker run` of the NGC image serving `repository`.

    Repository and engine directory are mounted at their host paths, so the absolute paths rendered into
    the configs hold inside the container. The python models' packages (`packages`: name → directory, see
    :func:`package_dirs`) are mounted one by one under CONTAINER_PYTHONPATH: from a source tree or from
    site-packages alike, and without the rest of a site-packages shadowing the image's own libraries.

    The container is removed when it stops (`--rm`), runs an init (`--init`: signals reach tritonserver, its stubs
    are reaped) and carries `name` and `labels` (:func:`nemo_ops.leftovers.container_labels`), by which the
    launcher removes it on stop and the next start removes it after a killed launcher (the `docker run` client dies
    with the launcher, the container would not).
    """
    publish = [f"--publish={host}:{port}:{port}" for port in (ports.grpc, ports.http, ports.metrics)]
    mounts = [f"--volume={path}:{path}:ro" for path in (repository, engine_dir)]
    mounts += [f"--volume={path}:{CONTAINER_PYTHONPATH}/{name}:ro" for name, path in sorted(packages.items())]
    return [
        "docker",
        "run",
        "--rm",
        "--init",
        *([f"--name={name}"] if name else []),
        *(f"--label={key}={value}" for key, value in sorted((labels or {}).items())),
        "--gpus=all",
        "--shm-size=2g",
        "--ulimit=memlock=-1",
        *publish,
        *mounts,
        f"--env=PYTHONPATH={CONTAINER_PYTHONPATH}",
        image,
        "tritonserver",
        *triton_arguments(repository, "0.0.0.0", ports, admin_key),
    ]


def check_gpu_engine(manifest: RepositoryManifest, launcher: str, image: str) -> str:
    """Refuse engines built for another GPU model or TensorRT-LLM version than the ones about to serve them.

    The engines are the manifest's `model_dir`. The GPU is the first one `nvidia-smi` lists; TensorRT-LLM is
    the installed one (local launcher) or the pinned image's. Returns a note for the log when the version
    cannot be known (another docker image).
    """
    from nemo_build.engine import check_engine_compatible  # the build pipeline's modules: GPU repositories only

    gpu, version, note = _serving_gpu_and_trtllm(
        launcher,
        image,
        "this repository serves TensorRT-LLM engines; run on the GPU host they were built on, or render a CPU "
        "repository (--target cpu)",
    )
    try:
        engine_manifest = check_engine_compatible(manifest.model_dir, gpu, version)
    except BuildError as error:
        raise ServeError(str(error)) from error
    built = engine_manifest["inputs"]
    return note or f"engines built on {built['gpu']} with TensorRT-LLM {built['tensorrt_llm']}: compatible"


def check_pytorch_repository(manifest: RepositoryManifest, launcher: str, image: str) -> str:
    """A pytorch repository on a GPU host (local or docker launcher): refuse one rendered for another GPU model or
    TensorRT-LLM version (the manifest's `runtime_environment`) than the ones about to serve it."""
    from nemo_build.engine import check_pytorch_compatible

    gpu, version, note = _serving_gpu_and_trtllm(
        launcher,
        image,
        "this pytorch repository runs TensorRT-LLM's LLM API on a GPU; on a CPU host use --launcher pytriton "
        "(the reference runtime)",
    )
    try:
        compatible = check_pytorch_compatible(manifest.runtime_environment, manifest.repository, gpu, version)
    except BuildError as error:
        raise ServeError(str(error)) from error
    return compatible + (f"; {note}" if note else "")


def _serving_gpu_and_trtllm(launcher: str, image: str, without_gpu: str) -> tuple[str, str | None, str]:
    """The GPU model that will serve, the TensorRT-LLM version it will serve with (the installed one, or the pinned
    image's; None for another image), and a note for the log when that version cannot be known."""
    gpus = probe_gpus()
    if not gpus:
        raise ServeError(f"no NVIDIA GPU visible (nvidia-smi is missing or lists none): {without_gpu}")
    if launcher == "docker":
        if image == NGC_IMAGE:
            return gpus[0].name, PINNED_TRTLLM, ""
        return gpus[0].name, None, f"TensorRT-LLM version of {image} unknown: only the GPU model was checked"
    version = installed_trtllm_version()
    if version is None:
        raise ServeError("tensorrt_llm is not installed beside this tritonserver (use --launcher docker)")
    return gpus[0].name, version, ""


def check_launcher(target: str, launcher: str) -> str:
    """``launcher`` (pytriton, local or docker) if it can serve a ``target`` repository, else a ServeError."""
    if target == "gpu" and launcher == "pytriton":
        raise ServeError("the pytriton wheel has no tensorrtllm backend; use --launcher local|docker")
    if target in ("cpu", "stand-in") and launcher != "pytriton":  # python-backend models on the CPU only
        raise ServeError(f"launcher {launcher!r} serves GPU repositories; this one is {target}")
    return launcher  # a pytorch repository: pytriton (the CPU reference runtime underneath) or a GPU launcher


def auto_launcher(target: str, *, gpu_host: bool, local_tritonserver: bool, local_tensorrt_llm: bool) -> str:
    """What ``--launcher auto`` runs a ``target`` repository with.

    Engines (``gpu``) need the tensorrtllm backend: a local tritonserver, else the NGC image. A ``pytorch``
    repository runs TensorRT-LLM's LLM API on a GPU host exactly as an engine repository would be launched, except
    that a local tritonserver counts only with the ``tensorrt_llm`` package beside it; on a host without a GPU it is
    served by the pytriton wheel's Triton, whose python stub finds a ``tensorrt_llm`` that runs the CPU reference
    runtime (the tests' fake) or fails to load the model, saying so. CPU and stand-in repositories: pytriton.
    """
    if target == "gpu" or (target == "pytorch" and gpu_host):
        local = local_tritonserver and (target == "gpu" or local_tensorrt_llm)
        return "local" if local else "docker"
    return "pytriton"


# ------------------------------------------------------------------------- dying with the launcher

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child SIGKILL when the thread that forked it ends (Linux), else None.

    prctl is looked up here, in the parent, so that the child between fork and exec only calls it. Should the
    parent have died before the call took effect, the child kills itself.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def set_parent_death_signal() -> None:
        if prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), kill)

    return set_parent_death_signal


class _Spawner:
    """Starts processes that die with this one, from a thread that lives as long as this process.

    The parent-death signal fires when the forking *thread* ends: a server started from a short-lived thread would
    die with that thread. The main thread starts its children itself; any other thread hands them to one daemon
    thread, started on first use, that never returns.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[tuple[Future[subprocess.Popen[bytes]], Callable[[], subprocess.Popen[bytes]]]] = []
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def popen(self, command: Sequence[str], **options: object) -> subprocess.Popen[bytes]:
        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(command, preexec_fn=die_with_parent(), **options)  # type: ignore[call-overload]

        if threading.current_thread() is threading.main_thread():
            return start()
        future: Future[subprocess.Popen[bytes]] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="nemo-serve-spawner", daemon=True)
                self._thread.start()
            self._requests.append((future, start))
            self._wake.notify()
        return future.result()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._requests:
                    self._wake.wait()
                future, start = self._requests.pop(0)
            try:
                future.set_result(start())
            except BaseException as error:  # handed to the caller
                future.set_exception(error)


_spawner = _Spawner()


def start_child(command: Sequence[str], **options: object) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(command, **options)`` whose child gets SIGKILL when this process dies, from any thread."""
    return _spawner.popen(command, **options)


# --------------------------------------------------------------------------------------- the server


class TritonServer:
    """A tritonserver process on a rendered repository: `with TritonServer(repo) as server: ...`."""

    def __init__(
        self,
        repository: Path,
        *,
        host: str = DEFAULT_HOST,
        ports: Ports | None = None,
        log_path: Path | None = None,
        launcher: str = "auto",
        image: str = NGC_IMAGE,
        grace_s: float = DEFAULT_GRACE_S,
        admin_key: str | None = None,
    ) -> None:
        self.repository = repository.resolve()
        self.manifest = repository_manifest(self.repository)
        self.target = self.manifest.target
        self.host = host
        self.ports = ports or choose_ports(host)
        self.owner = Owner.current()
        self._workdir = make_workdir(self.owner)
        self.run = self._workdir.name.removeprefix("nemo-serve-")
        self.log_path = log_path or self._workdir / "tritonserver.log"
        self.launcher = self._resolve_launcher(launcher)
        self.image = image
        self.grace_s = grace_s
        self._process: subprocess.Popen[bytes] | None = None
        self.supervisor: StubSupervisor | None = None
        self.admin_key = check_admin_key(admin_key) if admin_key is not None else secrets.token_urlsafe(32)

    @property
    def http_admin_headers(self) -> dict[str, str]:
        """The HTTP header that admits a request to the restricted APIs (see RESTRICTED_APIS)."""
        return {ADMIN_KEY_HEADER: self.admin_key}

    @property
    def grpc_admin_headers(self) -> dict[str, str]:
        """The gRPC metadata that admits a call to the restricted APIs."""
        return {GRPC_ADMIN_KEY_HEADER: self.admin_key}

    @property
    def workdir(self) -> Path:
        """This run's temp directory (the python backend, the default log, a generated admin key), removed on stop."""
        return self._workdir

    @property
    def shm_prefix(self) -> str:
        """The prefix of this run's python backend shared-memory regions (in /dev/shm)."""
        return shm_region_prefix(self.owner, self.run)

    @property
    def container_name(self) -> str:
        """The docker launcher's container name."""
        return f"nemo-serve-{self.run}".replace("_", "-")

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    def _resolve_launcher(self, launcher: str) -> str:
        if launcher != "auto":
            return check_launcher(self.target, launcher)
        on_gpu_host = self.target == "pytorch" and bool(probe_gpus())  # only a pytorch repository asks
        return auto_launcher(
            self.target,
            gpu_host=on_gpu_host,
            local_tritonserver=shutil.which("tritonserver") is not None,
            local_tensorrt_llm=self.target == "pytorch" and installed_trtllm_version() is not None,
        )

    def command_and_env(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment this server starts with."""
        env = dict(os.environ)
        if self.launcher == "pytriton":
            triton = PytritonTriton.locate()
            backends = triton.prepare_backends(self._workdir / "backends")
            command = [
                str(triton.binary),
                *triton_arguments(self.repository, self.host, self.ports, self.admin_key, self.shm_prefix),
                f"--backend-directory={backends}",
            ]
            return command, triton.environment(env)
        if self.launcher == "local":
            binary = shutil.which("tritonserver")
            if binary is None:
                raise ServeError("no `tritonserver` on PATH (use --launcher docker)")
            arguments = triton_arguments(self.repository, self.host, self.ports, self.admin_key, self.shm_prefix)
            return [binary, *arguments], env
        return docker_command(
            self.repository,
            self.manifest.model_dir,
            self.host,
            self.ports,
            self.image,
            package_dirs(),
            self.admin_key,
            name=self.container_name,
            labels=container_labels(self.owner),
        ), env

    def start(self) -> None:
        if self.manifest.nemo_build_version != __version__:
            print(
                f"nemo-serve: {self.repository} was rendered by nemo_build {self.manifest.nemo_build_version}, "
                f"this is {__version__}: if a model fails to load, re-render it with `nemo-build repository --replace`",
                flush=True,
            )
        if self.target == "gpu":
            print(f"nemo-serve: {check_gpu_engine(self.manifest, self.launcher, self.image)}", flush=True)
        elif self.target == "pytorch" and self.launcher in ("local", "docker"):
            print(f"nemo-serve: {check_pytorch_repository(self.manifest, self.launcher, self.image)}", flush=True)
        removed = remove_leftovers(docker="docker" if self.launcher == "docker" else None).summary()
        if removed:
            print(f"nemo-serve: {removed}", file=sys.stderr, flush=True)
        command, env = self.command_and_env()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = start_child(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        """The tritonserver process (its python stubs are its children), while started."""
        return None if self._process is None else self._process.pid

    def exit_status(self) -> int | None:
        """The server's exit status once it has exited, else None."""
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The server's error lines, then the end of its log (model load failures scroll off the end)."""
        if not self.log_path.is_file():
            return "(no server log)"
        log = self.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in log if line.startswith("E") and "CudaDriverHelper" not in line]
        return "\n".join(["errors:", *errors, f"last {lines} lines:", *log[-lines:]])

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Poll readiness; on exit or timeout raise with the server log's tail."""
        assert self._process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServeError(
                    f"tritonserver exited with status {self._process.returncode} before becoming ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self.is_ready():
                if self.launcher != "docker":  # a container's processes are not ours to watch
                    self.supervisor = StubSupervisor(self._process.pid, self.http_url, self.http_admin_headers)
                    self.supervisor.start()
                return
            time.sleep(0.25)
        raise ServeError(f"tritonserver not ready after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def stop(self, *, keep_log: bool = False) -> int | None:
        """SIGTERM, wait up to the grace period, then SIGKILL the process group; remove what the run left (its
        shared-memory regions, its container, its temp directory). Returns the status.

        ``keep_log`` (the server failed) keeps a log written into the temp directory, and only that, for reading;
        the next start removes it once this process is gone.
        """
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        process, self._process = self._process, None
        status = None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=self.grace_s)
            # The python backend stubs share the server's process group; kill what is left of it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            status = process.wait()
            if self.launcher == "docker":  # the client is gone; the container may not be
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(
                        ["docker", "rm", "--force", self.container_name], capture_output=True, timeout=30, check=False
                    )
        # Regions a killed stub or server did not remove (the server and its stubs are gone: they are nobody's).
        for region in SHM_DIR.glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        if keep_log and self.log_path.parent == self._workdir and self._workdir.is_dir():
            for entry in self._workdir.iterdir():
                if entry in (self.log_path, self._workdir / OWNER_FILE):
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(self._workdir, ignore_errors=True)
        return status

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop(keep_log=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------- the CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-serve",
        description=(
            "Start Triton on a model repository rendered by `nemo-build repository`, wait until it is "
            "ready, print its endpoints and serve until Ctrl-C / SIGTERM. CPU repositories run the "
            "tritonserver shipped in the nvidia-pytriton wheel; GPU repositories a local tritonserver "
            f"or the {NGC_IMAGE} image."
        ),
    )
    parser.add_argument("--model-repository", type=Path, required=True, help="rendered repository")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (default: a free one)")
    parser.add_argument("--http-port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--metrics-port", type=int, default=0, help="metrics port (default: a free one)")
    parser.add_argument(
        "--launcher",
        choices=["auto", "pytriton", "local", "docker"],
        default="auto",
        help="how to run Triton: pytriton (CPU), local tritonserver or docker (GPU); auto picks",
    )
    parser.add_argument("--image", default=NGC_IMAGE, help="image for --launcher docker")
    parser.add_argument(
        "--log-file",
        type=Path,
        help="server log (default: a file in the run's temp dir, removed on stop unless the server failed)",
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT_S, help="seconds to wait for ready"
    )
    parser.add_argument(
        "--grace", type=float, default=DEFAULT_GRACE_S, help="seconds between SIGTERM and SIGKILL on stop"
    )
    parser.add_argument(
        "--admin-key-file",
        type=Path,
        help=(
            f"file holding the admin key that Triton's {', '.join(RESTRICTED_APIS)} APIs require in the "
            f"'{ADMIN_KEY_HEADER}' header (default: ${ADMIN_KEY_ENV}, else a key generated for this run and "
            "written, mode 0600, as admin-key beside the server log)"
        ),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server: TritonServer | None = None
    try:
        admin_key = read_admin_key(args.admin_key_file)
        ports = choose_ports(args.host, args.grpc_port, args.http_port, args.metrics_port)
        server = TritonServer(
            args.model_repository,
            host=args.host,
            ports=ports,
            log_path=args.log_file,
            launcher=args.launcher,
            image=args.image,
            grace_s=args.grace,
            admin_key=admin_key,
        )
        key_source = (
            str(args.admin_key_file or f"${ADMIN_KEY_ENV}")
            if admin_key is not None
            else str(write_admin_key(server.admin_key, server.log_path.parent / "admin-key"))
        )
    except (ServeError, OSError) as error:
        if server is not None:
            server.stop()
        print(f"nemo-serve: {error}", file=sys.stderr)
        return 2

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        server.start()
    except ServeError as error:
        server.stop()
        print(f"nemo-serve: {error}", file=sys.stderr)
        return 2
    try:
        server.wait_ready(args.ready_timeout)
    except ServeError as error:
        server.stop(keep_log=True)
        print(f"nemo-serve: {error}", file=sys.stderr)
        return 1
    print(
        f"nemo-serve: Triton ready ({server.target}, {server.launcher}) "
        f"grpc={server.grpc_url} http={server.http_url} "
        f"metrics=http://{args.host}:{ports.metrics}/metrics log={server.log_path}",
        flush=True,
    )
    print(
        f"nemo-serve: admin APIs need the key in the '{ADMIN_KEY_HEADER}' HTTP header "
        f"('{GRPC_ADMIN_KEY_HEADER}' on gRPC); key: {key_source}",
        flush=True,
    )
    status = 0
    while not stopping:
        exited = server.exit_status()
        if exited is not None:
            print(f"nemo-serve: tritonserver exited ({exited}):\n{server.log_tail()}", file=sys.stderr)
            status = 1
            break
        time.sleep(0.5)
    server.stop(keep_log=status != 0)
    print("nemo-serve: stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
