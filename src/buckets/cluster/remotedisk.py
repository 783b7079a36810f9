"""``RemoteDisk``: a peer's disk, through the same ``Disk`` protocol, over peer RPC.

MinIO's storage REST client is the model: one call per protocol method, shard data streamed
(``create_file`` opens one streamed request that every ``ShardWriter.write`` feeds through a
bounded queue; ``close`` ends it and waits for the peer's fsync), and typed errors back
(a missing file on the peer raises ``FileNotFound`` here). A peer that does not answer
(offline, refused, timed out) is ``DiskOffline``: the disk marks itself offline and the engine
counts it as missing (reads decode around it, writes need their quorum without it); the
engine's disk monitor probes it (``read_format``) and brings it back.

The monitor's probe (every disk's ``read_format``, every few seconds) and a ``/metrics``
scrape (every disk's ``info``) ask all disks at once; :class:`PeerDisks` answers both for all
of one peer's disks with a single ``disk/status`` call, so they cost one call per peer, not
one per disk.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import posixpath
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgpack

from buckets.runtime import cancel_and_wait
from buckets.cluster import rpcframe as wire
from buckets.cluster.rpcclient import PeerClient, PeerState, PeerStream
from buckets.cluster.rpcerrors import PeerError, PeerProtocolError, UnknownPeerMethod, error_from_wire
from buckets.errors import DiskError, DiskFull, DiskOffline, DiskSlow, PathEscape
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
# Shard read streams (``open_range``) open at once to one peer, from this process. They have
# their own connections (``shared_session(bulk=True)``) and live as long as a GET takes; past
# this many, reads go span by span (``read_range``) instead of waiting for one to end.
READ_STREAMS_PER_PEER = 64
MIN_STREAM_CHUNK = 4096  # the server's bounds for read_stream's chunk
_QUEUE_DEPTH = 4  # chunks in flight per streamed shard: backpressure, bounded memory
MAX_APPEND_BATCH = 256  # appends (each one PUT's record) one append_records call carries at most
MAX_APPEND_BYTES = 2 << 20  # and bytes: well under the peer's limit on one control message
MAX_READ_BATCH = 64  # record reads one disk/read_records call carries at most
_END = object()


def _consume_failure(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


# How long one ``disk/status`` answer serves a peer's disks' ``read_format`` and ``info``: well
# under the disk monitor's interval (5 s), so every probe round sees the peer as it is now,
# while a scrape and a probe round that come together (or a burst of scrapes) share one call.
STATUS_TTL = 1.0


def _fail_waiters(waiters: list[tuple["RemoteDisk", asyncio.Future]], exc: BaseException) -> None:
    """Every waiter of a batched call that failed gets the error: its disk offline when the
    peer did not answer."""
    for disk, fut in waiters:
        if not fut.done():
            if isinstance(exc, PeerError):
                fut.set_exception(disk._offline(exc))
            else:
                fut.set_exception(exc if isinstance(exc, Exception) else DiskOffline("cancelled"))


def _disk_failure(disk: "RemoteDisk", record: object) -> DiskError:
    """A disk's typed error from inside a batched answer (its disk marked offline if it is)."""
    error = disk._wire_error(record)
    if isinstance(error, DiskOffline):
        disk.mark_offline(str(error))
    return error


