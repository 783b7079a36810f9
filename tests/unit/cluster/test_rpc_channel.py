"""Peer channels (``buckets.cluster.rpcchannel``): control calls multiplexed on one signed
WebSocket per peer, against a real aiohttp server on 127.0.0.1.

What a channel must keep from HTTP calls: typed errors, the refusal of anything not signed
with the cluster secret (at the upgrade, and for every message after it: forged, altered or
replayed messages close the channel), no call lost when the peer sends its callers away,
a lost connection reported as one, and HTTP for what a channel does not carry.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from rpc_testkit import SECRET, RpcNode, closed_peer_session, make_rpc  # noqa: F401 - autouse fixture

from buckets.cluster import rpcchannel as channels
from buckets.cluster import rpcframe as wire
from buckets.cluster.rpcauth import NONCE_HEADER, PeerSigner, body_declaration
from buckets.cluster.rpcclient import shared_session
from buckets.cluster.rpcerrors import PeerAuthRefused, PeerUnreachable, UnknownPeerMethod
from buckets.errors import InternalError, NoSuchKey
from buckets.obs.access import METRICS_KEY


class Served:
    """Counts what the server sees: HTTP requests by path (a middleware) and calls answered
    on channels (what the server reports to metrics)."""

    def __init__(self) -> None:
        self.http: Counter = Counter()
        self.on_channels: Counter = Counter()

    def observe(self, api: str, status: int, seconds: float, received: int, sent: int) -> None:
        self.on_channels[(api, status)] += 1


class CountingNode(RpcNode):
    """An RpcNode whose app counts requests and channel calls; ``refuse_channels`` stands for
    a peer of the version before channels (its router has no such path: 404)."""

    def __init__(self, rpc, *, refuse_channels: bool = False) -> None:
        super().__init__(rpc)
        self.served = Served()
        self.refuse_channels = refuse_channels

    async def start(self) -> None:
        served, refuse = self.served, self.refuse_channels

        @web.middleware
        async def count(request: web.Request, handler):
            served.http[request.path.removeprefix(wire.PREFIX)] += 1
            if refuse and request.path == channels.CHANNEL_PATH:
                raise web.HTTPNotFound()
            return await handler(request)

        app = web.Application(middlewares=[count])
        app[METRICS_KEY] = served
        app.router.add_routes(self.rpc.routes())

        async def go_away(app: web.Application) -> None:
            await self.rpc.go_away(app)

        app.on_shutdown.append(go_away)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()


def services(rpc) -> dict:
    """Handlers the tests call; ``gate`` holds ``slow`` until the test opens it."""
    state = {"gate": asyncio.Event(), "calls": Counter()}

    async def echo(args):
        state["calls"]["echo"] += 1
        return {"n": args.get("n"), "blob": args.get("blob", b"")[:8]}

    def sync_echo(args):
        return {"n": args.get("n")}

    async def missing(args):
        raise NoSuchKey("no such key here", resource="/b/k")

    async def broken(args):
        raise RuntimeError("a bug in the handler")

    async def slow(args):
        await state["gate"].wait()
        return {"n": args.get("n")}

    for name, fn in (("echo", echo), ("sync_echo", sync_echo), ("missing", missing), ("broken", broken),
                     ("slow", slow)):
        rpc.register("test", name, fn)
    return state


@pytest.fixture
async def peer() -> AsyncIterator[tuple[CountingNode, dict]]:
    node = CountingNode(make_rpc())
    state = services(node.rpc)
    await node.start()
    yield node, state
    await node.stop()


async def test_control_calls_share_one_channel_and_keep_their_typed_errors(peer) -> None:
    node, state = peer
    client = node.client()
    try:
        results = await asyncio.gather(*(client.call("test", "echo", {"n": i}) for i in range(200)))
        assert [r["n"] for r in results] == list(range(200))
        assert (await client.call("test", "sync_echo", {"n": 7})) == {"n": 7}
        with pytest.raises(NoSuchKey) as raised:
            await client.call("test", "missing", {})
        assert raised.value.resource == "/b/k"
        with pytest.raises(InternalError):
            await client.call("test", "broken", {})
        with pytest.raises(UnknownPeerMethod):
            await client.call("test", "nothing", {})
        # One upgrade carried all of it; no control call went over HTTP.
        assert node.served.http == Counter({"/channel": 1})
        assert node.rpc.open_channels == 1
        calls = node.served.on_channels
        assert calls[("peer.test.echo", 200)] == 200 and calls[("peer.test.sync_echo", 200)] == 1
        assert calls[("peer.test.missing", wire.PEER_ERROR_STATUS)] == 1
        assert calls[("peer.test.broken", 500)] == 1
        assert calls[("peer.test.nothing", wire.PEER_ERROR_STATUS)] == 1
        assert client.health.failures == 0
    finally:
        await client.close()


async def test_a_control_message_over_the_channel_limit_goes_over_http(peer, monkeypatch) -> None:
    node, _ = peer
    monkeypatch.setattr(channels, "MAX_CHANNEL_ARGS", 1024)
    client = node.client()
    try:
        assert (await client.call("test", "echo", {"n": 1, "blob": b"x" * 4096}))["blob"] == b"x" * 8
        assert (await client.call("test", "echo", {"n": 2}))["n"] == 2
        assert node.served.http == Counter({"/test/echo": 1, "/channel": 1})
    finally:
        await client.close()


async def test_a_peer_that_opens_no_channel_is_called_over_http() -> None:
    node = CountingNode(make_rpc(), refuse_channels=True)
    services(node.rpc)
    await node.start()
    client = node.client()
    try:
        for i in range(3):
            assert (await client.call("test", "echo", {"n": i}))["n"] == i
        # One refused upgrade, then HTTP for the retry period: not an upgrade per call.
        assert node.served.http == Counter({"/channel": 1, "/test/echo": 3})
        assert client.health.failures == 0
    finally:
        await client.close()
        await node.stop()


async def test_an_upgrade_not_signed_by_the_cluster_is_refused(peer) -> None:
    node, state = peer
    session = shared_session()
    url = node.endpoint + channels.CHANNEL_PATH
    with pytest.raises(aiohttp.WSServerHandshakeError) as unsigned:
        await session.ws_connect(url)
    assert unsigned.value.status == 403
    other = PeerSigner(b"another-cluster-secret-0123456789")
    headers = other.headers("GET", channels.CHANNEL_PATH, "", b"", body_declaration(None, streamed=False))
    with pytest.raises(aiohttp.WSServerHandshakeError) as forged:
        await session.ws_connect(url, headers=headers)
    assert forged.value.status == 403
    # The client with another secret gets the typed refusal, as over HTTP.
    client = node.client(secret=b"another-cluster-secret-0123456789")
    try:
        with pytest.raises(PeerAuthRefused):
            await client.call("test", "echo", {"n": 1})
    finally:
        await client.close()
    # A signed upgrade cannot be replayed: its nonce was seen.
    signer = PeerSigner(SECRET)
    headers = signer.headers("GET", channels.CHANNEL_PATH, "", b"", body_declaration(None, streamed=False))
    ws = await session.ws_connect(url, headers=headers)
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as replayed:
        await session.ws_connect(url, headers=headers)
    assert replayed.value.status == 403
    assert state["calls"]["echo"] == 0


async def _raw_channel(node: RpcNode) -> tuple[aiohttp.ClientWebSocketResponse, channels.Sealer, channels.Sealer]:
    signer = PeerSigner(SECRET)
    headers = signer.headers("GET", channels.CHANNEL_PATH, "", b"", body_declaration(None, streamed=False))
    ws = await shared_session().ws_connect(node.endpoint + channels.CHANNEL_PATH, headers=headers)
    key = channels.channel_key(signer.key, headers[NONCE_HEADER])
    return ws, channels.Sealer(key, channels.FROM_CALLER), channels.Sealer(key, channels.FROM_PEER)


async def _answer(ws, inbound: channels.Sealer) -> list:
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type is aiohttp.WSMsgType.BINARY
    payload = inbound.open(message.data)
    assert payload is not None
    return wire.unpack(payload)


@pytest.mark.parametrize("tamper", ["forged", "altered", "replayed", "from the peer's direction"])
async def test_a_message_that_fails_its_mac_closes_the_channel_unanswered(peer, tamper: str) -> None:
    node, state = peer
    ws, out, inbound = await _raw_channel(node)
    first = out.seal(channels.call_message(1, "test", "echo", wire.pack({"n": 1})))
    await ws.send_bytes(first)
    assert await _answer(ws, inbound) == [1, channels.RESULT, {"n": 1, "blob": b""}]
    call = channels.call_message(2, "test", "echo", wire.pack({"n": 2}))
    if tamper == "forged":
        bad = bytes(channels.MAC_BYTES) + call
    elif tamper == "altered":
        sealed = out.seal(call)
        bad = sealed[:-1] + bytes([sealed[-1] ^ 1])
    elif tamper == "replayed":
        bad = first
    else:  # sealed with the right key but as an answer: the direction is part of the MAC
        bad = channels.Sealer(out._key, channels.FROM_PEER).seal(call)
    await ws.send_bytes(bad)
    closing = await asyncio.wait_for(ws.receive(), 10)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    await ws.close()
    assert state["calls"]["echo"] == 1


async def test_go_away_loses_no_call_and_the_next_calls_open_a_new_channel(peer) -> None:
    node, state = peer
    client = node.client()
    try:
        assert (await client.call("test", "echo", {"n": 0}))["n"] == 0
        held = [asyncio.ensure_future(client.call("test", "slow", {"n": i})) for i in range(5)]
        await asyncio.sleep(0.2)  # the slow calls are in the server's hands
        await node.rpc.go_away()
        # New calls while the old channel drains: they go on a new one.
        assert [(await client.call("test", "echo", {"n": i}))["n"] for i in range(1, 4)] == [1, 2, 3]
        state["gate"].set()
        assert [r["n"] for r in await asyncio.gather(*held)] == list(range(5))
        assert node.served.http == Counter({"/channel": 2})
        for _ in range(100):  # the drained channel is closed by the caller once its calls are answered
            if node.rpc.open_channels == 1:
                break
            await asyncio.sleep(0.05)
        assert node.rpc.open_channels == 1
        assert client.health.failures == 0
    finally:
        await client.close()


async def test_drain_waits_for_the_callers_to_close_their_channels_or_gives_up_after_its_timeout(peer) -> None:
    """A stopping node drains before aiohttp's shutdown (``BEFORE_STOP_KEY``): then the callers'
    close handshakes still complete (after it, each waited out its close timeout)."""
    node, state = peer
    client = node.client()
    try:
        assert (await client.call("test", "echo", {"n": 0}))["n"] == 0
        held = asyncio.ensure_future(client.call("test", "slow", {"n": 1}))
        await asyncio.sleep(0.2)
        await asyncio.wait_for(node.rpc.drain(timeout=0.3), 10)  # the call does not end: it gives up
        assert node.rpc.open_channels == 1 and not held.done()
        drain = asyncio.ensure_future(node.rpc.drain(timeout=30.0))
        await asyncio.sleep(0.3)
        assert not drain.done()  # the call is still in the server's hands
        state["gate"].set()
        await asyncio.wait_for(drain, 10)
        assert node.rpc.open_channels == 0 and (await held)["n"] == 1
        assert client.health.failures == 0
    finally:
        await client.close()


async def test_a_channel_its_app_opens_after_it_was_sent_away_is_sent_away_as_it_opens(peer) -> None:
    """A caller's upgrade read before the port closed, served after the stop's GOAWAY: without a
    GOAWAY of its own its caller kept it open and the stop waited for the shutdown timeout."""
    node, _ = peer
    client = node.client()
    try:
        await node.rpc.go_away(node.runner.app)
        assert (await client.call("test", "echo", {"n": 1}))["n"] == 1  # its call is answered all the same
        for _ in range(100):
            if node.rpc.open_channels == 0:
                break
            await asyncio.sleep(0.05)
        assert node.rpc.open_channels == 0  # closed by its caller: nothing left for a shutdown to wait for
        assert node.served.http == Counter({"/channel": 1}) and client.health.failures == 0
    finally:
        await client.close()


async def test_a_peer_that_goes_down_fails_the_calls_it_held_and_a_restart_serves_again(peer) -> None:
    node, state = peer
    client = node.client()
    try:
        assert (await client.call("test", "echo", {"n": 0}))["n"] == 0
        held = asyncio.ensure_future(client.call("test", "slow", {"n": 1}))
        await asyncio.sleep(0.2)
        runner, node.runner = node.runner, None
        # Down hard: the listening socket and every connection close, no GOAWAY first.
        for site in list(runner.sites):
            await site.stop()
        await runner.server.shutdown(0.01) if runner.server is not None else None
        with pytest.raises(PeerUnreachable):
            await asyncio.wait_for(held, 10)
        await runner.cleanup()
        state["gate"].set()
        await node.start()
        for _ in range(100):
            try:
                assert (await client.call("test", "echo", {"n": 2}))["n"] == 2
                break
            except PeerUnreachable:  # offline until its probe sees it back
                await asyncio.sleep(0.05)
        assert (await client.call("test", "echo", {"n": 3}))["n"] == 3
    finally:
        await client.close()


async def test_a_call_that_never_left_a_closing_channel_is_sent_on_a_new_one(peer) -> None:
    node, state = peer
    client = node.client()
    try:
        assert (await client.call("test", "echo", {"n": 1}))["n"] == 1
        channel = client._channel
        channel.ws._writer.transport.close()  # closing, and nothing has noticed yet
        assert (await client.call("test", "echo", {"n": 2}))["n"] == 2
        assert client._channel is not channel
        assert node.served.http == Counter({"/channel": 2})
        assert state["calls"]["echo"] == 2 and client.health.failures == 0
    finally:
        await client.close()


async def test_a_signed_request_to_the_channel_path_that_is_no_upgrade_is_a_bad_request(peer) -> None:
    node, state = peer
    signer = PeerSigner(SECRET)
    for method in ("GET", "POST"):
        headers = signer.headers(method, channels.CHANNEL_PATH, "", b"", body_declaration(None, streamed=False))
        async with shared_session().request(method, node.endpoint + channels.CHANNEL_PATH, headers=headers) as resp:
            assert resp.status == wire.PEER_ERROR_STATUS, resp.status
            assert resp.content_type == wire.ERROR_TYPE
            assert wire.unpack(await resp.read())["type"] == "BadPeerRequest"
    assert node.rpc.open_channels == 0 and state["calls"]["echo"] == 0
