"""The engine's length limits: prompt tokens, and prompt plus generated tokens."""

from __future__ import annotations

from dataclasses import dataclass

from nemo_protocol.errors import BadRequestError


@dataclass(frozen=True)
class LengthLimits:
    """What the engine accepts: prompt tokens, and prompt plus generated tokens."""

    max_input_len: int
    max_seq_len: int

    def check(self, prompt_tokens: int, max_tokens: int, *, prompt_param: str, max_tokens_param: str) -> None:
        if prompt_tokens > self.max_input_len:
            raise BadRequestError(
                f"the prompt is {prompt_tokens} tokens; this deployment accepts at most "
                f"{self.max_input_len} (max_input_len)",
                param=prompt_param,
            )
        if max_tokens < 1:
            raise BadRequestError(f"must be at least 1, got {max_tokens}", param=max_tokens_param)
        room = self.max_seq_len - prompt_tokens
        if max_tokens > room:
            raise BadRequestError(
                f"{max_tokens} new tokens do not fit: the prompt takes {prompt_tokens} of the "
                f"{self.max_seq_len} tokens of a sequence (max_seq_len), leaving {room}",
                param=max_tokens_param,
            )
