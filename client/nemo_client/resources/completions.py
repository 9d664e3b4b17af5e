"""``client.completions``: raw text completions through the Triton ``ensemble`` model; async, and sync over the
same implementation. The request is read, and becomes ensemble requests, in the chat core
(:mod:`nemo_chat_core.completion_request`, as the gateway reads it); the responses become a ``Completion`` in
:mod:`nemo_client.completion_assembly`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from openai.types import Completion
from typing_extensions import Unpack

from nemo_chat_core.completion_request import CompletionRequest, EnsembleRequest
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
from nemo_protocol.request_ids import new_request_id

if TYPE_CHECKING:
    from nemo_client.client import AsyncNemoClient

_COMPLETION_FIELDS = frozenset(CompletionParams.__annotations__) - {"timeout"}


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
        unknown = set(params) - _COMPLETION_FIELDS - {"timeout"}
        if unknown:
            raise TypeError(f"unexpected argument(s) {', '.join(sorted(unknown))}")
        fields = {key: value for key, value in params.items() if key != "timeout"}
        return await self.create_from_request(CompletionRequest.from_body(fields), timeout=params.get("timeout"))

    async def create_from_request(
        self, request: CompletionRequest, *, timeout: float | None = None
    ) -> Completion | AsyncStream[Completion]:
        """Serve a request already read (the gateway's path: :meth:`CompletionRequest.from_body` on its body)."""
        model = request.model or self._client.model or self._client.text_model
        choices = request.ensemble_requests()
        if request.stream:
            request_id, responses = self._generate(choices[0].inputs, timeout)
            pieces = completion_pieces(responses, request.stop, echo=choices[0].echo)
            return AsyncStream(completion_chunks(pieces, model, request_id), request_id)
        request_id = new_request_id()
        answers = await asyncio.gather(*(self._choice(choice, request.stop, timeout) for choice in choices))
        return build_completion(request_id, model, list(answers), usage=count_usage(answers, request.n))

    async def _choice(self, choice: EnsembleRequest, stops: Sequence[str], timeout: float | None) -> CompletionPiece:
        """One whole generation, as one piece."""
        _, responses = self._generate(choice.inputs, timeout)
        pieces = completion_pieces(responses, stops, echo=choice.echo)
        return CompletionPiece.join([piece async for piece in pieces])

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
