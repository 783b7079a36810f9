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

What the disks hold is gathered on disk, not in memory (``Spill``: a scratch LMDB beside the
registry, one entry per write and disk, walked object by object), and the entries are committed
as each object is decided: the heap stays flat whatever the object count.

Multipart uploads in progress come back from their directories (``engine/multipart.py``): an
upload whose ``upload.meta`` at least k of its disks hold, unless a write found here completed
it (its ``mpu``), with per part number the newest part whose ``.pmeta`` and part file at least
k disks hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import lmdb
import msgpack

from buckets.engine import paths, smalllog
from buckets.engine.meta import decode_meta_file
from buckets.errors import CorruptData, DiskError, FormatError
from buckets.registry import Op
from buckets.registry.store import version_seq
from buckets.storage.format import DATA_DIR, MULTIPART_DIR, USERS_FILE

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.engine")
_DROP = ("bucket", "key", "shard", "data")


# A spilled write's kind, per disk (the last byte of its spill key).
RECORD, FILE, KILL = 0, 1, 2
_SPILL_BATCH = 4096  # spill puts per LMDB transaction
_COMMIT_BATCH = 2000  # registry ops per commit


class Spill:
    """What a rebuild found on the disks, kept on disk (a scratch LMDB beside the registry) and
    not in memory: one entry per write and disk, grouped by object (``smalllog.adopt_records``
    keeps one disk's records in one the same way, a slot in place of the disk). A rebuild held
    every write's metadata of every disk at once (about 11 KB per object: 1.1 GB of heap at
    100,000 objects); the heap now stays at a few batches whatever the object count. The disk
    space it takes instead (about 1.3 KB per write and disk: 5 GB for a million objects on 4
    disks) is given back when it closes; a disk without it fails the start with one line.

    Key: 16 bytes of the (bucket, key) hash, the write id, then the disk's index and the kind
    (a record, a metadata file, a kill record): a cursor walk yields each object's writes
    together. A record put again later (the same write rewritten on that disk) replaces the
    earlier one, as the log's newest record wins."""

    def __init__(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)  # a rebuild cut short left it
        self.path = path
        try:
            self.env = lmdb.open(path, map_size=1 << 40, sync=False, metasync=False, readahead=False, lock=True)
        except lmdb.Error as exc:
            raise self._failed(exc) from None
        self._pending: list[tuple[bytes, bytes]] = []

    def _failed(self, exc: Exception) -> FormatError:
        return FormatError(f"the registry's rebuild needs scratch space at {self.path} and could not use it "
                           f"({exc}): free space on that disk, then start again")

    def put(self, meta: dict, disk: int, kind: int) -> None:
        group = hashlib.blake2b(f"{meta['bucket']}\0{meta['key']}".encode(), digest_size=16).digest()
        key = group + meta["wid"].encode() + b"\0" + bytes((disk, kind))
        if kind == KILL:
            meta = {"bucket": meta["bucket"], "key": meta["key"]}
        self._pending.append((key, msgpack.packb(meta, use_bin_type=True)))
        if len(self._pending) >= _SPILL_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._pending.sort(key=lambda item: item[0])  # stable: a key put twice keeps its last value
            try:
                with self.env.begin(write=True) as txn:
                    txn.cursor().putmulti(self._pending)
            except lmdb.Error as exc:
                raise self._failed(exc) from None
            self._pending = []

    def objects(self) -> Iterator[dict[tuple[str, str], dict[str, dict[int, dict[int, dict]]]]]:
        """Per hash group (one object, but for a hash collision): (bucket, key) -> write id ->
        disk -> kind -> metadata (a kill's is its bucket and key)."""
        self.flush()
        with self.env.begin(buffers=False) as txn:
            group_id, group = None, {}
            for raw_key, raw_value in txn.cursor():
                if raw_key[:16] != group_id:
                    if group:
                        yield group
                    group_id, group = raw_key[:16], {}
                wid = raw_key[16:-3].decode()
                disk, kind = raw_key[-2], raw_key[-1]
                meta = msgpack.unpackb(raw_value, raw=False)
                slot = group.setdefault((meta["bucket"], meta["key"]), {}).setdefault(wid, {}).setdefault(disk, {})
                slot[kind] = meta
            if group:
                yield group

    def close(self) -> None:
        self.env.close()
        shutil.rmtree(self.path, ignore_errors=True)


