"""`/v1/completions` against the real Triton through nemo-gateway, read with the official openai SDK: usage,
stop strings left out, sampling, token-id prompts, `echo` + `logprobs` in the shapes lm-eval's
`local-completions` reads, `n`, streamed usage; and the `ensemble`'s stock inputs and outputs over gRPC."""

from __future__ import annotations

import json
import logging
import queue
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from nemo_gateway.settings import GatewaySettings
from nemo_ops.launcher import TritonServer
from nemo_protocol.tekken import Tekkenizer
from tests.integration.gateways import SERVED, running_gateway
from tests.integration.triton_calls import ensemble_inputs, stream, tensors

PROMPT = "Hello"


@pytest.fixture(scope="module")
def sdk(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(tekken_path: str) -> Tekkenizer:
    return Tekkenizer.from_file(tekken_path)


def test_usage_counts_the_prompt_and_the_generated_tokens(sdk: openai.OpenAI, tokenizer: Tekkenizer) -> None:
    reply = sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=6, temperature=0)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(tokenizer.encode(PROMPT, bos=True))
    assert reply.usage.completion_tokens == 6 and reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_the_stop_string_ends_the_text_and_is_left_out(sdk: openai.OpenAI) -> None:
    whole = sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text
    stop = whole[len(whole) // 2 : len(whole) // 2 + 2]
    assert stop.strip(), whole
    for streamed in (False, True):
        if streamed:
            chunks = sdk.completions.create(
                model=SERVED, prompt=PROMPT, max_tokens=12, temperature=0, stop=stop, stream=True
            )
            pieces = list(chunks)
            text, reason = "".join(c.choices[0].text for c in pieces), pieces[-1].choices[0].finish_reason
        else:
            choice = sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=12, temperature=0, stop=stop)
            text, reason = choice.choices[0].text, choice.choices[0].finish_reason
        assert text == whole[: whole.index(stop)]
        assert reason == "stop"


def test_temperature_alone_samples(sdk: openai.OpenAI) -> None:
    greedy = sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
    sampled = {
        sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=8, temperature=1.5, seed=seed).choices[0].text
        for seed in range(4)
    }
    assert sampled - {greedy}, "temperature 1.5 without top_p decoded greedily"
    again = sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=8, temperature=1.5, seed=0)
    assert again.choices[0].text in sampled  # a seed repeats its draw


def test_echo_and_logprobs_on_token_ids_as_lm_eval_asks(sdk: openai.OpenAI, tokenizer: Tekkenizer) -> None:
    """lm-eval `local-completions` loglikelihood: prompt [[ids]], echo, logprobs 1, max_tokens 1, temperature 0;
    it reads token_logprobs[ctxlen:-1] and compares each with max(top_logprobs[i].values())."""
    ids = tokenizer.encode("The capital of France is Paris", bos=True)
    reply = sdk.completions.create(
        model=SERVED, prompt=[ids], echo=True, logprobs=1, max_tokens=1, temperature=0, seed=1234
    )
    [choice] = reply.choices
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.token_logprobs is not None and logprobs.top_logprobs is not None
    assert len(logprobs.token_logprobs) == len(ids) + 1  # the prompt's tokens, then the generated one
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(p is not None and p <= 0 for p in logprobs.token_logprobs[1:])
    assert choice.text.startswith(tokenizer.decode(ids))
    # The last token was generated greedily: its log prob is the best at its position.
    assert logprobs.token_logprobs[-1] == pytest.approx(max(logprobs.top_logprobs[-1].values()))
    # Each prompt token's log prob is what generating it after the tokens before it scores.
    k = len(ids) // 2
    step = sdk.completions.create(model=SERVED, prompt=ids[:k], max_tokens=1, logprobs=5, temperature=0)
    step_logprobs = step.choices[0].logprobs
    assert step_logprobs is not None and step_logprobs.top_logprobs is not None
    token = logprobs.tokens[k] if logprobs.tokens else None
    top = step_logprobs.top_logprobs[0]
    if token in top:
        assert top[token] == pytest.approx(logprobs.token_logprobs[k], abs=1e-3)
    else:  # not among the 5 best: it scores below them
        assert logprobs.token_logprobs[k] <= min(top.values()) + 1e-3
    assert reply.usage is not None and reply.usage.prompt_tokens == len(ids)


