"""Serving benchmark: the `chat` model on a real CPU Triton with in-flight batching.

Time to first token and output tokens/s at concurrency 1, 4 and 16 (streamed chat requests that
generate exactly `TOKENS` tokens, `nvext.ignore_eos`), the throughput gained from batching (16 vs 1),
and what `chat` adds over calling `tensorrt_llm` directly with the same prompt ids.

The checkpoint is `$NEMO_BENCH_CHECKPOINT`, else the demo's (`artifacts/demo/checkpoint-fp8`), else one
built here with `nemo-build tiny-model --trained` and `nemo-build checkpoint --quant fp8`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from nemo_build.repository import TEMPLATES_DIR, RepositorySettings, render_repository
from nemo_ops.launcher import TritonServer
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.tekken import Tekkenizer, default_tekken_path
from tests.integration.triton_calls import StreamingCall, chat_inputs

ROOT = Path(__file__).resolve().parents[2]
TOKENS = 64
CONCURRENCY = (1, 4, 16)
REQUESTS_PER_CLIENT = 3
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def _checkpoint() -> Path:
    if os.environ.get("NEMO_BENCH_CHECKPOINT"):
        return Path(os.environ["NEMO_BENCH_CHECKPOINT"])
    demo = ROOT / "artifacts" / "demo" / "checkpoint-fp8"
    if (demo / "config.json").is_file():
        return demo
    work = ROOT / "artifacts" / "bench"
    model, checkpoint = work / "tiny-model", work / "checkpoint-fp8"
    if not (checkpoint / "config.json").is_file():
        build = str(Path(sys.executable).with_name("nemo-build"))
        subprocess.run([build, "tiny-model", "--trained", "--out", str(model), "--force"], check=True)
        subprocess.run(
            [build, "checkpoint", "--model-dir", str(model), "--out", str(checkpoint), "--quant", "fp8",
             "--kv-cache", "fp8", "--device", "cpu"],
            check=True,
        )  # fmt: skip
    return checkpoint


def _timed(call: StreamingCall) -> tuple[float, float, int]:
    """(seconds to the first generated token, total seconds, tokens) of one streamed request."""
    start = time.perf_counter()
    first = None
    while call.next():
        if first is None and _tokens(call.result.outputs[-1:]) > 0:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    call.close()
    return first or total, total, _tokens(call.result.outputs)


def _tokens(outputs: list[dict[str, np.ndarray]]) -> int:
    count = 0
    for output in outputs:
        if "output_ids" in output:
            count += int(output["output_ids"].size)
        elif "response" in output:
            event = json.loads(output["response"].reshape(-1)[0])
            if event.get("choices") and event["choices"][0]["delta"].get("content"):
                count += 1  # one chunk per generated token once characters are complete
            if event.get("usage"):
                return int(event["usage"]["completion_tokens"])
    return count


def _chat_call(url: str) -> StreamingCall:
    body = {
        "messages": MESSAGES,
        "max_tokens": TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "nvext": {"ignore_eos": True},
    }
    return StreamingCall(url, "chat", chat_inputs(json.dumps(body)))


def _direct_call(url: str, ids: list[int]) -> StreamingCall:
    inputs = {
        "input_ids": np.array([ids], dtype=np.int32),
        "input_lengths": np.array([[len(ids)]], dtype=np.int32),
        "request_output_len": np.array([[TOKENS]], dtype=np.int32),
        "streaming": np.array([[True]]),
        "runtime_top_k": np.array([[1]], dtype=np.int32),
    }
    return StreamingCall(url, "tensorrt_llm", inputs)


def _load(url: str, concurrency: int) -> dict[str, float]:
    def client(_: int) -> list[tuple[float, float, int]]:
        return [_timed(_chat_call(url)) for _ in range(REQUESTS_PER_CLIENT)]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        runs = [run for runs in pool.map(client, range(concurrency)) for run in runs]
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": len(runs),
        "ttft_ms_median": 1000 * statistics.median(r[0] for r in runs),
        "tokens_per_s": sum(r[2] for r in runs) / wall,
        "per_request_tokens_per_s": statistics.median(r[2] / r[1] for r in runs),
    }


def run() -> dict[str, Any]:
    tokenizer = Tekkenizer.from_file(default_tekken_path())
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as work:
        repository = Path(work) / "repository"
        settings = RepositorySettings(
            target="cpu", model_dir=_checkpoint(), max_batch_size=16, max_input_len=512, max_seq_len=1024
        )
        render_repository(TEMPLATES_DIR, settings, default_tekken_path(), repository)
        with TritonServer(repository) as server:
            url = server.grpc_url
            _timed(_chat_call(url))  # warm up
            loads = [_load(url, c) for c in CONCURRENCY]
            ids = encode_chat(tokenizer, MESSAGES)
            direct = [_timed(_direct_call(url, ids)) for _ in range(5)]
            via_chat = [_timed(_chat_call(url)) for _ in range(5)]
    overhead = {
        "direct_total_ms": 1000 * statistics.median(r[1] for r in direct),
        "chat_total_ms": 1000 * statistics.median(r[1] for r in via_chat),
        "direct_ttft_ms": 1000 * statistics.median(r[0] for r in direct),
        "chat_ttft_ms": 1000 * statistics.median(r[0] for r in via_chat),
    }
    ratio = loads[-1]["tokens_per_s"] / loads[0]["tokens_per_s"]
    rows = [
        f"| {x['concurrency']} | {x['requests']} | {x['ttft_ms_median']:.1f} | {x['tokens_per_s']:.0f} | "
        f"{x['per_request_tokens_per_s']:.0f} |"
        for x in loads
    ]
    markdown = "\n".join(
        [
            f"Tiny trained NeMo-shaped model (FP8 checkpoint) on the CPU reference runtime behind a real Triton; "
            f"streamed `chat` requests of exactly {TOKENS} generated tokens, {REQUESTS_PER_CLIENT} per client.",
            "",
            "| concurrency | requests | TTFT median (ms) | output tokens/s (all) | tokens/s per request |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"In-flight batching: throughput at 16 concurrent streams is **{ratio:.1f}×** that of one stream.",
            "",
            f"`chat` vs `tensorrt_llm` with the same prompt ids, one at a time: total "
            f"{overhead['chat_total_ms']:.1f} ms vs {overhead['direct_total_ms']:.1f} ms, TTFT "
            f"{overhead['chat_ttft_ms']:.1f} ms vs {overhead['direct_ttft_ms']:.1f} ms.",
        ]
    )
    return {
        "title": "Serving: chat on a CPU Triton with in-flight batching",
        "markdown": markdown,
        "data": {"loads": loads, "throughput_ratio_16_vs_1": ratio, "overhead": overhead, "tokens": TOKENS},
    }


if __name__ == "__main__":
    print(run()["markdown"])
