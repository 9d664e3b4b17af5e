"""``nemo-accuracy report``: the measured scores beside the seed's Table 1, and FP8 − BF16 with its interval."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nemo_ops.accuracy.paired import CONFIDENCE, RESAMPLES, paired_difference

MEANINGLESS = (
    "**These numbers are meaningless.** They come from the tiny CPU test model, which was trained on a few chat "
    "answers only: the run proves the wiring (lm-eval → gateway → Triton → runtime, loglikelihood and generation "
    "tasks, per-sample pairing), not the model."
)


def _run_of(runs: Sequence[dict[str, Any]], precision: str) -> dict[str, Any] | None:
    return next((run for run in runs if run["deployment"]["precision"] == precision), None)


def accuracy_table(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report document: per task each run's score, the seed's figure and, with an fp8 and a bf16 run, the paired
    FP8 − BF16 difference (percentage points) with its confidence interval."""
    fp8, bf16 = _run_of(runs, "fp8"), _run_of(runs, "bf16")
    names = list(dict.fromkeys(name for run in runs for name in run["tasks"]))
    labels = [run["deployment"]["precision"] for run in runs]
    rows = []
    for name in names:
        entries = [run["tasks"].get(name) for run in runs]
        spec = next(entry for entry in entries if entry is not None)
        row: dict[str, Any] = {
            "task": name,
            "fewshot": spec["fewshot"],
            "metric": spec["metric"],
            "seed_figure": spec["seed_figure"],
            "scores": {precision: (e["score"] if e else None) for precision, e in zip(labels, entries, strict=True)},
            "samples": {precision: (e["n"] if e else 0) for precision, e in zip(labels, entries, strict=True)},
        }
        if fp8 is not None and bf16 is not None and name in fp8["tasks"] and name in bf16["tasks"]:
            difference = paired_difference(fp8["tasks"][name]["samples"], bf16["tasks"][name]["samples"])
            if difference is not None:
                row["fp8_minus_bf16"] = {key: 100 * value if key != "samples" else value
                                         for key, value in asdict(difference).items()}  # fmt: skip
        rows.append(row)
    kinds = sorted({run["deployment"]["model_kind"] for run in runs})
    return {
        "kind": "nemo-accuracy-report",
        "model_kind": kinds[0] if len(kinds) == 1 else kinds,
        "meaningless": "tiny" in kinds,
        "interval": f"{CONFIDENCE:.0%} percentile paired bootstrap over the samples both runs scored, {RESAMPLES} "
        "resamples",
        "runs": [{key: run[key] for key in ("deployment", "limit", "lm_eval", "started", "seconds")} for run in runs],
        "rows": rows,
    }


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def render_accuracy(doc: dict[str, Any]) -> str:
    """The report as markdown."""
    precisions = [run["deployment"]["precision"] for run in doc["runs"]]
    paired = any("fp8_minus_bf16" in row for row in doc["rows"])
    first = doc["runs"][0]
    kind = doc["model_kind"]
    served = [f"{run['deployment']['precision']}: {run['deployment']['model']}" for run in doc["runs"]]
    lines = ["## Accuracy through the deployment (lm-eval local-completions → /v1/completions)", ""]
    if doc["meaningless"]:
        lines += [MEANINGLESS, ""]
    lines += [
        f"Measured model: **{kind if isinstance(kind, str) else ' and '.join(kind)}** "
        f"({', '.join(served)}). "
        "The seed's figures are for Mistral NeMo 12B **base**"
        + ("; an instruct model is not expected to match them." if kind == "instruct" else ".")
        + f" lm-eval {first['lm_eval']}, at most {first['limit']} samples per task (per subtask for MMLU), scores in "
        "percent: the mean of each sample's metric.",
        "",
    ]
    header = ["task", "shots", "metric", "seed (base)", *precisions]
    if paired:
        header.append("FP8 − BF16 [95% CI]")
    header.append("samples")
    lines += [
        "| " + " | ".join(header) + " |",
        "| --- | ---: | --- | ---: | " + " | ".join("---:" for _ in header[4:]) + " |",
    ]
    for row in doc["rows"]:
        cells = [row["task"], str(row["fewshot"]), row["metric"], _number(row["seed_figure"])]
        cells += [_number(row["scores"][precision]) for precision in precisions]
        if paired:
            d = row.get("fp8_minus_bf16")
            cells.append("–" if d is None else f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]")
        cells.append(" / ".join(str(row["samples"][precision]) for precision in precisions))
        lines.append("| " + " | ".join(cells) + " |")
    if paired:
        lines += ["", f"FP8 − BF16 in percentage points; interval: {doc['interval']}."]
    return "\n".join(lines) + "\n"


def write_accuracy(out: Path, doc: dict[str, Any]) -> None:
    """accuracy.json and accuracy.md in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out / "accuracy.md").write_text(render_accuracy(doc), encoding="utf-8")
    print(f"  wrote {out}/accuracy.json and accuracy.md")


def save_accuracy(out: Path, runs: Sequence[dict[str, Any]]) -> str:
    """Each run as ``<precision>.json`` and their table (accuracy.json, accuracy.md) in ``out``: its markdown."""
    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        (out / f"{run['deployment']['precision']}.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    doc = accuracy_table(runs)
    write_accuracy(out, doc)
    return render_accuracy(doc)
