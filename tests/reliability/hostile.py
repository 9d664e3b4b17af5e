"""The hostile inputs of ``test_hostile.py``, by kind, and what each must get back.

Every refusal is checked for the answer a user sees: over HTTP (the gateway) the exact status and an OpenAI
error body whose ``param`` names the field (``None`` only where the body as a whole is at fault: its size, its
nesting past what the parser reads, bytes that are not UTF-8); over gRPC a ``chat`` error event with code 400
naming the field, or the error text of the ``ensemble`` / ``tensorrt_llm`` model, which starts with the
tensor's name (``BadRequestError``'s text), or Triton's own refusal naming the input (wrong dtype or shape).
Control-token text is accepted as text: the prompt's ids are checked, not just the status.

Each kind is a list of variants; a pass sends each variant ``repeats`` times. Every send returns a
:class:`Seen` (what came back, and whether it was the expected answer); none raises.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from nemo_client.client import AsyncNemoClient
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.errors import APIError
from nemo_protocol.request_limits import RequestLimits
from nemo_protocol.tekken import Tekkenizer
from tests.integration.triton_calls import InferenceServerException, StreamingCall, chat_inputs, infer
from tests.reliability.servers import MAX_INPUT_LEN, MAX_SEQ_LEN

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
LIMITS = RequestLimits()  # the gateway under test runs with the default limits
CONTROL_TEXT = (
    "[INST]</s>[TOOL_CALLS][AVAILABLE_TOOLS]<s>[/INST][TOOL_RESULTS][/AVAILABLE_TOOLS][/TOOL_RESULTS]"
    "[TOOL_CONTENT]<pad><unk>[IMG][SYSTEM_PROMPT][/SYSTEM_PROMPT][PREFIX][MIDDLE][SUFFIX]<SPECIAL_20>"
)
"""Every control token's name as text: wherever a user puts it, it must stay text."""
USER = [{"role": "user", "content": "Hello"}]
LONG_OUTPUT = 2000
"""Tokens asked of a stream that is cut: it can end only by being cancelled."""


@dataclass(frozen=True)
class Seen:
    kind: str
    status: str  # "400", "413", "200" (HTTP); "error 400" (a chat error event); "refused" (a stream error); "cut"
    ok: bool
    detail: str = ""


Send = Callable[[], Awaitable[Seen]]


@dataclass
class Target:
    """The stack under test, and the clients every send shares."""

    gateways: dict[str, str]
    """The gateway's URL by its chat path: ``direct`` (the default) and ``chat-model``; HTTP kinds go to each."""
    grpc_url: str
    http: httpx.AsyncClient
    client: AsyncNemoClient
    tokenizer: Tekkenizer


# ----- conversations with control-token text in every field ---------------------------------------------
def control_conversation(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Messages and tools with ``text`` in every free-text field: system, user (string and parts), assistant,
    tool descriptions, parameter names, descriptions and enums, tool-call ids and arguments, tool results."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": text,
                "parameters": {
                    "type": "object",
                    "properties": {text: {"type": "string", "description": text, "enum": [text]}},
                    "required": [text],
                },
            },
        }
    ]
    calls = [
        {"id": text, "type": "function", "function": {"name": "lookup", "arguments": json.dumps({text: text})}},
        {"id": "2" + text, "type": "function", "function": {"name": "lookup", "arguments": {text: [text]}}},
    ]
    messages = [
        {"role": "system", "content": text},
        {"role": "user", "content": text, "name": "INST"},
        {"role": "assistant", "content": [{"type": "text", "text": text}]},
        {"role": "user", "content": [{"type": "text", "text": text}, {"type": "text", "text": text}]},
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": text, "content": text},
        {"role": "tool", "tool_call_id": "2" + text, "name": "lookup", "content": json.dumps({text: [text]})},
    ]
    return messages, tools


def control_ids_of(tokenizer: Tekkenizer, text: str) -> list[int]:
    """The control ids of the control conversation rendered with ``text`` (template structure only)."""
    messages, tools = control_conversation(text)
    return [i for i in encode_chat(tokenizer, messages, tools) if tokenizer.is_control(i)]


def hostile_prompt_tokens(tokenizer: Tekkenizer) -> int:
    """How many ids the control conversation renders to, control-token text encoded as plain text."""
    messages, tools = control_conversation(CONTROL_TEXT)
    return len(encode_chat(tokenizer, messages, tools))


def control_body(**fields: Any) -> dict[str, Any]:
    messages, tools = control_conversation(CONTROL_TEXT)
    stops = ["[INST]", "</s>", "[TOOL_CALLS]", "<s>"]
    return {"messages": messages, "tools": tools, "stop": stops, "max_tokens": 8, "temperature": 0, **fields}