async def rebuild_registry(store: "Store") -> dict:
    buckets: dict[str, float] = {}
    records: dict[str, dict] = {}  # the newest bucket record any disk holds
    unscanned = {d.disk_id for d in store.disks}  # logs not read whole (a disk away, an error)
    # upload id -> [record, disks holding it]; upload id -> pwid -> [part number, part, disks]
    uploads: dict[str, list] = {}
    stored_parts: dict[str, dict[str, list]] = defaultdict(dict)
    completed: set[str] = set()  # uploads a write names as the one it completed
    spill = Spill(store.registry.path.rstrip("/") + ".rebuild")

    async def scan(index: int, disk) -> None:
        try:
            async for loc, raw in disk.walk_records():
                try:
                    meta = smalllog.decode(raw)
                    meta["bucket"], meta["key"], meta["wid"]
                except (CorruptData, KeyError, TypeError):
                    continue
                if meta.get("kill"):
                    spill.put(meta, index, KILL)
                else:
                    meta.pop("data", None)  # never kept: only what the entry needs
                    meta["_loc"] = loc
                    spill.put(meta, index, RECORD)
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
                    meta["bucket"], meta["key"], meta["wid"]
                except (DiskError, CorruptData, KeyError, TypeError):
                    continue
                meta.pop("data", None)
                spill.put(meta, index, FILE)
        await _scan_uploads(disk, uploads, stored_parts)

    try:
        await asyncio.gather(*(scan(i, d) for i, d in enumerate(store.disks) if d.online))
        ops = [Op("put_bucket", b, value=_bucket_record(records[b], c)) for b, c in buckets.items()]
        users, policies = await _newest_users(store)
        ops += [Op("put_user", ak, value=rec) for ak, rec in users.items()]
        ops += [Op("put_policy", name, value=rec) for name, rec in policies.items()]
        objects = versions = 0
        for group in spill.objects():
            for (bucket, key), by_wid in group.items():
                readable = _readable(by_wid, completed)
                if bucket not in buckets or not readable:
                    continue
                for op in _object_ops(bucket, key, readable, records[bucket].get("versioning") is not None):
                    ops.append(op)
                    versions += op.kind == "put_version"
                objects += 1
                if len(ops) >= _COMMIT_BATCH:
                    await store.registry.commit(ops)
                    ops = []
    finally:
        spill.close()
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
    for i in range(0, len(ops), _COMMIT_BATCH):
        await store.registry.commit(ops[i:i + _COMMIT_BATCH])
    return {"buckets": len(buckets), "objects": objects, "versions": versions, "users": len(users),
            "uploads": recovered}


def _readable(by_wid: dict[str, dict[int, dict[int, dict]]], completed: set[str]) -> list[tuple]:
    """``(version seq, wid, entry metadata)`` of each write at least k disks hold (oldest first).

    Per disk a write counts once: its newest record, else its metadata file, unless a kill
    record on that disk says it was removed there. A write naming the multipart upload it
    completed (``mpu``) marks that upload done, wherever it is found."""
    readable = []
    for wid, per_disk in by_wid.items():
        meta, count, locs = None, 0, {}
        for disk, kinds in sorted(per_disk.items()):
            found = kinds.get(RECORD) or kinds.get(FILE)
            if found is None:
                continue
            if found.get("mpu"):
                completed.add(found["mpu"])
            if KILL in kinds:
                continue
            count += 1
            if meta is None:
                meta = found
            loc = found.pop("_loc", None)
            if loc is not None and isinstance(found.get("shard"), int):
                locs[found["shard"]] = loc
        if meta is not None and count >= meta["k"]:
            readable.append((version_seq(meta), wid, _entry_meta(meta, locs)))
    readable.sort()
    return readable


def _object_ops(bucket: str, key: str, readable: list[tuple], versioned: bool) -> list[Op]:
    if not versioned:
        # Never versioned: the newest write is the object (older ones are an overwrite's
        # leftovers); a delete marker there means the key was deleted.
        meta = readable[-1][2]
        if meta.get("dm"):
            return []
        return [Op("put_object", bucket, key, {f: v for f, v in meta.items() if f not in _DROP})]
    # Versioned: every version id's newest write, oldest first, so each makes the one before it
    # noncurrent (a version id written twice, "null", keeps its newest write).
    newest: dict[str, dict] = {}
    for _, _, meta in readable:
        newest[meta.get("vid", "null")] = meta
    return [Op("put_version", bucket, key, {f: v for f, v in meta.items() if f not in _DROP})
            for meta in sorted(newest.values(), key=lambda m: (version_seq(m), m["wid"]))]


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
