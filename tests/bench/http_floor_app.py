"""The smallest OpenAI-shaped SSE endpoint: what the HTTP stack alone costs (bench_client's floor)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

CHUNK = (
    b'data: {"id":"floor","object":"chat.completion.chunk","created":0,"model":"floor",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}\n\n'
)
app = FastAPI()


@app.post("/v1/chat/completions")
async def chat_completions() -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        yield CHUNK
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
