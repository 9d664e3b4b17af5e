"""``nemo-bench`` over several endpoints: requests in turn, and each level's spread over the servers, counted by the
benchmark (per endpoint) or by the servers themselves (``--spread-metrics-url``, Triton's success counter)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nemo_bench.cli import endpoints, main
from nemo_bench.metrics import LevelSummary, RequestRecord, summarize
from nemo_bench.report import console_table, spread_text
from nemo_bench.spread import completed, difference

CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}  # fmt: skip
USAGE = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}  # fmt: skip


class FakeServer:
    """An OpenAI-shaped SSE endpoint that also serves, at /metrics, the Triton counter of the requests it served."""

    def __init__(self) -> None:
        self.served = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                owner.served += 1
                body = b"".join(b"data: " + json.dumps(item).encode() + b"\n\n" for item in (CHUNK, USAGE))
                self._answer(body + b"data: [DONE]\n\n", "text/event-stream")

            def do_GET(self) -> None:
                text = (
                    "# TYPE nv_inference_request_success counter\n"
                    f'nv_inference_request_success{{model="tensorrt_llm",version="1"}} {owner.served}\n'
                    'nv_inference_request_success{model="chat",version="1"} 1000\n'
                )
                self._answer(text.encode(), "text/plain")

            def _answer(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def two_servers() -> Iterator[list[FakeServer]]:
    servers = [FakeServer(), FakeServer()]
    yield servers
    for server in servers:
        server.close()


def test_endpoints_are_comma_separated_unless_one_grpc_target_names_several() -> None:
    assert endpoints("http://a:8000, http://b:8000") == ["http://a:8000", "http://b:8000"]
    assert endpoints("h1:8001,h2:8001") == ["h1:8001", "h2:8001"]
    assert endpoints("ipv4:10.0.0.1:8001,10.0.0.2:8001") == ["ipv4:10.0.0.1:8001,10.0.0.2:8001"]
    assert endpoints("dns:///triton-headless:8001") == ["dns:///triton-headless:8001"]


def test_the_triton_counter_is_read_for_one_model_and_differenced() -> None:
    text = (
        'nv_inference_request_success{model="tensorrt_llm",version="1"} 30\n'
        'nv_inference_request_success{model="tensorrt_llm",version="2"} 2\n'
        'nv_inference_request_success{model="chat",version="1"} 5\n'
        'nv_inference_request_failure{model="tensorrt_llm",version="1"} 9\n'
    )
    assert (completed(text, "tensorrt_llm"), completed(text, "chat"), completed(text, "nope")) == (32, 5, 0)
    assert difference({"a": 10, "b": 4}, {"a": 25, "b": 19, "c": 1}) == {"a": 15, "b": 15, "c": 1}


def test_a_level_s_spread_and_its_departure_from_even() -> None:
    records = [RequestRecord(start=0, end=1, endpoint=name) for name in "abab" + "a"]
    level = summarize("concurrency", 2, records)
    assert level.spread == {"a": 3, "b": 2} and level.spread_deviation == pytest.approx(0.5 / 2.5)
    assert spread_text(level) == "a 3 / b 2 (±20%)"
    assert summarize("concurrency", 2, records, {"x": 4, "y": 4}).spread_deviation == 0
    assert summarize("concurrency", 2, [RequestRecord(start=0, end=1)]).spread == {}
    assert LevelSummary.from_dict(level.as_dict()) == level
    assert "spread" in console_table([level])


def test_several_http_urls_take_requests_in_turn(two_servers: list[FakeServer], tmp_path: Path) -> None:
    urls = ",".join(server.url for server in two_servers)
    argv = ["--http-url", urls, "--concurrency", "2", "--requests", "8", "--warmup", "2", "--no-plot",
            "--no-progress", "--out", str(tmp_path), "--input-tokens", "8", "--output-tokens", "1"]  # fmt: skip
    assert main(argv) == 0
    document = json.loads((tmp_path / "results.json").read_text())
    (level,) = document["levels"]
    assert level["spread"] == {server.url: 4 for server in two_servers}
    assert document["settings"]["endpoints"] == [server.url for server in two_servers]
    assert sum(server.served for server in two_servers) == 8 + 2 + 2  # measured, warm-up, the two probes


def test_the_spread_behind_the_endpoints_comes_from_the_servers_counters(
    two_servers: list[FakeServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, other = two_servers
    other.served = 7  # requests it served before the benchmark
    metrics = ",".join(f"{server.url}/metrics" for server in two_servers)
    argv = ["--http-url", gateway.url, "--spread-metrics-url", metrics, "--concurrency", "1,2", "--requests", "6",
            "--warmup", "1", "--no-plot", "--no-progress", "--out", str(tmp_path), "--input-tokens", "8",
            "--output-tokens", "1"]  # fmt: skip
    assert main(argv) == 0
    levels = json.loads((tmp_path / "results.json").read_text())["levels"]
    names = [url.removeprefix("http://") for url in (gateway.url, other.url)]
    # Only the measured requests of each level count (not the probes, not the warm-up), all on "gateway".
    assert [level["spread"] for level in levels] == [{names[0]: 6, names[1]: 0}] * 2
    assert "(±100%)" in capsys.readouterr().out


def test_an_unreadable_spread_endpoint_stops_the_run(two_servers: list[FakeServer], tmp_path: Path) -> None:
    argv = ["--http-url", two_servers[0].url, "--spread-metrics-url", "http://127.0.0.1:9/metrics",
            "--requests", "2", "--concurrency", "1", "--no-plot", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1


def test_a_benchmark_run_alone_is_merged_into_the_report_in_place() -> None:
    from tests.bench.run import merge

    report = "# Benchmarks\n\nheader\n\n## A\n\nold a\n\n_bench_a took 1 s._\n\n## GPU figures (H100)\n\ngpu\n"
    replaced = merge(report, {"bench_a": "## A\n\nnew a\n\n_bench_a took 2 s._"})
    assert replaced == report.replace("old a", "new a").replace("1 s", "2 s")
    added = merge(report, {"bench_b": "## B\n\nb\n\n_bench_b took 3 s._"})
    assert added.index("## A") < added.index("## B") < added.index("## GPU figures")
    assert merge(report, {}) == report
