"""Glue between Triton's python backend objects and the serving logic. Importable only inside Triton.

Reads request tensors, builds responses, sends `tensorrt_llm` results through a response sender, and
calls other models of the repository (BLS) — nothing here decides anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

from nemo_chat_core.engine_tensors import (
    GenerationRequest,
    LogOutputs,
    engine_logs,
    output_tensors,
    output_token_ids,
    stop_inputs,
)
from nemo_chat_core.lora import is_lora_cache_miss
from nemo_chat_core.tensor_values import scalar
from nemo_protocol.errors import BadRequestError

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
LOG_OUTPUTS = ("output_log_probs", "cum_log_probs", "context_logits", "generation_logits")
T = TypeVar("T")


def inputs(request: pb_utils.InferenceRequest) -> Callable[[str], np.ndarray | None]:
    """Input tensor lookup by name for one request (None when absent)."""

    def get(name: str) -> np.ndarray | None:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    return get


def output_lookup(item: pb_utils.InferenceResponse) -> Callable[[str], np.ndarray | None]:
    """Output tensor lookup by name for one response (None when absent)."""

    def get(name: str) -> np.ndarray | None:
        tensor = pb_utils.get_output_tensor_by_name(item, name)
        return None if tensor is None else tensor.as_numpy()

    return get


def response(tensors: dict[str, np.ndarray]) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in tensors.items()])


def error_response(message: str) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


class ResponseSink:
    """The in-flight batcher's sink for one decoupled `tensorrt_llm` request."""

    def __init__(self, request: pb_utils.InferenceRequest, sender: pb_utils.InferenceResponseSender) -> None:
        self._request = request
        self._sender = sender

    def send(self, token_ids: list[int], final: bool, logs: LogOutputs | None = None) -> None:
        if final and not token_ids and logs is None:
            self._sender.send(flags=FINAL)
        else:
            self._sender.send(response(output_tensors(token_ids, logs)), flags=FINAL if final else 0)

    def fail(self, message: str) -> None:
        self._sender.send(error_response(message), flags=FINAL)

    def is_cancelled(self) -> bool:
        return bool(self._request.is_cancelled())


class Engine(Protocol):
    """What a python `tensorrt_llm` model serves requests with (nemo_runtime's in-flight batcher, the stand-in)."""

    def submit(self, request: GenerationRequest, sink: ResponseSink, tag: str = "") -> None: ...

    def stop(self, tag: str) -> int: ...


def serve_engine_requests(engine: Engine, requests: list, *, exclude_input_default: bool) -> None:
    """The `tensorrt_llm` contract's execute: each request joins the engine, or (``stop=true``) ends the in-flight
    request with its id; a request the engine refuses gets its error response at once."""
    for request in requests:
        get = inputs(request)
        sender = request.get_response_sender()
        try:
            if scalar(get("stop"), "stop", bool, False):
                engine.stop(request.request_id())
                sender.send(flags=FINAL)
                continue
            generation = GenerationRequest.from_inputs(get, exclude_input_default=exclude_input_default)
            engine.submit(generation, ResponseSink(request, sender), tag=request.request_id())
        except BadRequestError as exc:
            sender.send(error_response(str(exc)), flags=FINAL)


def admit_then_stream(
    requests: list,
    admit: Callable[[pb_utils.InferenceRequest], tuple | None],
    stream: Callable[..., None],
    report_failure: Callable[[pb_utils.InferenceResponseSender, Exception], None],
) -> None:
    """A decoupled frontend model's execute: ``admit(request)`` (parse, validate, start the generation) runs here
    and holds this instance, so that requests arriving meanwhile go to the model's other instances; then
    ``stream(sender, *admitted)`` runs on a thread of its own, so requests overlap and the engine batches them.
    A failure in either step is that request's error response (``report_failure``), and ends it alone."""
    for request in requests:
        sender = request.get_response_sender()
        admitted = _reporting_failure(sender, report_failure, admit, request)
        if admitted is not None:
            threading.Thread(
                target=_reporting_failure, args=(sender, report_failure, stream, sender, *admitted), daemon=True
            ).start()


