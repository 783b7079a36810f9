"""Small writes through the disks' record logs (issue 15).

An inline object (its data fits in the metadata, ``inline_threshold``) and a delete marker
are written as one *record* per disk instead of one ``<h>.<wid>.meta`` file per disk: the
record's payload is exactly what the metadata file would hold (msgpack of the entry plus
``bucket``, ``key``, ``shard``, ``data``), appended to the disk's log with
``Disk.append_records``, which group-commits concurrent appends (one write and one fsync per
disk for a burst of PUTs). The registry entry keeps each slot's record location in ``lg``
(``[segment, offset, length]`` or None for a slot that has none), so a read is one
``read_record`` (one pread). Entries without ``lg`` are writes from before the log (or from a
store running with it off): their ``.meta`` files are read as always.

Removing a write from the disks (an overwrite's or a delete's cleanup, a failed write) cannot
unlink a record: it appends a *kill record* ``{kill, bucket, key, wid}`` instead, which tells a
registry rebuild that the write is gone on that disk (what deleting its ``.meta`` file said).
Records nothing points to are garbage, reclaimed by compaction (``engine/compaction.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import msgpack

from buckets import errors
from buckets.engine import hedge, paths
from buckets.engine.meta import decode_meta_file, encode_meta_file
from buckets.registry.entrycodec import compact, expand  # noqa: F401 - the records' codec
from buckets.errors import CorruptData, DiskError, DiskFull
from buckets.registry import Op

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.engine")

LOG_FIELD = "lg"
# registry sys key: ids of the disks whose logs the last registry rebuild could not scan
UNSCANNED = "log_unscanned"


def uses_log(entry: dict) -> bool:
    return entry.get(LOG_FIELD) is not None


def encode(payload: dict) -> bytes:
    return msgpack.packb(payload, use_bin_type=True)


def decode(raw: bytes) -> dict:
    """A record's payload (expanded, see ``compact``); ``CorruptData`` when it is not a
    metadata dict (a disk that cut it)."""
    try:
        doc = msgpack.unpackb(raw, raw=False)
        if isinstance(doc, dict) and doc.get("z"):
            doc = expand(doc)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError, KeyError,
            IndexError) as exc:
        raise CorruptData(f"record payload does not decode: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptData("record payload is not a metadata record")
    return doc


def slot_payload(bucket: str, key: str, entry: dict, shard: int, data: bytes | None) -> bytes:
    payload = {f: v for f, v in entry.items() if f != LOG_FIELD}
    payload.update(bucket=bucket, key=key, shard=shard)
    if data is not None:
        payload["data"] = data
    return encode(compact(payload))


def slot_payloads(bucket: str, key: str, entry: dict, data: dict[int, bytes | None]) -> dict[int, bytes]:
    """``slot_payload`` for many slots of one write: the fields they share are packed once and
    each slot's ``shard`` and ``data`` appended to them (the same msgpack map, byte for byte
    what ``slot_payload`` gives but for the order of the last keys)."""
    common = {f: v for f, v in entry.items() if f not in (LOG_FIELD, "shard", "data")}
    common.update(bucket=bucket, key=key)
    common = compact(common)
    body = msgpack.packb(common, use_bin_type=True)
    n = len(common)
    head = _map_header(n)
    shared = body[len(head):]
    out = {}
    for i, d in data.items():
        extra = [b"\xa5shard", msgpack.packb(i)]
        if d is not None:
            extra += [b"\xa4data", msgpack.packb(d, use_bin_type=True)]
        out[i] = _map_header(n + len(extra) // 2) + shared + b"".join(extra)
    return out


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


def location_of(entry: dict, slot: int) -> list | None:
    locs = entry.get(LOG_FIELD) or []
    return locs[slot] if slot < len(locs) else None


async def read_slot(bucket: str, key: str, entry: dict, slot: int, disk) -> dict:
    """The metadata of ``slot`` of this write on ``disk``: its record (the entry names one for
    the slot) or its ``.meta`` file (a slot a migration copied to a disk of a cluster, where
    small writes are files). ``DiskError``/``CorruptData`` when missing or damaged; the caller
    checks that it names this write and slot (a stale location may hold another record)."""
    loc = location_of(entry, slot) if uses_log(entry) else None
    meta_path = paths.meta_path(bucket, key, entry["wid"])
    if loc is None:
        return decode_meta_file(await disk.read_file(meta_path))
    try:
        meta = decode(await disk.read_record(loc))
        if meta.get("bucket") == bucket and meta.get("key") == key and meta.get("wid") == entry["wid"]:
            return meta
        failed: Exception = CorruptData(f"the record at {loc} is not one of {bucket}/{key} write {entry['wid']}")
    except (DiskError, CorruptData) as exc:
        failed = exc
    # On a cluster a slot's record location never changes after the write (see ``relocate``):
    # a record that compaction or a heal moved is this write's ``.meta`` file on the same disk.
    try:
        return decode_meta_file(await disk.read_file(meta_path))
    except (DiskError, CorruptData):
        raise failed from None


async def local_records(store: "Store", bucket: str, key: str, entry: dict) -> list:
    """``[[slot, record], ...]`` for the slots of this log write whose disk is one of this
    node's own (a cluster node answering a GET's index lookup, see ``IndexReplica.get``):
    page-cache reads on the event loop, mostly. A slot whose record is gone or unreadable is
    left out (the reader then reads it, from its ``.meta`` file if it moved). Nothing for a
    write that does not use the log, or one too big to carry in an answer."""
    from buckets.storage.local import LocalDisk

    if not uses_log(entry) or not entry.get("inline") or int(entry.get("size") or 0) > store.inline_threshold:
        return []
    slots = [(slot, disk, loc) for slot, disk_id in enumerate(entry.get("disks") or [])
             if isinstance(disk := store.by_id.get(disk_id), LocalDisk) and disk.online
             and (loc := location_of(entry, slot)) is not None]

    async def one(slot: int, disk, loc) -> list | None:
        try:
            return [slot, await disk.read_record(loc)]
        except (DiskError, CorruptData, ValueError):
            return None

    return [r for r in await asyncio.gather(*(one(*s) for s in slots)) if r is not None]


async def relocate(store: "Store", bucket: str, key: str, disk, meta: dict, *, new_data: bool = False) -> None:
    """Store a slot's metadata (a decoded record: the entry's fields, ``bucket``, ``key``,
    ``shard``, ``data``) as the write's ``.meta`` file on ``disk``, which ``read_slot`` finds
    when the record is gone. A cluster's compaction and heal do this instead of appending a
    new record and pointing the entry at it: the entry lives in the replicated index, where
    changing it would race with writes of the same key through other nodes (last writer
    wins), so a write's record locations are fixed when it commits. ``new_data`` (a heal: the
    slot's data was not on this disk) is refused below the disk's reserve (``DiskFull``);
    compaction's copy of a record the disk holds may go into it."""
    payload = {f: v for f, v in meta.items() if f not in (LOG_FIELD, "z")}
    await disk.write_file(paths.meta_path(bucket, key, payload["wid"]), encode_meta_file(payload), sync=store.sync,
                          new_data=new_data)


