"""``DiskService``: this node's disks, served to its peers over peer RPC (service ``disk``).

The server half of ``RemoteDisk`` (MinIO's storage REST server): every ``Disk`` method is one
handler. A disk is named by its root path as written on the command line (the path part of
the endpoint URL); a path that is not one of this node's disks is refused without touching
the filesystem. Shard bodies stream in (``create_file``: the request body is written to the
local ``ShardWriter`` as it arrives, fsynced at the end, aborted if the stream breaks) and
walks stream out in batches. Errors keep their type across the wire (``rpcerrors``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgpack

from buckets.cluster.rpcserver import BodyReader, PeerRpcServer
from buckets.errors import DiskError
from buckets.storage.disk import Disk, FileStat

WALK_BATCH = 256


class NoSuchDisk(DiskError):
    code = "NoSuchDisk"


class DiskService:
    def __init__(self, disks: Mapping[str, Disk]) -> None:
        self.disks = dict(disks)

    def _disk(self, args: dict) -> Disk:
        path = args.get("disk")
        disk = self.disks.get(path) if isinstance(path, str) else None
        if disk is None:
            raise NoSuchDisk(f"this node serves no disk {path!r}")
        return disk

    def register(self, rpc: PeerRpcServer) -> None:
        simple = {
            "info": self.info, "read_format": self.read_format, "write_format": self.write_format,
            "write_file": self.write_file, "read_file": self.read_file, "read_range": self.read_range,
            "rename_data": self.rename_data, "fsync_dir": self.fsync_dir, "delete": self.delete,
            "list_dir": self.list_dir, "exists": self.exists, "file_size": self.file_size,
            "stat": self.stat, "walk_files": self.walk_files, "walk_entries": self.walk_entries,
        }
        for name, fn in simple.items():
            rpc.register("disk", name, fn)
        rpc.register("disk", "create_file", self.create_file, stream_in=True)

    async def info(self, args: dict) -> list:
        return (await self._disk(args).info()).to_wire()

    async def read_format(self, args: dict) -> bytes:
        return await self._disk(args).read_format()

    async def write_format(self, args: dict) -> None:
        await self._disk(args).write_format(args["data"], create_root=bool(args["create_root"]),
                                            sync=bool(args["sync"]))

    async def create_file(self, args: dict, body: BodyReader) -> dict:
        writer = await self._disk(args).create_file(args["path"])
        written = 0
        try:
            async for chunk in body:
                await writer.write(chunk)
                written += len(chunk)
            await writer.close(bool(args["sync"]))
        except BaseException:
            await writer.abort()
            raise
        return {"written": written}

    async def write_file(self, args: dict) -> None:
        await self._disk(args).write_file(args["path"], args["data"], sync=bool(args["sync"]))

    async def read_file(self, args: dict) -> bytes:
        return await self._disk(args).read_file(args["path"], max_size=int(args["max_size"]))

    async def read_range(self, args: dict) -> bytes:
        return await self._disk(args).read_range(args["path"], int(args["offset"]), int(args["length"]))

    async def rename_data(self, args: dict) -> None:
        meta = args.get("meta")
        await self._disk(args).rename_data([(s, d) for s, d in args["moves"]],
                                           (meta[0], meta[1]) if meta is not None else None,
                                           sync=bool(args["sync"]), cleanup=args.get("cleanup"))

    async def fsync_dir(self, args: dict) -> None:
        await self._disk(args).fsync_dir(args["path"])

    async def delete(self, args: dict) -> None:
        await self._disk(args).delete(args["path"], recursive=bool(args.get("recursive")),
                                      prune=int(args.get("prune", 0)))

    async def list_dir(self, args: dict) -> list[str]:
        return await self._disk(args).list_dir(args["path"])

    async def exists(self, args: dict) -> bool:
        return await self._disk(args).exists(args["path"])

    async def file_size(self, args: dict) -> int:
        return await self._disk(args).file_size(args["path"])

    async def stat(self, args: dict) -> list:
        return (await self._disk(args).stat(args["path"])).to_wire()

    async def walk_files(self, args: dict) -> AsyncIterator[bytes]:
        disk = self._disk(args)
        return _batched(disk.walk_files(args["path"], args["suffix"]), lambda p: p)

    async def walk_entries(self, args: dict) -> AsyncIterator[bytes]:
        disk = self._disk(args)
        return _batched(disk.walk_entries(args["path"], int(args["depth"])), FileStat.to_wire)


async def _batched(items: AsyncIterator[Any], encode) -> AsyncIterator[bytes]:
    """Each batch one msgpack array, length-prefixed, so the receiver splits the byte stream."""
    batch: list[Any] = []
    async for item in items:
        batch.append(encode(item))
        if len(batch) >= WALK_BATCH:
            yield _record(batch)
            batch = []
    if batch:
        yield _record(batch)


def _record(batch: list[Any]) -> bytes:
    body = msgpack.packb(batch, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body
