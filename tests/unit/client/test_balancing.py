"""Calls spread over several Triton servers behind one target: the balancing policy, servers that come later, a
server shutting down, and a DNS name whose addresses change. Real gRPC servers on loopback, speaking KServe v2."""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from nemo_client.grpc_target import channel_options, check_lb_policy, parse_target
from nemo_client.transport import deadline_after
from nemo_client.triton_transport import RetryPolicy, TritonTransport, error_from_message
from nemo_protocol.errors import NotFoundError, UnavailableError

SHUTTING_DOWN = "Request for unknown model: 'tensorrt_llm' has no available versions"


class _Server(service_pb2_grpc.GRPCInferenceServiceServicer):
    """A KServe-v2 server whose model answers each request with one output and the final flag (or refuses it, as a
    Triton on its way down does); it counts what it served."""

    def __init__(self, name: str, counts: collections.Counter[str], refuse: str | None = None) -> None:
        self.name, self.counts, self.refuse = name, counts, refuse
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()

    def ServerLive(self, request, context):  # type: ignore[no-untyped-def]
        self.counts[self.name] += 1
        return service_pb2.ServerLiveResponse(live=True)

    def ModelStreamInfer(self, request_iterator, context):  # type: ignore[no-untyped-def]
        next(request_iterator)
        self.counts[self.name] += 1
        if self.refuse is not None:
            yield service_pb2.ModelStreamInferResponse(error_message=self.refuse)
            return
        response = service_pb2.ModelInferResponse(model_name="m")
        response.outputs.add(name="out", datatype="INT32", shape=[1])
        response.raw_output_contents.append(np.array([7], dtype=np.int32).tobytes())
        self.started.set()  # before the first response: a client that has it knows this is set
        yield service_pb2.ModelStreamInferResponse(infer_response=response)
        self.hold.wait(30)
        final = service_pb2.ModelInferResponse(model_name="m")
        final.parameters["triton_final_response"].bool_param = True
        yield service_pb2.ModelStreamInferResponse(infer_response=final)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(servicer: _Server, port: int | None = None) -> Iterator[int]:
    with _serving_on("127.0.0.1", servicer, port) as bound:
        yield bound


@contextmanager
def _serving_on(address: str, servicer: _Server, port: int | None = None) -> Iterator[int]:
    server = grpc.server(ThreadPoolExecutor(8))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{address}:{port or 0}")
    server.start()
    try:
        yield bound
    finally:
        servicer.hold.set()
        server.stop(grace=None)


async def _connected(transport: TritonTransport, servers: int) -> None:
    """Until the transport is connected to that many servers."""
    await transport.balancer.start()
    for _ in range(200):
        if sum(e.connected for e in transport.balancer.endpoints()) == servers:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not connected to {servers} servers: {transport.balancer.endpoints()}")


async def _call(transport: TritonTransport) -> list[dict[str, object]]:
    return [out async for out in transport.stream("m", {}, request_id="1", deadline=deadline_after(20))]