async def append_slots(store: "Store", bucket: str, key: str, entry: dict, disks: list,
                       data: dict[int, bytes | None], *, full: set[int] | None = None,
                       new_data: bool | None = None, quorum: int | None = None) -> dict[int, list]:
    """Append slot ``i``'s record (with ``data[i]``) to ``disks[i]`` for every ``i`` in ``data``;
    the locations of those that succeeded, by slot. ``new_data`` (by default: any record but a
    delete marker's) is refused by a disk at its free-space reserve: those slots are added to
    ``full``. A metadata change's records (the same data again) are not new data.

    ``quorum`` (a new write): once that many slots have their record, the others are waited
    for ``hedge.LAG_MIN`` seconds more at most (a disk or peer that lags far behind: a slow
    link); those still out are left out of the answer (the write is degraded and healed after
    its commit, as with a disk that failed) and finish on their own: a record that lands later
    is one no entry points at, which compaction reclaims."""
    out: dict[int, list] = {}
    payloads = slot_payloads(bucket, key, entry, {i: data[i] for i in data if disks[i] is not None})
    if new_data is None:
        new_data = not entry.get("dm")

    async def one(i: int) -> None:
        d = disks[i]
        if d is None:
            return
        try:
            out[i] = (await d.append_records([payloads[i]], sync=store.sync, data=new_data))[0]
        except DiskFull as exc:
            log.info("disk %s: %s", d.endpoint, exc)
            if full is not None:
                full.add(i)
        except DiskError as exc:
            log.warning("disk %s: %s", d.endpoint, exc)

    calls = {asyncio.ensure_future(one(i)): i for i in data}
    if quorum is None:
        await asyncio.gather(*calls)
        return out
    await hedge.until_quorum(calls, quorum, lambda f: calls[f] in out,
                             lambda f, i, lag: store.lagging_call(f, disks[i], lag, [disks[j] for j in out]),
                             lambda i: store.known_slow(disks[i]),
                             lambda slots: store.kept_up(disks[i] for i in slots))
    return dict(out)  # a copy: what lands later is not the write's


