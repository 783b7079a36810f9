"""The small-object write path through the disks' record logs (issue 15): PUT, GET, heal,
refill, registry rebuild, tags, delete markers, compaction, and objects written before the
log. A real store over real directories; damage is done to the segment files themselves."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import time

import pytest
from engine_testkit import BLOCK, INLINE, content, eventually, get_bytes

from buckets import Store, errors
from buckets.engine import smalllog
from buckets.engine.heal import heal_object
from buckets.engine.types import PutOptions
from buckets.storage import records as rlog
from buckets.storage.faulty import FaultyDisk
from buckets.storage.format import LOG_DIR, REGISTRY_DIR
from buckets.storage.local import LocalDisk

# small_copy_limit 0: every GET of an inline object reads the records (no registry copy)
OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64, small_log=True,
            small_copy_limit=0, background=False)


async def open_store(paths: list[str], **extra) -> Store:
    return await Store.open(paths, **{**OPTS, **extra})


async def reopened_with_ten_objects(paths: list[str]) -> Store:
    """A store over ``paths`` with ten small objects k0..k9 written by an earlier process, so
    they sit in segments that the next append (of this process) seals."""
    store = await open_store(paths)
    await store.make_bucket("bkt")
    for i in range(10):
        await store.put_object("bkt", f"k{i}", b"old", 3)
    await store.close()
    return await open_store(paths)


def meta_files(paths: list[str]) -> list[str]:
    out = []
    for root in paths:
        out += [f for f in glob.glob(os.path.join(root, "buckets", "*", "*", "*.meta"))]
    return out


def segment_file(root: str, loc: list) -> str:
    return os.path.join(root, LOG_DIR, rlog.segment_name(loc[0]))


def damage(root: str, loc: list) -> None:
    """Flip bytes inside the record at ``loc`` (bit rot): its checksum no longer matches."""
    with open(segment_file(root, loc), "r+b") as f:
        f.seek(loc[1] + rlog.HEADER_SIZE + 5)
        f.write(b"\x00\xff\x00\xff")


@pytest.fixture
async def store(tmp_disks):
    paths = tmp_disks(4)
    s = await open_store(paths)
    s.test_paths = paths
    await s.make_bucket("bkt")
    yield s
    if s.registry.is_open:  # a test that reopened the store closed this one already
        await s.close()


async def test_inline_puts_are_records_not_files(store) -> None:
    bodies = {f"k{i}": content(f"k{i}", 100 + i * 37) for i in range(20)}
    await asyncio.gather(*(store.put_object("bkt", k, v, len(v)) for k, v in bodies.items()))
    assert meta_files(store.test_paths) == []  # no file per object per disk
    for k, v in bodies.items():
        entry = store.registry.get_object("bkt", k)
        assert entry["inline"] and len(entry["lg"]) == 4 and all(loc is not None for loc in entry["lg"])
        assert await get_bytes(store, "bkt", k) == v
        assert await get_bytes(store, "bkt", k, range=(3, 10)) == v[3:11]
    # streamed objects keep their shard files and metadata files
    big = content("big", 3 * BLOCK)
    await store.put_object("bkt", "big", big, len(big))
    assert "lg" not in store.registry.get_object("bkt", "big")
    assert len(meta_files(store.test_paths)) == 4
    assert await get_bytes(store, "bkt", "big") == big


async def test_a_damaged_or_missing_record_is_read_around_and_healed(store) -> None:
    body = content("x", 3000)
    await store.put_object("bkt", "x", body, len(body))
    entry = store.registry.get_object("bkt", "x")
    slot0 = store.by_id[entry["disks"][0]]
    damage(slot0.root, entry["lg"][0])  # a data slot: parity must stand in
    assert await get_bytes(store, "bkt", "x") == body
    res = await heal_object(store, "bkt", "x", deep=True)
    assert res.bad == [0] and res.repaired == [0]
    healed = store.registry.get_object("bkt", "x")
    assert healed["lg"][0] != entry["lg"][0] and healed["lg"][1:] == entry["lg"][1:]
    meta = smalllog.decode(await slot0.read_record(healed["lg"][0]))
    assert meta["wid"] == entry["wid"] and meta["shard"] == 0
    assert (await heal_object(store, "bkt", "x", deep=True)).bad == []
    assert await get_bytes(store, "bkt", "x") == body


async def test_a_slot_that_missed_the_write_is_healed_as_a_record(tmp_disks) -> None:
    paths = tmp_disks(4)
    disks = [FaultyDisk(LocalDisk(p)) for p in paths]
    store = await Store.open_disks(disks, **OPTS)
    try:
        await store.make_bucket("bkt")
        body = content("y", 2500)
        entry_disks = list(store.table.locate("bkt", "y")[1][:4])
        victim = next(d for d in disks if d.disk_id == entry_disks[1])
        victim.fail("append_records", error=errors.DiskFull, times=1)  # the disk stays online
        await store.put_object("bkt", "y", body, len(body))  # 3 of 4: quorum met, queued for heal
        entry = store.registry.get_object("bkt", "y")
        assert entry["lg"][1] is None and all(entry["lg"][i] is not None for i in (0, 2, 3))
        res = await heal_object(store, "bkt", "y", deep=False)
        assert res.repaired == [1], res
        assert store.registry.get_object("bkt", "y")["lg"][1] is not None
        assert (await heal_object(store, "bkt", "y", deep=True)).bad == []
        assert await get_bytes(store, "bkt", "y") == body
    finally:
        await store.close()


async def test_a_metadata_change_that_reaches_too_few_disks_fails_and_the_object_still_reads(tmp_disks) -> None:
    """Tags on a small object whose new records no disk takes (every disk failing appends, as
    disks full to their last block do): before, the entry was committed pointing at no record,
    and the object no longer read ("0 good inline pieces of 4")."""
    paths = tmp_disks(4)
    disks = [FaultyDisk(LocalDisk(p)) for p in paths]
    store = await Store.open_disks(disks, **OPTS)
    try:
        await store.make_bucket("bkt")
        body = content("m", 2500)
        await store.put_object("bkt", "m", body, len(body), PutOptions(tags={"old": "1"}))
        before = store.registry.get_object("bkt", "m")
        for d in disks[:3]:
            d.fail("append_records", error=errors.DiskFull)
        with pytest.raises(errors.WriteQuorumLost):
            await store.update_object("bkt", "m", tags={"new": "2"})
        after = store.registry.get_object("bkt", "m")
        assert after["lg"] == before["lg"] and after.get("tg") == {"old": "1"}
        assert await get_bytes(store, "bkt", "m") == body
        for d in disks[:3]:
            d.clear()
        await store.update_object("bkt", "m", tags={"new": "2"})  # disks back: it goes through
        assert store.registry.get_object("bkt", "m")["tg"] == {"new": "2"}
        assert await get_bytes(store, "bkt", "m") == body
    finally:
        await store.close()


async def test_write_quorum_lost_leaves_nothing_readable(tmp_disks) -> None:
    paths = tmp_disks(4)
    disks = [FaultyDisk(LocalDisk(p)) for p in paths]
    store = await Store.open_disks(disks, **OPTS)
    try:
        await store.make_bucket("bkt")
        for d in disks[:2]:
            d.fail("append_records")
        with pytest.raises(errors.WriteQuorumLost):
            await store.put_object("bkt", "z", b"abc", 3)
        with pytest.raises(errors.NoSuchKey):
            await store.head_object("bkt", "z")
    finally:
        await store.close()


async def _drop_registry_and_reopen(store: Store) -> Store:
    paths = store.test_paths
    await store.close()
    for p in paths:
        shutil.rmtree(os.path.join(p, REGISTRY_DIR), ignore_errors=True)
    again = await open_store(paths)
    again.test_paths = paths
    return again


async def test_rebuild_from_the_logs(store) -> None:
    """Overwrites, deletes, tags, versions and delete markers all come back as they were."""
    live = {}
    for i in range(30):
        body = content(f"a{i}", 200 + i)
        await store.put_object("bkt", f"a{i}", body, len(body))
        live[f"a{i}"] = body
    for i in range(0, 30, 3):  # overwrites
        body = content(f"b{i}", 300 + i)
        await store.put_object("bkt", f"a{i}", body, len(body))
        live[f"a{i}"] = body
    for i in range(1, 30, 5):  # deletes
        await store.delete_object("bkt", f"a{i}")
        del live[f"a{i}"]
    await store.update_object("bkt", "a2", tags={"t": "v"})
    await store.make_bucket("ver")
    await store.set_versioning("ver", "Enabled")
    v1 = await store.put_object("ver", "k", b"one", 3)
    v2 = await store.put_object("ver", "k", b"two", 3)
    marker = await store.delete_object("ver", "k")
    await asyncio.gather(*list(store._background), return_exceptions=True)
    store = await _drop_registry_and_reopen(store)
    try:
        listed = sorted(o.key for o in (await store.list_objects("bkt", limit=1000)).objects)
        assert listed == sorted(live)
        for k, v in live.items():
            assert await get_bytes(store, "bkt", k) == v
            assert smalllog.uses_log(store.registry.get_object("bkt", k))
        assert (await store.head_object("bkt", "a2")).tags == {"t": "v"}
        with pytest.raises(errors.NoSuchKey):
            await store.head_object("ver", "k")
        versions = await store.list_object_versions("ver")
        assert [(v.version_id, v.delete_marker) for v in versions.versions] == [
            (marker.version_id, True), (v2.version_id, False), (v1.version_id, False)]
        assert await get_bytes(store, "ver", "k", version_id=v1.version_id) == b"one"
    finally:
        await store.close()


async def _reads_then_rebuilds(store: Store, kept: dict[str, bytes]) -> Store:
    """Bucket ``bkt`` holds exactly ``kept``, read back, and so it does after its registry is
    rebuilt from the disks: the reopened store (the caller closes it)."""
    for k, v in kept.items():
        assert await get_bytes(store, "bkt", k) == v
    store = await _drop_registry_and_reopen(store)
    try:
        assert sorted(o.key for o in (await store.list_objects("bkt", limit=1000)).objects) == sorted(kept)
        for k, v in kept.items():
            assert await get_bytes(store, "bkt", k) == v
    except BaseException:
        await store.close()
        raise
    return store


def allocated_log_bytes(paths: list[str]) -> int:
    return sum(os.stat(f).st_blocks * 512 for root in paths for f in glob.glob(os.path.join(root, LOG_DIR, "*.seg")))


def holes_within(path: str, lo: int, hi: int) -> int:
    """The bytes of ``path`` between ``lo`` and ``hi`` that the file system holds no block for."""
    fd = os.open(path, os.O_RDONLY)
    try:
        holes, at = 0, lo
        while at < hi:
            try:
                hole = os.lseek(fd, at, os.SEEK_HOLE)
            except OSError:
                break
            if hole >= hi:
                break
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:  # (ENXIO: a hole up to the end of the file)
                data = hi
            holes += min(data, hi) - hole
            at = data
        return holes
    finally:
        os.close(fd)


async def test_deleting_small_objects_gives_their_space_back_at_once(store) -> None:
    """On a disk near full, their records are punched out of the segments
    (``Disk.release_records``) as a deleted write's files are unlinked, not left for a
    compaction of the segment, which a full disk may never seal: the space is free when the
    deletions' removals are done. What stays reads, and a registry rebuild from the disks finds
    exactly what stays. With room to spare nothing is released (compaction's work, as before)."""
    paths = store.test_paths
    if not punches_holes(paths[0]):
        pytest.skip("this file system does not punch holes")
    await store.put_object("bkt", "roomy", content("roomy", 4000), 4000)
    roomy = store.registry.get_object("bkt", "roomy")
    await store.delete_object("bkt", "roomy")
    await asyncio.gather(*list(store._background), return_exceptions=True)
    assert await store.disks_for(roomy["disks"])[0].read_record(roomy["lg"][0])  # still there
    for d in store.disks:
        d.near_full = True  # as the disk monitor finds a disk under 4 reserves free
    bodies = {f"k{i:02d}": content(f"k{i}", 4000) for i in range(60)}
    for k, v in bodies.items():
        await store.put_object("bkt", k, v, len(v))
    await store.make_bucket("ver")
    await store.set_versioning("ver", "Enabled")
    old = await store.put_object("ver", "v", content("old", 4000), 4000)
    await store.put_object("ver", "v", b"new", 3)
    # the first 40 written (their records lie side by side on each disk: whole blocks), and a
    # few of the rest (a record alone in a block frees that block only with its neighbours)
    gone = [k for i, k in enumerate(bodies) if i < 40 or i % 7 == 0]
    spans: dict[str, list[int]] = {}  # per segment file: where the first 40's records lie
    for k in gone[:40]:
        entry = store.registry.get_object("bkt", k)
        for d, loc in zip(store.disks_for(entry["disks"]), entry["lg"]):
            span = spans.setdefault(segment_file(d.root, loc), [loc[1], loc[1] + loc[2]])
            span[0], span[1] = min(span[0], loc[1]), max(span[1], loc[1] + loc[2])
    for k in gone:
        await store.delete_object("bkt", k)
    await store.delete_object("ver", "v", version_id=old.version_id)
    await asyncio.gather(*list(store._background), return_exceptions=True)
    # every whole block of theirs is free now (measured where they lay: the kill records the
    # deletions appended meanwhile take new blocks at the segments' tails)
    assert len(spans) == 4
    for path, (lo, hi) in spans.items():
        bs = os.stat(path).st_blksize
        whole = (-(-lo // bs) * bs, hi // bs * bs)
        assert whole[1] - whole[0] >= 16 * bs and holes_within(path, *whole) == whole[1] - whole[0], (path, lo, hi)
    store = await _reads_then_rebuilds(store, {k: v for k, v in bodies.items() if k not in gone})
    try:
        versions = await store.list_object_versions("ver")
        assert [v.version_id for v in versions.versions] != [] and old.version_id not in [
            v.version_id for v in versions.versions]
        assert await get_bytes(store, "ver", "v") == b"new"
    finally:
        await store.close()


async def test_a_torn_tail_is_ignored_by_the_rebuild(store) -> None:
    await store.put_object("bkt", "kept", b"kept!", 5)
    entry = store.registry.get_object("bkt", "kept")
    paths = store.test_paths
    await store.close()
    for root in paths:  # a power cut mid-append: half a record at each log's end
        seg = max(glob.glob(os.path.join(root, LOG_DIR, "*.seg")))
        with open(seg, "ab") as f:
            f.write(rlog.frame(b"\x81\xa3key\xa4torn")[:20])
    for p in paths:
        shutil.rmtree(os.path.join(p, REGISTRY_DIR), ignore_errors=True)
    store = await open_store(paths)
    store.test_paths = paths
    try:
        assert store.registry.get_object("bkt", "kept")["lg"] == entry["lg"]
        assert await get_bytes(store, "bkt", "kept") == b"kept!"
        await store.put_object("bkt", "after", b"after", 5)  # appends go to a new segment
        assert await get_bytes(store, "bkt", "after") == b"after"
    finally:
        await store.close()


async def test_tags_and_acl_changes_rewrite_the_records(store) -> None:
    await store.put_object("bkt", "t", b"tagged", 6)
    before = store.registry.get_object("bkt", "t")["lg"]
    await store.update_object("bkt", "t", tags={"a": "1"})
    after = store.registry.get_object("bkt", "t")
    assert all(a != b for a, b in zip(before, after["lg"]))
    for i, d in enumerate(store.disks_for(after["disks"])):
        assert smalllog.decode(await d.read_record(after["lg"][i]))["tg"] == {"a": "1"}
    assert await get_bytes(store, "bkt", "t") == b"tagged"


async def written_and_closed(paths: list[str], n: int) -> None:
    """``n`` small objects k0.. (500 bytes) written through the log by a store now closed: in
    the first segment of each disk, sealed once a store opens the disks again."""
    store = await open_store(paths)
    await store.make_bucket("bkt")
    for i in range(n):
        await store.put_object("bkt", f"k{i}", content(f"old{i}", 500), 500)
    await store.close()


async def test_compaction_reclaims_overwritten_and_deleted_records(tmp_disks) -> None:
    paths = tmp_disks(4)
    await written_and_closed(paths, 40)
    store = await open_store(paths)  # a new process: the first segments are sealed now
    try:
        final = {}
        for i in range(40):
            if i % 4 == 0:
                final[f"k{i}"] = content(f"old{i}", 500)  # left as they were: live in the old segment
                continue
            if i % 4 == 1:
                await store.delete_object("bkt", f"k{i}")
                continue
            body = content(f"new{i}", 400)
            await store.put_object("bkt", f"k{i}", body, len(body))
            final[f"k{i}"] = body
        await asyncio.gather(*list(store._background), return_exceptions=True)
        sealed = {root: sorted(os.listdir(os.path.join(root, LOG_DIR)))[0] for root in paths}
        done = await store.compactor.run_pass(paced=False, settle=0)
        assert done["segments_compacted"] == 4 and done["records_moved"] == 40  # 10 live keys x 4 disks
        for root, name in sealed.items():
            assert name not in os.listdir(os.path.join(root, LOG_DIR))
        for k, v in final.items():
            assert await get_bytes(store, "bkt", k) == v
            assert (await heal_object(store, "bkt", k, deep=True)).bad == []
        # nothing is live in what is left to compact, twice over
        assert (await store.compactor.run_pass(paced=False, settle=0))["records_moved"] == 0
        store.test_paths = paths
        store = await _drop_registry_and_reopen(store)  # deleted keys stay deleted
        listed = sorted(o.key for o in (await store.list_objects("bkt", limit=1000)).objects)
        assert listed == sorted(final)
        for k, v in final.items():
            assert await get_bytes(store, "bkt", k) == v
    finally:
        await store.close()


async def test_compaction_carries_the_kill_of_a_version_whose_files_are_still_there(tmp_disks) -> None:
    """A version removed by id, the node stopped before its files were deleted: the kill
    records on its disks are what keeps a rebuild from bringing it back, so compacting the
    oldest segment must carry them while the version's .meta files remain (and only those)."""
    paths = tmp_disks(4)
    store = await open_store(paths)
    await store.make_bucket("bkt")
    await store.set_versioning("bkt", "Enabled")
    size = 2 * BLOCK + 3
    v1 = await store.put_object("bkt", "big", content("v1", size), size)  # files, not records
    v2 = await store.put_object("bkt", "big", b"v2", 2)
    junk = [await store.put_object("bkt", f"junk{i}", content(f"j{i}", 500), 500) for i in range(20)]

    async def crashed(*args, **kwargs) -> None:  # the removal of files never happens
        return None

    store._remove_write = crashed
    await store.delete_object("bkt", "big", version_id=v1.version_id)
    for i, put in enumerate(junk):  # garbage and kill records of log writes in the same segment
        await store.delete_object("bkt", f"junk{i}", version_id=put.version_id)
    await store.close()
    store = await open_store(paths)  # a new process: its first append seals that segment
    store.test_paths = paths
    try:
        await store.put_object("bkt", "after", b"a", 1)
        done = await store.compactor.run_pass(paced=False, settle=0)
        assert done["segments_compacted"] == 4
        assert done["kills_carried"] == 4  # big's on each disk; the junk's kills had nothing left to say
        store = await _drop_registry_and_reopen(store)
        page = await store.list_object_versions("bkt", limit=100)
        assert [(v.key, v.version_id) for v in page.versions if v.key == "big"] == [("big", v2.version_id)]
    finally:
        await store.close()


async def test_compaction_loses_to_a_concurrent_overwrite(tmp_disks) -> None:
    store = await reopened_with_ten_objects(tmp_disks(4))
    try:
        for i in range(1, 10):
            await store.delete_object("bkt", f"k{i}")
        await asyncio.gather(*list(store._background), return_exceptions=True)
        # overwrite k0 while the compactor holds its old record
        original = store.compactor._move

        async def racing_move(disk, loc, raw):
            if smalllog.decode(raw)["key"] == "k0" and not racing_move.done:
                racing_move.done = True
                await store.put_object("bkt", "k0", b"newer", 5)
            return await original(disk, loc, raw)

        racing_move.done = False
        store.compactor._move = racing_move
        await store.compactor.run_pass(paced=False, settle=0)
        assert await get_bytes(store, "bkt", "k0") == b"newer"
        assert (await heal_object(store, "bkt", "k0", deep=True)).bad == []
    finally:
        await store.close()


async def test_a_wiped_disk_is_refilled_with_records(tmp_disks) -> None:
    paths = tmp_disks(4)
    store = await open_store(paths)
    try:
        await store.make_bucket("bkt")
        bodies = {f"k{i}": content(f"k{i}", 700) for i in range(12)}
        for k, v in bodies.items():
            await store.put_object("bkt", k, v, len(v))
        wiped = store.disks[3]
        for name in os.listdir(paths[3]):
            shutil.rmtree(os.path.join(paths[3], name))
        store.scanner.start(scan=False)
        await store.scanner.check_disks()
        await eventually(lambda: store.scanner.refill.get(wiped.disk_id, {}).get("state") == "finished", timeout=30)
        for k, v in bodies.items():
            entry = store.registry.get_object("bkt", k)
            slot = entry["disks"].index(wiped.disk_id)
            meta = smalllog.decode(await wiped.read_record(entry["lg"][slot]))
            assert meta["wid"] == entry["wid"] and meta["shard"] == slot
            assert await get_bytes(store, "bkt", k) == v
    finally:
        await store.close()


async def test_objects_written_before_the_log_stay_readable(tmp_disks) -> None:
    paths = tmp_disks(4)
    store = await open_store(paths, small_log=False)
    await store.make_bucket("bkt")
    await store.put_object("bkt", "legacy", b"from a metadata file", 20)
    await store.put_object("bkt", "replaced", b"old", 3)
    await store.close()
    assert len(meta_files(paths)) == 8
    store = await open_store(paths)
    try:
        assert await get_bytes(store, "bkt", "legacy") == b"from a metadata file"
        assert (await heal_object(store, "bkt", "legacy", deep=True)).bad == []
        await store.put_object("bkt", "replaced", b"new", 3)
        assert await get_bytes(store, "bkt", "replaced") == b"new"
        await asyncio.gather(*list(store._background), return_exceptions=True)
        assert len(meta_files(paths)) == 4  # the replaced write's metadata files are gone
        store.test_paths = paths
        store = await _drop_registry_and_reopen(store)
        assert await get_bytes(store, "bkt", "legacy") == b"from a metadata file"
        assert await get_bytes(store, "bkt", "replaced") == b"new"
    finally:
        await store.close()


async def test_objects_written_with_the_log_and_deleted_after_it_was_turned_off_stay_deleted(tmp_disks) -> None:
    """A small object written while the record log was on, deleted (or replaced by a delete
    marker) after a restart with it off: its records got no kill record, and a registry
    rebuilt from the disks brought it back (no power cut needed). Its removal is now recorded
    in the log whatever the flag, synced before the delete marker (a metadata file now) goes."""
    paths = tmp_disks(4)
    store = await open_store(paths)
    await store.make_bucket("bkt")
    await store.make_bucket("vbk")
    await store.set_versioning("vbk", "Enabled")
    await store.put_object("bkt", "gone", b"written through the log", 23)
    await store.put_object("bkt", "kept", b"stays", 5)
    await store.put_object("vbk", "v", b"a version", 9)
    assert smalllog.uses_log(store.registry.get_object("bkt", "gone"))
    await store.close()
    store = await open_store(paths, small_log=False)
    try:
        await store.delete_object("bkt", "gone")
        noncurrent = (await store.put_object("vbk", "v", b"newer", 5)).version_id
        first = [v.version_id for v in (await store.list_object_versions("vbk")).versions if v.version_id != noncurrent]
        await store.delete_object("vbk", "v", version_id=first[0])  # the log version, by id
        await asyncio.gather(*list(store._background), return_exceptions=True)
        await store.close()
        for p in paths:
            shutil.rmtree(os.path.join(p, REGISTRY_DIR), ignore_errors=True)
        store = await open_store(paths, small_log=False)
        with pytest.raises(errors.NoSuchKey):
            await get_bytes(store, "bkt", "gone")
        assert await get_bytes(store, "bkt", "kept") == b"stays"
        assert [v.version_id for v in (await store.list_object_versions("vbk")).versions] == [noncurrent]
    finally:
        await store.close()


async def test_a_store_whose_log_was_turned_off_still_compacts_its_segments(tmp_disks) -> None:
    """The segments written while the record log was on keep dead records once their objects
    are replaced or deleted with it off: the background compaction runs anyway (before, it was
    started only with the log on, and that space was never reclaimed)."""
    from buckets.engine.scanner import ScannerConfig

    paths = tmp_disks(4)
    await written_and_closed(paths, 20)
    store = await open_store(paths, small_log=False, background=True,
                             scanner_config=ScannerConfig(cycle_pause=0.05))
    try:
        store.compactor.cfg.settle = 0
        # A pass may look at the sealed segment while the loop below is still halfway (passes
        # run every 0.05 s here): found mostly live then, it would wait out ``recheck`` (an hour).
        store.compactor.cfg.recheck = 0
        for i in range(20):
            if i % 2:
                await store.delete_object("bkt", f"k{i}")
            else:
                await store.put_object("bkt", f"k{i}", content(f"new{i}", 400), 400)
        await asyncio.gather(*list(store._background), return_exceptions=True)
        await eventually(lambda: store.compactor.stats["segments_compacted"] >= 1, timeout=20)
        assert store.compactor.stats["bytes_reclaimed"] > 0
        for i in range(0, 20, 2):
            assert await get_bytes(store, "bkt", f"k{i}") == content(f"new{i}", 400)
    finally:
        await store.close()


async def test_with_the_log_off_an_inline_put_on_disks_at_their_reserve_is_refused(tmp_disks, monkeypatch) -> None:
    """An inline object's metadata files are new data: refused below the disks' reserve like
    its records (507, nothing left on a disk); a delete marker's are not."""
    from buckets.storage import local

    paths = tmp_disks(4)
    store = await open_store(paths, small_log=False)
    try:
        await store.make_bucket("vbk")
        await store.set_versioning("vbk", "Enabled")
        await store.put_object("vbk", "k", b"before", 6)
        monkeypatch.setattr(local, "disk_reserve", 100.0)  # every byte of every disk is reserve
        monkeypatch.setattr(store.catalog, "check_room", lambda bucket: None)  # not the registry's disk: the data's
        for d in store.disks:
            d._space = None
        files = sorted(meta_files(paths))
        with pytest.raises(errors.StorageFull):
            await store.put_object("vbk", "k", b"refused", 7)
        with pytest.raises(errors.StorageFull):
            await store.put_object("vbk", "new", b"refused", 7)
        assert sorted(meta_files(paths)) == files  # nothing of either write is left
        assert await get_bytes(store, "vbk", "k") == b"before"
        marker = await store.delete_object("vbk", "k")  # a deletion goes into the reserve
        assert marker.delete_marker and len(meta_files(paths)) == len(files) + 4
    finally:
        await store.close()


async def test_versioned_delete_markers_and_lock_through_the_log(store) -> None:
    await store.make_bucket("vbk")
    await store.set_versioning("vbk", "Enabled")
    a = await store.put_object("vbk", "k", b"aaa", 3, PutOptions(tags={"x": "1"}))
    m = await store.delete_object("vbk", "k")
    marker = await store.catalog.get_version("vbk", "k", m.version_id)
    assert marker["dm"] and smalllog.uses_log(marker)
    assert (await heal_object(store, "vbk", "k", deep=True)).bad == []
    await store.delete_object("vbk", "k", version_id=m.version_id)  # removing the marker by id
    await asyncio.gather(*list(store._background), return_exceptions=True)
    assert await get_bytes(store, "vbk", "k") == b"aaa"
    assert (await store.head_object("vbk", "k")).version_id == a.version_id


async def test_a_scanner_cycle_checks_records_and_sweeps_nothing_live(store) -> None:
    bodies = {f"s{i}": content(f"s{i}", 900) for i in range(10)}
    for k, v in bodies.items():
        await store.put_object("bkt", k, v, len(v))
    entry = store.registry.get_object("bkt", "s3")
    damage(store.by_id[entry["disks"][2]].root, entry["lg"][2])
    store.scanner.cfg.grace = 0.0  # everything is old enough to be an orphan, were it one
    result = await store.scanner.run_cycle(deep=True, paced=False)
    assert result["checked"] == 10
    assert store.heal_stats.shards_repaired == 1
    assert store.registry.get_object("bkt", "s3")["lg"][2] != entry["lg"][2]
    for k, v in bodies.items():
        assert await get_bytes(store, "bkt", k) == v
        assert (await heal_object(store, "bkt", k, deep=True)).bad == []


async def _rebuilt_without_a_disk(store, paths: list, slot: int):
    """Close ``store``; its disk ``slot`` goes away (a file in its place) and so does every
    registry; the store opened again rebuilds its registry without that disk. (The new
    store, the disk's id, its path: the disk is back with ``os.unlink`` then a rename of
    ``path + ".aside"``.)"""
    away_id = store.disks[slot].disk_id
    await store.close()
    away = paths[slot]
    os.rename(away, away + ".aside")
    with open(away, "w") as f:
        f.write("not a disk")
    for p in paths:
        shutil.rmtree(os.path.join(p, REGISTRY_DIR), ignore_errors=True)
    return await open_store(paths), away_id, away


async def test_records_of_a_disk_away_during_a_rebuild_are_adopted_when_it_is_back(tmp_disks) -> None:
    """A registry rebuilt while a disk is away cannot see that disk's records (its slots get no
    location); when the disk is back, its records are taken as they are, not rebuilt."""
    paths = tmp_disks(4)
    store = await open_store(paths)
    await store.make_bucket("bkt")
    bodies = {f"k{i}": content(f"k{i}", 300 + i) for i in range(12)}
    for k, v in bodies.items():
        await store.put_object("bkt", k, v, len(v))
    before = {k: store.registry.get_object("bkt", k)["lg"] for k in bodies}
    store, away_id, away = await _rebuilt_without_a_disk(store, paths, 2)
    try:
        for k, v in bodies.items():
            entry = store.registry.get_object("bkt", k)
            assert entry["lg"][entry["disks"].index(away_id)] is None
            assert await get_bytes(store, "bkt", k) == v  # read around the missing slot
        assert store.registry.get_sys(smalllog.UNSCANNED) == [away_id]
    finally:
        await store.close()
    os.unlink(away)
    os.rename(away + ".aside", away)
    store = await open_store(paths)
    try:
        for k, v in bodies.items():
            assert store.registry.get_object("bkt", k)["lg"] == before[k]  # adopted, not rewritten
            assert (await heal_object(store, "bkt", k, deep=True)).bad == []
        assert store.registry.get_sys(smalllog.UNSCANNED) == []
        assert not os.path.exists(store.registry.path.rstrip("/") + ".adopt")  # its scratch LMDB is gone
    finally:
        await store.close()


async def test_compaction_leaves_a_disk_alone_until_its_records_are_adopted(tmp_disks) -> None:
    """A disk back while the store runs, after a registry rebuild without it: until the refill
    adopts its records, the registry names none of them, so a compaction pass would judge them
    all dead and delete their segments (or punch them out, the disk short of space) under the
    adoption's feet. It waits for the adoption."""
    paths = tmp_disks(4)
    store = await open_store(paths)
    await store.make_bucket("bkt")
    bodies = {f"k{i}": content(f"k{i}", 300 + i) for i in range(12)}
    for n, (k, v) in enumerate(bodies.items()):
        await store.put_object("bkt", k, v, len(v))
        if n == 5:  # two segments on each disk: the first one sealed
            await store.close()
            store = await open_store(paths)
    before = {k: store.registry.get_object("bkt", k)["lg"] for k in bodies}
    store, away_id, away = await _rebuilt_without_a_disk(store, paths, 2)
    try:
        disk = store.by_id[away_id]
        assert not disk.online
        os.unlink(away)
        os.rename(away + ".aside", away)
        segments = await asyncio.to_thread(os.listdir, os.path.join(away, LOG_DIR))
        disk.mark_online()  # back, its refill not started yet
        await store.compactor.run_pass(paced=False, settle=0)
        disk.refused_at = time.monotonic()  # and short of space
        await store.compactor.run_pass(paced=False, settle=0)
        assert sorted(await asyncio.to_thread(os.listdir, os.path.join(away, LOG_DIR))) == sorted(segments)
        assert await smalllog.adopt_records(store, disk) == len(bodies)
        for k, v in bodies.items():
            assert store.registry.get_object("bkt", k)["lg"] == before[k]
            assert (await heal_object(store, "bkt", k, deep=True)).bad == []
    finally:
        await store.close()


def test_records_are_compact_and_decode_to_exactly_the_metadata() -> None:
    entry = {"vid": "null", "vs": 1, "wid": "18ecc13069212000000072bba86db624", "mt": 1.5, "size": 4,
             "etag": "dfcb7b8896c2d6a942b284c956beee86", "h": {}, "um": {}, "ck": {}, "ckt": None,
             "ch": "a525f68181309684773a86d44604aab94f0414537b8f5c4abe9d388847665f01", "sc": "STANDARD",
             "k": 2, "m": 2, "bs": 1 << 20, "gen": 1, "inline": True,
             "disks": ["55a3e028-3c6c-4991-b5ce-566fe649d6f0", "1497f02e-78c9-4858-9938-83c70e4011d4"],
             "parts": [[1, 4, "dfcb7b8896c2d6a942b284c956beee86", {}, 1.5]], "lg": [[1, 2, 3], None]}
    plain = {f: v for f, v in entry.items() if f != "lg"}
    odd = dict(plain, etag="ABC-2", h={"content-type": "x"}, sc="REDUCED_REDUNDANCY", disks=["not-a-uuid", "x"],
               parts=[[1, 99, "x", {}, 1.5]], dm=True, tg={"a": "b"}, ck={"CRC32": "AAAA"}, ckt="FULL_OBJECT")
    for meta in (plain, odd):
        many = smalllog.slot_payloads("bkt", "k", dict(meta, lg=[None]), {0: b"xx", 1: None})
        assert smalllog.decode(many[0]) == dict(meta, bucket="bkt", key="k", shard=0, data=b"xx")
        assert smalllog.decode(many[1]) == dict(meta, bucket="bkt", key="k", shard=1)
        one = smalllog.slot_payload("bkt", "k", meta, 0, b"xx")
        assert smalllog.decode(one) == dict(meta, bucket="bkt", key="k", shard=0, data=b"xx")
    # the common case's metadata takes little more than half the plain msgpack (a 4 KiB object's
    # record is ~2.3 KB instead of ~2.6 KB)
    import msgpack

    assert len(many[1]) < len(msgpack.packb(dict(odd, bucket="bkt", key="k", shard=1)))
    assert len(smalllog.slot_payload("bkt", "k", plain, 1, None)) < 0.6 * len(msgpack.packb(
        dict(plain, bucket="bkt", key="k", shard=1)))


async def test_compaction_leaves_a_recently_sealed_segment_alone(tmp_disks) -> None:
    """A PUT appends its records before it commits its entry: a segment sealed moments ago may
    hold records whose entries are on their way, so the default pass does not judge it."""
    paths = tmp_disks(4)
    store = await open_store(paths)
    await store.make_bucket("bkt")
    for i in range(10):
        await store.put_object("bkt", f"k{i}", b"old", 3)
    await store.close()
    store = await open_store(paths)  # a new segment per disk: the first ones are sealed
    try:
        for i in range(10):
            await store.delete_object("bkt", f"k{i}")
        await asyncio.gather(*list(store._background), return_exceptions=True)
        before = {root: sorted(os.listdir(os.path.join(root, LOG_DIR))) for root in paths}
        done = await store.compactor.run_pass(paced=False)  # the default settle time: 10 minutes
        assert done["segments_scanned"] == 0 and done["segments_compacted"] == 0
        assert {root: sorted(os.listdir(os.path.join(root, LOG_DIR))) for root in paths} == before
        done = await store.compactor.run_pass(paced=False, settle=0)
        assert done["segments_compacted"] == 4
    finally:
        await store.close()


async def test_a_relocated_record_is_read_from_its_meta_file(store) -> None:
    """What a cluster's compaction and heal do with a record (smalllog.relocate): the slot's
    metadata becomes the write's ``.meta`` file and the entry keeps its location; once the
    record is gone, reads, heal and the deep check find the file."""
    body = content("relocated", 700)
    await store.put_object("bkt", "k", body, len(body))
    entry = await store.catalog.get_object("bkt", "k")
    disks = store.disks_for(entry["disks"])
    loc = smalllog.location_of(entry, 0)
    meta = await smalllog.read_slot("bkt", "k", entry, 0, disks[0])
    await smalllog.relocate(store, "bkt", "k", disks[0], meta)
    assert len(meta_files(store.test_paths)) == 1
    root = disks[0].local_path("")
    os.remove(segment_file(root, loc))  # the record is gone (compaction deleted its segment)
    assert (await smalllog.read_slot("bkt", "k", entry, 0, disks[0]))["data"] == meta["data"]
    assert await get_bytes(store, "bkt", "k") == body
    assert (await heal_object(store, "bkt", "k", deep=True)).bad == []
    assert await store.catalog.get_object("bkt", "k") == entry  # the entry did not change
    await store.delete_object("bkt", "k")
    await asyncio.gather(*list(store._background), return_exceptions=True)
    assert meta_files(store.test_paths) == []  # the file went with its write


async def test_compaction_does_not_rescan_a_segment_it_found_mostly_live(tmp_disks) -> None:
    """A pass remembers the segments it found mostly live: the next passes (a minute apart in
    a server) skip them for ``recheck`` seconds instead of reading every record again."""
    store = await reopened_with_ten_objects(tmp_disks(4))
    try:
        await store.put_object("bkt", "new", b"new", 3)  # a new segment per disk: the first ones are sealed
        first = await store.compactor.run_pass(paced=False, settle=0)
        assert first["segments_scanned"] == 4 and first["segments_compacted"] == 0  # all live
        again = await store.compactor.run_pass(paced=False, settle=0)
        assert again["segments_scanned"] == 0  # remembered
        for i in range(10):
            await store.delete_object("bkt", f"k{i}")
        await asyncio.gather(*list(store._background), return_exceptions=True)
        assert (await store.compactor.run_pass(paced=False, settle=0))["segments_scanned"] == 0
        done = await store.compactor.run_pass(paced=False, settle=0, recheck=0)  # due again
        assert done["segments_scanned"] == 4 and done["segments_compacted"] == 4
    finally:
        await store.close()


async def test_a_release_on_a_disk_that_fails_is_left_to_compaction(store) -> None:
    """A disk that fails its release (a peer down: ``DiskOffline``, not a BucketsError) does not
    fail the removal; the others release theirs."""
    from buckets.errors import DiskOffline

    class Down:
        endpoint = "http://down/d1"

        async def release_records(self, wid, locations):
            raise DiskOffline("peer is offline")

    body = content("gone", 3000)
    await store.put_object("bkt", "gone", body, len(body))
    entry = store.registry.get_object("bkt", "gone")
    disks = store.disks_for(entry["disks"])
    await smalllog.release(store, entry["wid"], [Down()] + disks[1:], entry["lg"])
    with pytest.raises(errors.CorruptData):
        await disks[1].read_record(entry["lg"][1])
    assert await disks[0].read_record(entry["lg"][0])  # the failed disk's record stays


def punches_holes(root: str) -> bool:
    """Whether the file system under ``root`` frees the blocks of a punched hole."""
    from buckets.storage import local

    path = os.path.join(os.path.dirname(root.rstrip("/")), "punch-probe")
    with open(path, "wb") as f:
        f.write(b"x" * (64 << 10))
        f.flush()
        os.fsync(f.fileno())
        before = os.fstat(f.fileno()).st_blocks
        try:
            if local._FALLOCATE is None:
                return False
            local._punch(f.fileno(), 16 << 10, 32 << 10)
        except (local._CannotPunch, OSError):
            return False
        finally:
            after = os.fstat(f.fileno()).st_blocks
            os.unlink(path)
    return after < before


async def _put_and_delete(store: Store, count: int, gone) -> tuple[dict, int]:
    """``count`` objects of 4,000 bytes, then those ``gone(i)`` picks deleted: the objects
    that stay, and the bytes of the deleted ones' records."""
    bodies = {f"k{i:02d}": content(f"k{i}", 4000) for i in range(count)}
    for k, v in bodies.items():
        await store.put_object("bkt", k, v, len(v))
    dead = [k for i, k in enumerate(bodies) if gone(i)]
    size = sum(loc[2] for k in dead for loc in store.registry.get_object("bkt", k)["lg"])
    for k in dead:
        await store.delete_object("bkt", k)
    await asyncio.gather(*list(store._background), return_exceptions=True)
    return {k: v for k, v in bodies.items() if k not in dead}, size


async def test_a_disk_short_of_space_frees_the_records_deleted_before_in_place(store) -> None:
    """Objects deleted while the disks had room keep their records, for compaction, which
    looks at a segment only ten minutes after it is sealed: a full disk may never fill its
    current segment to seal it. Once a disk is short of space (near full here), the next
    compaction pass punches out of the current segment every record that a kill record after
    it removed, and moves nothing. What stays reads, and a registry rebuilt from the disks finds
    exactly what stays."""
    paths = store.test_paths
    if not punches_holes(paths[0]):
        pytest.skip("this file system does not punch holes")
    kept, size = await _put_and_delete(store, 60, lambda i: i < 40 or i % 7 == 0)
    before = allocated_log_bytes(paths)
    done = await store.compactor.run_pass(paced=False)  # room to spare: compaction's work, later
    assert done["bytes_released"] == 0 and allocated_log_bytes(paths) == before
    for d in store.disks:
        d.near_full = True  # as the disk monitor finds a disk under 4 reserves free
    done = await store.compactor.run_pass(paced=False)
    freed = before - allocated_log_bytes(paths)
    assert freed == done["bytes_released"] and freed >= size * 3 // 4, (freed, size)
    assert done["segments_compacted"] == done["records_moved"] == 0
    assert (await store.compactor.run_pass(paced=False))["bytes_released"] == 0  # (nothing new)
    await (await _reads_then_rebuilds(store, kept)).close()


async def test_a_disk_short_of_space_frees_the_garbage_of_segments_compaction_leaves(tmp_disks) -> None:
    """A sealed segment with less than half of it dead is not compacted; on a disk short of
    space its dead records are freed where they are."""
    paths = tmp_disks(4)
    if not punches_holes(paths[0]):
        pytest.skip("this file system does not punch holes")
    store = await open_store(paths)
    await store.make_bucket("bkt")
    kept, size = await _put_and_delete(store, 60, lambda i: i % 10 < 4)  # 40% dead, four side by side
    await store.close()
    store = await open_store(paths)  # a new segment per disk: the first ones are sealed
    try:
        await store.put_object("bkt", "new", b"new", 3)
        # Its record's block allocated now, not between the two counts (a delayed allocation
        # landing during the pass counted one block less freed: fresh run 337).
        os.sync()
        before = allocated_log_bytes(paths)
        for d in store.disks:
            d.refused_at = time.monotonic()  # it refused new data a moment ago
        done = await store.compactor.run_pass(paced=False, settle=0)
        assert done["segments_compacted"] == 0 and done["records_moved"] == 0
        freed = before - allocated_log_bytes(paths)
        assert freed == done["bytes_released"] and freed >= size // 4, (freed, size)
        for k, v in kept.items():
            assert await get_bytes(store, "bkt", k) == v
        assert await get_bytes(store, "bkt", "new") == b"new"
    finally:
        await store.close()


async def test_a_record_is_freed_by_a_kill_only_after_it(store) -> None:
    """In the newer segments a record with no entry may be a PUT's whose commit is on its way:
    it stays. So does a record written after its write's kill (the write moved back onto this
    disk by a later migration). A record followed by its write's kill goes."""
    disk = store.disks[0]
    if not punches_holes(store.test_paths[0]):
        pytest.skip("this file system does not punch holes")

    def record(wid: str) -> bytes:
        return smalllog.encode({"bucket": "bkt", "key": "x", "wid": wid, "shard": 0, "data": b"x" * 5000})

    def kill(wid: str) -> bytes:
        return smalllog.encode({"kill": True, "bucket": "bkt", "key": "x", "wid": wid})

    pending, before, after = "a" * 32, "b" * 32, "c" * 32
    locs = await disk.append_records([record(pending), record(before), kill(before), kill(after),
                                      record(after)], sync=False)
    disk.near_full = True
    await store.compactor.run_pass(paced=False)
    assert smalllog.decode(await disk.read_record(locs[0]))["wid"] == pending
    assert smalllog.decode(await disk.read_record(locs[4]))["wid"] == after
    with pytest.raises(errors.CorruptData):
        await disk.read_record(locs[1])