def _reporting_failure(
    sender: pb_utils.InferenceResponseSender,
    report_failure: Callable[[pb_utils.InferenceResponseSender, Exception], None],
    step: Callable[..., T],
    *args: object,
) -> T | None:
    try:
        return step(*args)
    except Exception as exc:  # keep serving: the failure is this request's alone
        report_failure(sender, exc)
        return None


class GenerationReport(Protocol):
    """Who hears of a generation's steps (nemo_serving.lora_requests.LoraRequestReport); each is told once."""

    def sent(self) -> None: ...

    def first_token(self) -> None: ...

    def ended(self) -> None: ...  # finished, failed or cancelled: its last response came back


class BlsGeneration:
    """A request to the `tensorrt_llm` model, iterated as chunks of new token ids (`with_logs`: with the log
    probs and logits the request asked for)."""

    def __init__(
        self,
        request: GenerationRequest,
        request_id: str,
        model: str = "tensorrt_llm",
        resend: GenerationRequest | None = None,
        report: GenerationReport | None = None,
    ) -> None:
        """``resend``: the request with its LoRA adapter's weights, sent instead when the engine answers that it
        does not hold the adapter (the tensorrtllm backend's "LoRA task N not found in cache"). ``report``: told
        when the request was sent, its first token came and its last response (the LoRA request metrics)."""
        self._model = model
        self._request_id = request_id
        self._resend = resend
        self._report = report
        self._wanted = {
            "output_log_probs": request.return_log_probs,
            "cum_log_probs": request.return_log_probs,
            "context_logits": request.return_context_logits,
            "generation_logits": request.return_generation_logits,
        }
        self.wants_logs = any(self._wanted.values())
        self._responses = self._exec(request)
        if report is not None:
            report.sent()

    def _exec(self, request: GenerationRequest) -> Iterator[pb_utils.InferenceResponse]:
        return pb_utils.InferenceRequest(
            model_name=self._model,
            request_id=self._request_id,
            inputs=[pb_utils.Tensor(k, v) for k, v in request.to_inputs().items()],
            requested_output_names=[
                "output_ids",
                "sequence_length",
                *(name for name, on in self._wanted.items() if on),
            ],
        ).exec(decoupled=True)

    def __iter__(self) -> Iterator[list[int]]:
        for ids, _ in self.with_logs():
            yield ids

    def with_logs(self) -> Iterator[tuple[list[int], LogOutputs]]:
        """Each response's new ids and what it carries beside them (fields None where not asked for)."""
        if self._report is None:
            yield from self._outputs()
            return
        try:
            for output in self._outputs():
                self._report.first_token()
                yield output
        finally:  # read to the end, failed, or dropped by its reader (GeneratorExit)
            self._report.ended()

    def _outputs(self) -> Iterator[tuple[list[int], LogOutputs]]:
        for item in self._responses:
            if item.has_error():
                message = item.error().message()
                if self._resend is not None and is_lora_cache_miss(message):
                    self._responses, self._resend = self._exec(self._resend), None
                    yield from self._outputs()
                    return
                raise GenerationError(message)
            self._resend = None  # the engine took the request: a later error is no cache miss
            get = output_lookup(item)
            ids = get("output_ids")
            if ids is None:
                continue
            outputs = {name: get(name) for name in LOG_OUTPUTS}
            yield (
                output_token_ids(ids, get("sequence_length")),
                engine_logs({name: value for name, value in outputs.items() if value is not None}),
            )

    def cancel(self) -> None:
        """End the generation early (a `stop` request with the same id), freeing its batch slot."""
        stop = pb_utils.InferenceRequest(
            model_name=self._model,
            request_id=self._request_id,
            inputs=[pb_utils.Tensor(k, v) for k, v in stop_inputs().items()],
            requested_output_names=["output_ids"],
        )
        for _ in stop.exec(decoupled=True):
            pass


class GenerationError(RuntimeError):
    """`tensorrt_llm` answered with an error."""


def bls_call(model: str, tensors: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """A non-decoupled call to another model; raises GenerationError with its error message."""
    result = pb_utils.InferenceRequest(
        model_name=model,
        inputs=[pb_utils.Tensor(k, v) for k, v in tensors.items()],
        requested_output_names=outputs,
    ).exec()
    if result.has_error():
        raise GenerationError(result.error().message())
    return {name: pb_utils.get_output_tensor_by_name(result, name).as_numpy() for name in outputs}
