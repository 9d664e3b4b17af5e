"""Build-stage benchmark on the tiny NeMo-shaped models (CPU).

* ``nemo-build checkpoint --quant fp8 --verify`` wall time per phase (from the manifest) and the peak
  resident memory of the process, for the random and the trained tiny model;
* FP8-vs-bf16 agreement figures printed by ``--verify``;
* reference-runtime decode tokens/s at batch 1 and batch 8 (one decode step serves all sequences).

Run alone with ``python -m tests.bench.bench_build``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.timing import markdown_table

DECODE_TOKENS = 64
PROMPT = [1, 3, 22177, 4304, 1784, 1395, 1032, 4]


# runs the CLI, then prints the process's own peak RSS (KiB on Linux) as the last line
_MEASURED = (
    "import resource, sys\n"
    "from nemo_build.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def _nemo_build(*args: str) -> tuple[float, int]:
    """Run ``nemo-build`` in a fresh process; returns (wall seconds, peak resident KiB of that process)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURED, *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - started, int(done.stdout.strip().splitlines()[-1])


def _checkpoint(model_dir: Path, out: Path) -> dict[str, Any]:
    wall, peak_kib = _nemo_build(
        "checkpoint", "--model-dir", str(model_dir), "--out", str(out), "--device", "cpu", "--verify"
    )
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_kib / 1024),
        "timings_s": {k: round(v, 2) for k, v in manifest["timings"].items()},
        "calibration": manifest["calibration"],
        "verification": {c["name"]: c for c in manifest["verification"]},
    }


def _decode_tokens_per_s(checkpoint: Path, batch: int) -> float:
    from nemo_runtime.scheduler import ReferenceRuntime

    runtime = ReferenceRuntime.from_checkpoint(checkpoint, max_batch_size=batch)
    best = 0.0
    for _ in range(3):
        for i in range(batch):
            runtime.add_request(str(i), PROMPT, max_new_tokens=DECODE_TOKENS)
        runtime.step()  # prefill of every request: not part of the decode rate
        started, produced = time.perf_counter(), 0
        while runtime.has_work():
            produced += sum(len(o.new_token_ids) for o in runtime.step())
        best = max(best, produced / (time.perf_counter() - started))
    return best


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        root = Path(tmp)
        build_s = {
            "random": round(_nemo_build("tiny-model", "--out", str(root / "random"))[0], 1),
            "trained": round(_nemo_build("tiny-model", "--out", str(root / "trained"), "--trained")[0], 1),
        }
        checkpoints = {name: _checkpoint(root / name, root / f"{name}-fp8") for name in ("random", "trained")}
        decode = {b: round(_decode_tokens_per_s(root / "trained-fp8", b), 1) for b in (1, 8)}

    rows = []
    for name, c in checkpoints.items():
        fake = c["verification"]["checkpoint vs ModelOpt fake-quantized model"]
        bf16 = c["verification"]["quantized checkpoint vs unquantized model (greedy)"]
        rows.append(
            [
                name,
                c["timings_s"].get("calibration_s"),
                c["timings_s"].get("export_s"),
                c["wall_s"],
                c["peak_rss_mib"],
                f"{fake['relative_error']:.2e} / {fake['greedy_agreement']:.1%}",
                f"{bf16['greedy_agreement']:.1%}",
            ]
        )
    table = markdown_table(
        [
            "tiny model",
            "calibration s",
            "export s",
            "whole command s",
            "peak RSS MiB",
            "vs fake-quant: rel. error / greedy",
            "FP8 vs bf16 greedy",
        ],
        rows,
    )
    speed = markdown_table(
        ["batch", "decode tok/s (total)", "per sequence"],
        [[b, v, round(v / b, 1)] for b, v in decode.items()],
    )
    markdown = (
        "`nemo-build checkpoint --quant fp8 --kv-cache fp8 --device cpu --verify` on the tiny NeMo-shaped models "
        f"(default calibration set: {checkpoints['trained']['calibration']['samples']} samples). "
        "Agreement figures are `--verify`'s, over the first 8 calibration samples.\n\n"
        f"{table}\n\nReference runtime (FP8 checkpoint of the trained tiny model), {DECODE_TOKENS} decode steps "
        f"after the prefill, best of 3:\n\n{speed}\n\nBatch 8 decodes "
        f"{decode[8] / decode[1]:.1f}x the tokens per second of batch 1."
    )
    data = {"tiny_model_s": build_s, "checkpoint": checkpoints, "decode_tokens_per_s": decode}
    return {"title": "Build stage (tiny model, CPU)", "markdown": markdown, "data": data}


if __name__ == "__main__":
    result = run()
    print(result["markdown"])
