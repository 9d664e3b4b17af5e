"""The CPU `tensorrt_llm` loop: in-flight batching, streaming, stop conditions, cancellation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from nemo_chat_core.engine_tensors import GenerationRequest
from nemo_chat_core.sampling import Sampling
from nemo_protocol.errors import BadRequestError
from nemo_runtime.batch_metrics import (
    CANCELLED,
    KV_CACHE_BLOCKS,
    LORA_INFO,
    LORA_REQUESTS,
    REQUESTS,
    MetricsPublisher,
    TritonMetrics,
)
from nemo_runtime.inflight import BatcherStats, InflightBatcher
from nemo_runtime.sampling import SamplingParams
from nemo_runtime.scheduler import ReferenceRuntime
from tests.source_tree import PROJECT
from tests.unit.runtime.sinks import RecordingSink

PROMPT = [1, 300, 301, 302, 303]


@pytest.fixture
def batcher(new_runtime: Callable[..., ReferenceRuntime]) -> Iterator[InflightBatcher]:
    running = InflightBatcher(new_runtime())
    yield running
    running.close()


def request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {"input_ids": PROMPT, "max_new_tokens": 8, "streaming": True}
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def test_streams_one_token_per_response_and_matches_a_lone_run(
    batcher: InflightBatcher, new_runtime: Callable[..., ReferenceRuntime]
) -> None:
    sink = RecordingSink()
    batcher.submit(request(), sink)
    sink.wait()
    expected = new_runtime().generate(PROMPT, max_new_tokens=8).token_ids
    assert sink.tokens == expected
    assert [len(ids) for ids, _, _ in sink.sends] == [1] * 8
    assert [final for _, final, _ in sink.sends] == [False] * 7 + [True]


def test_non_streaming_sends_everything_once_with_or_without_the_prompt(batcher: InflightBatcher) -> None:
    streamed, whole, with_prompt = RecordingSink(), RecordingSink(), RecordingSink()
    batcher.submit(request(), streamed)
    batcher.submit(request(streaming=False), whole)
    batcher.submit(request(streaming=False, exclude_input_in_output=False), with_prompt)
    for sink in (streamed, whole, with_prompt):
        sink.wait()
    assert len(whole.sends) == 1 and whole.sends[0][1] is True
    assert whole.tokens == streamed.tokens
    assert with_prompt.tokens == PROMPT + streamed.tokens


def test_a_new_request_joins_the_running_batch(batcher: InflightBatcher) -> None:
    long, short = RecordingSink(), RecordingSink()
    batcher.submit(request(max_new_tokens=60), long)
    while len(long.sends) < 3:
        time.sleep(0.001)
    batcher.submit(request(max_new_tokens=3), short)
    short.wait()
    long.wait()
    # The short request was served between the long one's decode steps, not after it.
    assert short.sends[-1][2] < long.sends[-1][2]
    assert len(long.tokens) == 60 and len(short.tokens) == 3


def test_requests_are_independent_of_their_batch_mates(
    batcher: InflightBatcher, new_runtime: Callable[..., ReferenceRuntime]
) -> None:
    seeded = Sampling(temperature=1.0, top_k=50, seed=1234)
    sinks = [RecordingSink() for _ in range(6)]
    for i, sink in enumerate(sinks):
        batcher.submit(request(input_ids=[*PROMPT, 400 + i], sampling=seeded), sink)
    for sink in sinks:
        sink.wait()
    alone = new_runtime().generate(
        [*PROMPT, 400], max_new_tokens=8, sampling=SamplingParams(temperature=1.0, top_k=50, seed=1234)
    )
    assert sinks[0].tokens == alone.token_ids


def test_end_id_stop_words_bad_words_and_min_tokens(
    batcher: InflightBatcher, new_runtime: Callable[..., ReferenceRuntime]
) -> None:
    free = new_runtime().generate(PROMPT, max_new_tokens=8).token_ids
    ended, stopped, banned, at_least = RecordingSink(), RecordingSink(), RecordingSink(), RecordingSink()
    batcher.submit(request(end_id=free[3]), ended)
    batcher.submit(request(stop_words=[free[2:4]]), stopped)
    batcher.submit(request(bad_words=[[free[0]]]), banned)
    batcher.submit(request(end_id=free[0], min_tokens=2), at_least)
    assert ended.wait().tokens == free[:3]  # the end id itself is not returned
    assert stopped.wait().tokens == free[:4]  # a stop word is returned, then generation ends
    assert banned.wait().tokens[0] != free[0]
    assert at_least.wait().tokens[0] != free[0]


def test_cancellation_frees_the_slot_within_a_step(
    batcher: InflightBatcher, new_runtime: Callable[..., ReferenceRuntime]
) -> None:
    sink = RecordingSink()
    batcher.submit(request(max_new_tokens=200), sink)
    while len(sink.sends) < 2:
        time.sleep(0.001)
    sink.cancelled = True
    sink.wait()
    assert len(sink.tokens) < 200
    assert sink.sends[-1][1] is True
    deadline = time.monotonic() + 5
    while batcher.active_requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.active_requests == 0
    follow_up = RecordingSink()
    batcher.submit(request(), follow_up)
    assert follow_up.wait().tokens == new_runtime().generate(PROMPT, max_new_tokens=8).token_ids


def test_stop_by_tag_ends_only_that_request(batcher: InflightBatcher) -> None:
    doomed, kept = RecordingSink(), RecordingSink()
    batcher.submit(request(max_new_tokens=200), doomed, tag="41")
    batcher.submit(request(max_new_tokens=20), kept, tag="42")
    while not doomed.sends:
        time.sleep(0.001)
    assert batcher.stop("41") == 1
    assert len(doomed.wait().tokens) < 200
    assert len(kept.wait().tokens) == 20


@pytest.mark.parametrize(
    ("overrides", "tensor"),
    [
        ({"sampling": Sampling(presence_penalty=0.5)}, "presence_penalty"),
        ({"sampling": Sampling(frequency_penalty=0.5)}, "frequency_penalty"),
        ({"max_new_tokens": 1000}, "request_output_len"),  # beyond the model's sequence length
        ({"input_ids": [1, 5000]}, "input_ids"),  # the unit runtime's vocabulary is 1024
        ({"bad_words": [[7, 2**30]]}, "bad_words_list"),
        ({"stop_words": [[-3]]}, "stop_words_list"),
        ({"end_id": 2**30, "min_tokens": 4}, "end_id"),
    ],
)
def test_requests_it_cannot_serve_are_refused_by_name(
    batcher: InflightBatcher, overrides: dict[str, object], tensor: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        batcher.submit(request(**overrides), RecordingSink())
    assert caught.value.param == tensor
    assert batcher.active_requests == 0


# ----- state (what the `tensorrt_llm` model publishes as Triton metrics) ---------------------------------
def wait_for_stats(batcher: InflightBatcher, **expected: int) -> BatcherStats:
    """The batcher's stats once every named field (or `slots_free`) has its expected value; fails after 5 s."""
    deadline, stats = time.monotonic() + 5, batcher.stats()
    while any(getattr(stats, name) != value for name, value in expected.items()):
        assert time.monotonic() < deadline, (stats, expected)
        stats = batcher.wait_for_change(stats, timeout=0.1)
    return stats


