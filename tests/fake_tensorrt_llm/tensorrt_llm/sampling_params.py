"""The fake's `tensorrt_llm.sampling_params`."""

from tensorrt_llm import _API

SamplingParams = _API.SamplingParams
GuidedDecodingParams = _API.GuidedDecodingParams

__all__ = ["GuidedDecodingParams", "SamplingParams"]
