"""Logic of the Triton python models, importable and unit-tested outside Triton.

The `model.py` files of `model_repository/` only move tensors in and out of Triton and call this
package: word lists and prompt checks (`preprocess`), detokenization (`postprocess`), the
`tensorrt_llm` tensor contract (`contract`), the CPU in-flight batching loop (`inflight`), and the
OpenAI chat endpoint (`chat_request`, `chat_response`, `stop_strings`, `chat_session`).
"""
