"""Which Triton server each call goes to, when one target names several (a headless Service, an address list).

:class:`Balancer` keeps one gRPC channel per server address and picks a server per call, by the policy
(:data:`~nemo_client.grpc_target.LB_POLICIES`): ``round_robin`` or ``least_requests`` among the servers that are
connected and have not just failed a call, ``pick_first`` one channel on the whole target (gRPC's own default).

It does this itself, rather than through gRPC's ``round_robin``, for what a serving stack needs of it:

* a call a server refused before it started (connection refused, or a Triton shutting down: its models unloading)
  is retried on another server, and the refusing server is passed over for :data:`AVOID_S` seconds, so a server
  going down loses no call that had not started on it;
* a DNS name is looked up again every ``resolve_interval_s`` seconds (gRPC looks up again only when a connection
  fails, so a pod that joins a headless Service would get no calls until one did); a server that leaves is passed
  over at once, its channel closed when its calls have ended.

A server that is down is reconnected within a second (:func:`~nemo_client.grpc_target.channel_options`) and gets
calls as soon as it is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2_grpc

from nemo_client.grpc_target import (
    DEFAULT_RESOLVE_INTERVAL_S,
    GrpcTarget,
    LbPolicy,
    address_target,
    channel_options,
    resolve_addresses,
)

logger = logging.getLogger("nemo_client")

Resolver = Callable[[str, int], Awaitable[frozenset[str]]]
AVOID_S = 2.0
"""Seconds a server that failed or refused a call is passed over while another can take calls."""
CONNECT_WAIT_S = 5.0
"""Longest wait for one of several servers to connect before a call goes to one still connecting."""
DRAIN_GRACE_S = 3600.0
"""How long the channel of a server that left keeps its calls running (each call's own deadline ends it sooner)."""
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_FAILING = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


@dataclass(eq=False)
class Endpoint:
    """One server (or, for ``pick_first``, the whole target): its channel and the calls in flight on it."""

    name: str
    channel: grpc.aio.Channel
    stub: service_pb2_grpc.GRPCInferenceServiceStub
    in_flight: int = 0
    avoid_until: float = 0.0
    calls: int = 0
    """Calls sent to it so far."""

    def state(self) -> grpc.ChannelConnectivity:
        return self.channel.get_state(try_to_connect=True)

    def rank(self, now: float, tried: Collection[Endpoint]) -> int:
        """0: connected and in good standing; 1: connecting; 2: failing or just failed; 3: already tried by this
        call. The lowest rank present is picked from."""
        if self in tried:
            return 3
        state = self.state()
        if self.avoid_until > now or state in _FAILING:
            return 2
        return 0 if state == grpc.ChannelConnectivity.READY else 1


@dataclass(frozen=True)
class EndpointState:
    name: str
    in_flight: int
    calls: int
    connected: bool


@dataclass
class _Options:
    policy: LbPolicy
    ssl: bool
    resolve_interval_s: float
    resolver: Resolver


class Balancer:
    """The servers behind one target and the choice among them; create and use it inside one event loop."""

    def __init__(
        self,
        target: GrpcTarget,
        *,
        policy: LbPolicy,
        ssl: bool = False,
        resolve_interval_s: float = DEFAULT_RESOLVE_INTERVAL_S,
        resolver: Resolver | None = None,
    ) -> None:
        self.target = target
        self._options = _Options(policy, ssl, resolve_interval_s, resolver or resolve_addresses)
        self._endpoints: list[Endpoint] = []
        self._by_address: dict[str, Endpoint] = {}
        self._next = 0
        self._started = False
        self._start_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._retiring: dict[Endpoint, asyncio.Task[None]] = {}

    @property
    def per_address(self) -> bool:
        """Whether calls are spread by this balancer (one channel per address) rather than one channel's policy."""
        return self._options.policy != "pick_first" and self.target.scheme in ("dns", "ipv4", "ipv6")

    def endpoints(self) -> list[EndpointState]:
        """The servers calls go to now."""
        return [
            EndpointState(e.name, e.in_flight, e.calls, e.state() == grpc.ChannelConnectivity.READY)
            for e in self._endpoints
        ]

    async def pick(self, tried: Collection[Endpoint] = (), *, deadline: float = float("inf")) -> Endpoint:
        """The server for a call (``tried``: the servers this call failed on already, taken only when nothing else
        is left). Counted in flight until :meth:`done`.

        While no server is connected but some are connecting (at start, or all reconnecting), it waits for one to
        connect or fail, up to :data:`CONNECT_WAIT_S` (and ``deadline``), as gRPC's own balancing does: a call
        then goes to a server that took the connection rather than to the first address listed."""
        if not self._started:
            await self._start()
        wait_until = min(deadline, time.monotonic() + CONNECT_WAIT_S)
        while True:
            now = time.monotonic()
            ranks = [e.rank(now, tried) for e in self._endpoints]
            best = min(ranks)
            if best != 1 or len(self._endpoints) < 2 or now >= wait_until:
                break
            connecting = [e for e, rank in zip(self._endpoints, ranks, strict=True) if rank == 1]
            await _any_state_change(connecting, wait_until - now)
        candidates = [i for i, rank in enumerate(ranks) if rank == best]
        if self._options.policy == "least_requests":
            fewest = min(self._endpoints[i].in_flight for i in candidates)
            candidates = [i for i in candidates if self._endpoints[i].in_flight == fewest]
        # In turn: the first candidate at or after the one after the last pick.
        count = len(self._endpoints)
        index = min(candidates, key=lambda i: (i - self._next) % count)
        self._next = (index + 1) % count
        endpoint = self._endpoints[index]
        endpoint.in_flight += 1
        endpoint.calls += 1
        return endpoint

    def has_other(self, tried: Collection[Endpoint]) -> bool:
        """Whether a server this call has not tried could take it now (then a retry need not wait)."""
        now = time.monotonic()
        return any(e.rank(now, tried) < 2 for e in self._endpoints)

    @staticmethod
    def done(endpoint: Endpoint, *, failed: bool = False) -> None:
        """A call on ``endpoint`` ended; ``failed``: the server failed or refused it before it started."""
        endpoint.in_flight -= 1
        if failed:
            endpoint.avoid_until = time.monotonic() + AVOID_S

    async def start(self) -> None:
        """Open the channels (and look the name up) now rather than at the first call; idempotent."""
        if not self._started:
            await self._start()

    async def _start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            if not self.per_address:
                self._endpoints = [self._endpoint(self.target.text, self.target.text, self._options.policy)]
            elif self.target.scheme in ("ipv4", "ipv6"):
                for host, port in self.target.addresses:
                    self._add(host, port)
            else:
                host, port = self.target.addresses[0]
                addresses = await self._look_up(host, port)
                for address in sorted(addresses):
                    self._add(address, port)
                if not self._endpoints:  # not resolvable now: gRPC resolves it, until a look-up of ours succeeds
                    self._endpoints = [self._endpoint(self.target.text, self.target.text, "round_robin")]
                if self._options.resolve_interval_s > 0 and self.target.is_dns_name:
                    self._watcher = asyncio.get_running_loop().create_task(self._watch(host, port))
            self._started = True

    async def _look_up(self, host: str, port: int) -> frozenset[str]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return frozenset({host})
        try:
            return await self._options.resolver(host, port)
        except OSError as error:
            logger.warning("looking up %s failed: %s", host, error)
            return frozenset()

    def _endpoint(self, name: str, target: str, grpc_policy: str, authority: str | None = None) -> Endpoint:
        options = [
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            *channel_options(grpc_policy),
        ]
        if authority is not None:  # the name the server is known by (TLS checks its certificate against it)
            options.append(("grpc.default_authority", authority))
            if self._options.ssl:
                options.append(("grpc.ssl_target_name_override", authority.rpartition(":")[0]))
        if self._options.ssl:
            channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        return Endpoint(name, channel, service_pb2_grpc.GRPCInferenceServiceStub(channel))

    def _add(self, address: str, port: int) -> None:
        host, name_port = self.target.addresses[0]
        authority = f"{host}:{name_port}" if self.target.is_dns_name else None
        name = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        if self.target.scheme in ("ipv4", "ipv6"):
            target = f"{self.target.scheme}:{name}"
        else:
            target = address_target(address, port)
        endpoint = self._endpoint(name, target, "pick_first", authority)
        self._by_address[address] = endpoint
        self._endpoints.append(endpoint)

    async def _watch(self, host: str, port: int) -> None:
        while True:
            await asyncio.sleep(self._options.resolve_interval_s)
            found = await self._look_up(host, port)
            if found and found != set(self._by_address):
                self._update(host, port, found)

    def _update(self, host: str, port: int, found: frozenset[str]) -> None:
        before = sorted(self._by_address)
        leaving = [self._by_address.pop(a) for a in before if a not in found]
        if not before:  # until now calls went through one channel on the name
            leaving += self._endpoints
            self._endpoints = []
        for address in sorted(found - set(before)):
            self._add(address, port)
        self._endpoints = [e for e in self._endpoints if e not in leaving]
        self._next = 0
        logger.info("%s: servers %s (were %s)", host, sorted(self._by_address), before)
        for endpoint in leaving:
            self._retire(endpoint)

    def _retire(self, endpoint: Endpoint) -> None:
        """Close a channel once its calls have ended (or after DRAIN_GRACE_S)."""
        task = asyncio.get_running_loop().create_task(endpoint.channel.close(grace=DRAIN_GRACE_S))
        self._retiring[endpoint] = task

        def forget(_: asyncio.Task[None], retired: Endpoint = endpoint) -> None:
            self._retiring.pop(retired, None)

        task.add_done_callback(forget)

    @property
    def retiring(self) -> Sequence[str]:
        """Servers that left, whose channels still finish their calls."""
        return [endpoint.name for endpoint in self._retiring]

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for endpoint, task in list(self._retiring.items()):
            task.cancel()
            await endpoint.channel.close()
        self._retiring.clear()
        for endpoint in self._endpoints:
            await endpoint.channel.close()
        self._endpoints, self._by_address, self._started = [], {}, False


async def _any_state_change(endpoints: Sequence[Endpoint], timeout: float) -> None:
    """Until one of the endpoints' channels changes state (connects or fails), or ``timeout``."""
    waits = [
        asyncio.ensure_future(e.channel.wait_for_state_change(e.channel.get_state(try_to_connect=True)))
        for e in endpoints
    ]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
