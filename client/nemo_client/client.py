"""The NIM-style client: ``client.chat.completions.create(...)`` over Triton gRPC streaming.

``AsyncNemoClient`` holds the one implementation. ``NemoClient`` runs that same implementation on a
private event-loop thread, so a single sync client serves many threads at once (each call is its own
gRPC stream on one shared channel; tritonclient's sync one-stream-per-client limit does not apply).

Results are the ``openai`` package's own types (``ChatCompletion``, ``ChatCompletionChunk``,
``Completion``, ``Model``), so code written against the OpenAI SDK reads them unchanged. The resources
(``chat``, ``completions``, ``models``) live in :mod:`nemo_client.resources`, streams in
:mod:`nemo_client.streaming`, the parameter types in :mod:`nemo_client.types`. The resources reach Triton through
the client's public members alone: ``transport`` (a :class:`~nemo_client.transport.Transport`), ``deadline()``,
``direct_chat()`` and the model names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from nemo_client.direct import DirectChat
from nemo_client.grpc_target import DEFAULT_LB_POLICY, DEFAULT_RESOLVE_INTERVAL_S, LbPolicy
from nemo_client.loop_thread import LoopThread
from nemo_client.resources.chat import AsyncChat, Chat
from nemo_client.resources.completions import AsyncCompletions, Completions
from nemo_client.resources.models import AsyncModels, Models
from nemo_client.transport import Transport, deadline_after
from nemo_client.triton_transport import RetryPolicy, TritonTransport
from nemo_client.types import Health
from nemo_protocol.errors import APIError

DEFAULT_URL = "localhost:8001"
DEFAULT_TIMEOUT_S = 600.0
CHAT_MODEL = "chat"
TEXT_MODEL = "ensemble"


class AsyncNemoClient:
    """Async client for a Mistral NeMo deployment's Triton gRPC endpoint (``host:8001``), or several of them."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        chat_model: str = CHAT_MODEL,
        text_model: str = TEXT_MODEL,
        direct: bool = False,
        tokenizer_file: str | Path | None = None,
        transport: Transport | None = None,
        lb_policy: LbPolicy = DEFAULT_LB_POLICY,
        resolve_interval_s: float = DEFAULT_RESOLVE_INTERVAL_S,
    ) -> None:
        """``url``: Triton's gRPC target: ``host:port``, or several servers as ``dns:///name:port`` (every address
        of the name: a Kubernetes headless Service) or ``ipv4:host:port,host:port``. ``model``: the name answers
        carry (default: the served one). ``timeout``: seconds for a whole call, stream included (each call may set
        its own). ``max_retries``: retries of a request that a server could not take before anything was received
        (unreachable, or shutting down; the retry goes to the next server). ``ssl``, ``headers``: TLS, and
        metadata sent with every call. ``chat_model``, ``text_model``: the Triton models behind
        ``chat.completions`` and ``completions``.

        ``direct``: render prompts and parse outputs here and stream `tensorrt_llm` itself (see
        :mod:`nemo_client.direct`; needs the chat core (nemo_chat_core) and the model's Tekken file,
        ``tokenizer_file``, by default mistral-common's copy); otherwise the ``chat`` model does it in Triton.

        ``lb_policy``: how calls spread over the servers ``url`` names: ``round_robin`` (each call to the next
        connected server), ``least_requests`` (to the one with the fewest calls in flight from this client) or
        ``pick_first`` (every call over one connection, gRPC's own default); a call a server refuses before it started
        goes to another. ``resolve_interval_s``: for a DNS name, seconds between look-ups of its addresses, so that a
        server that joins gets calls (0: looked up once). See :mod:`nemo_client.balancer`.

        ``transport``: the connection to use instead of a :class:`TritonTransport` to ``url`` (``url``,
        ``max_retries``, ``ssl``, ``headers``, ``lb_policy`` and ``resolve_interval_s`` then go unused): a test's
        fake, say.
        """
        self.url = url
        self.direct = direct
        self._tokenizer_file = None if tokenizer_file is None else Path(tokenizer_file)
        self._direct_chat: DirectChat | None = None
        self._direct_lock = asyncio.Lock()
        self.model = model
        self.timeout = timeout
        self.chat_model = chat_model
        self.text_model = text_model
        self.transport: Transport = transport or TritonTransport(
            url,
            retry=RetryPolicy(max_retries=max_retries),
            ssl=ssl,
            headers=headers,
            lb_policy=lb_policy,
            resolve_interval_s=resolve_interval_s,
        )
        self.chat = AsyncChat(self)
        self.completions = AsyncCompletions(self)
        self.models = AsyncModels(self)

    async def health(self, *, timeout: float = 5.0) -> Health:
        """Server liveness and readiness, and the readiness of the chat and text models."""
        deadline = deadline_after(timeout)
        try:
            live = await self.transport.server_live(deadline=deadline)
            ready = await self.transport.server_ready(deadline=deadline)
        except APIError:
            return Health(live=False, ready=False, models={self.chat_model: False, self.text_model: False})
        models = {}
        for name in (self.chat_model, self.text_model):
            try:
                models[name] = await self.transport.model_ready(name, deadline=deadline)
            except APIError:
                models[name] = False
        return Health(live=live, ready=ready, models=models)

    def deadline(self, timeout: float | None = None) -> float:
        """The deadline of a call given ``timeout`` seconds; the client's ``timeout`` when None."""
        return deadline_after(self.timeout if timeout is None else timeout)

    async def direct_chat(self, *, deadline: float) -> DirectChat:
        """The direct path's chat core (see :mod:`nemo_client.direct`), configured from the deployment's ``chat``
        model on first use."""
        async with self._direct_lock:
            if self._direct_chat is None:
                self._direct_chat = await DirectChat.connect(
                    self.transport, chat_model=self.chat_model, tokenizer_file=self._tokenizer_file, deadline=deadline
                )
        return self._direct_chat

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> AsyncNemoClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class NemoClient:
    """Sync client with the same API as :class:`AsyncNemoClient`; safe to share between threads.

    It runs an :class:`AsyncNemoClient` on a private event-loop thread: every call is that client's, awaited there.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        chat_model: str = CHAT_MODEL,
        text_model: str = TEXT_MODEL,
        direct: bool = False,
        tokenizer_file: str | Path | None = None,
        transport: Transport | None = None,
        lb_policy: LbPolicy = DEFAULT_LB_POLICY,
        resolve_interval_s: float = DEFAULT_RESOLVE_INTERVAL_S,
    ) -> None:
        """The options of :class:`AsyncNemoClient`."""

        async def make() -> AsyncNemoClient:  # on the loop that will run it: its gRPC channel belongs there
            return AsyncNemoClient(
                url,
                model=model,
                timeout=timeout,
                max_retries=max_retries,
                ssl=ssl,
                headers=headers,
                chat_model=chat_model,
                text_model=text_model,
                direct=direct,
                tokenizer_file=tokenizer_file,
                transport=transport,
                lb_policy=lb_policy,
                resolve_interval_s=resolve_interval_s,
            )

        self._loop = LoopThread()
        self._async = self._loop.run(make())
        self.url = url
        self.chat = Chat(self._async.chat, self._loop)
        self.completions = Completions(self._async.completions, self._loop)
        self.models = Models(self._async.models, self._loop)

    def health(self, *, timeout: float = 5.0) -> Health:
        return self._loop.run(self._async.health(timeout=timeout))

    def close(self) -> None:
        self._loop.run(self._async.close())
        self._loop.stop()

    def __enter__(self) -> NemoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
