"""Triton python model `tensorrt_llm` (stand-in): the CPU model's tensors and batching, tokens from a clock.

Each request joins the stand-in engine of nemo_runtime.stand_in: every running request gets one token per
engine step, `tokens_per_s` steps a second, without model compute, for measuring the models above
`tensorrt_llm` at GPU token rates. A request carrying `stop=true` ends the in-flight request with the same
request id. The engine's state is published as the CPU model's Triton metrics (nemo_runtime.batch_metrics).
"""

import triton_python_backend_utils as pb_utils

from nemo_runtime.batch_metrics import MetricsPublisher, TritonMetrics
from nemo_runtime.stand_in import StandInEngine, text_token_ids
from nemo_serving.model_args import ModelArgs
from nemo_serving.triton_io import serve_engine_requests


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        tokenizer = model.tokenizer()
        try:
            tokens_per_s = float(model.text("tokens_per_s"))
        except ValueError:
            raise ValueError(f"model {model.name!r}: parameter 'tokens_per_s' must be a number") from None
        self.exclude_input_default = model.bool("exclude_input_in_output")
        self.engine = StandInEngine(
            text_token_ids(tokenizer),
            tokens_per_s=tokens_per_s,
            max_batch_size=model.int("max_batch_size"),
            max_seq_len=model.int("max_seq_len"),
            vocab_size=tokenizer.vocab_size,
            end_after_tokens=model.int("end_after_tokens"),
            cancellation_check_s=model.int("cancellation_check_period_ms") / 1000,
        )
        self.metrics = TritonMetrics(pb_utils, {"model": model.name, "version": args["model_version"]})
        self.publisher = MetricsPublisher(self.engine, self.metrics.publish)

    def execute(self, requests: list) -> None:
        serve_engine_requests(self.engine, requests, exclude_input_default=self.exclude_input_default)
        return None

    def finalize(self) -> None:
        self.publisher.close()
        self.engine.close()
        self.metrics.close()
