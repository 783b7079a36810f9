"""The disks the conformance suite runs against: one factory per ``Disk`` implementation.

A factory is an async context manager that takes the path of a directory on this machine
(which may not exist yet: some cases start from a missing root) and yields a ``Disk``
backed by it, closing it on exit. To run the whole suite against a new implementation,
add its factory to ``DISK_FACTORIES`` (``remote_disk`` starts a real peer RPC server serving
the path and yields a ``RemoteDisk`` to it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from buckets.storage import Disk, LocalDisk
from buckets.storage.faulty import FaultyDisk

DISK_ID = "disk-under-test"


@asynccontextmanager
async def local_disk(path: str) -> AsyncIterator[Disk]:
    disk = LocalDisk(path, DISK_ID)
    try:
        yield disk
    finally:
        await disk.close()


@asynccontextmanager
async def faulty_disk(path: str) -> AsyncIterator[Disk]:
    """A FaultyDisk with no fault programmed must be indistinguishable from its disk."""
    async with local_disk(path) as inner:
        yield FaultyDisk(inner)


DISK_FACTORIES = {"local": local_disk, "faulty": faulty_disk}


@asynccontextmanager
async def remote_disk(path: str) -> AsyncIterator[Disk]:
    """A RemoteDisk to a real peer RPC server on a free loopback port that serves ``path``
    through a DiskService over a LocalDisk."""
    from aiohttp import web

    from buckets.cluster.diskservice import DiskService
    from buckets.cluster.remotedisk import RemoteDisk
    from buckets.cluster.rpcauth import PeerVerifier, ReplayCache
    from buckets.cluster.rpcclient import PeerClient, PeerTimeouts, close_shared_session
    from buckets.cluster.rpcserver import PeerRpcServer

    secret = b"conformance-secret"
    inner = LocalDisk(path, DISK_ID)
    rpc = PeerRpcServer(PeerVerifier(secret, replay=ReplayCache()))
    DiskService({path: inner}).register(rpc)
    app = web.Application()
    app.router.add_routes(rpc.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    # Generous timeouts: this suite checks what the calls do, not how fast a loaded machine is
    # (timeouts and offline marking have their own tests in tests/unit/cluster).
    client = PeerClient(f"http://127.0.0.1:{port}", secret,
                        timeouts=PeerTimeouts(connect=30.0, call=120.0, idle=120.0, probe=30.0))
    disk = RemoteDisk(client, path, f"http://127.0.0.1:{port}{path}", DISK_ID)
    try:
        yield disk
    finally:
        await disk.close()
        await client.close()
        await close_shared_session()
        await runner.cleanup()
        await inner.close()


DISK_FACTORIES["remote"] = remote_disk
