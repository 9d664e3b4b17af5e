"""The `ensemble`'s stock inputs and outputs and its log probs in OpenAI's completions shape."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from nemo_chat_core.engine_tensors import LogOutputs
from nemo_chat_core.log_probs import (
    chat_logprobs_content,
    completion_logprobs,
    log_softmax,
    prompt_log_probs,
    scored,
)
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer
from nemo_serving.ensemble import TextRequest, TextResponses
from tests.unit.serving.ensemble_inputs import preprocessing_outputs

VOCAB = 131072


def logits_favouring(token_ids: list[int], margin: float = 5.0) -> np.ndarray:
    """Logits [len(ids), vocab] whose best token in row i is ids[i]."""
    rows = np.zeros((len(token_ids), VOCAB), dtype=np.float32)
    rows[np.arange(len(token_ids)), token_ids] = margin
    return rows


def text_of(response: dict[str, np.ndarray]) -> str:
    return str(response["text_output"].reshape(-1)[0].decode("utf-8"))


def logprobs_of(response: dict[str, np.ndarray]) -> dict[str, Any]:
    return dict(json.loads(response["logprobs"].reshape(-1)[0]))


def test_prompt_tokens_are_scored_by_the_row_before_them_and_the_first_has_none() -> None:
    prompt = [1, 1500, 1600]
    context = logits_favouring([1500, 1700, 9])  # row 0 predicts 1500 (right), row 1 predicts 1700 (not 1600)
    tokens = prompt_log_probs(prompt, context, top_n=1)
    assert tokens[0].log_prob is None
    table = log_softmax(context)
    assert tokens[1].log_prob == pytest.approx(table[0, 1500]) and tokens[1].top[0][0] == 1500
    assert tokens[2].log_prob == pytest.approx(table[1, 1600]) and tokens[2].top[0][0] == 1700


def test_completion_logprobs_have_openai_s_shape(tok: Tekkenizer) -> None:
    ids = tok.encode("Hello world")
    tokens = [prompt_log_probs([1], np.zeros((1, VOCAB), np.float32), 2)[0], *scored(ids, logits_favouring(ids), 2)]
    body = completion_logprobs(tok, tokens, top_n=2)
    assert body["tokens"] == ["<s>", "Hello", " world"]
    assert body["text_offset"] == [0, 0, 5]
    assert body["token_logprobs"][0] is None and body["top_logprobs"][0] is None
    assert all(p < 0 for p in body["token_logprobs"][1:])
    assert [len(top) for top in body["top_logprobs"][1:]] == [2, 2]
    assert max(body["top_logprobs"][1], key=body["top_logprobs"][1].get) == "Hello"


def request(**fields: Any) -> TextRequest:
    return TextRequest(**{"text": "Hello", "max_tokens": 3, **fields})


def test_echo_with_logprobs_gives_the_prompt_then_the_completion_as_lm_eval_reads_them(tok: Tekkenizer) -> None:
    prompt, generated = [1, 22177, 4304], [1278, 2]
    responses = TextResponses(tok, request(text="", exclude_input_in_output=False, logprobs=1, max_tokens=1), prompt)
    logs = LogOutputs(
        log_probs=[-0.25],
        context_logits=logits_favouring([22177, 4304, generated[0]]),
        generation_logits=logits_favouring(generated[:1]),
    )
    assert responses.feed(generated[:1], logs) is None  # whole: everything comes with the last response
    final = responses.finish()
    body = logprobs_of(final)
    assert text_of(final) == tok.decode(prompt + generated[:1])
    assert len(body["tokens"]) == len(prompt) + 1
    assert body["token_logprobs"][0] is None and body["token_logprobs"][-1] == -0.25
    # lm-eval: sum(token_logprobs[ctxlen:-1]) is the continuation's log likelihood, greedy when each equals the top
    continuation = body["token_logprobs"][1:-1]
    assert all(p == max(top.values()) for p, top in zip(continuation, body["top_logprobs"][1:-1], strict=True))
    assert final["num_input_tokens"].item() == 3 and final["num_output_tokens"].item() == 1
    assert final["finish_reason"].reshape(-1)[0] == b"length"


def test_echo_with_max_tokens_0_returns_the_prompt_only(tok: Tekkenizer) -> None:
    responses = TextResponses(tok, request(exclude_input_in_output=False, max_tokens=0, logprobs=0), [1, 22177])
    responses.feed([4304], LogOutputs(log_probs=[-1.0], context_logits=logits_favouring([22177, 4304])))
    final = responses.finish()
    assert text_of(final) == "Hello"
    assert logprobs_of(final)["tokens"] == ["<s>", "Hello"]
    assert final["num_output_tokens"].item() == 0


def test_return_log_probs_streams_each_token_s_log_prob_and_the_running_sum(tok: Tekkenizer) -> None:
    responses = TextResponses(tok, request(stream=True, return_log_probs=True), [1, 22177])
    sent = [responses.feed([4304], LogOutputs(log_probs=[-0.5])), responses.feed([1278], LogOutputs(log_probs=[-1.5]))]
    sent.append(responses.finish())
    assert sent[0] is None  # held back until the next arrives, so the last response has text to carry
    assert [r["output_log_probs"].tolist() for r in sent[1:]] == [[[-0.5]], [[-1.5]]]
    assert [r["cum_log_probs"].item() for r in sent[1:]] == [-0.5, -2.0]
    assert [r["num_output_tokens"].item() for r in sent[1:]] == [1, 2]
    assert all(r["batch_index"].item() == 0 and r["sequence_index"].item() == 0 for r in sent[1:])


def tensors(**values: Any) -> dict[str, np.ndarray]:
    base: dict[str, Any] = {"text_input": np.array([[b"hi"]], dtype=object), "max_tokens": np.array([[4]], np.int32)}
    return {**base, **values}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("beam_width", np.array([[2]], np.int32)),
        ("num_return_sequences", np.array([[3]], np.int32)),
        ("return_context_logits", np.array([[True]])),
        ("return_generation_logits", np.array([[True]])),
        ("return_perf_metrics", np.array([[True]])),
        ("embedding_bias_words", np.array([[b"cat"]], dtype=object)),
        ("logprobs", np.array([[21]], np.int32)),
    ],
)
def test_stock_inputs_it_cannot_serve_are_refused_by_name(name: str, value: np.ndarray) -> None:
    with pytest.raises(BadRequestError) as caught:
        TextRequest.from_inputs(tensors(**{name: value}).get)
    assert caught.value.param == name


def test_stock_inputs_it_serves_are_read() -> None:
    text = TextRequest.from_inputs(
        tensors(
            exclude_input_in_output=np.array([[False]]),
            return_log_probs=np.array([[True]]),
            min_tokens=np.array([[2]], np.int32),
            end_id=np.array([[-1]], np.int32),
            beam_width=np.array([[1]], np.int32),
            length_penalty=np.array([[1.0]], np.float32),
        ).get
    )
    preprocessed = preprocessing_outputs()
    generation = text.generation(preprocessed)
    assert generation.end_id is None  # -1: generate max_tokens (ignore_eos)
    assert generation.min_tokens == 2 and generation.return_log_probs
    assert not text.exclude_input_in_output


def test_a_token_id_prompt_is_used_as_it_is() -> None:
    text = TextRequest.from_inputs(
        {"input_ids": np.array([[1, 5, 6, 7]], np.int32), "max_tokens": np.array([[4]], np.int32)}.get
    )
    assert text.prompt_ids == (1, 5, 6, 7)
    with pytest.raises(BadRequestError) as both:
        TextRequest.from_inputs(tensors(input_ids=np.array([[1]], np.int32)).get)
    assert both.value.param == "text_input"


def test_chat_logprobs_content_has_openai_s_shape(tok: Tekkenizer) -> None:
    ids = tok.encode("Hello world")
    content = chat_logprobs_content(tok, scored(ids, logits_favouring(ids), 2), top_n=2)
    assert [c["token"] for c in content] == ["Hello", " world"]
    assert content[0]["bytes"] == list(b"Hello") and content[0]["logprob"] < 0
    assert [len(c["top_logprobs"]) for c in content] == [2, 2]
    assert content[1]["top_logprobs"][0] == {
        "token": " world",
        "logprob": content[1]["logprob"],
        "bytes": list(b" world"),
    }


def test_log_probs_the_engine_cannot_give_are_refused_by_name() -> None:
    echo = request(exclude_input_in_output=False, logprobs=1)
    echo.check_logits(context=True, generation=True)
    with pytest.raises(BadRequestError) as no_context:
        echo.check_logits(context=False, generation=True)
    assert no_context.value.param == "exclude_input_in_output" and "gather_context_logits" in str(no_context.value)
    with pytest.raises(BadRequestError) as no_generation:
        request(logprobs=2).check_logits(context=True, generation=False)
    assert no_generation.value.param == "logprobs" and "gather_generation_logits" in str(no_generation.value)
    request(logprobs=0).check_logits(context=False, generation=False)  # each token's own: always there
    request().check_logits(context=False, generation=False)
