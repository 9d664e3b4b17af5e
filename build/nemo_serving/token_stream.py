"""The stream of generated ids between `tensorrt_llm` and a python frontend model, made cheap per token.

Inside Triton every call on a request or a response crosses a process boundary (the python stub talks to
the server through shared memory). Two of them need not happen once per token:

* asking whether the client cancelled: :func:`until_cancelled` asks at most every ``poll_s`` (a cancelled
  request still leaves within that time, plus one token);
* sending a response: :func:`coalesced` reads the engine's responses on a thread of its own, so that the
  ids that arrived while the last response was being built and sent go out together, as one. An idle
  stream still sends each token as it comes; a busy frontend sends fewer, larger responses instead of
  falling behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

CANCEL_POLL_S = 0.02


def until_cancelled(
    chunks: Iterable[T],
    is_cancelled: Callable[[], bool],
    cancel: Callable[[], None],
    *,
    poll_s: float = CANCEL_POLL_S,
) -> Iterator[T]:
    """Pass chunks on until the client cancels (asked at most every ``poll_s``); then end the generation."""
    next_poll = 0.0
    for ids in chunks:
        now = time.monotonic()
        if now >= next_poll:
            if is_cancelled():
                cancel()
                return
            next_poll = now + poll_s
        yield ids


def coalesced(chunks: Iterable[list[int]]) -> Iterator[list[int]]:
    """The ids of ``chunks``, read on a thread of their own: each item is every id that arrived since the last.

    An error raised by ``chunks`` is raised here after the ids that came before it. Stopping early leaves
    the reader to drain ``chunks`` (as a generation ended by ``cancel`` must be drained).
    """
    pending: list[int] = []
    state: dict[str, BaseException | bool | None] = {"done": False, "error": None}
    arrived = threading.Condition()

    def read() -> None:
        try:
            for ids in chunks:
                with arrived:
                    pending.extend(ids)
                    arrived.notify()
        except BaseException as error:  # handed to the consumer, which raises it
            state["error"] = error
        finally:
            with arrived:
                state["done"] = True
                arrived.notify()

    threading.Thread(target=read, name="coalesced-token-reader", daemon=True).start()
    while True:
        with arrived:
            while not pending and not state["done"]:
                arrived.wait()
            ids, done = pending[:], bool(state["done"])
            pending.clear()
        if ids:
            yield ids
        elif done:
            error = state["error"]
            if isinstance(error, BaseException):
                raise error
            return