def test_stats_count_running_waiting_and_cancelled_requests(new_runtime: Callable[..., ReferenceRuntime]) -> None:
    batcher = InflightBatcher(new_runtime(max_batch_size=2))
    try:
        assert batcher.stats() == BatcherStats(
            running=0, waiting=0, max_batch_size=2, cancelled=0, kv_blocks_used=0, kv_blocks_max=2 * 4, max_lora=8
        )
        long = [RecordingSink() for _ in range(2)]
        for sink in long:
            batcher.submit(request(max_new_tokens=200), sink)
        queued = RecordingSink()
        batcher.submit(request(max_new_tokens=3), queued)
        stats = wait_for_stats(batcher, running=2, waiting=1)
        assert stats.slots_free == 0 and not queued.sends
        long[0].cancelled = True
        wait_for_stats(batcher, cancelled=1)  # the queued request takes the freed slot
        assert len(queued.wait().tokens) == 3
        wait_for_stats(batcher, running=1, waiting=0, slots_free=1)
        long[1].cancelled = True
        assert wait_for_stats(batcher, running=0, waiting=0, cancelled=2).slots_free == 2
        assert all(len(sink.wait().tokens) < 200 for sink in long)
    finally:
        batcher.close()


def test_cancelling_a_queued_request_ends_it_while_the_others_complete(
    new_runtime: Callable[..., ReferenceRuntime],
) -> None:
    batcher = InflightBatcher(new_runtime(max_batch_size=1))
    try:
        running, queued, after = RecordingSink(), RecordingSink(), RecordingSink()
        batcher.submit(request(max_new_tokens=240), running)
        batcher.submit(request(max_new_tokens=5), queued)
        batcher.submit(request(max_new_tokens=5), after)
        wait_for_stats(batcher, running=1, waiting=2)
        queued.cancelled = True
        wait_for_stats(batcher, running=1, waiting=1, cancelled=1)
        assert [(ids, final) for ids, final, _ in queued.wait().sends] == [([], True)]
        assert len(running.wait().tokens) == 240
        assert len(after.wait().tokens) == 5
        assert wait_for_stats(batcher, running=0, waiting=0, cancelled=1).slots_free == 1
    finally:
        batcher.close()


