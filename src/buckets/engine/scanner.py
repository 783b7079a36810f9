"""Background integrity work: heal queue, scanner, disk monitor, refill, orphan sweep.

- The **heal worker** repairs objects that reads or writes reported as damaged.
- The **scanner** walks the registry in key order at a bounded pace (objects/s and
  MB/s), checks every object's shards (a deep piece-checksum pass every
  ``deep_every`` cycles), repairs what it finds, and checkpoints its position in the
  registry so a restart resumes where it stopped. After each full cycle it sweeps
  orphans: write files no registry entry points to, stale staging entries, and multipart
  uploads older than ``upload_max_age``. Anything younger than ``grace`` is left alone,
  because a write in flight has files on disk before its registry commit. Each cycle also
  rewrites any bucket metadata file of this node's disks that is missing or out of date (a
  refill cut short by a restart, a settings change that missed a disk).
- The **disk monitor** probes every disk's format file (``Disk.read_format``): a disk
  whose format vanished (wiped or replaced while running) is re-formatted into its old
  slot, an offline disk that answers again with its own format and takes a probe write (a
  small synced file, read back and removed) comes back; either way a
  **refill** starts: a pass that rebuilds every shard that belongs on it. An object it
  cannot refill now (too few shards readable, the index quorum lost, a disk error) is
  retried later with backoff; the disk stays ``healing`` until every object is refilled
  or gone. If the disk itself goes offline the refill pauses, and starts over when the
  monitor brings the disk back. A disk that fails the probe (gone, I/O error, foreign or
  another disk's format) is marked offline.

Everything here reaches the disks through the ``Disk`` protocol only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buckets.runtime import Workers, cancel_and_wait, run_in, wait_for
from buckets.engine import paths
from buckets.engine.bootstrap import looks_unmounted
from buckets.engine.heal import heal_object
from buckets.engine.meta import decode_meta_file
from buckets.errors import (
    BucketsError, CorruptData, DiskAccessDenied, DiskError, DiskFull, DiskSlow, FileNotFound, FormatError,
    UnformattedDisk,
)
from buckets.registry import Op
from buckets.registry.cache import background_lookups
from buckets.storage.disk import Disk
from buckets.storage.format import DATA_DIR, FORMAT_FILE, MULTIPART_DIR, TMP_DIR, DiskFormat

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.heal")

# What a heal meets while nodes or disks are away (a quorum lost, a peer or disk error, a
# timeout): expected, logged in one line without a traceback, and tried again later.
_UNAVAILABLE = (BucketsError, DiskError, asyncio.TimeoutError)
DEFERRED_MAX = 10_000  # queued heals kept for later while their slots' sources are slow
DEFERRED_CHECK = 2.0  # s between checks whether those sources keep up again


@dataclass(slots=True)
class ScannerConfig:
    objects_per_sec: float = 100.0
    mb_per_sec: float = 50.0
    deep_every: int = 8  # every Nth cycle verifies every piece checksum
    cycle_pause: float = 60.0  # seconds between cycles
    grace: float = 3600.0  # files younger than this are never treated as orphans
    upload_max_age: float = 7 * 86400.0
    monitor_interval: float = 5.0
    refill_retry: float = 5.0  # first wait before a refill retries the objects it could not refill
    refill_retry_max: float = 300.0  # the wait doubles after each round that refilled nothing, up to this


class Throttle:
    """Token pacing for objects and bytes."""

    def __init__(self, cfg: ScannerConfig) -> None:
        self.cfg = cfg
        self._t = time.monotonic()

    async def pace(self, nbytes: int) -> None:
        cost = max(1.0 / self.cfg.objects_per_sec, nbytes / (self.cfg.mb_per_sec * 1e6))
        self._t = max(self._t + cost, time.monotonic() - 1.0)
        delay = self._t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class Scanner:
    def __init__(self, store: "Store", cfg: ScannerConfig | None = None) -> None:
        self.store = store
        self.cfg = cfg or ScannerConfig()
        self.tasks: list[asyncio.Task] = []
        self.cycle = 0
        self.position = ""
        self.running_cycle = False
        self.refill: dict[str, dict] = {}  # disk id -> progress (see _start_refill)
        self.last_cycle_end = 0.0
        self._manual = asyncio.Event()
        self._force_deep = False
        self._registry_reader: Workers | None = None  # check_registry's thread
        # Queued heals whose slots on slow sources were left for later: item -> (reason, sources)
        self.deferred: dict[tuple[str, str, str], tuple[str, list]] = {}
        self._deferred_added = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, *, scan: bool = True) -> None:
        loop = asyncio.get_running_loop()
        state = self.store.registry.get_sys("scanner") or {}
        self.cycle, self.position = state.get("cycle", 0), state.get("pos", "")
        self.tasks.append(loop.create_task(self._heal_worker(), name="heal-worker"))
        self.tasks.append(loop.create_task(self._deferred_loop(), name="heal-deferred"))
        self.tasks.append(loop.create_task(self._monitor(), name="disk-monitor"))
        if scan:
            self.tasks.append(loop.create_task(self._scan_loop(), name="scanner"))
        for d in self.store.disks:
            if getattr(d, "healing", False):
                self._start_refill(d)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            await cancel_and_wait(t)
        self.tasks.clear()
        if self._registry_reader is not None:
            self._registry_reader.shutdown(wait=False)  # (a read hung in a dead disk stays behind)
            self._registry_reader = None

    def status(self) -> dict:
        s = self.store.heal_stats
        return {
            "cycle": self.cycle, "position": self.position, "scanning": self.running_cycle,
            "objects_checked": s.objects_checked, "shards_bad": s.shards_bad,
            "shards_repaired": s.shards_repaired, "shards_failed": s.shards_failed,
            "objects_unrecoverable": s.objects_unrecoverable, "orphans_removed": s.orphans_removed,
            "uploads_expired": s.uploads_expired, "queued": self.store.heal_queue.qsize(),
            "shards_deferred": s.shards_deferred, "deferred": len(self.deferred),
            "refill": {k: {f: v for f, v in r.items() if f != "task"} for k, r in self.refill.items()},
        }

    def trigger(self, *, deep: bool = True) -> None:
        """Start a full cycle now (``buckets-admin heal start``); deep by default."""
        self._force_deep = deep
        self._manual.set()

    # -- heal queue -----------------------------------------------------------------------
    async def _heal_worker(self) -> None:
        background_lookups()  # see registry.cache: the cache stays the clients'
        q = self.store.heal_queue
        while True:
            bucket, key, wid, reason = await q.get()
            self.store._heal_pending.discard((bucket, key, wid))
            try:
                res = await heal_object(self.store, bucket, key, deep=True)
                if res.deferred:
                    self._defer((bucket, key, wid), reason, res.waits_on)
            except _UNAVAILABLE as exc:  # nodes or disks away: the scanner checks it again
                log.warning("heal of %s/%s not possible now (%s: %s); the scanner will check it again",
                            bucket, key, type(exc).__name__, exc)
            except Exception:
                log.exception("heal of %s/%s failed", bucket, key)

    def _defer(self, item: tuple[str, str, str], reason: str, sources: list) -> None:
        """A queued heal left slots on slow sources for later (``heal.py``): ask again once
        none of them is avoided any more (``_deferred_loop``). Bounded like the queue; beyond
        it the scanner's next cycle finds them."""
        if item in self.deferred or len(self.deferred) < DEFERRED_MAX:
            self.deferred[item] = (reason, sources)
            self._deferred_added.set()

    async def _deferred_loop(self) -> None:
        slow = self.store.slow_sources
        while True:
            if not self.deferred:
                self._deferred_added.clear()
                await self._deferred_added.wait()
            await asyncio.sleep(DEFERRED_CHECK)
            for item, (reason, sources) in list(self.deferred.items()):
                if not any(slow.slow(source) for source in sources):
                    del self.deferred[item]
                    self.store.report_damage(*item, reason, quiet=True)

    # -- scanner ----------------------------------------------------------------------------
    async def _scan_loop(self) -> None:
        background_lookups()  # see registry.cache: the cache stays the clients'
        while True:
            try:
                await wait_for(self._manual.wait(), timeout=self.cfg.cycle_pause)
            except asyncio.TimeoutError:
                pass
            self._manual.clear()
            deep, self._force_deep = (True if self._force_deep else None), False
            try:
                await self.run_cycle(deep=deep)
            except Exception:
                log.exception("scanner cycle failed")

    async def run_cycle(self, *, deep: bool | None = None, paced: bool = True) -> dict:
        """One pass over every object from the checkpoint, then the orphan sweep."""
        store = self.store
        deep = (self.cycle % self.cfg.deep_every == 0) if deep is None else deep
        throttle = Throttle(self.cfg)
        self.running_cycle = True
        checked = 0
        try:
            if deep and not await self.check_registry(paced):
                return {"checked": 0, "deep": deep, "registry_failed": True}
            start = self.position.encode() if self.position else b""
            batch: list = []
            for bucket, key, entry in store.registry.walk_objects(start):
                if "\x01" in bucket:  # a cluster's upload records, not objects
                    continue
                batch.append((bucket, key, entry["size"]))
                if len(batch) >= 64:
                    checked += await self._scan_batch(batch, deep, throttle if paced else None)
                    batch = []
            if batch:
                checked += await self._scan_batch(batch, deep, throttle if paced else None)
            self.cycle += 1
            self.position = ""
            await store.registry.commit([Op("put_sys", "scanner", value={"cycle": self.cycle, "pos": ""})])
            rewritten = await self.check_bucket_files()
            swept = await self.sweep()
            self.last_cycle_end = time.time()
            return {"checked": checked, "deep": deep, "bucket_files_rewritten": rewritten, **swept}
        finally:
            self.running_cycle = False

    async def check_registry(self, paced: bool = True) -> bool:
        """A deep cycle reads this node's registry through from its disk first (past the page
        cache, at the scanner's pace: ``registry.store.read_through``). Its walk below, and any
        lookup, reads the registry through LMDB's map, where a page the disk cannot read ends
        the process with SIGBUS; found here it is an EIO, and the registry is failed
        (``Registry.fail``: a single node restarts in place and rebuilds it on another disk, a
        cluster node's replica refuses its merges). False when the registry failed."""
        from buckets.registry import store as registry_store

        registry = self.store.registry
        if registry.failed is not None or registry.closed:
            return registry.failed is None
        if self._registry_reader is None:
            self._registry_reader = Workers(max_workers=1, thread_name_prefix="registry-check")
        rate = self.cfg.mb_per_sec * 1e6 if paced else None
        stop = threading.Event()
        try:
            await run_in(self._registry_reader, lambda: registry_store.read_through(
                registry.path, [0], media=True, rate=rate, stop=stop))
        except OSError as exc:
            registry.fail(f"its disk cannot read it ({exc.strerror})")
            return False
        finally:
            stop.set()  # (cancelled: the thread stops at its next read)
        return True

    async def _scan_batch(self, batch, deep: bool, throttle: Throttle | None) -> int:
        unavailable: list[tuple[str, str, BaseException]] = []
        for bucket, key, size in batch:
            if throttle is not None:
                await throttle.pace(size if deep else 0)
            try:
                await heal_object(self.store, bucket, key, deep=deep)
            except _UNAVAILABLE as exc:  # nodes or disks away: checked again next cycle
                unavailable.append((bucket, key, exc))
            except Exception:
                log.exception("scan of %s/%s failed", bucket, key)
        if unavailable:  # one line for the batch
            bucket, key, exc = unavailable[0]
            more = f" and {len(unavailable) - 1} more" if len(unavailable) > 1 else ""
            log.warning("scan could not check %s/%s%s now (%s: %s); the next cycle checks them again",
                        bucket, key, more, type(exc).__name__, exc)
        last_bucket, last_key, _ = batch[-1]
        self.position = f"{last_bucket}\0{last_key}\0"  # resume strictly after this key
        await self.store.registry.commit(
            [Op("put_sys", "scanner", value={"cycle": self.cycle, "pos": self.position})])
        return len(batch)

    async def check_bucket_files(self) -> int:
        """Make every bucket's metadata file on this node's disks say what the catalog says;
        returns how many were rewritten. A disk's refill is what writes them after a wipe,
        and a refill cut short by a restart is not resumed (the disk is formatted by then),
        so without this a disk could miss them for good (a registry rebuild reads them)."""
        from buckets.engine.meta import bucket_meta_file

        store = self.store
        rewritten = 0
        disks = [d for d in store.disks if d.online and d.local_path("") is not None]
        for name, _ in store.catalog.list_buckets():
            async with store.locks.hold(("bucket", name)):  # not racing a settings change
                record = store.catalog.get_bucket(name)
                if record is None:
                    continue
                for disk in disks:
                    try:
                        have = decode_meta_file(await disk.read_file(paths.bucket_meta(name)))
                        if {k: v for k, v in have.items() if k not in ("bucket", "version")} == record:
                            continue
                    except (DiskError, CorruptData):
                        pass
                    try:
                        await disk.write_file(paths.bucket_meta(name), bucket_meta_file(name, record), sync=store.sync)
                        rewritten += 1
                    except DiskError as exc:
                        log.warning("cannot rewrite bucket %s's metadata file on %s: %s", name, disk.endpoint, exc)
        if rewritten:
            log.warning("rewrote %d bucket metadata files that were missing or out of date", rewritten)
        return rewritten

    # -- orphans ----------------------------------------------------------------------------
    async def sweep(self, *, grace: float | None = None) -> dict:
        grace = self.cfg.grace if grace is None else grace
        store = self.store
        cutoff = time.time() - grace
        removed = 0
        try:
            # (on a cluster a linearizable read: a bucket created through another node a moment
            # ago is one; if the control plane does not answer, nothing is swept)
            buckets = [name for name, _ in await store.catalog.fresh_buckets()]
            uploads = {name: await store.catalog.list_uploads(name) for name in buckets}
        except BucketsError as exc:  # a cluster without its index quorum: sweep nothing rather than guess
            log.info("orphan sweep skipped: %s", exc)
            return {"orphans_removed": 0, "uploads_expired": 0}
        # Each node sweeps only its own disks (in a cluster, peers sweep theirs).
        for disk in [d for d in store.disks if d.online and d.local_path("") is not None]:
            removed += await self._sweep_disk(disk, cutoff, {u["uid"] for ups in uploads.values() for u in ups},
                                              set(buckets))
        expired = 0
        for name, ups in uploads.items():
            for up in ups:
                if up["init"] < time.time() - self.cfg.upload_max_age:
                    try:
                        await store.abort_multipart_upload(name, up["key"], up["uid"])
                        expired += 1
                    except Exception:
                        log.exception("expiring upload %s failed", up["uid"])
        store.heal_stats.orphans_removed += removed
        store.heal_stats.uploads_expired += expired
        return {"orphans_removed": removed, "uploads_expired": expired}

    async def _sweep_disk(self, disk: Disk, cutoff: float, live_uploads: set[str], buckets: set[str]) -> int:
        removed = 0
        # staging and upload directories nobody owns any more
        for base, keep in ((TMP_DIR, set()), (MULTIPART_DIR, live_uploads)):
            try:
                stale = [e.path async for e in disk.walk_entries(base, 1)
                         if e.mtime < cutoff and e.path.rsplit("/", 1)[-1] not in keep]
                for path in stale:
                    await disk.delete(path, recursive=True)
                    removed += 1
            except DiskError as exc:
                log.warning("sweep of %s on %s stopped: %s", base, disk.endpoint, exc)
        # object writes the registry does not point to
        try:
            on_disk = [e async for e in disk.walk_entries(DATA_DIR, 1)]
        except DiskError:
            return removed
        for e in on_disk:
            b = e.path.rsplit("/", 1)[-1]
            if b in buckets:
                removed += await self._sweep_bucket(disk, b, cutoff)
            elif e.mtime < cutoff:
                # The directory of a bucket that no longer exists, untouched for the grace
                # period: its DeleteBucket did not reach this disk (offline then, or its node
                # down), or a CreateBucket failed after writing its metadata here.
                try:
                    await disk.delete(e.path, recursive=True)
                    removed += 1
                    log.info("sweep: removed %s on %s (no such bucket)", e.path, disk.endpoint)
                except DiskError as exc:
                    log.warning("sweep of %s on %s stopped: %s", e.path, disk.endpoint, exc)
        return removed

    async def _sweep_bucket(self, disk: Disk, bucket: str, cutoff: float) -> int:
        """Remove the writes under a bucket that no registry entry points to: for each
        ``<fan>/<h>.<wid>.meta`` and ``<fan>/<h>.<wid>/`` older than the cutoff. A disk
        error other than a missing or corrupt file stops the pass: a metadata file that
        could not be read (timeout, I/O error) may well be the current write's."""
        store = self.store
        removed = 0
        gone: set[str] = set()  # writes removed in this pass (their other entry may follow)
        try:
            async for entry in disk.walk_entries(f"{DATA_DIR}/{bucket}", 2):
                is_meta = entry.path.endswith(".meta")
                rel = entry.path[:-5] if is_meta else entry.path
                _h, _, wid = rel.rsplit("/", 1)[-1].partition(".")
                if not wid or entry.mtime >= cutoff or rel in gone:
                    continue
                if is_meta:
                    try:
                        meta = decode_meta_file(await disk.read_file(rel + ".meta"))
                        current = await store.catalog.get_object(bucket, meta["key"])
                        if current is not None and current["wid"] != wid and current.get("vid", "null") != meta.get("vid", "null"):
                            # a noncurrent version's write (versioned buckets) is kept as well
                            current = await store.catalog.get_version(bucket, meta["key"], meta.get("vid", "null"))
                        # The current write's shard, on a disk its entry names: kept. The same
                        # write on another disk is a shard a migration vacated (its coordinator
                        # died before the delayed removal) or copied without committing.
                        if current is not None and current["wid"] == wid and disk.disk_id in current.get("disks", ()):
                            continue
                    except FileNotFound:
                        continue  # removed meanwhile (an overwrite's cleanup)
                    except (CorruptData, KeyError, ValueError, TypeError):
                        pass  # unreadable metadata of a write nobody can name: an orphan
                    await disk.delete(rel + ".meta")
                    await disk.delete(rel, recursive=True)
                elif not await disk.exists(rel + ".meta"):
                    # a data directory without its metadata: a write that never finished
                    await disk.delete(rel, recursive=True)
                else:
                    continue
                gone.add(rel)
                removed += 1
        except (DiskError, BucketsError) as exc:  # BucketsError: the cluster index did not answer
            log.warning("sweep of bucket %s on %s stopped: %s", bucket, disk.endpoint, exc)
        return removed

    # -- disks ------------------------------------------------------------------------------
    async def _monitor(self) -> None:
        while True:
            # This node's own disks keep their ballast (``LocalDisk.keep_ballast``); a peer's
            # are its node's to keep.
            for disk in self.store.disks:
                await disk.upkeep()
            await asyncio.sleep(self.cfg.monitor_interval)
            try:
                await self.check_disks()
            except Exception:
                log.exception("disk monitor failed")

    async def check_disks(self) -> None:
        """Probe every disk once, all at the same time: a disk that hangs (or a peer that
        does not answer) delays only its own probe (see the module docstring)."""
        await asyncio.gather(*(self._probe(slot, disk) for slot, disk in enumerate(self.store.disks)))

    async def _probe(self, slot: int, disk: Disk) -> None:
        store = self.store
        ref = store.boot
        try:
            fmt = DiskFormat.from_json(await disk.read_format(), f"{disk.endpoint}/{FORMAT_FILE}")
        except UnformattedDisk:
            fmt = None
        except DiskSlow:  # its node answers, slowly (a saturated link): neither gone nor back
            return
        except (DiskError, FormatError) as exc:
            disk.mark_offline(str(exc))
            return
        # A disk the cluster added after this node started (``buckets.cluster.node``) is past the
        # format's slots: it is known by its id, and only its own node re-formats it.
        added = slot >= len(ref.disk_ids)
        expected = disk.disk_id if added else ref.disk_ids[slot]
        if fmt is not None:
            if fmt.deployment_id != ref.deployment_id or fmt.disk_id != expected:
                disk.mark_offline(f"{disk.endpoint} now holds disk {fmt.disk_id} of deployment "
                                  f"{fmt.deployment_id}, not this slot's disk {expected}")
                return
            if disk.online:
                return
            problem = await self._cannot_write(disk)
            if problem is not None:
                # Its format file reads back (perhaps from the page cache), but a write
                # fails with an I/O error: a failing device. Bringing it back would only start
                # a refill that fails, at every probe.
                disk.mark_offline(f"{disk.endpoint} answers but cannot take a write: {problem}")
                return
            log.warning("disk %s is back online: refilling what was written while it was away", disk.endpoint)
        elif added:
            disk.mark_offline(f"{disk.endpoint} has no format: its own node formats it again")
            return
        else:
            # no format file: wiped/replaced while running, or its root is still missing
            why = looks_unmounted(disk, [d for d in store.disks if d.online and not d.healing])
            if why is not None:
                if not disk.online and disk.last_error != why:  # (going offline logs it itself)
                    log.error("disk %s: %s", disk.endpoint, why)
                disk.mark_offline(why)
                return
            try:
                await disk.write_format(ref.format_for(slot).to_json(), create_root=False, sync=store.sync)
            except DiskError as exc:
                disk.mark_offline(str(exc))
                return
            log.warning("disk %s lost its format (wiped or replaced): re-formatted into slot %d, refilling",
                        disk.endpoint, slot)
        disk.mark_online()
        disk.healing = True
        self._start_refill(disk)

    async def _cannot_write(self, disk: Disk) -> str | None:
        """Write a small file to the disk (synced as the store syncs), read it back and remove
        it: None if all of that worked, else what failed. Only for an offline disk about to
        come back. A probe file left behind by a failure here is swept with the staging
        directory."""
        path = f"{TMP_DIR}/probe-{os.urandom(8).hex()}"
        token = os.urandom(32)
        try:
            await disk.write_file(path, token, sync=self.store.sync)
            back = await disk.read_file(path)
            await disk.delete(path)
        except (DiskFull, DiskAccessDenied):
            # Full, or a permission refused: not failing. It comes back as such a disk does at
            # start: its shards are read, its writes refused as they come. (A file system gone
            # read-only is ``DiskFaulty``: it stays offline until it takes a write again.)
            return None
        except DiskError as exc:
            return str(exc)
        return None if back == token else "the probe file read back different bytes"

    def _start_refill(self, disk) -> None:
        current = self.refill.get(disk.disk_id)
        if current is not None and current.get("task") is not None and not current["task"].done():
            # Already refilling (perhaps waiting to retry): the disk was away again meanwhile,
            # so what was written then is missed too; the running refill starts a new pass.
            current["again"] = True
            return
        task = asyncio.get_running_loop().create_task(self._refill(disk), name="refill")
        # total/done: objects of the registry and of the current pass; repaired: shards
        # rebuilt; failed: object refills that failed (each retry counts again); pending:
        # objects waiting for a retry; state: refilling, retrying, paused (the disk is
        # offline: the monitor restarts the refill when it is back) or finished.
        self.refill[disk.disk_id] = {"endpoint": disk.endpoint, "total": self.store.registry.count_objects(),
                                     "done": 0, "repaired": 0, "failed": 0, "pending": 0, "retries": 0,
                                     "state": "refilling", "started": time.time(), "finished": None,
                                     "again": False, "task": task}
        self.tasks.append(task)

    async def _refill(self, disk) -> None:
        """Rebuild every shard that belongs on ``disk``: a full pass, then rounds that retry
        what failed (with backoff) until nothing is left; only then is the disk healed."""
        background_lookups()
        st = self.refill[disk.disk_id]
        pending: dict[tuple[str, str], str] = {}  # (bucket, key) -> why its last attempt failed
        full_pass = True
        delay = self.cfg.refill_retry
        while True:
            if not disk.online:
                st["state"] = "paused"
                log.warning("refill of %s paused: the disk is offline (%s); it starts over when the disk is back",
                            disk.endpoint, disk.last_error or "no reason given")
                return
            before = len(pending)
            retry_round = not (full_pass or st["again"])
            try:
                if not retry_round:
                    st["again"] = False
                    st["done"] = 0
                    st["total"] = self.store.registry.count_objects()
                    await self._refill_pass(disk, st, pending)
                else:
                    st["retries"] += 1
                    await self._refill_retry(disk, st, pending)
            except Exception:  # a bug: logged with its traceback, and the pass runs again later
                log.exception("refill of %s failed", disk.endpoint)
                full_pass = True
            else:
                full_pass = False
            st["pending"] = len(pending)
            if not disk.online:
                continue  # paused, above
            if not pending and not full_pass:
                if st["again"]:
                    continue  # the disk was away again meanwhile: one more full pass at once
                break
            # Wait before the next round; longer after a retry round that refilled nothing.
            if retry_round and len(pending) >= before:
                delay = min(delay * 2, self.cfg.refill_retry_max)
            else:
                delay = self.cfg.refill_retry
            st["state"] = "retrying"
            if pending:
                (bucket, key), why = next(iter(pending.items()))
                log.warning("refill of %s: %d objects left to refill (%s/%s: %s); retrying in %gs",
                            disk.endpoint, len(pending), bucket, key or "(bucket metadata)", why, delay)
            await asyncio.sleep(delay)
            st["state"] = "refilling"
        disk.healing = False
        st["state"] = "finished"
        st["finished"] = time.time()
        log.warning("refill of %s finished: %d shards rebuilt", disk.endpoint, st["repaired"])

    async def _refill_pass(self, disk, st: dict, pending: dict[tuple[str, str], str]) -> None:
        """Every bucket's metadata file, then every object whose set holds ``disk``. Objects
        that fail are put in ``pending`` (one warning line per batch of failures)."""
        from buckets.engine import smalllog
        from buckets.engine.meta import bucket_meta_file

        try:  # records the registry lost track of while the disk was away (a rebuild without it)
            adopted = await smalllog.adopt_records(self.store, disk)
            if adopted:
                log.warning("refill of %s: %d records on the disk adopted by their entries", disk.endpoint, adopted)
        except (*_UNAVAILABLE, FormatError) as exc:  # (FormatError: no scratch space for the scan)
            log.warning("refill of %s: its log could not be scanned (%s); its slots are rebuilt", disk.endpoint, exc)
        for name, rec in self.store.catalog.list_buckets():
            data = bucket_meta_file(name, self.store.catalog.get_bucket(name) or rec)
            try:
                await disk.write_file(paths.bucket_meta(name), data, sync=self.store.sync)
            except _UNAVAILABLE as exc:
                pending[(name, "")] = f"the bucket's metadata file: {exc}"
                if not disk.online:
                    return
            else:
                pending.pop((name, ""), None)
        # In a cluster this node's registry holds only the buckets it replicates: the
        # other replicas' nodes refill the rest (each walks its own replica).
        failed: list[tuple[str, str, str]] = []
        for bucket, key, entry in self.store.registry.walk_objects():
            if "\x01" not in bucket and disk.disk_id in entry["disks"]:
                why = await self._refill_object(disk, st, bucket, key)
                if why is None:
                    pending.pop((bucket, key), None)
                else:
                    pending[(bucket, key)] = why
                    failed.append((bucket, key, why))
                    if not disk.online:
                        break
            st["done"] += 1
            if st["done"] % 64 == 0:
                self._log_refill_failures(disk, failed)
                failed = []
                await asyncio.sleep(0)
        self._log_refill_failures(disk, failed)

    async def _refill_retry(self, disk, st: dict, pending: dict[tuple[str, str], str]) -> None:
        """One more attempt at every object in ``pending``; those that succeed (or are gone,
        or no longer on this disk) leave it. The caller logs what is left, in one line."""
        for n, (bucket, key) in enumerate(list(pending)):
            if not disk.online:
                break
            if key == "":  # a bucket's metadata file
                rec = dict(self.store.catalog.list_buckets()).get(bucket)
                if rec is None:
                    del pending[(bucket, key)]
                    continue
                from buckets.engine.meta import bucket_meta_file

                try:
                    await disk.write_file(paths.bucket_meta(bucket),
                                          bucket_meta_file(bucket, self.store.catalog.get_bucket(bucket) or rec),
                                          sync=self.store.sync)
                    del pending[(bucket, key)]
                except _UNAVAILABLE as exc:
                    pending[(bucket, key)] = f"the bucket's metadata file: {exc}"
                continue
            entry = self.store.registry.get_object(bucket, key)
            if entry is None or disk.disk_id not in entry.get("disks", ()):
                del pending[(bucket, key)]  # deleted, or overwritten onto other disks
                continue
            why = await self._refill_object(disk, st, bucket, key)
            if why is None:
                del pending[(bucket, key)]
            else:
                pending[(bucket, key)] = why
            if n % 64 == 63:
                await asyncio.sleep(0)

    async def _refill_object(self, disk, st: dict, bucket: str, key: str) -> str | None:
        """Rebuild ``disk``'s shard of one object: None once it is in place (or the object
        is gone), otherwise why not (the object is then retried later)."""
        try:
            res = await heal_object(self.store, bucket, key, deep=False)
            st["repaired"] += len(res.repaired)
            if not res.failed and not res.deferred:
                return None
            # Some slot could not be rebuilt: is it this disk's? (Another disk being away
            # is that disk's refill to deal with.)
            entry = await self.store.catalog.get_object(bucket, key)
        except _UNAVAILABLE as exc:
            # A quorum lost (index or shards), a peer or disk away: expected while nodes
            # come and go, so no traceback; the object is retried.
            st["failed"] += 1
            return f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug: logged with its traceback, and the object retried
            log.exception("refill of %s: %s/%s failed", disk.endpoint, bucket, key)
            st["failed"] += 1
            return f"{type(exc).__name__}: {exc}"
        if entry is None:
            return None
        mine = {i for i, d in enumerate(entry["disks"]) if d == disk.disk_id}
        if mine & set(res.deferred):  # (not a failure: retried once the disk keeps up)
            return "the disk lags behind the others (a slow link or disk): its shard is rebuilt once it keeps up"
        if not mine & set(res.failed):
            return None
        st["failed"] += 1
        return res.reason or ("the disk is offline" if not disk.online else "its shard could not be written")

    @staticmethod
    def _log_refill_failures(disk, failed: list[tuple[str, str, str]]) -> None:
        """One warning line for a batch of objects a refill could not refill (no traceback)."""
        if failed:
            bucket, key, why = failed[0]
            more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
            log.warning("refill of %s: could not refill %s/%s%s for now (%s); will retry",
                        disk.endpoint, bucket, key, more, why)
