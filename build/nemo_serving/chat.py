"""The `chat` model's logic: an OpenAI request → a `tensorrt_llm` request → OpenAI response objects.

`ChatEndpoint.prepare` validates the request and renders the prompt on the server (`encode_chat`:
user and tool text never becomes control tokens). `ChatEndpoint.respond` turns the generated id
chunks into `chat.completion.chunk`s (streaming) or one `chat.completion`: incremental detokenizing,
tool-call parsing, stop sequences, `finish_reason` and `usage`.

`tool_choice`: `none` renders no tools; `auto` lets the model choose; `required` and a named function
are enforced by starting the assistant turn with `[TOOL_CALLS]` (and, for a named function, the
call's opening up to its arguments), so the model can only complete a call; output that still fails
to parse as one ends the response with an error instead of pretending.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nemo_protocol.chat_format import encode_chat
from nemo_protocol.errors import BadRequestError, error_body
from nemo_protocol.tekken import Tekkenizer
from nemo_protocol.tool_calls import ContentDelta, Delta, OutputParser, ToolCall, ToolCallDelta
from nemo_serving.chat_request import ChatRequest, ToolChoice
from nemo_serving.chat_response import ResponseBuilder, Usage
from nemo_serving.contract import GenerationRequest
from nemo_serving.preprocessing import LengthLimits
from nemo_serving.stop_strings import StopStringMatcher

Event = dict[str, Any]


@dataclass(frozen=True)
class PreparedChat:
    request: ChatRequest
    generation: GenerationRequest
    forced_ids: list[int]  # the start of the assistant turn that the template imposes (tool_choice)


class _ContentOnly:
    """The parser used when tools are hidden: every id is text, control tokens dropped."""

    def __init__(self, tokenizer: Tekkenizer) -> None:
        self._decoder = tokenizer.incremental_decoder()
        self.tool_call_error: str | None = None

    def feed(self, ids: list[int]) -> list[Delta]:
        text = self._decoder.feed(ids)
        return [ContentDelta(text)] if text else []

    def finish(self) -> list[Delta]:
        text = self._decoder.flush()
        return [ContentDelta(text)] if text else []


class ChatEndpoint:
    def __init__(
        self, tokenizer: Tekkenizer, limits: LengthLimits, model_name: str, *, supports_penalties: bool
    ) -> None:
        self.tokenizer = tokenizer
        self.limits = limits
        self.model_name = model_name
        self.supports_penalties = supports_penalties

    # ----- request ---------------------------------------------------------------------------------
    def prepare(self, raw: bytes | str) -> PreparedChat:
        """Validate and render a JSON request body; raises BadRequestError naming the field."""
        return self.prepare_body(ChatRequest.parse(raw))

    def prepare_body(self, body: Mapping[str, Any] | ChatRequest) -> PreparedChat:
        """Validate (unless already a ChatRequest) and render; raises BadRequestError naming the field."""
        request = body if isinstance(body, ChatRequest) else ChatRequest.from_body(body)
        self._check_capabilities(request)
        tools = None if request.tool_choice.mode == "none" else request.tools
        forced = self._forced_prefix(request.tool_choice)
        ids = encode_chat(self.tokenizer, request.messages, tools) + forced
        max_tokens = request.max_tokens if request.max_tokens is not None else self.limits.max_seq_len - len(ids)
        self.limits.check(len(ids), max_tokens, prompt_param="messages", max_tokens_param="max_tokens")
        generation = GenerationRequest(
            input_ids=ids,
            max_new_tokens=max_tokens,
            end_id=None if request.ignore_eos else self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            streaming=True,  # always: stop sequences and cancellation end generation early
            sampling=request.sampling,
        )
        return PreparedChat(request, generation, forced)

    def _check_capabilities(self, request: ChatRequest) -> None:
        if request.logprobs:
            raise BadRequestError("is not supported by this deployment (accepted: false)", param="logprobs")
        if self.supports_penalties:
            return
        for name, value, neutral in (
            ("presence_penalty", request.sampling.presence_penalty, 0.0),
            ("frequency_penalty", request.sampling.frequency_penalty, 0.0),
            ("nvext.repetition_penalty", request.sampling.repetition_penalty, 1.0),
        ):
            if value != neutral:
                raise BadRequestError(
                    f"is not supported by the CPU reference runtime (accepted: {neutral:g}); GPU engines apply it",
                    param=name,
                )

    def _forced_prefix(self, choice: ToolChoice) -> list[int]:
        if not choice.enforced:
            return []
        ids = [self.tokenizer.control_id("[TOOL_CALLS]")]
        if choice.function is not None:
            ids += self.tokenizer.encode('[{"name": ' + json.dumps(choice.function) + ', "arguments": ')
        return ids

    # ----- response --------------------------------------------------------------------------------
    def responder(self, chat: PreparedChat) -> ChatResponder:
        """The response to ``chat`` in the making: feed it the generated ids as they come."""
        return ChatResponder(self.tokenizer, self.model_name, chat)

    def respond(self, chat: PreparedChat, chunks: Iterable[list[int]], cancel: Callable[[], None]) -> Iterator[Event]:
        """Events to send, in order: chunks (streaming) or one completion; an error event ends early.

        ``cancel`` ends the generation once a stop sequence matched; the chunks generated meanwhile are drained.
        """
        responder = self.responder(chat)
        yield from responder.start()
        for ids in chunks:
            if responder.stopped:
                continue
            yield from responder.feed(ids)
            if responder.stopped:
                cancel()
        yield from responder.finish()


class ChatResponder:
    """One response to a prepared chat: ``start()``, ``feed(ids)`` per chunk of generated ids, ``finish()``.

    Each returns the events to send now. Any number of ids can be fed at once (tokens that queued up while
    the last events were sent): they make one content chunk, not one per token. Once ``stopped`` (a stop
    sequence matched) the caller should end the generation; later feeds are ignored.
    """

    def __init__(self, tokenizer: Tekkenizer, model_name: str, chat: PreparedChat) -> None:
        self._chat = chat
        self._request = chat.request
        self._builder = ResponseBuilder(model_name)
        self._parser: OutputParser | _ContentOnly = (
            _ContentOnly(tokenizer) if self._request.tool_choice.mode == "none" else OutputParser(tokenizer)
        )
        self._enforced = self._request.tool_choice.enforced
        self._stops = StopStringMatcher(self._request.stop)
        self._content: list[str] = []
        self._calls: list[ToolCall] = []
        self.generated = 0

    @property
    def stopped(self) -> bool:
        return self._stops.stopped

    def start(self) -> list[Event]:
        if self._chat.forced_ids:
            self._parser.feed(self._chat.forced_ids)
        return [self._builder.role_chunk()] if self._request.stream else []

    def feed(self, ids: list[int]) -> list[Event]:
        if self._stops.stopped:
            return []
        self.generated += len(ids)
        return self._take(self._parser.feed(ids))

    def finish(self) -> list[Event]:
        events: list[Event] = []
        request, builder, stops = self._request, self._builder, self._stops
        if not stops.stopped:
            events += self._take(self._parser.finish())
            tail = stops.flush()
            if tail:
                self._content.append(tail)
                if request.stream:
                    events.append(builder.content_chunk(tail))
        calls, error = self._calls, self._parser.tool_call_error
        if self._enforced and (error is not None or not calls):
            reason = error or "no tool call was generated"
            events.append(
                error_body(
                    f"tool_choice requires a tool call but the model's output is not one: {reason}",
                    error_type="server_error",
                    param="tool_choice",
                    code=500,
                )
            )
            return events
        if calls and error is None:
            finish_reason = "tool_calls"
        elif not stops.stopped and self.generated >= self._chat.generation.max_new_tokens:
            finish_reason = "length"
        else:
            finish_reason = "stop"
        usage = Usage(len(self._chat.generation.input_ids), self.generated)
        if request.stream:
            events.append(builder.finish_chunk(finish_reason))
            if request.include_usage:
                events.append(builder.usage_chunk(usage))
            return events
        text = "".join(self._content)
        events.append(builder.completion(text if text or not calls else None, calls, finish_reason, usage))
        return events

    def _take(self, deltas: list[Delta]) -> list[Event]:
        events: list[Event] = []
        for delta in deltas:
            if isinstance(delta, ToolCallDelta):
                self._calls.append(delta.call)
                if self._request.stream:
                    events.append(self._builder.tool_call_chunk(delta.index, delta.call))
                continue
            if self._enforced:
                continue  # text in an enforced tool call means the call failed: reported by finish()
            text = self._stops.feed(delta.text)
            if text:
                self._content.append(text)
                if self._request.stream:
                    events.append(self._builder.content_chunk(text))
        return events
