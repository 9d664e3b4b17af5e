"""The throughput-versus-latency curve of a sweep (one point a level), as a PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from nemo_bench.metrics import LevelSummary

_PANELS = (("e2e_ms", "end-to-end latency p50 (ms)"), ("ttft_ms", "time to first token p50 (ms)"),
           ("itl_ms", "inter-token latency p50 (ms)"))  # fmt: skip


def plot_sweep(path: Path, levels: Sequence[LevelSummary], title: str) -> None:
    """Output tokens/s on x against each latency's median on y, every point labelled with its level."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(_PANELS), figsize=(5 * len(_PANELS), 4.2), constrained_layout=True)
    for axis, (field, label) in zip(axes, _PANELS, strict=True):
        points = [
            (level.output_token_throughput, getattr(level, field)["p50"], level)
            for level in levels
            if not math.isnan(getattr(level, field)["p50"])
        ]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        for x, y, level in points:
            axis.annotate(f"{level.level:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.set_xlabel("output tokens/s (all requests)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    mode = levels[0].mode if levels else ""
    figure.suptitle(f"{title} — points labelled with the {'concurrency' if mode == 'concurrency' else 'request rate'}")
    figure.savefig(path, dpi=110)
    plt.close(figure)
