"""The `ensemble` model: text in, text out, over `preprocessing` and `tensorrt_llm`.

Streamed text is cut only at character boundaries: one incremental decoder per request holds back
the bytes of a character split over tokens, and byte-level BPE keeps every space inside its token,
so no chunk carries a broken character and no space is lost (the stock ensemble's defect).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer
from nemo_serving import word_lists
from nemo_serving.contract import GenerationRequest
from nemo_serving.sampling import Sampling
from nemo_serving.tensors import Inputs, scalar, single_text, texts

PREPROCESSING_OUTPUTS = [
    "input_ids",
    "input_lengths",
    "request_output_len",
    "stop_words_list",
    "bad_words_list",
    "end_id",
    "pad_id",
]


@dataclass(frozen=True)
class TextRequest:
    """The `ensemble` model's inputs. Sampling inputs left out keep TensorRT-LLM's defaults (greedy)."""

    text: str
    max_tokens: int
    stream: bool = False
    sampling: Sampling = field(default_factory=Sampling)
    stop_words: tuple[str, ...] = ()
    bad_words: tuple[str, ...] = ()

    @classmethod
    def from_inputs(cls, get: Inputs) -> TextRequest:
        text, max_tokens = get("text_input"), get("max_tokens")
        if text is None or max_tokens is None:
            raise BadRequestError("is required", param="text_input" if text is None else "max_tokens")
        return cls(
            text=single_text(text, "text_input"),
            max_tokens=scalar(max_tokens, "max_tokens", int, 0),
            stream=scalar(get("stream"), "stream", bool, False),
            sampling=Sampling.from_inputs(get, top_k="top_k", top_p="top_p"),
            stop_words=tuple(texts(get("stop_words"), "stop_words")),
            bad_words=tuple(texts(get("bad_words"), "bad_words")),
        )

    def preprocessing_inputs(self) -> dict[str, np.ndarray]:
        tensors = {
            "text_input": np.array([[self.text.encode("utf-8")]], dtype=object),
            "max_tokens": np.array([[self.max_tokens]], dtype=np.int32),
        }
        if self.stop_words:
            tensors["stop_words"] = np.array([[w.encode("utf-8") for w in self.stop_words]], dtype=object)
        if self.bad_words:
            tensors["bad_words"] = np.array([[w.encode("utf-8") for w in self.bad_words]], dtype=object)
        return tensors

    def generation(self, preprocessed: dict[str, np.ndarray]) -> GenerationRequest:
        """The `tensorrt_llm` request from `preprocessing`'s outputs (batch size 1)."""
        length = int(preprocessed["input_lengths"].reshape(-1)[0])
        return GenerationRequest(
            input_ids=preprocessed["input_ids"].reshape(-1)[:length].tolist(),
            max_new_tokens=int(preprocessed["request_output_len"].reshape(-1)[0]),
            end_id=int(preprocessed["end_id"].reshape(-1)[0]),
            pad_id=int(preprocessed["pad_id"].reshape(-1)[0]),
            streaming=self.stream,
            sampling=self.sampling,
            stop_words=word_lists.words(preprocessed["stop_words_list"], "stop_words"),
            bad_words=word_lists.words(preprocessed["bad_words_list"], "bad_words"),
        )


def text_chunks(tokenizer: Tekkenizer, chunks: Iterable[list[int]], stream: bool) -> Iterator[str]:
    """Decode generated id chunks: each complete piece of text as it forms (stream), or all at the end."""
    decoder = tokenizer.incremental_decoder()
    if not stream:
        yield "".join(decoder.feed(ids) for ids in chunks) + decoder.flush()
        return
    for ids in chunks:
        text = decoder.feed(ids)
        if text:
            yield text
    tail = decoder.flush()
    if tail:
        yield tail


class CountedChunks:
    """Passes generated id chunks through and counts the ids, to tell a length stop from a natural one."""

    def __init__(self, chunks: Iterable[list[int]]) -> None:
        self._chunks = chunks
        self.generated = 0

    def __iter__(self) -> Iterator[list[int]]:
        for ids in self._chunks:
            self.generated += len(ids)
            yield ids

    def finish_reason(self, max_tokens: int) -> str:
        """OpenAI's ``finish_reason`` of a completion: ``length`` when the budget ran out."""
        return "length" if self.generated >= max_tokens else "stop"
