"""How a level's requests spread over Triton servers the benchmark does not see (behind a gateway, say): each
server's own count of completed requests, ``nv_inference_request_success`` of one model, read from its metrics
endpoint before and after the level."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import httpx

SUCCESS_FAMILY = "nv_inference_request_success"
DEFAULT_MODEL = "tensorrt_llm"
"""The model every path runs once per generation (the ``chat`` model and the ensemble call it too)."""


class SpreadError(RuntimeError):
    """A server's metrics could not be read."""


def server_name(url: str) -> str:
    """A metrics URL's ``host:port``: the server's name in the report."""
    return urlsplit(url).netloc or url


_SAMPLE = re.compile(rf"^{SUCCESS_FAMILY}{{(?P<labels>[^}}]*)}} (?P<value>\S+)", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def completed(text: str, model: str) -> float:
    """The ``nv_inference_request_success`` count of ``model`` (every version) in Triton's metrics text."""
    total = 0.0
    for sample in _SAMPLE.finditer(text):
        if dict(_LABEL.findall(sample["labels"])).get("model") == model:
            total += float(sample["value"])
    return total


class TritonCounters:
    """Reads every server's count of completed requests of ``model``."""

    def __init__(self, urls: Sequence[str], *, model: str = DEFAULT_MODEL, timeout_s: float = 5.0) -> None:
        self.urls = list(urls)
        self.model = model
        self._timeout_s = timeout_s

    async def read(self) -> dict[str, float]:
        async with httpx.AsyncClient(timeout=self._timeout_s) as client:
            counts = await asyncio.gather(*(self._read(client, url) for url in self.urls))
        return {server_name(url): count for url, count in zip(self.urls, counts, strict=True)}

    async def _read(self, client: httpx.AsyncClient, url: str) -> float:
        try:
            response = await client.get(url)
            response.raise_for_status()
            return completed(response.text, self.model)
        except (httpx.HTTPError, ValueError) as error:
            raise SpreadError(f"cannot read the metrics at {url}: {error}") from error


def difference(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, int]:
    """Requests each server completed between two readings."""
    return {name: round(after[name] - before.get(name, 0.0)) for name in after}
