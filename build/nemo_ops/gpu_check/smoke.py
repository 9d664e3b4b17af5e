"""Step 5 of ``make gpu-check``: the official openai SDK through the gateway, at temperature 0: a chat, a
streamed chat, a ``get_weather`` tool call and the tool result → the final answer.
"""

from __future__ import annotations

import json
import time
from typing import Any

from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_ops.steps import StepFailed
from nemo_ops.weather_tool import get_weather

REQUEST_TIMEOUT_S = 300.0
# Prompts the 12B Instruct model answers naturally, and that the CPU tests' trained tiny model knows
# by heart (nemo_build.tiny.chat.CHAT_SET), so the same smoke step passes on both.
CHAT_PROMPT = "What is the capital of France?"
STREAM_PROMPT = "How many days are in a week?"
TOOL_PROMPT = "What is the weather in Paris?"
SMOKE_MAX_TOKENS = 256


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    return {k: int(getattr(usage, k)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _show(name: str, record: dict[str, Any]) -> None:
    tokens = (record.get("usage") or {}).get("completion_tokens", "?")
    reply = record.get("reply") if record.get("reply") is not None else json.dumps(record.get("tool_calls"))
    print(f"  {name}: {record['latency_s']:.2f} s, {tokens} tokens, finish {record['finish_reason']}: {reply!r}")


def smoke_chat(sdk: Any, model: str) -> dict[str, Any]:
    started = time.perf_counter()
    reply = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": CHAT_PROMPT}], temperature=0, max_tokens=SMOKE_MAX_TOKENS
    )
    choice = reply.choices[0]
    record = {
        "prompt": CHAT_PROMPT,
        "reply": choice.message.content,
        "finish_reason": choice.finish_reason,
        "latency_s": round(time.perf_counter() - started, 3),
        "usage": _usage(reply.usage),
    }
    if not (choice.message.content or "").strip() or choice.finish_reason not in ("stop", "length"):
        raise StepFailed(f"the plain chat got no text answer (finish_reason {choice.finish_reason!r}): {record}")
    return record


def smoke_stream(sdk: Any, model: str) -> dict[str, Any]:
    started = time.perf_counter()
    pieces: list[str] = []
    first_token_s: float | None = None
    finish_reason = None
    usage = None
    stream = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": STREAM_PROMPT}],
        temperature=0,
        max_tokens=SMOKE_MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            first_token_s = first_token_s or time.perf_counter() - started
            pieces.append(choice.delta.content)
        finish_reason = choice.finish_reason or finish_reason
    record = {
        "prompt": STREAM_PROMPT,
        "reply": "".join(pieces),
        "finish_reason": finish_reason,
        "chunks": len(pieces),
        "ttft_s": None if first_token_s is None else round(first_token_s, 3),
        "latency_s": round(time.perf_counter() - started, 3),
        "usage": _usage(usage),
    }
    if len(pieces) < 2:
        raise StepFailed(f"the streamed chat did not arrive in pieces ({len(pieces)} text chunk(s)): {record}")
    if finish_reason not in ("stop", "length"):
        raise StepFailed(f"the streamed chat did not end with a finish_reason (got {finish_reason!r}): {record}")
    return record


def _tool_call_record(reply: Any, started: float) -> tuple[dict[str, Any], list[Any]]:
    choice = reply.choices[0]
    calls = list(choice.message.tool_calls or [])
    record = {
        "prompt": TOOL_PROMPT,
        "reply": choice.message.content,
        "tool_calls": [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls],
        "finish_reason": choice.finish_reason,
        "latency_s": round(time.perf_counter() - started, 3),
        "usage": _usage(reply.usage),
    }
    if choice.finish_reason != "tool_calls" or not calls:
        raise StepFailed(
            f"asked {TOOL_PROMPT!r} with a get_weather tool, the model answered without a tool call "
            f"(finish_reason {choice.finish_reason!r}): {record}. The Instruct model calls tools; a Base one does not"
        )
    return record, calls


def _checked_arguments(call: Any) -> dict[str, Any]:
    import jsonschema

    try:
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    except (json.JSONDecodeError, jsonschema.ValidationError) as error:
        raise StepFailed(
            f"the tool call's arguments {call.function.arguments!r} are not valid get_weather arguments: {error}"
        ) from error
    if call.function.name != "get_weather":
        raise StepFailed(f"the model called {call.function.name!r}; the only tool offered was get_weather")
    return arguments


def smoke_tools(sdk: Any, model: str) -> dict[str, Any]:
    """A tool call, then the tool result → the final answer."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": TOOL_PROMPT}]
    started = time.perf_counter()
    reply = sdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=SMOKE_MAX_TOKENS
    )
    record, calls = _tool_call_record(reply, started)
    call = calls[0]
    result = json.dumps(get_weather(str(_checked_arguments(call)["city"])))
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    started = time.perf_counter()
    final = sdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=SMOKE_MAX_TOKENS
    )
    choice = final.choices[0]
    record["tool_result"] = result
    record["final"] = {
        "reply": choice.message.content,
        "finish_reason": choice.finish_reason,
        "latency_s": round(time.perf_counter() - started, 3),
        "usage": _usage(final.usage),
    }
    if not (choice.message.content or "").strip():
        raise StepFailed(f"after the tool result {result} the model gave no text answer: {record['final']}")
    return record


def smoke(base_url: str) -> dict[str, Any]:
    """Step 5: the official openai SDK against the gateway."""
    from openai import OpenAI, OpenAIError

    sdk = OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", timeout=REQUEST_TIMEOUT_S, max_retries=0)
    results: dict[str, Any] = {}
    check = "models"
    try:
        results["model"] = model = sdk.models.list().data[0].id
        for check, request in (("chat", smoke_chat), ("stream", smoke_stream), ("tools", smoke_tools)):
            results[check] = request(sdk, model)
            _show(check, results[check])
            if check == "tools":
                _show("tool result → answer", results[check]["final"])
    except OpenAIError as error:
        raise StepFailed(f"the {check} request through the gateway failed: {type(error).__name__}: {error}") from error
    return results
