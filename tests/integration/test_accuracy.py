"""`nemo-accuracy` for real on the CPU stack: lm-eval's local-completions through the real gateway and Triton, on
local task files (tests/data/accuracy: a multiple-choice task, scored by the prompt's log probabilities, and a
2-shot generation task), against the tiny model twice: its FP8 checkpoint (the session's Triton) and its own bf16
Hugging Face checkpoint, unquantized (a second CPU Triton), then the report with FP8 − BF16 and its interval.
No hub download: the tokenizer is the gateway's (tokenizer_backend=remote), the data a local JSONL file. The numbers
mean nothing (the tiny model); the report says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nemo_gateway.settings import GatewaySettings
from nemo_ops.accuracy.cli import main
from nemo_ops.accuracy.report import MEANINGLESS
from nemo_ops.launcher import TritonServer
from tests.integration.conftest import serving_repository
from tests.integration.gateways import SERVED, running_gateway
from tests.source_tree import PROJECT

TASKS = PROJECT / "tests" / "data" / "accuracy"
LIMIT = 6


@pytest.fixture(scope="module")
def unquantized_gateway(
    trained_model_dir: Path, tekken_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A gateway over a second CPU Triton serving the tiny model's own bf16 Hugging Face checkpoint (unquantized)."""
    out = tmp_path_factory.mktemp("unquantized") / "repository"
    repository = serving_repository(out, "cpu", trained_model_dir, tekken_path)
    with (
        TritonServer(repository, launcher="pytriton") as server,
        running_gateway(GatewaySettings(triton_url=server.grpc_url, served_model_name=SERVED)) as base,
    ):
        yield base


def _run(base: str, precision: str, out: Path) -> None:
    argv = [
        "run", "--base-url", f"{base}/v1", "--precision", precision, "--model-kind", "tiny",
        "--tasks", "nemo_tiny_choice:0:acc,nemo_tiny_answer:2:exact_match", "--include-path", str(TASKS),
        "--limit", str(LIMIT), "--num-concurrent", "2", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0


@pytest.fixture(scope="module")
def measured(gateway: str, unquantized_gateway: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("accuracy")
    _run(gateway, "fp8", out)
    _run(unquantized_gateway, "bf16", out)
    return out


def test_each_run_keeps_every_sample_score_through_the_gateway(measured: Path) -> None:
    for precision in ("fp8", "bf16"):
        run = json.loads((measured / f"{precision}.json").read_text())
        assert run["deployment"] == {
            "base_url": run["deployment"]["base_url"], "model": SERVED, "precision": precision, "model_kind": "tiny",
        }  # fmt: skip
        choice, answer = run["tasks"]["nemo_tiny_choice"], run["tasks"]["nemo_tiny_answer"]
        assert (choice["fewshot"], choice["metric"]) == (0, "acc")
        assert (answer["fewshot"], answer["metric"]) == (2, "exact_match")
        for task in (choice, answer):
            assert task["n"] == LIMIT and len(task["samples"]) == LIMIT
            assert set(task["samples"].values()) <= {0.0, 1.0}
            assert task["score"] == pytest.approx(100 * sum(task["samples"].values()) / LIMIT)
        assert sorted(choice["samples"]) == [f"nemo_tiny_choice/{i}" for i in range(LIMIT)]


def test_the_report_pairs_the_samples_and_says_the_numbers_mean_nothing(measured: Path) -> None:
    fp8 = json.loads((measured / "fp8.json").read_text())["tasks"]
    bf16 = json.loads((measured / "bf16.json").read_text())["tasks"]
    report = json.loads((measured / "accuracy.json").read_text())
    assert report["meaningless"] and report["model_kind"] == "tiny"
    for row in report["rows"]:
        difference = row["fp8_minus_bf16"]
        assert difference["samples"] == LIMIT
        assert difference["mean"] == pytest.approx(fp8[row["task"]]["score"] - bf16[row["task"]]["score"])
        assert difference["low"] <= difference["mean"] <= difference["high"]
    text = (measured / "accuracy.md").read_text()
    assert MEANINGLESS in text and "Measured model: **tiny**" in text
    assert "| task | shots | metric | seed (base) | fp8 | bf16 | FP8 − BF16 [95% CI] | samples |" in text
    assert f"| {LIMIT} / {LIMIT} |" in text
