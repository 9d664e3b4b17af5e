"""Triton python model `ensemble`: text → preprocessing → tensorrt_llm → text (nemo_serving.ensemble).

Each request is admitted in `execute` (parsed, preprocessed, its `tensorrt_llm` request started) and then
streamed on its own thread, so requests overlap, tensorrt_llm batches them, and concurrent requests spread
over the model's instances. A LoRA adapter named by `lora_name` is resolved against the deployment's adapters and
sent by task id (again with its weights when the engine does not hold it); where the config names a
`lora_requests` model, each adapter request's steps are reported to it (nemo_serving.lora_requests).
"""

import triton_python_backend_utils as pb_utils

from nemo_protocol.errors import APIError
from nemo_protocol.request_ids import new_request_id
from nemo_serving.ensemble import PREPROCESSING_OUTPUTS, TextRequest, TextResponses
from nemo_serving.lora_requests import lora_request_reporter
from nemo_serving.model_args import ModelArgs
from nemo_serving.token_stream import coalesced, until_cancelled
from nemo_serving.triton_io import (
    FINAL,
    BlsGeneration,
    GenerationError,
    admit_then_stream,
    bls_call,
    error_response,
    inputs,
    response,
)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        self.tokenizer = model.tokenizer()
        self.logits = {"context": model.bool("context_logits"), "generation": model.bool("generation_logits")}
        self.adapters = model.adapters()
        self.served_model_name = model.text("served_model_name")
        self.lora_reports = lora_request_reporter(model.text("lora_requests_model"), bls_call, pb_utils.Logger.log_warn)

    def execute(self, requests: list) -> None:
        admit_then_stream(requests, self._admit, self._stream, _report_failure)
        return None

    def _admit(self, request) -> tuple:
        text_request = TextRequest.from_inputs(inputs(request))
        text_request.check_logits(**self.logits)
        preprocessed = bls_call("preprocessing", text_request.preprocessing_inputs(), PREPROCESSING_OUTPUTS)
        adapted = text_request.adapted(text_request.generation(preprocessed), self.adapters, self.served_model_name)
        report = self.lora_reports.track(adapted.adapter) if self.lora_reports else None
        generation = BlsGeneration(
            adapted.generation, new_request_id(numeric=True), resend=adapted.resend, report=report
        )
        return request, TextResponses(self.tokenizer, text_request, adapted.generation.input_ids), generation

    def _stream(self, sender, request, responses, generation) -> None:
        # Log probs come per engine response, so they are read as they come; plain text coalesces the ids
        # that queued up into one response.
        wants_logs = generation.wants_logs
        items = generation.with_logs() if wants_logs else ((ids, None) for ids in coalesced(generation))
        for ids, logs in until_cancelled(items, request.is_cancelled, generation.cancel):
            ready = responses.feed(ids, logs)
            if ready is not None:
                sender.send(response(ready))
        for _ in items:  # after a cancellation: read the engine's last responses (coalesced does so itself)
            pass
        # The last response always carries the finish reason and the token counts.
        sender.send(response(responses.finish()), flags=FINAL)

    def finalize(self) -> None:
        if self.lora_reports:
            self.lora_reports.close()


def _report_failure(sender, exc: Exception) -> None:
    if isinstance(exc, APIError):  # the request's fault, naming the input tensor
        sender.send(error_response(exc.named()), flags=FINAL)
    elif isinstance(exc, GenerationError):
        sender.send(error_response(str(exc)), flags=FINAL)
    else:
        sender.send(error_response(f"internal error: {exc!r}"), flags=FINAL)
