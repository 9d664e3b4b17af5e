"""Triton python model `tensorrt_llm` (pytorch): TensorRT-LLM's LLM API on its PyTorch backend.

The engine (nemo_runtime.llm_api) drives `tensorrt_llm.LLM` on an asyncio loop of its own; each request's responses
stream back through its response sender. A request carrying `stop=true` ends the in-flight request with the same
request id. The LLM's iteration stats are published as the C++ backend's metric families (nemo_runtime.batch_metrics).
"""

import triton_python_backend_utils as pb_utils

from nemo_runtime.batch_metrics import MetricsPublisher, TritonMetrics
from nemo_runtime.llm_api import LlmApiEngine, LlmSettings
from nemo_serving.model_args import ModelArgs
from nemo_serving.triton_io import serve_engine_requests


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        try:
            settings = LlmSettings.from_parameters(model.parameters, model.path)
        except ValueError as error:
            raise ValueError(f"model {model.name!r}: {error}") from None
        self.exclude_input_default = model.bool("exclude_input_in_output")
        self.engine = LlmApiEngine(settings)
        self.metrics = TritonMetrics(pb_utils, {"model": model.name, "version": args["model_version"]})
        self.publisher = MetricsPublisher(self.engine, self.metrics.publish)

    def execute(self, requests: list) -> None:
        serve_engine_requests(self.engine, requests, exclude_input_default=self.exclude_input_default)
        return None

    def finalize(self) -> None:
        self.publisher.close()
        self.engine.close()
        self.metrics.close()
