"""Triton python model `ensemble`: text → preprocessing → tensorrt_llm → text (nemo_serving.ensemble).

Each request is admitted in `execute` (parsed, preprocessed, its `tensorrt_llm` request started) and then
streamed on its own thread, so requests overlap, tensorrt_llm batches them, and concurrent requests spread
over the model's instances.
"""

import threading

from nemo_protocol.errors import BadRequestError
from nemo_protocol.request_ids import new_request_id
from nemo_serving.ensemble import (
    PREPROCESSING_OUTPUTS,
    CountedChunks,
    TextRequest,
    text_chunks,
)
from nemo_serving.model_args import ModelArgs
from nemo_serving.token_stream import coalesced, until_cancelled
from nemo_serving.triton_io import (
    FINAL,
    BlsGeneration,
    GenerationError,
    bls_call,
    error_response,
    inputs,
    response,
    string_tensor,
)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.tokenizer = ModelArgs.parse(args).tokenizer()

    def execute(self, requests: list) -> None:
        # Admission (parse, preprocess, start the generation) runs here and holds this instance, so that
        # requests arriving meanwhile go to the model's other instances; the token stream runs on a thread.
        for request in requests:
            sender = request.get_response_sender()
            admitted = self._run(sender, self._admit, request)
            if admitted is not None:
                threading.Thread(target=self._run, args=(sender, self._stream, sender, *admitted), daemon=True).start()
        return None

    def _admit(self, request) -> tuple:
        text_request = TextRequest.from_inputs(inputs(request))
        preprocessed = bls_call("preprocessing", text_request.preprocessing_inputs(), PREPROCESSING_OUTPUTS)
        generation = BlsGeneration(text_request.generation(preprocessed), request_id=new_request_id(numeric=True))
        return request, text_request, generation

    def _stream(self, sender, request, text_request, generation) -> None:
        chunks = CountedChunks(until_cancelled(coalesced(generation), request.is_cancelled, generation.cancel))
        pending = None
        for text in text_chunks(self.tokenizer, chunks, text_request.stream):
            if pending is not None:
                sender.send(response({"text_output": string_tensor(pending)[None]}))
            pending = text
        # The last response always carries the finish reason (and the last text, possibly empty).
        final = {
            "text_output": string_tensor(pending or "")[None],
            "finish_reason": string_tensor(chunks.finish_reason(text_request.max_tokens))[None],
        }
        sender.send(response(final), flags=FINAL)

    @staticmethod
    def _run(sender, step, *args):
        """``step(*args)``; a failure is this request's error response, and ends it."""
        try:
            return step(*args)
        except (BadRequestError, GenerationError) as exc:
            sender.send(error_response(str(exc)), flags=FINAL)
        except Exception as exc:  # keep serving: report the failure on this request only
            sender.send(error_response(f"internal error: {exc!r}"), flags=FINAL)
        return None