class PeerDisks:
    """The format and usage of all of one peer's disks (those this node has a ``RemoteDisk``
    for), fetched together with one ``disk/status`` call.

    Callers that ask while a call is in flight share it; its answer serves for
    :data:`STATUS_TTL` seconds, and only while the peer is online and to a disk that has
    not failed since the call was sent (so a disk that went offline is probed afresh). A
    failed call is not kept: every waiter gets its error. A peer that does not know the
    method (an older version) is asked disk by disk from then on.
    """

    def __init__(self, client: PeerClient) -> None:
        self.client = client
        self.paths: dict[str, None] = {}  # insertion-ordered set
        self.batched = True
        self.calls = 0  # disk/status calls made (for tests and debugging)
        self.read_streams = 0  # open RemoteRangeReaders to this peer (at most READ_STREAMS_PER_PEER)
        self.has_read_stream = True  # False once the peer answered UnknownPeerMethod (an older version)
        self.has_read_streams = True  # the same, for disk/read_streams (several ranges in one call)
        self._answer: dict[str, Any] | None = None
        self._sent_at = float("-inf")  # time.monotonic() when the kept answer's call was sent
        self._fetch: asyncio.Task | None = None
        self._fetch_sent_at = float("-inf")
        # Appends to any of this peer's disks (small PUTs' records): one disk/append_batch call
        # carries all that wait, for every disk (see ``append``).
        self.has_append_batch = True  # False once the peer answered UnknownPeerMethod
        self.has_release = True  # disk/release_records: False once the peer answered UnknownPeerMethod
        self.append_calls = 0  # disk/append_batch calls made (for tests and debugging)
        self._appends: list[tuple["RemoteDisk", list[bytes], bool, asyncio.Future]] = []
        self._append_task: asyncio.Future | None = None
        # Record reads (a small GET reads k records, several on each peer): the reads asked in
        # one turn of the event loop go in one disk/read_records call (see ``read_record``).
        self.has_read_batch = True
        self.read_calls = 0
        self._reads: list[tuple["RemoteDisk", list[int], asyncio.Future]] = []
        self._read_scheduled = False

    def invalidate(self) -> None:
        """Forget the kept answer (after this node wrote a format file)."""
        self._answer = None

    async def record(self, path: str, *, not_before: float) -> dict[str, Any] | None:
        """The peer's record of disk ``path``, from a call sent after ``not_before``
        (``time.monotonic()``); None when the disk must be asked directly. Raises the call's
        ``PeerError`` (or ``PeerProtocolError``)."""
        if not self.batched:
            return None
        self.paths.setdefault(path, None)
        now = time.monotonic()
        answer = self._answer
        if (answer is not None and path in answer and self._sent_at > not_before
                and now - self._sent_at < STATUS_TTL and self.client.state is PeerState.ONLINE):
            return answer[path]
        if self._fetch is None or self._fetch.done() or self._fetch_sent_at <= not_before:
            self._fetch_sent_at = now
            self._fetch = asyncio.ensure_future(self._call(now))
            self._fetch.add_done_callback(_consume_failure)
        answer = await asyncio.shield(self._fetch)
        return answer.get(path) if self.batched else None

    async def append(self, disk: "RemoteDisk", records: list[bytes], sync: bool,
                     data: bool = False) -> list[list[int]] | None:
        """Append ``records`` to ``disk`` of this peer together with every other append waiting
        for any of its disks: while one ``disk/append_batch`` call is in flight the next ones
        queue, and the next call carries all of them (a small PUT writes a record on each of
        a peer's disks: one call per peer, not one per disk). None when the peer does not know
        the method (an older version): the caller asks the disk directly. ``data``: new data,
        which the peer's disk refuses below its free-space reserve (``LocalDisk._room_for``);
        the call names those records (``"data"``: their indexes), so a deletion sharing the
        call with a refused PUT still goes in."""
        if not self.has_append_batch:
            return None
        fut = asyncio.get_running_loop().create_future()
        self._appends.append((disk, records, sync, fut, data))
        if self._append_task is None or self._append_task.done():
            self._append_task = asyncio.ensure_future(self._send_appends())
        return await fut

    async def _send_appends(self) -> None:
        while self._appends:
            take, size = 0, 0
            for _, recs, _, _, _ in self._appends[:MAX_APPEND_BATCH]:
                size += sum(len(r) for r in recs)
                if take and size > MAX_APPEND_BYTES:
                    break
                take += 1
            batch, self._appends = self._appends[:take], self._appends[take:]
            per_disk: dict[str, dict[str, Any]] = {}
            for disk, recs, sync, _, data in batch:
                doc = per_disk.setdefault(disk.path, {"records": [], "sync": False})
                if data:
                    doc.setdefault("data", []).extend(range(len(doc["records"]), len(doc["records"]) + len(recs)))
                doc["records"].extend(recs)
                doc["sync"] = doc["sync"] or sync
            try:
                self.append_calls += 1
                results = await self._batch_call("append_batch", per_disk)
            except BaseException as exc:  # every caller of the batch gets the error
                _fail_waiters([(disk, fut) for disk, _, _, fut, _ in batch], exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            if results is None:
                self.has_append_batch = False
                for _, _, _, fut, _ in batch + self._appends:
                    if not fut.done():
                        fut.set_result(None)
                self._appends = []
                return
            taken: dict[str, int] = {}
            for disk, recs, _, fut, _ in batch:
                if fut.done():
                    continue
                record = results.get(disk.path)
                locs = record.get("locs") if isinstance(record, dict) else None
                if isinstance(record, dict) and "error" in record:
                    fut.set_exception(_disk_failure(disk, record["error"]))
                    continue
                at = taken.get(disk.path, 0)
                if not isinstance(locs, list) or len(locs) < at + len(recs):
                    fut.set_exception(PeerProtocolError(
                        f"disk/append_batch answered {len(locs) if isinstance(locs, list) else locs!r} "
                        f"locations for {disk.path}", endpoint=self.client.endpoint))
                    continue
                mine = locs[at:at + len(recs)]
                taken[disk.path] = at + len(recs)
                if any(loc is None for loc in mine):  # refused for want of space (its data records only)
                    fut.set_exception(_disk_failure(disk, record.get("refused")) if record.get("refused")
                                      else DiskFull(f"{disk.endpoint}: no room for new data"))
                    continue
                fut.set_result([list(loc) for loc in mine])

    async def read_record(self, disk: "RemoteDisk", location: list[int]) -> bytes | None:
        """One record of ``disk``, read in one ``disk/read_records`` call with every other record
        read of this peer's disks asked in the same turn of the event loop (the k slots of a
        small GET are asked together: one call per peer, not one per slot). None when the peer
        does not know the method: the caller asks the disk directly."""
        if not self.has_read_batch:
            return None
        fut = asyncio.get_running_loop().create_future()
        self._reads.append((disk, location, fut))
        if not self._read_scheduled:
            self._read_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_reads)
        return await fut

    def _start_reads(self) -> None:
        self._read_scheduled = False
        while self._reads:
            batch, self._reads = self._reads[:MAX_READ_BATCH], self._reads[MAX_READ_BATCH:]
            task = asyncio.ensure_future(self._send_reads(batch))
            task.add_done_callback(_consume_failure)

    async def _send_reads(self, batch: list[tuple["RemoteDisk", list[int], asyncio.Future]]) -> None:
        per_disk: dict[str, list[list[int]]] = {}
        for disk, loc, _ in batch:
            per_disk.setdefault(disk.path, []).append(list(loc))
        try:
            self.read_calls += 1
            results = await self._batch_call("read_records", per_disk)
        except BaseException as exc:
            _fail_waiters([(disk, fut) for disk, _, fut in batch], exc)
            if not isinstance(exc, Exception):
                raise
            return
        if results is None:
            self.has_read_batch = False
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            return
        taken: dict[str, int] = {}
        for disk, _, fut in batch:
            at = taken.get(disk.path, 0)
            taken[disk.path] = at + 1
            if fut.done():
                continue
            items = results.get(disk.path)
            item = items[at] if isinstance(items, list) and at < len(items) else None
            if isinstance(item, dict) and isinstance(item.get("data"), bytes):
                fut.set_result(item["data"])
            elif isinstance(item, dict) and "error" in item:
                fut.set_exception(_disk_failure(disk, item["error"]))
            else:
                fut.set_exception(PeerProtocolError(f"disk/read_records answered no record for {disk.path}",
                                                    endpoint=self.client.endpoint))

    async def _batch_call(self, method: str, per_disk: dict) -> dict | None:
        """``disk/<method>`` with ``{"disks": per_disk}``: the answer's per-disk map, or None
        when the peer does not know the method (an older version)."""
        try:
            answer = await self.client.call("disk", method, {"disks": per_disk})
        except UnknownPeerMethod:
            log.info("peer %s has no disk/%s (an older version): asking disk by disk", self.client.endpoint, method)
            return None
        results = answer.get("disks") if isinstance(answer, dict) else None
        if not isinstance(results, dict):
            raise PeerProtocolError(f"peer {self.client.endpoint} answered disk/{method} without disk records",
                                    endpoint=self.client.endpoint)
        return results

    async def _call(self, sent_at: float) -> dict[str, Any]:
        self.calls += 1
        try:
            result = await self.client.call("disk", "status", {"disks": list(self.paths)})
        except UnknownPeerMethod:
            log.info("peer %s has no disk/status (an older version): asking its disks one by one",
                     self.client.endpoint)
            self.batched = False
            return {}
        disks = result.get("disks") if isinstance(result, dict) else None
        if not isinstance(disks, dict) or not all(isinstance(r, dict) for r in disks.values()):
            raise PeerProtocolError(f"peer {self.client.endpoint} answered disk/status without disk records",
                                    endpoint=self.client.endpoint)
        if sent_at >= self._sent_at:
            self._answer, self._sent_at = disks, sent_at
        return disks


