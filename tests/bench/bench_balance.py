"""Scale-out behind one gateway: one and two stand-in Triton servers, side by side, with ``nemo-bench``.

Two Triton servers serve one stand-in repository (``--target stand-in``: the engine's tensors and in-flight batching,
no model, :data:`TOKENS_PER_S` tokens/s per stream, a batch of :data:`MAX_BATCH_SIZE`), so one server carries at most
``MAX_BATCH_SIZE x TOKENS_PER_S`` tokens/s and queues the rest. Two ``nemo-gateway`` processes: one in front of the
first server, one in front of both (``--triton-url ipv4:A,B``, ``--triton-lb-policy round_robin``, the default).
``nemo-bench --http-url <gateway> --spread-metrics-url <both servers' metrics>`` measures each, and reads each
server's ``nv_inference_request_success{model="tensorrt_llm"}`` around every level: the spread of its requests.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from nemo_bench.cli import main as nemo_bench
from nemo_bench.metrics import LevelSummary
from nemo_build.repository import TEMPLATES_DIR, RepositorySettings, render_repository
from nemo_ops.launcher import TritonServer
from nemo_protocol.tekken import default_tekken_path
from tests.bench.timing import markdown_table
from tests.reliability.servers import SERVED_NAME, Gateway

TOKENS_PER_S = 100.0
MAX_BATCH_SIZE = 4
CONCURRENCY = (4, 8, 16)
INPUT_TOKENS, OUTPUT_TOKENS = 64, 64
REQUESTS, WARMUP = 32, 4
HEADER = ["Tritons", "concurrency", "ok/sent", "output tok/s", "TTFT p50 ms", "e2e p50 ms", "requests on Triton 1 / 2"]


def _bench(gateway: Gateway, metrics_urls: list[str], out: Path) -> list[LevelSummary]:
    argv = [
        "--http-url", gateway.url, "--spread-metrics-url", ",".join(metrics_urls), "--model", SERVED_NAME,
        "--concurrency", ",".join(map(str, CONCURRENCY)), "--requests", str(REQUESTS), "--warmup", str(WARMUP),
        "--input-tokens", str(INPUT_TOKENS), "--output-tokens", str(OUTPUT_TOKENS), "--ignore-eos", "on",
        "--no-plot", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        status = nemo_bench(argv)
    if status != 0:
        raise RuntimeError(f"nemo-bench failed ({status}): {printed.getvalue()}")
    document = json.loads((out / "results.json").read_text())
    return [LevelSummary.from_dict(level) for level in document["levels"]]


def run() -> dict[str, Any]:
    tekken = default_tekken_path()
    with tempfile.TemporaryDirectory(prefix="bench-balance-") as work_dir:
        work = Path(work_dir)
        settings = RepositorySettings(
            target="stand-in", model_dir=tekken, max_batch_size=MAX_BATCH_SIZE, max_input_len=512,
            max_seq_len=1024, served_model_name=SERVED_NAME, stand_in_tokens_per_s=TOKENS_PER_S,
        )  # fmt: skip
        repository = work / "repository"
        render_repository(TEMPLATES_DIR, settings, tekken, repository)
        servers = [TritonServer(repository, log_path=work / f"triton-{i}.log") for i in (1, 2)]
        try:
            for server in servers:
                server.start()
            for server in servers:
                server.wait_ready()
            metrics = [f"http://{s.host}:{s.ports.metrics}/metrics" for s in servers]
            names = {f"{s.host}:{s.ports.metrics}": f"Triton {i}" for i, s in enumerate(servers, 1)}
            results: dict[int, list[LevelSummary]] = {}
            for count, target in ((1, servers[0].grpc_url), (2, "ipv4:" + ",".join(s.grpc_url for s in servers))):
                with Gateway(target, log_path=work / f"gateway-{count}.log") as gateway:
                    results[count] = _bench(gateway, metrics, work / f"bench-{count}")
        finally:
            for server in servers:
                server.stop()

    def spread(level: LevelSummary) -> str:
        return " / ".join(str(level.spread.get(name, 0)) for name in names)

    rows, ratios = [], []
    for count, levels in results.items():
        for level in levels:
            rows.append([
                count, int(level.level), f"{level.successes}/{level.requests}", round(level.output_token_throughput),
                round(level.ttft_ms["p50"]), round(level.e2e_ms["p50"]), spread(level),
            ])  # fmt: skip
    for one, two in zip(results[1], results[2], strict=True):
        ratios.append([int(one.level), round(two.output_token_throughput / one.output_token_throughput, 2)])
    capacity = MAX_BATCH_SIZE * TOKENS_PER_S
    markdown = "\n\n".join(
        [
            f"Two Triton servers on one stand-in repository (no model: {TOKENS_PER_S:g} tokens/s per stream, a batch "
            f"of {MAX_BATCH_SIZE}, so one server carries at most {capacity:g} output tokens/s and queues the rest), "
            "and one `nemo-gateway` in front of the first only, then one in front of both (`--triton-url "
            "ipv4:A,B`, `--triton-lb-policy round_robin`, the default). `nemo-bench --http-url <gateway> "
            "--spread-metrics-url <both Tritons' /metrics>` sends "
            f"{REQUESTS} measured requests per level after {WARMUP} warm-up ({INPUT_TOKENS}-token prompts, exactly "
            f"{OUTPUT_TOKENS} output tokens); the spread is each Triton's own count of the level's measured requests "
            "(`nv_inference_request_success` of `tensorrt_llm`). `python -m tests.bench.run bench_balance` runs it "
            "alone.",
            markdown_table(HEADER, rows),
            markdown_table(["concurrency", "2 Tritons ÷ 1: output tok/s"], ratios),
        ]
    )
    return {
        "title": "Scale-out: one and two stand-in Tritons behind one gateway (nemo-bench)",
        "markdown": markdown,
        "data": {str(count): [level.as_dict() for level in levels] for count, levels in results.items()},
    }


if __name__ == "__main__":
    print(json.dumps(run()["data"], indent=2, default=str))
