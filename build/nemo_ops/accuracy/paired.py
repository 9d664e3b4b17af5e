"""The FP8 − BF16 difference of a task and its confidence interval, from the two runs' per-sample scores.

Both deployments answer the same samples (lm-eval's ``--limit`` takes the first N documents of each task, in order,
with the same few-shot examples: fixed seeds), so the difference is paired: d_i = fp8_i − bf16_i over the samples
both scored. The interval is a percentile paired bootstrap: the samples are resampled with replacement, the mean of
d over each resample, and the 2.5th and 97.5th percentiles of those means. Unlike the normal approximation it needs
no assumption about the shape of d, which for 0/1 scores with few disagreements is far from normal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
CONFIDENCE = 0.95
_BATCH = 500  # resamples drawn at once: bounds memory for tasks of thousands of samples


@dataclass(frozen=True)
class Difference:
    """Mean of first − second over ``samples`` paired samples, in the scores' unit, with its interval."""

    mean: float
    low: float
    high: float
    samples: int


def paired_difference(
    first: Mapping[str, float], second: Mapping[str, float], *, resamples: int = RESAMPLES, seed: int = 0
) -> Difference | None:
    """first − second over the samples both scored (None when they share none), with the paired bootstrap interval."""
    shared = sorted(set(first) & set(second))
    if not shared:
        return None
    d = np.array([first[key] - second[key] for key in shared], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, _BATCH):
        picks = rng.integers(0, len(d), size=(min(_BATCH, resamples - start), len(d)))
        means.append(d[picks].mean(axis=1))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return Difference(float(d.mean()), float(low), float(high), len(d))
