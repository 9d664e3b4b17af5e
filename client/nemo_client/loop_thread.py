"""The event loop on which the sync client runs the async implementation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """A private event loop on a daemon thread that runs the async implementation for sync callers."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nemo-client-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("the sync NemoClient cannot be called from its own event loop; use AsyncNemoClient")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def submit(self, coroutine: Awaitable[Any]) -> None:
        """Schedule without waiting: safe from any thread, the loop's own included (e.g. a finalizer)."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
