"""`make gpu-check`'s steps after the build, for real on the CPU stack: Triton on the tiny FP8 repository,
nemo-gateway, the openai SDK smoke (chat, stream, tool call → tool result → answer), a tiny nemo-bench
sweep, the accuracy step (lm-eval on a local multiple-choice task, tests/data/accuracy) and the report files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nemo_ops.accuracy.report import MEANINGLESS
from nemo_ops.gpu_check.cli import STEP_NAMES, main
from tests.source_tree import PROJECT


@pytest.fixture(scope="module")
def timed_check(
    cpu_repository: Path, trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, float]:
    """The results folder of one run, and the run's wall time in seconds."""
    work = tmp_path_factory.mktemp("gpu-check")
    argv = [
        "--model-dir", str(trained_model_dir), "--skip-preflight", "--repository", str(cpu_repository),
        "--out", str(work / "out"), "--results-dir", str(work / "results"), "--ready-timeout", "300",
        "--bench-concurrency", "1,2", "--bench-requests", "3", "--bench-input-tokens", "16",
        "--bench-output-tokens", "8", "--accuracy", "--accuracy-tasks", "nemo_tiny_choice:0:acc",
        "--accuracy-include-path", str(PROJECT / "tests" / "data" / "accuracy"), "--accuracy-limit", "4",
    ]  # fmt: skip
    started = time.perf_counter()
    status = main(argv)
    wall = time.perf_counter() - started
    assert status == 0
    return work / "results", wall


@pytest.fixture(scope="module")
def checked(timed_check: tuple[Path, float]) -> Path:
    return timed_check[0]


def test_every_step_after_the_build_passes_and_is_timed(timed_check: tuple[Path, float]) -> None:
    checked, wall = timed_check
    doc = json.loads((checked / "results.json").read_text())
    steps = {step["name"]: step for step in doc["steps"]}
    assert list(steps) == [*STEP_NAMES[:-1], "accuracy", "report"]
    assert steps["preflight"]["status"] == steps["build"]["status"] == "skipped"
    assert all(steps[name]["status"] == "ok" for name in ("serve", "gateway", "smoke", "bench", "accuracy", "report"))
    # The steps that do work take time (starting Triton loads five models; the smoke and the bench make
    # requests); the report step only builds a dict. The steps' times add up to the run's, less what runs
    # outside them: stopping the gateway and Triton (at most its 5 s exit timeout and the 10 s grace before
    # SIGKILL) and writing the report files.
    for name in ("serve", "gateway", "smoke", "bench", "accuracy"):
        assert steps[name]["seconds"] > 0, steps[name]
    assert steps["serve"]["seconds"] > 1 and steps["report"]["seconds"] < 1
    total = sum(step["seconds"] for step in doc["steps"])
    assert wall - 20 < total <= wall + 0.05, (total, wall)
    assert doc["repository_target"] == "cpu" and doc["machine"]["triton_launcher"] == "pytriton"
    assert doc["profile"]["name"] == "h100-fp8-tp1"
    assert doc["model"]["architectures"] == ["MistralForCausalLM"] and doc["model"]["vocab_size"] == 131072


def test_smoke_replies_are_the_trained_answers(checked: Path) -> None:
    smoke = json.loads((checked / "results.json").read_text())["smoke"]
    assert smoke["chat"]["reply"] == "The capital of France is Paris."
    assert smoke["chat"]["finish_reason"] == "stop" and smoke["chat"]["usage"]["completion_tokens"] > 0
    stream = smoke["stream"]
    assert stream["reply"] == "A week has seven days." and stream["finish_reason"] == "stop"
    assert stream["chunks"] >= 2 and stream["usage"]["completion_tokens"] > 0
    tools = smoke["tools"]
    assert tools["finish_reason"] == "tool_calls"
    [call] = tools["tool_calls"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert json.loads(tools["tool_result"]) == {"conditions": "sunny", "celsius": 18}
    assert tools["final"]["reply"] == "It is sunny and 18 degrees in Paris."


def test_bench_numbers_and_files(checked: Path) -> None:
    bench = json.loads((checked / "results.json").read_text())["bench"]
    assert [level["concurrency"] for level in bench["levels"]] == [1, 2]
    for level in bench["levels"]:
        assert level["successes"] == level["requests"] == 3 and not level["errors"]
        assert level["request_throughput"] > 0 and level["output_token_throughput"] > 0
        assert level["ttft_p50_ms"] > 0 and level["e2e_p50_ms"] > 0
    for name in ("results.json", "results.csv", "results.png"):
        assert (checked / "bench" / name).stat().st_size > 0


def test_readme_summarises_the_run(checked: Path) -> None:
    readme = (checked / "README.md").read_text()
    assert readme.startswith("# gpu-check ")
    assert "| 3 serve | ok |" in readme and "| 1 preflight | skipped |" in readme
    assert "The capital of France is Paris." in readme and "It is sunny and 18 degrees in Paris." in readme
    assert "get_weather" in readme
    assert "| 1 | 3/3 |" in readme and "| 2 | 3/3 |" in readme
    assert "bench/results.png" in readme


def test_the_accuracy_step_keeps_its_run_and_marks_the_tiny_model(checked: Path) -> None:
    summary = json.loads((checked / "results.json").read_text())["accuracy"]
    assert summary["nemo_tiny_choice"]["n"] == 4 and summary["nemo_tiny_choice"]["metric"] == "acc"
    run = json.loads((checked / "accuracy" / "fp8.json").read_text())
    assert run["deployment"]["model_kind"] == "tiny" and run["deployment"]["precision"] == "fp8"
    assert len(run["tasks"]["nemo_tiny_choice"]["samples"]) == 4
    assert run["tasks"]["nemo_tiny_choice"]["score"] == summary["nemo_tiny_choice"]["score"]
    readme = (checked / "README.md").read_text()
    assert MEANINGLESS in readme and "| nemo_tiny_choice | 0 | acc | – |" in readme