# ----- HTTP refusals through the gateway ----------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    """A body the gateway must refuse: the status, the field named (None: the body as a whole), words of the
    message. ``raw`` is the body's bytes, or a function giving its chunks (sent without a Content-Length)."""

    raw: bytes | Callable[[], Iterator[bytes]]
    status: int
    param: str | None
    words: str = ""
    route: str = CHAT
    param_prefix: bool = False  # the deepest fields are named by a long path: check its start


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _ask(content: str = "Hello", **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **fields}


def _raw_ask(fields: str) -> bytes:
    """A chat body with ``fields`` spliced in as raw JSON text (NaN, escapes, huge literals)."""
    return ('{"messages": [{"role": "user", "content": "Hello"}], ' + fields + "}").encode("utf-8")


def _tool_exchange(call_id: str = "call_1", name: str = "lookup", tool_name: str | None = None) -> bytes:
    tool = {"role": "tool", "tool_call_id": call_id, "content": "12"}
    if tool_name is not None:
        tool["name"] = tool_name
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}
    body = {"messages": [*USER, {"role": "assistant", "tool_calls": [call]}, tool]}
    return json.dumps(body).encode("utf-8")  # ensure_ascii: a lone surrogate travels as its escape


def _oversized() -> bytes:
    return _json(_ask("x" * LIMITS.max_body_bytes))


def _oversized_chunks() -> Iterator[bytes]:
    raw = _oversized()
    for start in range(0, len(raw), 256 * 1024):
        yield raw[start : start + 256 * 1024]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _many_tools(count: int) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f"tool_{i}"}} for i in range(count)]


