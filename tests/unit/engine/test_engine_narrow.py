"""Small objects on a narrow set (``--small-set-limit``): on 10 disks (6+4) an object up to
the limit is written 4+4 on a window of 8 of its partition's slots, with the same parity.
What must hold: the entry says so and the records sit on exactly those disks; m of them may
fail (reads go on, heal rebuilds); the whole set is used when the window could not take the
write; delete markers go narrow too; a registry rebuild and a wiped disk's refill bring
narrow objects back as they were. A real store over real directories."""

from __future__ import annotations

import os
import shutil

from engine_testkit import BLOCK, INLINE, content, eventually, get_bytes

from buckets import Store
from buckets.engine import smalllog
from buckets.engine.heal import heal_object
from buckets.storage import records as rlog
from buckets.storage.format import LOG_DIR, REGISTRY_DIR

OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64, small_log=True,
            small_copy_limit=0, background=False)
SMALL = 3000  # at most INLINE (the limit is capped there): narrow
LARGE = 3 * INLINE  # streamed: the whole set


async def open_store(paths: list[str], **extra) -> Store:
    return await Store.open(paths, **{**OPTS, **extra})


def record_disks(store: Store, entry: dict) -> set[str]:
    return {d for d, loc in zip(entry["disks"], entry["lg"]) if loc is not None}


async def test_a_small_object_is_written_4_plus_4_on_its_window(tmp_disks) -> None:
    store = await open_store(tmp_disks(10))
    try:
        assert (store.k, store.m) == (6, 4)
        await store.make_bucket("bkt")
        small, large = content("s", SMALL), content("l", LARGE)
        await store.put_object("bkt", "small", small, len(small))
        await store.put_object("bkt", "large", large, len(large))
        entry = store.registry.get_object("bkt", "small")
        assert (entry["k"], entry["m"]) == (4, 4)
        assert entry["disks"] == list(store.table.object_disks("bkt", "small", 8))
        assert record_disks(store, entry) == set(entry["disks"])
        wide = store.registry.get_object("bkt", "large")
        assert (wide["k"], wide["m"]) == (6, 4) and wide["disks"] == list(store.table.locate("bkt", "large")[1])
        assert await get_bytes(store, "bkt", "small") == small
        assert await get_bytes(store, "bkt", "large") == large
        # a ranged read of a narrow object
        assert await get_bytes(store, "bkt", "small", range=(1000, 2499)) == small[1000:2500]
    finally:
        await store.close()


async def test_the_limit_off_writes_every_object_on_the_whole_set(tmp_disks) -> None:
    store = await open_store(tmp_disks(10), small_set_limit=0)
    try:
        await store.make_bucket("bkt")
        await store.put_object("bkt", "k", b"tiny", 4)
        entry = store.registry.get_object("bkt", "k")
        assert (entry["k"], entry["m"]) == (6, 4) and len(entry["disks"]) == 10
    finally:
        await store.close()


async def test_m_of_a_narrow_objects_disks_may_fail_and_heal_rebuilds_them(tmp_disks) -> None:
    paths = tmp_disks(10)
    store = await open_store(paths)
    try:
        await store.make_bucket("bkt")
        body = content("x", SMALL)
        await store.put_object("bkt", "x", body, len(body))
        entry = store.registry.get_object("bkt", "x")
        root_of = {d.disk_id: p for d, p in zip(store.disks, paths)}
        # bit rot in two records, and two more disks of the window away: 4 = m shards unusable
        for slot in (0, 5):
            loc = entry["lg"][slot]
            with open(os.path.join(root_of[entry["disks"][slot]], LOG_DIR, rlog.segment_name(loc[0])), "r+b") as f:
                f.seek(loc[1] + rlog.HEADER_SIZE + 5)
                f.write(b"\x00\xff\x00\xff")
        away = [store.by_id[entry["disks"][slot]] for slot in (2, 7)]
        for d in away:
            d.online = False
        assert await get_bytes(store, "bkt", "x") == body
        for d in away:
            d.online = True
        res = await heal_object(store, "bkt", "x", deep=True)
        assert sorted(res.repaired) == [0, 5], res
        healed = store.registry.get_object("bkt", "x")
        assert (healed["k"], healed["m"], healed["disks"]) == (4, 4, entry["disks"])
        assert (await heal_object(store, "bkt", "x", deep=True)).bad == []
        for slot in range(4):  # the data shards alone are now enough again
            store.by_id[entry["disks"][4 + slot]].online = False
        assert await get_bytes(store, "bkt", "x") == body
    finally:
        await store.close()


