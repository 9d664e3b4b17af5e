"""The per-level figures follow genai-perf's definitions; percentiles agree with numpy's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nemo_bench.metrics import RequestRecord, percentile, summarize


@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=200),
    st.sampled_from([50, 90, 99]),
)
def test_percentile_matches_numpy(values: list[float], q: int) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def _ok(start: float, first: float, end: float, tokens: int, prompt: int = 10) -> RequestRecord:
    return RequestRecord(start=start, first_token=first, end=end, output_tokens=tokens, input_tokens=prompt)


def test_summary_of_a_level() -> None:
    records = [
        _ok(0.0, 0.1, 1.0, 10),  # TTFT 100 ms, ITL 0.9 s / 9 = 100 ms, e2e 1 s
        _ok(0.5, 0.8, 2.0, 4),  # TTFT 300 ms, ITL 1.2 s / 3 = 400 ms, e2e 1.5 s
        RequestRecord(start=1.0, end=1.2, error_type="unavailable", error_message="Triton is unreachable"),
        RequestRecord(start=1.0, end=1.1, error_type="unavailable", error_message="Triton is unreachable"),
        RequestRecord(start=1.5, end=1.6, error_type="bad_request", error_message="messages: is required"),
    ]
    summary = summarize("concurrency", 4, records)
    assert (summary.requests, summary.successes) == (5, 2)
    assert summary.errors == {"unavailable": 2, "bad_request": 1}
    assert summary.first_errors == ["unavailable: Triton is unreachable", "bad_request: messages: is required"]
    assert summary.duration_s == pytest.approx(2.0)
    assert summary.request_throughput == pytest.approx(1.0)
    assert summary.output_token_throughput == pytest.approx(7.0)
    assert summary.mean_output_tokens == pytest.approx(7.0)
    assert summary.mean_input_tokens == pytest.approx(10.0)
    assert summary.ttft_ms["p50"] == pytest.approx(200.0)
    assert summary.itl_ms["mean"] == pytest.approx(250.0)
    assert summary.e2e_ms["p99"] == pytest.approx(1000 + 500 * 0.99)


def test_single_token_answers_have_no_inter_token_latency() -> None:
    summary = summarize("rate", 2.0, [_ok(0.0, 0.2, 0.2, 1)])
    assert summary.ttft_ms["p50"] == pytest.approx(200.0)
    assert math.isnan(summary.itl_ms["p50"])


def test_a_level_where_everything_failed_has_no_latencies() -> None:
    summary = summarize("concurrency", 1, [RequestRecord(start=0, end=1, error_type="timeout", error_message="x")])
    assert summary.successes == 0
    assert summary.request_throughput == 0.0
    assert math.isnan(summary.e2e_ms["p50"])
