"""Client and gateway overhead, side by side against one CPU Triton serving the tiny model.

* ``nemo_client`` streaming vs raw ``tritonclient.grpc`` streaming of the same ``chat`` request (one
  client object each, created once): the difference per streamed chunk is what the library costs.
* the official ``openai`` SDK through ``nemo-gateway`` vs ``nemo_client`` direct: time to first token
  at p50 and p99; the difference is what the HTTP hop costs.

Requests alternate between the two sides so that drift on the machine hits both alike.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import tritonclient.grpc as grpcclient

from nemo_client import NemoClient
from nemo_ops.launcher import TritonServer, free_port
from tests.bench.timing import markdown_table
from tests.reliability.servers import SERVED_NAME, Gateway, render_cpu_repository, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TOKENS = 48
ROUNDS = 30
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
BODY = {"messages": MESSAGES, "max_tokens": TOKENS, "temperature": 0, "nvext": {"ignore_eos": True}}

Timing = tuple[float, float, int]
"""(seconds to the first content chunk, seconds in all, chunks)"""


def _raw_tritonclient(client: grpcclient.InferenceServerClient) -> Timing:
    responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
    request = grpcclient.InferInput("request", [1], "BYTES")
    request.set_data_from_numpy(np.array([json.dumps({**BODY, "stream": True}).encode()], dtype=object))
    start = time.perf_counter()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    client.async_stream_infer("chat", [request], enable_empty_final_response=True)
    first, chunks = None, 0
    while True:
        result, error = responses.get(timeout=120)
        if error is not None:
            raise RuntimeError(error)
        raw = result.as_numpy("response")
        if raw is not None:
            event = json.loads(raw.reshape(-1)[0])
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                chunks += 1
                first = first or time.perf_counter() - start
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    client.stop_stream()
    return first or 0.0, time.perf_counter() - start, chunks


def _chunks(open_stream: Callable[[], Any]) -> Timing:
    start = time.perf_counter()
    first, chunks = None, 0
    for chunk in open_stream():
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            first = first or time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start, chunks


@contextlib.contextmanager
def _http_floor_server() -> Iterator[str]:
    """A uvicorn process serving tests/bench/http_floor_app.py, like the gateway runs in its own process."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.bench.http_floor_app:app", "--port", str(port)]
    process = subprocess.Popen([*command, "--log-level", "warning"], cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _alternate(sides: dict[str, Callable[[], Timing]]) -> dict[str, list[Timing]]:
    for call in sides.values():  # warm up each path once
        call()
    results: dict[str, list[Timing]] = {name: [] for name in sides}
    for _ in range(ROUNDS):
        for name, call in sides.items():
            results[name].append(call())
    return results


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-client-") as work:
        repository = render_cpu_repository(tiny_checkpoint(), Path(work) / "repository")
        with (
            TritonServer(repository, log_path=Path(work) / "tritonserver.log") as triton,
            Gateway(triton.grpc_url, log_path=Path(work) / "gateway.log") as gateway,
            NemoClient(triton.grpc_url, timeout=120) as nemo,
        ):
            raw = grpcclient.InferenceServerClient(triton.grpc_url)
            sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
            extra = {"nvext": {"ignore_eos": True}}
            params = {"messages": MESSAGES, "max_tokens": TOKENS, "temperature": 0, "stream": True}
            library = _alternate(
                {
                    "tritonclient": lambda: _raw_tritonclient(raw),
                    "nemo_client": lambda: _chunks(lambda: nemo.chat.completions.create(**params, extra_body=extra)),
                }
            )
            hop = _alternate(
                {
                    "nemo_client": lambda: _chunks(lambda: nemo.chat.completions.create(**params, extra_body=extra)),
                    "gateway": lambda: _chunks(
                        lambda: sdk.chat.completions.create(model=SERVED_NAME, **params, extra_body=extra)
                    ),
                }
            )
            raw.close()
        with _http_floor_server() as floor_url:
            floor_sdk = openai.OpenAI(base_url=f"{floor_url}/v1", api_key="unused", max_retries=0)
            floor = _alternate(
                {"floor": lambda: _chunks(lambda: floor_sdk.chat.completions.create(model="floor", **params))}
            )["floor"]
    total = {name: statistics.median(t[1] for t in runs) for name, runs in library.items()}
    chunks = statistics.median(t[2] for t in library["nemo_client"])
    per_chunk_us = 1e6 * (total["nemo_client"] - total["tritonclient"]) / chunks
    ttft = {name: [t[0] for t in runs] for name, runs in hop.items()}
    gateway_p50 = _ms(ttft["gateway"], 0.5) - _ms(ttft["nemo_client"], 0.5)
    gateway_p99 = _ms(ttft["gateway"], 0.99) - _ms(ttft["nemo_client"], 0.99)
    markdown = "\n\n".join(
        [
            f"One CPU Triton (tiny model), streamed `chat` requests of exactly {TOKENS} tokens, {ROUNDS} rounds, "
            "the two sides of each comparison alternating. `python -m tests.bench.run bench_client` runs it alone.",
            markdown_table(
                ["client library", "median ms per request", "chunks", "overhead per chunk vs tritonclient"],
                [
                    ["raw tritonclient.grpc stream", round(1000 * total["tritonclient"], 2), chunks, "—"],
                    ["nemo_client stream", round(1000 * total["nemo_client"], 2), chunks, f"{per_chunk_us:.0f} µs"],
                ],
            ),
            markdown_table(
                ["path", "TTFT p50 ms", "TTFT p99 ms"],
                [
                    [
                        "nemo_client → Triton (gRPC)",
                        round(_ms(ttft["nemo_client"], 0.5), 2),
                        round(_ms(ttft["nemo_client"], 0.99), 2),
                    ],
                    [
                        "openai SDK → nemo-gateway → Triton",
                        round(_ms(ttft["gateway"], 0.5), 2),
                        round(_ms(ttft["gateway"], 0.99), 2),
                    ],
                    ["gateway adds", f"{gateway_p50:.2f}", f"{gateway_p99:.2f}"],
                    [
                        "floor: openai SDK → minimal FastAPI SSE endpoint (no Triton)",
                        round(_ms([t[0] for t in floor], 0.5), 2),
                        round(_ms([t[0] for t in floor], 0.99), 2),
                    ],
                ],
            ),
            "Target: the gateway adds under 2 ms at p50. The floor row is the same SDK against an endpoint that "
            "answers at once: what HTTP, uvicorn and the SDK cost on this machine before the gateway does anything.",
        ]
    )
    return {
        "title": "Client and gateway overhead",
        "markdown": markdown,
        "data": {
            "median_request_ms": {k: 1000 * v for k, v in total.items()},
            "chunks": chunks,
            "nemo_client_overhead_per_chunk_us": per_chunk_us,
            "ttft_ms": {k: {"p50": _ms(v, 0.5), "p99": _ms(v, 0.99)} for k, v in ttft.items()},
            "gateway_adds_ms": {"p50": gateway_p50, "p99": gateway_p99},
            "http_floor_ttft_ms": {"p50": _ms([t[0] for t in floor], 0.5), "p99": _ms([t[0] for t in floor], 0.99)},
        },
    }


if __name__ == "__main__":
    print(run()["markdown"])
