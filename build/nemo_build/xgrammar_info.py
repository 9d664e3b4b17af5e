"""The xgrammar tokenizer info the tensorrtllm backend reads for guided decoding (`xgrammar_tokenizer_info_path`).

The backend parses a JSON object with ``encoded_vocab`` (one string per token id), ``tokenizer_str`` and
``stop_token_ids``, and TensorRT-LLM builds xgrammar's TokenizerInfo from the vocabulary with the vocab type
xgrammar detects in ``tokenizer_str`` (the fields and the calls are in tests/data/upstream/
xgrammar_tokenizer_info.json). Tekken tokens are raw bytes, often not valid UTF-8 on their own, and JSON
strings must be UTF-8: so the vocabulary is written byte-level (each byte as GPT-2's printable character,
as Hugging Face's conversion of the Tekken file does) and ``tokenizer_str`` names a ``ByteLevel`` decoder,
which makes xgrammar decode every entry back to its exact bytes. Control tokens are empty strings, which
xgrammar treats as special: never allowed inside a guide. The end of sequence is the stop token.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from nemo_protocol.tekken import Tekkenizer

TOKENIZER_STR = json.dumps({"decoder": {"type": "ByteLevel"}})


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values onto printable characters (what ByteLevel decoders invert)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def tokenizer_info(tokenizer: Tekkenizer) -> dict[str, Any]:
    """The JSON object for ``xgrammar_tokenizer_info_path``, one entry per token id of ``tokenizer``."""
    table = byte_to_unicode()
    vocab = []
    for token_id in range(tokenizer.vocab_size):
        if token_id == tokenizer.eos_id:
            vocab.append("</s>")  # a stop token: xgrammar reads it from stop_token_ids, whatever its text
        elif tokenizer.is_control(token_id):
            vocab.append("")
        else:
            vocab.append("".join(table[byte] for byte in tokenizer.token_bytes(token_id)))
    return {"encoded_vocab": vocab, "tokenizer_str": TOKENIZER_STR, "stop_token_ids": [tokenizer.eos_id]}


def write_tokenizer_info(tokenizer_file: Path, out: Path) -> Path:
    out.write_text(json.dumps(tokenizer_info(Tekkenizer.from_file(tokenizer_file)), ensure_ascii=False), "utf-8")
    return out