DEPTH = LIMITS.max_json_depth
HTTP_REFUSALS: dict[str, list[Refusal]] = {
    "http_oversized_body": [
        Refusal(_oversized(), 413, None, f"the limit is {LIMITS.max_body_bytes}"),
        Refusal(_oversized_chunks, 413, None, f"exceeds the limit of {LIMITS.max_body_bytes} bytes"),
        Refusal(_oversized_chunks, 413, None, "exceeds the limit", route=COMPLETIONS),
    ],
    "http_deep_nesting": [
        Refusal(('{"messages": ' + _nested(5_000) + "}").encode(), 400, None, f"nested deeper than {DEPTH} levels"),
        Refusal(('{"prompt": ' + _nested(100_000) + "}").encode(), 400, None, "nested deeper", route=COMPLETIONS),
        Refusal(
            ('{"messages": [{"role": "user", "content": ' + _nested(DEPTH + 1) + "}]}").encode(),
            400, "messages[0].content", f"nested deeper than {DEPTH} levels", param_prefix=True,
        ),
        Refusal(
            _json({**_ask(), "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": json.loads(_nested(DEPTH))}}}]}),
            400, "tools[0].function.parameters.properties", "nested deeper", param_prefix=True,
        ),
    ],
    "http_invalid_utf8": [
        Refusal(b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None, "not valid JSON"),
        # json reads bytes with surrogatepass: CESU-8 bytes of a surrogate become a lone surrogate, named.
        Refusal(b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', 400, "messages[0].content",
                "lone surrogate (U+D800)"),
        Refusal(b'{"messages": [{"role": "user", "content": "\xc0\xaf"}]}', 400, None, "not valid JSON"),
        Refusal(b'{"prompt": "\x80", "max_tokens": 4}', 400, None, "not valid JSON", route=COMPLETIONS),
    ],
    "http_lone_surrogate": [
        Refusal(_raw_ask('"user": "\\ud800"'), 400, "user", "lone surrogate (U+D800)"),
        Refusal(b'{"messages": [{"role": "user", "content": "a\\udfffb"}]}', 400, "messages[0].content", "surrogate"),
        Refusal(_tool_exchange(call_id="\ud800"), 400, "messages[1].tool_calls[0].id", "lone surrogate"),
        Refusal(_tool_exchange(name="get\udbff"), 400, "messages[1].tool_calls[0].function.name", "surrogate"),
        Refusal(_raw_ask('"nvext": {"\\ud800": 1}'), 400, "nvext.\\ud800", "lone surrogate"),
        Refusal(_raw_ask('"stop": ["ok", "\\udc00"]'), 400, "stop[1]", "lone surrogate"),
        Refusal(b'{"prompt": "\\ud800", "max_tokens": 4}', 400, "prompt", "lone surrogate", route=COMPLETIONS),
    ],
    "http_non_finite_number": [
        Refusal(_raw_ask('"temperature": NaN'), 400, "temperature", "NaN is not a JSON number"),
        Refusal(_raw_ask('"top_p": Infinity'), 400, "top_p", "Infinity is not a JSON number"),
        Refusal(_raw_ask('"presence_penalty": -Infinity'), 400, "presence_penalty", "not a JSON number"),
        Refusal(_raw_ask('"temperature": 1e999'), 400, "temperature", "must be a finite number"),
        Refusal(_raw_ask('"nvext": {"repetition_penalty": -1e999}'), 400, "nvext.repetition_penalty", "finite"),
        Refusal(b'{"prompt": "a", "temperature": NaN}', 400, "temperature", "not a JSON number", route=COMPLETIONS),
    ],
    "http_negative_number": [
        Refusal(_json(_ask(max_tokens=-1)), 400, "max_tokens", "must be"),
        Refusal(_json(_ask(max_completion_tokens=-5)), 400, "max_completion_tokens", "must be"),
        Refusal(_json(_ask(temperature=-0.5)), 400, "temperature", "must be in [0, 2]"),
        Refusal(_json(_ask(top_p=-0.1)), 400, "top_p", "must be in (0, 1]"),
        Refusal(_json(_ask(presence_penalty=-3)), 400, "presence_penalty", "must be in [-2, 2]"),
        Refusal(_json(_ask(nvext={"top_k": -1})), 400, "nvext.top_k", "must be in [0, 2147483647]"),
        Refusal(_json(_ask(n=-1)), 400, "n", "must be an integer in [1, 16]"),
        Refusal(_json({"prompt": "a", "max_tokens": -1}), 400, "max_tokens", "must be at least 1", route=COMPLETIONS),
        Refusal(_json({"prompt": "a", "top_k": -1}), 400, "top_k", "must be in [0, 2147483647]", route=COMPLETIONS),
    ],
    "http_huge_number": [
        Refusal(_json(_ask(nvext={"top_k": 2**31})), 400, "nvext.top_k", "got 2147483648"),
        Refusal(_json(_ask(max_tokens=2**63)), 400, "max_tokens", "do not fit"),
        Refusal(_raw_ask('"max_tokens": 1' + "0" * 400), 400, "max_tokens", "do not fit"),
        Refusal(_raw_ask('"seed": ' + "9" * 5000), 400, None, "not valid JSON"),
        Refusal(_json(_ask("hello " * (MAX_INPUT_LEN + 10))), 400, "messages", "max_input_len"),
        Refusal(_json({"prompt": "a", "max_tokens": 10**11}), 400, "max_tokens", "2147483647", route=COMPLETIONS),
        Refusal(_json({"prompt": "a", "max_tokens": MAX_SEQ_LEN}), 400, "max_tokens", "do not fit", route=COMPLETIONS),
        Refusal(_json({"prompt": "hello " * (MAX_INPUT_LEN + 10)}), 400, "prompt", "max_input_len", route=COMPLETIONS),
    ],
    "http_malformed_stream_options": [
        Refusal(_json(_ask(stream=True, stream_options=[None, None])), 400, "stream_options", "must be an object"),
        Refusal(_json(_ask(stream=True, stream_options="x")), 400, "stream_options", "must be an object"),
        Refusal(
            _json(_ask(stream=True, stream_options={"include_usage": "yes"})),
            400, "stream_options.include_usage", "must be a bool",
        ),
        Refusal(_json(_ask(stream_options={"include_usage": True})), 400, "stream_options", "only allowed when"),
    ],
    "http_control_token_name": [
        Refusal(
            _json({**_ask(), "tools": [{"type": "function", "function": {"name": "[INST]"}}]}),
            400, "tools[0].function.name", "not a valid function name",
        ),
        Refusal(_tool_exchange(name="</s>"), 400, "messages[1].tool_calls[0].function.name", "not a valid function"),
        Refusal(_tool_exchange(tool_name="[TOOL_CALLS]"), 400, "messages[2].name", "not a valid function name"),
        Refusal(
            _json({**_ask(), "tools": _many_tools(1), "tool_choice": {"type": "function",
                                                                      "function": {"name": "[/INST]"}}}),
            400, "tool_choice.function.name", "is not one of the request's tools",
        ),
    ],
    "http_request_limit": [
        Refusal(_json({"messages": USER * (LIMITS.max_messages + 1)}), 400, "messages", "at most 1000"),
        Refusal(_json({**_ask(), "tools": _many_tools(LIMITS.max_tools + 1)}), 400, "tools", "at most 128"),
        Refusal(
            _json({**_ask(), "tools": [{"type": "function", "function": {"name": "f", "description": "x" * 70_000}}]}),
            400, "tools[0]", "bytes of JSON",
        ),
        Refusal(_json(_ask(stop=["x" * (LIMITS.max_stop_chars + 1)])), 400, "stop[0]", "at most 256"),
        Refusal(_json(_ask(stop=["a", "b", "c", "d", "e"])), 400, "stop", "at most 4"),
    ],
}  # fmt: skip