def test_many_cancellations_leave_the_kv_cache_as_it_was(new_runtime: Callable[..., ReferenceRuntime]) -> None:
    runtime = new_runtime(max_batch_size=2)
    cache = runtime.model.cache
    slots = cache.num_slots
    batcher = InflightBatcher(runtime)
    try:
        for round_ in range(slots):
            sinks = [RecordingSink() for _ in range(4)]
            for sink in sinks:
                batcher.submit(request(max_new_tokens=240), sink)
            wait_for_stats(batcher, running=2, waiting=2)
            for sink in sinks:
                sink.cancelled = True
            wait_for_stats(batcher, running=0, waiting=0, cancelled=4 * (round_ + 1))
            assert all(len(sink.wait().tokens) < 240 for sink in sinks)
    finally:
        batcher.close()
    assert cache.num_slots == slots
    assert sorted(cache.free_slots) == list(range(slots))


UPSTREAM_METRICS = json.loads((PROJECT / "tests/data/upstream/tensorrtllm_backend_metrics.json").read_text())


def test_stats_publisher_sets_gauges_and_counts_cancellations_only_on_changes(
    new_runtime: Callable[..., ReferenceRuntime],
) -> None:
    triton = FakeTritonMetrics()
    batcher = InflightBatcher(new_runtime(max_batch_size=4))
    metrics = TritonMetrics(triton, {"model": "tensorrt_llm", "version": "1"})
    publisher = MetricsPublisher(batcher, metrics.publish, min_interval_s=0)
    try:
        triton.wait_for(scheduled=0, waiting=0, active=0, max_requests=4, kv_used=0, kv_fraction=0)
        upstream = UPSTREAM_METRICS["families"]
        for family, label, value in triton.metrics:  # the backend's families, label names and values
            if family not in (CANCELLED, LORA_INFO, LORA_REQUESTS):  # ours, and the LoRA protocol's (test_lora)
                assert upstream[family]["kind"] == triton.families[family] == "gauge"
                assert label == upstream[family]["label"] and value in upstream[family]["values"], (family, value)
        assert all(
            {k: v for k, v in m.labels.items() if k in ("model", "version")}
            == {"model": "tensorrt_llm", "version": "1"}
            for m in triton.metrics.values()
        )
        sinks = [RecordingSink() for _ in range(3)]
        for sink in sinks:
            batcher.submit(request(max_new_tokens=200), sink)
        triton.wait_for(scheduled=3, waiting=0, active=3)
        sets = len(triton.metric("scheduled").history)
        while len(sinks[0].sends) < 10:  # a steady batch publishes nothing for its request counts
            time.sleep(0.005)
        assert len(triton.metric("scheduled").history) == sets
        for sink in sinks:
            sink.cancelled = True
        triton.wait_for(scheduled=0, active=0, kv_used=0, cancelled=3)
        assert triton.families[CANCELLED] == "counter"
        assert publisher.failures == 0
    finally:
        publisher.close()
        batcher.close()
        metrics.close()


def test_each_published_value_means_what_the_backend_fills_it_with() -> None:
    """The backend's meanings (model_instance_state.cc WaitForStats, in the upstream data), from one snapshot."""
    triton = FakeTritonMetrics()
    TritonMetrics(triton, {}).publish(
        BatcherStats(running=5, waiting=3, max_batch_size=8, cancelled=1, kv_blocks_used=12, kv_blocks_max=64)
    )
    meanings = UPSTREAM_METRICS["meanings"]
    assert {(family, value) for family, _, value in triton.metrics if family != CANCELLED} <= {
        (family, value) for family, values in meanings.items() for value in values
    }
    value = {short: triton.metric(short).value for short in SHORT_NAMES}
    assert (value["active"], value["scheduled"], value["max_requests"]) == (8, 5, 8)
    assert value["waiting"] == value["active"] - value["scheduled"] == 3
    assert (value["kv_used"], value["kv_max"], value["tokens_per"]) == (12, 64, 64)
    assert value["kv_free"] == 64 - 12 and value["kv_fraction"] == 12 / 64
    assert value["cancelled"] == 1


