"""What a killed `nemo-serve` leaves behind, whose it is, and its removal by the next start.

A run marks what it creates with its owner: the process that started the server (:class:`Owner`: pid
namespace, pid and start time, so a reused pid is not mistaken for the owner):

- its directory ``$TMPDIR/nemo-serve-<run>`` holds an ``owner`` file;
- the python backend's shared-memory regions in /dev/shm are named
  ``triton_python_backend_shm_region_nemo-serve.<owner>.<run>.<uuid>``
  (``--backend-config=python,shm-region-prefix-name=...``; Triton appends the uuid);
- a docker container carries the labels ``nemo-serve.owner`` and ``nemo-serve.host``.

A clean stop removes all of them. A SIGKILLed launcher takes its tritonserver along (parent-death signal); the
python stubs then see their parent gone and exit, but what a killed server or stub did not remove stays. The next
start removes, of what this user owns:

- regions and directories whose owner is gone; a region also only when no process maps it or holds it open;
- regions with Triton's default prefix (``triton_python_backend_shm_region_<uuid>``: older nemo-serve versions, other
  Triton users), which carry no owner, only when no process maps them or holds them open, judged over every process
  of this user; when one that may be Triton (by its name) cannot be inspected, these regions are left alone;
- directories without an ``owner`` file (older versions) only when empty and untouched for a minute;
- containers labelled by a launcher of this host and pid namespace that is gone (docker launcher only).

An owner from another pid namespace cannot be judged from here: what it marked is left alone; so is everything
without /proc (not Linux).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
SHM_DIR = Path("/dev/shm")
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"
"""The python backend's default prefix for the shared-memory region of each stub; a uuid follows it."""
WORKDIR_PREFIX = "nemo-serve-"
OWNER_FILE = "owner"
OWNER_LABEL = "nemo-serve.owner"
HOST_LABEL = "nemo-serve.host"
LEGACY_DIR_GRACE_S = 60.0
"""An empty directory without an owner file is removed only after this long untouched: a starting run writes its
owner file right after creating the directory."""
DOCKER_TIMEOUT_S = 30.0
TRITON_PROCESS_NAMES = ("tritonserver", "triton_python_b", "python")
"""Process names (/proc/<pid>/comm, 15 characters at most) of what may hold a python backend region."""

_OWNER = re.compile(r"(\d+)-(\d+)-(\d+)")
_TAGGED_REGION = re.compile(re.escape(SHM_REGION_PREFIX) + r"nemo-serve\.(\d+-\d+-\d+)\.")


def _pid_namespace(pid: int | str = "self") -> int:
    return os.stat(PROC / str(pid) / "ns" / "pid").st_ino


def _stat_fields(pid: int | str) -> list[str]:
    """Fields 3 on (state, ppid, ...) of /proc/<pid>/stat: the command name before them may hold spaces."""
    return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one with the same pid by its start time (clock ticks after boot)."""

    pid_namespace: int
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Owner:
        """The running process ``pid`` (OSError when there is none); without /proc (not Linux) its pid alone."""
        if not PROC.is_dir():
            return cls(0, pid, 0)
        return cls(_pid_namespace(pid), pid, int(_stat_fields(pid)[19]))

    @classmethod
    def current(cls) -> Owner:
        return cls.of(os.getpid())

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        match = _OWNER.fullmatch(text.strip())
        return None if match is None else cls(*(int(group) for group in match.groups()))

    def __str__(self) -> str:
        return f"{self.pid_namespace}-{self.pid}-{self.start}"

    def is_gone(self) -> bool:
        """True when this process no longer runs (exited, a zombie, or its pid reused); False while it runs or
        when it cannot be told from here (another pid namespace)."""
        if not PROC.is_dir() or self.pid_namespace != _pid_namespace():
            return False
        try:
            fields = _stat_fields(self.pid)
        except (OSError, IndexError):
            return True
        return fields[0] in ("Z", "X") or int(fields[19]) != self.start


def shm_region_prefix(owner: Owner, run: str) -> str:
    """The python backend's region prefix for one run (``shm-region-prefix-name``)."""
    return f"{SHM_REGION_PREFIX}nemo-serve.{owner}.{run}."


def region_owner(name: str) -> Owner | None:
    """The owner a region's name carries, or None (Triton's default prefix, or not a python backend region)."""
    match = _TAGGED_REGION.match(name)
    return None if match is None else Owner.parse(match.group(1))


def make_workdir(owner: Owner, tmp_dir: Path | None = None) -> Path:
    """A new private ``nemo-serve-<run>`` directory holding its owner file."""
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=tmp_dir))
    (workdir / OWNER_FILE).write_text(f"{owner}\n")
    return workdir


def workdir_owner(workdir: Path) -> Owner | None:
    try:
        return Owner.parse((workdir / OWNER_FILE).read_text())
    except OSError:
        return None


# ------------------------------------------------------------------------ which processes hold what


@dataclass
class Holders:
    """The paths under a directory that processes map or hold open."""

    paths: set[str] = field(default_factory=set)
    blind: bool = False
    """A process of this user that may be Triton could not be inspected: it may hold anything."""


