"""The fake's `tensorrt_llm.lora_helper` (the names the JSON records under imports)."""

from tensorrt_llm import _API

LoraConfig = _API.LoraConfig

__all__ = ["LoraConfig"]
