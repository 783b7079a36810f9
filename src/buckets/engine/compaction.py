"""Compaction of the disks' record logs (``engine/smalllog.py``), in the background.

Overwrites, deletes, heals and tag changes leave records nothing points to. Every
``interval`` seconds, for each disk, each sealed segment (all but the newest, which may be the
one being appended to) is scanned, paced like the scanner (records/s and MB/s): a record is
*live* when the registry entry of its write names exactly its location for its slot on this
disk. When the dead share of a segment reaches ``threshold``, its live records are appended
again (to the current segment, group-committed) and each entry is pointed at its new record
with a compare-and-set on the write id and the old location, under the key's lock (so a
concurrent overwrite or delete wins and the copy is just garbage); then the segment is
deleted, once every live record of it has moved.

A segment found mostly live is not scanned again for ``recheck`` seconds (an hour): a pass
rescanning every record of every disk each minute cost a third of a CPU at 1M objects.
A sealed segment is left alone for ``settle`` seconds (10 minutes) after the next one began:
a PUT appends its records before it commits its entry, and a record must not be judged by an
entry that is still on its way.

On a cluster each node compacts its own disks, and a live record is not appended again: it
becomes its write's ``.meta`` file on the same disk (``smalllog.relocate``), which readers find
when the record is gone, because an entry of the replicated index is not changed after its
write (a change would race with writes of the key through other nodes).

A disk short of space (it refused new data in the last minute, or is near full: under four
reserves free, ``storage.local.NEAR_FULL``) has its dead records freed in place as well, each
punched out of its segment (``Disk.release_records``) without moving anything, which needs no
room and no sealed segment (``_reclaim_disk``): in segments past ``settle``, every record the
registry does not point at, as a compaction judges them (the garbage of segments under the
threshold, up to half of each); in the newer ones (the current segment, which a full disk may
never fill to seal it, and those sealed lately), only the records of writes that a kill record
after them in the log removed, which the registry does not point at either: there a record
without an entry may be a PUT's whose commit is on its way, and the kill is what says it is
not. Deletions made while a disk is short release their records at once (``Store._remove_write``);
this frees what was deleted before. The freed bytes then count as dead in a compaction's share.

Kill records (a removal, see smalllog) are carried forward like live records, except from the
disk's oldest segment: records they kill are never newer than they are, so once no older
segment exists, none of those records remains, and the kill has nothing left to say, unless
the write's ``.meta`` file is still on that disk (a version removed by id whose files were not
yet deleted when the node stopped): then it is carried until they are.

A disk back after a registry rebuild that could not scan it is left alone until its refill
adopted its records (``smalllog.adopt_records``): until then the registry names none of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buckets.runtime import cancel_and_wait
from buckets.engine import paths, smalllog, space
from buckets.registry.cache import background_lookups
from buckets.engine.scanner import ScannerConfig, Throttle
from buckets.errors import BucketsError, CorruptData, DiskError

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.heal")

_MOVE_BATCH = 64  # live records moved at once (their appends share one group commit)
_RELEASE_BATCH = 256  # dead records freed at once (one hand-off to the disk's thread)
KILLS_AT_ONCE = 100_000  # kill records' write ids held while reclaiming a disk's newer segments



@dataclass(slots=True)
class CompactionConfig:
    threshold: float = 0.5  # dead share of a segment that makes it worth rewriting
    interval: float = 60.0  # seconds between passes
    records_per_sec: float = 5000.0
    mb_per_sec: float = 50.0
    settle: float = 600.0  # seconds a sealed segment is left alone (its writes' commits land first)
    recheck: float = 3600.0  # seconds before a segment found mostly live is scanned again


class Compactor:
    def __init__(self, store: "Store", scanner_cfg: ScannerConfig | None = None,
                 cfg: CompactionConfig | None = None) -> None:
        self.store = store
        self.cfg = cfg or CompactionConfig(interval=(scanner_cfg or ScannerConfig()).cycle_pause,
                                           mb_per_sec=(scanner_cfg or ScannerConfig()).mb_per_sec)
        self.stats = {"passes": 0, "segments_scanned": 0, "segments_compacted": 0, "records_moved": 0,
                      "kills_carried": 0, "bytes_reclaimed": 0, "bytes_released": 0}
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one pass at a time (background and on demand)
        # (disk id, segment) -> time.monotonic() of the scan that found it mostly live: such a
        # segment is not scanned again for ``cfg.recheck`` seconds. Without this every pass (a
        # minute apart) rescanned every record on every disk: at 1M objects a pass took ~13
        # minutes of a third of a CPU, for nothing when little had changed.
        self._clean: dict[tuple[str, int], float] = {}
        # Reclaiming a disk short of space: (disk id, segment) -> time.monotonic() its dead
        # records were freed (a settled segment: not walked again for ``cfg.recheck``), and disk
        # id -> the newer segments (id, size) as they were when last walked (not again unchanged).
        self._released: dict[tuple[str, int], float] = {}
        self._newer: dict[str, list] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="log-compaction")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    def status(self) -> dict:
        return dict(self.stats)

    async def _loop(self) -> None:
        background_lookups()  # its lookups leave the registry's cache to the clients' reads
        while True:
            await asyncio.sleep(self.cfg.interval)
            try:
                await self.run_pass()
            except Exception:
                log.exception("log compaction failed")

    def _throttle(self) -> Throttle:
        return Throttle(ScannerConfig(objects_per_sec=self.cfg.records_per_sec, mb_per_sec=self.cfg.mb_per_sec))

    async def run_pass(self, *, paced: bool = True, threshold: float | None = None,
                       settle: float | None = None, recheck: float | None = None) -> dict:
        """One pass over every online disk's sealed segments; what it did. ``settle``: seconds
        since a segment was sealed before it is looked at (default ``cfg.settle``; 0 in tests
        that know no write is in flight); ``recheck``: seconds before a segment found mostly
        live is scanned again (default ``cfg.recheck``)."""
        async with self._lock:
            before = dict(self.stats)
            throttle = self._throttle() if paced else None
            limit = self.cfg.threshold if threshold is None else threshold
            wait = self.cfg.settle if settle is None else settle
            again = self.cfg.recheck if recheck is None else recheck
            # A disk a registry rebuild could not scan: the registry names none of its records
            # until they are adopted (``smalllog.adopt_records``, at its refill), so every one
            # of them would look dead.
            unscanned = set(self.store.registry.get_sys(smalllog.UNSCANNED) or ())
            for disk in list(self.store.disks):
                if disk is None or not disk.online or disk.disk_id in unscanned:
                    continue
                if self.store.cluster is not None and disk.local_path("") is None:
                    continue  # on a cluster each node compacts its own disks' logs
                try:
                    if space.disk_short(disk):
                        await self._reclaim_disk(disk, throttle, wait, again)
                    await self._compact_disk(disk, throttle, limit, wait, again)
                except (DiskError, BucketsError) as exc:
                    log.warning("log compaction of %s stopped: %s", disk.endpoint, exc)
            self.stats["passes"] += 1
            return {k: self.stats[k] - before[k] for k in self.stats}

    async def _compact_disk(self, disk, throttle: Throttle | None, threshold: float, settle: float,
                            recheck: float) -> None:
        segments = await disk.list_segments()
        if len(segments) < 2:
            return
        oldest = True
        now_ms = time.time() * 1000
        for (seg, size), (following, _) in zip(segments[:-1], segments[1:]):
            # A segment id is its creation time in ms, so the next one's id is about when this
            # one was sealed: leave it alone for a while, so that a PUT whose record went into it
            # has committed its entry (or failed) before the record is judged by the entry.
            if now_ms - following < settle * 1000:
                break
            checked = self._clean.get((disk.disk_id, seg))
            if checked is not None and time.monotonic() - checked < recheck:
                oldest = False
                continue
            self.stats["segments_scanned"] += 1
            live_bytes = 0
            async for loc, raw in disk.walk_records(seg):
                if throttle is not None:
                    await throttle.pace(0)
                kind = await self._classify(disk, loc, raw, oldest)
                if kind != "dead":
                    live_bytes += loc[2]
            if size and (size - live_bytes) / size < threshold:
                self._clean[(disk.disk_id, seg)] = time.monotonic()
                oldest = False
                continue
            self._clean.pop((disk.disk_id, seg), None)
            if await self._move_segment(disk, seg, throttle, oldest):
                await disk.delete_segment(seg)
                self.stats["segments_compacted"] += 1
                self.stats["bytes_reclaimed"] += size - live_bytes
                log.info("log compaction: segment %d of %s rewritten (%d of %d bytes were garbage)",
                         seg, disk.endpoint, size - live_bytes, size)
            else:
                oldest = False

    async def _reclaim_disk(self, disk, throttle: Throttle | None, settle: float, recheck: float) -> None:
        """Free the dead records of a disk short of space in place (see the module doc)."""
        segments = await disk.list_segments()
        now_ms, now = time.time() * 1000, time.monotonic()
        present = {seg for seg, _ in segments}
        for gone in [k for k in self._released if k[0] == disk.disk_id and k[1] not in present]:
            del self._released[gone]  # (compacted away since)
        newer = list(segments)
        for (seg, _), (following, _) in zip(segments[:-1], segments[1:]):
            if now_ms - following < settle * 1000:
                break
            newer.pop(0)
            done = self._released.get((disk.disk_id, seg))
            if done is not None and now - done < recheck:
                continue
            dead: list[tuple[str, list]] = []
            async for loc, raw in disk.walk_records(seg):
                if throttle is not None:
                    await throttle.pace(0)
                try:
                    meta = smalllog.decode(raw)
                except CorruptData:
                    continue  # (nothing is known of it: a release checks the record names its write)
                if not meta.get("kill") and isinstance(meta.get("wid"), str) \
                        and not await self._is_live(disk, loc, meta):
                    dead.append((meta["wid"], loc))
                if len(dead) >= _RELEASE_BATCH:
                    await self._release(disk, dead)
            await self._release(disk, dead)
            self._released[(disk.disk_id, seg)] = time.monotonic()
        if newer and self._newer.get(disk.disk_id) != newer:
            await self._release_killed(disk, [seg for seg, _ in newer], throttle)
            self._newer[disk.disk_id] = newer

    async def _release_killed(self, disk, segments: list[int], throttle: Throttle | None) -> None:
        """Free the records in ``segments`` of writes that a kill record after them removed
        (and the registry does not point at): up to ``KILLS_AT_ONCE`` kills per walk."""
        kills: dict[str, tuple[int, int]] = {}  # write id -> its last kill's (segment, offset)

        async def release_killed(upto: tuple[int, int]) -> None:
            dead: list[tuple[str, list]] = []
            for seg in segments:
                if seg > upto[0]:
                    break
                async for loc, raw in disk.walk_records(seg):
                    if (loc[0], loc[1]) >= upto:
                        break
                    if throttle is not None:
                        await throttle.pace(0)
                    try:
                        meta = smalllog.decode(raw)
                        killed = kills.get(meta["wid"])
                    except (CorruptData, KeyError, TypeError):
                        continue
                    if meta.get("kill") or killed is None or (loc[0], loc[1]) > killed:
                        continue
                    if not await self._is_live(disk, loc, meta):
                        dead.append((meta["wid"], loc))
                    if len(dead) >= _RELEASE_BATCH:
                        await self._release(disk, dead)
            await self._release(disk, dead)

        last = None
        for seg in segments:
            async for loc, raw in disk.walk_records(seg):
                if throttle is not None:
                    await throttle.pace(0)
                if b"kill" not in raw:
                    continue
                try:
                    meta = smalllog.decode(raw)
                except CorruptData:
                    continue
                if meta.get("kill") and isinstance(meta.get("wid"), str):
                    kills[meta["wid"]] = last = (loc[0], loc[1])
                    if len(kills) >= KILLS_AT_ONCE:
                        await release_killed(last)
                        kills.clear()
        if kills and last is not None:
            await release_killed(last)

    async def _release(self, disk, dead: list[tuple[str, list]]) -> None:
        """Punch ``dead`` (write id, location) out of their segments; empties the list."""
        if not dead:
            return
        batch, dead[:] = list(dead), []
        try:
            freed = await asyncio.gather(*(disk.release_records(wid, [loc]) for wid, loc in batch))
        except (DiskError, BucketsError) as exc:
            log.warning("freeing dead records of %s: %s", disk.endpoint, exc)
            return
        self.stats["bytes_released"] += sum(freed)

    async def _classify(self, disk, loc: list, raw: bytes, oldest: bool) -> str:
        """"live" (the registry points at it), "kill" (a kill record to carry) or "dead"."""
        try:
            meta = smalllog.decode(raw)
        except CorruptData:
            return "dead"
        if meta.get("kill"):
            if not oldest:
                return "kill"
            # From the oldest segment only while the write's metadata file is still on this
            # disk (a removal by id that stopped after its registry commit, until the orphan
            # sweep takes the files): the kill is what keeps a rebuild from counting it.
            try:
                meta_file = paths.meta_path(meta["bucket"], meta["key"], meta["wid"])
                return "kill" if await disk.exists(meta_file) else "dead"
            except (KeyError, TypeError, ValueError):
                return "dead"
            except DiskError:
                return "kill"
        return "live" if await self._is_live(disk, loc, meta) else "dead"

    async def _is_live(self, disk, loc: list, meta: dict) -> bool:
        try:
            entry = await smalllog.lookup_write(self.store, meta["bucket"], meta["key"], meta["wid"],
                                                meta.get("vid", "null"))
            shard = meta["shard"]
        except (KeyError, TypeError):
            return False
        if entry is None or not smalllog.uses_log(entry) or not isinstance(shard, int):
            return False
        disks = entry.get("disks") or []
        return (smalllog.location_of(entry, shard) == list(loc) and shard < len(disks)
                and disks[shard] == disk.disk_id)

    async def _move_segment(self, disk, seg: int, throttle: Throttle | None, oldest: bool) -> bool:
        """Append the segment's live records (and kill records, unless ``oldest``) again and
        point their entries at the copies; True when nothing of it is needed any more."""
        ok = True
        batch: list[tuple[list, bytes]] = []
        kills: list[bytes] = []

        async def flush() -> None:
            nonlocal ok, batch, kills
            results = await asyncio.gather(*(self._move(disk, loc, raw) for loc, raw in batch))
            ok = ok and all(results)
            if kills:
                try:
                    await disk.append_records(kills, sync=self.store.sync)
                    self.stats["kills_carried"] += len(kills)
                except DiskError as exc:
                    log.warning("log compaction of %s: %s", disk.endpoint, exc)
                    ok = False
            batch, kills = [], []

        async for loc, raw in disk.walk_records(seg):
            if throttle is not None:
                await throttle.pace(loc[2])
            kind = await self._classify(disk, loc, raw, oldest)
            if kind == "live":
                batch.append((loc, raw))
            elif kind == "kill":
                kills.append(raw)
            if len(batch) + len(kills) >= _MOVE_BATCH:
                await flush()
        await flush()
        return ok

    async def _move(self, disk, loc: list, raw: bytes) -> bool:
        """One live record to the current segment, its entry pointed at the copy. True when
        the old record is no longer needed (moved, or its write changed meanwhile)."""
        store = self.store
        meta = smalllog.decode(raw)
        bucket, key, shard = meta["bucket"], meta["key"], meta["shard"]
        async with store.locks.hold((bucket, key)):
            if not await self._is_live(disk, loc, meta):
                return True  # overwritten or removed since the scan: garbage now
            if store.cluster is not None:  # the entry keeps its locations: the record becomes a file
                try:
                    await smalllog.relocate(store, bucket, key, disk, meta)
                except DiskError as exc:
                    log.warning("log compaction of %s: %s", disk.endpoint, exc)
                    return False
                self.stats["records_moved"] += 1
                return True
            entry = await smalllog.lookup_write(store, bucket, key, meta["wid"], meta.get("vid", "null"))
            try:
                new = (await disk.append_records([raw], sync=store.sync))[0]
            except DiskError as exc:
                log.warning("log compaction of %s: %s", disk.endpoint, exc)
                return False
            assert entry is not None
            await smalllog.set_locations(store, bucket, key, entry, {shard: new}, expect={shard: list(loc)})
            self.stats["records_moved"] += 1
            return True
