"""What the client needs of its connection to Triton: the :class:`Transport` interface, and deadlines.

The client and its resources reach Triton only through this interface (``AsyncNemoClient.transport``).
:class:`~nemo_client.triton_transport.TritonTransport` implements it over Triton's KServe-v2 gRPC API; a test
passes its own (``AsyncNemoClient(transport=...)``) to run the client without a server.

Every failure is a :class:`~nemo_protocol.errors.APIError`: ``UnavailableError`` when Triton cannot be reached,
``DeadlineExceededError`` past the deadline, ``StreamInterruptedError`` when a stream breaks after it started,
``BadRequestError`` / ``NotFoundError`` for what Triton itself refuses, :class:`InputRefusedError` for a model's
refusal of one of the inputs, ``ServerError`` for any other error of a model.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from nemo_protocol.errors import ServerError

TensorValue = np.ndarray[Any, Any] | Sequence[str] | Sequence[bytes]
"""An input tensor: a numpy array (BOOL, INT32, INT64, UINT64, FP16, FP32, or object for BYTES), or strings / bytes
(a BYTES tensor of shape [len])."""

Outputs = dict[str, Any]
"""One response's output tensors by name: numpy arrays, or lists of bytes for BYTES tensors."""


class Transport(Protocol):
    """A connection to one Triton server, used inside one event loop."""

    def stream(
        self, model: str, inputs: Mapping[str, TensorValue], *, request_id: str, deadline: float
    ) -> AsyncIterator[Outputs]:
        """Run one request on a (decoupled) model: each response's outputs until the final one.

        Closing the iterator early (``aclose``, ``break``, task cancellation) cancels the request on the server.
        """
        ...

    async def model_parameters(self, model: str, *, deadline: float) -> dict[str, str]:
        """The ``parameters`` of a model's configuration (Triton's read-only model-config API)."""
        ...

    async def server_live(self, *, deadline: float) -> bool: ...

    async def server_ready(self, *, deadline: float) -> bool: ...

    async def model_ready(self, model: str, *, deadline: float) -> bool: ...

    async def close(self) -> None: ...


class InputRefusedError(ServerError):
    """A model refused one of the request's input tensors, inside its stream.

    Triton carries a model's error in the stream as text, with no status code: the transport cannot tell a
    refusal from a failure, except that this project's models word a refusal as ``BadRequestError`` does,
    ``input: reason``, naming an input the request sent. It stays a ``ServerError`` (500) for a caller that sent
    the tensors on its own account; a caller that knows which of its own caller's fields each tensor carries
    reports it as the ``BadRequestError`` naming that field (``completions``, through
    :func:`nemo_chat_core.completion_request.refused_field`).
    """

    def __init__(self, input_name: str, reason: str) -> None:
        super().__init__(f"{input_name}: {reason}")
        self.input_name = input_name
        self.reason = reason


def deadline_after(timeout: float | None) -> float:
    """The ``time.monotonic()`` deadline of a call that may take ``timeout`` seconds (None: no deadline)."""
    return time.monotonic() + timeout if timeout is not None else float("inf")
