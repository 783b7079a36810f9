"""Peer RPC end to end: a real aiohttp server on 127.0.0.1 and a ``PeerClient`` calling it.

Arguments and results, typed errors, streamed bodies both ways (with bounded memory),
what the server refuses, and the shared pooled session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from rpc_testkit import SECRET, RpcNode, closed_peer_session, make_rpc  # noqa: F401 - autouse fixture

from buckets.cluster import rpcframe as wire
from buckets.cluster.rpcauth import PeerSigner, body_declaration
from buckets.cluster.rpcclient import PeerState, PeerTimeouts, shared_session
from buckets.cluster.rpcerrors import (
    BadPeerRequest, PeerAuthRefused, clock_cause, PeerBodyIncomplete, PeerProtocolError, PeerTimeout,
    UnknownPeerMethod,
)
from buckets.cluster.rpcserver import BodyReader
from buckets.errors import CorruptData, DiskError, InternalError, NoSuchKey, WriteQuorumLost

MiB = 1 << 20


class ShardMissing(DiskError):
    """Stands for the storage layer's not-found error: any DiskError subclass round-trips."""


@pytest.fixture
async def node() -> AsyncIterator[RpcNode]:
    peer = RpcNode(make_rpc())
    await peer.start()
    yield peer
    await peer.stop()


def pattern(size: int, chunk: int = MiB, seed: int = 7) -> tuple[list[int], str]:
    """Chunk sizes and the SHA-256 of ``size`` bytes of a repeating pattern, without holding them."""
    block = bytes((seed + i) % 251 for i in range(chunk))
    digest, sizes, left = hashlib.sha256(), [], size
    while left:
        n = min(chunk, left)
        digest.update(block[:n])
        sizes.append(n)
        left -= n
    return sizes, digest.hexdigest()


async def produce(size: int, chunk: int = MiB, seed: int = 7) -> AsyncIterator[bytes]:
    block = bytes((seed + i) % 251 for i in range(chunk))
    left = size
    while left:
        n = min(chunk, left)
        yield block[:n]
        left -= n


# --- control calls -------------------------------------------------------------------------


async def test_arguments_and_results_round_trip(node: RpcNode) -> None:
    node.rpc.register("test", "echo", lambda args: {"got": args})
    value = {"int": 2**62, "neg": -5, "float": 1.5, "text": "ünïcode ☃", "bytes": b"\x00\xff" * 10,
             "list": [1, [2, [3]]], "map": {"a": {"b": None}}, "yes": True, "no": False, "none": None}
    client = node.client()
    assert await client.call("test", "echo", value) == {"got": value}
    assert await client.call("test", "echo") == {"got": {}}
    assert client.state is PeerState.ONLINE and client.health.calls == 2


async def test_async_handlers_and_scalar_results(node: RpcNode) -> None:
    async def add(args: dict[str, Any]) -> int:
        await asyncio.sleep(0)
        return args["a"] + args["b"]

    node.rpc.register("test", "add", add)
    assert await node.client().call("test", "add", {"a": 2, "b": 40}) == 42


async def test_ping_is_built_in(node: RpcNode) -> None:
    answer = await node.client().ping()
    assert isinstance(answer["time"], float)


@pytest.mark.parametrize("error", [
    NoSuchKey(resource="/bucket/key"), WriteQuorumLost(), ShardMissing("shard.1 is not on this disk"),
    CorruptData("piece 3 failed its checksum"),
], ids=lambda error: type(error).__name__)
async def test_a_typed_error_is_raised_again_by_the_caller(node: RpcNode, error: BaseException) -> None:
    def fail(args: dict[str, Any]) -> None:
        raise error

    node.rpc.register("test", "fail", fail)
    client = node.client()
    with pytest.raises(type(error)) as caught:
        await client.call("test", "fail")
    assert str(caught.value) == str(error)
    assert client.state is PeerState.ONLINE  # the peer answered: nothing wrong with it


