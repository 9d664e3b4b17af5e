"""Triton adapters: what the python models of `model_repository/` run, importable and unit-tested outside Triton.

One module per Triton model (`preprocessing`, `postprocessing`, `ensemble`; the `chat` model runs
`nemo_chat_core.chat`), and the glue to Triton's python backend (`triton_io`, `model_args`, `token_stream`). The
`model.py` files only move tensors in and out and call them. Torch-free; the CPU `tensorrt_llm` model lives apart,
in `nemo_runtime`.
"""
