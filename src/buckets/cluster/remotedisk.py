"""``RemoteDisk``: a peer's disk, through the same ``Disk`` protocol, over peer RPC.

MinIO's storage REST client is the model: one call per protocol method, shard data streamed
(``create_file`` opens one streamed request that every ``ShardWriter.write`` feeds through a
bounded queue; ``close`` ends it and waits for the peer's fsync), and typed errors back
(a missing file on the peer raises ``FileNotFound`` here). A peer that does not answer
(offline, refused, timed out) is ``DiskOffline``: the disk marks itself offline and the engine
counts it as missing (reads decode around it, writes need their quorum without it); the
engine's disk monitor probes it (``read_format``) and brings it back.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgpack

from buckets.cluster.rpcclient import PeerClient
from buckets.cluster.rpcerrors import PeerError
from buckets.errors import DiskError, DiskOffline, PathEscape
from buckets.storage.disk import MAX_SMALL_FILE, DiskInfo, FileStat

log = logging.getLogger("buckets.cluster.disk")

def _check_rel(rel: str) -> None:
    """The peer checks every path against its root; this is the same rule, applied early."""
    if not isinstance(rel, str) or "\0" in rel:
        raise PathEscape(f"not a path: {rel!r:.100}")
    norm = posixpath.normpath(posixpath.join("/root", rel))
    if norm == "/root" or not norm.startswith("/root/"):
        raise PathEscape(f"path escapes disk root: {rel!r}")


MAX_IN_FLIGHT = 16
_QUEUE_DEPTH = 4  # chunks in flight per streamed shard: backpressure, bounded memory
_END = object()


def _consume_failure(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


class RemoteShardWriter:
    """One streamed ``create_file`` call, fed chunk by chunk."""

    def __init__(self, disk: "RemoteDisk", path: str) -> None:
        self.disk = disk
        self.path = path
        self._queue: asyncio.Queue = asyncio.Queue(_QUEUE_DEPTH)
        self._sync: bool | None = None
        self._call: asyncio.Task | None = None
        self._done = False

    def _start(self) -> None:
        async def body() -> AsyncIterator[bytes]:
            while True:
                item = await self._queue.get()
                if item is _END:
                    return
                yield item

        async def run() -> Any:
            # ``sync`` is only known at close: the handler fsyncs iff the last chunk says so,
            # so the first call carries it as "decided at the end" (see DiskService).
            return await self.disk._stream_in("create_file", {"path": self.path, "sync": self.disk.sync_writes},
                                              body())

        self._call = asyncio.ensure_future(run())
        # The call's failure reaches the engine through write() or close(); a writer that is
        # aborted (or dropped) after its call already failed would otherwise leave the
        # exception unretrieved, and asyncio logs it with a traceback when the task is freed.
        self._call.add_done_callback(_consume_failure)

    async def write(self, data: bytes) -> None:
        if self._done:
            raise DiskError(f"write to {self.path} after close")
        if self._call is None:
            self._start()
        assert self._call is not None
        put = asyncio.ensure_future(self._queue.put(bytes(data)))
        done, _ = await asyncio.wait({put, self._call}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:  # the call ended (failed) while we waited for room
            put.cancel()
            await self._call  # raises the call's error
            raise DiskError(f"the stream to {self.path} ended early")

    async def close(self, sync: bool) -> None:
        if self._done:
            if self._call is not None and self._call.done() and not self._call.cancelled():
                self._call.result()  # closing twice is harmless once the first close succeeded
                return
            raise DiskError(f"{self.path} was aborted")
        self._done = True
        if self._call is None:
            self._start()
        assert self._call is not None
        put = asyncio.ensure_future(self._queue.put(_END))
        await asyncio.wait({put, self._call}, return_when=asyncio.FIRST_COMPLETED)
        await self._call

    async def abort(self) -> None:
        self._done = True
        if self._call is not None and not self._call.done():
            self._call.cancel()
            try:
                await self._call
            except BaseException:  # noqa: BLE001 - aborting: the outcome is discarded
                pass
        try:
            await self.disk.delete(self.path)
        except DiskError:
            pass


class RemoteDisk:
    """A disk of another node (``client``'s), named by its path there."""

    # Remote shard writes are always fsynced by the peer: the engine's ``sync`` is decided at
    # ``close`` but the stream's arguments are signed up front. Syncing always is the safe side.
    sync_writes = True

    def __init__(self, client: PeerClient, path: str, endpoint: str, disk_id: str = "") -> None:
        self.client = client
        self.path = path
        self.endpoint = endpoint
        self.disk_id = disk_id
        self.online = True
        self.healing = False
        self.last_error = ""
        self._closed = False
        # Calls in flight to this disk: like a local disk's thread pool, a queue here (not in
        # the connection pool) so that waiting for a turn never counts as the peer being slow.
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    def __repr__(self) -> str:
        return f"RemoteDisk({self.endpoint!r}, {self.disk_id!r})"

    # -- state ----------------------------------------------------------------------------
    def mark_offline(self, reason: str) -> None:
        self.last_error = reason
        if self.online:
            self.online = False
            log.error("disk %s went offline: %s", self.endpoint, reason)

    def mark_online(self) -> None:
        self.online = True

    def local_path(self, rel: str) -> str | None:
        return None

    # -- calls ----------------------------------------------------------------------------
    def _offline(self, exc: PeerError) -> DiskOffline:
        err = DiskOffline(f"{self.endpoint}: {exc.message}")
        self.mark_offline(err.args[0])
        return err

    def _check_open(self) -> None:
        if self._closed:
            raise DiskOffline(f"{self.endpoint}: the disk is closed")

    async def _call(self, method: str, args: dict) -> Any:
        self._check_open()
        try:
            async with self._slots:
                return await self.client.call("disk", method, dict(args, disk=self.path))
        except PeerError as exc:
            raise self._offline(exc) from None
        except DiskOffline as exc:  # the peer's own disk is offline
            self.mark_offline(str(exc))
            raise

    async def _stream_in(self, method: str, args: dict, body: AsyncIterator[bytes]) -> Any:
        self._check_open()
        try:
            async with self._slots:
                return await self.client.call_stream_in("disk", method, dict(args, disk=self.path), body)
        except PeerError as exc:
            raise self._offline(exc) from None
        except DiskOffline as exc:
            self.mark_offline(str(exc))
            raise

    async def _stream_out(self, method: str, args: dict) -> AsyncIterator[list]:
        self._check_open()
        try:
            stream = await self.client.call_stream_out("disk", method, dict(args, disk=self.path))
        except PeerError as exc:
            raise self._offline(exc) from None
        except DiskOffline as exc:
            self.mark_offline(str(exc))
            raise
        buf = bytearray()
        try:
            async with stream:
                async for chunk in stream:
                    buf += chunk
                    while len(buf) >= 4:
                        n = int.from_bytes(buf[:4], "big")
                        if len(buf) < 4 + n:
                            break
                        batch = msgpack.unpackb(bytes(buf[4:4 + n]), raw=False)
                        del buf[:4 + n]
                        yield batch
        except PeerError as exc:
            raise self._offline(exc) from None
        except DiskOffline as exc:
            self.mark_offline(str(exc))
            raise

    # -- lifecycle ------------------------------------------------------------------------
    async def close(self) -> None:
        self._closed = True  # the peer client (shared by a node's disks) is closed by its owner

    async def info(self) -> DiskInfo:
        if not self.online:
            return DiskInfo(self.disk_id, self.endpoint, False, error=self.last_error or "offline")
        try:
            info = DiskInfo.from_wire(await self._call("info", {}))
        except DiskError as exc:
            return DiskInfo(self.disk_id, self.endpoint, False, error=str(exc))
        info.endpoint = self.endpoint
        info.healing = info.healing or self.healing
        return info

    # -- format ---------------------------------------------------------------------------
    async def read_format(self) -> bytes:
        return await self._call("read_format", {})

    async def write_format(self, data: bytes, *, create_root: bool, sync: bool) -> None:
        await self._call("write_format", {"data": data, "create_root": create_root, "sync": sync})

    # -- files ----------------------------------------------------------------------------
    async def create_file(self, path: str) -> RemoteShardWriter:
        self._check_open()
        _check_rel(path)  # refused here, as a local disk would, before any byte is streamed
        return RemoteShardWriter(self, path)

    async def write_file(self, path: str, data: bytes, *, sync: bool) -> None:
        await self._call("write_file", {"path": path, "data": data, "sync": sync})

    async def read_file(self, path: str, *, max_size: int = MAX_SMALL_FILE) -> bytes:
        return await self._call("read_file", {"path": path, "max_size": max_size})

    async def read_range(self, path: str, offset: int, length: int) -> bytes:
        return await self._call("read_range", {"path": path, "offset": offset, "length": length})

    async def rename_data(self, moves: list[tuple[str, str]], meta: tuple[str, bytes] | None, *,
                          sync: bool, cleanup: str | None = None) -> None:
        await self._call("rename_data", {"moves": [list(m) for m in moves],
                                         "meta": list(meta) if meta is not None else None,
                                         "sync": sync, "cleanup": cleanup})

    async def fsync_dir(self, path: str) -> None:
        await self._call("fsync_dir", {"path": path})

    async def delete(self, path: str, *, recursive: bool = False, prune: int = 0) -> None:
        await self._call("delete", {"path": path, "recursive": recursive, "prune": prune})

    async def list_dir(self, path: str) -> list[str]:
        return list(await self._call("list_dir", {"path": path}))

    async def exists(self, path: str) -> bool:
        return bool(await self._call("exists", {"path": path}))

    async def file_size(self, path: str) -> int:
        return int(await self._call("file_size", {"path": path}))

    async def stat(self, path: str) -> FileStat:
        return FileStat.from_wire(await self._call("stat", {"path": path}))

    async def walk_files(self, path: str, suffix: str) -> AsyncIterator[str]:
        # aclosing: a consumer that stops early closes the stream (and frees its connection) now
        async with aclosing(self._stream_out("walk_files", {"path": path, "suffix": suffix})) as batches:
            async for batch in batches:
                for p in batch:
                    yield p

    async def walk_entries(self, path: str, depth: int) -> AsyncIterator[FileStat]:
        async with aclosing(self._stream_out("walk_entries", {"path": path, "depth": depth})) as batches:
            async for batch in batches:
                for doc in batch:
                    yield FileStat.from_wire(doc)
