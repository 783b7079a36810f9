"""Moving one object's shards to the disks of a newer placement generation.

The engine side of a migration (the coordinator is ``buckets.cluster.migration``): given an
object's registry entry and the disks its slots should be on now, ``copy_shards`` puts the
shard of every slot whose disk changed on its new disk, leaving the old files untouched,
and returns the new entry (same write, new ``disks`` and ``gen``). The caller then commits
that entry with a compare-and-set through the index and, once it is the one readers find,
removes the vacated files (``remove_shards``) after a grace delay; if the commit lost to a
concurrent overwrite or delete, it removes the copies instead.

Per changed slot ``i``, from the old disk of slot ``i`` to its new disk:

- a streamed object: each part's shard file is read span by span (a few erasure blocks at a
  time, never the whole file), every piece's checksum is verified, and the bytes are streamed
  into the new disk's staging area; then one ``rename_data`` moves them into place and writes
  that disk's metadata file (the entry with the new ``disks``/``gen``, shard ``i``);
- an inline object: its metadata file (which carries the shard's framed bytes) is read,
  verified and rewritten on the new disk.

A slot whose old disk is offline, or whose shard is missing, short or corrupt, is rebuilt
from any k good slots with the healer's code (``heal._rebuild_shards``), block by block.

Files on a disk are named by the write id, not by the slot, so a disk that holds slot ``j``
in the old placement and slot ``i != j`` in the new one cannot take its new shard under the
same name without destroying the old one, which readers of the old entry still use. The
placement builder does this rarely (a few rows in thousands when a node joins); such an
object is copied whole under a fresh write id (every slot, from its old disk), so old and new
never share a file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from buckets.engine import crypto, paths, smalllog, space
from buckets.engine.heal import _check_slot, _rebuild_shards, _verify_frames, _verify_span
from buckets.engine.ids import new_id
from buckets.erasure import ShardGeometry
from buckets.errors import CorruptData, DiskFull, DiskOffline, ReadQuorumLost, define_error

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.migration")

SPAN_BLOCKS = 4  # erasure blocks read, verified and written per step (about 4 MiB / k per slot)

# Called with a byte count before those bytes are written to a new disk: the migration's
# throttle (a token bucket) waits here.
Pace = Callable[[int], Awaitable[None]]


async def _no_pace(_n: int) -> None:
    return None


# A shard could be neither copied nor rebuilt (too few good slots, a new disk offline).
MoveFailed = define_error("MoveFailed", "ServiceUnavailable", 503,
                          "An object's shards could not be moved to their new disks.")


@dataclass(slots=True)
class ShardCopy:
    """What ``copy_shards`` did: the entry to commit, which slots it wrote where, how much."""

    entry: dict  # the new entry (without a version): same write, or a fresh wid when ``rewritten``
    slots: list[int]  # slots written on their new disk
    rebuilt: list[int] = field(default_factory=list)  # of those, rebuilt from parity
    bytes: int = 0  # shard bytes written to new disks
    rewritten: bool = False  # copied whole under a new write id (see the module docstring)

    @property
    def wid(self) -> str:
        return self.entry["wid"]


def changed_slots(entry: dict, new_disks: list[str]) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(entry["disks"], new_disks)) if a != b]


def needs_rewrite(entry: dict, new_disks: list[str]) -> bool:
    """Whether a disk keeps a slot of this object but at another index (names would clash)."""
    old = list(entry["disks"])
    return any(d in old and old.index(d) != i for i, d in enumerate(new_disks) if old[i] != d)


def _meta_bytes(store: "Store", bucket: str, key: str, entry: dict, slot: int, data: bytes | None = None) -> bytes:
    clean = {k: v for k, v in entry.items() if k != "ts"}  # the version lives in the index only
    return store._disk_meta(bucket, key, clean, slot, data)


async def copy_shards(store: "Store", bucket: str, key: str, entry: dict, new_disks: list[str], gen: int,
                      *, pace: Pace = _no_pace) -> ShardCopy:
    """Write the shards of ``entry`` that belong on other disks in ``new_disks`` onto them.

    Nothing readers of ``entry`` use is touched. On failure (or cancellation) every file this
    call wrote is removed and the error raised: ``MoveFailed`` or a ``DiskError``.
    """
    n = entry["k"] + entry["m"]
    new_disks = list(new_disks[:n])
    if len(new_disks) != n or len(entry["disks"]) != n:
        raise MoveFailed(f"{bucket}/{key}: {len(entry['disks'])} slots, the new placement has {len(new_disks)}")
    rewritten = needs_rewrite(entry, new_disks)
    slots = list(range(n)) if rewritten else changed_slots(entry, new_disks)
    new_entry = dict(entry, disks=new_disks, gen=gen)
    new_entry.pop("ts", None)
    if rewritten:
        new_entry["wid"] = new_id()
    if smalllog.uses_log(entry):  # a small write in the disks' logs: the copied slots become files
        locs = [None] * n if rewritten else list(entry[smalllog.LOG_FIELD]) + [None] * n
        for i in slots:
            locs[i] = None
        new_entry[smalllog.LOG_FIELD] = locs[:n]
    result = ShardCopy(new_entry, slots, rewritten=rewritten)
    if not slots:
        return result
    if any(store.by_id.get(new_disks[i]) is None for i in slots):
        # A generation this node has not adopted yet (its disks are opened on adoption).
        follow_now = getattr(getattr(store, "cluster_node", None), "follow_now", None)
        if follow_now is not None:
            follow_now()
    targets = {i: store.by_id.get(new_disks[i]) for i in slots}
    offline = [new_disks[i] for i in slots if targets[i] is None or not targets[i].online]
    if offline:
        raise MoveFailed(f"{bucket}/{key}: new disk(s) {', '.join(offline)} not available")
    sources = store.disks_for(list(entry["disks"]))
    stage = paths.staging(new_id())
    installed: list[int] = []
    try:
        failed: list[int] = []
        copies = await asyncio.gather(*(
            _copy_slot(store, bucket, key, entry, new_entry, i, sources[i], targets[i], stage, pace)
            for i in slots), return_exceptions=True)
        for i, outcome in zip(slots, copies):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancelled
                if isinstance(outcome, DiskFull):
                    raise outcome  # the new disk has no room: rebuilding onto it would not either
                log.info("migration of %s/%s: slot %d cannot be copied from %s (%s); rebuilding it",
                         bucket, key, i, entry["disks"][i], outcome)
                failed.append(i)
            else:
                installed.append(i)
                result.bytes += outcome
        if failed:
            result.bytes += await _rebuild_slots(store, bucket, key, entry, new_entry, failed, sources, targets,
                                                 stage, pace)
            installed.extend(failed)
            result.rebuilt = sorted(failed)
    except BaseException:
        await asyncio.shield(_discard(store, bucket, key, new_entry["wid"], [targets[i] for i in installed],
                                      stage, [targets[i] for i in slots]))
        raise
    await store._on_disks(lambda d: d.delete(stage, recursive=True), [targets[i] for i in slots])
    return result


async def _copy_slot(store: "Store", bucket: str, key: str, entry: dict, new_entry: dict, slot: int,
                     source, target, stage: str, pace: Pace) -> int:
    """Copy one verified shard from ``source`` to ``target``; bytes written."""
    if source is None:
        raise DiskOffline(f"disk {entry['disks'][slot]} is offline")
    k, bs = entry["k"], entry["bs"]
    new_mp = paths.meta_path(bucket, key, new_entry["wid"])
    if entry.get("inline"):
        meta = await smalllog.read_slot(bucket, key, entry, slot, source)  # its record or its file
        if meta.get("wid") != entry["wid"] or meta.get("shard") != slot:
            raise CorruptData(f"metadata on {source.endpoint} is not slot {slot} of write {entry['wid']}")
        data = meta.get("data") or b""
        geo = ShardGeometry(k, bs, crypto.stored_length(entry))  # inline: the stored (maybe encrypted) bytes
        if len(data) != geo.shard_size or not _verify_frames(data, geo):
            raise CorruptData(f"inline shard {slot} on {source.endpoint} is damaged")
        await pace(len(data))
        await target.write_file(new_mp, _meta_bytes(store, bucket, key, new_entry, slot, data), sync=store.sync,
                                new_data=True)  # not into the new disk's reserve, as a shard file is not
        return len(data)
    loop = asyncio.get_running_loop()
    written = 0
    moves: list[tuple[str, str]] = []
    for part in entry["parts"]:
        number, psize = part[0], part[1]
        geo = ShardGeometry(k, bs, psize)
        src = paths.part_path(bucket, key, entry["wid"], number)
        if await source.file_size(src) != geo.shard_size:
            raise CorruptData(f"shard {slot} of part {number} on {source.endpoint} has the wrong size")
        staged = f"{stage}/{slot}/part.{number}"
        writer = await target.create_file(staged)
        try:
            for b0 in range(0, geo.blocks, SPAN_BLOCKS):
                b1 = min(b0 + SPAN_BLOCKS, geo.blocks)
                start = geo.frame_offset(b0)
                length = geo.frame_offset(b1 - 1) + geo.frame_len(b1 - 1) - start
                raw = await source.read_range(src, start, length)
                if len(raw) != length or not await loop.run_in_executor(store.cpu, _verify_span, raw, geo, b0, b1):
                    raise CorruptData(f"shard {slot} of part {number} on {source.endpoint} is damaged")
                await pace(length)
                await writer.write(raw)
                written += length
                del raw
            await writer.close(store.sync)
        except BaseException:
            await writer.abort()
            raise
        moves.append((staged, paths.part_path(bucket, key, new_entry["wid"], number)))
    await target.rename_data(moves, (new_mp, _meta_bytes(store, bucket, key, new_entry, slot)), sync=store.sync)
    return written


async def _rebuild_slots(store: "Store", bucket: str, key: str, entry: dict, new_entry: dict, slots: list[int],
                         sources: list, targets: dict, stage: str, pace: Pace) -> int:
    """Rebuild ``slots`` from k good old slots onto their new disks (the healer's code)."""
    n = entry["k"] + entry["m"]
    checks = await asyncio.gather(*(
        _check_slot(store, bucket, key, entry, i, sources[i], False) if i not in slots else _false()
        for i in range(n)))
    good = [i for i, ok in enumerate(checks) if ok]
    if len(good) < entry["k"]:
        raise MoveFailed(f"{bucket}/{key}: only {len(good)} good shards to rebuild slots {slots} from, "
                         f"{entry['k']} needed")
    mixed = list(sources)
    for t in slots:
        mixed[t] = targets[t]
    rebuild_stage = f"{stage}/rebuild"
    try:
        inline = await _rebuild_shards(store, bucket, key, entry, mixed, good, slots, rebuild_stage)
    except (CorruptData, ReadQuorumLost) as exc:
        raise MoveFailed(f"{bucket}/{key}: rebuilding slots {slots} failed: {exc}") from None
    written = 0
    new_mp = paths.meta_path(bucket, key, new_entry["wid"])

    async def install(t: int) -> int:
        d = targets[t]
        if inline is not None:
            await pace(len(inline[t]))
            await d.write_file(new_mp, _meta_bytes(store, bucket, key, new_entry, t, inline[t]), sync=store.sync,
                               new_data=True)
            return len(inline[t])
        size = sum(ShardGeometry(entry["k"], entry["bs"], p[1]).shard_size for p in entry["parts"])
        await pace(size)
        moves = [(f"{rebuild_stage}/part.{p[0]}", paths.part_path(bucket, key, new_entry["wid"], p[0]))
                 for p in entry["parts"]]
        await d.rename_data(moves, (new_mp, _meta_bytes(store, bucket, key, new_entry, t)), sync=store.sync)
        return size

    for t in slots:
        written += await install(t)
    log.info("migration of %s/%s: rebuilt slots %s from parity onto their new disks", bucket, key, slots)
    return written


async def _false() -> bool:
    return False


async def _discard(store: "Store", bucket: str, key: str, wid: str, installed: list, stage: str,
                   all_targets: list) -> None:
    """Undo a copy: the files installed under ``wid`` on ``installed``, and the staging area."""
    await remove_shards(store, bucket, key, wid, installed)
    await store._on_disks(lambda d: d.delete(stage, recursive=True), all_targets)


async def remove_shards(store: "Store", bucket: str, key: str, wid: str, disks: list,
                        locs: list | None = None) -> int:
    """Remove one write's files (metadata first, so no metadata outlives its data) from
    ``disks``; an offline disk is skipped (its stale copy is the orphan sweep's). ``locs``:
    the write's record on each of ``disks`` (None where none), released at once
    (``smalllog.release``). Returns how many disks answered."""
    async def one(d) -> None:
        await d.delete(paths.meta_path(bucket, key, wid))
        await d.delete(paths.data_dir(bucket, key, wid), recursive=True)

    pairs = [(d, locs[i] if locs and i < len(locs) else None) for i, d in enumerate(disks) if d is not None]
    live = [d for d, _ in pairs]
    if store.small_log or locs:  # a write in the disks' logs (also one made before the log was turned off)
        await smalllog.kill(store, bucket, key, wid, live)
        if locs and space.releases_space(store):
            await smalllog.release(store, wid, live, [loc for _, loc in pairs])
    return await store._on_disks(one, live)
