"""A 130,000-token chat through the whole stack on CPU: the openai SDK → nemo-gateway (a process) → Triton → the
reference runtime, on a repository rendered for 128k. It completes, its usage is mistral-common's count, and the
engine's peak resident memory is reported (``artifacts/reliability/long-context.json``) and bounded.

``NEMO_RELIABILITY=full`` (``make test-reliability``): 130,000 tokens, a few minutes on 2 cores (attention's time
grows with the square of the prompt; its memory, linearly). Quick (``make test``): the 30,122 tokens that failed
with an allocator error before chunked prefill."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from nemo_ops.launcher import TritonServer
from nemo_protocol.tekken import default_tekken_path
from tests.integration.long_context import (
    engine_peak_rss_mib,
    haystack,
    oracle_prompt_tokens,
    render_long_repository,
    reset_engine_peak_rss,
)
from tests.reliability.conftest import FULL
from tests.reliability.servers import CACHE, SERVED_NAME, Gateway

PROMPT_TOKENS = 130_000 - 64 if FULL else 30_122


@pytest.fixture(scope="module")
def long_stack(
    reliability_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonServer, Gateway]]:
    workdir = tmp_path_factory.mktemp("long-context")
    repository = render_long_repository(
        reliability_checkpoint, default_tekken_path(), workdir / "repository", max_batch_size=2
    )
    with (
        TritonServer(repository, log_path=workdir / "tritonserver.log") as triton,
        # a 130,000-token prefill takes minutes on 2 loaded cores: past the other tests' 120 s
        Gateway(triton.grpc_url, log_path=workdir / "gateway.log", request_timeout_s=1800) as gateway,
    ):
        yield triton, gateway


def test_a_long_chat_completes_with_exact_usage_and_its_peak_memory_reported(
    long_stack: tuple[TritonServer, Gateway],
) -> None:
    triton, gateway = long_stack
    messages = [{"role": "user", "content": haystack(PROMPT_TOKENS - 32) + "\nWhat is the capital of France?"}]
    expected = oracle_prompt_tokens(messages)
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=1800)
    assert triton.pid is not None
    reset_engine_peak_rss(triton.pid)
    idle_mib = engine_peak_rss_mib(triton.pid)
    started = time.monotonic()
    answer = sdk.chat.completions.create(model=SERVED_NAME, messages=messages, max_tokens=8)  # type: ignore[arg-type]
    seconds = time.monotonic() - started
    peak_mib = engine_peak_rss_mib(triton.pid)
    report = {
        "prompt_tokens": expected,
        "seconds": round(seconds, 1),
        "engine_peak_rss_mib": round(peak_mib),
        "engine_peak_rss_before_mib": round(idle_mib),
        "body_bytes": len(json.dumps({"messages": messages})),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "long-context.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nlong context: {json.dumps(report)}")
    assert answer.usage is not None and answer.usage.prompt_tokens == expected >= PROMPT_TOKENS - 32
    assert answer.choices[0].finish_reason in ("stop", "length")
    # the KV cache (512 bytes a position on the tiny model: 64 MiB at 128k) and chunk-sized activations; one
    # layer's score matrix would be prompt² x 8 heads x 4 bytes (29 GB at 30k, 540 GB at 130k)
    assert peak_mib - idle_mib < 1024, report
