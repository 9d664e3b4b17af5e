"""The engine-agnostic chat core: an OpenAI request → a `tensorrt_llm` request → OpenAI response objects.

Request validation (`chat_request`), guides (`guided`), sampling (`sampling`), log probabilities (`log_probs`),
stop strings (`stop_strings`), response building (`chat_response`) and the `tensorrt_llm` tensor contract in both
directions (`engine_tensors`, `word_lists`, `tensor_values`), tied together by `chat.ChatEndpoint`; and the
`/v1/completions` request with the `ensemble` requests that serve it (`completion_request`). It needs
`nemo_protocol` and numpy, nothing of Triton: the Triton `chat` model (`nemo_serving`), the client's direct path
and the gateway run the same code.
"""
