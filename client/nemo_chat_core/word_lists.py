"""Stop / bad word lists in TensorRT-LLM's layout: `[2, N]` per request, `[batch, 2, N]` batched.

Row 0 holds the token ids of every word, concatenated; row 1 the cumulative end offset of each word.
Row 0 is padded with 0 and row 1 with -1; a list is at least one column wide.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer


def word_list(words_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """`[2, N]` int32 from the token ids of each word (empty words are skipped)."""
    flat: list[int] = []
    offsets: list[int] = []
    for ids in words_ids:
        if ids:
            flat.extend(ids)
            offsets.append(len(flat))
    width = max(1, len(flat))
    out = np.zeros((2, width), dtype=np.int32)
    out[1, :] = -1
    out[0, : len(flat)] = flat
    out[1, : len(offsets)] = offsets
    return out


def encode_words(tokenizer: Tekkenizer, words: Sequence[str]) -> np.ndarray:
    """`[2, N]` for words given as text, each encoded on its own as plain text."""
    return word_list([tokenizer.encode(word) for word in words])


def stack(lists: Sequence[np.ndarray]) -> np.ndarray:
    """`[batch, 2, N]`: per-request lists padded to the widest."""
    width = max((item.shape[1] for item in lists), default=1)
    out = np.zeros((len(lists), 2, width), dtype=np.int32)
    out[:, 1, :] = -1
    for i, item in enumerate(lists):
        out[i, :, : item.shape[1]] = item
    return out


def words(array: np.ndarray | None, name: str) -> list[list[int]]:
    """The words of one request's `[2, N]` list (a leading batch axis of 1 is accepted)."""
    if array is None:
        return []
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] != 2:
        raise BadRequestError(f"a word list has shape [2, N], got {list(array.shape)}", param=name)
    ids, ends = array[0].tolist(), [end for end in array[1].tolist() if end >= 0]
    out, start = [], 0
    for end in ends:
        if not start < end <= len(ids):
            raise BadRequestError(f"offsets (row 1) must increase within the {len(ids)} ids, got {ends}", param=name)
        out.append(ids[start:end])
        start = end
    return out
