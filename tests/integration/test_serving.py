"""The serving stack on a real Triton (CPU): ensemble, chat, tool calls, errors, cancellation, concurrency.

Every request goes over gRPC to the bundled tritonserver, through the python models, to the reference
runtime executing the tiny trained model's FP8 checkpoint: no part of the path is simulated.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_ops.launcher import TritonServer
from nemo_protocol.tekken import Tekkenizer
from tests.integration.conftest import MAX_BATCH_SIZE, MAX_INPUT_LEN, MAX_SEQ_LEN
from tests.integration.triton_calls import (
    BatchMetrics,
    StreamingCall,
    chat,
    chat_inputs,
    ensemble_inputs,
    infer,
    stream,
)

WEATHER_TOOLS = [WEATHER_TOOL]  # the tool the tiny model was trained with
SAMPLED = {"temperature": 1.0, "top_k": 40, "seed": 1234}


@pytest.fixture(scope="module")
def batch_metrics(triton: TritonServer) -> BatchMetrics:
    return BatchMetrics(triton.host, triton.ports.metrics)


@pytest.fixture(scope="module")
def tok(tekken_path: Path) -> Tekkenizer:
    return Tekkenizer.from_file(tekken_path)


def ask(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **fields}


def completion_text(events: list[dict[str, Any]]) -> str:
    assert len(events) == 1 and events[0]["object"] == "chat.completion", events
    return events[0]["choices"][0]["message"]["content"]


def streamed_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])


# ----- ensemble -------------------------------------------------------------------------------------------
def test_preprocessing_encodes_multibyte_prompts_as_the_tokenizer_does(url: str, tok: Tekkenizer) -> None:
    text = "天气 🌦️ الطقس naïve"
    out = infer(url, "preprocessing", {**ensemble_inputs(text, 4), "stop_words": np.array([[b"stop"]], dtype=object)})
    assert out["input_ids"][0].tolist() == tok.encode(text, bos=True)
    assert out["stop_words_list"][0].tolist() == [tok.encode("stop"), [len(tok.encode("stop"))]]


def test_ensemble_streams_the_same_text_it_returns_whole(url: str) -> None:
    prompt = "你好，世界 🙂 مرحبا"  # untrained: min_tokens keeps the model from ending at once
    whole = stream(url, "ensemble", ensemble_inputs(prompt, 24, stream=False, min_tokens=24, **SAMPLED))
    streamed = stream(url, "ensemble", ensemble_inputs(prompt, 24, stream=True, min_tokens=24, **SAMPLED))
    assert whole.error is None and streamed.error is None
    [text] = whole.texts("text_output")
    chunks = streamed.texts("text_output")
    assert len(chunks) > 1 and "".join(chunks) == text
    # Every chunk is whole characters: a replacement character only where the full text has one too.
    assert sum(chunk.count("\ufffd") for chunk in chunks) == text.count("\ufffd")


def test_ensemble_stop_words_end_the_text(url: str, tok: Tekkenizer) -> None:
    free = stream(url, "ensemble", ensemble_inputs("Hello", 12)).texts("text_output")[0]
    ids = tok.encode(free)
    stop = tok.decode(ids[3:5])
    stopped = stream(url, "ensemble", ensemble_inputs("Hello", 12, stop_words=[stop])).texts("text_output")[0]
    # the text ends with the stop word's first occurrence (the tiny model repeats itself: maybe before ids[3:5])
    first_end = next(end for end in range(2, len(ids) + 1) if ids[end - 2 : end] == ids[3:5])
    assert stopped == tok.decode(ids[:first_end]) and len(stopped) < len(free)


# ----- chat --------------------------------------------------------------------------------------------------
def test_chat_answers_from_the_trained_model(url: str) -> None:
    assert completion_text(chat(url, ask("What is the capital of France?", temperature=0))) == (
        "The capital of France is Paris."
    )


def test_chat_stream_equals_the_completion_for_the_same_seed(url: str) -> None:
    body = ask("你好", seed=7, temperature=0.8, max_tokens=40)
    whole = completion_text(chat(url, body))
    events = chat(url, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [e["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert all(piece and "\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == whole
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert events[-1]["usage"]["completion_tokens"] > 0


def test_chat_multibyte_answers_are_intact_in_every_chunk(url: str) -> None:
    for question, answer in (("你好", "你好！有什么可以帮你的吗？"), ("Привет", "Привет! Чем могу помочь?")):
        events = chat(url, ask(question, temperature=0, stream=True))
        pieces = [e["choices"][0]["delta"].get("content") or "" for e in events[1:-1]]
        assert "".join(pieces) == answer
        assert all("\ufffd" not in piece for piece in pieces)


def test_max_tokens_finishes_with_length(url: str) -> None:
    events = chat(url, ask("What is the capital of France?", temperature=0, max_tokens=3))
    assert events[0]["choices"][0]["finish_reason"] == "length"
    assert events[0]["usage"]["completion_tokens"] == 3


def test_stop_strings_cut_the_answer(url: str) -> None:
    whole = chat(url, ask("What is the capital of France?", temperature=0, stop=["France"]))
    assert completion_text(whole) == "The capital of "
    assert whole[0]["choices"][0]["finish_reason"] == "stop"
    streamed = chat(url, ask("What is the capital of France?", temperature=0, stop="France", stream=True))
    assert streamed_text(streamed) == "The capital of "


def test_tool_call_then_tool_result_conversation(url: str) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    events = chat(url, {"messages": question, "tools": WEATHER_TOOLS, "temperature": 0})
    choice = events[0]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}

    streamed = chat(url, {"messages": question, "tools": WEATHER_TOOLS, "temperature": 0, "stream": True})
    deltas = [d["tool_calls"][0] for e in streamed if e["choices"] and "tool_calls" in (d := e["choices"][0]["delta"])]
    assert [d["function"]["name"] for d in deltas] == ["get_weather"]
    assert streamed[-1]["choices"][0]["finish_reason"] == "tool_calls"

    result = {"role": "tool", "tool_call_id": call["id"], "content": json.dumps({"conditions": "sunny", "celsius": 18})}
    follow_up = chat(
        url, {"messages": [*question, choice["message"], result], "tools": WEATHER_TOOLS, "temperature": 0}
    )
    answer = follow_up[0]["choices"][0]
    assert answer["finish_reason"] == "stop" and "tool_calls" not in answer["message"]
    assert answer["message"]["content"] == "It is sunny and 18 degrees in Paris."  # it read the tool result


def test_tool_choice_none_hides_the_tools(url: str) -> None:
    # greedy: at the default temperature 1.0, unseeded, the answer (up to max_seq_len tokens) is drawn anew each run
    body = {**ask("What is the weather in Paris?", temperature=0), "tools": WEATHER_TOOLS, "tool_choice": "none"}
    events = chat(url, body)
    assert "tool_calls" not in events[0]["choices"][0]["message"]


# ----- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ("{oops", None),
        (json.dumps({**ask("hi"), "temprature": 0.5}), "temprature"),
        (json.dumps(ask("hi", max_tokens="ten")), "max_tokens"),
        (json.dumps(ask("word " * (MAX_INPUT_LEN + 10))), "messages"),
    ],
)
def test_bad_chat_requests_get_an_error_and_the_server_keeps_serving(url: str, raw: str, param: str | None) -> None:
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(chat, url, ask("Hello", temperature=0))
        bad = pool.submit(chat, url, raw)
        [error] = bad.result()
        assert error["error"]["type"] == "invalid_request_error" and error["error"]["param"] == param
        assert completion_text(good.result()) == "Hello! How can I help you today?"


def test_wrong_tensor_types_and_over_long_prompts_are_refused_by_name(url: str) -> None:
    wrong_type = {**ensemble_inputs("hi", 4), "max_tokens": np.array([[4.0]], dtype=np.float32)}
    assert "max_tokens" in (stream(url, "ensemble", wrong_type).error or "")
    too_long = stream(url, "ensemble", ensemble_inputs("word " * (MAX_INPUT_LEN + 10), 4))
    assert "max_input_len" in (too_long.error or "")
    assert stream(url, "ensemble", ensemble_inputs("hi", 4)).error is None


# ----- cancellation and concurrency ---------------------------------------------------------------------------
def long_generation(tokens: int) -> dict[str, np.ndarray]:
    """A `tensorrt_llm` request with no end id: it runs for exactly `tokens` steps unless cancelled."""
    return {
        "input_ids": np.array([[1, 22177, 4304]], dtype=np.int32),
        "input_lengths": np.array([[3]], dtype=np.int32),
        "request_output_len": np.array([[tokens]], dtype=np.int32),
        "streaming": np.array([[True]]),
    }


def test_cancellation_frees_the_batch_slots(url: str, batch_metrics: BatchMetrics) -> None:
    cancelled = batch_metrics.idle()["requests_cancelled_total"]
    long = MAX_SEQ_LEN - 8  # thousands of steps; the cancelled counter tells cancellation from completion
    calls = [StreamingCall(url, "tensorrt_llm", long_generation(long)) for _ in range(MAX_BATCH_SIZE)]
    for call in calls:
        assert call.next()
    batch_metrics.wait_for(requests_running=MAX_BATCH_SIZE, batch_slots_free=0)
    queued = StreamingCall(url, "tensorrt_llm", long_generation(4))
    batch_metrics.wait_for(requests_waiting=1)  # every slot is taken
    for call in calls:
        call.cancel()
    # Every cancelled request gave its slot back, and the queued one took one of them.
    batch_metrics.wait_for(requests_cancelled_total=cancelled + MAX_BATCH_SIZE, requests_waiting=0)
    assert sum(o["output_ids"].size for o in queued.finish().outputs) == 4
    batch_metrics.wait_for(requests_running=0, requests_waiting=0, batch_slots_free=MAX_BATCH_SIZE)
    with ThreadPoolExecutor(MAX_BATCH_SIZE) as pool:
        results = list(pool.map(lambda _: stream(url, "tensorrt_llm", long_generation(4)), range(MAX_BATCH_SIZE)))
    assert all(r.error is None and sum(o["output_ids"].size for o in r.outputs) == 4 for r in results)

    # A cancelled chat stream cancels its tensorrt_llm request.
    endless = ask("Hello", stream=True, max_tokens=MAX_SEQ_LEN - 64, nvext={"ignore_eos": True})
    cancelled_chat = StreamingCall(url, "chat", chat_inputs(json.dumps(endless)))
    assert cancelled_chat.next()
    batch_metrics.wait_for(requests_running=1)
    cancelled_chat.cancel()
    batch_metrics.wait_for(
        requests_running=0, batch_slots_free=MAX_BATCH_SIZE, requests_cancelled_total=cancelled + MAX_BATCH_SIZE + 1
    )
    assert completion_text(chat(url, ask("Hello", temperature=0))) == "Hello! How can I help you today?"


def test_a_cancelled_queued_request_ends_while_the_batch_and_the_queue_go_on(
    url: str, batch_metrics: BatchMetrics
) -> None:
    cancelled = batch_metrics.idle()["requests_cancelled_total"]
    calls = [StreamingCall(url, "tensorrt_llm", long_generation(MAX_SEQ_LEN - 8)) for _ in range(MAX_BATCH_SIZE)]
    for call in calls:
        assert call.next()
    batch_metrics.wait_for(requests_running=MAX_BATCH_SIZE, batch_slots_free=0)
    doomed = StreamingCall(url, "tensorrt_llm", long_generation(4))
    batch_metrics.wait_for(requests_waiting=1)
    kept = StreamingCall(url, "tensorrt_llm", long_generation(4))
    batch_metrics.wait_for(requests_waiting=2)
    doomed.cancel()
    # It left the queue as cancelled while every slot stayed busy: the batch loop still steps.
    batch_metrics.wait_for(
        requests_waiting=1, requests_running=MAX_BATCH_SIZE, requests_cancelled_total=cancelled + 1, timeout=10
    )
    streamed = sum(len(out["output_ids"].reshape(-1)) for call in calls for out in call.result.outputs)
    for call in calls:
        assert call.next()  # each running stream keeps producing tokens
    assert sum(len(out["output_ids"].reshape(-1)) for call in calls for out in call.result.outputs) > streamed
    for call in calls:
        call.cancel()
    assert sum(o["output_ids"].size for o in kept.finish().outputs) == 4
    batch_metrics.wait_for(
        requests_running=0, requests_waiting=0, requests_cancelled_total=cancelled + 1 + MAX_BATCH_SIZE
    )


def test_the_metrics_the_endpoint_picker_reads_move_as_requests_run_and_queue(
    url: str, batch_metrics: BatchMetrics, serving_checkpoint: Path
) -> None:
    """`nv_trt_llm_request_metrics{request_type=waiting|scheduled}` and `nv_trt_llm_kv_cache_block_metrics`
    (`fraction`, `tokens_per`, `max`): what llm-d-router's endpoint picker scores a `triton-tensorrt-llm` pod by."""
    idle = batch_metrics.idle()
    model_positions = json.loads((serving_checkpoint / "config.json").read_text())["max_position_embeddings"]
    blocks_per_sequence = -(-model_positions // 64)  # the runtime's longest sequence is the model's
    assert idle["kv_tokens_per_block"] == 64 and idle["kv_blocks_max"] == MAX_BATCH_SIZE * blocks_per_sequence
    assert idle["kv_blocks_used"] == 0 and idle["kv_cache_fraction"] == 0 and idle["requests_active"] == 0
    calls = [StreamingCall(url, "tensorrt_llm", long_generation(MAX_SEQ_LEN - 8)) for _ in range(MAX_BATCH_SIZE)]
    for call in calls:
        assert call.next()
    batch_metrics.wait_for(requests_running=MAX_BATCH_SIZE, requests_waiting=0)
    queued = [StreamingCall(url, "tensorrt_llm", long_generation(4)) for _ in range(2)]
    batch_metrics.wait_for(requests_waiting=2, requests_active=MAX_BATCH_SIZE + 2, requests_running=MAX_BATCH_SIZE)
    start = batch_metrics.read()["kv_cache_fraction"]
    assert start >= MAX_BATCH_SIZE / idle["kv_blocks_max"]  # each running sequence fills a block at least
    deadline = time.monotonic() + 30
    while (now := batch_metrics.read())["kv_cache_fraction"] <= start:  # the sequences grow past their block
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    assert now["kv_cache_fraction"] == now["kv_blocks_used"] / now["kv_blocks_max"]
    for call in calls:
        call.cancel()
    assert all(sum(o["output_ids"].size for o in call.finish().outputs) == 4 for call in queued)
    done = batch_metrics.wait_for(requests_running=0, requests_waiting=0, requests_active=0, kv_blocks_used=0)
    assert done["kv_cache_fraction"] == 0


def test_sixteen_concurrent_streams_all_complete_correctly(url: str) -> None:
    questions = {
        "What is the capital of France?": "The capital of France is Paris.",
        "What is the capital of Japan?": "The capital of Japan is Tokyo.",
        "How many days are in a week?": "A week has seven days.",
        "你好": "你好！有什么可以帮你的吗？",
    }
    asked = [list(questions)[i % len(questions)] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda q: streamed_text(chat(url, ask(q, temperature=0, stream=True))), asked))
    assert answers == [questions[q] for q in asked]
