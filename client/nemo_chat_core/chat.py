"""The `chat` model's logic: an OpenAI request → a `tensorrt_llm` request → OpenAI response objects.

`ChatEndpoint.prepare` validates the request and renders the prompt on the server (`encode_chat`:
user and tool text never becomes control tokens). `ChatEndpoint.respond` turns the generated id
chunks into `chat.completion.chunk`s (streaming) or one `chat.completion`: incremental detokenizing,
tool-call parsing, stop sequences, `finish_reason` and `usage`.

`tool_choice`: `none` renders no tools; `auto` lets the model choose; `required` and a named function
are enforced by starting the assistant turn with the `[TOOL_CALLS]` token and guiding the rest
(nemo_chat_core.guided): a list of calls to the request's tools (only the named one), each call's
arguments held to its function's `parameters`, so the call is valid by construction. One cut short by
`max_tokens` comes back as a `tool_calls` entry with what was written and finish reason `length`.
`response_format` and the `guided_*` fields guide the text the same way.

Under `auto`, a tool marked `strict` gets the same guarantee in two generations: the first runs free until the
model writes `[TOOL_CALLS]` (or ends); then a second, guided, continues the same sequence with the call list
(`ChatResponder.continuation`). The engine's guide types cannot say "text, or a call after `[TOOL_CALLS]`"
in one grammar, and control tokens are outside every grammar.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from nemo_chat_core.chat_request import ChatRequest, ToolChoice
from nemo_chat_core.chat_response import ResponseBuilder, Usage
from nemo_chat_core.engine_tensors import GenerationRequest, LogOutputs, LoraInputs
from nemo_chat_core.guided import Guide, tool_calls_guide
from nemo_chat_core.length_limits import LengthLimits
from nemo_chat_core.log_probs import TokenLogProb, chat_logprobs_content, chosen, scored
from nemo_chat_core.lora import AdapterRegistry, LoraAdapter, requested_adapter
from nemo_chat_core.stop_strings import StopStringMatcher
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.end_user import end_user_line
from nemo_protocol.errors import BadRequestError, ServerError, error_body
from nemo_protocol.tekken import Tekkenizer
from nemo_protocol.tool_calls import ContentDelta, Delta, OutputParser, ToolCall, ToolCallDelta, new_tool_call_id

Event = dict[str, Any]
Chunk = list[int] | tuple[list[int], LogOutputs]
CancellableChunks = tuple[Iterable[Chunk], Callable[[], None]]  # a generation's chunks, and how to cancel it


@dataclass(frozen=True)
class PreparedChat:
    request: ChatRequest
    generation: GenerationRequest
    forced_ids: list[int]  # the start of the assistant turn that the template imposes (tool_choice)
    call_guide: Guide | None = None  # tool_choice auto with strict tools: guides a call once [TOOL_CALLS] comes
    model_name: str = ""  # the name answers carry: the base model's, or the LoRA adapter's the request named
    adapter: LoraAdapter | None = None  # the request's LoRA adapter: its weights go out again on a cache miss


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
        self,
        tokenizer: Tekkenizer,
        limits: LengthLimits,
        model_name: str,
        *,
        supports_penalties: bool,
        generation_logits: bool = True,
        log: Callable[[str], None] | None = None,
        adapters: AdapterRegistry | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.adapters = adapters  # LoRA adapters served by name beside the base model
        self.log = log  # where a request that names its end user (``user``) is recorded
        self.limits = limits
        self.model_name = model_name
        self.supports_penalties = supports_penalties
        self.generation_logits = generation_logits  # the engine returns them (top_logprobs needs them)

    # ----- request ---------------------------------------------------------------------------------
    def prepare(self, raw: bytes | str) -> PreparedChat:
        """Validate and render a JSON request body; raises BadRequestError naming the field."""
        return self.prepare_body(ChatRequest.parse(raw))

    def prepare_body(self, body: Mapping[str, Any] | ChatRequest) -> PreparedChat:
        """Validate (unless already a ChatRequest) and render; raises BadRequestError naming the field."""
        request = body if isinstance(body, ChatRequest) else ChatRequest.from_body(body)
        adapter = self._adapter(request.model)
        self._check_capabilities(request)
        tools = None if request.tool_choice.mode == "none" else request.tools
        forced = self._forced_prefix(request.tool_choice)
        ids = encode_chat(self.tokenizer, request.messages, tools) + forced  # validates the tools too
        guide = request.guide
        if guide is not None and request.ignore_eos:
            raise BadRequestError(
                "cannot be combined with guided output, which ends the generation", param="nvext.ignore_eos"
            )
        if request.tool_choice.enforced:
            if guide is not None:
                raise BadRequestError(
                    f"cannot be combined with tool_choice {request.tool_choice.mode!r}: the output is a tool call",
                    param=guide.param,
                )
            guide = tool_calls_guide(
                request.tools or [], request.tool_choice.function, one_call=not request.parallel_tool_calls
            )
        call_guide = None
        if request.tool_choice.mode == "auto" and any((t.get("function") or {}).get("strict") for t in tools or []):
            call_guide = tool_calls_guide(tools or [], None, one_call=not request.parallel_tool_calls, strict_only=True)
        max_tokens = request.max_tokens if request.max_tokens is not None else self.limits.max_seq_len - len(ids)
        self.limits.check(len(ids), max_tokens, prompt_param="messages", max_tokens_param="max_tokens")
        if request.min_tokens > max_tokens:
            raise BadRequestError(f"{request.min_tokens} is more than max_tokens ({max_tokens})", param="min_tokens")
        generation = GenerationRequest(
            input_ids=ids,
            max_new_tokens=max_tokens,
            end_id=None if request.ignore_eos else self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            streaming=True,  # always: stop sequences and cancellation end generation early
            sampling=request.sampling,
            min_tokens=request.min_tokens,
            return_log_probs=request.logprobs,
            return_generation_logits=request.top_logprobs > 0,
            guide=guide,
            lora=None if adapter is None else LoraInputs(adapter.task_id),
        )
        name = self.model_name if adapter is None else adapter.name
        return PreparedChat(request, generation, forced, call_guide, name, adapter)

    def _adapter(self, model: str | None) -> LoraAdapter | None:
        """The LoRA adapter ``model`` names (None: the base model); NotFoundError naming the served names."""
        return requested_adapter(self.adapters, model, self.model_name)

    def _check_capabilities(self, request: ChatRequest) -> None:
        if request.top_logprobs and not self.generation_logits:
            raise BadRequestError(
                "above 0 needs the generation logits: this engine was built without gather_generation_logits "
                "(rebuild with --set gather_generation_logits=true)",
                param="top_logprobs",
            )
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
        # Only the token: text forced here would fix a tokenization the model may not share (its ` {"`
        # is one token where a forced prefix ends in a lone space); the guide holds the rest.
        return [self.tokenizer.control_id("[TOOL_CALLS]")] if choice.enforced else []

    # ----- response --------------------------------------------------------------------------------
    def responder(self, chat: PreparedChat) -> ChatResponder:
        """The response to ``chat`` in the making: feed it the generated ids as they come."""
        return ChatResponder(self.tokenizer, chat.model_name or self.model_name, chat, self.log)

    def respond(
        self,
        chat: PreparedChat,
        chunks: Iterable[Chunk],
        cancel: Callable[[], None],
        resume: Callable[[GenerationRequest], CancellableChunks] | None = None,
    ) -> Iterator[Event]:
        """Events to send, in order: chunks (streaming) or one completion; an error event ends early.

        ``cancel`` ends the generation once a stop sequence matched; the chunks generated meanwhile are drained.
        ``resume`` starts the guided continuation a strict tool call needs (see the module's doc).
        """
        responder = self.responder(chat)
        yield from responder.start()
        stream: CancellableChunks | None = (chunks, cancel)
        while stream is not None:
            chunks, cancel = stream
            for chunk in chunks:
                if responder.stopped:
                    continue
                ids, logs = chunk if isinstance(chunk, tuple) else (chunk, None)
                yield from responder.feed(ids, logs)
                if responder.stopped:
                    cancel()
            follow_up = responder.continuation()
            if follow_up is not None and resume is None:
                raise ServerError("a strict tool call needs a guided continuation, which this caller cannot start")
            stream = None if follow_up is None else resume(follow_up)  # type: ignore[misc]
        yield from responder.finish()


GUIDE_INPUTS = ("guided_decoding_guide_type", "guided_decoding_guide")


def guide_refusal(chat: PreparedChat, message: str) -> BadRequestError | None:
    """The engine's refusal of this request's guide (a grammar that does not compile, say), as the client's
    error naming the field the guide came from; None for any other engine error."""
    guide = chat.generation.guide or chat.call_guide
    name, _, reason = message.partition(": ")
    if guide is None or name not in GUIDE_INPUTS:
        return None
    return BadRequestError(reason, param=guide.param)


class ChatResponder:
    """One response to a prepared chat: ``start()``, ``feed(ids)`` per chunk of generated ids, ``finish()``.

    Each returns the events to send now. Any number of ids can be fed at once (tokens that queued up while
    the last events were sent): they make one content chunk, not one per token. Once ``stopped`` (a stop
    sequence matched) the caller should end the generation; later feeds are ignored.
    """

    def __init__(
        self, tokenizer: Tekkenizer, model_name: str, chat: PreparedChat, log: Callable[[str], None] | None = None
    ) -> None:
        self._chat = chat
        self._log = log
        self._request = chat.request
        self._builder = ResponseBuilder(model_name)
        self._parser: OutputParser | _ContentOnly = (
            _ContentOnly(tokenizer) if self._request.tool_choice.mode == "none" else OutputParser(tokenizer)
        )
        self._enforced = self._request.tool_choice.enforced
        self._call_guide = chat.call_guide  # until used: the guided continuation of a strict call
        self._call_begun = False  # [TOOL_CALLS] came under call_guide: this generation ends, a guided one follows
        self._call_marker = tokenizer.control_id("[TOOL_CALLS]")
        self._generated_ids: list[int] = []  # what the continuation continues (kept only with call_guide)
        self._stops = StopStringMatcher(self._request.stop)
        self._content: list[str] = []
        self._unparsed: list[str] = []
        self._ended = False
        self._tokenizer = tokenizer
        self._logprobs: list[TokenLogProb] = []  # every generated token's, for the whole completion
        self._logprobs_pending: list[TokenLogProb] = []  # streaming: not yet sent on a chunk
        self._calls: list[ToolCall] = []
        self.generated = 0

    @property
    def stopped(self) -> bool:
        """A stop sequence matched, the one call parallel_tool_calls=false allows is complete, or a strict call
        begun needs its guided continuation."""
        return self._stops.stopped or self._ended or self._call_begun

    def continuation(self) -> GenerationRequest | None:
        """Once the generation fed so far ended: the guided one that writes the strict call it began, if any."""
        if not self._call_begun or self._call_guide is None:
            return None
        guide, self._call_guide, self._call_begun = self._call_guide, None, False
        self._enforced = True  # from here on the output is a call, as under tool_choice required
        first = self._chat.generation
        remaining = first.max_new_tokens - self.generated
        if remaining <= 0:
            return None  # finish() reports the call max_tokens cut before it began
        return replace(
            first,
            input_ids=[*first.input_ids, *self._generated_ids],
            max_new_tokens=remaining,
            min_tokens=0,
            guide=guide,
        )

    def start(self) -> list[Event]:
        if self._request.user is not None and self._log is not None:
            self._log(end_user_line(self._builder.id, self._request.user))
        if self._chat.forced_ids:
            self._parser.feed(self._chat.forced_ids)
        return self._usage_so_far([self._builder.role_chunk()] if self._request.stream else [])

    def feed(self, ids: list[int], logs: LogOutputs | None = None) -> list[Event]:
        """The events for ``ids``; ``logs``: what the engine returned beside them (for ``logprobs``)."""
        if self.stopped:
            return []
        if self._call_guide is not None:
            ids = self._until_call(ids)
        self.generated += len(ids)
        if self._request.logprobs and ids:
            self._log_tokens(ids, logs)
        return self._usage_so_far(self._with_logprobs(self._take(self._parser.feed(ids))))

    def _until_call(self, ids: list[int]) -> list[int]:
        """``ids`` up to a [TOOL_CALLS] that begins a call (which ends this generation), all of them if none."""
        if self._call_marker in ids:
            ids = ids[: ids.index(self._call_marker) + 1]
            self._call_begun = True
        self._generated_ids += ids
        return ids

    def _log_tokens(self, ids: list[int], logs: LogOutputs | None) -> None:
        if logs is None or logs.log_probs is None:
            raise ServerError("the engine returned no log probabilities (return_log_probs)")
        tokens = chosen(ids, logs.log_probs)
        top_n = self._request.top_logprobs
        if top_n and logs.generation_logits is not None:  # the engine's own value for the chosen token stands
            tops = scored(ids, logs.generation_logits[: len(ids)], top_n)
            tokens = [
                replace(
                    top,
                    log_prob=token.log_prob,  # and the same value where the token is among its alternatives
                    top=tuple((i, token.log_prob if i == token.token_id else p) for i, p in top.top),  # type: ignore[misc]
                )
                for token, top in zip(tokens, tops, strict=True)
            ]
        self._logprobs.extend(tokens)
        self._logprobs_pending.extend(tokens)

    def _with_logprobs(self, events: list[Event]) -> list[Event]:
        """Streaming: the tokens' logprobs ride on the next chunk that carries a choice."""
        if not self._logprobs_pending or not self._request.stream:
            return events
        for event in events:
            if event.get("choices"):
                event["choices"][0]["logprobs"] = {"content": self._logprobs_content(self._logprobs_pending)}
                self._logprobs_pending = []
                break
        return events

    def _logprobs_content(self, tokens: list[TokenLogProb]) -> list[dict[str, Any]]:
        return chat_logprobs_content(self._tokenizer, tokens, top_n=self._request.top_logprobs)

    def _usage_so_far(self, events: list[Event]) -> list[Event]:
        """stream_options.continuous_usage_stats: every chunk carries the usage up to it."""
        if self._request.continuous_usage:
            usage = Usage(len(self._chat.generation.input_ids), self.generated).as_dict()
            for event in events:
                event.setdefault("usage", usage)
        return events

    def finish(self) -> list[Event]:
        events: list[Event] = []
        request, builder, stops = self._request, self._builder, self._stops
        if not self.stopped:
            events += self._take(self._parser.finish())
            tail = stops.flush()
            if tail:
                self._content.append(tail)
                if request.stream:
                    events.append(builder.content_chunk(tail))
        calls, error = self._calls, self._parser.tool_call_error
        cut = not self.stopped and self.generated >= self._chat.generation.max_new_tokens
        if self._enforced and (error is not None or not calls):
            partial = _partial_call("".join(self._unparsed)) if cut else None
            if partial is None:
                # The guide makes a call; short of one, max_tokens ended it before the call's name (or, without a
                # grammar engine, the model wrote no call): the client's limit, not a server fault, and not retried.
                required = "tool_choice requires" if request.tool_choice.enforced else "a strict tool's call began as"
                events.append(
                    error_body(
                        f"{required} a tool call but the output is not one: {error or 'no call'}"
                        + ("; max_tokens ran out before the call's name was written" if cut else ""),
                        error_type="invalid_request_error",
                        param="max_tokens" if cut else "tool_choice",
                        code=400,
                    )
                )
                return events
            calls = [*calls, partial]
            if request.stream:
                events.append(builder.tool_call_chunk(len(calls) - 1, partial))
            error = None
        if calls and error is None:
            finish_reason = "length" if cut else "tool_calls"
        elif cut:
            finish_reason = "length"
        else:
            finish_reason = "stop"
        usage = Usage(len(self._chat.generation.input_ids), self.generated)
        if request.stream:
            events.append(builder.finish_chunk(finish_reason))
            if request.include_usage:
                events.append(builder.usage_chunk(usage))
            return self._usage_so_far(self._with_logprobs(events))
        text = "".join(self._content)
        completion = builder.completion(text if text or not calls else None, calls, finish_reason, usage)
        if request.logprobs:
            completion["choices"][0]["logprobs"] = {"content": self._logprobs_content(self._logprobs)}
        events.append(completion)
        return events

    def _take(self, deltas: list[Delta]) -> list[Event]:
        events: list[Event] = []
        for delta in deltas:
            if isinstance(delta, ToolCallDelta):
                if self._calls and not self._request.parallel_tool_calls:
                    self._ended = True  # parallel_tool_calls false: the first call is the answer
                    break
                self._calls.append(delta.call)
                if self._request.stream:
                    events.append(self._builder.tool_call_chunk(delta.index, delta.call))
                continue
            if self._enforced:
                self._unparsed.append(delta.text)  # an enforced call's text that did not parse: finish() reports it
                continue
            text = self._stops.feed(delta.text)
            if text:
                self._content.append(text)
                if self._request.stream:
                    events.append(self._builder.content_chunk(text))
        return events


_PARTIAL_CALL = re.compile(r'\{\s*"name"\s*:\s*"([a-zA-Z0-9_-]{1,64})"\s*,\s*"arguments"\s*:\s*(.*)\Z', re.DOTALL)


def _partial_call(text: str) -> ToolCall | None:
    """The call that ``text`` (an open call list, cut short) had begun, its arguments as far as written."""
    match = _PARTIAL_CALL.search(text)
    return None if match is None else ToolCall(new_tool_call_id(), match.group(1), match.group(2))
