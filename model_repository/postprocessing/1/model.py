"""Triton python model `postprocessing`: generated ids → text (nemo_serving.postprocessing)."""

from nemo_serving.model_args import ModelArgs
from nemo_serving.postprocessing import decode_batch
from nemo_serving.triton_io import error_response, inputs, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.tokenizer = ModelArgs.parse(args).tokenizer()

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            get = inputs(request)
            try:
                text = decode_batch(self.tokenizer, get("tokens_batch"), get("sequence_length"))
            except ValueError as exc:
                responses.append(error_response(f"tokens_batch: {exc}"))
                continue
            responses.append(response({"text_output": text}))
        return responses
