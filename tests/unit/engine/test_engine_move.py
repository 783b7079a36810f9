"""A migration's copy of an object onto the disks of a newer placement (engine/move.py): the
new disks' free-space reserve holds for small objects as it does for shard files, and a copy
refused for want of space leaves nothing behind; a heal's rebuilt slot keeps out of the reserve too. A real store over real directories; the new
placement is a permutation of its own disks (every slot changes, so the object is copied
whole under a fresh write id)."""

from __future__ import annotations

import glob
import os

import pytest
from engine_testkit import BLOCK, INLINE, content, get_bytes

from buckets import Store
from buckets.engine import move
from buckets.errors import DiskFull
from buckets.storage import local

OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64, background=False)


def written_files(paths: list[str]) -> list[str]:
    """Every object file under the disks (metadata files and shard parts; not the logs)."""
    out = []
    for root in paths:
        out += glob.glob(os.path.join(root, "buckets", "**", "*"), recursive=True)
    return sorted(f for f in out if os.path.isfile(f))


@pytest.mark.parametrize("size", [INLINE // 2, 3 * BLOCK], ids=["inline", "streamed"])
async def test_a_copy_onto_disks_at_their_reserve_is_refused_and_leaves_nothing(tmp_disks, monkeypatch,
                                                                                size) -> None:
    paths = tmp_disks(4)
    store = await Store.open(paths, **OPTS)
    try:
        await store.make_bucket("bkt")
        body = content("k", size)
        await store.put_object("bkt", "k", body, size)
        entry = store.registry.get_object("bkt", "k")
        new_disks = entry["disks"][1:] + entry["disks"][:1]
        assert move.needs_rewrite(entry, new_disks)

        copy = await move.copy_shards(store, "bkt", "k", entry, new_disks, entry.get("gen", 0) + 1)
        assert copy.entry["wid"] != entry["wid"] and sorted(copy.slots) == [0, 1, 2, 3]
        await move.remove_shards(store, "bkt", "k", copy.wid, store.disks_for(new_disks))  # undone

        before = written_files(paths)
        monkeypatch.setattr(local, "disk_reserve", 100.0)  # every byte of every disk is reserve
        for d in store.disks:
            d._space = None
        with pytest.raises(DiskFull):
            await move.copy_shards(store, "bkt", "k", entry, new_disks, entry.get("gen", 0) + 1)
        assert written_files(paths) == before  # no copy went into the reserve, none half-made
        monkeypatch.setattr(local, "disk_reserve", 0.0)
        assert await get_bytes(store, "bkt", "k") == body  # the object is as it was
    finally:
        await store.close()


async def test_the_vacated_disks_records_are_released_with_them(tmp_disks) -> None:
    """After a move, the old placement's records of a small object are killed and, the disks near
    full, punched out of their segments (``remove_shards`` with their locations), not left to
    compaction (a node added because the disks filled up frees the old ones at once)."""
    from buckets.engine import smalllog
    from buckets.errors import CorruptData

    paths = tmp_disks(4)
    store = await Store.open(paths, **OPTS, small_log=True)
    try:
        await store.make_bucket("bkt")
        body = content("k", INLINE // 2)
        await store.put_object("bkt", "k", body, len(body))
        entry = store.registry.get_object("bkt", "k")
        assert smalllog.uses_log(entry)
        new_disks = entry["disks"][1:] + entry["disks"][:1]
        copy = await move.copy_shards(store, "bkt", "k", entry, new_disks, entry.get("gen", 0) + 1)
        old = store.disks_for(entry["disks"])
        for d in store.disks:
            d.near_full = True  # released at once only where space is short (engine/space.py)
        await move.remove_shards(store, "bkt", "k", entry["wid"], old, entry["lg"])
        for disk, loc in zip(old, entry["lg"]):
            with pytest.raises(CorruptData):  # read as zeros
                await disk.read_record(loc)
        await move.remove_shards(store, "bkt", "k", copy.wid, store.disks_for(new_disks))
    finally:
        await store.close()


@pytest.mark.parametrize("size", ["inline", "shards"])
async def test_a_heal_does_not_rebuild_into_a_disks_reserve(tmp_disks, monkeypatch, size) -> None:
    """A slot lost on a disk at its free-space reserve is not rebuilt there: the object stays
    degraded (and reads) until the disk has room, then heals. Before, an inline object's
    metadata file (and on a cluster a small object's relocated record) went into the reserve
    kept for deletions: a cluster whose first disk refused writes healed them onto it until it
    had 120 KB of its 1.6 MB reserve left (tests/cluster/test_disk_full_cluster.py)."""
    from buckets.engine.heal import heal_object

    paths = tmp_disks(4)
    store = await Store.open(paths, **OPTS, small_log=False)
    try:
        await store.make_bucket("bkt")
        body = content("k", INLINE // 2 if size == "inline" else 3 * BLOCK)
        await store.put_object("bkt", "k", body, len(body))
        entry = store.registry.get_object("bkt", "k")
        assert bool(entry.get("inline")) == (size == "inline")
        lost = store.disks_for(entry["disks"])[0]
        ours = [f for f in written_files([lost.root]) if entry["wid"] in f]
        assert ours
        for f in sorted(ours, reverse=True):
            os.remove(f)
        before = written_files(paths)
        monkeypatch.setattr(local, "disk_reserve", 100.0)  # every byte of every disk is reserve
        for d in store.disks:
            d._space = None
        healed = await heal_object(store, "bkt", "k", deep=True)
        assert healed.bad == [0] and healed.repaired == [] and healed.failed == [0], healed
        assert written_files(paths) == before  # nothing went into the reserve
        assert await get_bytes(store, "bkt", "k") == body  # degraded, and it reads
        monkeypatch.setattr(local, "disk_reserve", 0.0)
        for d in store.disks:
            d._space = None
        healed = await heal_object(store, "bkt", "k", deep=True)
        assert healed.repaired == [0], healed
        assert (await heal_object(store, "bkt", "k", deep=True)).bad == []
    finally:
        await store.close()
