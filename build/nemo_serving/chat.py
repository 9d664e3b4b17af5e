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
from collections.abc import Callable, Iterable, Iterator
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
        """Validate and render; raises BadRequestError naming the field."""
        request = ChatRequest.parse(raw)
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
    def respond(self, chat: PreparedChat, chunks: Iterable[list[int]], cancel: Callable[[], None]) -> Iterator[Event]:
        """Events to send, in order: chunks (streaming) or one completion; an error event ends early."""
        request = chat.request
        builder = ResponseBuilder(self.model_name)
        parser: OutputParser | _ContentOnly = (
            _ContentOnly(self.tokenizer) if request.tool_choice.mode == "none" else OutputParser(self.tokenizer)
        )
        enforced = request.tool_choice.enforced
        stops = StopStringMatcher(request.stop)
        content: list[str] = []
        calls: list[ToolCall] = []
        generated = 0
        if request.stream:
            yield builder.role_chunk()
        if chat.forced_ids:
            parser.feed(chat.forced_ids)

        def take(deltas: list[Delta]) -> Iterator[Event]:
            for delta in deltas:
                if isinstance(delta, ToolCallDelta):
                    calls.append(delta.call)
                    if request.stream:
                        yield builder.tool_call_chunk(delta.index, delta.call)
                    continue
                if enforced:
                    continue  # text in an enforced tool call means the call failed: reported below
                text = stops.feed(delta.text)
                if text:
                    content.append(text)
                    if request.stream:
                        yield builder.content_chunk(text)

        for ids in chunks:
            if stops.stopped:
                continue  # drain what was generated before the stop took effect
            generated += len(ids)
            yield from take(parser.feed(ids))
            if stops.stopped:
                cancel()
        if not stops.stopped:
            yield from take(parser.finish())
            tail = stops.flush()
            if tail:
                content.append(tail)
                if request.stream:
                    yield builder.content_chunk(tail)
        if enforced and (parser.tool_call_error is not None or not calls):
            reason = parser.tool_call_error or "no tool call was generated"
            yield error_body(
                f"tool_choice requires a tool call but the model's output is not one: {reason}",
                error_type="server_error",
                param="tool_choice",
                code=500,
            )
            return

        if calls and parser.tool_call_error is None:
            finish_reason = "tool_calls"
        elif not stops.stopped and generated >= chat.generation.max_new_tokens:
            finish_reason = "length"
        else:
            finish_reason = "stop"
        usage = Usage(len(chat.generation.input_ids), generated)
        if request.stream:
            yield builder.finish_chunk(finish_reason)
            if request.include_usage:
                yield builder.usage_chunk(usage)
            return
        text = "".join(content)
        yield builder.completion(text if text or not calls else None, calls, finish_reason, usage)