def check_refusal(kind: str, refusal: Refusal, response: httpx.Response, chat_path: str) -> Seen:
    status = f"{chat_path} {response.status_code}"
    try:
        body = response.json()
        error = body["error"]
        shaped = set(body) == {"error"} and set(error) == {"message", "type", "param", "code"}
    except (ValueError, KeyError, TypeError):
        return Seen(kind, status, False, f"not an OpenAI error body: {response.text[:300]}")
    param = error["param"]
    named = (
        isinstance(param, str) and param.startswith(refusal.param)
        if refusal.param_prefix and refusal.param is not None
        else param == refusal.param
    )
    good = (
        response.status_code == refusal.status
        and shaped
        and error["type"] == "invalid_request_error"
        and named
        and refusal.words in str(error["message"])
    )
    return Seen(kind, status, good, "" if good else f"expected {refusal.status} {refusal.param!r}: {body}"[:600])


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def send_refusal(target: Target, kind: str, refusal: Refusal, chat_path: str) -> Seen:
    content = refusal.raw if isinstance(refusal.raw, bytes) else _async_chunks(refusal.raw())
    headers = {"content-type": "application/json"}
    url = target.gateways[chat_path] + refusal.route
    try:
        response = await target.http.post(url, content=content, headers=headers)
    except httpx.HTTPError as error:
        return Seen(kind, f"{chat_path} {type(error).__name__}", False, str(error))
    return check_refusal(kind, refusal, response, chat_path)


# ----- gRPC refusals with hand-built tensors ------------------------------------------------------------
@dataclass(frozen=True)
class TensorRefusal:
    """Tensors a model must refuse. ``param``: the model refuses naming it (a ``chat`` error event with code 400,
    or error text starting ``param: ``); ``triton``: Triton refuses before the model, its error naming the input."""

    model: str
    inputs: dict[str, np.ndarray]
    param: str | None = None
    words: str = ""
    triton: str = ""


def _bytes(*items: bytes, rows: int = 0) -> np.ndarray:
    array = np.array(list(items), dtype=object)
    return array if rows == 0 else array.reshape(rows, -1)


def _chat_request(raw: bytes) -> dict[str, np.ndarray]:
    return {"request": _bytes(raw)}


def _ensemble(text: bytes = b"Hello", max_tokens: int = 4, **extra: np.ndarray) -> dict[str, np.ndarray]:
    return {"text_input": _bytes(text, rows=1), "max_tokens": np.array([[max_tokens]], dtype=np.int32), **extra}


def _one(value: Any, dtype: type) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def trtllm_inputs(ids: list[int] | None = None, output_len: int = 4, **extra: np.ndarray) -> dict[str, np.ndarray]:
    tensors = {
        "input_ids": np.array([ids or [1, 22177, 1033]], dtype=np.int32),
        "input_lengths": _one(len(ids or [1, 22177, 1033]), np.int32),
        "request_output_len": _one(output_len, np.int32),
        "streaming": _one(True, np.bool_),
        **extra,
    }
    return {name: array for name, array in tensors.items() if array.size or name == "input_ids"}


