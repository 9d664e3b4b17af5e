"""OpenAI `stop` sequences: what a request may give (`stop_sequences`, one rule for chat and completions), and
how they apply to streamed text: the text before the first match, nothing after.

Text that could still be the start of a stop sequence is held back until it is clearly not one, so
a stop sequence split across chunks is never emitted in part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nemo_protocol.errors import BadRequestError

MAX_STOP_SEQUENCES = 4
"""OpenAI's limit on a request's stop sequences."""


def stop_sequences(value: Any) -> tuple[str, ...]:
    """A request's ``stop``: absent (None), a non-empty string, or a list of at most 4 of them; 400 naming ``stop``."""
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequestError("must be a non-empty string or a list of up to 4 non-empty strings", param="stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise BadRequestError(f"accepts at most {MAX_STOP_SEQUENCES} sequences, got {len(stops)}", param="stop")
    return tuple(stops)


class StopStringMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; returns what can be emitted now. After a match, `stopped` is True and the rest is dropped."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        # The stop sequence that completes first, as if the text arrived one character at a time (ties: the one
        # that starts first), so that where the text is cut never depends on how it was chunked.
        matches = [(i + len(stop), i) for stop in self._stops if (i := buffer.find(stop)) >= 0]
        if matches:
            _, cut = min(matches)
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """End of text: what was held back was no stop sequence after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that begins some stop sequence."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
