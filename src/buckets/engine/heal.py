"""Repair of damaged objects: verify every shard of one object, rebuild the bad ones.

``heal_object`` checks, on each disk of the object's set, that the metadata file is
present, intact and names this write and slot, and that every shard file has the length
its geometry says; a deep check also verifies every piece checksum. Bad shards are
rebuilt from any k good ones, block by block (memory bounded by one block per slot),
into the disk's staging area, fsynced, and only then renamed over the damaged files
(data first, metadata last) while holding the object's key lock and after re-checking
that the object was not overwritten meanwhile. A reader never sees a half-repaired shard:
every file is replaced whole by rename.

Slots on a source the reads currently go around (a peer behind a slow link, a disk that lags:
``engine/hedge.py``) are neither checked nor rebuilt: reading or writing them would queue behind
that link, and the install, under the key's lock, would hold the writes of that key for as long
(4 KiB PUTs waited 3-7 s behind such a heal in the slow-link scan of session 50). They are left
for later (``ObjectHealResult.deferred``): the heal queue asks again once the source keeps up,
the scanner at its next cycle.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from buckets.engine import crypto, paths, smalllog
from buckets.engine.ids import new_id
from buckets.erasure import ShardGeometry, unframe_piece
from buckets.errors import CorruptData, DiskError, DiskFull

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.heal")


@dataclass(slots=True)
class HealStats:
    objects_checked: int = 0
    shards_bad: int = 0  # shards found missing, short or corrupt
    shards_repaired: int = 0
    shards_failed: int = 0  # could not be repaired (too few good shards, disk error)
    shards_deferred: int = 0  # left for later: on a source reads go around (slow)
    objects_unrecoverable: int = 0
    orphans_removed: int = 0
    uploads_expired: int = 0


@dataclass(slots=True)
class ObjectHealResult:
    bad: list[int] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    reason: str = ""
    deferred: list[int] = field(default_factory=list)  # slots on a slow source: not checked, not rebuilt
    waits_on: list = field(default_factory=list)  # ... what they wait on (``SlowSources.avoided``)


async def _check_slot(store: "Store", bucket: str, key: str, entry: dict, slot: int, disk, deep: bool) -> bool:
    """True when this slot's shard is complete and (if deep) every piece verifies."""
    if disk is None:
        return False
    try:
        meta = await smalllog.read_slot(bucket, key, entry, slot, disk)  # its record, or its .meta file
    except (DiskError, CorruptData, ValueError):
        return False
    if meta.get("wid") != entry["wid"] or meta.get("shard") != slot:
        return False
    k, bs = entry["k"], entry["bs"]
    if entry.get("inline"):
        data = meta.get("data") or b""
        geo = ShardGeometry(k, bs, crypto.stored_length(entry))  # inline: the stored (maybe encrypted) bytes
        if len(data) != geo.shard_size:
            return False
        return _verify_frames(data, geo) if deep else True
    for part in entry["parts"]:
        geo = ShardGeometry(k, bs, part[1])
        path = paths.part_path(bucket, key, entry["wid"], part[0])
        try:
            if not deep:
                size = await disk.file_size(path)
                if size != geo.shard_size:
                    return False
                continue
            # deep: stream the shard span by span, verifying each frame
            for b0 in range(0, geo.blocks, 8):
                b1 = min(b0 + 8, geo.blocks)
                start = geo.frame_offset(b0)
                length = geo.frame_offset(b1 - 1) + geo.frame_len(b1 - 1) - start
                raw = await disk.read_range(path, start, length)
                ok = await asyncio.get_running_loop().run_in_executor(
                    store.cpu, _verify_span, raw, geo, b0, b1)
                if not ok:
                    return False
            if geo.blocks == 0 and await disk.file_size(path) != 0:
                return False
        except DiskError:
            return False
    return True