async def test_a_handler_bug_is_an_internal_error_and_logged_with_its_traceback(
        node: RpcNode, caplog: pytest.LogCaptureFixture) -> None:
    def broken(args: dict[str, Any]) -> None:
        raise KeyError("oops")

    node.rpc.register("test", "broken", broken)
    with caplog.at_level(logging.ERROR, logger="buckets.cluster.rpc"):
        with pytest.raises(InternalError):
            await node.client().call("test", "broken")
    assert "unhandled error" in caplog.text and "KeyError" in caplog.text


async def test_an_unknown_method_is_a_typed_error_for_an_authenticated_caller(node: RpcNode) -> None:
    client = node.client()
    with pytest.raises(UnknownPeerMethod):
        await client.call("nope", "nothing")
    assert client.state is PeerState.ONLINE


async def test_a_client_with_another_secret_is_refused(node: RpcNode) -> None:
    client = node.client(secret=b"some-other-cluster-secret-entirely")
    with pytest.raises(PeerAuthRefused):
        await client.ping()
    assert client.state is PeerState.ONLINE  # reachable, just not ours: not a health failure
    assert "signature" in client.health.last_error
    assert node.rpc.refused == 1
    with pytest.raises(PeerAuthRefused) as refused:
        await client.call("test", "echo", {"n": 1})
    assert refused.value.clock_offset is None  # the clocks agree: the secret is the suspect
    assert clock_cause(refused.value) is None


def test_a_refusal_whose_date_is_minutes_off_names_the_clocks() -> None:
    """The refusing peer's ``Date`` beyond the signatures' 60 s window explains the refusal."""
    from email.utils import formatdate

    from buckets.cluster.rpcclient import clock_offset_from

    ahead = clock_offset_from({"Date": formatdate(time.time() + 600, usegmt=True)})
    assert ahead is not None and 598 <= ahead <= 601
    behind = clock_offset_from({"Date": formatdate(time.time() - 90, usegmt=True)})
    assert behind is not None and -92 <= behind <= -88
    assert clock_offset_from({"Date": formatdate(time.time() + 20, usegmt=True)}) is None
    assert clock_offset_from({}) is None and clock_offset_from({"Date": "yesterday"}) is None
    said = clock_cause(PeerAuthRefused(clock_offset=ahead))
    assert re.match(r"its clock is \+(599|600|601) s from", said) and "NTP" in said and "secret" not in said


async def test_names_are_checked_on_both_sides(node: RpcNode) -> None:
    with pytest.raises(ValueError):
        node.rpc.register("Test", "x", lambda args: None)
    with pytest.raises(ValueError):
        await node.client().call("test", "../admin")
    node.rpc.register("test", "once", lambda args: None)
    with pytest.raises(ValueError, match="already registered"):
        node.rpc.register("test", "once", lambda args: None)


# --- streams to the peer -------------------------------------------------------------------