def test_several_prompts_and_n_give_one_choice_each(sdk: openai.OpenAI, tokenizer: Tekkenizer) -> None:
    prompts = [tokenizer.encode("Hello", bos=True), tokenizer.encode("The capital", bos=True)]
    reply = sdk.completions.create(model=SERVED, prompt=prompts, max_tokens=3, temperature=0, n=2)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == reply.choices[1].text  # greedy: the same continuation twice
    assert reply.usage is not None and reply.usage.prompt_tokens == sum(map(len, prompts))
    assert reply.usage.completion_tokens == 4 * 3
    with pytest.raises(openai.BadRequestError) as too_many:
        sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=3, n=17)
    assert too_many.value.body["param"] == "n"  # type: ignore[index]


def test_sampled_completion_choices_differ_and_choice_i_is_the_request_with_seed_plus_i(sdk: openai.OpenAI) -> None:
    sampled = {"model": SERVED, "prompt": "Once upon", "max_tokens": 8, "temperature": 1.0, "seed": 70}
    choices = [c.text for c in sdk.completions.create(**sampled, n=4).choices]
    alone = [sdk.completions.create(**{**sampled, "seed": 70 + i}).choices[0].text for i in range(4)]
    assert choices == alone  # the documented rule: choice i is drawn with seed + i
    assert len(set(choices)) > 1  # independent generations, not one copied


def test_ignore_eos_and_min_tokens_accepted_at_the_top_level_as_vllm_and_aiperf_send_them(gateway: str) -> None:
    body = {"prompt": PROMPT, "max_tokens": 5, "temperature": 0, "ignore_eos": True, "min_tokens": 5, "top_k": 1}
    reply = httpx.post(f"{gateway}/v1/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 5
    same = httpx.post(
        f"{gateway}/v1/completions",
        json={**body, "nvext": {"ignore_eos": True, "top_k": 1}},
        timeout=60,
    )
    assert same.status_code == 200 and same.json()["choices"][0]["text"] == reply.json()["choices"][0]["text"]


def test_user_is_logged_with_the_id_of_the_answer_on_both_routes(
    sdk: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        completion = sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=2, user="alice-42")
        streamed = list(sdk.completions.create(model=SERVED, prompt=PROMPT, max_tokens=2, user="bob", stream=True))
        chat = sdk.chat.completions.create(model=SERVED, messages=[{"role": "user", "content": "Hi"}], user="carol")
    assert f"{completion.id} answers end user 'alice-42'" in caplog.messages
    assert f"{streamed[0].id} answers end user 'bob'" in caplog.messages
    assert f"{chat.id} answers end user 'carol'" in caplog.messages  # the chat core's line (the direct path)
    for route, body in (
        ("completions", {"prompt": PROMPT}),
        ("chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ):
        refused = httpx.post(f"{sdk.base_url}{route}", json={**body, "user": "x" * 300}, timeout=60)
        assert (refused.status_code, refused.json()["error"]["param"]) == (400, "user")


def sse_chunks(gateway: str, body: dict[str, object]) -> list[dict[str, object]]:
    with httpx.stream("POST", f"{gateway}/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_streamed_usage_on_the_last_chunk_or_on_every_chunk(gateway: str) -> None:
    body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "stream": True}
    plain = sse_chunks(gateway, body)
    assert all("usage" not in chunk for chunk in plain)
    last = sse_chunks(gateway, {**body, "stream_options": {"include_usage": True}})
    assert [("usage" in chunk) for chunk in last] == [False] * (len(last) - 1) + [True]
    assert last[-1]["usage"]["completion_tokens"] == 6  # type: ignore[index]
    every = sse_chunks(gateway, {**body, "stream_options": {"continuous_usage_stats": True}})
    counts = [chunk["usage"]["completion_tokens"] for chunk in every]  # type: ignore[index]
    assert counts == sorted(counts) and counts[-1] == 6


# ----- the ensemble's stock inputs and outputs, over gRPC as the stock clients send them ----------------------
def test_the_ensemble_takes_the_stock_inputs_and_returns_the_stock_outputs(url: str) -> None:
    extra = {
        "exclude_input_in_output": np.array([[False]]),
        "return_log_probs": np.array([[True]]),
        "beam_width": np.array([[1]], np.int32),
        "num_return_sequences": np.array([[1]], np.int32),
        "length_penalty": np.array([[1.0]], np.float32),
        "min_tokens": np.array([[1]], np.int32),
    }
    result = stream(url, "ensemble", {**ensemble_inputs(PROMPT, 5), **extra})
    assert result.error is None, result.error
    [text] = result.texts("text_output")
    assert text.startswith(PROMPT) and len(text) > len(PROMPT)
    [outputs] = result.outputs
    log_probs = outputs["output_log_probs"].reshape(-1)
    assert log_probs.shape == (5,) and (log_probs <= 0).all()
    assert outputs["cum_log_probs"].item() == pytest.approx(float(log_probs.sum()), abs=1e-4)
    assert outputs["num_output_tokens"].item() == 5
    assert outputs["batch_index"].item() == 0 and outputs["sequence_index"].item() == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("beam_width", np.array([[2]], np.int32)), ("num_return_sequences", np.array([[2]], np.int32))],
)
def test_the_ensemble_refuses_what_it_cannot_serve_by_name(url: str, name: str, value: np.ndarray) -> None:
    result = stream(url, "ensemble", {**ensemble_inputs(PROMPT, 5), name: value})
    assert result.error is not None and f"{name}: " in result.error


def test_metrics_carry_the_engine_figures_from_triton_and_the_token_counters(url: str, triton: TritonServer) -> None:
    settings = GatewaySettings(
        triton_url=url,
        served_model_name=SERVED,
        triton_metrics_url=f"http://{triton.host}:{triton.ports.metrics}/metrics",
    )
    with running_gateway(settings) as base:
        body = {"prompt": PROMPT, "max_tokens": 5, "temperature": 0, "stream": True}
        assert len(sse_chunks(base, body)) >= 2
        samples = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in httpx.get(f"{base}/v1/metrics", timeout=30).text.splitlines()
            if line and not line.startswith("#")
        }
    assert samples["nemo_gateway_engine_metrics_up"] == 1
    assert samples["num_requests_running"] == 0 and samples["num_requests_waiting"] == 0
    assert samples["kv_cache_usage_perc"] == 0
    assert samples["generation_tokens_total"] == 5 and samples["prompt_tokens_total"] == 2
    assert samples["time_per_output_token_seconds_count"] == 1
    assert samples["time_to_first_token_seconds_count"] == 1


