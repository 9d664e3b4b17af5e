"""What the `ensemble` model's steps hand each other, for the serving tests."""

from __future__ import annotations

import numpy as np


def preprocessing_outputs() -> dict[str, np.ndarray]:
    """What `preprocessing` returns for a 3-token prompt asking for 4 tokens, with empty word lists."""
    return {
        "input_ids": np.array([[1, 5, 6]], dtype=np.int32),
        "input_lengths": np.array([[3]], dtype=np.int32),
        "request_output_len": np.array([[4]], dtype=np.int32),
        "end_id": np.array([[2]], dtype=np.int32),
        "pad_id": np.array([[11]], dtype=np.int32),
        "stop_words_list": np.array([[[0], [-1]]], dtype=np.int32),
        "bad_words_list": np.array([[[0], [-1]]], dtype=np.int32),
    }
