"""gRPC client for Mistral NeMo served by Triton + TensorRT-LLM, shaped like the OpenAI SDK.

``NemoClient`` (sync) and ``AsyncNemoClient`` (async) in :mod:`nemo_client.client`; their resources
(``chat``, ``completions``, ``models``) in :mod:`nemo_client.resources`; streams in :mod:`nemo_client.streaming`;
parameter and result types in :mod:`nemo_client.types`; the connection to Triton behind
:mod:`nemo_client.transport` (:mod:`nemo_client.triton_transport`; spreading calls over several Triton servers:
:mod:`nemo_client.balancer`); the direct path in :mod:`nemo_client.direct`;
the tool-calling loop in :mod:`nemo_client.tool_runner`; the ``nemo-chat`` command in :mod:`nemo_client.cli`.
The protocol (Tekken, the chat format, errors) is :mod:`nemo_protocol`; request validation shared with the
server is :mod:`nemo_chat_core`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nemo_client.client import AsyncNemoClient, NemoClient
    from nemo_client.streaming import AsyncStream, Stream
    from nemo_client.tool_runner import ToolLoopError, ToolRun
    from nemo_client.types import Health

_EXPORTS = {
    "AsyncNemoClient": "nemo_client.client",
    "NemoClient": "nemo_client.client",
    "AsyncStream": "nemo_client.streaming",
    "Stream": "nemo_client.streaming",
    "Health": "nemo_client.types",
    "ToolRun": "nemo_client.tool_runner",
    "ToolLoopError": "nemo_client.tool_runner",
}
__all__ = ["AsyncNemoClient", "AsyncStream", "Health", "NemoClient", "Stream", "ToolLoopError", "ToolRun"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the clients pull in grpc, tritonclient and openai, which a caller of one
    # submodule (the transport, the tool schemas) need not pay for.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nemo_client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
