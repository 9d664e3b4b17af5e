"""Calls to a running Triton over gRPC with `tritonclient`, as any client would make them."""

from __future__ import annotations

import json
import queue
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
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


ENGINE_METRICS = {
    ("nv_trt_llm_request_metrics", "request_type", "scheduled"): "requests_running",
    ("nv_trt_llm_request_metrics", "request_type", "waiting"): "requests_waiting",
    ("nv_trt_llm_request_metrics", "request_type", "active"): "requests_active",
    ("nv_trt_llm_request_metrics", "request_type", "max"): "max_batch_size",
    ("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "used"): "kv_blocks_used",
    ("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "max"): "kv_blocks_max",
    ("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "tokens_per"): "kv_tokens_per_block",
    ("nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "fraction"): "kv_cache_fraction",
    ("nemo_runtime_requests_cancelled_total", None, None): "requests_cancelled_total",
}
"""The samples a python `tensorrt_llm` model publishes (the C++ backend's families, nemo_runtime.batch_metrics),
by the short names the tests use."""


class BatchMetrics:
    """The state of a python `tensorrt_llm` model (reference runtime or stand-in), read from Triton's metrics endpoint.

    Short names (ENGINE_METRICS): `requests_running`, `requests_waiting`, `requests_active`, `max_batch_size`,
    `kv_blocks_used`, `kv_blocks_max`, `kv_tokens_per_block`, `kv_cache_fraction`, `requests_cancelled_total`, and
    `batch_slots_free` (`max_batch_size` - `requests_running`).
    """

    def __init__(self, host: str, port: int, model: str = "tensorrt_llm") -> None:
        self.url = f"http://{host}:{port}/metrics"
        self._model = model

    def read(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url, timeout=5) as answer:
            text = answer.read().decode("utf-8")
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("model") != self._model:
                    continue
                own = [(k, v) for k, v in sample.labels.items() if k not in ("model", "version")]
                label, value = own[0] if own else (None, None)
                short = ENGINE_METRICS.get((sample.name, label, value))
                if short is not None:
                    values[short] = sample.value
        if "max_batch_size" in values and "requests_running" in values:
            values["batch_slots_free"] = values["max_batch_size"] - values["requests_running"]
        return values

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
