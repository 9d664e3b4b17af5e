"""Long prompts on the CPU reference runtime: time to first token and peak resident memory against prompt length,
1k to 128k tokens, with the growth rate of each (a power-law fit: TTFT ∝ length^k), and the prefill chunk size's
(``max_num_tokens``) effect at one length.

Each measurement runs in a fresh process (so that its peak RSS is its own): the tiny NeMo-shaped model's FP8
checkpoint (128k positions), one request, ``max_new_tokens`` 1, prompt ids drawn at random; the peak is reset
(``/proc/self/clear_refs``) once the model is loaded, so it is the request's. ``NEMO_BENCH_LONG_MAX``
caps the longest prompt (default 131,000 tokens)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bench.timing import markdown_table

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "artifacts" / "bench" / "long-context"
LENGTHS = (1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 131_000)
CHUNK_LENGTH = 32_000
CHUNKS = (1_024, 4_096, 8_192, 32_768)
REQUEST_TOKENS = 128_000
# sentences of each script, drawn at random (with a number each) into a text of REQUEST_TOKENS tokens
SENTENCES = {
    "English": ["The committee reviews the quarterly budget", "A river bends around the old mill",
                "Signals from the harbor reached the station late", "She wrote the ledger in violet ink"],
    "Chinese": ["长上下文模型可以一次阅读整本书", "委员会正在审查季度预算",
                "河流绕过古老的磨坊", "她用紫色墨水写下了账本"],
    "Arabic": ["يمكن للنماذج ذات السياق الطويل قراءة كتاب كامل", "تراجع اللجنة الميزانية الفصلية",
               "يلتف النهر حول الطاحونة القديمة", "كتبت الدفتر بالحبر البنفسجي"],
}  # fmt: skip
DEFAULT_CHUNK = 8_192  # the shipped profiles' max_num_tokens
_MEASURE = """
import json, resource, sys, time, torch
from nemo_runtime.scheduler import ReferenceRuntime
checkpoint, length, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runtime = ReferenceRuntime.from_checkpoint(checkpoint, max_batch_size=1, max_num_tokens=chunk)
runtime.generate([1, 3, 4], max_new_tokens=1)
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # resets the peak (VmHWM) to the resident memory now: loading's transient copies are not counted
def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
loaded = peak_mib()
ids = torch.randint(1000, 131072, (length,), generator=torch.Generator().manual_seed(0)).tolist()
started = time.perf_counter()
runtime.generate(ids, max_new_tokens=1)
print(json.dumps({"ttft_s": time.perf_counter() - started, "peak_mib": peak_mib(), "loaded_mib": loaded}))
"""


def _checkpoint() -> Path:
    """The tiny model's FP8 checkpoint with 128k positions, built once under artifacts/bench/long-context."""
    from nemo_build.checkpoint import CheckpointOptions, build_checkpoint
    from nemo_build.tiny.model import TINY_CONFIG, random_tiny_model, save_model_dir
    from nemo_protocol.tekken import default_tekken_path

    model_dir, checkpoint = WORK / "tiny-model", WORK / "checkpoint-fp8"
    config = model_dir / "config.json"
    if not config.is_file() or json.loads(config.read_text())["max_position_embeddings"] < max(LENGTHS) + 1:
        save_model_dir(random_tiny_model(0), model_dir, default_tekken_path(), force=True)
    assert TINY_CONFIG["max_position_embeddings"] > max(LENGTHS)
    return build_checkpoint(model_dir, checkpoint, CheckpointOptions(device="cpu", calib_data="shipped")).out_dir


def _measure(checkpoint: Path, length: int, chunk: int) -> dict[str, float]:
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(checkpoint), str(length), str(chunk)],
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"{length} tokens, chunk {chunk}: {run.stderr[-2000:]}")
    result: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"  {length} tokens, chunk {chunk}: {result}", flush=True)
    return {"tokens": length, "chunk": chunk, **result}


def _request_sizes() -> list[dict[str, Any]]:
    """Per script: a REQUEST_TOKENS-token chat's JSON body (as the openai SDK sends it: non-ASCII escaped) and the
    time to render it into prompt ids (the chat template and Tekken, what the gateway does for each request)."""
    import random
    import time

    from nemo_protocol.chat_format import encode_chat
    from nemo_protocol.tekken import Tekkenizer, default_tekken_path

    tokenizer = Tekkenizer.from_file(default_tekken_path())
    sizes = []
    for script, sentences in SENTENCES.items():
        rng, pieces, count = random.Random(0), [], 0
        while count < REQUEST_TOKENS:
            piece = f"{rng.choice(sentences)} {rng.randrange(10**6)}. "
            pieces.append(piece)
            count += len(tokenizer.encode(piece))
        messages = [{"role": "user", "content": "".join(pieces)}]
        started = time.perf_counter()
        ids = encode_chat(tokenizer, messages)
        seconds = time.perf_counter() - started
        body = len(json.dumps({"model": "m", "messages": messages}).encode())
        sizes.append({"script": script, "tokens": len(ids), "body_bytes": body, "encode_s": seconds})
    return sizes


