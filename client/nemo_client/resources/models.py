"""``client.models``: the served model; async, and sync over the same implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openai.types import Model

from nemo_client.loop_thread import LoopThread
from nemo_client.transport import deadline_after

if TYPE_CHECKING:
    from nemo_client.client import AsyncNemoClient


class AsyncModels:
    def __init__(self, client: AsyncNemoClient) -> None:
        self._client = client

    async def list(self, *, timeout: float = 10.0) -> list[Model]:
        """The served chat model, under its served name (``served_model_name`` of the ``chat`` model), with
        ``max_model_len``: the tokens of a sequence, prompt and output (the engine's ``max_seq_len``); then each LoRA
        adapter of the deployment's ``lora_dir`` (when this process reaches it), with the base model as ``parent``."""
        from nemo_client.direct import lora_adapters

        chat_model = self._client.chat_model
        parameters = await self._client.transport.model_parameters(chat_model, deadline=deadline_after(timeout))
        name = parameters.get("served_model_name") or chat_model
        model: dict[str, Any] = {"id": name, "created": 0, "object": "model", "owned_by": "mistralai"}
        if "max_seq_len" in parameters:
            model["max_model_len"] = int(parameters["max_seq_len"])  # an extra field, as vLLM's
        adapters = lora_adapters(parameters)
        loras = [{**model, "id": adapter, "parent": name} for adapter in (adapters.names() if adapters else [])]
        return [Model.model_validate(entry) for entry in (model, *loras)]


class Models:
    def __init__(self, inner: AsyncModels, loop: LoopThread) -> None:
        self._inner, self._loop = inner, loop

    def list(self, *, timeout: float = 10.0) -> list[Model]:
        return self._loop.run(self._inner.list(timeout=timeout))