def test_targets_are_parsed_by_grpc_s_rules() -> None:
    assert parse_target("localhost:8001").addresses == (("localhost", 8001),)
    assert parse_target("localhost:8001").is_dns_name
    assert parse_target("dns:///triton-headless.ns.svc.cluster.local:8001").addresses == (
        ("triton-headless.ns.svc.cluster.local", 8001),
    )
    assert parse_target("dns://8.8.8.8/triton:8001").hosts == ("triton",)
    assert parse_target("dns:triton").addresses == (("triton", 443),)
    listed = parse_target("ipv4:127.0.0.1:1,127.0.0.1:2")
    assert (listed.scheme, listed.addresses, listed.is_dns_name) == (
        "ipv4",
        (("127.0.0.1", 1), ("127.0.0.1", 2)),
        False,
    )
    assert parse_target("ipv6:[::1]:8001,[::2]:8002").addresses == (("::1", 8001), ("::2", 8002))
    assert not parse_target("127.0.0.1:8001").is_dns_name
    assert parse_target("unix:/run/triton.sock").addresses == ()
    for bad in ("ipv4:127.0.0.1", "ipv4:127.0.0.1:http", ":8001"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_the_channel_options_reconnect_within_a_second() -> None:
    options = dict(channel_options("round_robin"))
    assert json.loads(options["grpc.service_config"]) == {"loadBalancingConfig": [{"round_robin": {}}]}
    assert options["grpc.max_reconnect_backoff_ms"] <= 1000
    assert options["grpc.dns_min_time_between_resolutions_ms"] <= 1000
    with pytest.raises(ValueError, match="round_robin, least_requests, pick_first"):
        check_lb_policy("least_request")


def test_a_model_unloading_is_unavailable_not_unknown() -> None:
    # A Triton unloading its models on the way down refuses with this text: another server may take the request.
    assert type(error_from_message(SHUTTING_DOWN)) is UnavailableError
    assert type(error_from_message("Request for unknown model: 'nope' is not found")) is NotFoundError


@pytest.mark.parametrize(("policy", "spread"), [("round_robin", True), ("least_requests", True), ("pick_first", False)])
def test_calls_spread_over_every_listed_server_by_the_policy(policy: str, spread: bool) -> None:
    counts: collections.Counter[str] = collections.Counter()
    with _serving(_Server("a", counts)) as a, _serving(_Server("b", counts)) as b, _serving(_Server("c", counts)) as c:

        async def run() -> None:
            transport = TritonTransport(
                f"ipv4:127.0.0.1:{a},127.0.0.1:{b},127.0.0.1:{c}", lb_policy=check_lb_policy(policy)
            )
            try:
                await _connected(transport, 1 if policy == "pick_first" else 3)
                counts.clear()
                await asyncio.gather(*(_call(transport) for _ in range(30)))
                for _ in range(30):
                    await transport.server_live(deadline=deadline_after(10))
            finally:
                await transport.close()

        asyncio.run(run())
    if spread:
        assert counts == {"a": 20, "b": 20, "c": 20}
    else:
        assert sorted(counts.values()) == [60]


def test_least_requests_sends_a_call_to_the_server_with_the_fewest_in_flight() -> None:
    counts: collections.Counter[str] = collections.Counter()
    first, second = _Server("first", counts), _Server("second", counts)
    with _serving(first) as a, _serving(second) as b:

        async def run() -> None:
            transport = TritonTransport(f"ipv4:127.0.0.1:{a},127.0.0.1:{b}", lb_policy="least_requests")
            try:
                await _connected(transport, 2)
                first.hold.clear()
                second.hold.clear()
                held = transport.stream("m", {}, request_id="1", deadline=deadline_after(20))
                await held.__anext__()  # one call in flight, on one of them: "busy"
                busy, idle = (first, second) if first.started.is_set() else (second, first)
                idle.hold.set()
                counts.clear()
                for _ in range(6):  # one at a time: each goes where nothing is in flight
                    await _call(transport)
                assert counts == {idle.name: 6}
                busy.hold.set()
                assert [outputs async for outputs in held] == []
            finally:
                await transport.close()

        asyncio.run(run())


def test_a_server_started_after_the_client_gets_calls_within_seconds() -> None:
    counts: collections.Counter[str] = collections.Counter()
    late_port = _free_port()

    async def run() -> float:
        transport = TritonTransport(f"ipv4:127.0.0.1:{a},127.0.0.1:{late_port}", retry=RetryPolicy(max_retries=0))
        try:
            for _ in range(5):  # nothing listens at the late server's address: every call goes to a, none fails
                await _call(transport)
            assert counts == {"a": 5}
            with _serving(_Server("late", counts), late_port):
                started = time.monotonic()
                while counts["late"] == 0:
                    assert time.monotonic() - started < 10, "the late server got no call within 10 s"
                    await _call(transport)
                    await asyncio.sleep(0.05)
                return time.monotonic() - started
        finally:
            await transport.close()

    with _serving(_Server("a", counts)) as a:
        assert asyncio.run(run()) < 5


def test_the_first_call_goes_to_a_server_that_took_the_connection() -> None:
    """At start nothing is connected: the call waits for a connection rather than going to the first address, which
    refuses it (a dual-stack name whose IPv6 address nobody listens on, say)."""
    counts: collections.Counter[str] = collections.Counter()
    closed = _free_port()
    with _serving(_Server("open", counts)) as port:

        async def run() -> None:
            transport = TritonTransport(f"ipv4:127.0.0.1:{closed},127.0.0.1:{port}", retry=RetryPolicy(max_retries=0))
            try:
                assert len(await _call(transport)) == 1
                assert await transport.server_live(deadline=deadline_after(10))
            finally:
                await transport.close()

        asyncio.run(run())
    assert counts == {"open": 2}


def test_a_server_shutting_down_costs_no_request() -> None:
    """A request a server refuses before it started (its model unloading) goes to the next server, and the refusing
    server is passed over for a while."""
    counts: collections.Counter[str] = collections.Counter()
    with _serving(_Server("up", counts)) as up, _serving(_Server("down", counts, refuse=SHUTTING_DOWN)) as down:

        async def run() -> None:
            transport = TritonTransport(f"ipv4:127.0.0.1:{up},127.0.0.1:{down}", retry=RetryPolicy(max_retries=1))
            try:
                # At once: some are sent to "down" before it has refused any, and each of those is sent again.
                results = await asyncio.gather(*(_call(transport) for _ in range(20)))
                refused = counts["down"]
                assert counts["up"] == 20 and refused >= 1, counts  # each refused one was sent to "up" then
                # Then one at a time: "down" is passed over.
                results += [await _call(transport) for _ in range(20)]
                assert counts == {"up": 40, "down": refused}
            finally:
                await transport.close()
            assert all(len(outputs) == 1 for outputs in results)

        asyncio.run(run())


def test_a_dns_name_s_servers_follow_its_addresses_and_one_that_leaves_finishes_its_calls() -> None:
    counts: collections.Counter[str] = collections.Counter()
    answers = [frozenset({"127.0.0.1"})]

    async def resolver(host: str, port: int) -> frozenset[str]:
        assert host == "triton-headless.test"
        return answers[-1]

    port = _free_port()
    first, second = _Server("first", counts), _Server("second", counts)
    with _serving(first, port), _serving_on("127.0.0.2", second, port):

        async def wait_for(servers: list[str]) -> None:
            """Until calls go to exactly these servers, each connected."""
            for _ in range(100):
                endpoints = transport.balancer.endpoints()
                if [e.name for e in endpoints] == servers and all(e.connected for e in endpoints):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"servers {transport.balancer.endpoints()}, not {servers}")

        async def run() -> None:
            await wait_for([f"127.0.0.1:{port}"])
            counts.clear()
            for _ in range(4):
                await _call(transport)
            assert counts == {"first": 4}
            answers.append(frozenset({"127.0.0.1", "127.0.0.2"}))  # a pod joined
            await wait_for([f"127.0.0.1:{port}", f"127.0.0.2:{port}"])
            counts.clear()
            for _ in range(4):
                await _call(transport)
            assert counts == {"first": 2, "second": 2}
            first.hold.clear()
            held = transport.stream("m", {}, request_id="1", deadline=deadline_after(20))
            await held.__anext__()  # a call in flight on "first"
            answers.append(frozenset({"127.0.0.2"}))  # and its pod left
            await wait_for([f"127.0.0.2:{port}"])
            counts.clear()
            for _ in range(4):
                await _call(transport)
            assert counts == {"second": 4}
            assert transport.balancer.retiring == [f"127.0.0.1:{port}"]
            first.hold.set()
            assert [outputs async for outputs in held] == []  # the call on the server that left ends normally
            for _ in range(100):  # and then its channel is closed
                if not transport.balancer.retiring:
                    break
                await asyncio.sleep(0.05)
            assert not transport.balancer.retiring

        async def main() -> None:
            nonlocal transport
            transport = TritonTransport(
                f"dns:///triton-headless.test:{port}", resolve_interval_s=0.05, resolver=resolver
            )
            try:
                await transport.server_live(deadline=deadline_after(10))
                await run()
            finally:
                await transport.close()

        transport: TritonTransport
        asyncio.run(main())


def test_address_literals_are_not_looked_up() -> None:
    looked_up: list[str] = []

    async def resolver(host: str, port: int) -> frozenset[str]:
        looked_up.append(host)
        return frozenset({host})

    async def run() -> None:
        for target in ("127.0.0.1:1", "ipv4:127.0.0.1:1,127.0.0.1:2", "dns:///127.0.0.1:1"):
            transport = TritonTransport(target, resolve_interval_s=0.01, resolver=resolver)
            await transport.balancer.pick()
            await asyncio.sleep(0.1)
            await transport.close()

    asyncio.run(run())
    assert looked_up == []
