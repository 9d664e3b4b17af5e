"""`make gpu-check` over two repositories, one after the other, for real on the CPU stack: the CPU runtime's
repository and the pytorch runtime's (the LLM-API model over the fake tensorrt_llm), each served, smoked and benched
with its own Triton and gateway, then the compare step's side-by-side report. The figures are the CPU's: what is
checked is that each run's own report is written and that the side by side holds their figures, bench and accuracy
(a generation task: the pytorch repository returns no prompt log probabilities)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_ops.gpu_check.cli import main
from tests.source_tree import PROJECT


@pytest.fixture(scope="module")
def side_by_side(
    cpu_repository: Path, pytorch_repository: Path, trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    work = tmp_path_factory.mktemp("gpu-check-compare")
    argv = [
        "--model-dir", str(trained_model_dir), "--skip-preflight", "--launcher", "pytriton",
        "--repository", f"{cpu_repository},{pytorch_repository}", "--profile", "h100-fp8-tp1,h100-fp8-tp1-pytorch",
        "--out", str(work / "out"), "--results-dir", str(work / "results"), "--ready-timeout", "300",
        "--bench-concurrency", "1", "--bench-requests", "2", "--bench-input-tokens", "16",
        "--bench-output-tokens", "4", "--accuracy", "--accuracy-tasks", "nemo_tiny_answer:0:exact_match",
        "--accuracy-include-path", str(PROJECT / "tests" / "data" / "accuracy"), "--accuracy-limit", "3",
    ]  # fmt: skip
    assert main(argv) == 0
    return work / "results"


def test_each_profile_gets_its_report_and_the_side_by_side_holds_their_figures(side_by_side: Path) -> None:
    engine_like = json.loads((side_by_side / "1-h100-fp8-tp1" / "results.json").read_text())
    pytorch = json.loads((side_by_side / "2-h100-fp8-tp1-pytorch" / "results.json").read_text())
    assert engine_like["runtime"] == "cpu reference" and pytorch["runtime"] == "pytorch"
    for doc in (engine_like, pytorch):
        assert doc["smoke"]["chat"]["reply"] == "The capital of France is Paris."
        [level] = doc["bench"]["levels"]
        assert level["successes"] == 2 and level["output_token_throughput"] > 0

    compared = json.loads((side_by_side / "comparison.json").read_text())
    assert [run["runtime"] for run in compared["runs"]] == ["cpu reference", "pytorch"]
    [level] = compared["levels"]
    first, second = engine_like["bench"]["levels"][0], pytorch["bench"]["levels"][0]
    assert level["output_token_throughput"] == [first["output_token_throughput"], second["output_token_throughput"]]
    assert level["ratio"]["ttft_p50_ms"] == pytest.approx(second["ttft_p50_ms"] / first["ttft_p50_ms"])
    readme = (side_by_side / "README.md").read_text()
    assert "## Side by side: h100-fp8-tp1 (cpu reference) vs h100-fp8-tp1-pytorch (pytorch)" in readme
    steps = [step["name"] for step in engine_like["steps"]]
    assert steps[-4:] == ["bench h100-fp8-tp1-pytorch", "accuracy h100-fp8-tp1-pytorch", "compare", "report"]


def test_the_accuracy_of_each_profile_is_side_by_side_under_its_own_label(side_by_side: Path) -> None:
    labels = ["fp8-h100-fp8-tp1", "fp8-h100-fp8-tp1-pytorch"]  # both FP8: each labelled with its profile too
    runs = [json.loads((side_by_side / "accuracy" / f"{label}.json").read_text()) for label in labels]
    assert [run["deployment"]["precision"] for run in runs] == labels
    report = json.loads((side_by_side / "accuracy" / "accuracy.json").read_text())
    [row] = report["rows"]
    assert row["samples"] == dict.fromkeys(labels, 3) and "fp8_minus_bf16" not in row
    assert "| nemo_tiny_answer | 0 | exact_match | – |" in (side_by_side / "README.md").read_text()
