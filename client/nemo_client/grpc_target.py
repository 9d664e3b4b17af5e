"""gRPC targets: what one names, the channel arguments the client uses, and the look-up of a DNS name.

A target is what ``grpc.aio.insecure_channel`` takes: ``host:port`` (resolved by DNS), ``dns:///host:port``,
``ipv4:10.0.0.1:8001,10.0.0.2:8001``, ``ipv6:[::1]:8001,...`` or ``unix:path``. How calls spread over the
servers a target names is :mod:`nemo_client.balancer`'s work.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any, Literal

LbPolicy = Literal["round_robin", "least_requests", "pick_first"]
LB_POLICIES: tuple[LbPolicy, ...] = ("round_robin", "least_requests", "pick_first")
"""``round_robin``: each call to the next ready server; ``least_requests``: to the ready server with the fewest
calls in flight from this client (ties in turn); ``pick_first``: every call over one connection (gRPC's default)."""
DEFAULT_LB_POLICY: LbPolicy = "round_robin"
DEFAULT_RESOLVE_INTERVAL_S = 5.0
"""Seconds between look-ups of a DNS target's addresses (a server that joins gets calls within about this)."""

_STATIC_SCHEMES = ("ipv4", "ipv6", "unix", "unix-abstract", "vsock")
_DNS_DEFAULT_PORT = 443  # gRPC's, for a DNS name given without a port


@dataclass(frozen=True)
class GrpcTarget:
    """A parsed gRPC target: its resolver scheme and the (host, port) pairs it names."""

    text: str
    scheme: str
    """``dns`` (a bare ``host:port`` included: gRPC resolves it by DNS), ``ipv4``, ``ipv6``, ``unix``..."""
    addresses: tuple[tuple[str, int], ...]
    """``dns``: the one name and port; ``ipv4`` / ``ipv6``: every address listed; ``unix``: none."""

    @property
    def is_dns_name(self) -> bool:
        """The target is a DNS name (not an address literal): the addresses behind it can change."""
        if self.scheme != "dns" or not self.addresses:
            return False
        try:
            ipaddress.ip_address(self.addresses[0][0])
        except ValueError:
            return True
        return False

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts the target names, as written (a DNS name unresolved)."""
        return tuple(host for host, _ in self.addresses)


def parse_target(text: str) -> GrpcTarget:
    """The scheme and addresses of a gRPC target string; ValueError when it names no address."""
    scheme, separator, rest = text.partition(":")
    if separator and scheme in _STATIC_SCHEMES:
        if scheme.startswith("unix") or scheme == "vsock":
            return GrpcTarget(text, scheme, ())
        return GrpcTarget(text, scheme, tuple(_host_port(part, text) for part in rest.split(",") if part.strip()))
    if separator and scheme == "dns":
        # dns:host:port, dns:///host:port or dns://authority/host:port
        name = rest[2:].partition("/")[2] if rest.startswith("//") else rest
        return GrpcTarget(text, "dns", (_host_port(name, text, default_port=_DNS_DEFAULT_PORT),))
    return GrpcTarget(text, "dns", (_host_port(text, text, default_port=_DNS_DEFAULT_PORT),))


def _host_port(part: str, target: str, default_port: int | None = None) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [v6 address]:port
        host, _, port = part[1:].partition("]")
        port = port.removeprefix(":")
    elif part.count(":") > 1:  # a bare v6 address
        host, port = part, ""
    else:
        host, _, port = part.partition(":")
    if not host:
        raise ValueError(f"gRPC target {target!r} names no host")
    if not port:
        if default_port is None:
            raise ValueError(f"gRPC target {target!r}: {part!r} has no port")
        return host, default_port
    if not port.isdigit():
        raise ValueError(f"gRPC target {target!r}: port {port!r} is not a number")
    return host, int(port)


def check_lb_policy(policy: str) -> LbPolicy:
    for known in LB_POLICIES:
        if policy == known:
            return known
    raise ValueError(f"unknown load-balancing policy {policy!r} (accepted: {', '.join(LB_POLICIES)})")


def channel_options(grpc_lb_policy: str = "pick_first") -> list[tuple[str, Any]]:
    """Channel arguments: gRPC's own balancing policy over the addresses the channel's target resolves to
    (``pick_first`` or ``round_robin``), reconnects within a second, re-resolution within a second of a failure."""
    return [
        ("grpc.service_config", json.dumps({"loadBalancingConfig": [{grpc_lb_policy: {}}]})),
        # A connection that failed (a server not started yet, restarted, or gone) is retried every 0.25-1 s, not
        # with gRPC's default backoff that grows to two minutes: a Triton that comes up gets calls within seconds.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # gRPC re-resolves a DNS name when a connection fails, at most this often (default 30 s).
        ("grpc.dns_min_time_between_resolutions_ms", 1000),
    ]


async def resolve_addresses(host: str, port: int) -> frozenset[str]:
    """The addresses ``host`` resolves to now (the system resolver, as an HTTP client would)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return frozenset(str(info[4][0]) for info in infos)


def address_target(address: str, port: int) -> str:
    """The gRPC target of one IP address: ``ipv4:10.0.0.1:8001`` or ``ipv6:[::1]:8001``."""
    if ipaddress.ip_address(address).version == 6:
        return f"ipv6:[{address}]:{port}"
    return f"ipv4:{address}:{port}"