async def test_a_64_mib_upload_streams_through_a_hashing_handler_in_bounded_memory(node: RpcNode) -> None:
    size = 64 * MiB
    sizes, expected = pattern(size)
    seen: list[int] = []

    async def sha256(args: dict[str, Any], body: BodyReader) -> dict[str, Any]:
        digest = hashlib.sha256()
        async for chunk in body:
            seen.append(len(chunk))
            digest.update(chunk)
        return {"sha256": digest.hexdigest(), "bytes": body.received, "label": args["label"]}

    node.rpc.register("test", "sha256", sha256, stream_in=True)
    client = node.client()
    tracemalloc.start()
    try:
        result = await client.call_stream_in("test", "sha256", {"label": "x"}, produce(size), length=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == {"sha256": expected, "bytes": size, "label": "x"}
    # Client and server share this process: both together stayed far below the body size.
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB for a {size // MiB} MiB upload"
    assert len(seen) > 16 and max(seen) <= MiB  # arrived incrementally, never whole


async def test_an_upload_of_unknown_length_is_sent_chunked(node: RpcNode) -> None:
    async def count(args: dict[str, Any], body: BodyReader) -> int:
        assert body.length is None
        total = 0
        while chunk := await body.read(64 * 1024):
            total += len(chunk)
        return total

    node.rpc.register("test", "count", count, stream_in=True)
    assert await node.client().call_stream_in("test", "count", None, produce(5 * MiB + 3)) == 5 * MiB + 3


async def test_a_producer_error_cuts_the_upload_and_reaches_the_caller(node: RpcNode) -> None:
    outcome: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def store(args: dict[str, Any], body: BodyReader) -> None:
        try:
            async for _ in body:
                pass
        except PeerBodyIncomplete as error:
            outcome.set_result(error)  # a real handler discards its staging file here
            raise
        outcome.set_result(AssertionError("the handler saw a complete body"))

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * MiB
        yield b"y" * MiB
        raise OSError("the client's source broke")

    node.rpc.register("test", "store", store, stream_in=True)
    client = node.client()
    for length in (10 * MiB, None):  # declared length, and chunked
        with pytest.raises(OSError, match="source broke"):
            await client.call_stream_in("test", "store", None, failing(), length=length)
        assert isinstance(await asyncio.wait_for(outcome, 10), PeerBodyIncomplete)
        outcome = asyncio.get_running_loop().create_future()
    assert client.state is PeerState.ONLINE  # our producer failed, not the peer


async def test_a_cut_upload_does_not_send_what_it_had_queued(node: RpcNode) -> None:
    """A write drops a lagging peer's shard stream by cutting its call. The bytes already queued
    in the connection (megabytes of send buffer) must not go on to the peer: over a slow link
    they held it for seconds after the cut, and the calls behind them timed out on a live peer
    (``tests/cluster/test_cluster_slow_link.py``). The connection is reset, not closed after
    its queue drains: the peer's handler sees the reset, short of what the caller produced."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()
    outcome: asyncio.Future[tuple[int, BaseException]] = loop.create_future()

    async def sink(args: dict[str, Any], body: BodyReader) -> None:
        await gate.wait()  # reads nothing until the caller has cut the call
        received = 0
        try:
            async for chunk in body:
                received += len(chunk)
        except PeerBodyIncomplete as error:
            outcome.set_result((received, error))
            raise
        outcome.set_result((received, AssertionError("the handler saw a complete body")))

    node.rpc.register("test", "sink", sink, stream_in=True)
    client = node.client()
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        block = b"z" * MiB
        while True:
            yield block
            produced += MiB

    call = asyncio.ensure_future(client.call_stream_in("test", "sink", None, endless()))
    last = -1
    while produced != last:  # until every buffer between the two is full
        last = produced
        await asyncio.sleep(0.5)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    gate.set()
    received, error = await asyncio.wait_for(outcome, 30)
    assert isinstance(error, PeerBodyIncomplete) and "reset" in str(error), error
    assert received < produced, (received, produced)


async def test_a_body_that_does_not_match_its_declared_length_is_refused_by_the_client(node: RpcNode) -> None:
    async def sink(args: dict[str, Any], body: BodyReader) -> int:
        return sum([len(chunk) async for chunk in body])

    node.rpc.register("test", "sink", sink, stream_in=True)
    client = node.client()
    with pytest.raises(ValueError, match="longer than"):
        await client.call_stream_in("test", "sink", None, produce(2 * MiB), length=MiB)
    with pytest.raises(ValueError, match="ended after"):
        await client.call_stream_in("test", "sink", None, produce(MiB), length=2 * MiB)


async def test_a_body_sent_to_a_method_that_takes_none_is_refused(node: RpcNode) -> None:
    node.rpc.register("test", "plain", lambda args: "ok")
    with pytest.raises(BadPeerRequest, match="takes no request body"):
        await node.client().call_stream_in("test", "plain", None, produce(10), length=10)


# --- streams from the peer -----------------------------------------------------------------


async def test_a_streamed_download_arrives_whole_and_in_order(node: RpcNode) -> None:
    size = 32 * MiB + 12345
    sizes, expected = pattern(size, chunk=3 * MiB)  # chunks over one frame are split

    def read(args: dict[str, Any]) -> AsyncIterator[bytes]:
        return produce(args["size"], chunk=3 * MiB)

    node.rpc.register("test", "read", read)
    digest, frames = hashlib.sha256(), 0
    stream = await node.client().call_stream_out("test", "read", {"size": size})
    async for chunk in stream:
        assert len(chunk) <= wire.MAX_FRAME
        digest.update(chunk)
        frames += 1
    assert digest.hexdigest() == expected and stream.received == size
    assert frames >= len(sizes)


async def test_an_error_opening_a_stream_is_raised_by_the_call(node: RpcNode) -> None:
    async def missing(args: dict[str, Any]) -> AsyncIterator[bytes]:
        raise ShardMissing("no such shard")
        yield b""  # an async generator

    node.rpc.register("test", "missing", missing)
    with pytest.raises(ShardMissing, match="no such shard"):
        await node.client().call_stream_out("test", "missing")


async def test_an_error_midway_is_raised_while_iterating_never_a_short_stream(node: RpcNode) -> None:
    async def rotten(args: dict[str, Any]) -> AsyncIterator[bytes]:
        yield b"a" * MiB
        yield b"b" * MiB
        raise CorruptData("piece 2 failed its checksum")

    node.rpc.register("test", "rotten", rotten)
    client = node.client()
    received = 0
    with pytest.raises(CorruptData, match="piece 2"):
        async for chunk in await client.call_stream_out("test", "rotten"):
            received += len(chunk)
    assert received == 2 * MiB
    assert client.state is PeerState.ONLINE
    assert await client.ping()  # the client is usable afterwards


async def test_a_stream_closed_early_releases_the_handler_and_the_connection(node: RpcNode) -> None:
    closed = asyncio.Event()

    async def endless(args: dict[str, Any]) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"z" * MiB
        finally:
            closed.set()

    node.rpc.register("test", "endless", endless)
    client = node.client()
    async with await client.call_stream_out("test", "endless") as stream:
        async for _ in stream:
            break
    await asyncio.wait_for(closed.wait(), 10)
    assert await client.ping()


async def test_a_stream_times_out_only_while_its_reader_waits_for_the_peer(node: RpcNode) -> None:
    """A consumer busy elsewhere for longer than the idle timeout (a heal writing what it read
    to a slow disk) while the peer's bytes wait in the buffer is not a peer that stopped
    answering; a peer that sends nothing while the consumer waits is."""
    async def two_then_pause(args: dict[str, Any]) -> AsyncIterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 1000
        await asyncio.sleep(30 if args.get("stall") else 1.0)  # longer than the idle timeout
        yield b"c" * 1000

    node.rpc.register("test", "two", two_then_pause)
    client = node.client(timeouts=PeerTimeouts(connect=10.0, call=30.0, idle=0.5, probe=5.0))
    got = []
    async for chunk in await client.call_stream_out("test", "two", {}):
        got.append(chunk)
        if len(got) == 1:
            await asyncio.sleep(1.5)  # away while the peer pauses: "c" is there when it reads on
    assert b"".join(got) == b"a" * 1000 + b"b" * 1000 + b"c" * 1000
    assert client.state is PeerState.ONLINE
    with pytest.raises(PeerTimeout):
        async for _ in await client.call_stream_out("test", "two", {"stall": True}):
            pass


async def test_a_stream_whose_caller_left_before_its_head_is_no_server_error(node: RpcNode, caplog) -> None:
    """A hedged read cancels its stream once a spare answered, often before the peer's first
    chunk was ready: the peer finds the connection closing as it writes the head. The caller
    went away; that is no unhandled error on the peer (the slow-link mixed-load test's bug-line
    check caught one)."""
    first_asked = asyncio.Event()

    async def late_first(args: dict[str, Any]) -> AsyncIterator[bytes]:
        first_asked.set()
        await asyncio.sleep(0.5)  # the first chunk comes after the caller has gone
        yield b"late" * 100

    node.rpc.register("test", "late", late_first)
    client = node.client()

    async def read_it() -> None:
        async for _ in await client.call_stream_out("test", "late", {}):
            pass

    reading = asyncio.ensure_future(read_it())
    await asyncio.wait_for(first_asked.wait(), 10)
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await asyncio.sleep(1.0)  # the peer writes its head into the closed connection meanwhile
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
    assert await client.ping()


async def test_a_result_answer_to_a_stream_call_is_a_protocol_error(node: RpcNode) -> None:
    node.rpc.register("test", "plain", lambda args: "not a stream")
    with pytest.raises(PeerProtocolError):
        await node.client().call_stream_out("test", "plain")


# --- what the server refuses (raw requests) -------------------------------------------------


async def raw_post(node: RpcNode, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(node.endpoint + path, data=body, headers=headers) as response:
            return response.status, response.content_type, await response.read()


async def test_a_signed_header_with_a_swapped_control_message_is_refused(node: RpcNode) -> None:
    node.rpc.register("test", "echo", lambda args: args)
    signed_args, sent_args = wire.pack({"n": 1}), wire.pack({"n": 2})
    path = wire.path_for("test", "echo")
    headers = PeerSigner(SECRET).headers("POST", path, "", signed_args, "none")
    status, _, body = await raw_post(node, path, wire.args_prefix(sent_args) + sent_args, headers)
    assert (status, body) == (403, wire.FORBIDDEN_BODY)


async def test_framing_that_contradicts_the_signed_declaration_is_refused(node: RpcNode) -> None:
    node.rpc.register("test", "echo", lambda args: args)
    args = wire.pack({})
    path = wire.path_for("test", "echo")
    headers = PeerSigner(SECRET).headers("POST", path, "", args, body_declaration(100, streamed=True))
    status, kind, body = await raw_post(node, path, wire.args_prefix(args) + args, headers)
    assert (status, kind) == (wire.PEER_ERROR_STATUS, wire.ERROR_TYPE)
    assert wire.unpack(body)["type"] == "BadPeerRequest"


async def test_a_control_message_that_is_not_a_map_is_refused(node: RpcNode) -> None:
    node.rpc.register("test", "echo", lambda args: args)
    for args in (wire.pack([1, 2]), b"\xc1"):  # a list; a byte msgpack never uses
        path = wire.path_for("test", "echo")
        headers = PeerSigner(SECRET).headers("POST", path, "", args, "none")
        status, _, body = await raw_post(node, path, wire.args_prefix(args) + args, headers)
        assert status == wire.PEER_ERROR_STATUS
        assert wire.unpack(body)["type"] == "BadPeerRequest"


async def test_an_oversized_control_message_is_refused_before_it_is_read(node: RpcNode) -> None:
    node.rpc.max_args = 1000
    node.rpc.register("test", "echo", lambda args: args)
    args = wire.pack({"blob": os.urandom(2000)})
    path = wire.path_for("test", "echo")
    headers = PeerSigner(SECRET).headers("POST", path, "", args, "none")
    status, _, body = await raw_post(node, path, wire.args_prefix(args) + args, headers)
    assert status == wire.PEER_ERROR_STATUS and "limit is 1000" in wire.unpack(body)["message"]


# --- the shared session --------------------------------------------------------------------


async def test_clients_share_one_pooled_session_per_process(node: RpcNode) -> None:
    session = shared_session()
    assert shared_session() is session
    connector = session.connector
    assert connector is not None and connector.limit_per_host > 0
    a, b = node.client(), node.client()
    await asyncio.gather(*(client.ping() for client in (a, b) for _ in range(20)))
    assert shared_session() is session
