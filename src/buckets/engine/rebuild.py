"""Rebuild the registry from the disks' metadata files.

Every disk holds, per object write, a self-describing metadata file. For each
(bucket, key) of a bucket never versioned, the newest write that at least k disks agree on
is the object (none if it is a delete marker); older or under-replicated writes are left for
the scanner to remove. In a versioned bucket every version id's newest readable write is a
version, delete markers included, and the newest of them is current. Buckets come from each
disk's ``.bucket.meta``. Runs automatically at start when the registry is missing.

Small writes live as records in each disk's log (``engine/smalllog.py``): every segment is
scanned, and a record counts like a metadata file (its newest record per write and disk, when
the write was rewritten by a tag or ACL change, a heal or compaction), unless a kill record on
the same disk says the write was removed there. The rebuilt entry points at the records (``lg``).

Multipart uploads in progress come back from their directories (``engine/multipart.py``): an
upload whose ``upload.meta`` at least k of its disks hold, unless a write found here completed
it (its ``mpu``), with per part number the newest part whose ``.pmeta`` and part file at least
k disks hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from buckets.engine import paths, smalllog
from buckets.engine.meta import decode_meta_file
from buckets.errors import CorruptData, DiskError
from buckets.registry import Op
from buckets.registry.store import version_seq
from buckets.storage.format import DATA_DIR, MULTIPART_DIR, USERS_FILE

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.engine")
_DROP = ("bucket", "key", "shard", "data")


async def rebuild_registry(store: "Store") -> dict:
    buckets: dict[str, float] = {}
    records: dict[str, dict] = {}  # the newest bucket record any disk holds
    # (bucket, key) -> wid -> [entry, count]
    writes: dict[tuple[str, str], dict[str, list]] = defaultdict(dict)

    unscanned = {d.disk_id for d in store.disks}  # logs not read whole (a disk away, an error)
    # upload id -> [record, disks holding it]; upload id -> pwid -> [part number, part, disks]
    uploads: dict[str, list] = {}
    stored_parts: dict[str, dict[str, list]] = defaultdict(dict)
    completed: set[str] = set()  # uploads a write names as the one it completed

    async def scan(disk) -> None:
        # this disk's writes: (bucket, key, wid) -> metadata (with "_loc" when it is a record)
        found: dict[tuple[str, str, str], dict] = {}
        killed: set[tuple[str, str, str]] = set()
        try:
            async for loc, raw in disk.walk_records():
                try:
                    meta = smalllog.decode(raw)
                    ident = (meta["bucket"], meta["key"], meta["wid"])
                except (CorruptData, KeyError, TypeError):
                    continue
                if meta.get("kill"):
                    killed.add(ident)
                else:
                    meta.pop("data", None)  # never kept: a rebuild holds every write's metadata at once
                    found[ident] = dict(meta, _loc=loc)  # records come in append order: the newest wins
            unscanned.discard(disk.disk_id)
        except DiskError as exc:
            log.warning("rebuild: the log of %s could not be read whole: %s", disk.endpoint, exc)
        try:
            names = await disk.list_dir(DATA_DIR)
        except DiskError:
            names = []
        for b in names:
            try:
                meta = decode_meta_file(await disk.read_file(f"{DATA_DIR}/{b}/.bucket.meta"))
                buckets[b] = min(buckets.get(b, meta["created"]), meta["created"])
                if meta.get("version", 0) >= records.get(b, {}).get("version", 0):
                    records[b] = meta
            except (DiskError, CorruptData, KeyError):
                continue
            async for rel in disk.walk_files(f"{DATA_DIR}/{b}", ".meta"):
                if rel.endswith(".bucket.meta"):
                    continue
                try:
                    meta = decode_meta_file(await disk.read_file(rel))
                except (DiskError, CorruptData):
                    continue
                meta.pop("data", None)
                found.setdefault((meta["bucket"], meta["key"], meta["wid"]), meta)
        await _scan_uploads(disk, uploads, stored_parts)
        for ident, meta in found.items():
            if meta.get("mpu"):
                completed.add(meta["mpu"])
            if ident in killed:
                continue
            slot = writes[(ident[0], ident[1])].setdefault(ident[2], [meta, 0, {}])
            slot[1] += 1
            if "_loc" in meta and isinstance(meta.get("shard"), int):
                slot[2][meta["shard"]] = meta["_loc"]

    await asyncio.gather(*(scan(d) for d in store.disks if d.online))
    ops = [Op("put_bucket", b, value=_bucket_record(records[b], c)) for b, c in buckets.items()]
    users, policies = await _newest_users(store)
    ops += [Op("put_user", ak, value=rec) for ak, rec in users.items()]
    ops += [Op("put_policy", name, value=rec) for name, rec in policies.items()]
    objects = 0
    versions = 0
    for (bucket, key), by_wid in writes.items():
        if bucket not in buckets:
            continue
        readable = sorted((version_seq(m), wid, _entry_meta(m, locs))
                          for wid, (m, count, locs) in by_wid.items() if count >= m["k"])
        if not readable:
            continue
        if records[bucket].get("versioning") is None:
            # Never versioned: the newest write is the object (older ones are an overwrite's
            # leftovers); a delete marker there means the key was deleted.
            meta = readable[-1][2]
            if not meta.get("dm"):
                ops.append(Op("put_object", bucket, key, {f: v for f, v in meta.items() if f not in _DROP}))
                objects += 1
            continue
        # Versioned: every version id's newest write, oldest first, so each makes the one
        # before it noncurrent (a version id written twice, "null", keeps its newest write).
        newest: dict[str, dict] = {}
        for _, _, meta in readable:
            newest[meta.get("vid", "null")] = meta
        for meta in sorted(newest.values(), key=lambda m: (version_seq(m), m["wid"])):
            ops.append(Op("put_version", bucket, key, {f: v for f, v in meta.items() if f not in _DROP}))
            versions += 1
        objects += 1
    recovered = 0
    for uid, (rec, holders) in uploads.items():
        if holders < rec.get("k", 1) or uid in completed or rec.get("bucket") not in buckets:
            continue
        rec = dict(rec, parts={})
        chosen: dict[int, list] = {}
        for number, part, count in stored_parts[uid].values():
            if count < rec["k"]:
                continue
            if number not in chosen or (part[4], part[0]) > (chosen[number][4], chosen[number][0]):
                chosen[number] = part
        rec["parts"] = {str(n): part for n, part in sorted(chosen.items())}
        ops.append(Op("put_upload", rec["bucket"], uid, rec))
        recovered += 1
    # the records of a disk not scanned here are adopted when it is back (smalllog.adopt_records)
    ops.append(Op("put_sys", smalllog.UNSCANNED, value=sorted(unscanned)))
    for i in range(0, len(ops), 2000):
        await store.registry.commit(ops[i:i + 2000])
    return {"buckets": len(buckets), "objects": objects, "versions": versions, "users": len(users),
            "uploads": recovered}


async def _scan_uploads(disk, uploads: dict[str, list], stored_parts: dict[str, dict[str, list]]) -> None:
    """This disk's multipart upload directories: each ``upload.meta`` it holds, and each part
    whose ``.pmeta`` and part file it holds (both, or the part does not count here)."""
    try:
        ids = await disk.list_dir(MULTIPART_DIR)
    except DiskError:
        return
    for uid in ids:
        try:
            names = set(await disk.list_dir(paths.upload_dir(uid)))
        except DiskError:
            continue
        if paths.UPLOAD_META in names:
            try:
                rec = decode_meta_file(await disk.read_file(paths.upload_meta(uid)))
            except (DiskError, CorruptData):
                rec = None
            if isinstance(rec, dict) and rec.get("uid") == uid and isinstance(rec.get("k"), int):
                slot = uploads.setdefault(uid, [rec, 0])
                slot[1] += 1
        for name in names:
            if not name.endswith(paths.PART_META_SUFFIX):
                continue
            pwid = name[:-len(paths.PART_META_SUFFIX)]
            if f"{pwid}.part" not in names:
                continue
            try:
                meta = decode_meta_file(await disk.read_file(paths.upload_part_meta(uid, pwid)))
                number, part = int(meta["n"]), list(meta["part"])
            except (DiskError, CorruptData, KeyError, TypeError, ValueError):
                continue
            if meta.get("uid") != uid or not part or part[0] != pwid:
                continue
            slot = stored_parts[uid].setdefault(pwid, [number, part, 0])
            slot[2] += 1


def _entry_meta(meta: dict, locs: dict[int, list]) -> dict:
    """A write's metadata as a registry entry's source: a record-based write gets ``lg``, the
    location of each slot's record (None where no disk had one)."""
    meta = {f: v for f, v in meta.items() if f != "_loc"}
    if locs:
        meta[smalllog.LOG_FIELD] = [locs.get(i) for i in range(meta["k"] + meta["m"])]
    return meta


def _bucket_record(meta: dict, created: float) -> dict:
    record = {k: v for k, v in meta.items() if k not in ("bucket", "version")}
    record["created"] = created
    return record


async def _newest_users(store: "Store") -> tuple[dict, dict]:
    """The users and named policies of the newest user-table mirror any disk holds
    (secrets stay sealed)."""
    best: dict | None = None
    for disk in [d for d in store.disks if d.online]:
        try:
            snap = decode_meta_file(await disk.read_file(USERS_FILE))
        except (DiskError, CorruptData):
            continue
        if best is None or snap.get("version", 0) > best.get("version", 0):
            best = snap
    if best is None:
        return {}, {}
    return dict(best.get("users") or {}), dict(best.get("policies") or {})