async def kill(store: "Store", bucket: str, key: str, wid: str, disks: list, *, sync: bool = False) -> int:
    """Record on each disk that write ``wid`` is gone (see the module doc); returns on how many
    disks it was recorded. Not synced on its own unless ``sync`` (as an unlink is not): a later
    synced append carries it."""
    payload = encode({"kill": True, "bucket": bucket, "key": key, "wid": wid})

    async def one(d) -> bool:
        if d is None:
            return False
        try:
            await d.append_records([payload], sync=sync)
            return True
        except DiskError as exc:
            log.info("disk %s: the removal of %s/%s write %s was not recorded: %s", d.endpoint, bucket, key, wid, exc)
            return False

    return sum(await asyncio.gather(*(one(d) for d in disks)))


async def release(store: "Store", wid: str, disks: list, locs: list | None) -> int:
    """Free at once the space of a removed write's records: on each disk its slot's record
    (``Disk.release_records``, which checks it is one of ``wid``'s). Called where the write's
    files would be unlinked; best effort: what a disk does not release, compaction reclaims.
    The bytes freed."""
    if not locs:
        return 0

    async def one(d, loc) -> int:
        if d is None or not isinstance(loc, list):
            return 0
        try:
            return await d.release_records(wid, [loc])
        except (DiskError, errors.BucketsError) as exc:  # (a disk's errors are not BucketsErrors)
            log.info("disk %s: the records of removed write %s stay until compaction: %s", d.endpoint, wid, exc)
            return 0

    return sum(await asyncio.gather(*(one(d, loc) for d, loc in zip(disks, locs))))


async def lookup_write(store: "Store", bucket: str, key: str, wid: str, vid: str | None) -> dict | None:
    """The registry entry of write ``wid`` (the key's current version or its version ``vid``)."""
    entry = await store.catalog.get_object(bucket, key)
    if entry is not None and entry.get("wid") == wid:
        return entry
    if vid is None:
        return None
    entry = await store.catalog.get_version(bucket, key, vid)
    return entry if entry is not None and entry.get("wid") == wid else None


async def set_locations(store: "Store", bucket: str, key: str, entry: dict, new: dict[int, list | None],
                        expect: dict[int, list | None] | None = None) -> bool:
    """Point slots of ``entry``'s write at new records: a compare-and-set on the write id and,
    per slot in ``expect``, the old location. The caller holds the key's lock, so no commit of
    this key runs meanwhile; False when the write or a location changed (someone else won)."""
    current = await lookup_write(store, bucket, key, entry["wid"], entry.get("vid", "null"))
    if current is None or not uses_log(current):
        return False
    locs = list(current[LOG_FIELD])
    for slot, old in (expect or {}).items():
        if (locs[slot] if slot < len(locs) else None) != old:
            return False
    n = current["k"] + current["m"]
    locs += [None] * (n - len(locs))
    for slot, loc in new.items():
        locs[slot] = loc
    updated = {f: v for f, v in current.items() if f != "ts"}
    updated[LOG_FIELD] = locs
    updated.setdefault("vid", "null")
    return await store.catalog.update_version(bucket, key, updated)


async def rewrite_records(store: "Store", bucket: str, key: str, entry: dict, updated: dict) -> list:
    """New records of ``entry``'s write carrying ``updated``'s fields (tags, lock, ACL changed)
    on each of its disks; the new ``lg`` list (None where a disk could not take it: its next
    heal rewrites it from the entry). The caller holds the key's lock."""
    disks = store.disks_for(entry["disks"])
    n = entry["k"] + entry["m"]
    data: dict[int, bytes | None] = {}
    for i in range(n):
        if disks[i] is None:
            continue
        try:
            meta = await read_slot(bucket, key, entry, i, disks[i])
        except (DiskError, CorruptData) as exc:
            log.info("object %s/%s: a metadata change did not reach %s: %s", bucket, key, disks[i].endpoint, exc)
            continue
        if meta.get("wid") == entry["wid"] and meta.get("shard") == i:
            data[i] = meta.get("data") or b""
    got = await append_slots(store, bucket, key, updated, disks, data, new_data=False)  # may use the reserve
    return [got.get(i) for i in range(n)]


