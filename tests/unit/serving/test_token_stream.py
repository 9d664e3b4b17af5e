"""The id stream between tensorrt_llm and a frontend model: cancellation asked on a budget, ids that queued up
sent together, nothing lost, reordered or swallowed (errors included)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from nemo_serving import token_stream
from nemo_serving.token_stream import coalesced, until_cancelled
from tests.manual_clock import ManualClock


def test_cancellation_ends_the_generation_and_stops() -> None:
    cancelled: list[bool] = []
    seen: list[list[int]] = []
    chunks = iter([[1], [2], [3], [4]])
    for ids in until_cancelled(chunks, lambda: len(seen) >= 2, lambda: cancelled.append(True), poll_s=0):
        seen.append(ids)
    assert seen == [[1], [2]] and cancelled == [True]


def test_cancellation_is_asked_at_most_once_per_poll_interval_and_still_caught_within_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()  # moved on by the engine as it makes each token
    monkeypatch.setattr(token_stream, "time", clock)
    token_s, poll_s = 0.0005, 0.02
    asked: list[float] = []
    flag = {"cancelled": False}

    def is_cancelled() -> bool:
        asked.append(clock.now)
        return flag["cancelled"]

    def tokens() -> Iterator[list[int]]:
        for index in range(400):
            if index == 200:
                flag["cancelled"] = True
                cancelled_at.append(clock.now)
            clock.now += token_s
            yield [index]

    cancelled_at: list[float] = []
    ended: list[float] = []
    received = list(until_cancelled(tokens(), is_cancelled, lambda: ended.append(clock.now), poll_s=poll_s))
    assert len(asked) < len(received) / 5, "not one question per token"
    assert all(later - earlier >= poll_s - 1e-9 for earlier, later in itertools.pairwise(asked))
    assert ended and ended[0] - cancelled_at[0] <= poll_s + token_s, "caught within the poll interval (plus a token)"


def test_queued_ids_come_out_together_in_order() -> None:
    release, all_read = threading.Event(), threading.Event()

    def engine() -> Iterator[list[int]]:
        yield [1]
        release.wait(5)
        yield from ([i] for i in range(2, 10))
        all_read.set()  # the reader asked for more after taking id 9: ids 2..9 wait for the consumer

    stream = coalesced(engine())
    assert next(stream) == [1]
    release.set()
    assert all_read.wait(5)  # ids 2..9 arrive while the consumer is busy
    assert list(stream) == [list(range(2, 10))]


def test_an_idle_stream_still_passes_each_chunk_as_it_comes() -> None:
    taken = threading.Semaphore(0)

    def engine() -> Iterator[list[int]]:
        for i in range(5):
            yield [i, i]
            # the next id only once the consumer has this one: a stream that held ids back would stall here
            if not taken.acquire(timeout=5):
                raise TimeoutError(f"chunk {[i, i]} was not passed on while the engine waited")

    received = []
    for ids in coalesced(engine()):
        received.append(ids)
        taken.release()
    assert received == [[i, i] for i in range(5)]


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
