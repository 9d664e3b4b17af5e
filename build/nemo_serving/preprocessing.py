"""The `preprocessing` model: prompt text → Tekken ids and the other `tensorrt_llm` inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nemo_chat_core import word_lists
from nemo_chat_core.length_limits import LengthLimits
from nemo_chat_core.tensor_values import Inputs, texts
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer


@dataclass(frozen=True)
class Preprocessed:
    """One request's `tensorrt_llm` inputs."""

    input_ids: list[int]
    request_output_len: int
    stop_words_list: np.ndarray
    bad_words_list: np.ndarray


class Preprocessor:
    """Encodes prompts as plain text after `<s>`: text never becomes control tokens."""

    def __init__(self, tokenizer: Tekkenizer, limits: LengthLimits) -> None:
        self.tokenizer = tokenizer
        self.limits = limits

    def __call__(
        self, text: str, max_tokens: int, stop_words: Sequence[str] = (), bad_words: Sequence[str] = ()
    ) -> Preprocessed:
        ids = self.tokenizer.encode(text, bos=True)
        self.limits.check(len(ids), max_tokens, prompt_param="text_input", max_tokens_param="max_tokens")
        return Preprocessed(
            input_ids=ids,
            request_output_len=max_tokens,
            stop_words_list=word_lists.encode_words(self.tokenizer, stop_words),
            bad_words_list=word_lists.encode_words(self.tokenizer, bad_words),
        )

    def execute(self, get: Inputs) -> dict[str, np.ndarray]:
        """The `preprocessing` model on one request of any batch size: inputs by name → outputs."""
        text = get("text_input")
        max_tokens = get("max_tokens")
        if text is None or max_tokens is None:
            raise BadRequestError("is required", param="text_input" if text is None else "max_tokens")
        rows = text.shape[0]
        stop, bad = get("stop_words"), get("bad_words")
        items = []
        for row in range(rows):
            prompt = texts(text[row], "text_input")
            items.append(
                self(
                    prompt[0] if prompt else "",
                    int(max_tokens.reshape(rows, -1)[row, 0]),
                    texts(None if stop is None else stop[row], "stop_words"),
                    texts(None if bad is None else bad[row], "bad_words"),
                )
            )
        return self.batch_outputs(items)

    def batch_outputs(self, items: Sequence[Preprocessed]) -> dict[str, np.ndarray]:
        """The `preprocessing` outputs of a batch: ids padded with `<pad>` to the longest prompt."""
        longest = max(len(item.input_ids) for item in items)
        ids = np.full((len(items), longest), self.tokenizer.pad_id, dtype=np.int32)
        for row, item in enumerate(items):
            ids[row, : len(item.input_ids)] = item.input_ids
        column = np.ones((len(items), 1), dtype=np.int32)
        return {
            "input_ids": ids,
            "input_lengths": np.array([[len(item.input_ids)] for item in items], dtype=np.int32),
            "request_output_len": np.array([[item.request_output_len] for item in items], dtype=np.int32),
            "stop_words_list": word_lists.stack([item.stop_words_list for item in items]),
            "bad_words_list": word_lists.stack([item.bad_words_list for item in items]),
            "end_id": column * self.tokenizer.eos_id,
            "pad_id": column * self.tokenizer.pad_id,
        }
