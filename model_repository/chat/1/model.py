"""Triton python model `chat`: OpenAI chat-completions JSON in, OpenAI JSON out (nemo_chat_core.chat).

Each request is admitted in `execute` (validated, rendered, its `tensorrt_llm` request started) and then
streamed on its own thread, so requests overlap and tensorrt_llm batches them, and concurrent requests
spread over the model's instances. Every response carries one JSON object in `response`; ids that queued
up while a response was sent go out in the next one (nemo_serving.token_stream). Where the config names a
`lora_requests` model (the engine runtime, whose backend publishes no LoRA metric), each adapter request's steps
are reported to it (nemo_serving.lora_requests).
"""

import json

import triton_python_backend_utils as pb_utils

from nemo_chat_core.chat import ChatEndpoint, guide_refusal
from nemo_chat_core.length_limits import LengthLimits
from nemo_chat_core.lora import with_weights
from nemo_chat_core.tensor_values import single_text, string_tensor
from nemo_protocol.errors import APIError, BadRequestError, error_body
from nemo_protocol.request_ids import new_request_id
from nemo_serving.lora_requests import lora_request_reporter
from nemo_serving.model_args import ModelArgs
from nemo_serving.token_stream import coalesced, until_cancelled
from nemo_serving.triton_io import (
    FINAL,
    BlsGeneration,
    GenerationError,
    admit_then_stream,
    bls_call,
    inputs,
    response,
)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        self.endpoint = ChatEndpoint(
            model.tokenizer(),
            LengthLimits(model.int("max_input_len"), model.int("max_seq_len")),
            model.text("served_model_name"),
            supports_penalties=model.text("target") == "gpu",
            generation_logits=model.bool("generation_logits"),
            log=pb_utils.Logger.log_info,
            adapters=model.adapters(),
        )
        self.lora_reports = lora_request_reporter(model.text("lora_requests_model"), bls_call, pb_utils.Logger.log_warn)

    def execute(self, requests: list) -> None:
        admit_then_stream(requests, self._admit, self._stream, _report_failure)
        return None

    def _admit(self, request) -> tuple:
        raw = inputs(request)("request")
        if raw is None:
            raise BadRequestError("the input tensor 'request' (one JSON string) is required", param="request")
        chat = self.endpoint.prepare(single_text(raw, "request"))
        return request, chat, self._generation(chat.generation, chat.adapter)

    def _generation(self, generation, adapter) -> BlsGeneration:
        report = self.lora_reports.track(adapter) if self.lora_reports else None
        resend = with_weights(generation, adapter)
        return BlsGeneration(generation, new_request_id(numeric=True), resend=resend, report=report)

    def _stream(self, sender, request, chat, generation) -> None:
        def stream(generation: BlsGeneration) -> tuple:
            # logprobs need each response's logs beside its ids: no coalescing then
            responses = generation.with_logs() if chat.generation.return_log_probs else coalesced(generation)
            return until_cancelled(responses, request.is_cancelled, generation.cancel), generation.cancel

        def resume(follow_up) -> tuple:  # a strict tool call's guided continuation
            return stream(self._generation(follow_up, chat.adapter))

        try:
            for event in self.endpoint.respond(chat, *stream(generation), resume):
                _send(sender, event)
        except GenerationError as exc:
            raise guide_refusal(chat, str(exc)) or exc from None
        sender.send(flags=FINAL)

    def finalize(self) -> None:
        if self.lora_reports:
            self.lora_reports.close()


def _report_failure(sender, exc: Exception) -> None:
    if isinstance(exc, APIError):  # the request's fault (400, 404): named, as the client sees it
        error = error_body(str(exc), error_type=exc.error_type, param=exc.param, code=exc.status_code)
    elif isinstance(exc, GenerationError):
        error = error_body(f"generation failed: {exc}", error_type="server_error", code=500)
    else:
        error = error_body(f"internal error: {exc!r}", error_type="server_error", code=500)
    _send(sender, error)
    sender.send(flags=FINAL)


def _send(sender, event: dict) -> None:
    sender.send(response({"response": string_tensor(json.dumps(event, ensure_ascii=False))}))