def _verify_span(raw: bytes, geo: ShardGeometry, b0: int, b1: int) -> bool:
    base = geo.frame_offset(b0)
    mv = memoryview(raw)
    for b in range(b0, b1):
        off = geo.frame_offset(b) - base
        flen = geo.frame_len(b)
        try:
            unframe_piece(mv[off:off + flen], flen - 8)
        except CorruptData:
            return False
    return True


def _verify_frames(data: bytes, geo: ShardGeometry) -> bool:
    return geo.blocks == 0 or _verify_span(data, geo, 0, geo.blocks)


async def heal_object(store: "Store", bucket: str, key: str, *, deep: bool = True) -> ObjectHealResult:
    """Check one object, every version of it (noncurrent ones and delete markers too), and
    rebuild their bad shards. Safe to run concurrently with I/O."""
    res = await _heal_version(store, bucket, key, None, deep)
    record = store.catalog.get_bucket(bucket)
    if record is not None and record.get("versioning") is not None:
        for old in await store.catalog.noncurrent_versions(bucket, key):
            more = await _heal_version(store, bucket, key, old.get("vid", "null"), deep)
            res.bad += more.bad
            res.repaired += more.repaired
            res.failed += more.failed
            res.reason = res.reason or more.reason
            res.deferred += more.deferred
            res.waits_on += [w for w in more.waits_on if w not in res.waits_on]
    return res


async def _heal_version(store: "Store", bucket: str, key: str, vid: str | None, deep: bool) -> ObjectHealResult:
    res = ObjectHealResult()

    async def lookup() -> dict | None:
        if vid is None:
            return await store.catalog.get_object(bucket, key)
        return await store.catalog.get_version(bucket, key, vid)

    entry = await lookup()
    if entry is None:
        return res
    disks = store.disks_for(entry["disks"])
    n = entry["k"] + entry["m"]
    slow = store.slow_sources
    res.deferred = [i for i in range(n) if disks[i] is not None and slow.avoids(disks[i])]
    for what in (slow.avoided(disks[i]) for i in res.deferred):
        if what not in res.waits_on:
            res.waits_on.append(what)
    checked = [i for i in range(n) if i not in res.deferred]
    checks = dict(zip(checked, await asyncio.gather(
        *(_check_slot(store, bucket, key, entry, i, disks[i], deep) for i in checked))))
    store.heal_stats.objects_checked += 1
    store.heal_stats.shards_deferred += len(res.deferred)
    res.bad = [i for i, ok in checks.items() if not ok]
    if not res.bad:
        return res
    store.heal_stats.shards_bad += len(res.bad)
    good = [i for i, ok in checks.items() if ok]
    targets = [i for i in res.bad if disks[i] is not None]
    res.failed = [i for i in res.bad if disks[i] is None]
    if len(good) < entry["k"]:
        res.failed = res.bad
        res.reason = f"only {len(good)} good shards, {entry['k']} needed"
        store.heal_stats.shards_failed += len(res.bad)
        away = len(res.failed) - len(targets) + len(res.deferred)  # (deferred: unchecked, maybe good)
        if len(good) + away >= entry["k"]:  # not lost: its disks are offline (hung, a peer down)
            res.reason += f", {away} more on disks offline or slow"
            log.warning("cannot heal %s/%s while its disks are offline: %s", bucket, key, res.reason)
            return res
        store.heal_stats.objects_unrecoverable += 1
        log.error("cannot heal %s/%s: %s", bucket, key, res.reason)
        return res
    if not targets:
        store.heal_stats.shards_failed += len(res.failed)
        return res
    txid = new_id()
    stage = paths.staging(txid)
    try:
        try:
            inline = await _rebuild_shards(store, bucket, key, entry, disks, good, targets, stage)
        except DiskError as exc:
            current = await lookup()
            if current is None or current["wid"] != entry["wid"]:
                res.reason = "object changed while healing; nothing to do"
                return res
            res.failed = list(res.bad)
            res.reason = f"rebuild failed: {exc}"
            store.heal_stats.shards_failed += len(res.failed)
            log.warning("heal of %s/%s failed: %s", bucket, key, exc)
            return res
        async with store.locks.hold((bucket, key)):
            current = await lookup()
            if current is None or current["wid"] != entry["wid"]:
                res.reason = "object changed while healing; nothing to do"
                return res
            done = await _install(store, bucket, key, entry, disks, targets, stage, inline)
    finally:
        await store._on_disks(lambda d: d.delete(stage, recursive=True), [disks[i] for i in targets])
    res.repaired = done
    res.failed += [i for i in targets if i not in done]
    store.heal_stats.shards_repaired += len(done)
    store.heal_stats.shards_failed += len(res.failed)
    if done:
        log.info("healed %s/%s: rebuilt shards %s", bucket, key, done)
    return res


