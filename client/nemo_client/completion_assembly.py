"""A completion from the ``ensemble`` model's responses: text cut at the request's stop strings, log probs,
finish reason and token counts, assembled into the ``openai`` package's ``Completion`` (whole, or one per
stream chunk)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from openai.types import Completion, CompletionUsage

from nemo_chat_core.stop_strings import StopStringMatcher


@dataclass(frozen=True)
class CompletionPiece:
    """Part of one completion choice: text, and what the ``ensemble`` sent with it."""

    text: str
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    prompt_tokens: int = 0  # the ensemble's counts so far
    completion_tokens: int = 0

    @staticmethod
    def join(pieces: Sequence[CompletionPiece]) -> CompletionPiece:
        logprobs = [p.logprobs for p in pieces if p.logprobs is not None]
        return CompletionPiece(
            text="".join(p.text for p in pieces),
            finish_reason=next((p.finish_reason for p in reversed(pieces) if p.finish_reason), "stop"),
            logprobs={key: [v for part in logprobs for v in part[key]] for key in logprobs[0]} if logprobs else None,
            prompt_tokens=max((p.prompt_tokens for p in pieces), default=0),
            completion_tokens=max((p.completion_tokens for p in pieces), default=0),
        )


async def completion_pieces(
    responses: AsyncIterator[dict[str, Any]], stops: Sequence[str], *, echo: str | None
) -> AsyncIterator[CompletionPiece]:
    """One piece per ``ensemble`` response, the text cut before the first ``stop`` string (which OpenAI leaves
    out); the finish reason and token counts come with the last. ``echo``: the prompt text the output starts
    with, never searched for stop strings."""
    matcher, skip = StopStringMatcher(stops), len(echo or "")
    try:
        async for outputs in responses:
            text = b"".join(outputs.get("text_output", [])).decode("utf-8")
            head, text = text[:skip], text[skip:]
            skip -= len(head)
            text = head + matcher.feed(text)
            reasons, logprobs = outputs.get("finish_reason"), outputs.get("logprobs")
            counts = [int(outputs[name].reshape(-1)[0]) if name in outputs else 0 for name in _COUNTS]
            reason = reasons[0].decode("utf-8") if reasons is not None and len(reasons) else None
            if matcher.stopped:
                yield CompletionPiece(text, "stop", _logprobs(logprobs), *counts)
                return
            if reason is not None:
                text += matcher.flush()
            yield CompletionPiece(text, reason, _logprobs(logprobs), *counts)
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


_COUNTS = ("num_input_tokens", "num_output_tokens")


def _logprobs(tensor: list[bytes] | None) -> dict[str, Any] | None:
    """The ``logprobs`` output (a BYTES tensor: a list of one JSON object), if any."""
    return json.loads(tensor[0]) if tensor else None


def build_completion(
    request_id: str, model: str, choices: Sequence[CompletionPiece], usage: dict[str, int] | None = None
) -> Completion:
    # construct, not validate: OpenAI's own SDK builds stream chunks (finish_reason None) the same way.
    completion = Completion.model_construct(
        id=f"cmpl-{request_id}",
        object="text_completion",
        created=int(time.time()),
        model=model,
        choices=[
            {"index": index, "text": c.text, "finish_reason": c.finish_reason, "logprobs": c.logprobs}
            for index, c in enumerate(choices)
        ],
    )
    if usage is not None:
        completion.usage = CompletionUsage.model_validate(usage)
    return completion


def count_usage(choices: Sequence[CompletionPiece], n: int = 1) -> dict[str, int]:
    """Token counts; each prompt counted once, though ``n`` choices continue it."""
    prompt = sum(c.prompt_tokens for c in choices[::n])
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def completion_chunks(
    pieces: AsyncIterator[CompletionPiece], model: str, request_id: str
) -> AsyncIterator[Completion]:
    """The stream's chunks; closed early, it closes ``pieces`` at once, which cancels the request."""
    try:
        async for piece in pieces:
            if piece.text or piece.finish_reason or piece.logprobs:
                yield build_completion(request_id, model, [piece], count_usage([piece]))  # the counts so far
    finally:
        await pieces.aclose()  # type: ignore[attr-defined]