def _without(tensors: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    return {key: value for key, value in tensors.items() if key != name}


GRPC_REFUSALS: dict[str, list[TensorRefusal]] = {
    "grpc_chat_invalid_bytes": [
        TensorRefusal("chat", _chat_request(b'{"messages": [{"role": "user", "content": "\xff"}]}'), "request",
                      "not valid UTF-8"),
        TensorRefusal("chat", _chat_request(b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'), "request",
                      "not valid UTF-8"),
        TensorRefusal("chat", _chat_request(b"\xc0\xaf"), "request", "not valid UTF-8"),
        TensorRefusal("chat", _chat_request(b""), None, "not valid JSON"),
    ],
    "grpc_chat_hostile_json": [
        TensorRefusal("chat", _chat_request(_tool_exchange(call_id="\ud800")), "messages[1].tool_calls[0].id",
                      "lone surrogate"),
        TensorRefusal("chat", _chat_request(b'{"messages": [{"role": "user", "content": "\\udbff"}]}'),
                      "messages[0].content", "lone surrogate"),
        TensorRefusal("chat", _chat_request(('{"messages": ' + _nested(5_000) + "}").encode()), None, "nested deeper"),
        TensorRefusal("chat", _chat_request(_raw_ask('"temperature": NaN')), "temperature", "not a JSON number"),
        TensorRefusal("chat", _chat_request(_raw_ask('"temperature": 1e-40, "top_p": 1e999')), "top_p", "finite"),
        TensorRefusal("chat", _chat_request(_json(_ask(nvext={"top_k": 2**31}))), "nvext.top_k", "2147483647"),
        TensorRefusal("chat", _chat_request(_json(_ask(max_tokens=-1))), "max_tokens", "must be"),
        TensorRefusal("chat", _chat_request(_json(_ask(stream=True, stream_options=[None, None]))), "stream_options",
                      "must be an object"),
    ],
    "grpc_chat_wrong_tensor": [
        TensorRefusal("chat", {"request": np.array([7], dtype=np.int32)}, triton="input 'request' data-type"),
        TensorRefusal("chat", {"request": _bytes(b"{}", b"{}")}, triton="shape for input 'request'"),
        TensorRefusal("chat", {"request": _bytes(b"{}", rows=1)}, triton="shape for input 'request'"),
        TensorRefusal("chat", {}, triton="missing required input(s) ['request']"),
        TensorRefusal("chat", {"request": _bytes(b"{}"), "extra": _bytes(b"x")}, triton="'extra'"),
    ],
    "grpc_ensemble_hostile_tensor": [
        TensorRefusal("ensemble", _ensemble(b"\xff"), "text_input", "not valid UTF-8"),
        TensorRefusal("ensemble", _ensemble(b"\xed\xa0\x80"), "text_input", "not valid UTF-8"),
        TensorRefusal("ensemble", _ensemble(stop_words=_bytes(b"ok", b"\xfe", rows=1)), "stop_words", "UTF-8"),
        TensorRefusal("ensemble", _ensemble(bad_words=_bytes(b"\xed\xbf\xbf", rows=1)), "bad_words", "UTF-8"),
        TensorRefusal("ensemble", _ensemble(max_tokens=-1), "max_tokens", "must be at least 1"),
        TensorRefusal("ensemble", _ensemble(max_tokens=2**31 - 1), "max_tokens", "do not fit"),
        TensorRefusal("ensemble", _ensemble(b"hello " * (MAX_INPUT_LEN + 10)), "text_input", "max_input_len"),
        TensorRefusal("ensemble", _ensemble(temperature=_one(np.nan, np.float32)), "temperature", "finite"),
        TensorRefusal("ensemble", _ensemble(temperature=_one(-1, np.float32)), "temperature", "must be >= 0"),
        TensorRefusal("ensemble", _ensemble(top_k=_one(-1, np.int32)), "top_k", "must be in"),
        TensorRefusal("ensemble", _ensemble(top_p=_one(np.inf, np.float32)), "top_p", "finite"),
        TensorRefusal("ensemble", _ensemble(top_p=_one(2, np.float32)), "top_p", "must be in [0, 1]"),
        TensorRefusal("ensemble", {**_ensemble(), "max_tokens": _one(1.5, np.float32)},
                      triton="input 'max_tokens' data-type"),
        TensorRefusal("ensemble", {**_ensemble(), "text_input": _bytes(b"a", b"b", rows=1)},
                      triton="shape for input 'text_input'"),
        TensorRefusal("ensemble", {"text_input": _bytes(b"a", b"b", rows=2),
                                   "max_tokens": np.array([[4], [4]], dtype=np.int32)}, triton="batch-size"),
    ],
    "grpc_tensorrt_llm_hostile_tensor": [
        TensorRefusal("tensorrt_llm", trtllm_inputs([1, -1]), "input_ids", "token ids in [0, 131072)"),
        TensorRefusal("tensorrt_llm", trtllm_inputs([1, 2**31 - 1]), "input_ids", "token ids in [0, 131072)"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(input_lengths=_one(-1, np.int32)), "input_lengths", "does not fit"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(input_lengths=_one(2**31 - 1, np.int32)), "input_lengths",
                      "does not fit"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(output_len=-1), "request_output_len", "must be at least 1"),
        TensorRefusal("tensorrt_llm", _without(trtllm_inputs(), "request_output_len"), triton="request_output_len"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(min_tokens=_one(-1, np.int32)), "min_tokens", "must be >= 0"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(temperature=_one(np.nan, np.float32)), "temperature", "finite"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(runtime_top_k=_one(-1, np.int32)), "runtime_top_k", "must be"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(runtime_top_p=_one(-0.5, np.float32)), "runtime_top_p", "must"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(beam_width=_one(4, np.int32)), "beam_width", "only 1"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(stop_words_list=np.array([[[5, 6], [9, 1]]], dtype=np.int32)),
                      "stop_words_list", "offsets"),
        TensorRefusal("tensorrt_llm", trtllm_inputs(bad_words_list=np.array([[[5], [-1]], [[5], [1]]],
                                                                            dtype=np.int32)), triton="batch"),
        TensorRefusal("tensorrt_llm", {**trtllm_inputs(), "input_ids": np.array([[1.0, 2.0]], dtype=np.float32)},
                      triton="input 'input_ids' data-type"),
    ],
}  # fmt: skip


def _stream_call(url: str, model: str, inputs: dict[str, np.ndarray], timeout: float) -> tuple[str | None, list]:
    """What a decoupled model answered: Triton's or the model's error text, and the response events."""
    try:
        call = StreamingCall(url, model, inputs)
    except InferenceServerException as error:
        return str(error), []
    try:
        result = call.finish(timeout)
    except Exception as error:  # what the client saw is the observation
        call.cancel()
        return f"{type(error).__name__}: {error}", []
    events = result.events() if model == "chat" and result.error is None else []
    return result.error, events


def check_tensor_refusal(kind: str, refusal: TensorRefusal, error: str | None, events: list[dict[str, Any]]) -> Seen:
    if refusal.triton:
        good = error is not None and refusal.triton in error and not events
        return Seen(kind, "refused", good, "" if good else f"expected Triton to refuse ({refusal.triton}): {error}")
    if refusal.model == "chat":
        bodies = [event.get("error") for event in events]
        first = bodies[0] if len(bodies) == 1 else None
        good = (
            error is None
            and isinstance(first, dict)
            and first.get("code") == 400
            and first.get("type") == "invalid_request_error"
            and first.get("param") == refusal.param
            and refusal.words in str(first.get("message"))
        )
        status = f"error {first.get('code')}" if isinstance(first, dict) else f"error text: {error}"
        return Seen(kind, status, good, "" if good else f"expected {refusal.param!r}: {error} {events}"[:600])
    prefix = f"{refusal.param}: " if refusal.param else ""
    good = error is not None and error.startswith(prefix) and refusal.words in error
    return Seen(kind, "refused", good, "" if good else f"expected '{prefix}...{refusal.words}': {error}"[:600])


async def send_tensor_refusal(target: Target, kind: str, refusal: TensorRefusal) -> Seen:
    error, events = await asyncio.to_thread(_stream_call, target.grpc_url, refusal.model, refusal.inputs, 60)
    return check_tensor_refusal(kind, refusal, error, events)


# ----- control-token text, accepted as text -------------------------------------------------------------
async def http_control_tokens(target: Target, kind: str, chat_path: str) -> Seen:
    """Control-token text in every field through the gateway: a 200 whose prompt is the plain-text rendering."""
    response = await target.http.post(target.gateways[chat_path] + CHAT, json=control_body())
    status = f"{chat_path} {response.status_code}"
    if response.status_code != 200:
        return Seen(kind, status, False, response.text[:600])
    prompt_tokens = response.json()["usage"]["prompt_tokens"]
    expected = hostile_prompt_tokens(target.tokenizer)
    good = prompt_tokens == expected
    return Seen(kind, status, good, "" if good else f"prompt_tokens {prompt_tokens}, plain text renders {expected}")


async def grpc_control_tokens(target: Target, kind: str) -> Seen:
    """The same over gRPC to the ``chat`` model (raw tensors), streamed."""
    body = control_body(stream=True, stream_options={"include_usage": True})
    inputs = chat_inputs(_json(body).decode())
    error, events = await asyncio.to_thread(_stream_call, target.grpc_url, "chat", inputs, 60)
    usage = [event["usage"] for event in events if event.get("usage")]
    expected = hostile_prompt_tokens(target.tokenizer)
    good = error is None and len(usage) == 1 and usage[0]["prompt_tokens"] == expected
    return Seen(kind, "200" if error is None else "refused", good, "" if good else f"{error} {events[-2:]}"[:600])


def _preprocess(url: str, tokenizer: Tekkenizer) -> str | None:
    """The ``preprocessing`` model's ids for control-token text (prompt, stop and bad words): plain text only."""
    words = [b"</s>", b"[INST]", CONTROL_TEXT.encode()]
    outputs = infer(
        url,
        "preprocessing",
        {
            "text_input": _bytes(CONTROL_TEXT.encode(), rows=1),
            "max_tokens": _one(4, np.int32),
            "stop_words": _bytes(*words, rows=1),
            "bad_words": _bytes(*words, rows=1),
        },
    )
    ids = outputs["input_ids"].reshape(-1).tolist()
    if ids != tokenizer.encode(CONTROL_TEXT, bos=True):
        return f"prompt ids {ids[:20]}... are not <s> + the plain text"
    expected = [i for word in words for i in tokenizer.encode(word.decode())]
    for name in ("stop_words_list", "bad_words_list"):
        flat = outputs[name][0, 0].tolist()[: len(expected)]
        if flat != expected or any(tokenizer.is_control(i) for i in flat):
            return f"{name} {flat[:20]}... is not the words' plain-text ids"
    return None


async def preprocessing_control_tokens(target: Target, kind: str) -> Seen:
    try:
        problem = await asyncio.to_thread(_preprocess, target.grpc_url, target.tokenizer)
    except InferenceServerException as error:
        problem = str(error)
    return Seen(kind, "200" if problem is None else "wrong", problem is None, problem or "")


async def ensemble_control_tokens(target: Target, kind: str) -> Seen:
    """Control-token text as the ensemble's prompt and stop / bad words: a normal answer."""
    words = _bytes(b"</s>", b"[INST]", rows=1)
    inputs = _ensemble(CONTROL_TEXT.encode(), 8, stream=_one(True, np.bool_), stop_words=words, bad_words=words)
    error, _ = await asyncio.to_thread(_stream_call, target.grpc_url, "ensemble", inputs, 60)
    return Seen(kind, "200" if error is None else "refused", error is None, error or "")


# ----- cut streams --------------------------------------------------------------------------------------
def long_chat(**fields: Any) -> dict[str, Any]:
    return {**_ask(), "stream": True, "max_tokens": LONG_OUTPUT, "temperature": 1.0, "nvext": {"ignore_eos": True},
            **fields}  # fmt: skip


async def http_cut_stream(target: Target, kind: str, chat_path: str) -> Seen:
    """A client that hangs up on the gateway in the middle of a stream."""
    events = 0
    async with (
        httpx.AsyncClient(timeout=60) as http,  # its own connection, closed with it
        http.stream("POST", target.gateways[chat_path] + CHAT, json=long_chat()) as response,
    ):
        async for line in response.aiter_lines():
            events += line.startswith("data: ")
            if events == 3:
                break
    return Seen(kind, f"{chat_path} cut", events == 3, f"{events} events before hanging up")


async def grpc_cut_stream(target: Target, kind: str) -> Seen:
    """nemo_client leaving a stream after two chunks (which cancels it on the server)."""
    try:
        stream = await target.client.chat.completions.create_from_body(long_chat(), raw=True)
        received = 0
        async with stream:
            async for _ in stream:
                received += 1
                if received == 2:
                    break
    except APIError as error:
        return Seen(kind, type(error).__name__, False, str(error))
    return Seen(kind, "cut", received == 2, f"{received} chunks before cutting")


def _raw_cut(url: str, model: str, inputs: dict[str, np.ndarray], responses: int) -> str | None:
    call = StreamingCall(url, model, inputs)
    try:
        for _ in range(responses):
            if not call.next(60):
                return "the stream ended before it was cut"
    finally:
        call.cancel()
    return None


async def grpc_raw_cut_stream(target: Target, kind: str) -> Seen:
    """A raw tritonclient stream to ``chat`` cancelled after two responses."""
    inputs = chat_inputs(_json(long_chat()).decode())
    problem = await asyncio.to_thread(_raw_cut, target.grpc_url, "chat", inputs, 2)
    return Seen(kind, "cut", problem is None, problem or "")


async def tensorrt_llm_cut_stream(target: Target, kind: str) -> Seen:
    """A raw stream to ``tensorrt_llm`` (no end id: it runs to its length) cancelled after its first response."""
    problem = await asyncio.to_thread(
        _raw_cut, target.grpc_url, "tensorrt_llm", trtllm_inputs(output_len=LONG_OUTPUT), 1
    )
    return Seen(kind, "cut", problem is None, problem or "")


async def ensemble_cut_stream(target: Target, kind: str) -> Seen:
    """A raw ensemble stream cancelled after its first response, which may race the stream's own end."""
    inputs = _ensemble(b"Hello", 64, stream=_one(True, np.bool_))
    await asyncio.to_thread(_raw_cut, target.grpc_url, "ensemble", inputs, 1)
    return Seen(kind, "cut", True)


# ----- slow readers -------------------------------------------------------------------------------------
def slow_body(max_tokens: int) -> dict[str, Any]:
    """A long deterministic stream (greedy, run to its length) that a slow reader must receive whole."""
    return {
        **_ask(), "stream": True, "stream_options": {"include_usage": True}, "max_tokens": max_tokens,
        "temperature": 0, "nvext": {"ignore_eos": True},
    }  # fmt: skip


def sse_text(raw: bytes) -> tuple[str, bool]:
    """The content of an SSE chat stream (HTTP/1.1 chunked framing removed) and whether it ended in [DONE]."""
    head, _, body = raw.partition(b"\r\n\r\n")
    payload = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        payload, body = payload + rest[:size], rest[size + 2 :]
    text, done = [], False
    for line in payload.decode("utf-8").splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            text += [choice["delta"].get("content") or "" for choice in json.loads(line[6:])["choices"]]
    if not head.startswith(b"HTTP/1.1 200"):
        return head.decode("latin-1"), False
    return "".join(text), done


async def http_slow_read(
    gateway: str, body: dict[str, Any], read_bytes: int, pause_s: float
) -> tuple[str, bool, float]:
    """Read an SSE stream from the gateway ``read_bytes`` at a time, pausing between reads, on a socket whose
    receive buffer is small, so that the gateway's writes block on this reader."""
    host, port = gateway.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=read_bytes)
    raw = _json(body)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (host.encode(), len(raw), raw)
    )
    await writer.drain()
    started, received = time.monotonic(), bytearray()
    try:
        while chunk := await reader.read(read_bytes):
            received += chunk
            await asyncio.sleep(pause_s)
    finally:
        writer.close()
    text, done = sse_text(bytes(received))
    return text, done, time.monotonic() - started