def test_kv_cache_blocks_follow_the_running_requests_positions(new_runtime: Callable[..., ReferenceRuntime]) -> None:
    """What the endpoint picker reads as KV-cache use: blocks of 64 positions, used / max."""
    runtime = new_runtime(max_batch_size=2)
    triton = FakeTritonMetrics()
    batcher = InflightBatcher(runtime)
    metrics = TritonMetrics(triton, {})
    publisher = MetricsPublisher(batcher, metrics.publish, min_interval_s=0)
    try:
        most = 2 * -(-runtime.max_seq_len // 64)
        triton.wait_for(tokens_per=64, kv_max=most, kv_used=0, kv_free=most)
        sink = RecordingSink()
        batcher.submit(request(max_new_tokens=130), sink)  # 5 prompt positions, then 130 generated
        triton.wait_for(kv_used=1, kv_free=most - 1, kv_fraction=1 / most)
        while len(sink.tokens) < 70:
            time.sleep(0.001)
        triton.wait_for(kv_used=2)  # past 64 positions: a second block
        sink.wait()
        triton.wait_for(kv_used=0, kv_fraction=0, scheduled=0)
        used = [value for value, _ in triton.metric("kv_used").history]
        assert max(used) == 3 and used == [*sorted(used[:-1]), 0]  # 135 positions: 3 blocks, then none
    finally:
        publisher.close()
        batcher.close()
        metrics.close()


def test_cancellation_is_published_within_100_ms_of_being_noticed(
    new_runtime: Callable[..., ReferenceRuntime],
) -> None:
    triton = FakeTritonMetrics()
    batcher = InflightBatcher(new_runtime(max_batch_size=4))
    metrics = TritonMetrics(triton, {})
    publisher = MetricsPublisher(batcher, metrics.publish)
    try:
        sink = NoticingSink()
        batcher.submit(request(max_new_tokens=200), sink)
        triton.wait_for(scheduled=1)
        sink.cancelled = True
        triton.wait_for(scheduled=0, active=0)
        running = triton.metric("scheduled")
        assert sink.noticed is not None and running.history[-1][1] - sink.noticed < 0.1
    finally:
        publisher.close()
        batcher.close()
        metrics.close()


class NoticingSink(RecordingSink):
    """Records when the batcher first saw its cancellation."""

    noticed: float | None = None

    def is_cancelled(self) -> bool:
        if self.cancelled and self.noticed is None:
            self.noticed = time.monotonic()
        return self.cancelled


class FakeMetric:
    def __init__(self, kind: str, labels: dict[str, str]) -> None:
        self.kind, self.labels = kind, labels
        self.value = 0.0
        self.history: list[tuple[float, float]] = []

    def set(self, value: float) -> None:
        assert self.kind == "gauge"
        self.value = value
        self.history.append((value, time.monotonic()))

    def increment(self, value: float) -> None:
        assert self.kind == "counter" and value > 0
        self.value += value
        self.history.append((self.value, time.monotonic()))


SHORT_NAMES = {
    "active": (REQUESTS, "active"),
    "max_requests": (REQUESTS, "max"),
    "scheduled": (REQUESTS, "scheduled"),
    "waiting": (REQUESTS, "waiting"),
    "tokens_per": (KV_CACHE_BLOCKS, "tokens_per"),
    "kv_max": (KV_CACHE_BLOCKS, "max"),
    "kv_used": (KV_CACHE_BLOCKS, "used"),
    "kv_free": (KV_CACHE_BLOCKS, "free"),
    "kv_fraction": (KV_CACHE_BLOCKS, "fraction"),
    "cancelled": (CANCELLED, None),
}


class FakeTritonMetrics:
    """The slice of `triton_python_backend_utils` the metrics use: MetricFamily(name, description, kind).Metric.

    Metrics are kept by (family, label, label value) for the label beside model and version."""

    def __init__(self) -> None:
        self.families: dict[str, str] = {}
        self.metrics: dict[tuple[str, str | None, str | None], FakeMetric] = {}
        fake = self

        class MetricFamily:
            GAUGE, COUNTER = "gauge", "counter"

            def __init__(self, name: str, description: str, kind: str) -> None:
                assert name not in fake.families and description
                fake.families[name] = kind
                self.name, self.kind = name, kind

            def Metric(self, labels: dict[str, str]) -> FakeMetric:
                own = [(k, v) for k, v in labels.items() if k not in ("model", "version")]
                label, value = own[0] if own else (None, None)
                key = (self.name, label, value)
                assert key not in fake.metrics
                fake.metrics[key] = FakeMetric(self.kind, labels)
                return fake.metrics[key]

        self.MetricFamily = MetricFamily

    def metric(self, short: str) -> FakeMetric:
        family, value = SHORT_NAMES[short]
        return next(m for (f, _, v), m in self.metrics.items() if f == family and v == value)

    def wait_for(self, **expected: float) -> None:
        deadline = time.monotonic() + 5
        while True:
            values = {name: self.metric(name).value for name in expected}
            if all(values[name] == pytest.approx(value) for name, value in expected.items()):
                return
            assert time.monotonic() < deadline, (values, expected)
            time.sleep(0.005)


# ----- log probs and logits (return_log_probs, return_context_logits, return_generation_logits) -----------
def reference_logits(runtime: ReferenceRuntime, ids: list[int]) -> torch.Tensor:
    """The model's logits at every position of ``ids``, from a prefill of its own."""
    slot = runtime.model.cache.acquire()
    try:
        return runtime.model.prefill(slot, ids, all_logits=True)
    finally:
        runtime.model.cache.release(slot)


def test_greedy_log_probs_are_the_log_softmax_of_the_chosen_tokens_and_sum_to_the_cumulative(
    batcher: InflightBatcher, new_runtime: Callable[..., ReferenceRuntime]
) -> None:
    streamed, whole = RecordingSink(), RecordingSink()
    # One after the other, each alone in the batch: together, which step admits the second depends on the loop's
    # timing, and a decode batch of another shape rounds differently (1.3e-6 seen), which is not what this checks.
    batcher.submit(request(return_log_probs=True), streamed)
    streamed.wait()
    batcher.submit(request(return_log_probs=True, streaming=False), whole)
    whole.wait()
    per_token = [value for logs in streamed.logs for value in (logs.log_probs or []) if logs is not None]
    assert len(per_token) == len(streamed.tokens) == 8
    expected = torch.log_softmax(reference_logits(new_runtime(), PROMPT + streamed.tokens[:-1])[len(PROMPT) - 1 :], -1)
    want = [float(expected[i, token]) for i, token in enumerate(streamed.tokens)]
    assert per_token == pytest.approx(want, abs=1e-4)
    assert all(value <= 0 for value in per_token)
    final = whole.logs[-1]
    assert final is not None and final.log_probs == pytest.approx(per_token, abs=1e-6)
    assert final.cum_log_prob == pytest.approx(sum(per_token), abs=1e-4)
    last = streamed.logs[-1]
    assert last is not None and last.cum_log_prob == pytest.approx(sum(per_token), abs=1e-4)


def test_sampled_log_probs_are_taken_after_the_temperature(
    batcher: InflightBatcher, new_runtime: Callable[..., ReferenceRuntime]
) -> None:
    sink = RecordingSink()
    batcher.submit(request(return_log_probs=True, sampling=Sampling(temperature=2.0, top_p=1.0, seed=5)), sink)
    sink.wait()
    logits = reference_logits(new_runtime(), PROMPT + sink.tokens[:-1])[len(PROMPT) - 1 :]
    expected = torch.log_softmax(logits / 2.0, -1)
    got = [value for logs in sink.logs if logs is not None for value in (logs.log_probs or [])]
    assert got == pytest.approx([float(expected[i, t]) for i, t in enumerate(sink.tokens)], abs=1e-4)


def test_context_and_generation_logits_are_the_models_logits(
    batcher: InflightBatcher, new_runtime: Callable[..., ReferenceRuntime]
) -> None:
    sink = RecordingSink()
    batcher.submit(
        request(streaming=False, max_new_tokens=4, return_context_logits=True, return_generation_logits=True), sink
    )
    sink.wait()
    logs = sink.logs[-1]
    assert logs is not None and logs.log_probs is None
    assert logs.context_logits is not None and logs.generation_logits is not None
    reference = reference_logits(new_runtime(), PROMPT + sink.tokens[:-1]).numpy()
    assert logs.context_logits.shape == (len(PROMPT), reference.shape[1])
    assert logs.context_logits == pytest.approx(reference[: len(PROMPT)], abs=1e-4)
    assert logs.generation_logits.shape == (4, reference.shape[1])
    assert logs.generation_logits == pytest.approx(reference[len(PROMPT) - 1 :], abs=1e-4)


def test_no_logs_unless_asked(batcher: InflightBatcher) -> None:
    sink = RecordingSink()
    batcher.submit(request(), sink)
    assert sink.wait().logs == [None] * 8
