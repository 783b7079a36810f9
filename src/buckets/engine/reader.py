"""``ObjectReader``: stream an object's bytes (or a range) back from its shards.

Only the blocks the range touches are read, from the data shards first (the code is
systematic, so a healthy read never decodes). A shard that is missing, short, or fails
its piece checksum is replaced by parity for the affected blocks; the right bytes are
served anyway and the object is queued for heal. Reads run one span ahead of the
consumer, so memory is bounded by two spans (at most 8 MiB each), never by object size.
A disk with ``open_range`` reads a slot's span after span through one opened range: a peer's
(in a cluster) over one streamed call instead of one call per span, the slots on one peer
sharing one such call (``open_ranges``); a local disk's through one descriptor. Every piece is
still verified here.

On a cluster an overwrite or delete through another node removes the replaced write's data
without waiting for this node's GETs. Once a slot's range is open (the local descriptor, or
the peer's, which reads its stream through one too) the removal does not cut the read: the
file stays readable until the read ends. Before that, a read finds too few of the write's
pieces, or damaged ones: it first asks whether that write is still what the key (or the
version read) holds. If it was replaced, nothing is damaged: the read raises
``WriteReplaced`` and reports no damage, and ``Store.get_object(..., begin=True)`` (its first
bytes read before an answer's headers go out) looks the key up again and reads what it holds
now.

An encrypted object (``entry["sse"]``) is read the same way over its stored bytes: the
plaintext range is widened to the packages that cover it (``crypto.DecryptPlan``), those
stored bytes are read as above, and the packages are opened and cut to the range.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from buckets.engine import crypto, hedge, paths, smalllog, versions
from buckets.engine.types import ByteRange, ObjectInfo
from buckets.erasure import ErasureCodec, ShardGeometry, unframe_piece
from buckets import errors
from buckets.errors import CorruptData, DiskError, DiskOffline, ReadQuorumLost, WriteReplaced
from buckets.runtime import cancel_all_and_wait, run_in

if TYPE_CHECKING:
    from buckets.engine.store import Store

# A span is the blocks read from each shard in one disk read. Each read has a fixed cost (a
# thread hop or a peer frame, a future, a checksum loop) whatever its size, so a span is sized
# by what one shard's read brings: at least SPAN_SHARD_BYTES (2 blocks for 2+2 with 1 MiB
# blocks, 6 for 12+4, whose pieces are 87 KiB), never fewer than MIN_SPAN_BLOCKS, and never more
# than SPAN_MAX_BYTES of the object. With 12+4 and 2-block spans a GET spent more CPU on its
# 96 reads than on its bytes (bench/README.md, cluster).
SPAN_SHARD_BYTES = 512 * 1024
MIN_SPAN_BLOCKS = 2
SPAN_MAX_BYTES = 8 << 20
READ_AHEAD = 1  # spans being read while the consumer takes one (memory per GET: READ_AHEAD + 1 spans)


def span_blocks(k: int, block_size: int) -> int:
    """Blocks per span for ``k`` data shards of ``block_size`` blocks (see above)."""
    want = max(-(-SPAN_SHARD_BYTES * k // block_size), MIN_SPAN_BLOCKS)
    return max(1, min(want, SPAN_MAX_BYTES // block_size))


class ObjectReader:
    def __init__(self, store: "Store", bucket: str, key: str, entry: dict, info: ObjectInfo,
                 rng: ByteRange | None, data_key: bytes | None = None, version_id: str | None = None) -> None:
        self.store = store
        self.bucket, self.key = bucket, key
        self.entry = entry
        self.version_id = version_id  # what the read asked for: the key's current version (None) or this one
        self._replaced = False  # the write was found replaced (it stays so)
        self._first: bytes | None = None  # read by ``begin``, the first chunk iteration yields
        self.info = info
        if rng is not None and info.size == 0:
            # An empty object has no byte a range could select: whatever satisfiable range
            # or part 1 was asked for, the answer is the whole (empty) object, not a 206
            # with the impossible `Content-Range: bytes 0--1/0`.
            rng = None
        self.range = rng
        start, end = (rng.start, rng.end) if rng else (0, info.size)
        self._plan: crypto.DecryptPlan | None = None
        if entry.get("sse"):
            if data_key is None:
                raise crypto.SSEEncryptedObject()
            self._plan = crypto.DecryptPlan(entry, data_key, start, end)
            self._start, self._end = self._plan.stored_start, self._plan.stored_end
        else:
            self._start, self._end = start, end
        self.length = end - start  # what the caller gets: plaintext bytes
        self._codec = store.codec_for(entry["k"], entry["m"], entry["bs"])
        self._disks = store.disks_for_read(entry["disks"], entry["k"])
        # Slots whose disk went offline (or hung) under this read: missing, not damage (the
        # disk's refill, or its replacement's, is what covers them)
        self._gone: set[int] = set()
        self._closed = False
        self._inline: dict[int, bytes] | None = None
        self._inline_fetch: asyncio.Future | None = None
        self._inline_rest: tuple[list[int], Any] = ([], None)  # slots not read yet, and the reader of one
        # Remote disks read a slot's whole range in one streamed call (``open_range``); by
        # (slot, part number), None where the slot reads span by span.
        self._streams: dict[tuple[int, int], Any] = {}
        self._part_ends: dict[int, int] = {}  # part number -> the last block this read needs + 1
        self._iterator: Any = None  # the iteration ``__aiter__`` began (``aclose`` closes it)
        # The slots the last span read from (None: not chosen yet), and slots given up because
        # their reads lagged far behind the others' (engine/hedge.py): read last, if at all.
        self._chosen: list[int] | None = None
        self._lagged: set[int] = set()
        self._lagging_sources: set[int] = set()  # their sources (ids): a read of theirs cut short is not damage
        self._set_aside: list[Any] = []  # streams of lagging sources, closed at the end
        # Pin this write: an overwrite or delete waits for us before removing its files.
        self._ident: tuple[str, str, str] | None = (bucket, key, entry["wid"])
        store.read_started(self._ident)

    def _release(self) -> None:
        streams, self._streams = self._streams, {}
        set_aside, self._set_aside = self._set_aside, []
        for stream in [*streams.values(), *set_aside]:
            if stream is not None:
                stream.close()
        if self._ident is not None:
            self.store.read_finished(self._ident)
            self._ident = None

    def __del__(self) -> None:  # a reader dropped without being read or closed
        try:
            self._release()
        except Exception:
            pass

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._first is not None:
            return self._resume()
        self._iterator = self._iterate()
        return self._iterator

    async def begin(self) -> None:
        """Read the first chunk now, before an answer's headers go out: a failure (quorum lost,
        the write replaced) is then still an error the caller can answer, or a read it can try
        again. Iteration yields that chunk first. Memory: one chunk more, until it is taken."""
        self._iterator = self._iterate()
        try:
            self._first = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._first = b""

    async def _resume(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, None
        if first:
            yield first
        del first
        iterator = self._iterator
        if iterator is None:
            return
        async for chunk in iterator:
            yield chunk

    async def replaced(self) -> bool:
        """Whether the write this read looked up is no longer what the key (or the version
        asked for) holds: replaced or deleted since, so its data may be gone without any damage
        (on a cluster, an overwrite or delete through another node removes it without waiting
        for this node's GETs). False when that cannot be told now (the lookup failed)."""
        if not self._replaced:
            try:
                now = await versions.lookup_version(self.store, self.bucket, self.key, self.version_id, read=True)
            except (errors.NoSuchKey, errors.NoSuchVersion, errors.MethodNotAllowed):
                self._replaced = True  # deleted (or a delete marker now)
            except (errors.BucketsError, asyncio.TimeoutError):
                return False
            else:
                self._replaced = now.get("wid") != self.entry["wid"]
        return self._replaced

    def _replaced_error(self, where: str) -> WriteReplaced:
        return WriteReplaced(f"{self.bucket}/{self.key}: write {self.entry['wid']} was replaced while it was read "
                             f"({where} not found)")

    async def aclose(self) -> None:
        """Stop reading and let go of the write. An iteration begun and not finished (a copy
        whose destination failed: its writer stopped reading) is closed first, so the span it
        was reading ahead ends before the write is unpinned."""
        self._closed = True
        iterator, self._iterator = self._iterator, None
        if iterator is not None and not iterator.ag_running:
            await iterator.aclose()
        self._release()

    # -- iteration ----------------------------------------------------------------------
    async def _iterate(self) -> AsyncIterator[bytes]:
        # The spans are closed explicitly: the reads they started ahead end before this write
        # is unpinned (a generator merely dropped is closed whenever the loop gets to it).
        spans = self._iterate_spans()
        try:
            source = spans if self._plan is None else self._plan.decrypt(spans, self.store.cpu)
            async for chunk in source:
                if self._closed:
                    return
                yield chunk
        finally:
            try:
                await spans.aclose()
            finally:
                self._release()

    async def _iterate_spans(self) -> AsyncIterator[bytes]:
        """The stored bytes [_start, _end) (plaintext, unless the object is encrypted)."""
        if self._end <= self._start:
            return
        stored = crypto.stored_length(self.entry)
        if self.entry.get("inline") and stored <= self.store.small_copy_limit:
            # Small objects: the registry keeps a checksummed copy; no disk thread needed.
            data = self.store.catalog.get_small(self.bucket, self.key, self.entry["wid"])
            if data is not None and len(data) == stored:
                yield data[self._start:self._end] if (self._start, self._end) != (0, stored) else data
                return
        spans = list(self._spans())
        if not spans:
            return
        for part_no, _geo, _b0, b1, _lo, _hi in spans:
            self._part_ends[part_no] = b1
        pending: deque[asyncio.Future] = deque()
        ahead = READ_AHEAD

        def fill(upto: int) -> None:
            while len(pending) < ahead and upto + len(pending) < len(spans):
                pending.append(asyncio.ensure_future(self._read_span(*spans[upto + len(pending)])))

        fill(0)
        try:
            bs = self.entry["bs"]
            for i, (part_no, geo, b0, b1, lo, hi) in enumerate(spans):
                blocks = await pending.popleft()
                fill(i + 1)
                for idx, block in enumerate(blocks):  # hand out blocks as they are, cut only at the edges
                    start = idx * bs
                    a, b = max(lo - start, 0), min(hi - start, len(block))
                    if a >= b:
                        continue
                    if self._closed:
                        return
                    yield block if (a == 0 and b == len(block)) else block[a:b]
                del blocks
        finally:
            await cancel_all_and_wait(pending)

    def _spans(self):
        """(part number, geometry, first block, last block+1, lo, hi) per read, in order."""
        offset = 0
        bs = self.entry["bs"]
        k = self.entry["k"]
        per_span = span_blocks(k, bs)
        for part in self.entry["parts"]:
            number, psize = part[0], part[1]
            p_start, p_end = offset, offset + psize
            offset = p_end
            lo, hi = max(self._start, p_start), min(self._end, p_end)
            if lo >= hi:
                continue
            geo = ShardGeometry(k, bs, psize)
            rel_lo, rel_hi = lo - p_start, hi - p_start
            b = rel_lo // bs
            last = (rel_hi - 1) // bs
            while b <= last:
                b1 = min(b + per_span, last + 1)
                span_start = b * bs
                yield (number, geo, b, b1, max(rel_lo - span_start, 0), min(rel_hi, b1 * bs) - span_start)
                b = b1

    # -- shard access -----------------------------------------------------------------------
    async def _load_inline(self) -> dict[int, bytes]:
        """Framed inline data per shard index, from the metadata files (data shards first).
        Every slot's read asks at once: they share one fetch (one read per disk, not one per
        slot per disk)."""
        if self._inline is not None:
            return self._inline
        if self._inline_fetch is None:
            self._inline_fetch = asyncio.ensure_future(self._fetch_inline())
        return await asyncio.shield(self._inline_fetch)

    async def _fetch_inline(self) -> dict[int, bytes]:
        """k slots' framed data: first the records the GET's lookup brought (a cluster's
        replicas answer their own disks' records with the entry), then as few reads as make
        up k: this node's disks first, then whole peers (each peer's records come in one
        call), data slots before parity; the rest only if some of those fail."""
        k, n = self._codec.k, self._codec.n
        got: dict[int, bytes] = {}
        failed: list[int] = []
        wid = self.entry["wid"]

        def accept(i: int, meta: dict) -> bool:
            if meta.get("bucket", self.bucket) == self.bucket and meta.get("key", self.key) == self.key \
                    and meta.get("wid") == wid and meta.get("shard") == i:
                got[i] = meta.get("data") or b""
                return True
            return False

        for i, raw in self.store.catalog.take_records(self.bucket, self.key, wid).items():
            if 0 <= i < n and self._disks[i] is not None:
                try:
                    accept(i, smalllog.decode(raw))
                except CorruptData:
                    pass  # read again from its disk below

        async def fetch(i: int) -> bool | None:
            try:
                # its record in the disk's log (one pread), or its metadata file
                meta = await smalllog.read_slot(self.bucket, self.key, self.entry, i, self._disks[i])
                if accept(i, meta):
                    return True
                failed.append(i)
            except DiskOffline:
                self._gone.add(i)
            except (DiskError, CorruptData):
                failed.append(i)
            return None

        slow = self.store.slow_sources
        order = sorted(self._slot_order([i for i in range(n) if i not in got and self._disks[i] is not None]),
                       key=lambda i: slow.avoids(self._disks[i]))  # stable: slow sources last
        need = max(k - len(got), 0)
        rest = order
        if need:  # the first reads hedged (engine/hedge.py); a failed one's spare asked at once
            answers, given_up = await hedge.read_k(need, order[:need], order[need:], fetch, self._disks, slow)
            self._lagged.update(given_up)
            rest = [i for i in order if i not in answers and i not in given_up] + given_up
        if failed and not await self.replaced():  # not just offline, nor replaced since
            self.store.report_damage(self.bucket, self.key, wid, "inline metadata unreadable")
        self._inline, self._inline_rest = got, (rest, fetch)
        return got

    def _slot_order(self, slots: list[int]) -> list[int]:
        """``slots`` in the order to read them: local disks, then by peer, the peers holding
        the most of them first (a remote disk's ``client`` is its node's; records asked of
        one node in one turn share a call), data slots first within each."""
        k = self._codec.k
        peers: dict[int, list[int]] = {}
        local: list[int] = []
        for i in slots:
            client = getattr(self._disks[i], "client", None)
            (local if client is None else peers.setdefault(id(client), [])).append(i)
        groups = sorted(peers.values(), key=lambda g: (-len(g), g[0]))
        return sorted(local, key=lambda i: (i >= k, i)) + [
            i for g in groups for i in sorted(g, key=lambda i: (i >= k, i))]

    def _give_up(self, slots: list[int]) -> None:
        """Slots whose reads were cancelled for lagging: read them last from now on. A peer's
        slots share streamed calls, and cancelling a read ends its call for every slot in it
        (the next span may be reading one of them: it gets an error, not damage), so this
        read's streams from the same sources are set aside too, closed when the read ends; any
        later read of those slots asks for its range alone."""
        self._lagged.update(slots)
        sources = {id(hedge.source_of(self._disks[i])) for i in slots}
        self._lagging_sources |= sources
        for key, stream in list(self._streams.items()):
            if stream is not None and id(hedge.source_of(self._disks[key[0]])) in sources:
                self._set_aside.append(stream)
                self._streams[key] = None

    async def _read_frames(self, slot: int, part_no: int, geo: ShardGeometry, b0: int, b1: int,
                           together: tuple[int, ...] = ()) -> bytes | None:
        disk = self._disks[slot]
        if disk is None:
            return None
        start = geo.frame_offset(b0)
        length = geo.frame_offset(b1 - 1) + geo.frame_len(b1 - 1) - start
        path = paths.part_path(self.bucket, self.key, self.entry["wid"], part_no)
        try:
            stream = self._shard_stream(slot, disk, path, part_no, geo, start, length, together)
            if stream is not None and (data := await stream.read(start, length)) is not None:
                return data
            return await disk.read_range(path, start, length)
        except DiskOffline:
            self._gone.add(slot)
            return None
        except DiskError:
            return None

    def _shard_stream(self, slot: int, disk, path: str, part_no: int, geo: ShardGeometry, start: int, length: int,
                      together: tuple[int, ...]):
        """The disk's reader for the rest of this slot's range in this part, opened at its first
        read when the disk has one (remote disks: one call for the range instead of one per
        span; local disks: one descriptor, so a file removed under the read stays readable) and
        more than one span is left; None: read span by span. ``together``: the slots
        read beside this one, span after span (a spare asked alone streams alone)."""
        key = (slot, part_no)
        if self._ident is None:  # released: nothing may hold a stream open any more
            return None
        if key not in self._streams:
            opener = getattr(disk, "open_range", None)
            last = self._part_ends.get(part_no, 0)
            end = geo.frame_offset(last - 1) + geo.frame_len(last - 1) if last else 0
            if opener is None or end - start <= length:
                self._streams[key] = None
                return None
            # The slots read together on the same peer share one call (a slot's buffer fills
            # only as fast as it is read when all of them are); every slot's range of a part is
            # the same (same file, same frames), so one set of arguments serves them all.
            peer = getattr(disk, "client", None)
            siblings = [i for i in sorted(set(together) | {slot})
                        if (i == slot or (i, part_no) not in self._streams)
                        and getattr(self._disks[i], "client", None) is peer]
            grouped = getattr(disk, "open_ranges", None)
            readers = grouped([self._disks[i] for i in siblings], path, start, end - start, chunk=length) \
                if grouped is not None and peer is not None and len(siblings) > 1 else None
            if readers is None:
                self._streams[key] = opener(path, start, end - start, chunk=length)
            else:
                for i, reader in zip(siblings, readers):
                    self._streams[(i, part_no)] = reader
        return self._streams[key]

    async def _inline_span(self, geo: ShardGeometry, b0: int, b1: int) -> list[bytes]:
        loaded = await self._load_inline()
        blocks, bad = await run_in(
            self.store.cpu, _inline_blocks, self._codec, loaded, geo, b0, b1)
        rest, fetch = self._inline_rest
        if blocks is None and rest:  # a slot it read is damaged: read the slots it had left out
            self._inline_rest = ([], fetch)
            await asyncio.gather(*(fetch(i) for i in rest))
            blocks, bad = await run_in(
                self.store.cpu, _inline_blocks, self._codec, loaded, geo, b0, b1)
        if (bad or blocks is None) and await self.replaced():
            if blocks is None:
                raise self._replaced_error("inline pieces")
            return blocks
        if bad:
            self.store.report_damage(self.bucket, self.key, self.entry["wid"], f"inline slots {sorted(bad)}")
        if blocks is None:
            raise ReadQuorumLost(f"{self.bucket}/{self.key}: {len(loaded) - len(bad)} good inline pieces of "
                                 f"{self._codec.n}, {self._codec.k} needed")
        return blocks

    async def _read_span(self, part_no: int, geo: ShardGeometry, b0: int, b1: int, _lo: int, _hi: int) -> list[bytes]:
        codec = self._codec
        k, n = codec.k, codec.n
        if self.entry.get("inline"):
            return await self._inline_span(geo, b0, b1)
        # k slots (the last span's, hedged when one lags: engine/hedge.py), spares as needed
        first, spares = hedge.choose(self._disks, k, self.store.slow_sources, self._lagged)
        if self._chosen is not None:
            first, spares = self._chosen, [i for i in first + spares if i not in self._chosen]
        together = tuple(first)
        raw, given_up = await hedge.read_k(
            k, first, spares, lambda i: self._read_frames(i, part_no, geo, b0, b1, together if i in together else ()),
            self._disks, self.store.slow_sources)
        if given_up:
            self._give_up(given_up)
        answered = [i for i in first + spares if raw.get(i) is not None]
        if len(answered) >= k:
            self._chosen = answered[:k]
        pieces, bad = await run_in(self.store.cpu, _split_frames, raw, geo, b0, b1)
        if not bad and len(answered) >= k:
            return await run_in(self.store.cpu, _join_blocks, codec, pieces, geo, b0)
        # Some pieces are missing or corrupt: bring in every other slot for the whole span.
        # Slots on offline disks are not damage (the refill handles them when the disk returns).
        damaged = sorted(i for i in bad if self._disks[i] is not None and i not in self._gone | self._lagged
                         and id(hedge.source_of(self._disks[i])) not in self._lagging_sources)
        extra = [i for i in range(n) if i not in raw]
        raw2 = dict(zip(extra, await asyncio.gather(*(self._read_frames(i, part_no, geo, b0, b1) for i in extra))))
        pieces2, _ = await run_in(self.store.cpu, _split_frames, raw2, geo, b0, b1)
        short = None
        for idx, per_block in enumerate(pieces):
            per_block.update(pieces2[idx])
            if short is None and len(per_block) < k:
                short = idx
        if (damaged or short is not None) and await self.replaced():
            if short is not None:
                raise self._replaced_error(f"part {part_no}'s pieces")
            damaged = []  # the pieces missing are the replaced write's removal, not damage
        if damaged:
            self.store.report_damage(self.bucket, self.key, self.entry["wid"], f"part {part_no}: slots {damaged}")
        if short is not None:
            raise ReadQuorumLost(
                f"{self.bucket}/{self.key}: block {b0 + short} of part {part_no} has only "
                f"{len(pieces[short])} good pieces, {k} needed")
        return await run_in(self.store.cpu, _join_blocks, codec, pieces, geo, b0)


def _inline_blocks(codec: ErasureCodec, loaded: dict[int, bytes], geo: ShardGeometry, b0: int, b1: int
                   ) -> tuple[list[bytes] | None, set[int]]:
    """Decode blocks [b0, b1) of an inline write from the slots loaded (any k of them, data
    slots first; more only if some piece is bad): the blocks (None: fewer than k good pieces
    of some block) and the slots that had a bad piece."""
    k = codec.k
    order = sorted(loaded, key=lambda i: (i >= k, i))
    base, end = geo.frame_offset(b0), geo.frame_offset(b1 - 1) + geo.frame_len(b1 - 1)
    window = {i: loaded[i][base:end] for i in order[:k]}
    pieces, bad = _split_frames(window, geo, b0, b1)
    if bad or len(window) < k:
        more, bad2 = _split_frames({i: loaded[i][base:end] for i in order[k:]}, geo, b0, b1)
        bad |= bad2
        for idx, per_block in enumerate(pieces):
            per_block.update(more[idx])
            if len(per_block) < k:
                return None, bad
    return _join_blocks(codec, pieces, geo, b0), bad


def _split_frames(raw: dict[int, bytes | None], geo: ShardGeometry, b0: int, b1: int
                  ) -> tuple[list[dict[int, bytes]], set[int]]:
    """Per block, the verified pieces by slot; and the slots that had any bad piece."""
    pieces: list[dict[int, bytes]] = [{} for _ in range(b0, b1)]
    bad: set[int] = set()
    base = geo.frame_offset(b0)
    for slot, data in raw.items():
        if data is None:
            bad.add(slot)
            continue
        mv = memoryview(data)
        for idx, b in enumerate(range(b0, b1)):
            off = geo.frame_offset(b) - base
            flen = geo.frame_len(b)
            try:
                pieces[idx][slot] = unframe_piece(mv[off:off + flen], flen - 8)
            except CorruptData:
                bad.add(slot)
    return pieces, bad


def _join_blocks(codec: ErasureCodec, pieces: list[dict[int, bytes]], geo: ShardGeometry, b0: int) -> list[bytes]:
    return [codec.decode_block(p, geo.block_len(b0 + idx)) for idx, p in enumerate(pieces)]