async def test_the_whole_set_when_the_window_cannot_take_a_write(tmp_disks) -> None:
    store = await open_store(tmp_disks(10))
    try:
        await store.make_bucket("bkt")
        window = list(store.table.object_disks("bkt", "k", 8))
        for disk_id in window[:4]:  # 4 of 8 online: under the 4+4 write quorum of 5
            store.by_id[disk_id].online = False
        body = content("k", SMALL)
        await store.put_object("bkt", "k", body, len(body))
        entry = store.registry.get_object("bkt", "k")
        assert (entry["k"], entry["m"]) == (6, 4) and len(entry["disks"]) == 10
        assert await get_bytes(store, "bkt", "k") == body
        store.by_id[window[4]].online = False  # 5 of 8 still would be a quorum: narrow again
        for disk_id in window[:4]:
            store.by_id[disk_id].online = True
        await store.put_object("bkt", "k", body, len(body))
        assert store.registry.get_object("bkt", "k")["k"] == 4
    finally:
        await store.close()


async def test_delete_markers_are_narrow_and_a_rebuild_brings_narrow_objects_back(tmp_disks) -> None:
    paths = tmp_disks(10)
    store = await open_store(paths)
    try:
        await store.make_bucket("bkt")
        await store.set_versioning("bkt", "Enabled")
        bodies = {f"o{i}": content(f"o{i}", 100 + 300 * i) for i in range(10)}
        for k, v in bodies.items():
            await store.put_object("bkt", k, v, len(v))
        marker = await store.delete_object("bkt", "o3")
        entries = {k: store.registry.get_object("bkt", k) for k in bodies if k != "o3"}
        versions = await store.list_object_versions("bkt")
        dm = next(v for v in versions.versions if v.delete_marker)
        assert dm.version_id == marker.version_id
        await store.close()
        for p in paths:
            shutil.rmtree(os.path.join(p, REGISTRY_DIR), ignore_errors=True)
        store = await open_store(paths)
        for k, e in entries.items():
            again = store.registry.get_object("bkt", k)
            assert (again["k"], again["m"], again["disks"], again["wid"]) == (4, 4, e["disks"], e["wid"])
            assert await get_bytes(store, "bkt", k) == bodies[k]
        versions = await store.list_object_versions("bkt")
        assert [v.version_id for v in versions.versions if v.delete_marker] == [marker.version_id]
        marker_entry = store.registry.get_object_version("bkt", "o3", marker.version_id)
        assert (marker_entry["k"], marker_entry["m"], len(marker_entry["disks"])) == (4, 4, 8)
    finally:
        await store.close()


async def test_a_wiped_disk_is_refilled_with_its_narrow_records(tmp_disks) -> None:
    paths = tmp_disks(10)
    store = await open_store(paths)
    try:
        await store.make_bucket("bkt")
        bodies = {f"k{i}": content(f"k{i}", 700 + i) for i in range(60)}
        for k, v in bodies.items():
            await store.put_object("bkt", k, v, len(v))
        wiped = store.disks[3]
        holding = [k for k in bodies if wiped.disk_id in store.registry.get_object("bkt", k)["disks"]]
        assert 0 < len(holding) < len(bodies)  # a window of 8 of 10: most objects, not all (all 60: p = 0.8^60)
        for name in os.listdir(paths[3]):
            shutil.rmtree(os.path.join(paths[3], name))
        store.scanner.start(scan=False)
        await store.scanner.check_disks()
        await eventually(lambda: store.scanner.refill.get(wiped.disk_id, {}).get("state") == "finished", timeout=30)
        for k in holding:
            entry = store.registry.get_object("bkt", k)
            slot = entry["disks"].index(wiped.disk_id)
            meta = smalllog.decode(await wiped.read_record(entry["lg"][slot]))
            assert meta["wid"] == entry["wid"] and meta["shard"] == slot
        for k, v in bodies.items():
            assert await get_bytes(store, "bkt", k) == v
    finally:
        await store.close()
