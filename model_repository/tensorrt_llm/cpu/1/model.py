"""Triton python model `tensorrt_llm` (CPU): the reference runtime with in-flight batching.

Each request joins the running batch of nemo_runtime.inflight (its guide, if any, masked by
nemo_runtime.guided); responses stream back through
the request's response sender. A request carrying `stop=true` ends the in-flight request with the
same request id. The batcher's state is published as Triton metrics (nemo_runtime.batch_metrics).
"""

import triton_python_backend_utils as pb_utils

from nemo_protocol.errors import BadRequestError
from nemo_runtime.batch_metrics import MetricsPublisher, TritonMetrics
from nemo_runtime.guided import GrammarEngine
from nemo_runtime.inflight import InflightBatcher
from nemo_runtime.scheduler import ReferenceRuntime
from nemo_serving.contract import GenerationRequest
from nemo_serving.model_args import ModelArgs
from nemo_serving.tensors import scalar
from nemo_serving.triton_io import FINAL, ResponseSink, error_response, inputs


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        runtime = ReferenceRuntime.from_checkpoint(
            model.path("checkpoint_dir"), max_batch_size=model.int("max_batch_size")
        )
        self.exclude_input_default = model.bool("exclude_input_in_output")
        self.batcher = InflightBatcher(runtime, GrammarEngine(model.tokenizer(), runtime.model.vocab_size))
        self.metrics = TritonMetrics(pb_utils, {"model": model.name, "version": args["model_version"]})
        self.publisher = MetricsPublisher(self.batcher, self.metrics.publish)

    def execute(self, requests: list) -> None:
        for request in requests:
            get = inputs(request)
            sender = request.get_response_sender()
            try:
                if scalar(get("stop"), "stop", bool, False):
                    self.batcher.stop(request.request_id())
                    sender.send(flags=FINAL)
                    continue
                generation = GenerationRequest.from_inputs(get, exclude_input_default=self.exclude_input_default)
                self.batcher.submit(generation, ResponseSink(request, sender), tag=request.request_id())
            except BadRequestError as exc:
                sender.send(error_response(str(exc)), flags=FINAL)
        return None

    def finalize(self) -> None:
        self.publisher.close()
        self.batcher.close()
        self.metrics.close()
