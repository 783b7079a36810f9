"""The forming listener's hand-over: a peer's kept-alive connection to the forming app is
told to close (``Connection: close``) with its next answer, so the peer's pool never
picks a connection the node is about to close (a write on it failed with "Can not write
request body" and marked a disk offline just as the cluster formed)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from rpc_testkit import RpcNode, closed_peer_session, free_port, make_rpc  # noqa: F401 - autouse fixture

from buckets.cli.config import Config
from buckets.cli.server import FormingListener
from buckets.cluster.rpcclient import PeerState


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> dict[str, str]:
    """One GET on a kept-alive raw connection: the status line and headers, body drained."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
               for line in head[1:] if ":" in line}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return {"status": head[0], **headers}


def alive(text: str):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text)
    return handler


async def test_connections_kept_from_before_the_hand_over_are_told_to_close() -> None:
    port = free_port()
    rpc = make_rpc()
    # A plain route beside the peer routes: a raw connection can keep itself alive on it.
    routes = [*rpc.routes(), web.get("/_test/alive", alive("forming"))]
    forming = FormingListener(Config(address=f"127.0.0.1:{port}"), routes)
    await forming.start()
    full = web.Application()
    full.router.add_routes([*make_rpc().routes(), web.get("/_test/alive", alive("full"))])
    runner = web.AppRunner(full, handle_signals=False)
    await runner.setup()
    peer = RpcNode(rpc, port=port).client()
    try:
        await peer.ping()  # the peer's pool now keeps a connection to the forming app
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        before = await _get(reader, writer, "/_test/alive")
        assert before["status"].startswith("HTTP/1.1 200") and before.get("connection") != "close", before
        s3 = await _get(*await asyncio.open_connection("127.0.0.1", port), "/bucket")
        assert s3["status"].startswith("HTTP/1.1 503") and s3["connection"] == "close", s3

        await forming.hand_over(runner)
        # The kept connection reaches the forming app once more, and that answer says it closes.
        after = await _get(reader, writer, "/_test/alive")
        assert after["status"].startswith("HTTP/1.1 200") and after["connection"] == "close", after
        assert await reader.read() == b""
        writer.close()
        # The peer's pooled connection too: its calls go on without a failure, to the full app.
        for _ in range(50):
            await peer.ping()
        assert peer.state is PeerState.ONLINE and peer.health.failures == 0
        fresh = await _get(*await asyncio.open_connection("127.0.0.1", port), "/_test/alive")
        assert fresh["status"].startswith("HTTP/1.1 200"), fresh
    finally:
        await peer.close()
        await runner.cleanup()
        await forming.close()


async def test_a_channel_opened_while_forming_is_sent_to_the_full_app_at_the_hand_over() -> None:
    """Peers' control calls ride one channel each (rpcchannel): the hand-over sends GOAWAY on
    the channels the forming app accepted, so the callers' next calls open a channel to the
    full app (its metrics and limits), and no call fails on the way."""
    port = free_port()
    rpc, full_rpc = make_rpc(), make_rpc()
    rpc.register("test", "where", lambda args: "forming")
    full_rpc.register("test", "where", lambda args: "full")
    forming = FormingListener(Config(address=f"127.0.0.1:{port}"), rpc.routes(), peer_rpc=rpc)
    await forming.start()
    full = web.Application()
    full.router.add_routes(full_rpc.routes())
    runner = web.AppRunner(full, handle_signals=False)
    await runner.setup()
    peer = RpcNode(rpc, port=port).client()
    try:
        assert await peer.call("test", "where") == "forming"
        assert rpc.open_channels == 1
        await forming.hand_over(runner)
        # A call sent before the caller read the GOAWAY is still answered by the forming app;
        # after that, every call reaches the full app.
        answers = [await peer.call("test", "where") for _ in range(20)]
        assert set(answers[:2]) <= {"forming", "full"} and answers[2:] == ["full"] * 18, answers
        assert peer.health.failures == 0
        for _ in range(100):  # the caller closes the drained channel to the forming app
            if rpc.open_channels == 0:
                break
            await asyncio.sleep(0.02)
        assert rpc.open_channels == 0 and full_rpc.open_channels == 1
    finally:
        await peer.close()
        await runner.cleanup()
        await forming.close()
