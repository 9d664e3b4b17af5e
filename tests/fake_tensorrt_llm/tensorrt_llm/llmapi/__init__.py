"""The fake's `tensorrt_llm.llmapi` (the names the JSON records under imports)."""

from tensorrt_llm import _API

LLM = _API.LLM
SamplingParams = _API.SamplingParams
GuidedDecodingParams = _API.GuidedDecodingParams
KvCacheConfig = _API.KvCacheConfig
CudaGraphConfig = _API.CudaGraphConfig

__all__ = ["LLM", "CudaGraphConfig", "GuidedDecodingParams", "KvCacheConfig", "SamplingParams"]
