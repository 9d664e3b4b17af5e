"""Long prompts through the whole stack: the openai SDK → nemo-gateway → Triton → the CPU reference runtime, on a
repository rendered for 128k (max_input_len 130000, max_seq_len 131072, the tiny model's 128k positions). A chat of
~20,000 tokens (past the ~15k where attention's score matrix exhausted this machine before chunked prefill)
completes with usage equal to mistral-common's count and the engine's peak memory far below what a score matrix
would take; a prompt past max_input_len is a 400 naming the limit and the count; a request that cannot fit the KV
cache now waits for room and completes, while the request in flight goes on undisturbed (the repository refuses a KV
budget below max_seq_len, so nothing the length limits let through could never fit). The 130,000-token chat runs in
``make test-reliability`` (tests/reliability)."""

from __future__ import annotations

import resource
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from nemo_client.triton_transport import error_from_message
from nemo_gateway.settings import GatewaySettings
from nemo_ops.launcher import TritonServer
from nemo_ops.stub_supervisor import stub_processes
from nemo_protocol.errors import ENGINE_OUT_OF_MEMORY, UnavailableError
from tests.integration.gateways import running_gateway
from tests.integration.long_context import (
    MAX_INPUT_LEN,
    MAX_SEQ_LEN,
    SERVED,
    engine_peak_rss_mib,
    haystack,
    oracle_prompt_tokens,
    render_long_repository,
    reset_engine_peak_rss,
)
from tests.integration.triton_calls import StreamingCall

KV_CACHE_TOKENS = MAX_SEQ_LEN  # the repository's max_tokens_in_paged_kv_cache: one longest sequence
LONG_PROMPT_TOKENS = 20_000


@pytest.fixture(scope="module")
def long_triton(
    tmp_path_factory: pytest.TempPathFactory, serving_checkpoint: Path, tekken_path: Path
) -> Iterator[TritonServer]:
    repository = render_long_repository(
        serving_checkpoint, tekken_path, tmp_path_factory.mktemp("long") / "repository",
        max_num_tokens=4096, max_tokens_in_paged_kv_cache=KV_CACHE_TOKENS,
    )  # fmt: skip
    with TritonServer(repository) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(long_triton: TritonServer) -> Iterator[openai.OpenAI]:
    with running_gateway(GatewaySettings(triton_url=long_triton.grpc_url, served_model_name=SERVED)) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


def question(tokens: int, seed: int = 0) -> list[dict[str, str]]:
    return [{"role": "user", "content": haystack(tokens, seed) + "\nWhat is the capital of France?"}]


def test_a_20k_token_chat_completes_with_exact_usage_in_bounded_memory(
    sdk: openai.OpenAI, long_triton: TritonServer
) -> None:
    messages = question(LONG_PROMPT_TOKENS)
    assert long_triton.pid is not None
    reset_engine_peak_rss(long_triton.pid)
    before = engine_peak_rss_mib(long_triton.pid)
    answer = sdk.chat.completions.create(model=SERVED, messages=messages, max_tokens=8)  # type: ignore[arg-type]
    assert answer.usage is not None and answer.usage.prompt_tokens == oracle_prompt_tokens(messages)
    assert answer.usage.prompt_tokens > LONG_PROMPT_TOKENS and answer.choices[0].finish_reason in ("stop", "length")
    # the KV cache (512 bytes a position: 10 MiB) and chunk-sized activations; one layer's score matrix of this
    # prompt would be 20k x 20k x 8 heads x 4 bytes = 12.8 GB
    assert engine_peak_rss_mib(long_triton.pid) - before < 512


def test_a_prompt_past_max_input_len_is_a_400_naming_the_limit_and_the_count(sdk: openai.OpenAI) -> None:
    messages = question(MAX_INPUT_LEN + 10)
    count = oracle_prompt_tokens(messages)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model=SERVED, messages=messages, max_tokens=8)  # type: ignore[arg-type]
    assert refused.value.status_code == 400
    message = str(refused.value.body)
    assert f"the prompt is {count} tokens" in message and f"at most {MAX_INPUT_LEN} (max_input_len)" in message


