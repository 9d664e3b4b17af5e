"""The id stream between tensorrt_llm and a frontend model: cancellation asked on a budget, ids that queued up
sent together, nothing lost, reordered or swallowed (errors included)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from nemo_serving.token_stream import coalesced, until_cancelled


def test_cancellation_ends_the_generation_and_stops() -> None:
    cancelled: list[bool] = []
    seen: list[list[int]] = []
    chunks = iter([[1], [2], [3], [4]])
    for ids in until_cancelled(chunks, lambda: len(seen) >= 2, lambda: cancelled.append(True), poll_s=0):
        seen.append(ids)
    assert seen == [[1], [2]] and cancelled == [True]


def test_cancellation_is_asked_at_most_once_per_poll_interval_and_still_caught_within_it() -> None:
    asked: list[float] = []
    flag = {"cancelled": False}

    def is_cancelled() -> bool:
        asked.append(time.monotonic())
        return flag["cancelled"]

    def tokens() -> Iterator[list[int]]:
        for index in range(400):
            if index == 200:
                flag["cancelled"] = True
                cancelled_at.append(time.monotonic())
            time.sleep(0.0005)
            yield [index]

    cancelled_at: list[float] = []
    ended: list[float] = []
    received = list(until_cancelled(tokens(), is_cancelled, lambda: ended.append(time.monotonic()), poll_s=0.02))
    assert len(asked) < len(received) / 5, "not one question per token"
    assert ended and ended[0] - cancelled_at[0] < 0.02 + 0.01, "caught within the poll interval (plus a token)"


def test_queued_ids_come_out_together_in_order() -> None:
    release = threading.Event()

    def engine() -> Iterator[list[int]]:
        yield [1]
        release.wait(5)
        yield from ([i] for i in range(2, 10))

    stream = coalesced(engine())
    assert next(stream) == [1]
    release.set()
    time.sleep(0.05)  # ids 2..9 arrive while the consumer is busy
    rest = list(stream)
    assert [i for ids in rest for i in ids] == list(range(2, 10)) and len(rest) < 8


def test_an_idle_stream_still_passes_each_chunk_as_it_comes() -> None:
    def slow() -> Iterator[list[int]]:
        for i in range(5):
            time.sleep(0.01)
            yield [i, i]

    assert list(coalesced(slow())) == [[i, i] for i in range(5)]


def test_an_engine_error_is_raised_after_the_ids_before_it() -> None:
    def failing() -> Iterator[list[int]]:
        yield [7]
        raise RuntimeError("engine failed")

    stream = coalesced(failing())
    assert next(stream) == [7]
    with pytest.raises(RuntimeError, match="engine failed"):
        next(stream)


def test_empty_chunks_make_no_items() -> None:
    assert list(coalesced(iter([[], [1], []]))) == [[1]]
