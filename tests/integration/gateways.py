"""nemo-gateway in-process on a real loopback socket, for the integration tests (conftest's `gateway` fixture
and the tests that need other settings)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from nemo_gateway.app import create_app
from nemo_gateway.server import GatewayServer
from nemo_gateway.settings import GatewaySettings

SERVED = "nemo-tiny"  # the served name of the integration repository


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_gateway(settings: GatewaySettings) -> Iterator[str]:
    port = free_port()
    server = GatewayServer(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