async def _rebuild_shards(store, bucket, key, entry, disks, good, targets, stage) -> dict[int, bytes] | None:
    """Write the rebuilt shard files (or inline data) for ``targets`` into staging."""
    k, m, bs = entry["k"], entry["m"], entry["bs"]
    codec = store.codec_for(k, m, bs)
    loop = asyncio.get_running_loop()
    sources = good[:k]
    if entry.get("inline"):
        frames = {}
        for i in sources:
            meta = await smalllog.read_slot(bucket, key, entry, i, disks[i])
            frames[i] = meta.get("data") or b""
        geo = ShardGeometry(k, bs, crypto.stored_length(entry))  # inline: the stored (maybe encrypted) bytes
        rebuilt = {t: b"" for t in targets}
        if geo.blocks:
            for b in range(geo.blocks):
                off, flen = geo.frame_offset(b), geo.frame_len(b)
                pieces = {i: unframe_piece(frames[i][off:off + flen], flen - 8) for i in sources}
                new = codec.reconstruct_pieces(pieces, geo.block_len(b), targets)
                for t in targets:
                    rebuilt[t] += new[t]
        return rebuilt
    for part in entry["parts"]:
        number, psize = part[0], part[1]
        geo = ShardGeometry(k, bs, psize)
        src_path = paths.part_path(bucket, key, entry["wid"], number)
        writers = {t: await disks[t].create_file(f"{stage}/part.{number}") for t in targets}
        try:
            for b in range(geo.blocks):
                off, flen = geo.frame_offset(b), geo.frame_len(b)
                raws = await asyncio.gather(*(disks[i].read_range(src_path, off, flen) for i in sources))
                pieces = {i: unframe_piece(r, flen - 8) for i, r in zip(sources, raws)}
                new = await loop.run_in_executor(store.cpu, codec.reconstruct_pieces, pieces, geo.block_len(b), targets)
                await asyncio.gather(*(writers[t].write(new[t]) for t in targets))
            await asyncio.gather(*(w.close(store.sync) for w in writers.values()))
        except BaseException:
            await asyncio.gather(*(w.abort() for w in writers.values()), return_exceptions=True)
            raise
    return None


async def _install(store, bucket, key, entry, disks, targets, stage, inline) -> list[int]:
    if inline is not None and smalllog.uses_log(entry):  # new records, and the entry points at them
        return await smalllog.install(store, bucket, key, entry, disks, targets, inline)
    done = []
    mp = paths.meta_path(bucket, key, entry["wid"])
    for t in targets:
        d = disks[t]
        try:
            if inline is not None:  # a rebuilt slot is new data on its disk: not into the reserve
                await d.write_file(mp, store._disk_meta(bucket, key, entry, t, inline[t]), sync=store.sync,
                                   new_data=True)
            else:
                moves = [(f"{stage}/part.{p[0]}", paths.part_path(bucket, key, entry["wid"], p[0]))
                         for p in entry["parts"]]
                await d.rename_data(moves, (mp, store._disk_meta(bucket, key, entry, t)), sync=store.sync)
            done.append(t)
        except DiskFull as exc:
            log.info("heal of %s/%s on %s: it stays degraded until the disk has room: %s", bucket, key, d.endpoint, exc)
        except DiskError as exc:
            log.warning("heal of %s/%s on %s failed: %s", bucket, key, d.endpoint, exc)
    return done
