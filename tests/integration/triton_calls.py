"""Calls to a running Triton over gRPC with `tritonclient`, as any client would make them."""

from __future__ import annotations

import json
import queue
import re
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype


@dataclass
class StreamResult:
    """Everything one decoupled request returned."""

    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    error: str | None = None

    def texts(self, name: str) -> list[str]:
        return [out[name].reshape(-1)[0].decode("utf-8") for out in self.outputs if name in out]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.texts("response")]


def tensors(inputs: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    out = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


class StreamingCall:
    """One request on its own gRPC stream; `cancel()` cancels it the way clients do."""

    def __init__(self, url: str, model: str, inputs: dict[str, np.ndarray], request_id: str = "") -> None:
        self._client = grpcclient.InferenceServerClient(url)
        self._queue: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self._client.start_stream(callback=lambda result, error: self._queue.put((result, error)))
        self._client.async_stream_infer(model, tensors(inputs), request_id=request_id, enable_empty_final_response=True)
        self.result = StreamResult()

    def next(self, timeout: float = 120) -> bool:
        """Wait for the next response; False once the final one (or an error) arrived."""
        result, error = self._queue.get(timeout=timeout)
        if error is not None:
            self.result.error = str(error)
            return False
        response = result.get_response()
        outputs = {tensor.name: result.as_numpy(tensor.name) for tensor in response.outputs}
        if outputs:
            self.result.outputs.append(outputs)
        return not response.parameters["triton_final_response"].bool_param

    def finish(self, timeout: float = 120) -> StreamResult:
        while self.next(timeout):
            pass
        self.close()
        return self.result

    def cancel(self) -> None:
        self._client.stop_stream(cancel_requests=True)
        self._client.close()

    def close(self) -> None:
        self._client.stop_stream()
        self._client.close()


def stream(url: str, model: str, inputs: dict[str, np.ndarray], timeout: float = 120) -> StreamResult:
    return StreamingCall(url, model, inputs).finish(timeout)


def chat(url: str, body: dict[str, Any] | str) -> list[dict[str, Any]]:
    raw = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    result = stream(url, "chat", chat_inputs(raw))
    assert result.error is None, result.error
    return result.events()


def chat_inputs(raw: str) -> dict[str, np.ndarray]:
    return {"request": np.array([raw.encode("utf-8")], dtype=object)}


def infer(url: str, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer(model, tensors(inputs))
        return {tensor.name: result.as_numpy(tensor.name) for tensor in result.get_response().outputs}


def ensemble_inputs(text: str, max_tokens: int, **extra: Any) -> dict[str, np.ndarray]:
    inputs = {
        "text_input": np.array([[text.encode("utf-8")]], dtype=object),
        "max_tokens": np.array([[max_tokens]], dtype=np.int32),
    }
    kinds = {
        "stream": np.bool_, "temperature": np.float32, "top_k": np.int32, "top_p": np.float32, "seed": np.uint64,
        "min_tokens": np.int32,
    }  # fmt: skip
    for name, value in extra.items():
        if name in ("stop_words", "bad_words"):
            inputs[name] = np.array([[w.encode("utf-8") for w in value]], dtype=object)
        else:
            inputs[name] = np.array([[value]], dtype=kinds[name])
    return inputs


_SAMPLE = re.compile(r"^(nemo_runtime_\w+)\{([^}]*)\} (\S+)$", re.MULTILINE)


class BatchMetrics:
    """The CPU `tensorrt_llm` model's in-flight batcher state, read from Triton's metrics endpoint.

    Names without the `nemo_runtime_` prefix: `requests_running`, `requests_waiting`, `batch_slots_free`,
    `requests_cancelled_total` (see nemo_runtime.batch_metrics).
    """

    def __init__(self, host: str, port: int, model: str = "tensorrt_llm") -> None:
        self.url = f"http://{host}:{port}/metrics"
        self._label = f'model="{model}"'

    def read(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url, timeout=5) as answer:
            text = answer.read().decode("utf-8")
        return {
            name.removeprefix("nemo_runtime_"): float(value)
            for name, labels, value in _SAMPLE.findall(text)
            if self._label in labels.split(",")
        }

    def wait_for(self, timeout: float = 5.0, **expected: float) -> dict[str, float]:
        """The metrics once each named one has its expected value; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            values = self.read()
            if all(values.get(name) == value for name, value in expected.items()):
                return values
            assert time.monotonic() < deadline, f"after {timeout} s: {values}, expected {expected}"
            time.sleep(0.02)

    def idle(self) -> dict[str, float]:
        """The metrics once no request runs or waits (what earlier tests left may still be winding down)."""
        return self.wait_for(requests_running=0, requests_waiting=0)


__all__ = [
    "BatchMetrics",
    "InferenceServerException",
    "StreamResult",
    "StreamingCall",
    "chat",
    "ensemble_inputs",
    "infer",
    "stream",
]
