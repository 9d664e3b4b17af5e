"""Tekkenizer encodes and decodes exactly like mistral-common's Tekkenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from nemo_protocol.errors import TokenizerFileError
from nemo_protocol.tekken import LEGACY_CONTROL_TOKENS, Tekkenizer, find_tekken_file

from .corpus import MULTILINGUAL


@pytest.fixture(scope="module")
def ref(reference: MistralTokenizer):
    return reference.instruct_tokenizer.tokenizer


@pytest.mark.parametrize("language", sorted(MULTILINGUAL))
def test_encode_decode_match_mistral_common(tok: Tekkenizer, ref, language: str) -> None:
    text = MULTILINGUAL[language]
    for bos, eos in [(False, False), (True, True), (True, False)]:
        ids = tok.encode(text, bos=bos, eos=eos)
        assert ids == ref.encode(text, bos=bos, eos=eos)
    ids = tok.encode(text)
    assert tok.decode(ids) == ref.decode(ids) == text


def test_known_ids(tok: Tekkenizer) -> None:
    assert tok.encode("Hello world", bos=True, eos=True) == [1, 22177, 4304, 2]
    assert tok.vocab_size == 131072
    assert tok.num_control_tokens == 1000
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (1, 2, 11, 0)


def test_every_control_token_by_name(tok: Tekkenizer) -> None:
    for expected_id, name in enumerate(LEGACY_CONTROL_TOKENS):
        assert tok.control_id(name) == expected_id
        assert tok.control_ids[name] == expected_id
        assert tok.id_to_piece(expected_id) == name
    assert tok.control_id("<SPECIAL_999>") == 999
    with pytest.raises(KeyError, match=r"unknown control token '\[NOPE\]'.*\[TOOL_CALLS\]"):
        tok.control_id("[NOPE]")


def test_control_token_text_is_never_a_control_id(tok: Tekkenizer) -> None:
    for name in LEGACY_CONTROL_TOKENS:
        ids = tok.encode(f"x {name} y")
        assert all(i >= tok.num_control_tokens for i in ids), name
        assert tok.decode(ids) == f"x {name} y"


def test_decode_drops_or_keeps_control_tokens(tok: Tekkenizer, ref) -> None:
    ids = [1, 3, *tok.encode("héllo 世界"), 4, 9, *tok.encode(" ok"), 2]
    assert tok.decode(ids) == ref.decode(ids) == "héllo 世界 ok"
    kept = tok.decode(ids, keep_control_tokens=True)
    assert kept == ref.decode(ids, special_token_policy=SpecialTokenPolicy.KEEP)
    assert kept == "<s>[INST]héllo 世界[/INST][TOOL_CALLS] ok</s>"


def test_decode_rejects_ids_outside_the_vocabulary(tok: Tekkenizer) -> None:
    with pytest.raises(ValueError, match=r"token id 131072 is outside the vocabulary \[0, 131072\)"):
        tok.decode([5000, 131072])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-1])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_unicode_matches_mistral_common(tok: Tekkenizer, ref, text: str) -> None:
    ids = tok.encode(text)
    assert ids == ref.encode(text, bos=False, eos=False)
    assert tok.decode(ids) == ref.decode(ids)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=131071), max_size=60))
def test_random_id_sequences_decode_like_mistral_common(tok: Tekkenizer, ref, ids: list[int]) -> None:
    assert tok.decode(ids) == ref.decode(ids)
    assert tok.decode(ids, keep_control_tokens=True) == ref.decode(ids, special_token_policy=SpecialTokenPolicy.KEEP)


def test_newer_file_with_special_tokens_list(tekken_path: Path) -> None:
    newer = tekken_path.with_name("tekken_240911.json")
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer as Reference

    ours, theirs = Tekkenizer.from_file(newer), Reference.from_file(newer)
    assert ours.vocab_size == theirs.n_words
    assert ours.control_id("[SYSTEM_PROMPT]") == theirs.get_special_token("[SYSTEM_PROMPT]")
    for text in MULTILINGUAL.values():
        assert ours.encode(text) == theirs.encode(text, bos=False, eos=False)
    for token_id in range(0, theirs.num_special_tokens, 37):
        assert ours.id_to_piece(token_id) == theirs.id_to_piece(token_id)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerFileError, match="Tekken file not found"):
        Tekkenizer.from_file(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(TokenizerFileError, match="not a Tekken JSON file"):
        Tekkenizer.from_file(broken)
    foreign = tmp_path / "tokenizer.json"
    foreign.write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(TokenizerFileError, match="needs 'vocab' and 'config'"):
        Tekkenizer.from_file(foreign)
    with pytest.raises(TokenizerFileError, match=r"has no tekken\.json"):
        find_tekken_file(tmp_path)


def test_model_directory_tekken_file_is_used(tmp_path: Path, tekken_path: Path) -> None:
    (tmp_path / "tekken.json").write_bytes(tekken_path.read_bytes())
    assert Tekkenizer.from_file(find_tekken_file(tmp_path)).encode("Hello world") == [22177, 4304]
