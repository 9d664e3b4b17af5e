"""Streaming detokenization: ids in, complete text out, constant work per token."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence


class IncrementalDecoder:
    """Turns a stream of Tekken ids into text without ever emitting a broken UTF-8 sequence.

    Byte-level BPE can split one character over several tokens. The bytes of an incomplete
    character are held back until its last byte arrives, so every string returned by
    :meth:`feed` is final. Each id costs a table look-up and the decoding of its own bytes:
    nothing already emitted is decoded again. The concatenation of every :meth:`feed` result
    and :meth:`flush` equals ``Tekkenizer.decode`` of all the ids.

    Build it with ``Tekkenizer.incremental_decoder()``.
    """

    def __init__(self, token_bytes: Sequence[bytes], num_control: int, control_names: Sequence[str] | None) -> None:
        self._token_bytes = token_bytes
        self._num_tokens = len(token_bytes)
        self._num_control = num_control
        # Names are given only when control tokens should be written out rather than dropped.
        self._control_names = control_names
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: Iterable[int] | int) -> str:
        """Add generated ids (one or many); returns the text they complete, possibly empty."""
        if isinstance(ids, int):
            ids = (ids,)
        parts: list[str] = []
        pending = bytearray()
        for token_id in ids:
            if not 0 <= token_id < self._num_tokens:
                raise ValueError(f"token id {token_id} is outside the vocabulary [0, {self._num_tokens})")
            if token_id >= self._num_control:
                pending += self._token_bytes[token_id]
                continue
            # A control token ends a run of BPE bytes, exactly as the batch decoder groups them.
            parts.append(self._utf8.decode(bytes(pending), final=True))
            pending.clear()
            self._utf8.reset()
            if self._control_names is not None:
                parts.append(self._control_names[token_id])
        if pending:
            parts.append(self._utf8.decode(bytes(pending)))
        return "".join(parts)

    def flush(self) -> str:
        """End of stream: bytes of an unfinished character come out as U+FFFD."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text

    @property
    def has_pending_bytes(self) -> bool:
        """True while an incomplete UTF-8 sequence is held back."""
        buffered, _ = self._utf8.getstate()
        return bool(buffered)