# ----- chat: n as independent generations, vLLM's top-level spellings ----------------------------------------
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_n_gives_n_choices_whole_and_streamed(sdk: openai.OpenAI) -> None:
    one = sdk.chat.completions.create(model=SERVED, messages=FRANCE, temperature=0)
    two = sdk.chat.completions.create(model=SERVED, messages=FRANCE, temperature=0, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert {c.message.content for c in two.choices} == {one.choices[0].message.content}
    assert one.usage is not None and two.usage is not None
    assert two.usage.prompt_tokens == one.usage.prompt_tokens
    assert two.usage.completion_tokens == 2 * one.usage.completion_tokens
    chunks = list(
        sdk.chat.completions.create(
            model=SERVED, messages=FRANCE, temperature=0, n=2, stream=True, stream_options={"include_usage": True}
        )
    )
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: one.choices[0].message.content, 1: one.choices[0].message.content}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == two.usage.completion_tokens
    with pytest.raises(openai.BadRequestError) as too_many:
        sdk.chat.completions.create(model=SERVED, messages=FRANCE, n=17)
    assert too_many.value.body["param"] == "n"  # type: ignore[index]


def test_sampled_chat_choices_differ_and_choice_i_is_the_request_with_seed_plus_i(sdk: openai.OpenAI) -> None:
    sampled: dict[str, Any] = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 8,
        "temperature": 1.0,
        "seed": 70,
    }
    alone = [sdk.chat.completions.create(**{**sampled, "seed": 70 + i}).choices[0].message.content for i in range(4)]
    assert len(set(alone)) > 1  # the seeds give different answers: copies of one generation would not
    whole = sdk.chat.completions.create(**sampled, n=4)
    assert [c.message.content for c in whole.choices] == alone
    streamed = {i: "" for i in range(4)}
    for chunk in sdk.chat.completions.create(**sampled, n=4, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert list(streamed.values()) == alone


def test_chat_takes_vllm_s_top_level_sampling_fields_as_nvext(gateway: str) -> None:
    body = {"messages": FRANCE, "temperature": 0, "max_tokens": 4, "ignore_eos": True, "top_k": 1}
    top_level = httpx.post(f"{gateway}/v1/chat/completions", json=body, timeout=60)
    assert top_level.status_code == 200, top_level.text
    assert top_level.json()["usage"]["completion_tokens"] == 4  # ignore_eos: exactly max_tokens
    nested = {"messages": FRANCE, "temperature": 0, "max_tokens": 4, "nvext": {"ignore_eos": True, "top_k": 1}}
    same = httpx.post(f"{gateway}/v1/chat/completions", json=nested, timeout=60)
    assert same.json()["choices"][0]["message"] == top_level.json()["choices"][0]["message"]
    both = httpx.post(f"{gateway}/v1/chat/completions", json={**body, "nvext": {"top_k": 2}}, timeout=60)
    assert both.status_code == 400 and both.json()["error"]["param"] == "nvext.top_k"


# ----- the stock client ------------------------------------------------------------------------------------------
# tensorrtllm_backend inflight_batcher_llm/client/end_to_end_grpc_client.py (read at 071ee5e7), reproduced request for
# request: prepare_inputs() with the script's defaults (temperature 1.0, beam_width 1, exclude_input_in_output
# False; --return-log-probs adds return_log_probs and asks for cum_log_probs and output_log_probs), sent on one
# gRPC stream with request_id "", texts gathered as run_inference() does (streamed: appended; whole: the last
# response's), and checked as its --check-outputs does: a whole answer is the prompt + the expected text.
def stock_client_run(
    url: str, prompt: str, output_len: int, streaming: bool, return_log_probs: bool
) -> tuple[str, list[Any]]:
    inputs = {
        "text_input": np.array([[prompt]]).astype(object),
        "max_tokens": np.ones_like([[prompt]]).astype(np.int32) * output_len,
        "stream": np.array([[streaming]], dtype=bool),
        "beam_width": np.array([[1]], dtype=np.int32),
        "temperature": np.array([[1.0]], dtype=np.float32),
        "exclude_input_in_output": np.array([[False]], dtype=bool),
    }
    outputs = [grpcclient.InferRequestedOutput("text_output")]
    if return_log_probs:
        inputs["return_log_probs"] = np.array([[True]], dtype=bool)
        outputs += [
            grpcclient.InferRequestedOutput("cum_log_probs"),
            grpcclient.InferRequestedOutput("output_log_probs"),
        ]
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(url=url)
    client.start_stream(callback=lambda result, error: results.put(error or result))
    client.async_stream_infer("ensemble", tensors(inputs), outputs=outputs, request_id="")
    client.stop_stream()
    text, received = "", []
    while not results.empty():
        result = results.get()
        received.append(result)
        assert not isinstance(result, InferenceServerException), str(result)
        piece = result.as_numpy("text_output")[0].decode("utf-8")
        text = text + piece if streaming else piece
    client.close()
    return text, received


@pytest.mark.parametrize("return_log_probs", [False, True])
@pytest.mark.parametrize("streaming", [False, True])
def test_the_stock_end_to_end_grpc_client_s_requests_work(url: str, streaming: bool, return_log_probs: bool) -> None:
    prompt = PROMPT
    reference = stream(url, "ensemble", ensemble_inputs(prompt, 10))
    expected = reference.texts("text_output")[-1]  # greedy, new text only
    generated = int(reference.outputs[-1]["num_output_tokens"].reshape(-1)[0])  # 10, or fewer if the model ended
    assert expected and 0 < generated <= 10
    text, received = stock_client_run(url, prompt, 10, streaming, return_log_probs)
    assert text == (expected if streaming else prompt + expected)
    if return_log_probs:
        log_probs = np.concatenate([r.as_numpy("output_log_probs").reshape(-1) for r in received])
        assert log_probs.shape == (generated,) and (log_probs <= 0).all()
        assert received[-1].as_numpy("cum_log_probs").item() == pytest.approx(float(log_probs.sum()), abs=1e-3)
