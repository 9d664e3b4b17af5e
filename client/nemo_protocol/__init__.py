"""The Mistral NeMo protocol, shared by the client side and the server side; it needs tiktoken only.

`tekken` (the tokenizer), `incremental_decoder` (streaming detokenization), `chat_format` (the v3 chat
template with tools, ids identical to mistral-common's), `tool_calls` (parsing tool calls out of the output)
and `errors` (the error types, their OpenAI error bodies).
"""