async def install(store: "Store", bucket: str, key: str, entry: dict, disks: list, targets: list[int],
                  inline: dict[int, bytes]) -> list[int]:
    """Heal and refill: new records for the rebuilt slots ``targets``, then the entry pointed
    at them (a compare-and-set on the write; the caller holds the key's lock). The slots done."""
    if store.cluster is not None:  # the entry's locations stay; the rebuilt slots become files
        done = []
        for t in targets:
            meta = {f: v for f, v in entry.items() if f != LOG_FIELD}
            meta.update(bucket=bucket, key=key, shard=t, data=inline[t])
            try:  # (a rebuilt slot is new data on its disk: not into the reserve kept for deletions)
                await relocate(store, bucket, key, disks[t], meta, new_data=True)
                done.append(t)
            except DiskFull as exc:
                log.info("disk %s: %s/%s stays degraded until it has room: %s", disks[t].endpoint, bucket, key, exc)
            except DiskError as exc:
                log.warning("disk %s: %s", disks[t].endpoint, exc)
        return done
    got = await append_slots(store, bucket, key, entry, disks, {t: inline[t] for t in targets})
    if not got:
        return []
    if not await set_locations(store, bucket, key, entry, got):
        return []  # overwritten or removed meanwhile: the new records are garbage
    return sorted(got)


async def adopt_records(store: "Store", disk) -> int:
    """A disk that comes back (its refill starts): an entry with no record location for a slot
    on this disk (the registry was rebuilt while the disk was away, so its records were not
    seen) is pointed at the record the disk holds for that write and slot, the newest, unless
    a kill record removed the write there; the refill's check then verifies it instead of
    rewriting it. How many were adopted."""
    if store.cluster is not None or disk.disk_id not in (store.registry.get_sys(UNSCANNED) or ()):
        return 0  # only a disk a registry rebuild could not scan can hold records it lost track of
    from buckets.engine.rebuild import KILL, RECORD, Spill

    # Gathered on disk, not in memory (a disk of a million records): per write and slot its
    # newest record (the spill's "disk" byte is the slot here), and the write's kill records.
    spill = Spill(store.registry.path.rstrip("/") + ".adopt")
    adopted = 0
    try:
        async for loc, raw in disk.walk_records():
            try:
                meta = decode(raw)
                ident = {"bucket": meta["bucket"], "key": meta["key"], "wid": meta["wid"]}
            except (CorruptData, KeyError, TypeError):
                continue
            if meta.get("kill"):
                spill.put(ident, 0, KILL)
            elif isinstance(meta.get("shard"), int) and 0 <= meta["shard"] < 256:
                spill.put(dict(ident, vid=meta.get("vid", "null"), loc=loc), meta["shard"], RECORD)
        for group in spill.objects():
            for (bucket, key), by_wid in group.items():
                for wid, by_shard in by_wid.items():
                    if any(KILL in kinds for kinds in by_shard.values()):
                        continue
                    for shard, kinds in sorted(by_shard.items()):
                        found = kinds.get(RECORD)
                        if found is not None and await _adopt(store, disk, bucket, key, wid, shard, found):
                            adopted += 1
    finally:
        spill.close()
    left = [d for d in (store.registry.get_sys(UNSCANNED) or ()) if d != disk.disk_id]
    await store.registry.commit([Op("put_sys", UNSCANNED, value=left)])
    return adopted


async def _adopt(store: "Store", disk, bucket: str, key: str, wid: str, shard: int, found: dict) -> bool:
    """Point the entry of write ``wid`` at ``found``'s record for ``shard``, if it has no record
    location there and the slot is this disk's."""
    entry = await lookup_write(store, bucket, key, wid, found["vid"])
    if (entry is None or not uses_log(entry) or location_of(entry, shard) is not None
            or shard >= len(entry.get("disks", ())) or entry["disks"][shard] != disk.disk_id):
        return False
    async with store.locks.hold((bucket, key)):
        return bool(await set_locations(store, bucket, key, entry, {shard: found["loc"]}, expect={shard: None}))


async def adopt_at_start(store: "Store") -> None:
    """At start-up: adopt the records of every disk a registry rebuild could not scan that is
    online now (see ``adopt_records``), before any request is served."""
    for disk in store.disks:
        if disk.online and disk.disk_id in (store.registry.get_sys(UNSCANNED) or ()):
            try:
                adopted = await adopt_records(store, disk)
                log.warning("disk %s is back after a registry rebuild without it: %d of its records adopted",
                            disk.endpoint, adopted)
            except (DiskError, errors.BucketsError, errors.FormatError) as exc:  # (no scratch space: FormatError)
                log.warning("disk %s: its log could not be scanned (%s); its slots are rebuilt as they are read",
                            disk.endpoint, exc)
