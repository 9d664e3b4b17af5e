"""vLLM's tokenizer routes, ``POST /tokenize``, ``POST /detokenize`` and ``GET /tokenizer_info``, with the model's
Tekken file (``--tokenizer``, by default mistral-common's copy of the NeMo file): evaluation harnesses that send
prompts as token ids (lm-eval's ``tokenizer_backend=remote``) tokenize through them.

Text never becomes control tokens (``"</s>"`` is ordinary text); ``add_special_tokens`` puts ``<s>`` first.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse

from nemo_gateway.dependencies import Metrics, Settings
from nemo_gateway.metering import Meter
from nemo_gateway.openai_router import openai_router
from nemo_gateway.request_body import RequestBody
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer, default_tekken_path

router = openai_router("tokenizer")


@cache
def tokenizer(path: Path | None) -> Tekkenizer:
    return Tekkenizer.from_file(path if path is not None else default_tekken_path())


@router.post("/tokenize", name="tokenize")
async def tokenize(body: RequestBody, meter: Meter, settings: Settings, metrics: Metrics) -> JSONResponse:
    prompt, special = body.get("prompt"), body.get("add_special_tokens", True)
    if not isinstance(prompt, str):
        raise BadRequestError("must be a string", param="prompt")
    if not isinstance(special, bool):
        raise BadRequestError("must be a boolean", param="add_special_tokens")
    tokens = tokenizer(settings.tokenizer_file).encode(prompt, bos=special)
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse({"tokens": tokens, "count": len(tokens)})


@router.post("/detokenize", name="detokenize")
async def detokenize(body: RequestBody, meter: Meter, settings: Settings, metrics: Metrics) -> JSONResponse:
    tokens, tekken = body.get("tokens"), tokenizer(settings.tokenizer_file)
    if not isinstance(tokens, list) or not all(_token_id(t, tekken.vocab_size) for t in tokens):
        raise BadRequestError(f"must be a list of token ids in [0, {tekken.vocab_size})", param="tokens")
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse({"prompt": tekken.decode(tokens)})


@router.get("/tokenizer_info", name="tokenizer_info")
async def tokenizer_info(meter: Meter, settings: Settings, metrics: Metrics) -> JSONResponse:
    tekken = tokenizer(settings.tokenizer_file)
    info: dict[str, Any] = {"tokenizer_class": "Tekkenizer", "vocab_size": tekken.vocab_size}
    metrics.answered(meter.endpoint, 200, meter.elapsed())
    return JSONResponse(info)


def _token_id(value: Any, vocab_size: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab_size
