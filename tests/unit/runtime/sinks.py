"""A sink that records what an engine sends one request, as Triton's response sender would receive it."""

from __future__ import annotations

import threading
import time

from nemo_chat_core.engine_tensors import LogOutputs


class RecordingSink:
    """Collects what the batcher sends, as Triton's response sender would receive it."""

    def __init__(self) -> None:
        self.sends: list[tuple[list[int], bool, float]] = []
        self.logs: list[LogOutputs | None] = []
        self.error: str | None = None
        self.cancelled = False
        self.done = threading.Event()

    def send(self, token_ids: list[int], final: bool, logs: LogOutputs | None = None) -> None:
        self.sends.append((list(token_ids), final, time.monotonic()))
        self.logs.append(logs)
        if final:
            self.done.set()

    def fail(self, message: str) -> None:
        self.error = message
        self.done.set()

    def is_cancelled(self) -> bool:
        return self.cancelled

    @property
    def tokens(self) -> list[int]:
        return [t for ids, _, _ in self.sends for t in ids]

    def wait(self) -> RecordingSink:
        assert self.done.wait(30), "the request never finished"
        return self
