"""A clock a test moves by hand, for code that reads ``time.monotonic()``: what such a test checks is the code's
logic, never how fast a shared machine runs it."""

from __future__ import annotations


class ManualClock:
    """Stands in for the ``time`` module where code only reads ``time.monotonic()``; ``now`` moves when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now
