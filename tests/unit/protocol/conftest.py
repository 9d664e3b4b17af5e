"""Fixtures for the protocol layer: our Tekkenizer and mistral-common's reference encoder."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from nemo_protocol.chat_format import to_model_tool_call_id
from nemo_protocol.tekken import Tekkenizer

Oracle = Callable[..., list[int]]


@pytest.fixture(scope="session")
def tok(tekken_path: Path) -> Tekkenizer:
    return Tekkenizer.from_file(tekken_path)


@pytest.fixture(scope="session")
def reference(tekken_path: Path) -> MistralTokenizer:
    return MistralTokenizer.from_file(str(tekken_path))


@pytest.fixture(scope="session")
def oracle(tekken_path: Path, reference: MistralTokenizer) -> Oracle:
    """mistral-common's ids for an OpenAI-shaped request (tool-call ids mapped as our encoder maps them)."""
    finetuning = MistralTokenizer.from_file(str(tekken_path), mode=ValidationMode.finetuning)

    def encode(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *, final_assistant: bool = False
    ) -> list[int]:
        messages = copy.deepcopy(messages)
        for message in messages:
            for call in message.get("tool_calls") or []:
                call["id"] = to_model_tool_call_id(call["id"])
            if message.get("role") == "tool":
                message["tool_call_id"] = to_model_tool_call_id(message["tool_call_id"])
        request = ChatCompletionRequest.from_openai(messages=messages, tools=tools)
        tokenizer = finetuning if final_assistant else reference
        return tokenizer.encode_chat_completion(request).tokens

    return encode
