"""The stand-in `tensorrt_llm` engine: deterministic text tokens at a set rate, with the real contract's ends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from nemo_chat_core.engine_tensors import GenerationRequest
from nemo_chat_core.sampling import Sampling
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer
from nemo_runtime.stand_in import TEXT, StandInEngine, text_token_ids
from tests.unit.runtime.sinks import RecordingSink

PROMPT = [1, 3, 22177, 4]


@pytest.fixture(scope="module")
def sentences(tekken_path: str) -> list[list[int]]:
    return text_token_ids(Tekkenizer.from_file(tekken_path))


@pytest.fixture
def engine(sentences: list[list[int]]) -> Iterator[StandInEngine]:
    running = StandInEngine(sentences, tokens_per_s=2000, max_batch_size=4, max_seq_len=512)
    yield running
    running.close()


def request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {"input_ids": PROMPT, "max_new_tokens": 16, "streaming": True, "end_id": 2}
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def test_text_is_ordinary_tokens_that_decode_to_the_sentences(tekken_path: str) -> None:
    tokenizer = Tekkenizer.from_file(tekken_path)
    encoded = text_token_ids(tokenizer)
    assert tokenizer.decode([token for sentence in encoded for token in sentence]) == "".join(TEXT)
    assert not any(tokenizer.is_control(token) for sentence in encoded for token in sentence)
    with pytest.raises(ValueError, match="does not encode"):
        text_token_ids(tokenizer, [""])


def test_streams_one_token_per_step_and_the_same_prompt_the_same_tokens(engine: StandInEngine) -> None:
    first, second = RecordingSink(), RecordingSink()
    engine.submit(request(), first)
    engine.submit(request(), second)
    first.wait(), second.wait()
    assert [len(ids) for ids, _, _ in first.sends] == [1] * 16
    assert first.sends[-1][1] and not any(final for _, final, _ in first.sends[:-1])
    assert first.tokens == second.tokens == engine.tokens_for(PROMPT, 16)


def test_rate_per_stream_holds_for_every_running_request(sentences: list[list[int]]) -> None:
    engine = StandInEngine(sentences, tokens_per_s=200, max_batch_size=8)
    try:
        sinks = [RecordingSink() for _ in range(4)]
        started = time.monotonic()
        for sink in sinks:
            engine.submit(request(max_new_tokens=40), sink)
        for sink in sinks:
            sink.wait()
        elapsed = time.monotonic() - started
    finally:
        engine.close()
    # 40 tokens at 200/s is 0.2 s per stream, the four in parallel: the engine gave 800 tokens/s in all.
    assert 0.19 <= elapsed < 0.6
    assert engine.steps in range(40, 43)


def test_batch_limit_queues_the_rest_first_in_first_out(sentences: list[list[int]]) -> None:
    engine = StandInEngine(sentences, tokens_per_s=400, max_batch_size=2)
    try:
        sinks = [RecordingSink() for _ in range(3)]
        for sink in sinks:
            engine.submit(request(max_new_tokens=10), sink)
        stats = engine.stats()
        for sink in sinks:
            sink.wait()
    finally:
        engine.close()
    assert stats.running + stats.waiting == 3 and stats.running <= 2
    # The third ran only once a slot freed: its first token came after the last token of the first two.
    assert sinks[2].sends[0][2] >= max(sinks[0].sends[-1][2], sinks[1].sends[-1][2])


def test_non_streaming_returns_everything_once_with_or_without_the_prompt(engine: StandInEngine) -> None:
    without, with_prompt = RecordingSink(), RecordingSink()
    engine.submit(request(streaming=False, max_new_tokens=5), without)
    engine.submit(request(streaming=False, max_new_tokens=5, exclude_input_in_output=False), with_prompt)
    without.wait(), with_prompt.wait()
    expected = engine.tokens_for(PROMPT, 5)
    assert without.sends == [(expected, True, without.sends[0][2])]
    assert with_prompt.tokens == PROMPT + expected


def test_stop_words_end_with_the_word_and_end_after_tokens_ends_at_the_end_id(
    sentences: list[list[int]], engine: StandInEngine
) -> None:
    stop_word = engine.tokens_for(PROMPT, 6)[3:5]
    stopped = RecordingSink()
    engine.submit(request(stop_words=[stop_word]), stopped)
    assert stopped.wait().tokens == engine.tokens_for(PROMPT, 5)

    ending = StandInEngine(sentences, tokens_per_s=2000, end_after_tokens=3)
    try:
        short, long_min, no_end_id = RecordingSink(), RecordingSink(), RecordingSink()
        ending.submit(request(), short)
        ending.submit(request(min_tokens=7), long_min)
        ending.submit(request(end_id=None), no_end_id)
        assert short.wait().tokens == ending.tokens_for(PROMPT, 3)
        assert long_min.wait().tokens == ending.tokens_for(PROMPT, 7)
        assert len(no_end_id.wait().tokens) == 16
    finally:
        ending.close()


def test_cancellation_and_stop_by_tag_free_the_slot_and_are_counted(sentences: list[list[int]]) -> None:
    engine = StandInEngine(sentences, tokens_per_s=100, max_batch_size=4, cancellation_check_s=0.02)
    try:
        cancelled, tagged, other = RecordingSink(), RecordingSink(), RecordingSink()
        engine.submit(request(max_new_tokens=1000), cancelled)
        engine.submit(request(max_new_tokens=1000), tagged, tag="7")
        engine.submit(request(max_new_tokens=1000), other, tag="8")
        time.sleep(0.05)
        cancelled.cancelled = True
        assert engine.stop("7") == 1
        assert engine.stop("nothing") == 0
        noticed = time.monotonic()
        cancelled.wait(), tagged.wait()
        assert time.monotonic() - noticed < 0.1
        assert not other.done.is_set()
        assert engine.stats().cancelled == 2 and engine.stats().running == 1
        assert engine.stop("8") == 1
        other.wait()
    finally:
        engine.close()
    assert engine.stats().running == 0 and engine.stats().cancelled == 3


def test_what_it_cannot_serve_is_refused_by_name(engine: StandInEngine) -> None:
    with pytest.raises(BadRequestError) as too_long:
        engine.submit(request(input_ids=[5] * 500, max_new_tokens=100), RecordingSink())
    assert too_long.value.param == "input_ids"
    with pytest.raises(BadRequestError) as bad_id:
        engine.submit(request(input_ids=[1, 131072]), RecordingSink())
    assert bad_id.value.param == "input_ids"
    with pytest.raises(BadRequestError) as penalty:
        engine.submit(request(sampling=Sampling(presence_penalty=0.5)), RecordingSink())
    assert penalty.value.param == "presence_penalty"
    for name in ("return_log_probs", "return_context_logits", "return_generation_logits"):
        with pytest.raises(BadRequestError) as logs:
            engine.submit(request(**{name: True}), RecordingSink())
        assert logs.value.param == name
    assert engine.active_requests == 0


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_rate_must_be_a_positive_number(sentences: list[list[int]], rate: float) -> None:
    with pytest.raises(ValueError, match="tokens_per_s"):
        StandInEngine(sentences, tokens_per_s=rate)
