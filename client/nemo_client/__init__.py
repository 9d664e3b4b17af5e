"""Client-side protocol and gRPC client for Mistral NeMo served by Triton + TensorRT-LLM."""

from nemo_client.client import AsyncNemoClient, NemoClient

__all__ = ["AsyncNemoClient", "NemoClient"]
