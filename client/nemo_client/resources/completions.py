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

from nemo_chat_core.completion_request import CompletionRequest, EnsembleRequest, refused_field
from nemo_client.completion_assembly import (
    CompletionPiece,
    build_completion,
    completion_chunks,
    completion_pieces,
    count_usage,
)
from nemo_client.loop_thread import LoopThread
from nemo_client.streaming import AsyncStream, Stream, sync_result
from nemo_client.transport import InputRefusedError, Outputs
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
            # A refused request raises here rather than at the first read (as a chat stream does), so that callers
            # (and the gateway's status code) learn of it before they start streaming.
            return await AsyncStream(completion_chunks(pieces, model, request_id), request_id).started()
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
        request_id, deadline = new_request_id(), self._client.deadline(timeout)
        responses = self._client.transport.stream(
            self._client.text_model, inputs, request_id=request_id, deadline=deadline
        )
        return request_id, _refusals_named(responses)


async def _refusals_named(responses: AsyncIterator[Outputs]) -> AsyncIterator[Outputs]:
    """``responses``; the ensemble's refusal of an input tensor as the BadRequestError naming the request field that
    travels in it (the refusals that depend on the deployment: the rest were refused before sending)."""
    try:
        async for outputs in responses:
            yield outputs
    except InputRefusedError as refusal:
        raise refused_field(refusal.input_name, refusal.reason) or refusal from None
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


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