_PEER_DISKS: weakref.WeakKeyDictionary[PeerClient, PeerDisks] = weakref.WeakKeyDictionary()


def peer_disks(client: PeerClient) -> PeerDisks:
    """The one :class:`PeerDisks` of ``client``'s peer, shared by all its ``RemoteDisk``s."""
    group = _PEER_DISKS.get(client)
    if group is None:
        group = _PEER_DISKS[client] = PeerDisks(client)
    return group


class _ReadsInTurn(abc.ABC):
    """``read(offset, length)`` calls served one after another: a read that comes while another
    is in flight (a GET with its next span on its way) waits for it, then goes on if it starts
    where that one ended. Subclasses give ``_read`` and say when waiting is over anyway."""

    _busy = False
    _moved: asyncio.Event | None = None

    def _stop_waiting(self) -> bool:
        return False

    async def read(self, offset: int, length: int) -> bytes | None:
        """``length`` bytes at ``offset`` (fewer at the end of the file), or None for a range
        this reader cannot serve (the caller reads it with ``read_range``)."""
        while self._busy and not self._stop_waiting():
            if self._moved is None:
                self._moved = asyncio.Event()
            await self._moved.wait()
        self._busy = True
        try:
            return await self._read(offset, length)
        finally:
            self._busy = False
            self._wake()

    @abc.abstractmethod
    async def _read(self, offset: int, length: int) -> bytes | None:
        """The read itself, once it is this one's turn."""

    def _wake(self) -> None:
        moved, self._moved = self._moved, None
        if moved is not None:
            moved.set()


