"""What the benchmark sends: synthetic prompts of an exact Tekken length, or prompts from a JSONL file.

Synthetic prompts are random sequences of common words, each of which is one Tekken token with or
without its leading space, so a prompt of ``n`` words is exactly ``n`` content tokens (checked with
the tokenizer). Every request gets a different prompt, so no prefix cache can serve one from another.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_protocol.tekken import Tekkenizer

_MIN_WORD, _MAX_WORD = 3, 10


class WorkloadError(ValueError):
    """A prompt file or a synthetic workload setting is unusable."""


@dataclass(frozen=True)
class BenchRequest:
    """One chat request of the workload."""

    messages: list[dict[str, Any]]
    max_tokens: int
    input_tokens: int | None = None
    """Content tokens of the prompt as measured with Tekken (None when the file gave whole messages)."""


def single_token_words(tokenizer: Tekkenizer) -> list[str]:
    """Lower-case ASCII words that are one Tekken token both alone and after a space."""
    words = []
    for token_id in range(tokenizer.num_control_tokens, tokenizer.vocab_size):
        piece = tokenizer.token_bytes(token_id)
        if not piece.startswith(b" "):
            continue
        word = piece[1:]
        if not (_MIN_WORD <= len(word) <= _MAX_WORD and word.isalpha() and word.islower() and word.isascii()):
            continue
        text = word.decode("ascii")
        if len(tokenizer.encode(text)) == 1 and len(tokenizer.encode(" " + text)) == 1:
            words.append(text)
    if len(words) < 100:
        raise WorkloadError(f"the tokenizer has only {len(words)} single-token words; synthetic prompts need 100")
    return words


class SyntheticPrompts:
    """Endless distinct prompts of exactly ``input_tokens`` Tekken tokens, asking for ``output_tokens``."""

    def __init__(self, tokenizer: Tekkenizer, input_tokens: int, output_tokens: int, seed: int = 0) -> None:
        if input_tokens < 1:
            raise WorkloadError(f"input length must be at least 1 token, got {input_tokens}")
        if output_tokens < 1:
            raise WorkloadError(f"output length must be at least 1 token, got {output_tokens}")
        self.tokenizer = tokenizer
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self._words = single_token_words(tokenizer)
        self._random = random.Random(seed)

    def prompt(self) -> str:
        text = " ".join(self._random.choice(self._words) for _ in range(self.input_tokens))
        measured = len(self.tokenizer.encode(text))
        if measured != self.input_tokens:
            raise WorkloadError(f"a synthetic prompt measured {measured} tokens instead of {self.input_tokens}")
        return text

    def __iter__(self) -> Iterator[BenchRequest]:
        while True:
            yield BenchRequest(
                messages=[{"role": "user", "content": self.prompt()}],
                max_tokens=self.output_tokens,
                input_tokens=self.input_tokens,
            )

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic", "input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


class FilePrompts:
    """Prompts from a JSONL file, cycled in order.

    Each line is an object with either ``"prompt"`` (a user message) or ``"messages"`` (an OpenAI
    conversation), and optionally ``"max_tokens"`` (else ``default_max_tokens``).
    """

    def __init__(self, path: Path, default_max_tokens: int, tokenizer: Tekkenizer | None = None) -> None:
        self.path = path
        self.requests = load_jsonl(path, default_max_tokens, tokenizer)

    def __iter__(self) -> Iterator[BenchRequest]:
        while True:
            yield from self.requests

    def describe(self) -> dict[str, Any]:
        return {"kind": "file", "path": str(self.path), "prompts": len(self.requests)}


def load_jsonl(path: Path, default_max_tokens: int, tokenizer: Tekkenizer | None = None) -> list[BenchRequest]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WorkloadError(f"cannot read the prompt file {path}: {exc}") from None
    requests = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{where}: not valid JSON ({exc})") from None
        requests.append(_request_from_item(item, where, default_max_tokens, tokenizer))
    if not requests:
        raise WorkloadError(f"the prompt file {path} holds no prompts")
    return requests


def _request_from_item(item: Any, where: str, default_max_tokens: int, tokenizer: Tekkenizer | None) -> BenchRequest:
    if not isinstance(item, dict):
        raise WorkloadError(f"{where}: each line must be a JSON object with 'prompt' or 'messages'")
    max_tokens = item.get("max_tokens", default_max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise WorkloadError(f"{where}: 'max_tokens' must be a positive integer, got {max_tokens!r}")
    if isinstance(item.get("prompt"), str):
        prompt = item["prompt"]
        measured = len(tokenizer.encode(prompt)) if tokenizer is not None else None
        return BenchRequest([{"role": "user", "content": prompt}], max_tokens, measured)
    messages = item.get("messages")
    if isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages):
        return BenchRequest(list(messages), max_tokens)
    raise WorkloadError(f"{where}: needs 'prompt' (a string) or 'messages' (a non-empty list of message objects)")
