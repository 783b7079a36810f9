"""``ErasureWriter``: stream a body into k+m shard files, block by block.

The blocks of a body go through chains that run side by side: MD5 (the ETag) with the
client's flexible checksums in the CPU pool, and encoding followed by the writing of each
block's pieces to the disks. Where encoding is cheap (ISA-L's parity, see ``_encode_here``)
it runs on the loop, and so does BLAKE3 (the content hash), as each block is cut; else
each is a chain in the pool too. Each chain takes the blocks in order (a
digest is a running state; a shard file is appended in order), but no chain waits for
another: MD5 and BLAKE3 of block b+1 run beside its encoding and the writes of block b.
Memory is bounded by ``PIPELINE`` + 1 blocks in the chains with their frames (two, as
before the chains), plus the part of a block being received: the body is never held whole.

A body no larger than the inline threshold is kept in memory (it is at most that big)
and returned as framed pieces for the metadata files instead of shard files.

With a ``PartCipher`` (encryption at rest, ``engine/crypto.py``) the plaintext is hashed
(MD5, flexible checksums) and sealed into packages a batch at a time, and the package
stream is what gets erasure-coded; sizes, the inline threshold and the BLAKE3 content hash
then apply to the stored bytes, while ``WriteResult.size`` stays the plaintext size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

import blake3

from buckets.engine import crypto, hedge
from buckets.erasure import ErasureCodec
from buckets.errors import DiskError, DiskFull, IncompleteBody, StorageFull, WriteQuorumLost
from buckets.runtime import hash_update, run_in
from buckets.storage.disk import Disk, ShardWriter

log = logging.getLogger("buckets.engine")

# Blocks a stream may leave in the chains before it reads on (memory: this many blocks and their
# frames, plus the one it waits behind); see the module doc. 2 or 3 measured no faster than 1
# for one 16 MiB PUT and cost 10-20 MB more RSS for the aws cli's 10 parallel parts.
PIPELINE = 1
# Blocks smaller than this are hashed and encoded on the loop: a hand-off costs more.
POOL_MIN = 65536
# A block whose encoding is cheap (``ErasureCodec.encodes_quickly``: ISA-L's parity, ~130 µs per
# MiB at 2+2, the GIL released meanwhile) is encoded on the loop whatever its size: the hand-off
# to the CPU pool and back cost more than that, and its two wake-ups sat on the write's critical
# path (each block's pieces wait for them). 16 MiB PUTs one at a time: 306-311 -> 326-351 MB/s,
# three alternated runs (bench/README.md, session 58). zfec's encoding (~2 ms per MiB) still goes
# to the pool. BLAKE3 (~130 µs per MiB) goes with it: on the loop beside ISA-L's encoding (one
# hand-off less per block: 306-333 -> 317-341 MB/s one at a time, 320-324 -> 331-346 four at a
# time, alternated), a chain in the pool beside zfec's.
_dropping: set[asyncio.Task] = set()  # aborts of dropped shard files, run in the background


@dataclass(slots=True)
class WriteResult:
    size: int
    md5: bytes
    content_hash: str
    checksums: dict[str, str]  # alg -> base64
    checksum_raw: dict[str, bytes]
    inline: list[bytes] | None  # per shard index: concatenated frames (small objects only)
    body: bytes | None = None  # the whole body, for inline objects (at most the inline limit)
    ok_slots: list[int] = field(default_factory=list)
    stored_size: int = -1  # bytes on disk (encrypted: packages and tags); -1 until run() sets it


class _Hashers:
    def __init__(self, algorithms: tuple[str, ...]) -> None:
        self.md5 = hashlib.md5()
        self.blake = blake3.blake3()
        self.extra = {}
        if algorithms:
            from buckets.checksums import new_checksum

            self.extra = {alg.upper(): new_checksum(alg) for alg in algorithms}

    def update(self, block: bytes) -> None:
        self.update_digests(block)
        self.update_content(block)

    def update_digests(self, block: bytes) -> None:
        """The client's digests: MD5 (the ETag) and the flexible checksums asked for."""
        hash_update(self.md5, block)
        for h in self.extra.values():
            hash_update(h, block)

    def update_content(self, block: bytes) -> None:
        """The content hash (BLAKE3): its own chain, beside the digests' (writer's _run)."""
        hash_update(self.blake, block)

    def update_plain(self, data: bytes) -> None:
        """Encrypted writes: the client's digests are of the plaintext..."""
        self.md5.update(data)
        for h in self.extra.values():
            h.update(data)

    def update_stored(self, block: bytes) -> None:
        """... and the content hash is of what is stored (no plaintext digest of ours on disk)."""
        self.blake.update(block)