def held_under(directory: Path) -> Holders:
    """What every process maps (/proc/<pid>/maps) or holds open (/proc/<pid>/fd) under ``directory``."""
    prefix = str(directory.resolve()) + os.sep
    uid = os.getuid()
    found = Holders()
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            try:
                with open(PROC / entry.name / "maps", encoding="utf-8", errors="replace") as maps:
                    for line in maps:
                        parts = line.rstrip("\n").split(maxsplit=5)
                        if len(parts) == 6 and parts[5].startswith(prefix):
                            found.paths.add(parts[5].removesuffix(" (deleted)"))
                for descriptor in os.scandir(PROC / entry.name / "fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(descriptor.path)
                        if target.startswith(prefix):
                            found.paths.add(target.removesuffix(" (deleted)"))
            except PermissionError:
                if entry.stat().st_uid == uid and _may_run_triton(entry.name):
                    found.blind = True
        except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile
            continue
        except OSError:
            found.blind = True
    return found


def _may_run_triton(pid: str) -> bool:
    """Whether a process that cannot be inspected may be Triton: a tritonserver, a python stub, or a python
    process (Triton's in-process API). Its name stays readable when its maps are not (a container's init, an agent
    that made itself undumpable)."""
    try:
        name = (PROC / pid / "comm").read_text().strip()
    except OSError:
        return True
    return name.startswith(TRITON_PROCESS_NAMES)


# ---------------------------------------------------------------------------------------- removal


def _own_entries(directory: Path, prefix: str) -> Iterable[tuple[Path, os.stat_result]]:
    uid = os.getuid()
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    status = entry.stat(follow_symlinks=False)
                    if status.st_uid == uid:
                        yield Path(entry.path), status


def stale_regions(shm_dir: Path = SHM_DIR) -> list[Path]:
    """The python backend regions in ``shm_dir`` that no running server uses (see the module's rules)."""
    candidates: list[tuple[Path, bool]] = []  # (region, carries an owner)
    for path, status in _own_entries(shm_dir, SHM_REGION_PREFIX):
        if not stat.S_ISREG(status.st_mode):
            continue
        owner = region_owner(path.name)
        if owner is None:
            candidates.append((path, False))
        elif owner.is_gone():
            candidates.append((path, True))
    if not candidates:
        return []
    holders = held_under(shm_dir)
    resolved = shm_dir.resolve()
    return [
        path
        for path, tagged in candidates
        if str(resolved / path.name) not in holders.paths and (tagged or not holders.blind)
    ]


def stale_workdirs(tmp_dir: Path | None = None) -> list[Path]:
    """The ``nemo-serve-*`` directories whose owner is gone, and old empty ones that name no owner."""
    found: list[Path] = []
    for path, status in _own_entries(Path(tmp_dir or tempfile.gettempdir()), WORKDIR_PREFIX):
        if not stat.S_ISDIR(status.st_mode):
            continue
        owner = workdir_owner(path)
        if owner is not None:
            if owner.is_gone():
                found.append(path)
        elif not (path / OWNER_FILE).exists() and time.time() - status.st_mtime > LEGACY_DIR_GRACE_S:
            with contextlib.suppress(OSError):
                if not any(path.iterdir()):
                    found.append(path)
    return found


def remove_regions(regions: Iterable[Path]) -> list[Path]:
    removed = []
    for region in regions:
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
            removed.append(region)
    return removed


def remove_workdirs(workdirs: Iterable[Path]) -> list[Path]:
    removed = []
    for workdir in workdirs:
        shutil.rmtree(workdir, ignore_errors=True)
        if not workdir.exists():
            removed.append(workdir)
    return removed


def container_labels(owner: Owner) -> dict[str, str]:
    return {OWNER_LABEL: str(owner), HOST_LABEL: socket.gethostname()}


def stale_containers(listing: str, host: str | None = None) -> list[str]:
    """Of ``docker ps`` lines ``<id>\\t<owner label>\\t<host label>``, the ids whose owner ran on this host and is
    gone."""
    host = host or socket.gethostname()
    stale = []
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[2] != host:
            continue
        owner = Owner.parse(parts[1])
        if owner is not None and owner.is_gone():
            stale.append(parts[0])
    return stale


def remove_stale_containers(docker: str = "docker") -> list[str]:
    """Remove the containers of this host's launchers that are gone; [] when docker does not answer."""
    listing = [
        docker,
        "ps",
        "--all",
        f"--filter=label={OWNER_LABEL}",
        f'--format={{{{.ID}}}}\t{{{{.Label "{OWNER_LABEL}"}}}}\t{{{{.Label "{HOST_LABEL}"}}}}',
    ]
    try:
        listed = subprocess.run(listing, capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S, check=True)
        stale = stale_containers(listed.stdout)
        if stale:
            subprocess.run([docker, "rm", "--force", *stale], capture_output=True, timeout=DOCKER_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return stale


@dataclass(frozen=True)
class Removed:
    regions: list[Path]
    workdirs: list[Path]
    containers: list[str]

    def summary(self) -> str:
        """One line naming what was removed, or '' when nothing was."""
        counts = (
            (len(self.regions), "shared-memory region", "shared-memory regions"),
            (len(self.workdirs), "directory", "directories"),
            (len(self.containers), "container", "containers"),
        )
        parts = [f"{count} {one if count == 1 else many}" for count, one, many in counts if count]
        return f"removed what killed runs left: {', '.join(parts)}" if parts else ""


def remove_leftovers(*, shm_dir: Path = SHM_DIR, tmp_dir: Path | None = None, docker: str | None = None) -> Removed:
    """Remove what killed runs left (regions, directories and, given a docker binary, containers)."""
    return Removed(
        regions=remove_regions(stale_regions(shm_dir)),
        workdirs=remove_workdirs(stale_workdirs(tmp_dir)),
        containers=remove_stale_containers(docker) if docker else [],
    )
