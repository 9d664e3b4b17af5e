"""Bring python-backend models back when their stub process dies.

Triton's python backend restarts a crashed stub only for models that are not decoupled; a decoupled
model (``chat``, ``ensemble``, the CPU ``tensorrt_llm``) whose stub dies keeps answering "Stub process
is not healthy" and keeps reporting ready. The supervisor watches the stubs among the server's
children and, when a model has fewer stubs than it started with, unloads and reloads that model
through Triton's repository API (the server runs with ``--model-control-mode=explicit``; that API needs
the admin key, which the supervisor is given as a header). While the
model reloads, Triton reports it unready, so health checks and load balancers see the outage.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger("nemo_serve")
STUB_BINARY = b"triton_python_backend_stub"


def stub_processes(server_pid: int) -> dict[str, list[int]]:
    """The python backend stub processes that are children of ``server_pid``, by model name."""
    found: dict[str, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # Fields after the parenthesised command name: state, ppid, ...
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent != server_pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            # A stub's first argument is the model file: <repository>/<model>/<version>/model.py.
            if argv[0].endswith(STUB_BINARY) and len(argv) > 1:
                found[Path(argv[1].decode()).parts[-3]].append(int(entry.name))
    return dict(found)


class StubSupervisor:
    """A daemon thread that reloads a model whose stub died; ``stop()`` ends it."""

    def __init__(
        self, server_pid: int, http_url: str, admin_headers: dict[str, str], *, interval_s: float = 1.0
    ) -> None:
        self._server_pid = server_pid
        self._http_url = http_url
        self._admin_headers = admin_headers
        self._interval_s = interval_s
        self._expected = {model: len(pids) for model, pids in stub_processes(server_pid).items()}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="nemo-serve-stub-supervisor", daemon=True)
        self.reloads: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stopped.wait(self._interval_s):
            running = stub_processes(self._server_pid)
            for model, count in self._expected.items():
                if len(running.get(model, [])) < count and not self._stopped.is_set():
                    self._reload(model)

    def _reload(self, model: str) -> None:
        logger.warning("the python backend stub of model %r died; reloading the model", model)
        try:
            self._post(f"/v2/repository/models/{model}/unload", {"parameters": {"unload_dependents": False}})
            self._post(f"/v2/repository/models/{model}/load", {})
        except (urllib.error.URLError, OSError) as exc:
            logger.error("reloading model %r failed: %s", model, exc)
            return
        self.reloads.append(model)

    def _post(self, path: str, body: dict[str, object]) -> None:
        request = urllib.request.Request(
            self._http_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **self._admin_headers},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
