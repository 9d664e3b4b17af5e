"""The streaming decoder returns only complete text and reassembles exactly, however the ids are chunked."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_protocol.tekken import Tekkenizer

from .corpus import MULTILINGUAL


def _chunk(ids: list[int], rng: random.Random) -> list[list[int]]:
    chunks, start = [], 0
    while start < len(ids):
        size = rng.choice([1, 1, 1, 2, 3, 5, 8])
        chunks.append(ids[start : start + size])
        start += size
    return chunks


@pytest.mark.parametrize("language", sorted(MULTILINGUAL))
def test_random_chunkings_reassemble_exactly(tok: Tekkenizer, language: str) -> None:
    text = MULTILINGUAL[language]
    ids = tok.encode(text)
    rng = random.Random(language)
    for _ in range(25):
        decoder = tok.incremental_decoder()
        pieces = [decoder.feed(chunk) for chunk in _chunk(ids, rng)]
        pieces.append(decoder.flush())
        assert "".join(pieces) == text
        # Valid text never yields a replacement character: incomplete characters were held back.
        assert all("\ufffd" not in piece for piece in pieces)


def test_multibyte_character_is_held_until_complete(tok: Tekkenizer) -> None:
    ids = tok.encode("🚀")
    assert len(ids) > 1, "the rocket emoji spans several byte-level tokens"
    decoder = tok.incremental_decoder()
    assert [decoder.feed(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert decoder.has_pending_bytes
    assert decoder.feed(ids[-1]) == "🚀"
    assert not decoder.has_pending_bytes


def test_unfinished_character_at_end_of_stream_is_reported(tok: Tekkenizer) -> None:
    ids = tok.encode("ok 🚀")
    decoder = tok.incremental_decoder()
    assert decoder.feed(ids[:-1]) == "ok "
    assert decoder.flush() == "\ufffd"


def test_control_tokens_in_the_stream(tok: Tekkenizer) -> None:
    ids = [*tok.encode("Bonjour"), tok.eos_id]
    assert tok.incremental_decoder().feed(ids) == "Bonjour"
    assert tok.incremental_decoder(keep_control_tokens=True).feed(ids) == "Bonjour</s>"


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=120), st.randoms(use_true_random=False))
def test_streamed_text_equals_batch_decode(tok: Tekkenizer, text: str, rng: random.Random) -> None:
    ids = tok.encode(text)
    decoder = tok.incremental_decoder()
    streamed = "".join(decoder.feed(chunk) for chunk in _chunk(ids, rng)) + decoder.flush()
    assert streamed == tok.decode(ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=131071), max_size=40), st.randoms(use_true_random=False))
def test_arbitrary_ids_stream_like_batch_decode(tok: Tekkenizer, ids: list[int], rng: random.Random) -> None:
    for keep in (False, True):
        decoder = tok.incremental_decoder(keep_control_tokens=keep)
        streamed = "".join(decoder.feed(chunk) for chunk in _chunk(ids, rng)) + decoder.flush()
        assert streamed == tok.decode(ids, keep_control_tokens=keep)
