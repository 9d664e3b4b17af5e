"""``nemo-bench`` refuses bad settings with a message naming them, and fails early on an unreachable target."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from nemo_bench.cli import main


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_help_names_the_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("--grpc-url", "--http-url", "--concurrency", "--request-rate", "time to first token", "ITL"):
        assert word in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --grpc-url --http-url is required"),
        (["--grpc-url", "h:1", "--concurrency", "0,2"], "--concurrency takes positive numbers"),
        (["--grpc-url", "h:1", "--request-rate", "x"], "--request-rate takes comma-separated numbers"),
        (["--grpc-url", "h:1", "--concurrency", "2", "--request-rate", "1"], "not allowed with argument"),
        (["--grpc-url", "h:1", "--max-concurrency", "2"], "--max-concurrency applies to --request-rate only"),
        (["--grpc-url", "h:1", "--duration", "-1"], "--duration must be positive"),
        (["--grpc-url", "h:1", "--warmup", "-1"], "--warmup must be 0 or more"),
        (["--http-url", " , "], "--http-url names no endpoint"),
        (["--grpc-url", "h:1", "--spread-metrics-url", ","], "--spread-metrics-url names no endpoint"),
        (["--grpc-url", "h:1", "--lb-policy", "random"], "invalid choice: 'random'"),
    ],
)
def test_bad_arguments_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unreadable_prompt_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--grpc-url", "127.0.0.1:1", "--prompts", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]) == 2
    assert "cannot read the prompt file" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--grpc-url", "--http-url"])
def test_unreachable_target_fails_before_the_sweep(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    url = address if flag == "--grpc-url" else f"http://{address}"
    status = main([flag, url, "--requests", "2", "--no-progress", "--out", str(tmp_path / "out"), "--timeout", "5"])
    err = capsys.readouterr().err
    assert status == 1
    assert "a first request to" in err and address in err
    assert "unavailable" in err or "connection_error" in err
    assert not (tmp_path / "out").exists()
