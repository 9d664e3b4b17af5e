"""LoRA requests of the engine runtime (`gpu` target), reported by the frontend models for the router's metrics.

The C++ tensorrtllm backend publishes no LoRA metric, so the Gateway API Inference Extension's LoRA info gauge
(`vllm:lora_requests_info`) and the requests-per-adapter counters come from the python models that send adapter
requests to it. Each frontend process (every instance of `chat` is a stub process of its own) holds a
:class:`LoraRequestReporter`; each adapter request's :class:`LoraRequestReport` follows it through
nemo_serving.triton_io.BlsGeneration:

| report | when | the adapter counts as |
| --- | --- | --- |
| `waiting` | the request went to `tensorrt_llm` | waiting: no token yet (queued or in prefill) |
| `running` | its first token came back | running: producing tokens |
| `ended` | its last response came back (finished, cancelled or failed) | neither |

The reporter sends them from a thread of its own, everything queued since its last call in one non-decoupled BLS
call, to the one `lora_requests` model of the repository (instance count 1: one publisher per Triton). There a
:class:`LoraRequestBook` keeps the requests in flight per adapter; nemo_runtime.batch_metrics publishes its
state under the CPU runtime's names. Base-model requests are not reported. A report that cannot be delivered is
logged (at most once a minute) and never fails the user's request.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from nemo_chat_core.lora import LoraAdapter
from nemo_chat_core.tensor_values import Inputs, texts
from nemo_protocol.errors import BadRequestError

WAITING, RUNNING, ENDED = "waiting", "running", "ended"
STATES = (WAITING, RUNNING, ENDED)
REPORT_INPUTS = ("request_id", "lora_name", "state")  # the `lora_requests` model's inputs: one string per report
RECORDED = "recorded"  # its output: how many reports it recorded
LOG_EVERY_S = 60.0
MAX_IN_FLIGHT = 65536
"""Requests the book keeps at most (the oldest goes first): far above what an engine holds, a bound on what requests
whose end was never reported (a frontend process that died, a client calling the model itself) can leave behind."""


@dataclass(frozen=True)
class Report:
    request_id: str  # unique per adapter request, in the pod
    lora_name: str
    state: str  # one of STATES


@dataclass(frozen=True)
class LoraRequestsState:
    """The adapters of the requests in flight now, in the fields nemo_runtime.batch_metrics publishes."""

    lora_running: tuple[str, ...] = ()  # adapters with a request producing tokens, sorted
    lora_waiting: tuple[str, ...] = ()  # adapters with a request sent and no token yet, sorted
    max_lora: int = 0  # adapters the engine holds on the GPU at once
    lora_requests: tuple[tuple[str, int], ...] = ()  # (adapter, requests sent since start), sorted


class LoraRequestBook:
    """The adapter requests in flight, from the frontends' reports; thread-safe."""

    def __init__(self, max_lora: int, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._max_lora = max_lora
        self._max_in_flight = max_in_flight
        self._in_flight: dict[str, tuple[str, bool]] = {}  # request id → (adapter, running)
        self._sent: Counter[str] = Counter()
        self._changed = threading.Condition()
        self._state = LoraRequestsState(max_lora=max_lora)

    def record(self, reports: Iterable[Report]) -> None:
        with self._changed:
            for report in reports:
                if report.state == ENDED:
                    self._in_flight.pop(report.request_id, None)
                    continue
                if report.request_id not in self._in_flight:
                    # a `running` report counts the request too when its `waiting` one was lost
                    self._sent[report.lora_name] += 1
                self._in_flight[report.request_id] = (report.lora_name, report.state == RUNNING)
            while len(self._in_flight) > self._max_in_flight:  # dicts keep order: the first sent goes
                del self._in_flight[next(iter(self._in_flight))]
            state = self._snapshot()
            if state != self._state:
                self._state = state
                self._changed.notify_all()

    def _snapshot(self) -> LoraRequestsState:
        in_flight = self._in_flight.values()
        return LoraRequestsState(
            lora_running=tuple(sorted({name for name, running in in_flight if running})),
            lora_waiting=tuple(sorted({name for name, running in in_flight if not running})),
            max_lora=self._max_lora,
            lora_requests=tuple(sorted(self._sent.items())),
        )

    def state(self) -> LoraRequestsState:
        with self._changed:
            return self._state

    def wait_for_change(self, since: LoraRequestsState | None, timeout: float) -> LoraRequestsState:
        """The state once it differs from ``since`` (at once when it does already), or after ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._state != since, timeout)
            return self._state


def reports_from_inputs(get: Inputs) -> list[Report]:
    """The reports of one request to the `lora_requests` model; BadRequestError naming the tensor at fault."""
    columns = []
    for name in REPORT_INPUTS:
        array = get(name)
        if array is None:
            raise BadRequestError(f"the input tensor {name!r} is required (one string per report)", param=name)
        columns.append(texts(array, name))
    if len({len(column) for column in columns}) != 1:
        counts = ", ".join(f"{name} {len(column)}" for name, column in zip(REPORT_INPUTS, columns, strict=True))
        raise BadRequestError(f"{', '.join(REPORT_INPUTS)} must hold one non-empty string per report, got {counts}")
    reports = [Report(*row) for row in zip(*columns, strict=True)]
    for report in reports:
        if report.state not in STATES:
            raise BadRequestError(f"{report.state!r} is not a state (accepted: {', '.join(STATES)})", param="state")
    return reports


def record_reports(book: LoraRequestBook, get: Inputs) -> dict[str, np.ndarray]:
    """The `lora_requests` model's answer to one request: its reports recorded in ``book``."""
    reports = reports_from_inputs(get)
    book.record(reports)
    return {RECORDED: np.array([len(reports)], dtype=np.int32)}


Call = Callable[[str, dict[str, np.ndarray], list[str]], object]
"""A non-decoupled call to a model of the repository: (model, input tensors, output names)."""


class LoraRequestReporter:
    """A frontend process's reports to the `lora_requests` model, sent from a thread of its own so that no request
    waits on them: everything queued since the last call goes in one call, in order."""

    def __init__(self, model: str, call: Call, log: Callable[[str], None], log_every_s: float = LOG_EVERY_S) -> None:
        self._model = model
        self._call = call
        self._log = log
        self._log_every_s = log_every_s
        self._queued: list[Report] = []
        self._closed = False
        self._idle = True
        self._wake = threading.Condition()
        self.lost = 0  # reports that could not be delivered
        self._unlogged = 0  # of which not logged yet
        self._logged_at = -float("inf")
        self._thread = threading.Thread(target=self._run, name="lora-request-reports", daemon=True)
        self._thread.start()

    def track(self, adapter: LoraAdapter | None) -> LoraRequestReport | None:
        """The report of a new request for ``adapter``; None for the base model (not reported)."""
        return None if adapter is None else LoraRequestReport(self, adapter.name)

    def report(self, request_id: str, lora_name: str, state: str) -> None:
        with self._wake:
            self._queued.append(Report(request_id, lora_name, state))
            self._wake.notify_all()  # the thread, and flush() waiting beside it

    def _run(self) -> None:
        while True:
            with self._wake:
                self._idle = not self._queued
                self._wake.notify_all()
                self._wake.wait_for(lambda: self._queued or self._closed)
                if not self._queued:
                    return
                reports, self._queued = self._queued, []
                self._idle = False
            self._send(reports)

    def _send(self, reports: list[Report]) -> None:
        columns = zip(*((r.request_id, r.lora_name, r.state) for r in reports), strict=True)
        try:
            tensors = {  # an adapter's name is its directory's: it may hold bytes that are no UTF-8
                name: np.array([text.encode("utf-8") for text in column], dtype=object)
                for name, column in zip(REPORT_INPUTS, columns, strict=True)
            }
            self._call(self._model, tensors, [RECORDED])
        except Exception as exc:  # the metrics must never fail a request: counted, and logged now and then
            self.lost += len(reports)
            self._unlogged += len(reports)
            now = time.monotonic()
            if now - self._logged_at >= self._log_every_s:
                self._log(
                    f"LoRA request metrics: {self._unlogged} report(s) to the {self._model!r} model lost "
                    f"({self.lost} since start), the last because {exc}"
                )
                self._logged_at, self._unlogged = now, 0

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued report has been sent (or lost); False after ``timeout`` seconds."""
        with self._wake:
            return self._wake.wait_for(lambda: self._idle and not self._queued, timeout)

    def close(self) -> None:
        """Send what is queued and stop."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=5)


class LoraRequestReport:
    """One adapter request's way through the engine, as BlsGeneration sees it; every step is reported once."""

    def __init__(self, reporter: LoraRequestReporter, lora_name: str) -> None:
        self._reporter = reporter
        self._lora_name = lora_name
        self._request_id = uuid.uuid4().hex
        self._state: str | None = None

    def _move(self, state: str) -> None:
        self._state = state
        self._reporter.report(self._request_id, self._lora_name, state)

    def sent(self) -> None:
        if self._state is None:
            self._move(WAITING)

    def first_token(self) -> None:
        if self._state == WAITING:
            self._move(RUNNING)

    def ended(self) -> None:
        if self._state in (WAITING, RUNNING):
            self._move(ENDED)


def lora_request_reporter(
    model: str, call: Call, log: Callable[[str], None], log_every_s: float = LOG_EVERY_S
) -> LoraRequestReporter | None:
    """The reporter of a frontend model whose config names the `lora_requests` model (``model``; empty: none)."""
    return LoraRequestReporter(model, call, log, log_every_s) if model else None