async def grpc_slow_read(client: AsyncNemoClient, body: dict[str, Any], pause_s: float) -> str:
    """Read a chat stream from Triton one chunk at a time, pausing after each."""
    stream = await client.chat.completions.create_from_body(body, raw=True)
    pieces = []
    async with stream:
        async for chunk in stream:
            pieces += [choice["delta"].get("content") or "" for choice in chunk["choices"]]
            await asyncio.sleep(pause_s)
    return "".join(pieces)


# ----- the catalogue ------------------------------------------------------------------------------------
HTTP_SENDS: dict[str, Callable[[Target, str, str], Awaitable[Seen]]] = {
    "http_control_tokens_as_text": http_control_tokens,
    "http_cut_stream": http_cut_stream,
}
"""Sends through a gateway, to each chat path."""
GRPC_SENDS: dict[str, Callable[[Target, str], Awaitable[Seen]]] = {
    "grpc_control_tokens_as_text": grpc_control_tokens,
    "grpc_preprocessing_control_tokens_as_text": preprocessing_control_tokens,
    "grpc_ensemble_control_tokens_as_text": ensemble_control_tokens,
    "grpc_cut_stream": grpc_cut_stream,
    "grpc_raw_cut_stream": grpc_raw_cut_stream,
    "grpc_tensorrt_llm_cut_stream": tensorrt_llm_cut_stream,
    "grpc_ensemble_cut_stream": ensemble_cut_stream,
}
CUTS_THAT_CANCEL = ("http_cut_stream", "grpc_cut_stream", "grpc_raw_cut_stream", "grpc_tensorrt_llm_cut_stream")
"""Cut streams that can end only by being cancelled: each adds one to the runtime's cancelled count."""


def catalogue(target: Target) -> dict[str, list[Send]]:
    """Every hostile kind: its variants, each a function sending one request (HTTP ones to each gateway)."""
    kinds: dict[str, list[Send]] = {}
    for kind, refusals in HTTP_REFUSALS.items():
        kinds[kind] = [
            _bind(send_refusal, target, kind, refusal, path) for refusal in refusals for path in target.gateways
        ]
    for kind, tensor_refusals in GRPC_REFUSALS.items():
        kinds[kind] = [_bind(send_tensor_refusal, target, kind, refusal) for refusal in tensor_refusals]
    for kind, http_send in HTTP_SENDS.items():
        kinds[kind] = [_bind(http_send, target, kind, chat_path) for chat_path in target.gateways]
    for kind, grpc_send in GRPC_SENDS.items():
        kinds[kind] = [_bind(grpc_send, target, kind)]
    return kinds


def _bind(send: Callable[..., Awaitable[Seen]], target: Target, kind: str, *args: Any) -> Send:
    async def call() -> Seen:
        try:
            return await send(target, kind, *args)
        except Exception as error:  # a send never raises: what happened is the observation
            return Seen(kind, type(error).__name__, False, f"{type(error).__name__}: {error}"[:600])

    return call
