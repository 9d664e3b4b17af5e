"""Prove an export by executing it: reference-runtime logits against the model it came from.

* unquantized checkpoint: must reproduce the Hugging Face model's logits (both in float32 here, so the
  bound is far inside bf16 tolerance) and its greedy choice at (nearly) every position;
* quantized checkpoint (FP8 weights and/or FP8 KV cache): must reproduce ModelOpt's fake-quantized
  model closely, and agree with the unquantized model's greedy choice on a large majority of positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nemo_build.errors import BuildError
from nemo_runtime.model import ReferenceModel
from nemo_runtime.weights import CheckpointError, load_weights

VERIFY_SAMPLES = 8
VERIFY_SEQ_LEN = 128

# Thresholds (name of the check → bounds). Relative error = ||candidate - reference|| / ||reference||.
BF16_MAX_RELATIVE_ERROR = 1e-3
BF16_MIN_GREEDY_AGREEMENT = 0.99
FAKEQUANT_MAX_RELATIVE_ERROR = 0.05
FAKEQUANT_MIN_GREEDY_AGREEMENT = 0.95
FP8_VS_BF16_MIN_GREEDY_AGREEMENT = 0.8


@dataclass(frozen=True)
class LogitComparison:
    """How closely ``candidate`` logits follow ``reference`` logits over the same positions."""

    positions: int
    relative_error: float
    max_abs_diff: float
    greedy_agreement: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class VerifyCheck:
    name: str
    comparison: LogitComparison
    max_relative_error: float | None
    min_greedy_agreement: float

    @property
    def passed(self) -> bool:
        c = self.comparison
        error_ok = self.max_relative_error is None or c.relative_error <= self.max_relative_error
        return error_ok and c.greedy_agreement >= self.min_greedy_agreement

    def describe(self) -> str:
        c = self.comparison
        bound = "" if self.max_relative_error is None else f" (max {self.max_relative_error:g})"
        return (
            f"{self.name}: relative error {c.relative_error:.2e}{bound}, max |Δlogit| {c.max_abs_diff:.3g}, "
            f"greedy agreement {c.greedy_agreement:.1%} (min {self.min_greedy_agreement:.0%}) over "
            f"{c.positions} positions — {'ok' if self.passed else 'FAILED'}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            **self.comparison.as_dict(),
            "max_relative_error": self.max_relative_error,
            "min_greedy_agreement": self.min_greedy_agreement,
            "passed": self.passed,
        }


def compare_logits(candidate: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> LogitComparison:
    cand = torch.cat([c.float() for c in candidate])
    ref = torch.cat([r.float() for r in reference])
    if cand.shape != ref.shape:
        raise ValueError(f"logit shapes differ: {tuple(cand.shape)} vs {tuple(ref.shape)}")
    diff = cand - ref
    return LogitComparison(
        positions=int(ref.shape[0]),
        relative_error=float(diff.norm() / ref.norm().clamp_min(1e-12)),
        max_abs_diff=float(diff.abs().max()),
        greedy_agreement=float((cand.argmax(-1) == ref.argmax(-1)).float().mean()),
    )


def verification_samples(samples: Sequence[Sequence[int]]) -> list[list[int]]:
    """The first few calibration samples, shortened: enough positions to judge, cheap to run twice."""
    return [list(s[:VERIFY_SEQ_LEN]) for s in samples[:VERIFY_SAMPLES] if len(s) >= 2]


@torch.inference_mode()
def model_logits(model: torch.nn.Module, samples: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Logits [tokens, vocab] per sample from a Hugging Face causal LM (float32, on CPU)."""
    device = next(model.parameters()).device
    return [model(torch.tensor([list(s)], device=device)).logits[0].float().cpu() for s in samples]


def runtime_logits(checkpoint_dir: Path, samples: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Logits [tokens, vocab] per sample from the reference runtime executing the checkpoint."""
    try:
        model = ReferenceModel(load_weights(checkpoint_dir))
    except CheckpointError as error:  # worded for the user already: the CLI prints it without a traceback
        raise BuildError(str(error)) from error
    out = []
    for sample in samples:
        slot = model.cache.acquire()
        out.append(model.prefill(slot, list(sample), all_logits=True))
        model.cache.release(slot)
    return out


def unquantized_checks(runtime: Sequence[torch.Tensor], hf: Sequence[torch.Tensor]) -> list[VerifyCheck]:
    return [
        VerifyCheck(
            "checkpoint vs Hugging Face model",
            compare_logits(runtime, hf),
            BF16_MAX_RELATIVE_ERROR,
            BF16_MIN_GREEDY_AGREEMENT,
        )
    ]


def quantized_checks(
    runtime: Sequence[torch.Tensor], fake_quant: Sequence[torch.Tensor], hf: Sequence[torch.Tensor]
) -> list[VerifyCheck]:
    return [
        VerifyCheck(
            "checkpoint vs ModelOpt fake-quantized model",
            compare_logits(runtime, fake_quant),
            FAKEQUANT_MAX_RELATIVE_ERROR,
            FAKEQUANT_MIN_GREEDY_AGREEMENT,
        ),
        VerifyCheck(
            "quantized checkpoint vs unquantized model (greedy)",
            compare_logits(runtime, hf),
            None,
            FP8_VS_BF16_MIN_GREEDY_AGREEMENT,
        ),
    ]
