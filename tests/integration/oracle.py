"""Prompt tokens as mistral-common renders a chat (Mistral NeMo Instruct: v3, Tekken): the oracle the tests compare
this project's rendering with, and the token-id prompts they send."""

from __future__ import annotations

from typing import Any


def chat_prompt_ids(messages: list[dict[str, Any]]) -> list[int]:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tokenizer = MistralTokenizer.v3(is_tekken=True)
    return list(tokenizer.encode_chat_completion(ChatCompletionRequest.from_openai(messages=messages)).tokens)
