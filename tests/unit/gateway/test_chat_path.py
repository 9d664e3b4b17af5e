"""``--chat-path``: direct by default, chat-model on request, anything else refused before the server starts."""

from __future__ import annotations

import pytest

from nemo_gateway.cli import build_parser, main


def test_the_chat_path_defaults_to_direct_and_takes_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args([]).chat_path == "direct"
    assert build_parser().parse_args(["--chat-path", "chat-model"]).chat_path == "chat-model"
    monkeypatch.setenv("NEMO_GATEWAY_CHAT_PATH", "chat-model")
    assert build_parser().parse_args([]).chat_path == "chat-model"


def test_an_unknown_chat_path_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--chat-path", "python"])
    assert "invalid choice: 'python'" in capsys.readouterr().err
    monkeypatch.setenv("NEMO_GATEWAY_CHAT_PATH", "bogus")
    with pytest.raises(SystemExit):
        main([])
    assert "NEMO_GATEWAY_CHAT_PATH is 'bogus'; accepted: direct, chat-model" in capsys.readouterr().err
