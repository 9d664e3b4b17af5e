"""``nemo-bench`` against the real stack, over gRPC and through the gateway, as a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.reliability.conftest import Stack


def _bench(out: Path, *args: str) -> dict:
    command = [str(Path(sys.executable).with_name("nemo-bench")), *args, "--no-progress", "--out", str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr + finished.stdout
    assert "wrote" in finished.stdout
    return json.loads((out / "results.json").read_text())


def test_concurrency_sweep_over_grpc_writes_every_result(stack: Stack, tmp_path: Path) -> None:
    results = _bench(
        tmp_path, "--grpc-url", stack.grpc_url, "--input-tokens", "64", "--output-tokens", "12",
        "--concurrency", "1,4", "--requests", "8", "--warmup", "2",
    )  # fmt: skip
    assert results["settings"]["ignore_eos"] is True
    assert [(level["mode"], level["level"]) for level in results["levels"]] == [("concurrency", 1), ("concurrency", 4)]
    for level in results["levels"]:
        assert (level["requests"], level["successes"], level["errors"]) == (8, 8, {})
        assert level["mean_output_tokens"] == 12  # ignore_eos: exactly max_tokens
        assert level["mean_input_tokens"] > 64  # 64 content tokens plus the chat template's
        assert 0 < level["ttft_ms"]["p50"] <= level["e2e_ms"]["p50"]
        assert level["itl_ms"]["p50"] > 0
        assert level["output_token_throughput"] > 0
    with (tmp_path / "results.csv").open() as handle:
        assert [row["level"] for row in csv.DictReader(handle)] == ["1", "4"]
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_request_rate_through_the_gateway_reports_actual_lengths_without_ignore_eos(
    stack: Stack, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "What is the capital of France?"}) + "\n" + json.dumps({"prompt": "你好"}) + "\n"
    )
    results = _bench(
        tmp_path / "out", "--http-url", stack.gateway.url, "--prompts", str(prompts), "--output-tokens", "64",
        "--ignore-eos", "off", "--request-rate", "4", "--requests", "6", "--warmup", "1",
    )  # fmt: skip
    (level,) = results["levels"]
    assert (level["mode"], level["requests"], level["successes"]) == ("rate", 6, 6)
    # The trained model's canned answers are a few tokens long: the report gives what was generated.
    assert 1 <= level["mean_output_tokens"] < 64
    assert results["settings"]["workload"] == {"kind": "file", "path": str(prompts), "prompts": 2}
