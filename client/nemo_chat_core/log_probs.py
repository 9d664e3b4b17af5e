"""Log probabilities in OpenAI's shapes, from what `tensorrt_llm` returns.

`tensorrt_llm` gives each generated token's log probability (`output_log_probs`, with `return_log_probs`) and,
when asked, the logits it was chosen from (`generation_logits`) and the logits at every prompt position
(`context_logits`). `chosen` and `scored` turn them into one `TokenLogProb` per token; `completion_logprobs`
writes the `logprobs` object of a `/v1/completions` choice, `chat_logprobs_content` the `logprobs.content` of a
chat choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nemo_protocol.tekken import Tekkenizer

MAX_TOP_LOGPROBS = 20
"""The most alternatives a request may ask for per token (OpenAI's limit)."""


@dataclass(frozen=True)
class TokenLogProb:
    """One token, its log probability (None for the first prompt token: nothing predicts it) and the `top`
    most likely tokens at its position with theirs, best first."""

    token_id: int
    log_prob: float | None
    top: tuple[tuple[int, float], ...] = ()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of float logits [n, vocab], in float64."""
    rows = logits.astype(np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def chosen(token_ids: Sequence[int], log_probs: Sequence[float]) -> list[TokenLogProb]:
    """Generated tokens with the log probabilities the engine returned for them (`output_log_probs`)."""
    return [TokenLogProb(int(t), float(p)) for t, p in zip(token_ids, log_probs, strict=True)]


def scored(token_ids: Sequence[int], logits: np.ndarray, top_n: int) -> list[TokenLogProb]:
    """Tokens scored by the logits that predicted them: row i of `logits` [len(token_ids), vocab] predicts
    `token_ids[i]`; with the `top_n` best alternatives of each row."""
    table = log_softmax(logits)
    out = []
    for token, row in zip(token_ids, table, strict=True):
        best: list[int] = np.argsort(-row, kind="stable")[:top_n].tolist() if top_n else []
        out.append(TokenLogProb(int(token), float(row[token]), tuple((int(i), float(row[i])) for i in best)))
    return out


def prompt_log_probs(prompt_ids: Sequence[int], context_logits: np.ndarray, top_n: int) -> list[TokenLogProb]:
    """The prompt's tokens scored by the context logits (row i predicts token i + 1); the first has none."""
    if not prompt_ids:
        return []
    first = TokenLogProb(int(prompt_ids[0]), None)
    return [first, *scored(prompt_ids[1:], context_logits[: len(prompt_ids) - 1], top_n)]


def token_text(tokenizer: Tekkenizer, token_id: int) -> str:
    """A token as OpenAI writes it: its text, `bytes:\\xNN...` when it is no whole UTF-8 text, a control token
    by its name."""
    if tokenizer.is_control(token_id):
        return tokenizer.id_to_piece(token_id)
    raw = tokenizer.token_bytes(token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)


def completion_logprobs(
    tokenizer: Tekkenizer, tokens: Sequence[TokenLogProb], *, top_n: int, text_offset: int = 0
) -> dict[str, Any]:
    """A completion choice's `logprobs`: `tokens`, `token_logprobs`, `top_logprobs` (None where nothing
    predicted the token; `top_n` 0 gives only the token itself) and `text_offset` (each token's start in the
    choice's text, counting from `text_offset`; control tokens have no text)."""
    texts, offsets, offset = [], [], text_offset
    for token in tokens:
        text = token_text(tokenizer, token.token_id)
        texts.append(text)
        offsets.append(offset)
        if not tokenizer.is_control(token.token_id):
            offset += len(tokenizer.token_bytes(token.token_id).decode("utf-8", errors="ignore"))
    top_logprobs: list[dict[str, float] | None] = []
    for token, text in zip(tokens, texts, strict=True):
        if token.log_prob is None:
            top_logprobs.append(None)
            continue
        alternatives = {token_text(tokenizer, i): _finite(p) for i, p in token.top[:top_n]}
        alternatives[text] = _finite(token.log_prob)  # the token's own value, as in token_logprobs
        top_logprobs.append(alternatives)
    return {
        "tokens": texts,
        "token_logprobs": [None if t.log_prob is None else _finite(t.log_prob) for t in tokens],
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def chat_logprobs_content(tokenizer: Tekkenizer, tokens: Sequence[TokenLogProb], *, top_n: int) -> list[dict[str, Any]]:
    """The ``logprobs.content`` entries of a chat choice (or chunk) for these generated tokens: ``token``,
    ``logprob``, ``bytes`` and the ``top_n`` best ``top_logprobs`` (each with its own token, logprob and bytes)."""

    def entry(token_id: int, log_prob: float) -> dict[str, Any]:
        raw = b"" if tokenizer.is_control(token_id) else tokenizer.token_bytes(token_id)
        return {"token": token_text(tokenizer, token_id), "logprob": _finite(log_prob), "bytes": list(raw)}

    return [
        {**entry(t.token_id, t.log_prob or 0.0), "top_logprobs": [entry(i, p) for i, p in t.top[:top_n]]}
        for t in tokens
    ]


def _finite(value: float) -> float:
    """JSON has no -Infinity: a token the sampler could not draw gets the lowest float32 instead."""
    return value if math.isfinite(value) else float(np.finfo(np.float32).min)