async def _aiter_body(stream: AsyncIterator[bytes] | bytes) -> AsyncIterator[bytes]:
    if isinstance(stream, (bytes, bytearray, memoryview)):
        if len(stream):
            yield bytes(stream)
        return
    async for chunk in stream:
        if chunk:
            yield chunk


def _take_blocks(buf: bytearray, chunk: bytes, bs: int) -> Iterator[bytes]:
    """The whole blocks of what ``buf`` holds followed by ``chunk``; the rest stays in ``buf``.
    A chunk that starts a block is cut without passing through ``buf``: a body read in whole
    blocks (the common case of a large body) is not copied at all."""
    if not buf and len(chunk) >= bs and isinstance(chunk, bytes):
        view, at = memoryview(chunk), 0
        while len(chunk) - at >= bs:
            yield chunk if len(chunk) == bs else bytes(view[at:at + bs])
            at += bs
        buf += view[at:]
        return
    buf += chunk
    while len(buf) >= bs:
        block = bytes(memoryview(buf)[:bs])  # one copy (a bytearray slice would be two)
        del buf[:bs]
        yield block


class ErasureWriter:
    """Encodes one stream onto ``disks`` (slot order; ``None`` = offline) under ``paths``."""

    def __init__(self, codec: ErasureCodec, disks: list[Disk | None], paths: list[str], cpu: Executor,
                 *, algorithms: tuple[str, ...] = (), inline_limit: int = 0,
                 cipher: crypto.PartCipher | None = None,
                 on_lag: Callable[[Disk, float, list | None], None] | None = None,
                 keep: Callable[[asyncio.Future], None] | None = None,
                 known_slow: Callable[[Disk | None], bool] | None = None,
                 kept_up: Callable[[Iterable[Disk | None]], None] | None = None) -> None:
        self.codec = codec
        self.cipher = cipher
        self.disks = disks
        self.paths = paths
        self.cpu = cpu
        self.algorithms = algorithms
        self.inline_limit = inline_limit
        self.writers: list[ShardWriter | None] = []
        self.errors: list[str] = []
        self.full = 0  # shard files a disk refused at its free-space reserve
        # Per shard file, its last queued piece write: the next block's piece goes after it.
        self._tails: list[asyncio.Future | None] = [None] * codec.n
        self.on_lag = on_lag  # told of each disk dropped for lagging, and by how long
        self.keep = keep or _keep  # holds the aborts of dropped shard files until they end
        self.known_slow = known_slow or (lambda disk: False)  # a disk whose source lagged lately
        self.kept_up = kept_up  # told of the disks whose slots kept up (``SlowSources.kept_up``)
        self._started: float | None = None  # loop time the shard files were opened
        self._waited = 0.0  # seconds spent waiting for pieces beyond the write quorum

    def _alive(self) -> int:
        return sum(1 for w in self.writers if w is not None)

    async def _open(self) -> None:
        async def open_one(i: int) -> ShardWriter | None:
            disk = self.disks[i]
            if disk is None:
                return None
            try:
                return await disk.create_file(self.paths[i])
            except DiskError as exc:
                self._failed(exc)
                return None

        self._started = asyncio.get_running_loop().time()
        self.writers = list(await asyncio.gather(*(open_one(i) for i in range(self.codec.n))))
        self._check_quorum()

    def _failed(self, exc: DiskError) -> None:
        self.errors.append(str(exc))
        if isinstance(exc, DiskFull):
            self.full += 1

    def _check_quorum(self) -> None:
        alive, quorum = self._alive(), self.codec.write_quorum
        if alive >= quorum:
            return
        # The disks' own words (paths, errno) go to the log, not to the client. A full store
        # refuses every write: one line at info each (the request's 507 is logged too).
        full = alive + self.full >= quorum
        log.log(logging.INFO if full else logging.WARNING, "write quorum lost: %d of %d disks writable, %d needed (%s)",
                alive, self.codec.n, quorum, "; ".join(self.errors[-3:]) or "disks offline")
        if full:
            raise StorageFull()
        raise WriteQuorumLost(f"Write quorum lost: {alive} of {self.codec.n} disks writable, {quorum} needed")

    async def _write_piece(self, i: int, frame: "bytes | tuple[bytes | memoryview, ...]") -> None:
        w = self.writers[i]
        if w is None:
            return
        try:
            await w.write(frame)
        except DiskError as exc:
            self._failed(exc)
            self.writers[i] = None
            await w.abort()

    async def _write_frames(self, frames: list[bytes]) -> None:
        await self._await_slots({asyncio.ensure_future(self._write_piece(i, frames[i])): i
                                 for i in range(self.codec.n) if self.writers[i] is not None})
        self._check_quorum()

    async def _await_slots(self, calls: dict[asyncio.Future, int]) -> None:
        """Wait for one call per slot (a piece's write, a shard file's close): for every call
        while fewer than the write quorum's slots are done, then for the rest no longer than
        the write's lag budget (``hedge.LAG_MIN``; shorter for disks known to be slow:
        ``hedge.grace``); slots still out then are dropped."""
        quorum = self.codec.write_quorum
        waiting = dict(calls)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            while waiting and sum(1 for f, i in calls.items() if f.done() and self.writers[i] is not None) < quorum:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for f in done:
                    del waiting[f]
            if waiting:
                began = loop.time()
                elapsed = began - (self._started if self._started is not None else began)
                budget = max(hedge.LAG_MIN, hedge.LAG_SHARE * elapsed) - self._waited
                if all(self.known_slow(self.disks[i]) for i in waiting.values()):  # it lagged lately
                    budget = min(budget, hedge.grace(began - start, True))
                done, _ = await asyncio.wait(waiting, timeout=max(budget, 0.0))
                self._waited += loop.time() - began
                for f in done:
                    del waiting[f]
                kept = [self.disks[i] for f, i in calls.items() if f not in waiting and self.writers[i] is not None]
                for f, i in waiting.items():
                    self._drop(i, loop.time() - began, f, kept)
                    f.add_done_callback(_consume)  # its file is aborted once it ends
            if self.kept_up is not None:
                self.kept_up(self.disks[i] for f, i in calls.items()
                             if f.done() and not f.cancelled() and self.writers[i] is not None)
        except BaseException:  # cancelled (the write failed elsewhere): as a gather would, stop them all
            for f in calls:
                f.cancel()
            raise
        for f in calls:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()  # not a disk's error (those drop the slot): a bug, or a cancel

    def _drop(self, i: int, lag: float, call: asyncio.Future, kept: list | None = None) -> None:
        """Go on without slot ``i``'s shard file: it lags far behind the write quorum's. Its
        file is aborted once ``call`` (the write or close it lags in) has ended: a disk's
        thread may still be writing to it. A lagging peer's stream is cut at once
        (``abort_anytime``), unless ``kept`` (the slots that kept up) holds another disk of it."""
        w, self.writers[i] = self.writers[i], None
        if w is None:
            return
        disk = self.disks[i]
        self.errors.append(f"{getattr(disk, 'endpoint', disk)}: lagged {lag:.1f}s behind the other disks")

        # A peer's stream is cut at once when the peer lags as a whole (a slow link: nothing
        # on its disks is wrong, and a stream left to its idle timeout would take them offline).
        # When its other disks kept up, the disk itself lags (hung, retrying): the call is left
        # to end, so the peer's own disk timeout finds the hang and takes the disk offline.
        cut = getattr(w, "abort_anytime", False) and not hedge.lags_alone(disk, kept)

        async def abort() -> None:
            if not cut:
                await asyncio.wait([call])
            await w.abort()

        task = asyncio.get_running_loop().create_task(abort())
        task.add_done_callback(_consume)
        self.keep(task)
        if self.on_lag is not None and disk is not None:
            self.on_lag(disk, lag, kept)  # (``kept``: the disks that kept up: is it the disk or its peer?)

    def _encode_here(self, block_len: int) -> bool:
        return block_len < POOL_MIN or self.codec.encodes_quickly(block_len)

    async def _process(self, hash_fns: tuple, block: bytes) -> list[bytes]:
        """Hash and encode one block at once (the tail block)."""
        if len(block) >= POOL_MIN:
            hashed = asyncio.gather(*(run_in(self.cpu, fn, block) for fn in hash_fns))
            try:
                frames = self.codec.encode_block(block) if self._encode_here(len(block)) else \
                    await run_in(self.cpu, self.codec.encode_block, block)
            finally:
                await hashed
        else:
            for fn in hash_fns:
                fn(block)
            frames = self.codec.encode_block(block)
        return frames

    async def _hash_after(self, before: "asyncio.Future | None", fn, block: bytes) -> None:
        """Block b's share of one digest, after block b-1's: a digest runs over the body in order."""
        if before is not None:
            await before
        if len(block) >= POOL_MIN:
            await run_in(self.cpu, fn, block)
        else:
            fn(block)

    async def _write_after(self, before: "asyncio.Future | None", queued: asyncio.Future, block: bytes) -> None:
        """Block b encoded (beside block b-1's writes), then each piece written after the same
        shard file's piece of block b-1: a shard file is appended in order, but a disk that
        finished block b-1 goes on with block b while a slower one still writes b-1 (no
        barrier across the disks between blocks). ``before`` is set once block b-1's pieces
        are queued behind the shard files' tails; this block sets ``queued`` once its are."""
        if self._encode_here(len(block)):
            frames = self.codec.encode_block_parts(block)
        else:
            frames = await run_in(self.cpu, self.codec.encode_block_parts, block)
        del block
        if before is not None:
            await before
        tails = self._tails
        pieces = [asyncio.ensure_future(self._piece_after(tails[i], i, frames[i])) for i in range(self.codec.n)]
        self._tails = pieces
        queued.set_result(None)
        del frames
        await self._await_slots({f: i for i, f in enumerate(pieces) if self.writers[i] is not None})
        self._check_quorum()

    async def _piece_after(self, before: "asyncio.Future | None", i: int,
                           frame: "tuple[bytes, bytes | memoryview]") -> None:
        if before is not None and self.writers[i] is not None:
            # The previous piece's own failure is its block's to report, and a dropped slot's
            # piece may end cancelled: either way this one goes on (or finds its writer gone).
            await asyncio.wait([before])
        await self._write_piece(i, frame)

    def _seal_batch(self, hashers: _Hashers, plain: bytes, first_index: int, final: bool) -> bytes:
        hashers.update_plain(plain)
        assert self.cipher is not None
        return self.cipher.encrypt(plain, first_index, final)

    async def _encrypting(self, stream: AsyncIterator[bytes] | bytes, size: int | None, hashers: _Hashers,
                          plain_total: list[int]) -> AsyncIterator[bytes]:
        """The package stream of a plaintext body, sealed a batch at a time (memory: one batch
        and one chunk). One package is always held back until the body ends, so the part's last
        package is sealed with the final flag whatever the body's length."""
        batch = crypto.BATCH_PACKAGES * crypto.PACKAGE
        pending = bytearray()
        total = index = 0

        async def seal(plain: bytes, first: int, final: bool) -> bytes:
            if len(plain) >= crypto.PACKAGE:
                return await run_in(self.cpu, self._seal_batch, hashers, plain, first, final)
            return self._seal_batch(hashers, plain, first, final)

        async for chunk in _aiter_body(stream):
            total += len(chunk)
            if size is not None and total > size:
                raise IncompleteBody("The request body is longer than the declared Content-Length.")
            pending += chunk
            while len(pending) > batch:
                plain = bytes(pending[:batch])
                del pending[:batch]
                yield await seal(plain, index, False)
                index += crypto.BATCH_PACKAGES
        if size is not None and total != size:
            raise IncompleteBody(resource=None)
        plain_total[0] = total
        if pending:
            yield await seal(bytes(pending), index, True)

    async def run(self, stream: AsyncIterator[bytes] | bytes, size: int | None) -> WriteResult:
        """Consume the stream (``size``: its plaintext length, when declared). On any exception
        the caller must call ``abort()``."""
        hashers = _Hashers(self.algorithms)
        if self.cipher is None:
            return await self._run(stream, size, hashers, (hashers.update_digests,), hashers.update_content)
        plain_total = [0]
        result = await self._run(self._encrypting(stream, size, hashers, plain_total),
                                 None if size is None else crypto.stored_size(size), hashers,
                                 (), hashers.update_stored)
        result.size = plain_total[0]
        return result

    async def _run(self, stream: AsyncIterator[bytes] | bytes, size: int | None, hashers: _Hashers,
                   hash_fns: tuple, content: Callable[[bytes], None]) -> WriteResult:
        """``hash_fns``: the digests, each a chain of its own (in the pool for large blocks);
        ``content``: the content hash's update, with each block on the loop where the blocks
        are encoded there too (``_encode_here``: BLAKE3 is as cheap, ~130 µs per MiB), else a
        chain of its own."""
        bs = self.codec.block_size
        here = content if self._encode_here(bs) else None
        if here is None:
            hash_fns = (*hash_fns, content)
        buf = bytearray()
        total = 0
        # Per block in the pipeline: its step in each digest's chain, then its write.
        inflight: deque[list[asyncio.Future]] = deque()
        chains: list[asyncio.Future | None] = [None] * (len(hash_fns) + 1)
        loop = asyncio.get_running_loop()
        last_queued: asyncio.Future | None = None  # the last block's pieces are behind the tails
        streaming = self.inline_limit < 0 or (size is not None and size > self.inline_limit)
        if streaming:
            await self._open()
        try:
            async for chunk in _aiter_body(stream):
                total += len(chunk)
                if size is not None and total > size:
                    raise IncompleteBody("The request body is longer than the declared Content-Length.")
                # Inline data is one block's frames: a full block always goes to shard files.
                if not streaming and (len(buf) + len(chunk) > self.inline_limit or len(buf) + len(chunk) >= bs):
                    streaming = True
                    await self._open()
                for block in _take_blocks(buf, chunk, bs):
                    if here is not None:
                        here(block)  # the blocks in order: the loop takes them one at a time
                    # Chains run side by side: each digest over the blocks in order (MD5 and
                    # BLAKE3 apart: neither waits for the other), and the blocks' encoding and
                    # writing, in order per shard file. At most PIPELINE blocks are in them.
                    queued = loop.create_future()
                    chains = [asyncio.ensure_future(self._hash_after(chains[i], fn, block))
                              for i, fn in enumerate(hash_fns)] + \
                             [asyncio.ensure_future(self._write_after(last_queued, queued, block))]
                    last_queued = queued
                    inflight.append(chains)
                    while inflight and (len(inflight) > PIPELINE or all(f.done() for f in inflight[0])):
                        for f in inflight.popleft():
                            await f
            if size is not None and total != size:
                raise IncompleteBody(resource=None)
            while inflight:  # every full block hashed and written before the tail
                for f in inflight.popleft():
                    await f
            inline = None
            if buf or (total == 0):
                frames = await self._process((*hash_fns, here) if here else hash_fns, bytes(buf)) if buf else None
                if streaming:
                    if frames is not None:
                        await self._write_frames(frames)
                else:
                    inline = frames if frames is not None else [b""] * self.codec.n
        finally:
            # On an error: nothing may keep running in the background (the caller aborts the
            # shard files next), and no chain's failure may go unretrieved.
            left = [f for step in inflight for f in step]
            for f in left:
                if not f.done():
                    f.cancel()
            if left:
                await asyncio.gather(*left, return_exceptions=True)
        checksum_raw = {alg: h.digest() for alg, h in hashers.extra.items()}
        return WriteResult(
            size=total, md5=hashers.md5.digest(), content_hash=hashers.blake.hexdigest(),
            checksums={a: base64.b64encode(d).decode() for a, d in checksum_raw.items()},
            checksum_raw=checksum_raw, inline=inline, body=bytes(buf) if inline is not None else None,
            ok_slots=[i for i, w in enumerate(self.writers) if w is not None] if streaming
            else [i for i, d in enumerate(self.disks) if d is not None],
            stored_size=total,
        )

    async def finish(self, sync: bool) -> list[int]:
        """Close (and fsync) every shard file; return the slots that made it."""
        async def close_one(i: int) -> bool:
            w = self.writers[i]
            if w is None:
                return False
            try:
                await w.close(sync)
                return True
            except DiskError as exc:
                self._failed(exc)  # a peer's disk says so at the end of its stream
                self.writers[i] = None
                return False

        closes = {asyncio.ensure_future(close_one(i)): i
                  for i in range(len(self.writers)) if self.writers[i] is not None}
        await self._await_slots(closes)
        self._check_quorum()
        return sorted(i for f, i in closes.items() if f.done() and not f.cancelled() and f.result()
                      and self.writers[i] is not None)

    async def abort(self) -> None:
        await asyncio.gather(*(w.abort() for w in self.writers if w is not None), return_exceptions=True)
        self.writers = [None] * len(self.writers)


def _consume(f: asyncio.Future) -> None:
    """Retrieve the outcome of a call no one waits for any more (asyncio would log it)."""
    if not f.cancelled():
        f.exception()


def _keep(task: asyncio.Future) -> None:
    _dropping.add(task)
    task.add_done_callback(_dropping.discard)
