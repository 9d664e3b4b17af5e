"""Result files: strict JSON, a CSV row per level, a console table, and a PNG plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from nemo_bench.metrics import LevelSummary, RequestRecord, summarize
from nemo_bench.plot import plot_sweep
from nemo_bench.report import CSV_COLUMNS, console_table, write_csv, write_json


def _levels() -> list:
    ok = [
        RequestRecord(start=0.0, first_token=0.1, end=1.0 + i / 10, output_tokens=8, input_tokens=5) for i in range(4)
    ]
    failed = RequestRecord(start=0.0, end=0.5, error_type="unavailable", error_message="down")
    return [summarize("concurrency", 1, ok[:2]), summarize("concurrency", 4, [*ok, failed])]


def test_json_and_csv_carry_every_level(tmp_path: Path) -> None:
    levels = _levels()
    write_json(tmp_path / "results.json", {"workload": {"kind": "synthetic"}}, levels)
    write_csv(tmp_path / "results.csv", levels)
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["settings"] == {"workload": {"kind": "synthetic"}}
    assert [level["level"] for level in document["levels"]] == [1, 4]
    assert document["levels"][1]["errors"] == {"unavailable": 1}
    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == CSV_COLUMNS
    assert [row["successes"] for row in rows] == ["2", "4"]
    assert rows[1]["errors"] == "unavailable=1"
    assert float(rows[0]["ttft_p50_ms"]) == 100.0


def test_results_json_reads_back_into_the_same_levels(tmp_path: Path) -> None:
    levels = _levels()
    write_json(tmp_path / "results.json", {}, levels)
    document = json.loads((tmp_path / "results.json").read_text())
    assert [LevelSummary.from_dict(level) for level in document["levels"]] == levels


def test_levels_without_samples_write_null_not_nan(tmp_path: Path) -> None:
    failed = summarize("rate", 1.0, [RequestRecord(start=0, end=1, error_type="timeout", error_message="slow")])
    write_json(tmp_path / "results.json", {}, [failed])
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["levels"][0]["ttft_ms"]["p50"] is None


def test_console_table_has_a_row_per_level() -> None:
    lines = console_table(_levels()).splitlines()
    assert len(lines) == 3
    assert lines[2].startswith("concurrency 4") and "4/5" in lines[2] and "unavailable 1" in lines[2]


def test_plot_is_a_png(tmp_path: Path) -> None:
    plot_sweep(tmp_path / "results.png", _levels(), "ISL 128 / OSL 128")
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
