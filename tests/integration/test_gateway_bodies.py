"""Slow and abandoned request bodies against a real nemo-gateway process, over raw sockets: a body that stalls is cut
at --body-timeout (408) and cannot hold the graceful shutdown (503 at once on SIGTERM); a caller that hangs up
mid-upload is a client disconnect (499 in the metrics), not a server error with a traceback in the log.

No Triton is needed: the body is read (or not) before anything goes upstream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.gateways import free_port

BODY_TIMEOUT_S = 2.0


@contextmanager
def gateway_process(log: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("nemo-gateway")), "--triton-url", f"127.0.0.1:{free_port()}",
             "--port", str(port), "--log-level", "info", *flags],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "NIM_SERVED_MODEL_NAME": "nemo-tiny"},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health/live", timeout=2):
                        break
                except OSError:
                    assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.2)
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def start_upload(port: int, declared: int, sent: bytes) -> socket.socket:
    """A chat request whose headers declare ``declared`` bytes of body, of which only ``sent`` is sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def read_answer(sock: socket.socket) -> str:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received.decode("utf-8", "replace")


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/metrics", timeout=10) as answer:
        return str(answer.read().decode())


PARTIAL = b'{"messages": [{"role": "user", "content": "' + b"x" * 50_000


def test_a_stalled_body_is_cut_at_the_body_timeout_with_408(tmp_path: Path) -> None:
    with gateway_process(tmp_path / "log", "--body-timeout", str(BODY_TIMEOUT_S)) as (_, port):
        started = time.monotonic()
        with start_upload(port, 1_000_000, PARTIAL) as sock:
            answer = read_answer(sock)  # the gateway answers, then closes the connection
        waited = time.monotonic() - started
        assert answer.startswith("HTTP/1.1 408"), answer[:300]
        assert "did not arrive within 2 s" in answer and "of 1000000 bytes came" in answer
        assert BODY_TIMEOUT_S - 0.5 < waited < BODY_TIMEOUT_S + 10
        assert 'nemo_gateway_errors_total{type="request_timeout"} 1.0' in metrics(port)


def test_a_stalled_upload_does_not_hold_the_graceful_shutdown(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with gateway_process(log, "--body-timeout", "600") as (process, port):
        with start_upload(port, 1_000_000, PARTIAL) as sock:
            time.sleep(0.5)  # the request is being read
            stopping = time.monotonic()
            process.send_signal(signal.SIGTERM)
            answer = read_answer(sock)
            process.wait(timeout=30)
        assert time.monotonic() - stopping < 15, "SIGTERM waited for the stalled upload"
        assert answer.startswith("HTTP/1.1 503"), answer[:300]
        assert "shutting down" in answer and f"{len(PARTIAL)} of 1000000 bytes" in answer
        # a graceful shutdown (uvicorn then exits by the signal it got)
        assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in log.read_text()


def test_a_caller_that_hangs_up_mid_upload_is_a_client_disconnect_not_a_server_error(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with gateway_process(log, "--body-timeout", "600") as (_, port):
        sock = start_upload(port, 1_000_000, PARTIAL)
        time.sleep(0.5)
        sock.close()
        deadline = time.monotonic() + 20
        while 'nemo_gateway_errors_total{type="client_disconnected"} 1.0' not in (text := metrics(port)):
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert 'nemo_gateway_requests_total{endpoint="chat",status="499"} 1.0' in text
        assert 'type="server_error"' not in text and 'status="500"' not in text
    written = log.read_text()
    assert "Traceback" not in written and " ERROR " not in written, written[-3000:]


@pytest.mark.parametrize("flag", ["0", "-1", "soon"])
def test_the_body_timeout_must_be_a_positive_number_of_seconds(flag: str) -> None:
    run = subprocess.run(
        [str(Path(sys.executable).with_name("nemo-gateway")), "--body-timeout", flag],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "--body-timeout" in run.stderr
