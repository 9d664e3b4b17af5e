"""Async KServe-v2 gRPC transport to Triton: one decoupled request per ``ModelStreamInfer`` stream.

Built on grpc.aio and the protobuf messages that tritonclient ships, so that a stream can ask for
Triton's empty final response (how a decoupled request's end is known), be cancelled when the caller
stops reading, and report gRPC status codes as typed errors. Connection failures before the first
response are retried with exponential backoff; a stream that breaks after it started raises
:class:`~nemo_protocol.errors.StreamInterruptedError` instead of returning truncated output.

The target may name several Triton servers (``dns:///`` a headless Service, ``ipv4:`` a list): each call goes to
one of them by the load-balancing policy, and a request refused before it started (the server unreachable, or
shutting down) is retried on another (:mod:`nemo_client.balancer`).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from nemo_client.balancer import Balancer, Endpoint, Resolver
from nemo_client.grpc_target import (
    DEFAULT_LB_POLICY,
    DEFAULT_RESOLVE_INTERVAL_S,
    LbPolicy,
    check_lb_policy,
    parse_target,
)
from nemo_client.transport import InputRefusedError, Outputs, TensorValue
from nemo_protocol.errors import (
    ENGINE_OUT_OF_MEMORY,
    APIError,
    BadRequestError,
    DeadlineExceededError,
    NotFoundError,
    ServerError,
    StreamInterruptedError,
    UnavailableError,
)

_NUMPY_TO_TRITON = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",  # lora_weights
}
_TRITON_TO_NUMPY = {name: dtype for dtype, name in _NUMPY_TO_TRITON.items()}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of connection failures that happen before a request produced anything."""

    max_retries: int = 2
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.initial_backoff_s * 2.0**attempt)


def encode_bytes_tensor(values: Sequence[str] | Sequence[bytes]) -> bytes:
    """Triton's BYTES layout: each element as a 4-byte little-endian length and its bytes."""
    parts = []
    for value in values:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    values, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        values.append(raw[offset : offset + length])
        offset += length
    return values