class RemoteRangeReader(_ReadsInTurn):
    """Consecutive reads of one byte range of a peer's file over one streamed call
    (``disk/read_stream``), opened at the first read: what a GET reads of one shard, span
    after span, in one call instead of one ``read_range`` call per span.

    ``read(offset, length)`` must continue where the previous read ended; any other read
    returns None (the caller reads that range with ``read_range``), as does every read once
    the peer turned out not to know the method. Memory: aiohttp's read buffer and one
    frame (``chunk`` bytes) per stream, whatever the range's size. A stream that fails
    raises the disk error (``DiskOffline`` when the peer stopped answering) on that read and
    every later one. ``close`` ends the call (its connection is not reused unless the stream
    was read to its end).
    """

    def __init__(self, disk: "RemoteDisk", path: str, offset: int, length: int, chunk: int) -> None:
        self.disk = disk
        self.path = path
        self._pos, self._end = offset, offset + length
        self._args = {"path": path, "offset": offset, "length": length, "chunk": chunk}
        self._stream: PeerStream | None = None
        self._buf = b""
        self._ended = False  # the peer sent the end of the stream
        self._failed = ""
        self._held = True  # counts against READ_STREAMS_PER_PEER until closed

    def _stop_waiting(self) -> bool:
        return not self._held or bool(self._failed)

    async def _read(self, offset: int, length: int) -> bytes | None:
        if self._failed:
            raise DiskError(f"{self.disk.endpoint}: {self.path}: the read stream failed earlier ({self._failed})")
        if offset != self._pos or offset + length > self._end or not self._held:
            return None
        try:
            if self._stream is None and not self._ended:
                self._stream = await self.disk._open_stream("read_stream", self._args)
            pieces: list[bytes] = []
            need = length
            while need > 0:
                if not self._buf:
                    if not await self._next():
                        break  # the file is shorter than the range: a short read, as read_range's
                take, self._buf = (self._buf, b"") if len(self._buf) <= need else (self._buf[:need], self._buf[need:])
                pieces.append(take)
                need -= len(take)
            self._pos += length - need
            if self._pos >= self._end and not self._ended and await self._next():
                raise DiskError(f"{self.disk.endpoint}: {self.path}: the peer streamed more than the range")
        except UnknownPeerMethod:  # a peer of an older version: read span by span
            self.disk._peer_disks.has_read_stream = False
            self.close()
            return None
        except DiskError as exc:
            self._failed = str(exc) or type(exc).__name__
            self.close()
            raise
        except BaseException:  # cancelled (the GET ended), or a bug: never leave the call half-read
            self._failed = "the read was interrupted"
            self.close()
            raise
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def _next(self) -> bool:
        """The next chunk into ``_buf``; False at the end of the stream."""
        assert self._stream is not None
        try:
            self._buf = await self._stream.__anext__()
            return True
        except StopAsyncIteration:
            self._ended = True
            self._release()
            return False
        except PeerError as exc:
            raise self.disk._offline(exc) from None
        except DiskOffline as exc:  # the peer's own disk went offline
            self.disk.mark_offline(str(exc))
            raise

    def _release(self) -> None:
        if self._held:
            self._held = False
            self.disk._peer_disks.read_streams -= 1

    def close(self) -> None:
        self._release()
        self._buf = b""
        self._wake()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


