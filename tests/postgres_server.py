"""A real PostgreSQL server for the tests (the gateways' shared response store): the machine's own binaries
(``make setup`` installs Debian's ``postgresql``), a fresh cluster in a temporary directory, on a free loopback
port, stopped and deleted on exit.

PostgreSQL refuses to run as root; under root the cluster belongs to, and the server runs as, the ``postgres``
system user (``nobody`` where there is none).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

DATABASE_USER = "nemo"


def postgres_bin() -> Path:
    """The directory of ``initdb`` and ``postgres``: on PATH, or the newest Debian install."""
    on_path = shutil.which("initdb")
    found = [str(Path(on_path).resolve())] if on_path else sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `make setup` (apt-get install postgresql)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"postgresql://{DATABASE_USER}@127.0.0.1:{self.port}/postgres"
        self._root = Path(tempfile.mkdtemp(prefix="nemo-postgres-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._as: dict[str, int] = {}
        if os.geteuid() == 0:
            account = _unprivileged_account()
            self._as = {"user": account.pw_uid, "group": account.pw_gid}
            os.chown(self._root, account.pw_uid, account.pw_gid)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop()

    def start(self) -> None:
        """Start the server; the first time, on a new cluster."""
        binaries = postgres_bin()
        data, log = self._root / "data", self._root / "server.log"
        if not data.exists():
            self._initdb(binaries, data)
        with log.open("ab") as out:
            self._process = subprocess.Popen(
                [binaries / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(self.port), "-k", self._root],
                stdout=out, stderr=subprocess.STDOUT, **self._as,
            )  # fmt: skip
        self._wait_ready(log)

    def _initdb(self, binaries: Path, data: Path) -> None:
        subprocess.run(
            [binaries / "initdb", "-D", data, "-U", DATABASE_USER, "--auth=trust", "-E", "UTF8", "--locale=C",
             "--no-sync"],
            check=True, capture_output=True, **self._as,
        )  # fmt: skip

    def _wait_ready(self, log: Path) -> None:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._process.returncode}): {log.read_text()}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections in 60 s: {log.read_text()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server, keeping its data (a fast shutdown: what was committed is on disk)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected, not waited for
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def _stop(self) -> None:
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)


def _unprivileged_account() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a 'postgres' nor a 'nobody' account to run PostgreSQL as")
