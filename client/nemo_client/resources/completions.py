"""``client.completions``: raw text completions through the Triton ``ensemble`` model; async, and sync over the
same implementation. The request becomes ensemble inputs in :mod:`nemo_chat_core.completion_request`, the responses
a ``Completion`` in :mod:`nemo_client.completion_assembly`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, overload

from openai.types import Completion
from typing_extensions import Unpack

from nemo_chat_core.completion_request import MAX_N, completion_inputs, completion_prompts, stop_words
from nemo_client.completion_assembly import (
    CompletionPiece,
    build_completion,
    completion_chunks,
    completion_pieces,
    count_usage,
)
from nemo_client.loop_thread import LoopThread
from nemo_client.streaming import AsyncStream, Stream, sync_result
from nemo_client.transport import Outputs
from nemo_client.types import CompletionNonStreamingParams, CompletionParams, CompletionStreamingParams
from nemo_protocol.errors import BadRequestError
from nemo_protocol.request_ids import new_request_id

if TYPE_CHECKING:
    from nemo_client.client import AsyncNemoClient


class AsyncCompletions:
    def __init__(self, client: AsyncNemoClient) -> None:
        self._client = client

    @overload
    async def create(self, **params: Unpack[CompletionNonStreamingParams]) -> Completion: ...
    @overload
    async def create(self, **params: Unpack[CompletionStreamingParams]) -> AsyncStream[Completion]: ...
    @overload
    async def create(self, **params: Unpack[CompletionParams]) -> Completion | AsyncStream[Completion]: ...
    async def create(self, **params: Unpack[CompletionParams]) -> Completion | AsyncStream[Completion]:
        """Complete raw text (no chat template) through the text ``ensemble``."""
        prompts = completion_prompts(params.get("prompt"))
        n = params.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise BadRequestError(f"must be an integer in [1, {MAX_N}], got {n!r}", param="n")
        model = params.get("model") or self._client.model or self._client.text_model
        seed = params.get("seed")
        requests = [
            completion_inputs(params, prompt, seed=None if seed is None else seed + copy)
            for prompt in prompts
            for copy in range(n)
        ]
        stops = stop_words(params.get("stop"))
        echoes = [prompt if isinstance(prompt, str) else None for prompt in prompts for _ in range(n)]
        if params.get("echo") and stops and None in echoes:
            raise BadRequestError("stop with echo needs the prompt as text, not token ids", param="echo")
        if params.get("stream"):
            if len(requests) > 1:
                raise BadRequestError("one prompt and n 1 only when streaming", param="n" if n > 1 else "prompt")
            request_id, responses = self._generate(requests[0], params.get("timeout"))
            pieces = completion_pieces(responses, stops, echo=echoes[0] if params.get("echo") else None)
            return AsyncStream(completion_chunks(pieces, model, request_id), request_id)
        request_id = new_request_id()
        choices = await asyncio.gather(
            *(
                self._choice(inputs, stops, echo if params.get("echo") else None, params.get("timeout"))
                for inputs, echo in zip(requests, echoes, strict=True)
            )
        )
        return build_completion(request_id, model, list(choices), usage=count_usage(choices, n))

    async def _choice(
        self, inputs: Mapping[str, Any], stops: list[str], echo: str | None, timeout: float | None
    ) -> CompletionPiece:
        """One whole generation, as one piece."""
        _, responses = self._generate(inputs, timeout)
        return CompletionPiece.join([piece async for piece in completion_pieces(responses, stops, echo=echo)])

    def _generate(self, inputs: Mapping[str, Any], timeout: float | None) -> tuple[str, AsyncIterator[Outputs]]:
        """One ``ensemble`` request: its id, and its responses as they come."""
        request_id = new_request_id()
        deadline = self._client.deadline(timeout)
        return request_id, self._client.transport.stream(
            self._client.text_model, inputs, request_id=request_id, deadline=deadline
        )


class Completions:
    def __init__(self, inner: AsyncCompletions, loop: LoopThread) -> None:
        self._inner, self._loop = inner, loop

    @overload
    def create(self, **params: Unpack[CompletionNonStreamingParams]) -> Completion: ...
    @overload
    def create(self, **params: Unpack[CompletionStreamingParams]) -> Stream[Completion]: ...
    @overload
    def create(self, **params: Unpack[CompletionParams]) -> Completion | Stream[Completion]: ...
    def create(self, **params: Unpack[CompletionParams]) -> Completion | Stream[Completion]:
        """Complete raw text (no chat template) through the text ``ensemble``."""
        return sync_result(self._loop.run(self._inner.create(**params)), self._loop)
