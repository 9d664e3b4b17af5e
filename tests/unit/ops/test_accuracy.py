"""`nemo-accuracy`'s parts that need no deployment: the task table, reading lm-eval's logged samples (groups such as
MMLU included), the paired bootstrap interval and the report. The run through a real gateway is
tests/integration/test_accuracy.py."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nemo_ops.accuracy.cli import main
from nemo_ops.accuracy.harness import task_samples
from nemo_ops.accuracy.paired import paired_difference
from nemo_ops.accuracy.report import MEANINGLESS, accuracy_table, render_accuracy
from nemo_ops.accuracy.tasks import TABLE1, TaskSpec, parse_tasks


def test_table1_is_the_seeds_tasks_shots_and_figures() -> None:
    assert [(t.name, t.fewshot, t.seed_figure) for t in TABLE1] == [
        ("HellaSwag", 0, 83.5), ("Winogrande", 0, 76.8), ("NaturalQuestions", 5, 31.2), ("TriviaQA", 5, 73.8),
        ("MMLU", 5, 68.0), ("OpenBookQA", 0, 60.6), ("CommonSense QA", 0, 70.4), ("TruthfulQA", 0, 50.3),
    ]  # fmt: skip


def test_table1_names_tasks_and_metrics_that_lm_eval_defines() -> None:
    """Each task is in lm-eval's registry and its config scores the metric the table reads; a group's (MMLU's)
    aggregate and subtasks score it."""
    from lm_eval.tasks import TaskManager

    index = TaskManager().task_index
    for spec in TABLE1:
        config = index[spec.lm_eval_task].cfg
        if "group" in config:
            assert spec.metric in {entry["metric"] for entry in config["aggregate_metric_list"]}, spec
            config = index["mmlu_anatomy"].cfg
        assert spec.metric in {entry["metric"] for entry in config["metric_list"]}, (spec, config["metric_list"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("table1", TABLE1),
        ("arc_easy:25:acc_norm", (TaskSpec("arc_easy", "arc_easy", 25, "acc_norm"),)),
        ("a:0:acc, b:5:exact_match", (TaskSpec("a", "a", 0, "acc"), TaskSpec("b", "b", 5, "exact_match"))),
    ],
)
def test_tasks_are_the_table_or_task_shots_metric(text: str, expected: tuple[TaskSpec, ...]) -> None:
    assert parse_tasks(text) == expected


@pytest.mark.parametrize("text", ["hellaswag", "hellaswag:zero:acc", "hellaswag:0:", "a:0:acc,a:1:acc"])
def test_a_malformed_task_list_is_a_usage_error(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--precision", "fp8"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--model-kind", "base", "--tasks", text, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--tasks" in err and ("TASK:SHOTS:METRIC" in err or "twice" in err)


def test_samples_of_a_group_are_its_subtasks_samples() -> None:
    evaluation = {
        "group_subtasks": {"mmlu": ["mmlu_stem", "mmlu_other"], "mmlu_stem": ["mmlu_anatomy"], "mmlu_other": ["x"]},
        "samples": {
            "mmlu_anatomy": [{"doc_id": 0, "acc": 1.0}, {"doc_id": 1, "acc": 0.0}],
            "x": [{"doc_id": 0, "acc": 1.0}],
            "hellaswag": [{"doc_id": 3, "acc": 0.0, "acc_norm": 1.0}],
        },
    }
    mmlu = TaskSpec("MMLU", "mmlu", 5, "acc")
    assert task_samples(mmlu, evaluation) == {"mmlu_anatomy/0": 1.0, "mmlu_anatomy/1": 0.0, "x/0": 1.0}
    hellaswag = TaskSpec("HellaSwag", "hellaswag", 0, "acc_norm")
    assert task_samples(hellaswag, evaluation) == {"hellaswag/3": 1.0}
    with pytest.raises(RuntimeError, match=r"samples have no 'f1'; they have doc_id, acc, acc_norm"):
        task_samples(TaskSpec("HellaSwag", "hellaswag", 0, "f1"), evaluation)
    with pytest.raises(RuntimeError, match="scored no sample of winogrande"):
        task_samples(TaskSpec("Winogrande", "winogrande", 0, "acc"), evaluation)


def test_the_paired_interval_matches_the_normal_approximation_on_many_samples() -> None:
    rng = np.random.default_rng(7)
    bf16 = rng.random(4000) < 0.6
    flips = rng.random(4000) < 0.05  # FP8 disagrees on 5% of the samples
    fp8 = np.where(flips, ~bf16, bf16)
    first = {str(i): float(v) for i, v in enumerate(fp8)}
    second = {str(i): float(v) for i, v in enumerate(bf16)}
    d = fp8.astype(float) - bf16.astype(float)
    result = paired_difference(first, second, resamples=4000)
    assert result is not None and result.samples == 4000
    assert result.mean == pytest.approx(d.mean())
    half_width = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert result.low == pytest.approx(d.mean() - half_width, abs=half_width * 0.15)
    assert result.high == pytest.approx(d.mean() + half_width, abs=half_width * 0.15)


def test_the_paired_interval_is_narrower_than_unpaired_when_the_runs_agree() -> None:
    """Pairing is what makes a small FP8 - BF16 difference measurable: two runs that agree on all but a few samples
    differ by little however noisy each task's score is."""
    rng = np.random.default_rng(1)
    bf16 = rng.random(500) < 0.5
    fp8 = bf16.copy()
    fp8[:5] = ~fp8[:5]
    result = paired_difference(
        {str(i): float(v) for i, v in enumerate(fp8)}, {str(i): float(v) for i, v in enumerate(bf16)}
    )
    assert result is not None
    unpaired_half_width = 1.96 * math.sqrt(2 * 0.25 / 500)
    assert result.high - result.low < unpaired_half_width


def test_only_samples_both_runs_scored_are_paired() -> None:
    result = paired_difference({"a": 1.0, "b": 1.0, "c": 0.0}, {"b": 0.0, "c": 0.0, "d": 1.0})
    assert result is not None and result.samples == 2 and result.mean == 0.5
    assert paired_difference({"a": 1.0}, {"b": 1.0}) is None


def _run(precision: str, kind: str, scores: dict[str, dict[str, float]]) -> dict[str, Any]:
    """A run document as `nemo-accuracy run` writes it."""
    by_name = {spec.name: spec for spec in TABLE1}
    return {
        "kind": "nemo-accuracy-run",
        "deployment": {"base_url": "http://h/v1", "model": "m", "precision": precision, "model_kind": kind},
        "limit": 4,
        "lm_eval": "0.4.13",
        "started": "2026-12-06T00:00:00+00:00",
        "seconds": 1.0,
        "tasks": {
            name: {
                **asdict(by_name[name]),
                "score": 100 * sum(samples.values()) / len(samples),
                "n": len(samples),
                "samples": samples,
            }
            for name, samples in scores.items()
        },
    }


def test_the_report_sets_fp8_beside_bf16_and_the_seed(tmp_path: Path) -> None:
    fp8 = _run("fp8", "instruct", {"MMLU": {"a/0": 1.0, "a/1": 0.0, "a/2": 1.0, "a/3": 1.0}})
    bf16 = _run("bf16", "instruct", {"MMLU": {"a/0": 1.0, "a/1": 1.0, "a/2": 1.0, "a/3": 1.0}})
    doc = accuracy_table([fp8, bf16])
    [row] = doc["rows"]
    assert row["scores"] == {"fp8": 75.0, "bf16": 100.0} and row["seed_figure"] == 68.0
    assert row["fp8_minus_bf16"]["mean"] == -25.0 and row["fp8_minus_bf16"]["samples"] == 4
    text = render_accuracy(doc)
    assert "Measured model: **instruct**" in text and "an instruct model is not expected to match them" in text
    assert "| MMLU | 5 | acc | 68.0 | 75.0 | 100.0 | -25.0 [" in text and "| 4 / 4 |" in text
    assert MEANINGLESS not in text

    for run in (fp8, bf16):
        (tmp_path / f"{run['deployment']['precision']}.json").write_text(json.dumps(run))
    assert main(["report", str(tmp_path / "fp8.json"), str(tmp_path / "bf16.json"), "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "accuracy.json").read_text())["rows"][0]["fp8_minus_bf16"]["mean"] == -25.0


def test_one_run_has_no_difference_column_and_a_tiny_model_is_marked_meaningless() -> None:
    text = render_accuracy(accuracy_table([_run("fp8", "tiny", {"HellaSwag": {"hellaswag/0": 1.0}})]))
    assert MEANINGLESS in text and "FP8 − BF16" not in text
    assert "| HellaSwag | 0 | acc_norm | 83.5 | 100.0 | 1 |" in text


def test_report_refuses_a_file_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"kind": "gpu-check"}')
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(other), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"{other}: not a run file written by `nemo-accuracy run`" in capsys.readouterr().err
