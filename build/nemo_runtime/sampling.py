"""Per-request token choice: greedy or seeded sampling (temperature, top-k, top-p) under an optional mask.

Every request owns its own ``torch.Generator``, so what a request draws depends only on its own seed and
logits, never on which other requests share the batch.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

TokenMask = Callable[[Sequence[int]], "torch.Tensor | Sequence[int] | None"]
"""Called with the ids generated so far; returns the allowed ids (a boolean tensor [vocab] or a list of
ids), or None for no constraint."""
LogitsMask = Callable[[torch.Tensor, Sequence[int]], None]
"""Called with a request's logits [vocab] (its own copy) and the ids generated so far; sets the logits of the
ids it does not allow to -inf, in place. The hook for schema-constrained decoding: an xgrammar bitmask is
applied to the logits directly, with no vocabulary-sized mask built per token (nemo_runtime.guided)."""


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks tokens.

    Greedy when ``temperature`` is 0 or ``top_k`` is 1 (TensorRT-LLM's convention). ``top_k`` 0 and
    ``top_p`` 1.0 switch those filters off. ``seed`` None draws a fresh random seed.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


GREEDY = SamplingParams(temperature=0.0)


class NoAllowedToken(Exception):
    """The request's token mask allowed no token at all."""


class Sampler:
    """Chooses the next token of one request."""

    def __init__(
        self,
        params: SamplingParams,
        vocab_size: int,
        token_mask: TokenMask | None = None,
        logits_mask: LogitsMask | None = None,
    ) -> None:
        self.params = params
        self.vocab_size = vocab_size
        self.token_mask = token_mask
        self.logits_mask = logits_mask
        self.generator = torch.Generator()
        self.generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))

    def _allowed(self, generated: Sequence[int]) -> torch.Tensor | None:
        if self.token_mask is None:
            return None
        allowed = self.token_mask(generated)
        if allowed is None:
            return None
        if isinstance(allowed, torch.Tensor) and allowed.dtype == torch.bool:
            mask = allowed
        else:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            mask[torch.as_tensor(list(allowed), dtype=torch.long)] = True
        if not bool(mask.any()):
            raise NoAllowedToken("the token mask allowed no token")
        return mask

    def choose(self, logits: torch.Tensor, generated: Sequence[int]) -> tuple[int, torch.Tensor]:
        """Next token id from ``logits`` [vocab] (float32), given the ids this request generated so far, and
        the scores it was drawn from: the logits masked and divided by the temperature (greedy: masked only),
        whose log-softmax is the token's log probability (TensorRT-LLM's ``output_log_probs``)."""
        mask = self._allowed(generated)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        if self.logits_mask is not None:
            logits = logits.clone() if mask is None else logits
            self.logits_mask(logits, generated)
            # A guide alone always allows a token (at least the end of sequence); with a token mask beside it
            # (min_tokens banning that end, say) the two may leave none.
            if mask is not None and not math.isfinite(float(logits.max())):
                raise NoAllowedToken("the guide and the token mask together allowed no token")
        p = self.params
        if p.greedy:
            return int(torch.argmax(logits)), logits
        scores = logits = logits / p.temperature
        if p.top_k:
            kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least the top token)
            drop = (sorted_probs.cumsum(0) - sorted_probs) >= p.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator)), scores
