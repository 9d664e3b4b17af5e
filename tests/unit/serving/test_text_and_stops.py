"""Streamed text of the `ensemble` and stop sequences of `chat`: correct text in every chunk."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_chat_core.stop_strings import StopStringMatcher
from nemo_protocol.tekken import Tekkenizer
from nemo_serving.ensemble import TextRequest, TextResponses

MULTILINGUAL = "Hello, 世界! مرحبا بالعالم 🙂👩‍💻 naïve café — done."


def text_chunks(tok: Tekkenizer, chunks: Iterable[list[int]], stream: bool) -> list[str]:
    """The `text_output` of each response the ensemble sends for these id chunks (empty final text left out)."""
    responses = TextResponses(tok, TextRequest(text="", max_tokens=10_000, stream=stream), [1])
    sent = [ready for ids in chunks if (ready := responses.feed(ids)) is not None] + [responses.finish()]
    texts = [response["text_output"].reshape(-1)[0].decode("utf-8") for response in sent]
    return texts if texts[-1] else texts[:-1]


def split(ids: list[int], cuts: list[int]) -> list[list[int]]:
    points = sorted({c % (len(ids) + 1) for c in cuts})
    bounds = [0, *points, len(ids)]
    return [ids[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=12))
def test_streamed_chunks_are_whole_characters_and_join_to_the_text(tok: Tekkenizer, cuts: list[int]) -> None:
    ids = tok.encode(MULTILINGUAL)
    chunks = list(text_chunks(tok, split(ids, cuts), stream=True))
    assert "".join(chunks) == MULTILINGUAL
    assert all("\ufffd" not in chunk for chunk in chunks)


def test_one_token_at_a_time_keeps_spaces_and_multibyte_characters(tok: Tekkenizer) -> None:
    ids = tok.encode(MULTILINGUAL)
    chunks = list(text_chunks(tok, ([i] for i in ids), stream=True))
    assert "".join(chunks) == MULTILINGUAL
    assert len(chunks) < len(ids)  # some tokens were partial characters and were held back
    assert list(text_chunks(tok, ([i] for i in ids), stream=False)) == [MULTILINGUAL]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=8))
def test_stop_sequence_split_anywhere_cuts_the_text_before_it(cuts: list[int]) -> None:
    text = "The answer is 42.\nUser: more?"
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    matcher = StopStringMatcher(["\nUser:", "never"])
    out = "".join(matcher.feed(piece) for piece in pieces) + matcher.flush()
    assert out == "The answer is 42."
    assert matcher.stopped


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        (["world", "lo"], ["hello world"], "hel"),  # both match in one chunk: the earlier one cuts
        (["lo", "world"], ["hello world"], "hel"),  # whatever their order in the request
        (["wor", "world"], ["hello ", "world"], "hello "),  # same start, different lengths
        (["abcd", "bc"], ["xa", "bc", "d"], "xa"),  # the shorter completes first: generation stops there
        (["\nUser:", "User"], ["A.\nUs", "er: hi"], "A.\n"),  # overlapping, split across chunks
    ],
)
def test_two_stop_sequences_matching_at_once_cut_at_the_first(
    stops: list[str], pieces: list[str], expected: str
) -> None:
    matcher = StopStringMatcher(stops)
    assert "".join(matcher.feed(piece) for piece in pieces) + matcher.flush() == expected
    assert matcher.stopped


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=6))
def test_where_overlapping_stops_cut_does_not_depend_on_the_chunks(cuts: list[int]) -> None:
    text = "Sure.\nUser: and\nUser: again"
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    matcher = StopStringMatcher(["\nUser:", "User"])
    assert "".join(matcher.feed(piece) for piece in pieces) + matcher.flush() == "Sure.\n"


def test_text_that_only_starts_like_a_stop_sequence_is_released() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("go ST") == "go "
    assert matcher.feed("ILL") == "STILL"
    assert matcher.feed(" ST") == " "
    assert matcher.flush() == "ST"
    assert not matcher.stopped