def test_a_request_that_cannot_fit_the_kv_cache_now_waits_and_the_stream_in_flight_goes_on(
    sdk: openai.OpenAI,
) -> None:
    short = [{"role": "user", "content": "What is the capital of France?"}]
    # greedy (the default temperature is 1.0, unseeded): the waiting answer must equal this one token for token
    alone = sdk.chat.completions.create(model=SERVED, messages=short, max_tokens=2000, temperature=0)  # type: ignore[arg-type]
    # a stream that may fill all but ~60 of the cache's positions (it reserves prompt + max_tokens) until it is closed
    stream = sdk.chat.completions.create(
        model=SERVED, messages=short, max_tokens=KV_CACHE_TOKENS - 64, stream=True,
        extra_body={"nvext": {"ignore_eos": True}},
    )  # type: ignore[call-overload]  # fmt: skip
    chunks = iter(stream)
    next(chunks)
    waiting: dict[str, object] = {}
    waiter = threading.Thread(
        target=lambda: waiting.update(
            answer=sdk.chat.completions.create(model=SERVED, messages=short, max_tokens=2000, temperature=0)  # type: ignore[arg-type]
        )
    )
    waiter.start()  # 2,000 more positions do not fit: it waits for room
    received = [next(chunks) for _ in range(30)]  # the stream in flight goes on
    assert all(chunk.choices and chunk.choices[0].delta.content is not None for chunk in received)
    assert waiter.is_alive()
    stream.close()  # its positions are given back: the waiting request runs
    waiter.join(timeout=120)
    assert not waiter.is_alive()
    assert waiting["answer"].choices[0].message.content == alone.choices[0].message.content  # type: ignore[attr-defined]


def test_a_request_the_engine_has_no_memory_for_ends_alone_and_the_server_goes_on(
    sdk: openai.OpenAI, long_triton: TritonServer
) -> None:
    """The engine's address space is capped (RLIMIT_AS, 512 MiB above what it holds) and a request asks for the
    context logits of a 3,000-token prompt (3,000 x 131,072 float32: 1.5 GiB): its allocation fails. That request
    ends with an error saying the engine ran out of memory (a 503 to retry later, not a server bug); the stream in
    flight goes on, and the next request is served."""
    assert long_triton.pid is not None
    (stub,) = stub_processes(long_triton.pid)["tensorrt_llm"]
    short = [{"role": "user", "content": "What is the capital of France?"}]
    stream = sdk.chat.completions.create(
        model=SERVED, messages=short, max_tokens=2000, stream=True, extra_body={"nvext": {"ignore_eos": True}}
    )  # type: ignore[call-overload]
    chunks = iter(stream)
    next(chunks)
    soft, hard = resource.prlimit(stub, resource.RLIMIT_AS)
    size = int(
        next(
            line for line in Path(f"/proc/{stub}/status").read_text().splitlines() if line.startswith("VmSize:")
        ).split()[1]
    )
    resource.prlimit(stub, resource.RLIMIT_AS, ((size + 512 * 1024) * 1024, hard))
    try:
        prompt = np.arange(1000, 4000, dtype=np.int32)[None]
        call = StreamingCall(
            long_triton.grpc_url, "tensorrt_llm",
            {"input_ids": prompt, "input_lengths": np.array([[prompt.shape[1]]], dtype=np.int32),
             "request_output_len": np.array([[4]], dtype=np.int32), "streaming": np.array([[True]]),
             "return_context_logits": np.array([[True]])},
        )  # fmt: skip
        failed = call.finish()
        received = [next(chunks) for _ in range(30)]  # the stream in flight went on meanwhile
    finally:
        resource.prlimit(stub, resource.RLIMIT_AS, (soft, hard))
    stream.close()
    assert failed.error is not None and ENGINE_OUT_OF_MEMORY in failed.error, failed.error
    assert "prefilling the 3000-token prompt" in failed.error and "DefaultCPUAllocator" in failed.error
    assert isinstance(error_from_message(failed.error), UnavailableError)  # what clients make of it: 503
    assert all(chunk.choices and chunk.choices[0].delta.content is not None for chunk in received)
    answer = sdk.chat.completions.create(model=SERVED, messages=short, max_tokens=16, temperature=0)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "The capital of France is Paris."


def test_a_body_past_grpcs_default_4_mib_reaches_the_chat_model(long_triton: TritonServer) -> None:
    """On the chat-model path the body travels to Triton as one gRPC message: 6 MiB (a 128k-token prompt in Arabic is
    2.4 MB) passes the gateway's client and Triton's server limits, and the chat model itself answers it (here, a 400
    naming the field it refuses, not a transport error)."""
    settings = GatewaySettings(triton_url=long_triton.grpc_url, served_model_name=SERVED, direct=False)
    with running_gateway(settings) as base:
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(
                model=SERVED, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, user="u" * (6 * 2**20)
            )
    assert refused.value.param == "user"
    assert "user" in str(refused.value.body) and "256" in str(refused.value.body)
