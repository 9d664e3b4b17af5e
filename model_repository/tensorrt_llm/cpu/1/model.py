"""Triton python model `tensorrt_llm` (CPU): the reference runtime with in-flight batching.

Each request joins the running batch of nemo_runtime.inflight (its guide, if any, masked by
nemo_runtime.guided); responses stream back through
the request's response sender. A request carrying `stop=true` ends the in-flight request with the
same request id. The batcher's state is published as Triton metrics (nemo_runtime.batch_metrics).
"""

from collections.abc import Callable

import triton_python_backend_utils as pb_utils

from nemo_runtime.batch_metrics import MetricsPublisher, TritonMetrics
from nemo_runtime.guided import GrammarEngine
from nemo_runtime.inflight import InflightBatcher
from nemo_runtime.scheduler import ReferenceRuntime
from nemo_serving.model_args import ModelArgs
from nemo_serving.triton_io import serve_engine_requests


def adapter_names(model: ModelArgs) -> Callable[[int], str]:
    """A LoRA task id's adapter name, from the deployment's adapter source (the id as text without one)."""
    adapters = model.adapters()
    return str if adapters is None else adapters.name_of


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        runtime = ReferenceRuntime.from_checkpoint(
            model.path("checkpoint_dir"),
            max_batch_size=model.int("max_batch_size"),
            max_num_tokens=model.int("max_num_tokens"),
            kv_cache_max_tokens=model.int("max_tokens_in_paged_kv_cache") or None,
            max_lora_rank=model.int("max_lora_rank"),
        )
        self.exclude_input_default = model.bool("exclude_input_in_output")
        grammar = GrammarEngine(model.tokenizer(), runtime.model.vocab_size)
        self.batcher = InflightBatcher(runtime, grammar, adapter_names(model))
        self.metrics = TritonMetrics(pb_utils, {"model": model.name, "version": args["model_version"]})
        self.publisher = MetricsPublisher(self.batcher, self.metrics.publish)

    def execute(self, requests: list) -> None:
        serve_engine_requests(self.batcher, requests, exclude_input_default=self.exclude_input_default)
        return None

    def finalize(self) -> None:
        self.publisher.close()
        self.batcher.close()
        self.metrics.close()
