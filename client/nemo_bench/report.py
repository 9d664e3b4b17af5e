"""Result files of a run: ``results.json`` (settings and every level), ``results.csv`` (one row a level),
and the console table."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nemo_bench.metrics import PERCENTILES, LevelSummary

CSV_COLUMNS = [
    "mode", "level", "requests", "successes", "errors", "duration_s", "request_throughput",
    "output_token_throughput", "mean_input_tokens", "mean_output_tokens",
    *(f"{metric}_{stat}_ms" for metric in ("ttft", "itl", "e2e") for stat in ("mean", *(f"p{q}" for q in PERCENTILES))),
    "spread",
]  # fmt: skip


def _json_safe(value: Any) -> Any:
    """NaN (no samples) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: Path, settings: Mapping[str, Any], levels: Sequence[LevelSummary]) -> None:
    document = {"settings": dict(settings), "levels": [level.as_dict() for level in levels]}
    path.write_text(json.dumps(_json_safe(document), indent=2) + "\n", encoding="utf-8")


def csv_row(level: LevelSummary) -> dict[str, Any]:
    row: dict[str, Any] = {key: value for key, value in level.as_dict().items() if key in CSV_COLUMNS}
    row["errors"] = ";".join(f"{kind}={count}" for kind, count in sorted(level.errors.items()))
    row["spread"] = ";".join(f"{server}={count}" for server, count in level.spread.items())
    for metric, stats in (("ttft", level.ttft_ms), ("itl", level.itl_ms), ("e2e", level.e2e_ms)):
        for stat, value in stats.items():
            row[f"{metric}_{stat}_ms"] = value
    return row


def write_csv(path: Path, levels: Sequence[LevelSummary]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for level in levels:
            writer.writerow({key: _cell(value) for key, value in csv_row(level).items()})


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return value


def console_table(levels: Sequence[LevelSummary]) -> str:
    header = ["level", "ok/sent", "req/s", "out tok/s", "TTFT p50/p90/p99 ms", "ITL p50/p90/p99 ms",
              "e2e p50/p90/p99 ms", "errors"]  # fmt: skip
    with_spread = any(level.spread for level in levels)
    if with_spread:
        header.append("spread")
    rows = [header]
    for level in levels:
        row = [
            f"{level.mode} {level.level:g}",
            f"{level.successes}/{level.requests}",
            f"{level.request_throughput:.2f}",
            f"{level.output_token_throughput:.1f}",
            _triple(level.ttft_ms),
            _triple(level.itl_ms),
            _triple(level.e2e_ms),
            ", ".join(f"{kind} {count}" for kind, count in sorted(level.errors.items())) or "-",
        ]
        if with_spread:
            row.append(spread_text(level))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


def spread_text(level: LevelSummary) -> str:
    """``10.0.0.1:8002 16 / 10.0.0.2:8002 16 (±0%)``: requests per server, and the largest departure from even."""
    if not level.spread:
        return "-"
    counts = " / ".join(f"{server} {count}" for server, count in level.spread.items())
    deviation = level.spread_deviation
    return counts if deviation is None else f"{counts} (±{deviation:.0%})"


def _triple(stats: Mapping[str, float]) -> str:
    return "/".join("-" if math.isnan(stats[f"p{q}"]) else f"{stats[f'p{q}']:.1f}" for q in PERCENTILES)