def open_ranges(disks: list["RemoteDisk"], path: str, offset: int, length: int, *, chunk: int
                ) -> list["GroupedRangeReader"] | None:
    """One reader per disk for the same range of ``path`` on each of ``disks`` (all of one
    peer), all over one streamed call (``disk/read_streams``): a GET's shards on one peer in one
    call instead of one per shard. None when the peer cannot take another stream, does not know
    the method (an older version), or one of the disks is offline: open them one by one then;
    and for an empty range (nothing to stream)."""
    group = disks[0]._peer_disks if disks and length > 0 else None
    if (group is None or not group.has_read_streams or group.read_streams >= READ_STREAMS_PER_PEER
            or len(disks) > wire.MAX_STREAM_RANGES
            or any(d._peer_disks is not group or d._closed or not d.online for d in disks)):
        return None
    _check_rel(path)
    group.read_streams += 1
    return RangeGroup(disks, path, offset, length, max(MIN_STREAM_CHUNK, min(chunk, wire.MAX_FRAME))).readers


class RangeGroup:
    """The ``disk/read_streams`` call behind a set of :class:`GroupedRangeReader`, opened at
    the first read of any of them. Whichever reader needs bytes takes the stream's next
    range chunk (one at a time, under a lock) into the buffer of the reader it belongs to.
    The peer sends a chunk of each range in turn and a GET reads all its shards span by span,
    so a buffer holds about a chunk: memory is bounded by the chunk times the readers."""

    def __init__(self, disks: list["RemoteDisk"], path: str, offset: int, length: int, chunk: int) -> None:
        self.chunk = chunk
        self.readers = [GroupedRangeReader(self, i, d, path, offset, length) for i, d in enumerate(disks)]
        self._args = {"reads": [[d.path, path, offset, length] for d in disks], "chunk": chunk}
        self._peer = disks[0]._peer_disks
        self._stream: PeerStream | None = None
        self._lock = asyncio.Lock()
        self._held = True  # counts against READ_STREAMS_PER_PEER until every reader is done
        self._done = False  # the stream ended, failed, or was closed

    async def pump(self, reader: "GroupedRangeReader", want: int) -> None:
        """Take stream chunks until ``reader`` holds ``want`` bytes or will get no more."""
        async with self._lock:
            while not self._done and not reader._ended and reader._buffered < want:
                await self._next()
            if not self._done and all(r._ended for r in self.readers):
                await self._next()  # every range has all it asked for: take the end, free the connection

    async def _next(self) -> None:
        first = self.readers[0].disk
        try:
            if self._stream is None:
                self._stream = await first._open_stream("read_streams", self._args)
            tag = await self._take(wire.RANGE_TAG.size)
            if tag is None:  # the end: every range has all the peer had
                self._finish(None)
                return
            index, kind, length = wire.RANGE_TAG.unpack(tag)
            if index >= len(self.readers) or kind not in (wire.RANGE_DATA, wire.RANGE_ERROR) \
                    or length > (wire.MAX_FRAME if kind == wire.RANGE_DATA else wire.MAX_ERROR_FRAME):
                raise PeerProtocolError(f"bad range tag {tag!r} in a read_streams answer", endpoint=first.endpoint)
            payload = await self._take(length) if length else b""
            if payload is None:
                raise PeerProtocolError("a read_streams answer ended inside a chunk", endpoint=first.endpoint)
            reader = self.readers[index]
            if reader._ended:
                raise PeerProtocolError(f"the peer streamed more than range {index} asked for",
                                        endpoint=first.endpoint)
            if kind == wire.RANGE_DATA:
                reader._arrive(payload)
            else:
                try:
                    error = error_from_wire(wire.unpack(payload))
                except ValueError as exc:
                    raise PeerProtocolError(f"unreadable error record in a read_streams answer: {exc}",
                                            endpoint=first.endpoint) from None
                if isinstance(error, DiskOffline):  # the peer's own disk went offline
                    reader.disk.mark_offline(str(error))
                reader._fail(error if isinstance(error, DiskError) else DiskError(str(error)))
        except UnknownPeerMethod:  # a peer of an older version: the caller reads another way
            self._peer.has_read_streams = False
            self._finish(None, unsupported=True)
        except PeerError as exc:  # the peer stopped answering: each of its disks is offline
            self._finish(exc)
        except DiskError as exc:  # a typed error for the whole call (a disk it does not serve)
            self._finish(exc)
        except BaseException:  # cancelled (the GET ended), or a bug: never leave the call half-read
            self._finish(DiskError(f"{first.endpoint}: the read stream was interrupted"))
            raise

    async def _take(self, n: int) -> bytes | None:
        """The next ``n`` bytes of the stream's data frames (None at its end). A range's chunk is
        one frame (the peer's chunk is at most a frame), so this joins nothing in practice."""
        assert self._stream is not None
        pieces: list[bytes] = []
        got = 0
        while got < n:
            try:
                frame = await self._stream.__anext__()
            except StopAsyncIteration:
                if got:
                    raise PeerProtocolError("a read_streams answer ended inside a frame",
                                            endpoint=self.readers[0].disk.endpoint) from None
                return None
            pieces.append(frame)
            got += len(frame)
        if got != n:
            raise PeerProtocolError("a read_streams frame ran past its tag's length",
                                    endpoint=self.readers[0].disk.endpoint)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _finish(self, failure: BaseException | None, *, unsupported: bool = False) -> None:
        """The stream is over: readers keep what they hold; those still expecting bytes get
        ``failure`` (None: they end short, as the file did), or fall back when ``unsupported``."""
        self._done = True
        for reader in self.readers:
            if reader._ended:
                continue
            if unsupported:
                reader._unsupported = True
                reader._ended = True
            elif isinstance(failure, PeerError):
                reader._fail(reader.disk._offline(failure))
            elif failure is not None:
                if isinstance(failure, DiskOffline):  # the call could not be made: the peer is away
                    reader.disk.mark_offline(str(failure))
                reader._fail(failure if isinstance(failure, DiskError) else DiskError(str(failure)))
            else:
                reader._ended = True
        self._release()

    def reader_closed(self) -> None:
        if all(r._closed for r in self.readers):
            self._done = True
            self._release()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._peer.read_streams -= 1
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class GroupedRangeReader(_ReadsInTurn):
    """One range of a :class:`RangeGroup`, read like a :class:`RemoteRangeReader`: consecutive
    ``read(offset, length)`` calls from where the last one ended; anything else returns None
    (the caller reads that range with ``read_range``). A range whose disk failed on the peer
    raises that typed error on this read and every later one; the group's other ranges go on."""

    def __init__(self, group: RangeGroup, index: int, disk: "RemoteDisk", path: str, offset: int, length: int) -> None:
        self.group, self.index = group, index
        self.disk, self.path = disk, path
        self._pos, self._end = offset, offset + length
        self._arrived = offset  # the stream has sent this range up to here
        self._buf: list[bytes] = []
        self._buffered = 0
        self._ended = offset >= self._end  # no more bytes will arrive
        self._error: DiskError | None = None
        self._unsupported = False
        self._closed = False

    def _stop_waiting(self) -> bool:
        return self._closed

    async def _read(self, offset: int, length: int) -> bytes | None:
        if self._error is not None:
            raise self._error
        if self._closed or self._unsupported or offset != self._pos or offset + length > self._end:
            return None
        if self._buffered < length and not self._ended:
            await self.group.pump(self, length)
            if self._error is not None:
                raise self._error
            if self._unsupported or self._closed:
                return None
        take = min(length, self._buffered)  # fewer only where the file ended: a short read, as read_range's
        self._pos += take
        return self._pop(take) if take else b""

    def _pop(self, n: int) -> bytes:
        pieces: list[bytes] = []
        while n > 0:
            head = self._buf[0]
            if len(head) <= n:
                pieces.append(self._buf.pop(0))
                n -= len(head)
            else:
                pieces.append(head[:n])
                self._buf[0] = head[n:]
                n = 0
        self._buffered -= sum(len(p) for p in pieces)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _arrive(self, data: bytes) -> None:
        want = min(self.group.chunk, self._end - self._arrived)
        self._arrived += len(data)
        if len(data) < want or self._arrived >= self._end:
            self._ended = True  # the file ends here, or the range is complete
        if not self._closed and data:
            self._buf.append(data)
            self._buffered += len(data)

    def _fail(self, error: DiskError) -> None:
        self._error = error
        self._ended = True
        self._buf, self._buffered = [], 0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._buf, self._buffered = [], 0
            self._wake()
            self.group.reader_closed()


