"""The engine runtime's LoRA request metrics: the book the `lora_requests` model keeps of the frontends' reports, the
reports' tensors, and the frontend's reporter (its thread, its batching, and that a lost report fails nothing).
The real Triton path (the chat model reporting over BLS, the model publishing at /metrics) is
tests/integration/test_lora_requests_model.py."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from nemo_chat_core.lora import LoraAdapter
from nemo_protocol.errors import BadRequestError
from nemo_runtime.batch_metrics import MetricsPublisher, lora_info_labels
from nemo_serving.lora_requests import (
    ENDED,
    RECORDED,
    RUNNING,
    WAITING,
    LoraRequestBook,
    LoraRequestReporter,
    LoraRequestsState,
    Report,
    lora_request_reporter,
    record_reports,
)


def adapter(name: str) -> LoraAdapter:
    weights, config = np.zeros((1, 1), np.float16), np.zeros((1, 3), np.int32)
    return LoraAdapter(name=name, task_id=7, rank=1, modules=("attn_q",), weights=weights, config=config)


def tensors(*reports: tuple[str, str, str]) -> dict[str, np.ndarray]:
    columns = list(zip(*reports, strict=True))
    return {
        name: np.array([text.encode() for text in column], dtype=object)
        for name, column in zip(("request_id", "lora_name", "state"), columns, strict=True)
    }


def test_the_book_lists_adapters_by_their_requests_state_and_counts_requests() -> None:
    book = LoraRequestBook(max_lora=8)
    assert book.state() == LoraRequestsState(max_lora=8)
    book.record([Report("a", "tokyo", WAITING), Report("b", "pirate", WAITING), Report("c", "tokyo", WAITING)])
    assert book.state() == LoraRequestsState((), ("pirate", "tokyo"), 8, (("pirate", 1), ("tokyo", 2)))
    book.record([Report("a", "tokyo", RUNNING)])  # one tokyo request runs, another still waits
    state = book.state()
    assert (state.lora_running, state.lora_waiting) == (("tokyo",), ("pirate", "tokyo"))
    assert lora_info_labels(state) == {
        "running_lora_adapters": "tokyo",
        "waiting_lora_adapters": "pirate,tokyo",
        "max_lora": "8",
    }
    book.record([Report("c", "tokyo", ENDED), Report("b", "pirate", RUNNING), Report("a", "tokyo", ENDED)])
    state = book.state()
    assert (state.lora_running, state.lora_waiting) == (("pirate",), ())
    book.record([Report("b", "pirate", ENDED)])
    assert book.state() == LoraRequestsState((), (), 8, (("pirate", 1), ("tokyo", 2)))  # the counts stay


def test_a_request_whose_waiting_report_was_lost_still_counts_and_an_unknown_end_is_ignored() -> None:
    book = LoraRequestBook(max_lora=4)
    book.record([Report("x", "pirate", RUNNING), Report("y", "tokyo", ENDED)])
    assert book.state() == LoraRequestsState(("pirate",), (), 4, (("pirate", 1),))
    book.record([Report("x", "pirate", RUNNING)])  # a repeated report counts nothing again
    assert book.state().lora_requests == (("pirate", 1),)


def test_the_book_keeps_a_bounded_number_of_requests_dropping_the_oldest() -> None:
    book = LoraRequestBook(max_lora=8, max_in_flight=2)
    book.record([Report("a", "tokyo", WAITING), Report("b", "pirate", WAITING)])
    book.record([Report("a", "tokyo", RUNNING), Report("c", "pirate", WAITING)])  # `a` was sent first: it goes
    assert book.state() == LoraRequestsState((), ("pirate",), 8, (("pirate", 2), ("tokyo", 1)))


def test_the_publisher_follows_the_book() -> None:
    book = LoraRequestBook(max_lora=2)
    published: list[LoraRequestsState] = []
    changed = threading.Event()

    def publish(state: LoraRequestsState) -> None:
        published.append(state)
        changed.set()

    publisher = MetricsPublisher(book, publish, min_interval_s=0)
    try:
        assert changed.wait(5) and published[-1] == LoraRequestsState(max_lora=2)
        changed.clear()
        book.record([Report("a", "tokyo", WAITING)])
        assert changed.wait(5) and published[-1].lora_waiting == ("tokyo",)
    finally:
        publisher.close()
    assert publisher.failures == 0


def test_the_model_records_the_reports_of_a_request_and_answers_how_many() -> None:
    book = LoraRequestBook(max_lora=8)
    answer = record_reports(book, tensors(("a", "tokyo", WAITING), ("a", "tokyo", RUNNING)).get)
    assert answer[RECORDED].tolist() == [2]
    assert book.state().lora_running == ("tokyo",)


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        (
            {"lora_name": np.array([b"tokyo"], dtype=object), "state": np.array([b"waiting"], dtype=object)},
            "request_id",
        ),
        (tensors(("a", "tokyo", "queued")), "'queued' is not a state (accepted: waiting, running, ended)"),
        ({**tensors(("a", "tokyo", WAITING)), "lora_name": np.array([], dtype=object)}, "lora_name 0"),
        (
            {**tensors(("a", "tokyo", WAITING)), "state": np.array([b"\xff"], dtype=object)},
            "is not valid UTF-8",
        ),
    ],
)
def test_bad_reports_are_refused_by_name_and_record_nothing(inputs: dict[str, np.ndarray], named: str) -> None:
    book = LoraRequestBook(max_lora=8)
    with pytest.raises(BadRequestError, match=re.escape(named)):
        record_reports(book, inputs.get)
    assert book.state() == LoraRequestsState(max_lora=8)


class RecordingModel:
    """The `lora_requests` model as the reporter calls it (BLS inside Triton): a book behind a call."""

    def __init__(self, fail: bool = False) -> None:
        self.book = LoraRequestBook(max_lora=8)
        self.calls: list[int] = []
        self.fail = fail
        self.release = threading.Event()
        self.release.set()

    def __call__(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        assert model == "lora_requests" and outputs == [RECORDED]
        self.release.wait(5)
        if self.fail:
            raise RuntimeError("Failed for execute the inference request. Model 'lora_requests' is not ready.")
        answer = record_reports(self.book, inputs.get)
        self.calls.append(int(answer[RECORDED][0]))
        return answer


def test_a_request_is_reported_sent_running_and_ended_once_each() -> None:
    model, logged = RecordingModel(), []
    reporter = LoraRequestReporter("lora_requests", model, logged.append)
    try:
        report = reporter.track(adapter("tokyo"))
        assert report is not None
        report.first_token()  # not sent yet: nothing to move
        report.sent()
        assert reporter.flush() and model.book.state().lora_waiting == ("tokyo",)
        report.first_token()
        report.first_token()
        assert reporter.flush() and model.book.state().lora_running == ("tokyo",)
        report.ended()
        report.ended()
        report.sent()
        assert reporter.flush()
        assert model.book.state() == LoraRequestsState((), (), 8, (("tokyo", 1),))
        assert sum(model.calls) == 3 and logged == []
    finally:
        reporter.close()


def test_the_base_model_is_not_reported() -> None:
    model = RecordingModel()
    reporter = LoraRequestReporter("lora_requests", model, print)
    try:
        assert reporter.track(None) is None
    finally:
        reporter.close()
    assert model.calls == []


def test_reports_queued_during_a_call_go_together_in_the_next_one() -> None:
    model = RecordingModel()
    reporter = LoraRequestReporter("lora_requests", model, print)
    try:
        first = reporter.track(adapter("tokyo"))
        assert first is not None
        model.release.clear()  # the model is busy: the first call waits
        first.sent()
        reports = [reporter.track(adapter(name)) for name in ("pirate", "tokyo", "pirate")]
        for report in reports:
            assert report is not None
            report.sent()
        model.release.set()
        assert reporter.flush()
        assert model.calls in ([1, 3], [4])  # the first call took one or all of them; never one call each
        assert model.book.state().lora_requests == (("pirate", 2), ("tokyo", 2))
    finally:
        reporter.close()


def test_a_report_that_cannot_be_delivered_fails_nothing_and_is_logged_now_and_then() -> None:
    model, logged = RecordingModel(fail=True), []
    reporter = LoraRequestReporter("lora_requests", model, logged.append, log_every_s=3600)
    try:
        for _ in range(3):
            report = reporter.track(adapter("tokyo"))
            assert report is not None
            report.sent()  # raises nothing
            assert reporter.flush()
        assert reporter.lost == 3
        assert len(logged) == 1 and "'lora_requests'" in logged[0] and "is not ready" in logged[0]
    finally:
        reporter.close()


def test_an_adapter_name_that_is_no_utf8_is_lost_alone() -> None:
    """A directory name with bytes that are no UTF-8 (held as surrogates) cannot be sent; the reporter goes on."""
    model, logged = RecordingModel(), []
    reporter = LoraRequestReporter("lora_requests", model, logged.append)
    try:
        odd = reporter.track(adapter("caf\udce9"))
        assert odd is not None
        odd.sent()
        assert reporter.flush() and reporter.lost == 1 and "encode" in logged[0]
        fine = reporter.track(adapter("tokyo"))
        assert fine is not None
        fine.sent()
        assert reporter.flush() and model.book.state().lora_waiting == ("tokyo",)
    finally:
        reporter.close()


def test_a_frontend_reports_only_where_its_config_names_the_model() -> None:
    assert lora_request_reporter("", RecordingModel(), print) is None
    reporter = lora_request_reporter("lora_requests", RecordingModel(), print)
    assert isinstance(reporter, LoraRequestReporter)
    reporter.close()


def test_close_sends_what_is_queued() -> None:
    model = RecordingModel()
    reporter = LoraRequestReporter("lora_requests", model, print)
    report = reporter.track(adapter("pirate"))
    assert report is not None
    report.sent()
    reporter.close()
    assert model.book.state().lora_waiting == ("pirate",)