def build_request(model: str, inputs: Mapping[str, TensorValue], request_id: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    for name, value in inputs.items():
        tensor = request.inputs.add()
        tensor.name = name
        if isinstance(value, np.ndarray) and value.dtype in _NUMPY_TO_TRITON:
            tensor.datatype = _NUMPY_TO_TRITON[value.dtype]
            tensor.shape.extend(value.shape)
            request.raw_input_contents.append(np.ascontiguousarray(value).tobytes())
        else:
            array = value if isinstance(value, np.ndarray) else np.array(list(value), dtype=object)
            tensor.datatype = "BYTES"
            tensor.shape.extend(array.shape)
            request.raw_input_contents.append(encode_bytes_tensor(list(array.reshape(-1))))
    return request


def decode_outputs(response: service_pb2.ModelInferResponse) -> dict[str, Any]:
    """Output tensors by name: numpy arrays, or lists of bytes for BYTES tensors."""
    outputs: dict[str, Any] = {}
    for index, tensor in enumerate(response.outputs):
        raw = response.raw_output_contents[index] if index < len(response.raw_output_contents) else b""
        if tensor.datatype == "BYTES":
            outputs[tensor.name] = decode_bytes_tensor(raw)
        else:
            dtype = _TRITON_TO_NUMPY.get(tensor.datatype)
            if dtype is None:
                raise ServerError(f"output {tensor.name!r} has unsupported datatype {tensor.datatype}")
            outputs[tensor.name] = np.frombuffer(raw, dtype=dtype).reshape(tuple(tensor.shape))
    return outputs


def error_from_rpc(error: grpc.aio.AioRpcError, *, after_responses: int = 0) -> APIError:
    code, details = error.code(), error.details() or str(error.code())
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(f"the request did not finish before its deadline ({details})")
    if code == grpc.StatusCode.UNAVAILABLE:
        if after_responses:
            return StreamInterruptedError(
                f"the stream broke after {after_responses} responses; the output is incomplete ({details})"
            )
        return UnavailableError(f"Triton is unreachable ({details})")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadRequestError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(details)
    if after_responses and code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return StreamInterruptedError(f"the stream broke after {after_responses} responses ({details})")
    return ServerError(f"{code.name}: {details}")


def error_from_message(message: str, inputs: Collection[str] = ()) -> APIError:
    """A per-request error Triton sent inside the stream (no status code travels with it). ``inputs``: the names
    of the request's input tensors; a model's refusal of one of them (``name: reason``) is an InputRefusedError."""
    if "has no available versions" in message or "is not ready" in message or ENGINE_OUT_OF_MEMORY in message:
        # The model is in the repository but not loaded (a server starting, or unloading it on its way down), or the
        # engine had no memory for this request now.
        return UnavailableError(message)
    if "unknown model" in message or "is not found" in message:
        return NotFoundError(message)
    if "unexpected shape" in message or "unexpected datatype" in message or "unexpected inference input" in message:
        return BadRequestError(message)
    name, separator, reason = message.partition(": ")
    if separator and name in inputs:
        return InputRefusedError(name, reason)
    return ServerError(message)


class TritonTransport:
    """gRPC channels to Triton (one server, or several behind one target); the client's
    :class:`~nemo_client.transport.Transport`. Create it, and use it, inside one event loop.

    ``lb_policy``: how calls spread over the servers ``url`` names (:mod:`nemo_client.balancer`).
    ``resolve_interval_s``: when ``url`` is a DNS name, seconds between look-ups of its addresses (0: never, after the
    first). ``resolver``: that look-up (default: the system resolver), replaceable in tests.
    """

    def __init__(
        self,
        url: str,
        *,
        retry: RetryPolicy | None = None,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        lb_policy: LbPolicy = DEFAULT_LB_POLICY,
        resolve_interval_s: float = DEFAULT_RESOLVE_INTERVAL_S,
        resolver: Resolver | None = None,
    ) -> None:
        self.url = url
        self._retry = retry or RetryPolicy()
        self._metadata = tuple((key.lower(), value) for key, value in (headers or {}).items())
        self.balancer = Balancer(
            parse_target(url),
            policy=check_lb_policy(lb_policy),
            ssl=ssl,
            resolve_interval_s=resolve_interval_s,
            resolver=resolver,
        )

    async def close(self) -> None:
        await self.balancer.close()

    async def _before_retry(self, deadline: float, attempt: int, tried: list[Endpoint]) -> None:
        """Wait before the next attempt, unless another server can take it now."""
        if not self.balancer.has_other(tried):
            await _sleep_before(deadline, self._retry.backoff(attempt))

    async def unary(self, method: str, request: Any, *, deadline: float) -> Any:
        """Call a unary RPC (``ServerReady``, ``ModelConfig``, ...) with retries on connection failures."""
        tried: list[Endpoint] = []
        for attempt in range(self._retry.max_retries + 1):
            endpoint = await self.balancer.pick(tried, deadline=deadline)
            failed = False
            try:
                return await getattr(endpoint.stub, method)(
                    request, timeout=_remaining(deadline), metadata=self._metadata
                )
            except grpc.aio.AioRpcError as error:
                failed = error.code() == grpc.StatusCode.UNAVAILABLE
                if not failed or attempt == self._retry.max_retries:
                    raise error_from_rpc(error) from None
            finally:
                self.balancer.done(endpoint, failed=failed)
            tried.append(endpoint)
            await self._before_retry(deadline, attempt, tried)
        raise AssertionError("unreachable")

    async def server_live(self, *, deadline: float) -> bool:
        return bool((await self.unary("ServerLive", service_pb2.ServerLiveRequest(), deadline=deadline)).live)

    async def server_ready(self, *, deadline: float) -> bool:
        return bool((await self.unary("ServerReady", service_pb2.ServerReadyRequest(), deadline=deadline)).ready)

    async def model_ready(self, model: str, *, deadline: float) -> bool:
        answer = await self.unary("ModelReady", service_pb2.ModelReadyRequest(name=model), deadline=deadline)
        return bool(answer.ready)

    async def model_parameters(self, model: str, *, deadline: float) -> dict[str, str]:
        config = await self.unary("ModelConfig", service_pb2.ModelConfigRequest(name=model), deadline=deadline)
        return {key: value.string_value for key, value in config.config.parameters.items()}

    async def stream(
        self, model: str, inputs: Mapping[str, TensorValue], *, request_id: str, deadline: float
    ) -> AsyncIterator[Outputs]:
        """Run one request on a (decoupled) model; yields each response's outputs until the final one.

        Stopping the iteration early (``aclose``, ``break``, task cancellation) cancels the request
        on the server. A request that a server could not take before anything was produced (unreachable, or its
        model not loaded: a server starting or shutting down) is sent again, to another server where there is one.
        """
        request = build_request(model, inputs, request_id)
        tried: list[Endpoint] = []
        attempt = 0
        while True:
            finished = asyncio.Event()

            async def requests(done: asyncio.Event = finished) -> AsyncIterator[service_pb2.ModelInferRequest]:
                yield request
                # Keep our half of the stream open until the final response: closing it early would
                # end the stream before a decoupled model has answered.
                await done.wait()

            endpoint = await self.balancer.pick(tried, deadline=deadline)
            received, complete = 0, False
            refused: APIError | None = None
            try:
                call = endpoint.stub.ModelStreamInfer(requests(), timeout=_remaining(deadline), metadata=self._metadata)
            except BaseException:
                self.balancer.done(endpoint)
                raise
            try:
                async for message in call:
                    if message.error_message:
                        error = error_from_message(message.error_message, inputs.keys())
                        if received == 0 and isinstance(error, UnavailableError):
                            refused = error  # nothing was produced: another server may take the request
                            break
                        raise error
                    response = message.infer_response
                    if response.outputs:
                        received += 1
                        yield decode_outputs(response)
                    if response.parameters["triton_final_response"].bool_param:
                        # Half-close our side and let the server end the stream: cancelling a stream
                        # that is already complete races with Triton's own clean-up.
                        complete = True
                        finished.set()
                if complete:
                    return
                if refused is None:
                    if received == 0:
                        raise UnavailableError("Triton closed the stream without answering")
                    raise StreamInterruptedError(f"the stream ended after {received} responses without a final one")
            except grpc.aio.AioRpcError as error:
                if complete:
                    return
                if error.code() == grpc.StatusCode.UNAVAILABLE and not received:
                    refused = error_from_rpc(error)  # unreachable: counted against the server below
                if refused is None or attempt >= self._retry.max_retries:
                    raise error_from_rpc(error, after_responses=received) from None
            finally:
                finished.set()
                self.balancer.done(endpoint, failed=refused is not None)
                if not complete:
                    # Abandoned midway (closed, broken, timed out, refused): cancel the request on the server.
                    call.cancel()
            if refused is not None and attempt >= self._retry.max_retries:
                raise refused
            tried.append(endpoint)
            await self._before_retry(deadline, attempt, tried)
            attempt += 1


def _remaining(deadline: float) -> float | None:
    if deadline == float("inf"):
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceededError("the request's deadline passed before it could be sent")
    return remaining


async def _sleep_before(deadline: float, seconds: float) -> None:
    if time.monotonic() + seconds >= deadline:
        raise DeadlineExceededError("retrying the connection would exceed the request's deadline")
    await asyncio.sleep(seconds)
