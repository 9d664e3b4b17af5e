"""Client-side protocol and gRPC client for Mistral NeMo served by Triton + TensorRT-LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nemo_client.client import AsyncNemoClient, NemoClient

__all__ = ["AsyncNemoClient", "NemoClient"]


def __getattr__(name: str) -> Any:
    # The clients pull in grpc, tritonclient and openai; the protocol modules (tekken, chat_format, ...) need
    # tiktoken only, and the build pipeline and the Triton models import those alone.
    if name in __all__:
        from nemo_client import client

        return getattr(client, name)
    raise AttributeError(f"module 'nemo_client' has no attribute {name!r}")
