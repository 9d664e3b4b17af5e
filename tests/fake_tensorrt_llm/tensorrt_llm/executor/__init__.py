"""The fake's `tensorrt_llm.executor` (the names the JSON records under imports)."""

from tensorrt_llm import _API

LoRARequest = _API.LoRARequest

__all__ = ["LoRARequest"]
