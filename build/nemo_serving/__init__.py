"""The code Triton's python models run, importable and unit-tested outside Triton; torch-free.

One module per Triton model: `preprocessing`, `postprocessing`, `ensemble` and `chat`; the `model.py` files of
`model_repository/` only move tensors in and out of Triton and call them. Shared by those: the `tensorrt_llm`
tensor contract (`contract`), tensor helpers (`tensors`, `triton_io`, `model_args`), word lists and stop
strings, and the OpenAI request and response objects of `chat` (`chat_request`, `chat_response`). The CPU
`tensorrt_llm` model lives apart, in `nemo_runtime`.
"""
