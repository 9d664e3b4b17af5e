"""The direct path: the chat core runs in this process and streams the `tensorrt_llm` model itself.

Through the Triton ``chat`` model a token crosses Triton twice and a python stub once on its way to the
caller. Here the caller renders the prompt (Tekken, v3 chat template, tools), sends the ids to
`tensorrt_llm` and turns the ids that come back into OpenAI objects, with the same code the ``chat`` model
runs (``nemo_chat_core.chat.ChatEndpoint``), so the ids, text, tool calls, stop handling and usage are the
same. On a GPU the token path inside Triton is then the tensorrtllm backend alone (C++); the frontend work
scales with the callers (gateway pods, backend services) instead of one python process per instance.

What the core needs to know of the deployment is read once from the ``chat`` model's config (Triton's
read-only model-config API): the served model name, the engine's length limits and target. The Tekken file
is local (the model's ``tekken.json``, or mistral-common's copy of the same file); its SHA-256 must match
the one the repository was rendered with, so that both sides count the same tokens.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nemo_client.transport import Outputs, Transport
from nemo_protocol.errors import APIError, ServerError
from nemo_protocol.request_ids import new_request_id
from nemo_protocol.tekken import Tekkenizer, default_tekken_path

if TYPE_CHECKING:
    from nemo_chat_core.chat import ChatEndpoint, PreparedChat
    from nemo_chat_core.engine_tensors import GenerationRequest
    from nemo_chat_core.lora import AdapterRegistry

logger = logging.getLogger("nemo_client.direct")

ENGINE_MODEL = "tensorrt_llm"
CHAT_CONFIG_KEYS = ("served_model_name", "max_input_len", "max_seq_len", "target")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lora_adapters(parameters: Mapping[str, str]) -> AdapterRegistry | None:
    """The deployment's LoRA adapters (the ``chat`` model's ``lora_dir``), read here: the directory must be reachable
    from this process at the same path (a volume shared with Triton's pod); None when it serves none or is not."""
    from nemo_chat_core.lora import AdapterRegistry, BaseShapes

    lora_dir = parameters.get("lora_dir")
    if not lora_dir:
        return None
    if not Path(lora_dir).is_dir():
        logger.warning(
            "the deployment's LoRA adapters at %s are not reachable here: serving the base model only", lora_dir
        )
        return None
    return AdapterRegistry(
        Path(lora_dir), BaseShapes.from_text(parameters["lora_base"]), int(parameters["max_lora_rank"])
    )


class DirectChat:
    """Chat completions served by :class:`~nemo_chat_core.chat.ChatEndpoint` here over a `tensorrt_llm` stream."""

    def __init__(
        self,
        endpoint: ChatEndpoint,
        transport: Transport,
        engine_model: str = ENGINE_MODEL,
        adapters_counted_upstream: bool = False,
    ) -> None:
        """``adapters_counted_upstream``: the deployment counts adapter requests in the frontends' reports (the
        engine runtime's LoRA metrics: the ``chat`` model's ``lora_requests_model``)."""
        self.endpoint = endpoint
        self._transport = transport
        self._engine_model = engine_model
        self._adapters_counted_upstream = adapters_counted_upstream

    @classmethod
    async def connect(
        cls,
        transport: Transport,
        *,
        chat_model: str,
        tokenizer_file: Path | None,
        deadline: float,
        engine_model: str = ENGINE_MODEL,
    ) -> DirectChat:
        """The core configured as the deployment's ``chat`` model is; ServerError when they cannot agree."""
        from nemo_chat_core.chat import ChatEndpoint
        from nemo_chat_core.length_limits import LengthLimits

        parameters = await transport.model_parameters(chat_model, deadline=deadline)
        missing = [key for key in CHAT_CONFIG_KEYS if not parameters.get(key)]
        if missing:
            raise ServerError(
                f"the {chat_model!r} model's config lacks {', '.join(missing)}: render the repository with this "
                "version of nemo-build, or use the server path (direct=False)"
            )
        tekken = Path(tokenizer_file) if tokenizer_file is not None else default_tekken_path()
        expected = parameters.get("tokenizer_sha256")
        if expected and file_sha256(tekken) != expected:
            raise ServerError(
                f"the Tekken file {tekken} is not the one the deployment serves with (SHA-256 {expected}): "
                "pass the model's tekken.json as tokenizer_file"
            )
        endpoint = ChatEndpoint(
            Tekkenizer.from_file(tekken),
            LengthLimits(int(parameters["max_input_len"]), int(parameters["max_seq_len"])),
            parameters["served_model_name"],
            supports_penalties=parameters["target"] == "gpu",
            generation_logits=parameters.get("generation_logits") == "true",
            log=logger.info,
            adapters=lora_adapters(parameters),
        )
        return cls(endpoint, transport, engine_model, bool(parameters.get("lora_requests_model")))

    def serves(self, body: Mapping[str, Any]) -> bool:
        """Whether this path serves ``body``. Not a request naming another model (a LoRA adapter, or unknown) where
        the deployment counts adapter requests in the frontends' reports: those must reach the pod that runs the
        request, which a balanced transport does not say; the ``chat`` model serves them, and reports them."""
        model = body.get("model")
        return not self._adapters_counted_upstream or model is None or model == self.endpoint.model_name

    def start(self, body: Mapping[str, Any], *, deadline: float) -> tuple[str, AsyncIterator[dict[str, Any]]]:
        """Validate and render ``body`` now (BadRequestError naming the field); the events follow as they come."""
        chat = self.endpoint.prepare_body(body)
        request_id = new_request_id(numeric=True)  # the tensorrtllm backend keys requests by integer ids
        return request_id, self._events(chat, request_id, deadline)

    async def _events(self, chat: PreparedChat, request_id: str, deadline: float) -> AsyncIterator[dict[str, Any]]:
        from nemo_chat_core.engine_tensors import engine_logs, output_token_ids

        responder = self.endpoint.responder(chat)
        generation: GenerationRequest | None = chat.generation
        started = False
        while generation is not None:  # a strict tool call continues in a second, guided generation
            # The response starts once the engine answered: it runs the request then, or refused it (an error,
            # raised before any event, as the chat model's refusals are).
            responses, outputs = await self._first_response(chat, generation, request_id, deadline)
            try:
                if not started:
                    started = True
                    for event in responder.start():
                        yield event
                while outputs is not None and not responder.stopped:
                    ids = output_token_ids(outputs.get("output_ids"), outputs.get("sequence_length"))
                    logs = engine_logs(outputs) if generation.return_log_probs else None
                    for event in responder.feed(ids, logs):
                        yield event
                    outputs = await anext(responses, None)
            finally:
                await responses.aclose()  # type: ignore[attr-defined]  # early: cancels the generation, freeing its slot
            generation = responder.continuation()
            request_id = new_request_id(numeric=True)
        for event in responder.finish():
            yield event

    async def _first_response(
        self, chat: PreparedChat, generation: GenerationRequest, request_id: str, deadline: float
    ) -> tuple[AsyncIterator[Outputs], Outputs | None]:
        """Start ``generation``; its responses and the first of them. A LoRA adapter the engine does not hold
        (its "not found in cache") is sent again with the adapter's weights."""
        from nemo_chat_core.chat import guide_refusal
        from nemo_chat_core.lora import is_lora_cache_miss, with_weights

        resend = with_weights(generation, chat.adapter)
        while True:
            responses = self._transport.stream(
                self._engine_model, generation.to_inputs(), request_id=request_id, deadline=deadline
            )
            try:
                return responses, await anext(responses, None)
            except APIError as error:
                await responses.aclose()  # type: ignore[attr-defined]
                if resend is None or not is_lora_cache_miss(error.message):
                    raise guide_refusal(chat, error.message) or error from None
                generation, resend = resend, None
