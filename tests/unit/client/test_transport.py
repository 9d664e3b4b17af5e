"""The gRPC transport: tensor encoding, typed errors, retries and deadlines against real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from nemo_client import NemoClient
from nemo_client.transport import InputRefusedError
from nemo_client.triton_transport import (
    build_request,
    decode_bytes_tensor,
    decode_outputs,
    encode_bytes_tensor,
    error_from_message,
    error_from_rpc,
)
from nemo_protocol.errors import (
    APIError,
    BadRequestError,
    DeadlineExceededError,
    NotFoundError,
    ServerError,
    StreamInterruptedError,
    UnavailableError,
)


def test_bytes_tensor_round_trip() -> None:
    values = ["", "hello", "日本語 🚀", '{"a": 1}']
    assert [v.decode() for v in decode_bytes_tensor(encode_bytes_tensor(values))] == values


def test_request_asks_for_the_final_response_and_types_tensors() -> None:
    request = build_request(
        "chat",
        {"request": ["{}"], "max_tokens": np.array([[8]], dtype=np.int32), "stream": np.array([[True]])},
        "req-1",
    )
    assert request.model_name == "chat" and request.id == "req-1"
    assert request.parameters["triton_enable_empty_final_response"].bool_param
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("request", "BYTES", [1]),
        ("max_tokens", "INT32", [1, 1]),
        ("stream", "BOOL", [1, 1]),
    ]
    # The same bytes come back out when the request is read as a response would be.
    response = service_pb2.ModelInferResponse(
        outputs=[{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in request.inputs]
    )
    response.raw_output_contents.extend(request.raw_input_contents)
    outputs = decode_outputs(response)
    assert outputs["request"] == [b"{}"]
    assert outputs["max_tokens"].tolist() == [[8]]


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "after", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 0, BadRequestError),
        (grpc.StatusCode.NOT_FOUND, 0, NotFoundError),
        (grpc.StatusCode.UNAVAILABLE, 0, UnavailableError),
        (grpc.StatusCode.UNAVAILABLE, 3, StreamInterruptedError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 0, DeadlineExceededError),
        (grpc.StatusCode.INTERNAL, 0, ServerError),
        (grpc.StatusCode.INTERNAL, 2, StreamInterruptedError),
    ],
)
def test_grpc_status_codes_become_typed_errors(code: grpc.StatusCode, after: int, expected: type) -> None:
    error = error_from_rpc(_rpc_error(code, "the server's words"), after_responses=after)
    assert type(error) is expected
    assert "the server's words" in error.message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_down_gives_unavailable_after_bounded_retries() -> None:
    with NemoClient(f"127.0.0.1:{_closed_port()}", max_retries=2, timeout=30) as client:
        start = time.monotonic()
        with pytest.raises(UnavailableError, match="unreachable"):
            client.chat.completions.create(messages=[{"role": "user", "content": "hi"}])
        elapsed = time.monotonic() - start
    assert elapsed >= 0.1 + 0.2, "two backoffs happened before giving up"
    assert elapsed < 20, "retries are bounded"


@pytest.fixture
def silent_tcp_peer() -> Iterator[int]:
    """A TCP server that accepts connections and never speaks: the HTTP/2 handshake never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for sock in accepted:
        sock.close()
    listener.close()


class _HangingInference(service_pb2_grpc.GRPCInferenceServiceServicer):
    """A KServe-v2 gRPC server that takes requests and never answers them."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def ModelStreamInfer(self, request_iterator, context):  # type: ignore[no-untyped-def]
        next(request_iterator)
        self.release.wait(30)
        return iter(())


@pytest.fixture
def hanging_grpc_server() -> Iterator[int]:
    release = threading.Event()
    server = grpc.server(ThreadPoolExecutor(4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_HangingInference(release), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    release.set()
    server.stop(grace=None)


def test_a_peer_that_never_completes_the_handshake_is_unavailable(silent_tcp_peer: int) -> None:
    with NemoClient(f"127.0.0.1:{silent_tcp_peer}", max_retries=0) as client, pytest.raises(UnavailableError):
        client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], timeout=60)


def test_deadline_covers_the_whole_call(hanging_grpc_server: int) -> None:
    with NemoClient(f"127.0.0.1:{hanging_grpc_server}", max_retries=0) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], timeout=0.5)
        assert time.monotonic() - start < 5


def test_a_chat_request_with_a_lone_surrogate_is_refused_before_anything_is_sent() -> None:
    # Port 1 has no server: the refusal comes before any connection is made.
    with NemoClient("127.0.0.1:1") as client, pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(messages=[{"role": "user", "content": "\ud800"}], model="m")
    assert caught.value.param == "messages[0].content"


def test_a_model_s_refusal_of_an_input_it_was_sent_is_an_input_refused_error() -> None:
    error = error_from_message("max_tokens: must be at least 1, got 0", {"text_input", "max_tokens"})
    assert type(error) is InputRefusedError and isinstance(error, ServerError)  # a 500 unless the caller maps it
    assert (error.input_name, error.reason) == ("max_tokens", "must be at least 1, got 0")
    assert error.message == "max_tokens: must be at least 1, got 0"  # the text as Triton sent it
    for message in ("max_tokens: not sent, so not a refusal of ours", "internal error: KeyError('x')", "boom"):
        assert type(error_from_message(message, {"text_input"})) is ServerError


class _RefusingInference(service_pb2_grpc.GRPCInferenceServiceServicer):
    """A KServe-v2 gRPC server whose model answers every request with an error inside the stream, as Triton does."""

    def __init__(self, message: str) -> None:
        self.message = message

    def ModelStreamInfer(self, request_iterator, context):  # type: ignore[no-untyped-def]
        next(request_iterator)
        yield service_pb2.ModelStreamInferResponse(error_message=self.message)


@pytest.mark.parametrize(
    ("message", "param", "expected"),
    [
        ("text_input: the prompt is 3002 tokens; this deployment accepts at most 2048", "prompt", BadRequestError),
        ("generation failed: out of memory", None, ServerError),
    ],
)
def test_an_ensemble_refusal_over_grpc_is_the_400_naming_the_completion_field(
    message: str, param: str | None, expected: type
) -> None:
    server = grpc.server(ThreadPoolExecutor(2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_RefusingInference(message), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with NemoClient(f"127.0.0.1:{port}", max_retries=0, timeout=30) as client:
            for stream in (False, True):
                with pytest.raises(APIError) as raised:
                    client.completions.create(prompt="hi", stream=stream)  # type: ignore[call-overload]
                assert type(raised.value) is expected and raised.value.param == param
                assert str(raised.value) == (f"prompt: {message.partition(': ')[2]}" if param else message)
    finally:
        server.stop(grace=None)
