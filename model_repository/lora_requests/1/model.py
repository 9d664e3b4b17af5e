"""Triton python model `lora_requests`: the frontends' reports of the engine runtime's adapter requests, counted per
adapter (nemo_serving.lora_requests.LoraRequestBook) and published as Triton metrics under the CPU runtime's LoRA
names (nemo_runtime.batch_metrics.LoraMetrics)."""

import triton_python_backend_utils as pb_utils

from nemo_protocol.errors import BadRequestError
from nemo_runtime.batch_metrics import LoraMetrics, MetricsPublisher
from nemo_serving.lora_requests import LoraRequestBook, record_reports
from nemo_serving.model_args import ModelArgs
from nemo_serving.triton_io import error_response, inputs, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        self.book = LoraRequestBook(model.int("max_lora"))
        self.metrics = LoraMetrics(pb_utils, {"model": model.name, "version": args["model_version"]})
        self.publisher = MetricsPublisher(self.book, self.metrics.publish)

    def execute(self, requests: list) -> list:
        answers = []
        for request in requests:
            try:
                answers.append(response(record_reports(self.book, inputs(request))))
            except BadRequestError as exc:
                answers.append(error_response(str(exc)))
        return answers

    def finalize(self) -> None:
        self.publisher.close()
        self.metrics.close()
