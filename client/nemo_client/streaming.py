"""Streams of results: :class:`AsyncStream` (the async client's) and :class:`Stream` (the sync client's view of
one, read through the client's loop thread). Closing either cancels the request on the server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Generic, TypeVar

from nemo_client.loop_thread import LoopThread

T = TypeVar("T")
R = TypeVar("R")


class AsyncStream(Generic[T]):
    """Async iterator of stream items. Closing it (or leaving ``async with``) cancels the request."""

    def __init__(self, items: AsyncIterator[T], request_id: str) -> None:
        self._items = items
        self.request_id = request_id

        self._first: list[T] = []

    async def started(self) -> AsyncStream[T]:
        """Wait for the first item so that an immediate error raises here; returns self."""
        with contextlib.suppress(StopAsyncIteration):
            self._first.append(await self._items.__anext__())
        return self

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._first:
            return self._first.pop()
        return await self._items.__anext__()

    async def aclose(self) -> None:
        await self._items.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Stream(Generic[T]):
    """Iterator of stream items. ``close()``, leaving ``with``, or garbage collection cancels the request."""

    def __init__(self, stream: AsyncStream[T], loop: LoopThread) -> None:
        self._stream = stream
        self._loop = loop
        self._closed = False
        self.request_id = stream.request_id

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return self._loop.run(self._stream.__anext__())
        except StopAsyncIteration:
            self._closed = True
            raise StopIteration from None
        except BaseException:
            # The stream ended with an error (or the caller was interrupted): release it on the server.
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.run(self._stream.aclose())

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped without close() is cancelled on the server. The garbage collector may run this
        # on any thread, the loop's own included, so it must schedule the close and never wait for it.
        if not getattr(self, "_closed", True):
            self._closed = True
            with contextlib.suppress(Exception):  # at interpreter shutdown the loop may be gone
                self._loop.submit(self._stream.aclose())


def sync_result(result: R | AsyncStream[T], loop: LoopThread) -> R | Stream[T]:
    """A sync caller's view of an async result: a stream read through ``loop``, anything else as it is."""
    return Stream(result, loop) if isinstance(result, AsyncStream) else result
