"""Triton python model `chat`: OpenAI chat-completions JSON in, OpenAI JSON out (nemo_serving.chat).

Each request is served on its own thread over a streaming `tensorrt_llm` request, so requests overlap
and tensorrt_llm batches them. Every response carries one JSON object in `response`; ids that queued up
while a response was sent go out in the next one (nemo_serving.token_stream).
"""

import json
import threading

from nemo_protocol.errors import BadRequestError, error_body
from nemo_protocol.request_ids import new_request_id
from nemo_serving.chat import ChatEndpoint
from nemo_serving.model_args import ModelArgs
from nemo_serving.preprocessing import LengthLimits
from nemo_serving.tensors import single_text
from nemo_serving.token_stream import coalesced, until_cancelled
from nemo_serving.triton_io import FINAL, BlsGeneration, GenerationError, inputs, response, string_tensor


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        self.endpoint = ChatEndpoint(
            model.tokenizer(),
            LengthLimits(model.int("max_input_len"), model.int("max_seq_len")),
            model.text("served_model_name"),
            supports_penalties=model.text("target") == "gpu",
        )

    def execute(self, requests: list) -> None:
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request) -> None:
        sender = request.get_response_sender()

        def send(event: dict) -> None:
            sender.send(response({"response": string_tensor(json.dumps(event, ensure_ascii=False))}))

        try:
            raw = inputs(request)("request")
            if raw is None:
                raise BadRequestError("the input tensor 'request' (one JSON string) is required", param="request")
            chat = self.endpoint.prepare(single_text(raw, "request"))
            generation = BlsGeneration(chat.generation, request_id=new_request_id(numeric=True))
            chunks = until_cancelled(coalesced(generation), request.is_cancelled, generation.cancel)
            for event in self.endpoint.respond(chat, chunks, generation.cancel):
                send(event)
        except BadRequestError as exc:
            send(error_body(str(exc), error_type=exc.error_type, param=exc.param, code=exc.status_code))
        except GenerationError as exc:
            send(error_body(f"generation failed: {exc}", error_type="server_error", code=500))
        except Exception as exc:  # keep serving: report the failure on this request only
            send(error_body(f"internal error: {exc!r}", error_type="server_error", code=500))
        finally:
            sender.send(flags=FINAL)
