"""Whose a leftover is (nemo_ops.leftovers), judged on real processes and real files: a region or directory whose
owner is gone and that no process holds is stale, anything a running process maps or holds open is not, and an owner
that cannot be judged from here (another pid namespace) keeps what it marked."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nemo_ops.leftovers import (
    HOST_LABEL,
    LEGACY_DIR_GRACE_S,
    OWNER_FILE,
    OWNER_LABEL,
    SHM_REGION_PREFIX,
    Owner,
    Removed,
    container_labels,
    make_workdir,
    region_owner,
    remove_leftovers,
    shm_region_prefix,
    stale_containers,
    stale_regions,
    stale_workdirs,
    workdir_owner,
)

HOLD = """
import mmap, sys
with open(sys.argv[1], "r+b") as handle:
    mapping = mmap.mmap(handle.fileno(), 0)  # mapped; the file itself is closed
print("holding", flush=True)
sys.stdin.read()
"""


def gone_owner() -> Owner:
    """The owner identity of a process that has exited and been collected."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    owner = Owner.of(child.pid)
    child.communicate(b"")
    return owner


Mapper = Callable[[Path], subprocess.Popen[str]]


@pytest.fixture
def mapper() -> Iterator[Mapper]:
    """Call with a path: a child process that maps it until the test ends."""
    processes: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None and process.stdout.readline() == "holding\n"
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait(timeout=10)


def region(shm: Path, name: str) -> Path:
    path = shm / name
    path.write_bytes(b"\0" * mmap.PAGESIZE)
    return path


def test_an_owner_is_its_pid_namespace_pid_and_start_time() -> None:
    me = Owner.current()
    assert me.pid == os.getpid() and Owner.parse(str(me)) == me and Owner.parse(f" {me}\n") == me
    assert not me.is_gone()
    assert Owner.parse("12-34") is None and Owner.parse("a-1-2") is None


def test_an_exited_process_a_zombie_and_a_reused_pid_are_gone() -> None:
    assert gone_owner().is_gone()
    me = Owner.current()
    assert Owner(me.pid_namespace, me.pid, me.start + 1).is_gone(), "same pid, another start: another process"
    zombie = subprocess.Popen(["true"])
    owner = Owner.of(zombie.pid)
    deadline = time.monotonic() + 10
    while not owner.is_gone() and time.monotonic() < deadline:  # exited, not yet collected
        time.sleep(0.05)
    try:
        assert Path(f"/proc/{zombie.pid}").exists() and owner.is_gone()
    finally:
        zombie.wait()


def test_an_owner_in_another_pid_namespace_cannot_be_judged_so_is_never_gone() -> None:
    me = Owner.current()
    assert not Owner(me.pid_namespace + 1, 999_999_999, 1).is_gone()


def test_a_region_name_carries_its_owner_and_run() -> None:
    me = Owner.current()
    prefix = shm_region_prefix(me, "ab_12")
    assert prefix.startswith(SHM_REGION_PREFIX)
    assert region_owner(prefix + "0c2f7e8a-5d3b-4b8e-9a61-2f1d4c3b2a10") == me
    assert region_owner(SHM_REGION_PREFIX + "0c2f7e8a-5d3b-4b8e-9a61-2f1d4c3b2a10") is None, "Triton's default name"


def test_regions_of_a_gone_owner_that_nothing_holds_are_stale_and_no_others(tmp_path: Path, mapper: Mapper) -> None:
    me, gone = Owner.current(), gone_owner()
    foreign = Owner(me.pid_namespace + 1, gone.pid, gone.start)
    orphan = region(tmp_path, shm_region_prefix(gone, "run1") + "a")
    orphan_mapped = region(tmp_path, shm_region_prefix(gone, "run1") + "b")
    orphan_open = region(tmp_path, shm_region_prefix(gone, "run1") + "c")
    mine = region(tmp_path, shm_region_prefix(me, "run2") + "a")
    unjudgeable = region(tmp_path, shm_region_prefix(foreign, "run3") + "a")
    default_free = region(tmp_path, SHM_REGION_PREFIX + "free")
    default_mapped = region(tmp_path, SHM_REGION_PREFIX + "mapped")
    unrelated = region(tmp_path, "sem.something")
    (tmp_path / (SHM_REGION_PREFIX + "a-directory")).mkdir()
    mapper(orphan_mapped)
    mapper(default_mapped)
    with orphan_open.open("rb"):
        assert sorted(stale_regions(tmp_path)) == sorted([orphan, default_free])
    for kept in (orphan_mapped, mine, unjudgeable, default_mapped, unrelated):
        assert kept.exists()


def test_directories_of_a_gone_owner_and_old_empty_ownerless_ones_are_stale(tmp_path: Path) -> None:
    old = time.time() - LEGACY_DIR_GRACE_S - 60
    mine = make_workdir(Owner.current(), tmp_path)
    orphan = make_workdir(gone_owner(), tmp_path)
    (orphan / "tritonserver.log").write_text("a killed run's log\n")
    assert workdir_owner(mine) == Owner.current() and (mine / OWNER_FILE).is_file()
    legacy_empty, legacy_fresh, legacy_full, damaged = (tmp_path / f"nemo-serve-{n}" for n in range(4))
    for directory in (legacy_empty, legacy_fresh, legacy_full, damaged):
        directory.mkdir()
    (legacy_full / "tritonserver.log").write_text("whose?\n")
    (damaged / OWNER_FILE).write_text("not an owner\n")
    (tmp_path / "nemo-serve-a-file").write_text("")
    (tmp_path / "other-dir").mkdir()
    for directory in (legacy_empty, legacy_full, damaged):
        os.utime(directory, (old, old))
    assert sorted(stale_workdirs(tmp_path)) == sorted([orphan, legacy_empty])


def test_remove_leftovers_removes_what_is_stale_and_says_so(tmp_path: Path) -> None:
    shm, tmp = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    tmp.mkdir()
    gone = gone_owner()
    stale = region(shm, shm_region_prefix(gone, "run") + "x")
    kept = region(shm, shm_region_prefix(Owner.current(), "run") + "x")
    orphan = make_workdir(gone, tmp)
    removed = remove_leftovers(shm_dir=shm, tmp_dir=tmp)
    assert removed.regions == [stale] and removed.workdirs == [orphan] and removed.containers == []
    assert not stale.exists() and not orphan.exists() and kept.exists()
    assert removed.summary() == "removed what killed runs left: 1 shared-memory region, 1 directory"
    assert remove_leftovers(shm_dir=shm, tmp_dir=tmp).summary() == ""
    assert Removed([], [tmp, tmp], ["c"]).summary() == "removed what killed runs left: 2 directories, 1 container"


def test_containers_of_this_hosts_gone_launchers_are_stale() -> None:
    me, gone = Owner.current(), gone_owner()
    labels = container_labels(me)
    host = labels[HOST_LABEL]
    assert labels[OWNER_LABEL] == str(me)
    listing = "\n".join(
        [
            f"aaa\t{gone}\t{host}",
            f"bbb\t{me}\t{host}",
            f"ccc\t{gone}\tanother-host",  # a remote daemon's other clients: their pids mean nothing here
            f"ddd\tnot-an-owner\t{host}",
            "",
        ]
    )
    assert stale_containers(listing, host) == ["aaa"]
