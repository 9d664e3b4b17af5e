"""``nemo-build hf-tokenizer``: the directory AutoTokenizer loads gives exactly Tekkenizer's ids and text.

Tools like aiperf count prompt and output tokens with it, so any id that differs from Tekken's would skew
their figures against the gateway's own usage counts. Written once per module through the CLI (~6 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_build.cli import main
from nemo_protocol.tekken import Tekkenizer
from tests.unit.protocol.corpus import MULTILINGUAL

transformers = pytest.importorskip("transformers", reason="transformers comes with the build extra")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory, tekken_path: Path) -> Path:
    out = tmp_path_factory.mktemp("hf") / "tokenizer"
    assert main(["hf-tokenizer", "--out", str(out), "--tokenizer", str(tekken_path)]) == 0
    return out


@pytest.fixture(scope="module")
def hf(hf_dir: Path):  # a transformers PreTrainedTokenizerFast
    return transformers.AutoTokenizer.from_pretrained(str(hf_dir))


@pytest.mark.parametrize("language", sorted(MULTILINGUAL))
def test_ids_and_text_match_tekken(hf, tok: Tekkenizer, language: str) -> None:
    text = MULTILINGUAL[language]
    ids = tok.encode(text)
    # the default call too: like Tekkenizer.encode, it adds no BOS, and control-token names stay text
    assert hf.encode(text, add_special_tokens=False) == hf.encode(text) == ids
    assert hf.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_any_text_encodes_like_tekken(hf, tok: Tekkenizer, text: str) -> None:
    ids = tok.encode(text)
    assert hf.encode(text, add_special_tokens=False) == ids
    assert hf.decode(ids) == text


def test_control_tokens_keep_their_ids(hf, tok: Tekkenizer) -> None:
    assert len(hf) == tok.vocab_size == 131072
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (
        tok.bos_id,
        tok.eos_id,
        tok.pad_id,
        tok.unk_id,
    )
    for name, token_id in tok.control_ids.items():
        assert hf.convert_ids_to_tokens(token_id) == name
    generated = [tok.control_id("[TOOL_CALLS]"), *tok.encode("Paris"), tok.eos_id]
    assert hf.decode(generated, skip_special_tokens=True) == "Paris"


def test_writes_the_files_autotokenizer_reads(hf_dir: Path) -> None:
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in hf_dir.iterdir()}
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert config["split_special_tokens"] is True


def test_refuses_a_non_empty_out_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["hf-tokenizer", "--out", str(tmp_path)]) == 2
    assert "is not empty; pass --force" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_bad_tekken_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "tekken.json"
    bad.write_text("{}")
    assert main(["hf-tokenizer", "--out", str(tmp_path / "out"), "--tokenizer", str(bad)]) == 2
    assert "nemo-build hf-tokenizer: error: not a Tekken file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
