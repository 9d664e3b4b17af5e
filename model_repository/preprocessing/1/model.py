"""Triton python model `preprocessing`: text → Tekken ids, word lists, end/pad ids (nemo_serving.preprocessing)."""

from nemo_chat_core.length_limits import LengthLimits
from nemo_protocol.errors import BadRequestError
from nemo_serving.model_args import ModelArgs
from nemo_serving.preprocessing import Preprocessor
from nemo_serving.triton_io import error_response, inputs, response


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        model = ModelArgs.parse(args)
        limits = LengthLimits(model.int("max_input_len"), model.int("max_seq_len"))
        self.preprocessor = Preprocessor(model.tokenizer(), limits)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(response(self.preprocessor.execute(inputs(request))))
            except BadRequestError as exc:
                responses.append(error_response(str(exc)))
        return responses
