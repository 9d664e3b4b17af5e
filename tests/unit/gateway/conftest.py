"""The gateway app in-process (Starlette's TestClient), its Triton client replaced by a scripted fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openai.types import Model

from nemo_chat_core.completion_request import CompletionRequest
from nemo_client.streaming import AsyncStream
from nemo_client.types import Health
from nemo_gateway.app import create_app
from nemo_gateway.dependencies import get_client
from nemo_gateway.metrics import GatewayMetrics
from nemo_gateway.settings import GatewaySettings

SERVED = "nemo-tiny"
MAX_MODEL_LEN = 1024
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def completion(content: str = "Paris.") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": SERVED,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": USAGE,
    }


def chunk(content: str | None, *, finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": SERVED, "choices": choices}


def usage_chunk() -> dict[str, Any]:
    return {**chunk(None), "usage": USAGE}


@dataclass
class FakeUpstream:
    """Stands in for ``AsyncNemoClient``: answers with ``reply`` (a dict, a list of stream items, or an exception)."""

    reply: Any = field(default_factory=completion)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    closed_streams: int = 0
    health_result: Health = field(default_factory=lambda: Health(live=True, ready=True, models={"chat": True}))

    def __post_init__(self) -> None:
        self.chat = self
        self.completions = self
        self.models = self

    async def create_from_body(self, body: dict[str, Any], *, timeout: float | None = None, raw: bool = False) -> Any:
        self.bodies.append(body)
        if isinstance(self.reply, BaseException):
            raise self.reply
        if isinstance(self.reply, list):
            return AsyncStream(self._items(self.reply), "req-1")
        return self.reply

    async def create(self, **params: Any) -> Any:
        return await self.create_from_body(params)

    async def create_from_request(self, request: CompletionRequest, *, timeout: float | None = None) -> Any:
        return await self.create_from_body(asdict(request))

    async def health(self, *, timeout: float = 5.0) -> Health:
        return self.health_result

    async def list(self, *, timeout: float = 10.0) -> list[Model]:
        return [Model(id="nemo", created=0, object="model", owned_by="mistralai", max_model_len=MAX_MODEL_LEN)]

    async def _items(self, items: list[Any]) -> AsyncIterator[Any]:
        try:
            for item in items:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed_streams += 1


@dataclass
class Gateway:
    app: FastAPI
    http: TestClient
    upstream: Any  # FakeUpstream, unless the test gave a client of its own

    @property
    def metrics(self) -> GatewayMetrics:
        metrics: GatewayMetrics = self.app.state.metrics
        return metrics

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


MakeGateway = Callable[..., Gateway]


@pytest.fixture
def make_gateway() -> Iterator[MakeGateway]:
    clients: list[TestClient] = []

    def make(upstream: Any = None, **settings: Any) -> Gateway:
        """The app over ``upstream``: a FakeUpstream (the default), or a real client (over a fake transport)."""
        app = create_app(GatewaySettings(served_model_name=SERVED, **settings))
        fake = upstream or FakeUpstream()
        app.dependency_overrides[get_client] = lambda: fake
        http = TestClient(app, raise_server_exceptions=False)
        clients.append(http)
        return Gateway(app, http, fake)

    yield make
    for http in clients:
        http.close()


@pytest.fixture
def gateway(make_gateway: MakeGateway) -> Gateway:
    return make_gateway()
