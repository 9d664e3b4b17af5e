"""OpenAI `stop` sequences applied to streamed text: the text before the first match, nothing after.

Text that could still be the start of a stop sequence is held back until it is clearly not one, so
a stop sequence split across chunks is never emitted in part.
"""

from __future__ import annotations

from collections.abc import Sequence


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