class RemoteShardWriter:
    """One streamed ``create_file`` call, fed chunk by chunk."""

    # ``abort`` may run while a ``write`` waits for the peer: it cuts the stream (no thread
    # of this process writes the file), so a write that drops this slot for lagging aborts it
    # at once instead of waiting, which over a slow link ended at the stream's idle timeout
    # and took the peer's disks offline (``ErasureWriter._drop``).
    abort_anytime = True

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

    async def write(self, data: "bytes | tuple[bytes | memoryview, ...]") -> None:
        if self._done:
            raise DiskError(f"write to {self.path} after close")
        if self._call is None:
            self._start()
        assert self._call is not None
        # One copy either way: the caller may reuse what it passed once this returns.
        put = asyncio.ensure_future(self._queue.put(b"".join(data) if isinstance(data, tuple) else bytes(data)))
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
        if self._call is None:
            return  # nothing was sent
        if not self._call.done():
            # (the outcome is discarded; a cancel of this task still propagates)
            await cancel_and_wait(self._call)
        # The peer aborts a file whose stream broke (``DiskService.create_file``), but only once
        # it notices: the delete makes sure (the disk conformance test saw a cut stream's file
        # still there 5 s later, once in a fresh-clone run).
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
        self._failed_at = float("-inf")  # time.monotonic() of the last failure seen
        self._peer_disks = peer_disks(client)
        self._peer_disks.paths.setdefault(path, None)
        # Calls in flight to this disk: like a local disk's thread pool, a queue here (not in
        # the connection pool) so that waiting for a turn never counts as the peer being slow.
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    def __repr__(self) -> str:
        return f"RemoteDisk({self.endpoint!r}, {self.disk_id!r})"

    # -- state ----------------------------------------------------------------------------
    def mark_offline(self, reason: str) -> None:
        self.last_error = reason
        self._failed_at = time.monotonic()
        if self.online:
            self.online = False
            log.error("disk %s went offline: %s", self.endpoint, reason)

    def mark_online(self) -> None:
        self.online = True

    def local_path(self, rel: str) -> str | None:
        return None

    # -- calls ----------------------------------------------------------------------------
    def _offline(self, exc: PeerError) -> DiskOffline:
        """The error for a call the peer did not answer: the disk is marked offline, unless the
        peer answered other calls meanwhile (``PeerTimeout.alive``: slow, not gone)."""
        if getattr(exc, "alive", False):
            return DiskSlow(f"{self.endpoint}: {exc.message}")
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

    async def _open_stream(self, method: str, args: dict) -> PeerStream:
        """A streamed answer on the bulk session (its own connections), outside the per-disk
        call slots: it lives as long as its consumer (a GET) takes."""
        self._check_open()
        try:
            return await self.client.call_stream_out("disk", method, dict(args, disk=self.path), bulk=True)
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

    async def _status(self) -> dict[str, Any] | None:
        """This disk's record in its peer's batched ``disk/status`` (see :class:`PeerDisks`);
        None when the peer must be asked the single method instead."""
        self._check_open()
        try:
            record = await self._peer_disks.record(self.path, not_before=self._failed_at)
        except PeerError as exc:
            raise self._offline(exc) from None
        if record is not None and "error" in record:  # the peer serves no such disk
            raise self._wire_error(record["error"])
        return record

    def _wire_error(self, record: object) -> DiskError:
        """A disk error the peer sent inside a ``disk/status`` answer, as a ``DiskError``."""
        error = error_from_wire(record) if isinstance(record, dict) else None
        if isinstance(error, DiskError):
            return error
        return DiskError(f"{self.endpoint}: the peer's disk status is unreadable ({error or record!r:.100})")

    async def upkeep(self) -> None:
        """Nothing: the peer's disk monitor keeps its own disks."""

    async def info(self) -> DiskInfo:
        if not self.online:
            return DiskInfo(self.disk_id, self.endpoint, False, error=self.last_error or "offline")
        try:
            record = await self._status()
            doc = record["info"] if record is not None else await self._call("info", {})
            info = DiskInfo.from_wire(doc)
        except (DiskError, KeyError, TypeError) as exc:
            return DiskInfo(self.disk_id, self.endpoint, False, error=str(exc))
        info.endpoint = self.endpoint
        # the cluster's id for the disk: the peer's handle may not know it (a fresh cluster's
        # disks are formatted after the disk service took its handles)
        info.disk_id = self.disk_id or info.disk_id
        info.healing = info.healing or self.healing
        return info

    # -- format ---------------------------------------------------------------------------
    async def read_format(self) -> bytes:
        record = await self._status()
        if record is None:
            return await self._call("read_format", {})
        if "format" in record:
            return record["format"]
        error = self._wire_error(record.get("format_error"))
        if isinstance(error, DiskOffline):  # the peer's own disk is offline
            self.mark_offline(str(error))
        raise error

    async def write_format(self, data: bytes, *, create_root: bool, sync: bool) -> None:
        self._peer_disks.invalidate()
        try:
            await self._call("write_format", {"data": data, "create_root": create_root, "sync": sync})
        finally:
            self._peer_disks.invalidate()

    # -- files ----------------------------------------------------------------------------
    async def create_file(self, path: str) -> RemoteShardWriter:
        self._check_open()
        _check_rel(path)  # refused here, as a local disk would, before any byte is streamed
        return RemoteShardWriter(self, path)

    async def write_file(self, path: str, data: bytes, *, sync: bool, new_data: bool = False) -> None:
        args = {"path": path, "data": data, "sync": sync}
        if new_data:  # the peer's disk refuses it below its reserve (an older peer ignores it)
            args["new_data"] = True
        await self._call("write_file", args)

    async def read_file(self, path: str, *, max_size: int = MAX_SMALL_FILE) -> bytes:
        return await self._call("read_file", {"path": path, "max_size": max_size})

    async def read_range(self, path: str, offset: int, length: int) -> bytes:
        return await self._call("read_range", {"path": path, "offset": offset, "length": length})

    def open_range(self, path: str, offset: int, length: int, *, chunk: int) -> RemoteRangeReader | None:
        """A reader for consecutive reads of ``length`` bytes of ``path`` from ``offset`` (the
        reads of a GET, span by span) over one streamed call, ``chunk`` bytes per frame (the
        size of one read, ideally); None when this peer has as many open as it may have, or
        does not know the method: read with ``read_range`` then."""
        group = self._peer_disks
        if (self._closed or not self.online or not group.has_read_stream
                or group.read_streams >= READ_STREAMS_PER_PEER):
            return None
        _check_rel(path)
        group.read_streams += 1
        return RemoteRangeReader(self, path, offset, length, max(MIN_STREAM_CHUNK, min(chunk, wire.MAX_FRAME)))

    def open_ranges(self, disks: list["RemoteDisk"], path: str, offset: int, length: int, *, chunk: int
                    ) -> list["GroupedRangeReader"] | None:
        """:func:`open_ranges` for ``disks`` (this one among them, all of this peer)."""
        return open_ranges(disks, path, offset, length, chunk=chunk)

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

    # -- the record log: one call carries every append waiting for this peer's disks ---------
    async def append_records(self, records: list[bytes], *, sync: bool, data: bool = False) -> list[list[int]]:
        """Concurrent appends to any of this peer's disks (many small PUTs) share one call
        (``PeerDisks.append``); the peer's disk group-commits them in one write and one fsync."""
        self._check_open()
        if not records:
            return []
        if sum(len(r) for r in records) > MAX_APPEND_BYTES:
            raise DiskError(f"{self.endpoint}: {sum(len(r) for r in records)} bytes of records in one append, "
                            f"more than one call carries ({MAX_APPEND_BYTES})")
        if self._peer_disks.has_append_batch:
            locs = await self._peer_disks.append(self, list(records), sync, data)
            if locs is not None:
                return locs
        # A peer of an older version (no disk/append_batch): this disk's records in one call.
        locs = await self._call("append_records", {"records": list(records), "sync": sync, "data": data})
        if not isinstance(locs, list) or len(locs) != len(records):
            raise PeerProtocolError(f"disk/append_records answered {len(locs) if isinstance(locs, list) else locs!r} "
                                    f"locations for {len(records)} records")
        return [list(loc) for loc in locs]

    async def read_record(self, location: list[int]) -> bytes:
        from buckets.storage.records import check_location

        location = list(check_location(location))
        self._check_open()
        if self._peer_disks.has_read_batch:
            data = await self._peer_disks.read_record(self, location)
            if data is not None:
                return data
        return await self._call("read_record", {"location": location})

    async def walk_records(self, segment: int | None = None) -> AsyncIterator[tuple[list[int], bytes]]:
        async with aclosing(self._stream_out("walk_records", {"segment": segment})) as batches:
            async for batch in batches:
                for loc, payload in batch:
                    yield list(loc), payload

    async def list_segments(self) -> list[list[int]]:
        return [list(s) for s in await self._call("list_segments", {})]

    async def release_records(self, wid: str, locations: list[list[int]]) -> int:
        from buckets.storage.records import check_location

        checked = [list(check_location(loc)) for loc in locations]
        group = self._peer_disks
        if not group.has_release or not checked:
            return 0
        try:
            freed = await self._call("release_records", {"wid": wid, "locations": checked})
        except UnknownPeerMethod:
            group.has_release = False  # a peer of an older version: its compaction reclaims the space
            return 0
        return freed if isinstance(freed, int) and not isinstance(freed, bool) else 0

    async def delete_segment(self, segment: int) -> None:
        await self._call("delete_segment", {"segment": segment})
