"""``DiskService``: this node's disks, served to its peers over peer RPC (service ``disk``).

The server half of ``RemoteDisk`` (MinIO's storage REST server): every ``Disk`` method is one
handler. A disk is named by its root path as written on the command line (the path part of
the endpoint URL); a path that is not one of this node's disks is refused without touching
the filesystem. Shard bodies stream in (``create_file``: the request body is written to the
local ``ShardWriter`` as it arrives, fsynced at the end, aborted if the stream breaks), a
GET's range of one shard streams out (``read_stream``: one call per shard per GET, not one
``read_range`` per span), or its ranges of all the shards on this node at once
(``read_streams``: one call per peer per GET), and walks stream out in batches. ``status`` answers the format and
usage of many disks at once (the disk monitor's probe, a metrics scrape). Errors keep their
type across the wire (``rpcerrors``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgpack

from buckets.cluster import rpcframe as wire
from buckets.cluster.rpcerrors import BadPeerRequest, error_to_wire
from buckets.cluster.rpcserver import BodyReader, PeerRpcServer
from buckets.errors import DiskError, DiskFull
from buckets.storage import records as rlog
from buckets.storage.disk import Disk, FileStat

WALK_BATCH = 256
MAX_STATUS_DISKS = 1024  # disks one ``status`` call may name
MAX_READ_RECORDS = 256  # records one ``read_records`` call may ask for
MIN_STREAM_CHUNK = 4096  # read_stream's chunk bounds: each chunk is one pread and one frame


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
            "status": self.status, "read_stream": self.read_stream, "read_streams": self.read_streams,
            "append_records": self.append_records, "append_batch": self.append_batch,
            "read_record": self.read_record, "read_records": self.read_records,
            "walk_records": self.walk_records, "list_segments": self.list_segments,
            "delete_segment": self.delete_segment, "release_records": self.release_records,
        }
        for name, fn in simple.items():
            rpc.register("disk", name, fn)
        rpc.register("disk", "create_file", self.create_file, stream_in=True)

    async def info(self, args: dict) -> list:
        return (await self._disk(args).info()).to_wire()

    async def read_format(self, args: dict) -> bytes:
        return await self._disk(args).read_format()

    async def status(self, args: dict) -> dict:
        """The format file and usage of every disk named in ``disks``, in one answer: what the
        disk monitor's probe (``read_format``) and a metrics scrape (``info``) ask each disk,
        for all of this node's disks at once. Per path: ``format`` (the file's bytes) or
        ``format_error`` (the typed error ``read_format`` raised, as a wire record), and
        ``info`` (``DiskInfo`` on the wire; a disk that cannot answer says so in it). Read
        fresh on every call: the caller decides how long an answer stays good."""
        paths = args.get("disks")
        if (not isinstance(paths, list) or len(paths) > MAX_STATUS_DISKS
                or not all(isinstance(p, str) for p in paths)):
            raise BadPeerRequest(f"disk/status takes a list of at most {MAX_STATUS_DISKS} disk paths")

        async def one(path: str) -> dict:
            disk = self.disks.get(path)
            if disk is None:
                return {"error": error_to_wire(NoSuchDisk(f"this node serves no disk {path!r}"))}
            record: dict[str, Any] = {}
            try:
                record["format"] = await disk.read_format()
            except DiskError as exc:
                record["format_error"] = error_to_wire(exc)
            else:
                if not disk.online:
                    # This handle latched offline on an error (a probe before the node
                    # formatted the disk, a disk that was away): it answers again, so it is
                    # online, as the peers' monitors see it. (The store's own handle is its
                    # disk monitor's to bring back, with a refill.)
                    disk.mark_online()
            record["info"] = (await disk.info()).to_wire()
            return record

        records = await asyncio.gather(*(one(p) for p in dict.fromkeys(paths)))
        return {"disks": dict(zip(dict.fromkeys(paths), records))}

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
        await self._disk(args).write_file(args["path"], args["data"], sync=bool(args["sync"]),
                                          new_data=args.get("new_data") is True)

    async def read_file(self, args: dict) -> bytes:
        return await self._disk(args).read_file(args["path"], max_size=int(args["max_size"]))

    async def read_range(self, args: dict) -> bytes:
        return await self._disk(args).read_range(args["path"], int(args["offset"]), int(args["length"]))

    async def read_stream(self, args: dict) -> AsyncIterator[bytes]:
        """``length`` bytes of ``path`` from ``offset`` as a byte stream, ``chunk`` bytes per
        disk read (and per frame): a GET's whole range of one shard in one call instead of
        one ``read_range`` call per span. Like ``read_range`` the answer is short when the
        file is; the first chunk is read before the answer starts (the server pulls it
        first), so a missing file is a plain typed error."""
        disk = self._disk(args)
        path, offset, length, chunk = args.get("path"), args.get("offset"), args.get("length"), args.get("chunk")
        if not (isinstance(path, str) and all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in (offset, length, chunk))):
            raise BadPeerRequest("disk/read_stream takes a path and integer offset, length and chunk")
        if offset < 0 or length < 0 or not MIN_STREAM_CHUNK <= chunk <= wire.MAX_FRAME:
            raise BadPeerRequest(f"disk/read_stream: offset {offset}, length {length} or chunk {chunk} "
                                 f"out of range (chunk {MIN_STREAM_CHUNK}..{wire.MAX_FRAME})")
        return _ranged(disk, path, offset, length, chunk)

    async def read_streams(self, args: dict) -> AsyncIterator[bytes]:
        """Several ranges (``reads``: ``[disk, path, offset, length]`` each) in one stream: a
        GET's ranges of all the shards this node holds, in one call instead of one per shard.
        Round by round, one chunk of each range still going (read from the disks at once),
        each chunk after a tag frame (``rpcframe.RANGE_TAG``: the range's index, what follows,
        its length). A range whose disk fails gets an error tag and its typed error record and
        ends; the others go on. A chunk shorter than asked means that file ends there."""
        reads, chunk = args.get("reads"), args.get("chunk")
        if not (isinstance(reads, list) and 0 < len(reads) <= wire.MAX_STREAM_RANGES
                and isinstance(chunk, int) and not isinstance(chunk, bool)
                and MIN_STREAM_CHUNK <= chunk <= wire.MAX_FRAME):
            raise BadPeerRequest(f"disk/read_streams takes 1..{wire.MAX_STREAM_RANGES} reads and a chunk of "
                                 f"{MIN_STREAM_CHUNK}..{wire.MAX_FRAME} bytes")
        ranges = []
        for item in reads:
            if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)
                    and isinstance(item[1], str)
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in item[2:])):
                raise BadPeerRequest("each disk/read_streams read is [disk, path, offset, length], offset and "
                                     "length integers >= 0")
            ranges.append((self._disk({"disk": item[0]}), item[1], item[2], item[2] + item[3]))
        return _interleaved(ranges, chunk)

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

    # -- the record log ------------------------------------------------------------------------
    async def append_records(self, args: dict) -> list[list[int]]:
        """One call carries every small write a peer has for this disk (many PUTs): one local
        group commit, one fsync."""
        records = args.get("records")
        if not isinstance(records, list) or not all(isinstance(r, bytes) for r in records):
            raise BadPeerRequest("disk/append_records takes a list of byte strings")
        return await self._disk(args).append_records(records, sync=bool(args.get("sync")),
                                                      data=args.get("data") is True)

    async def append_batch(self, args: dict) -> dict:
        """``append_records`` for many of this node's disks in one call (``disks``: path ->
        ``{"records": [...], "sync": bool}``): what a peer's small PUTs have for all of this
        node's disks. The disks append concurrently, each in one group commit. Per path:
        ``{"locs": [...]}`` or ``{"error": <wire record>}`` (one disk's failure is its own)."""
        wanted = args.get("disks")
        if (not isinstance(wanted, dict) or len(wanted) > MAX_STATUS_DISKS
                or not all(isinstance(p, str) and isinstance(d, dict) and isinstance(d.get("records"), list)
                           and all(isinstance(r, bytes) for r in d["records"]) for p, d in wanted.items())):
            raise BadPeerRequest(f"disk/append_batch takes a map of at most {MAX_STATUS_DISKS} disk paths "
                                 "to lists of byte strings")

        async def one(path: str, doc: dict) -> dict:
            disk = self.disks.get(path)
            try:
                if disk is None:
                    raise NoSuchDisk(f"this node serves no disk {path!r}")
                return await _append_split(disk, doc["records"], bool(doc.get("sync")), doc.get("data"))
            except DiskError as exc:
                return {"error": error_to_wire(exc)}

        results = await asyncio.gather(*(one(p, d) for p, d in wanted.items()))
        return {"disks": dict(zip(wanted, results))}

    async def read_records(self, args: dict) -> dict:
        """``read_record`` of many records on many of this node's disks in one call
        (``disks``: path -> list of locations), read concurrently. Per path, in order: per
        location ``{"data": bytes}`` or ``{"error": <wire record>}``."""
        wanted = args.get("disks")
        if (not isinstance(wanted, dict) or len(wanted) > MAX_STATUS_DISKS
                or sum(len(v) for v in wanted.values() if isinstance(v, list)) > MAX_READ_RECORDS
                or not all(isinstance(p, str) and isinstance(v, list) for p, v in wanted.items())):
            raise BadPeerRequest(f"disk/read_records takes a map of disk paths to lists of locations, "
                                 f"at most {MAX_READ_RECORDS} in all")

        async def one(path: str, location: Any) -> dict:
            disk = self.disks.get(path)
            try:
                if disk is None:
                    raise NoSuchDisk(f"this node serves no disk {path!r}")
                return {"data": await disk.read_record(location)}
            except DiskError as exc:
                return {"error": error_to_wire(exc)}

        flat = [(p, loc) for p, locs in wanted.items() for loc in locs]
        results = await asyncio.gather(*(one(p, loc) for p, loc in flat))
        out: dict[str, list] = {p: [] for p in wanted}
        for (p, _), result in zip(flat, results):
            out[p].append(result)
        return {"disks": out}

    async def read_record(self, args: dict) -> bytes:
        return await self._disk(args).read_record(args.get("location"))

    async def walk_records(self, args: dict) -> AsyncIterator[bytes]:
        disk = self._disk(args)
        segment = args.get("segment")
        if segment is not None and (not isinstance(segment, int) or isinstance(segment, bool)):
            raise BadPeerRequest("disk/walk_records takes an integer segment or none")
        return _batched(disk.walk_records(segment), lambda item: [item[0], item[1]])

    async def list_segments(self, args: dict) -> list[list[int]]:
        return await self._disk(args).list_segments()

    async def release_records(self, args: dict) -> int:
        wid, locations = args.get("wid"), args.get("locations")
        if not isinstance(wid, str) or not wid or not isinstance(locations, list) or len(locations) > 256:
            raise BadPeerRequest("disk/release_records takes a write id and at most 256 record locations")
        try:
            checked = [list(rlog.check_location(loc)) for loc in locations]
        except DiskError as exc:
            raise BadPeerRequest(f"disk/release_records: {exc}") from None
        return await self._disk(args).release_records(wid, checked)

    async def delete_segment(self, args: dict) -> None:
        segment = args.get("segment")
        if not isinstance(segment, int) or isinstance(segment, bool):
            raise BadPeerRequest("disk/delete_segment takes an integer segment")
        await self._disk(args).delete_segment(segment)


class _Range:
    """One range a stream serves: read through one descriptor where the disk has one
    (``LocalDisk.open_range``: a file an overwrite through another node removes meanwhile
    stays readable to the end of the GET), else chunk by chunk with ``read_range``."""

    def __init__(self, disk: Disk, path: str, offset: int, length: int) -> None:
        self.disk, self.path = disk, path
        opener = getattr(disk, "open_range", None)
        self.reader = opener(path, offset, length) if opener is not None else None

    async def read(self, offset: int, length: int) -> bytes:
        if self.reader is not None and (data := await self.reader.read(offset, length)) is not None:
            return data
        return await self.disk.read_range(self.path, offset, length)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


async def _ranged(disk: Disk, path: str, offset: int, length: int, chunk: int) -> AsyncIterator[bytes]:
    end = offset + length
    source = _Range(disk, path, offset, length)
    try:
        while offset < end:
            want = min(chunk, end - offset)
            data = await source.read(offset, want)
            if data:
                yield data
            if len(data) < want:  # the file ends here
                return
            offset += want
    finally:
        source.close()


async def _interleaved(ranges: list[tuple[Disk, str, int, int]], chunk: int) -> AsyncIterator[bytes]:
    """``read_streams``' frames: per round, each open range's next chunk (read at once from
    their disks) behind its tag. Memory: one chunk per range."""
    pos = [start for _, _, start, _ in ranges]
    going = [i for i, (_, _, start, end) in enumerate(ranges) if start < end]
    sources = [_Range(disk, path, start, end - start) for disk, path, start, end in ranges]

    async def read(i: int) -> bytes:
        return await sources[i].read(pos[i], min(chunk, ranges[i][3] - pos[i]))

    try:
        while going:  # an empty range gets no frame: the caller knows it is complete
            results = await asyncio.gather(*(read(i) for i in going), return_exceptions=True)
            later = []
            for i, data in zip(going, results):
                if isinstance(data, DiskError):
                    record = wire.pack(error_to_wire(data))
                    yield wire.range_tag(i, wire.RANGE_ERROR, len(record))
                    yield record
                    continue
                if isinstance(data, BaseException):
                    raise data
                want = min(chunk, ranges[i][3] - pos[i])
                yield wire.range_tag(i, wire.RANGE_DATA, len(data))
                if data:
                    yield data
                pos[i] += len(data)
                if len(data) == want and pos[i] < ranges[i][3]:
                    later.append(i)
            going = later
    finally:
        for source in sources:
            source.close()


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


async def _append_split(disk: Disk, records: list[bytes], sync: bool, data: Any) -> dict:
    """One disk's share of ``disk/append_batch``: ``{"locs": [...]}``, in order. ``data`` (the
    indexes of the records that are new data) go in only above the disk's free-space reserve;
    refused, their locations are None and ``"refused"`` says why, while the others (deletions)
    are appended all the same. Both kinds join the disk's one group commit."""
    if not data:
        return {"locs": await disk.append_records(records, sync=sync)}
    if (not isinstance(data, list) or not all(type(i) is int and 0 <= i < len(records) for i in data)
            or len(set(data)) != len(data)):
        raise BadPeerRequest("disk/append_batch: data names the indexes of the records that are new data")
    marked = set(data)
    plain = [r for i, r in enumerate(records) if i not in marked]
    new = [records[i] for i in sorted(marked)]

    async def put_new() -> tuple[list | None, DiskFull | None]:
        try:
            return await disk.append_records(new, sync=sync, data=True), None
        except DiskFull as exc:
            return None, exc

    plain_locs, (new_locs, refused) = await asyncio.gather(
        disk.append_records(plain, sync=sync) if plain else asyncio.sleep(0, []), put_new())
    plain_at, new_at = iter(plain_locs), iter(new_locs if new_locs is not None else [None] * len(new))
    answer: dict = {"locs": [next(new_at) if i in marked else next(plain_at) for i in range(len(records))]}
    if refused is not None:
        answer["refused"] = error_to_wire(refused)
    return answer