def power_law_exponent(xs: list[float], ys: list[float]) -> float:
    """k of the least-squares fit y = c·x^k (the slope of log y against log x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line y = slope·x + intercept."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum((a - mx) ** 2 for a in xs)
    return slope, my - slope * mx


def run() -> dict[str, Any]:
    longest = int(os.environ.get("NEMO_BENCH_LONG_MAX", max(LENGTHS)))
    checkpoint = _checkpoint()
    lengths = [length for length in LENGTHS if length <= longest]
    by_length = [_measure(checkpoint, length, DEFAULT_CHUNK) for length in lengths]
    by_chunk = [_measure(checkpoint, CHUNK_LENGTH, chunk) for chunk in CHUNKS if longest >= CHUNK_LENGTH]
    sizes = _request_sizes()
    growth = [m["peak_mib"] - m["loaded_mib"] for m in by_length]
    # past the fixed costs, where the quadratic term shows (all of them when fewer than two lengths reach 8k)
    tail = [m for m in by_length if m["tokens"] >= 8_000]
    tail = tail if len(tail) >= 2 else by_length
    ttft_exponent = power_law_exponent([m["tokens"] for m in tail], [m["ttft_s"] for m in tail])
    mib_per_1k, mib_at_zero = linear_fit([m["tokens"] / 1000 for m in by_length], growth)
    rows = [
        [f"{m['tokens']:,}", f"{m['ttft_s']:.2f}", f"{m['peak_mib']:.0f}", f"{g:.0f}"]
        for m, g in zip(by_length, growth, strict=True)
    ]
    chunk_rows = [
        [f"{m['chunk']:,}", f"{m['ttft_s']:.2f}", f"{m['peak_mib']:.0f}", f"{m['peak_mib'] - m['loaded_mib']:.0f}"]
        for m in by_chunk
    ]
    markdown = "\n".join(
        [
            "The CPU reference runtime prefilling one prompt (tiny NeMo-shaped model, FP8 weights and KV cache, 2 "
            "layers, 8 query / 2 KV heads, 128k positions), each length in a fresh process; TTFT is prefill plus "
            "the first token; peak RSS is the process's VmHWM while it ran (reset once the model was loaded). "
            f"Prefill chunk {DEFAULT_CHUNK:,} tokens (the profiles' max_num_tokens).",
            "",
            markdown_table(
                ["prompt tokens", "TTFT (s)", "peak RSS (MiB)", "RSS growth over the loaded model (MiB)"], rows
            ),
            "",
            f"Growth: TTFT ∝ length^**{ttft_exponent:.2f}** from {tail[0]['tokens']:,} tokens on (attention does "
            "prompt² work, every position attending to every earlier one); memory grows **linearly**, "
            f"{mib_per_1k:.2f} MiB per 1k tokens (least squares; {mib_at_zero:.0f} MiB at zero): the KV cache "
            "(512 bytes a position on this model) and chunk-sized activations, never a score matrix (which at 128k "
            "would be 128k² x 8 heads x 4 bytes = 512 GiB per layer).",
            "",
            f"Prefill chunk size (`max_num_tokens`) at {CHUNK_LENGTH:,} tokens:",
            "",
            markdown_table(["chunk (tokens)", "TTFT (s)", "peak RSS (MiB)", "RSS growth (MiB)"], chunk_rows),
            "",
            f"A {REQUEST_TOKENS:,}-token chat by script: its JSON body as the openai SDK sends it (non-ASCII escaped "
            "as \\uXXXX) against the gateway's 16 MiB default limit, and the time to render it into prompt ids "
            "(chat template + Tekken, done by the gateway on the direct path):",
            "",
            markdown_table(
                ["script", "prompt tokens", "body (MB)", "bytes per token", "render + encode (s)"],
                [
                    [
                        size["script"],
                        f"{size['tokens']:,}",
                        f"{size['body_bytes'] / 1e6:.2f}",
                        f"{size['body_bytes'] / size['tokens']:.1f}",
                        f"{size['encode_s']:.2f}",
                    ]
                    for size in sizes
                ],
            ),
        ]
    )
    return {
        "title": "Long prompts: TTFT and memory against prompt length (CPU runtime)",
        "markdown": markdown,
        "data": {
            "by_length": by_length,
            "by_chunk": by_chunk,
            "request_sizes": sizes,
            "ttft_exponent_from_8k": ttft_exponent,
            "rss_mib_per_1k_tokens": mib_per_1k,
        },
    }


if __name__ == "__main__":
    print(run()["markdown"])
