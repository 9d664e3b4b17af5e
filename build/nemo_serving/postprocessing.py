"""The `postprocessing` model: generated ids, as `tensorrt_llm` returns them, → text."""

from __future__ import annotations

import numpy as np

from nemo_protocol.tekken import Tekkenizer


def decode_batch(tokenizer: Tekkenizer, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`tokens` [batch, beams, T] cut at `lengths` [batch, beams] → UTF-8 bytes [batch, beams].

    Control tokens are dropped; bytes that end mid-character decode as U+FFFD.
    """
    if tokens.ndim == 2:  # one request without the beam axis
        tokens, lengths = tokens[None], np.asarray(lengths).reshape(1, -1)
    lengths = np.asarray(lengths).reshape(tokens.shape[0], -1)
    out = np.empty(tokens.shape[:2], dtype=object)
    for b in range(tokens.shape[0]):
        for beam in range(tokens.shape[1]):
            count = int(lengths[b, beam])
            out[b, beam] = tokenizer.decode(tokens[b, beam, :count].tolist()).encode("utf-8")
    return out
