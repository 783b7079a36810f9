"""Timeouts and the per-peer health state: suspect, offline (fail fast), back online by probe.

Nothing here asserts how long anything took, only what state the peer is in and which
typed error a call raised. A test that expects a timeout lets the peer stall far longer
than the timeout; one that expects none keeps every wait far below it, so a loaded
machine changes neither outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rpc_testkit import RpcNode, closed_peer_session, make_rpc  # noqa: F401 - autouse fixture

from buckets.cluster.rpcclient import HealthPolicy, PeerClient, PeerState, PeerTimeouts
from buckets.cluster.rpcerrors import PeerOffline, PeerTimeout, PeerUnreachable
from buckets.cluster.rpcserver import BodyReader

MiB = 1 << 20
QUICK = PeerTimeouts(connect=5.0, call=1.0, idle=1.0, probe=5.0)  # for calls that must time out
STALL = 30.0  # how long a stalling peer stalls: far beyond QUICK
PATIENT = PeerTimeouts(connect=5.0, call=30.0, idle=2.0, probe=5.0)  # for slow calls that must not


@pytest.fixture
async def node() -> AsyncIterator[RpcNode]:
    peer = RpcNode(make_rpc())
    await peer.start()
    yield peer
    await peer.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[PeerClient]]:
    made: list[PeerClient] = []
    yield made
    for client in made:
        await client.close()


async def wait_for_state(client: PeerClient, state: PeerState, within: float = 20.0) -> None:
    """Poll until the client reports ``state`` (a generous deadline, not a timing assertion)."""
    async with asyncio.timeout(within):
        while client.state is not state:
            await asyncio.sleep(0.02)


def sleeper(seconds: float):
    async def sleep(args: dict[str, Any]) -> str:
        await asyncio.sleep(seconds)
        return "late"

    return sleep


async def test_a_call_that_outlives_its_timeout_raises_peer_timeout_and_makes_the_peer_suspect(
        node: RpcNode, clients: list[PeerClient]) -> None:
    node.rpc.register("test", "slow", sleeper(STALL))
    client = node.client(timeouts=QUICK)
    clients.append(client)
    with pytest.raises(PeerTimeout):
        await client.call("test", "slow")
    assert client.state is PeerState.SUSPECT
    assert client.status()["consecutive_failures"] == 1 and "did not answer in time" in client.status()["last_error"]
    assert await client.ping()  # an answer clears the suspicion
    assert client.state is PeerState.ONLINE and client.health.consecutive_failures == 0


async def test_a_per_call_timeout_overrides_the_default(node: RpcNode, clients: list[PeerClient]) -> None:
    node.rpc.register("test", "slow", sleeper(1.5))  # over QUICK's 1 s call timeout
    client = node.client(timeouts=QUICK)
    clients.append(client)
    assert await client.call("test", "slow", timeout=30) == "late"


async def test_repeated_timeouts_take_the_peer_offline_and_calls_fail_fast(
        node: RpcNode, clients: list[PeerClient]) -> None:
    node.rpc.register("test", "slow", sleeper(STALL))
    calls = 0

    def counted(args: dict[str, Any]) -> int:
        nonlocal calls
        calls += 1
        return calls

    node.rpc.register("test", "counted", counted)
    # A probe interval long enough that the peer stays offline while we look at it.
    client = node.client(timeouts=QUICK, policy=HealthPolicy(failures_to_offline=2, probe_interval=30))
    clients.append(client)
    with pytest.raises(PeerTimeout):
        await client.call("test", "slow")
    assert client.state is PeerState.SUSPECT
    with pytest.raises(PeerTimeout):
        await client.call("test", "slow")
    assert client.state is PeerState.OFFLINE
    with pytest.raises(PeerOffline, match="offline"):
        await client.call("test", "counted")
    with pytest.raises(PeerOffline):
        await client.call_stream_out("test", "counted")
    assert calls == 0  # nothing was sent while offline
    assert client.status()["times_offline"] == 1


async def test_timeouts_while_the_peer_answers_other_calls_are_slowness_not_failures(
        node: RpcNode, clients: list[PeerClient]) -> None:
    """A saturated link: a small call waits behind megabytes queued ahead of it and times out,
    while the peer answers other calls. Not a failure of the peer: several such timeouts at
    once (a write's cleanup to each of the peer's disks) must not take a live peer offline.
    A timeout with nothing answered since its call was sent still counts."""
    node.rpc.register("test", "slow", sleeper(STALL))
    node.rpc.register("test", "quick", lambda args: "ok")
    client = node.client(timeouts=QUICK, policy=HealthPolicy(failures_to_offline=2, probe_interval=30))
    clients.append(client)

    async def answered_meanwhile() -> None:
        for _ in range(8):
            await asyncio.sleep(0.25)
            assert await client.call("test", "quick", timeout=30) == "ok"

    results = await asyncio.gather(*(client.call("test", "slow") for _ in range(4)), answered_meanwhile(),
                                   return_exceptions=True)
    timeouts = results[:4]
    assert all(isinstance(r, PeerTimeout) and r.alive for r in timeouts), results
    assert results[4] is None, results
    assert client.state is PeerState.ONLINE and client.health.consecutive_failures == 0
    assert client.status()["slow_timeouts"] == 4
    with pytest.raises(PeerTimeout) as silent:  # nothing answered while it waited
        await client.call("test", "slow")
    assert not silent.value.alive and client.state is PeerState.SUSPECT


async def test_a_stalled_download_times_out_per_read(node: RpcNode, clients: list[PeerClient]) -> None:
    async def stalls(args: dict[str, Any]) -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.sleep(STALL)
        yield b"never"

    node.rpc.register("test", "stalls", stalls)
    # The first bytes must arrive within the idle timeout even on a loaded machine.
    client = node.client(timeouts=PeerTimeouts(connect=5.0, call=30.0, idle=3.0, probe=5.0))
    clients.append(client)
    stream = await client.call_stream_out("test", "stalls")
    assert await stream.__anext__() == b"first"
    with pytest.raises(PeerTimeout):
        await stream.__anext__()
    assert client.state is PeerState.SUSPECT


async def test_a_slow_but_steady_download_is_not_a_timeout(node: RpcNode, clients: list[PeerClient]) -> None:
    async def steady(args: dict[str, Any]) -> AsyncIterator[bytes]:
        for _ in range(6):
            await asyncio.sleep(0.5)  # each gap far under the 2 s idle timeout, the whole over it
            yield b"tick"

    node.rpc.register("test", "steady", steady)
    client = node.client(timeouts=PATIENT)
    clients.append(client)
    assert [chunk async for chunk in await client.call_stream_out("test", "steady")] == [b"tick"] * 6


async def test_an_upload_the_peer_stops_reading_times_out(node: RpcNode, clients: list[PeerClient]) -> None:
    async def stuck(args: dict[str, Any], body: BodyReader) -> None:
        await body.read(1)
        await asyncio.sleep(STALL)  # never reads the rest: the client's writes back up

    async def big() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"u" * MiB

    node.rpc.register("test", "stuck", stuck, stream_in=True)
    client = node.client(timeouts=QUICK)
    clients.append(client)
    with pytest.raises(PeerTimeout):
        await client.call_stream_in("test", "stuck", None, big(), length=64 * MiB)
    assert client.state is PeerState.SUSPECT


async def test_a_slow_producer_is_not_the_peers_fault(node: RpcNode, clients: list[PeerClient]) -> None:
    async def count(args: dict[str, Any], body: BodyReader) -> int:
        return sum([len(chunk) async for chunk in body])

    async def slow_source() -> AsyncIterator[bytes]:
        yield b"s" * 1000
        await asyncio.sleep(2.5)  # longer than the 1 s idle timeout: our side is slow, not the peer
        yield b"s" * 1000
        await asyncio.sleep(2.5)

    node.rpc.register("test", "count", count, stream_in=True)
    # The upload's idle timeout is short; the answer once the body is sent gets the call's 30 s.
    client = node.client(timeouts=PeerTimeouts(connect=5.0, call=30.0, idle=1.0, probe=5.0))
    clients.append(client)
    assert await client.call_stream_in("test", "count", None, slow_source(), length=2000) == 2000
    assert client.state is PeerState.ONLINE


async def test_a_stopped_peer_is_offline_at_once_and_a_probe_brings_it_back(
        node: RpcNode, clients: list[PeerClient]) -> None:
    client = node.client(timeouts=QUICK, policy=HealthPolicy(failures_to_offline=5, probe_interval=0.05))
    clients.append(client)
    assert await client.ping()
    await node.stop()

    # A pooled connection may die under the first call (the peer lost it: suspect); the
    # first refused connection is enough to know nothing listens there: offline, well
    # before five failures in a row.
    failed: list[PeerUnreachable] = []
    while client.state is not PeerState.OFFLINE:
        with pytest.raises(PeerUnreachable) as caught:
            await client.call("node", "ping")
        failed.append(caught.value)
    assert len(failed) <= 2 and "cannot connect" in failed[-1].message
    with pytest.raises(PeerOffline):
        await client.call("node", "ping")
    # The probe keeps trying in the background and keeps failing while the port is closed.
    failures = client.health.failures
    async with asyncio.timeout(20):
        while client.health.failures <= failures + 2:
            await asyncio.sleep(0.02)
    assert client.state is PeerState.OFFLINE

    await node.start()  # the same port: the node restarted
    await wait_for_state(client, PeerState.ONLINE)
    assert (await client.ping())["time"] > 0
    assert client.status()["times_offline"] == 1


async def test_a_probe_answered_with_403_keeps_the_peer_offline(node: RpcNode, clients: list[PeerClient]) -> None:
    client = node.client(secret=b"a-secret-the-peer-does-not-share", timeouts=QUICK,
                         policy=HealthPolicy(failures_to_offline=1, probe_interval=0.05))
    clients.append(client)
    await node.stop()
    with pytest.raises(PeerUnreachable):
        await client.call("node", "ping")
    assert client.state is PeerState.OFFLINE
    await node.start()
    refused = node.rpc.refused
    async with asyncio.timeout(20):
        while node.rpc.refused < refused + 2:
            await asyncio.sleep(0.02)
    assert client.state is PeerState.OFFLINE
    assert "signature" in client.health.last_error


async def test_close_stops_the_probe(node: RpcNode) -> None:
    client = node.client(timeouts=QUICK, policy=HealthPolicy(failures_to_offline=1, probe_interval=0.05))
    await node.stop()
    with pytest.raises(PeerUnreachable):
        await client.ping()
    assert client.state is PeerState.OFFLINE
    probe = client._probe_task
    assert probe is not None and not probe.done()
    await client.close()
    assert probe.done()
