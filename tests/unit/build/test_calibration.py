"""Calibration data: the shipped default, JSONL (text or chat), folders of .txt, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_build.calibration import load_calibration
from nemo_build.errors import BuildError


@pytest.fixture(scope="module")
def tokenizer(tekken_path: Path):
    from nemo_client.tekken import Tekkenizer

    return Tekkenizer.from_file(tekken_path)


def test_default_set_covers_prose_code_chat_and_tool_calls(tokenizer) -> None:
    calib = load_calibration(tokenizer)
    assert len(calib.samples) >= 30
    flat = [t for s in calib.samples for t in s]
    for control in ("[INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[TOOL_RESULTS]"):
        assert tokenizer.control_id(control) in flat, control
    text = "".join(tokenizer.decode(s) for s in calib.samples)
    assert "def merge_intervals" in text and "人工智能" in text and "Искусственный" in text
    assert load_calibration(tokenizer).sha256 == calib.sha256


def test_jsonl_and_folders_size_and_length(tokenizer, tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    records = [
        {"text": "one two three four five six"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"text": "third"},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    calib = load_calibration(tokenizer, jsonl, size=2, seq_len=4)
    assert len(calib.samples) == 2 and all(len(s) <= 4 for s in calib.samples)
    assert calib.samples[1][:2] == (tokenizer.bos_id, tokenizer.control_id("[INST]"))
    assert load_calibration(tokenizer, jsonl, size=2, seq_len=5).sha256 != calib.sha256

    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "b.txt").write_text("second file")
    (folder / "a.txt").write_text("first file")
    (folder / "ignored.md").write_text("not a sample")
    calib = load_calibration(tokenizer, folder)
    assert [tokenizer.decode(s) for s in calib.samples] == ["first file", "second file"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"text": "ok"}\nnot json\n', r"c\.jsonl:2 is not valid JSON"),
        ('{"prompt": "x"}\n', "needs a string `text` field or a `messages` list"),
        ('{"messages": [{"role": "robot", "content": "x"}]}\n', "not valid for the v3 template"),
    ],
)
def test_bad_jsonl_names_the_line(tokenizer, tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(BuildError, match=expected):
        load_calibration(tokenizer, path)


def test_missing_or_unsupported_inputs(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        load_calibration(tokenizer, tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(BuildError, match=r"neither a \.jsonl file nor a folder"):
        load_calibration(tokenizer, tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match=r"no \.txt files"):
        load_calibration(tokenizer, tmp_path / "empty")
