"""A streamed shard write whose peer dies midway, then is aborted by the engine, leaves no
unretrieved task failure behind (seen in the cluster fault suite: "Task exception was never
retrieved ... RemoteShardWriter._start.<locals>.run() ... DiskOffline" in the logs of the
nodes that were writing to a node killed with kill -9)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from buckets.cluster.remotedisk import RemoteShardWriter
from buckets.errors import DiskOffline


class DyingPeerDisk:
    """The parts of RemoteDisk a shard writer uses; the stream fails after its first chunk."""

    sync_writes = True

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.failed = asyncio.Event()

    async def _stream_in(self, method: str, args: dict, body) -> dict:
        async for _ in body:
            self.failed.set()
            raise DiskOffline("peer went away (connection reset)")
        return {"written": 0}

    async def delete(self, path: str) -> None:
        self.deleted.append(path)


async def run_with_handler(scenario) -> list[dict]:
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        await scenario()
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    return reported


async def test_abort_after_the_stream_failed_reports_nothing() -> None:
    disk = DyingPeerDisk()

    async def scenario():
        writer = RemoteShardWriter(disk, "stage/x/part.1")
        await writer.write(b"first chunk")  # queued: the write itself succeeds
        await asyncio.wait_for(disk.failed.wait(), 5)
        await asyncio.sleep(0)
        await writer.abort()  # the engine gives up on this shard (another one failed, say)
        assert disk.deleted == ["stage/x/part.1"]

    assert [c.get("message") for c in await run_with_handler(scenario)] == []


async def test_the_failure_still_reaches_close() -> None:
    disk = DyingPeerDisk()

    async def scenario():
        writer = RemoteShardWriter(disk, "stage/y/part.1")
        await writer.write(b"first chunk")
        await asyncio.wait_for(disk.failed.wait(), 5)
        with pytest.raises(DiskOffline):
            await writer.close(True)

    assert [c.get("message") for c in await run_with_handler(scenario)] == []
