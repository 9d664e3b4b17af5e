"""``n`` chat choices as ``n`` independent generations: the gateway sends the request ``n`` times (``seed``,
when given, is the first one's, then ``seed + 1``...) and merges the answers, whole or streamed, into one with
choices ``0 .. n-1`` and one ``usage`` (the prompt counted once)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from nemo_chat_core.completion_request import MAX_N
from nemo_client.client import AsyncNemoClient
from nemo_client.streaming import AsyncStream
from nemo_protocol.errors import BadRequestError


def choice_count(body: Mapping[str, Any]) -> int:
    """The request's ``n``: 1 when absent; 400 naming ``n`` outside [1, MAX_N]."""
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise BadRequestError(f"must be an integer in [1, {MAX_N}], got {n!r}", param="n")
    return n


async def create_n(client: AsyncNemoClient, body: Mapping[str, Any], n: int, timeout: float) -> Any:
    """The chat answer of ``n`` generations of ``body`` (raw JSON objects, as the gateway relays them)."""
    seed = body.get("seed")
    bodies = [
        {**{k: v for k, v in body.items() if k != "n"}, **({} if seed is None else {"seed": seed + i})}
        for i in range(n)
    ]
    calls = [client.chat.completions.create_from_body(b, timeout=timeout, raw=True) for b in bodies]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        for result in results:
            if isinstance(result, AsyncStream):
                await result.aclose()
        raise failure
    answers = cast(list[Any], results)
    if body.get("stream"):
        return AsyncStream(_merged_streams(answers), answers[0].request_id)
    choices = [{**choice, "index": i} for i, answer in enumerate(answers) for choice in answer["choices"]]
    return {**answers[0], "choices": choices, "usage": _usage([answer.get("usage") for answer in answers])}


def _usage(usages: list[Mapping[str, Any] | None]) -> dict[str, int] | None:
    present = [u for u in usages if u]
    if not present:
        return None
    prompt = int(present[0].get("prompt_tokens") or 0)
    completion = sum(int(u.get("completion_tokens") or 0) for u in present)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _merged_streams(streams: list[AsyncStream[Any]]) -> AsyncIterator[dict[str, Any]]:
    """The chunks of every stream as they come, choice ``i`` from stream ``i``; their usage summed at the end."""
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    done = object()

    async def pump(index: int, stream: AsyncStream[Any]) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put((index, exc))
        await queue.put((index, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    usages: list[Mapping[str, Any] | None] = []
    template: dict[str, Any] = {}
    try:
        remaining = len(streams)
        while remaining:
            index, item = await queue.get()
            if item is done:
                remaining -= 1
                continue
            if isinstance(item, Exception):
                raise item
            usages.append(item.get("usage"))
            choices = [{**choice, "index": index} for choice in item.get("choices") or []]
            if choices:
                yield {**{k: v for k, v in item.items() if k != "usage"}, "choices": choices}
                template = item
        usage = _usage(usages)
        if usage is not None:
            yield {**template, "choices": [], "usage": usage}
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            with contextlib.suppress(Exception):
                await stream.aclose()
