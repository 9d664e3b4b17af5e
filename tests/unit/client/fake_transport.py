"""A :class:`~nemo_client.transport.Transport` that answers from a script: the client runs whole, no Triton."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nemo_client.transport import Outputs, TensorValue
from nemo_protocol.errors import APIError

HANG = object()
"""A reply that never comes: the stream waits there until it is closed (or its task cancelled)."""

Reply = Any  # Outputs, an exception raised at that point of the stream, or HANG
Handler = Callable[[dict[str, Any]], Sequence[Reply]]
"""A model's answer to one request's inputs: its responses in order."""


@dataclass
class Sent:
    model: str
    inputs: dict[str, Any]
    request_id: str
    deadline: float

    @property
    def body(self) -> dict[str, Any]:
        """The JSON request a ``chat`` model request carries."""
        return json.loads(self.inputs["request"][0])


@dataclass
class FakeTransport:
    handlers: dict[str, Handler] = field(default_factory=dict)
    parameters: dict[str, dict[str, str]] = field(default_factory=dict)
    """Each model's config parameters (``model_parameters``); a model not here is an error."""
    down: APIError | None = None
    """Raised by every call: a server that cannot be reached."""
    not_ready: set[str] = field(default_factory=set)
    sent: list[Sent] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    """The ids of the requests whose stream was closed before its last response (cancelled on the server)."""
    finished: list[str] = field(default_factory=list)
    closed: bool = False

    async def stream(
        self, model: str, inputs: Mapping[str, TensorValue], *, request_id: str, deadline: float
    ) -> AsyncIterator[Outputs]:
        self.sent.append(Sent(model, dict(inputs), request_id, deadline))
        if self.down is not None:
            raise self.down
        done = False
        try:
            for reply in self.handlers[model](dict(inputs)):
                if reply is HANG:
                    await asyncio.Event().wait()
                if isinstance(reply, BaseException):
                    done = True
                    raise reply
                yield reply
            done = True
            self.finished.append(request_id)
        finally:
            if not done:
                self.cancelled.append(request_id)

    async def model_parameters(self, model: str, *, deadline: float) -> dict[str, str]:
        self._check()
        if model not in self.parameters:
            raise APIError(f"no config for {model}")
        return self.parameters[model]

    async def server_live(self, *, deadline: float) -> bool:
        self._check()
        return True

    async def server_ready(self, *, deadline: float) -> bool:
        self._check()
        return not self.not_ready

    async def model_ready(self, model: str, *, deadline: float) -> bool:
        self._check()
        return model not in self.not_ready

    async def close(self) -> None:
        self.closed = True

    def _check(self) -> None:
        if self.down is not None:
            raise self.down


# ----- what the models answer -----------------------------------------------------------------------------------
def chat_response(body: Mapping[str, Any]) -> Outputs:
    """One ``chat`` model response carrying ``body`` (a completion, a chunk or an error)."""
    return {"response": [json.dumps(body).encode()]}


def chat_completion(content: str, *, model: str = "nemo-tiny", finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def chat_chunk(content: str, *, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "nemo-tiny",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }


def tool_call(name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    completion = chat_completion("", finish="tool_calls")
    completion["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call-1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        ],
    }
    return completion


def error(message: str, *, param: str | None = None, error_type: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": None}}


def text_response(text: str, *, prompt_tokens: int, generated: int, finish: str | None = None) -> Outputs:
    """One ``ensemble`` response: text, the token counts so far, and on the last the finish reason."""
    outputs: Outputs = {
        "text_output": [text.encode()],
        "num_input_tokens": np.array([[prompt_tokens]], dtype=np.int32),
        "num_output_tokens": np.array([[generated]], dtype=np.int32),
    }
    if finish is not None:
        outputs["finish_reason"] = [finish.encode()]
    return outputs
