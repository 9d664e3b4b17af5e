"""Triton python model `ensemble`: text → preprocessing → tensorrt_llm → text (nemo_serving.ensemble).

Each request is served on its own thread, so requests overlap and tensorrt_llm batches them.
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
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request) -> None:
        sender = request.get_response_sender()
        try:
            text_request = TextRequest.from_inputs(inputs(request))
            preprocessed = bls_call("preprocessing", text_request.preprocessing_inputs(), PREPROCESSING_OUTPUTS)
            generation = BlsGeneration(text_request.generation(preprocessed), request_id=new_request_id(numeric=True))
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
        except (BadRequestError, GenerationError) as exc:
            sender.send(error_response(str(exc)), flags=FINAL)
        except Exception as exc:  # keep serving: report the failure on this request only
            sender.send(error_response(f"internal error: {exc!r}"), flags=FINAL)
