"""The ``compare`` step of ``make gpu-check`` with several profiles: their bench figures side by side.

For each concurrency level every profile was benched at: output tokens/s, and the medians (p50) of the time to the
first token and of the inter-token latency, per profile, with the ratio of the second profile's figure to the
first's (``--runtimes engine,pytorch`` runs the engine first, so the ratio reads pytorch/engine). A tokens/s ratio
above 1, or a latency ratio below 1, means the second is faster. Written as ``comparison.json`` and the top of the
results folder's ``README.md``; each profile's own report is in its subfolder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# (key in a bench level, column title)
COMPARED = (("output_token_throughput", "output tok/s"), ("ttft_p50_ms", "TTFT p50 ms"), ("itl_p50_ms", "ITL p50 ms"))


def _ratio(second: float | None, first: float | None) -> float | None:
    if second is None or not first:
        return None
    return second / first


def comparison(runs: Sequence[dict[str, Any]], folders: Sequence[str]) -> dict[str, Any]:
    """The side-by-side document of the runs' ``results.json`` documents (``folders``: where each is kept)."""
    labels = [doc["profile"]["name"] for doc in runs]
    by_level = [{row["concurrency"]: row for row in doc["bench"].get("levels", [])} for doc in runs]
    shared = sorted(set.intersection(*(set(levels) for levels in by_level))) if by_level else []
    levels = []
    for concurrency in shared:
        rows = [levels_of[concurrency] for levels_of in by_level]
        figures = {key: [row.get(key) for row in rows] for key, _ in COMPARED}
        levels.append(
            {
                "concurrency": concurrency,
                **figures,
                "ratio": {key: _ratio(values[-1], values[0]) for key, values in figures.items()},
            }
        )
    return {
        "kind": "gpu-check-comparison",
        "runs": [
            {"profile": label, "runtime": doc.get("runtime"), "results": folder}
            for label, doc, folder in zip(labels, runs, folders, strict=True)
        ],
        "ratio_of": f"{labels[-1]} / {labels[0]}",
        "workload": runs[0]["bench"].get("settings", {}).get("workload", {}) if runs else {},
        "levels": levels,
    }


def _figure(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def verdict(doc: dict[str, Any]) -> list[str]:
    """One sentence per concurrency level: which profile gave more tokens/s, and by how much."""
    first, second = (run["profile"] for run in (doc["runs"][0], doc["runs"][-1]))
    sentences = []
    for level in doc["levels"]:
        ratio = level["ratio"]["output_token_throughput"]
        if ratio is None:
            continue
        faster, factor = (second, ratio) if ratio >= 1 else (first, 1 / ratio)
        sentences.append(f"- concurrency {level['concurrency']:g}: {faster} gives {factor:.2f}x the output tokens/s")
    return sentences


def render_comparison(doc: dict[str, Any]) -> str:
    """The markdown side-by-side table of a comparison document."""
    runs = doc["runs"]
    names = [f"{run['profile']} ({run['runtime']})" for run in runs]
    workload = doc.get("workload") or {}
    header = ["concurrency"]
    for _, title in COMPARED:
        header += [f"{run['profile']} {title}" for run in runs] + [f"ratio {title}"]
    lines = [
        f"## Side by side: {' vs '.join(names)}",
        "",
        f"nemo-bench through the gateway, ISL {workload.get('input_tokens')} / OSL {workload.get('output_tokens')}; "
        f"ratio = {doc['ratio_of']} (tokens/s above 1, or latency below 1: the second is faster). Medians (p50) "
        "of TTFT and ITL. Each profile's full report: "
        + ", ".join(f"[{run['profile']}]({run['results']}/README.md)" for run in runs)
        + ".",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" for _ in header) + " |",
    ]
    for level in doc["levels"]:
        cells = [f"{level['concurrency']:g}"]
        for key, _ in COMPARED:
            cells += [_figure(value, 1) for value in level[key]] + [_figure(level["ratio"][key], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    if not doc["levels"]:
        lines += ["", "No concurrency level was benched for every profile."]
    return "\n".join([*lines, "", *verdict(doc)]) + "\n"
