"""Regression tests of what the power-loss campaigns found (architecture/consistency.md,
"What it found"), each one quick and deterministic: the fast campaigns sample cuts, so they
need not meet the cut where a regression would show.

Findings 1 (a PUT's shard files) and 7 (a new registry) show at the last cut of the
``put-multiblock`` and ``registry-rebuild`` campaigns, in the "every unsynced change lost"
state that every campaign checks; finding 1 also through the self-test."""

from __future__ import annotations

import os
import shutil
import time

import lmdb
import pytest
from crash_harness import BLOCK, DISKS, INLINE, Run, Scenario, body, record, run_campaign
from crash_scenarios import LARGE, SCENARIOS
from crash_smalllog_scenarios import _sealed

from buckets import Store, errors
from buckets.engine import paths
from buckets.engine.meta import bucket_meta_file, decode_meta_file
from buckets.engine.types import CompletePart
from buckets.registry import Registry
from buckets.storage import LocalDisk
from buckets.storage import records as rlog
from buckets.storage.faulty import FaultyDisk
from buckets.storage.format import DATA_DIR, LOG_DIR, REGISTRY_DIR

OPTS = dict(block_size=BLOCK, inline_threshold=INLINE, partitions=16, background=False)


async def _read(store: Store, bucket: str, key: str) -> bytes:
    reader = await store.get_object(bucket, key)
    out = bytearray()
    try:
        async for chunk in reader:
            out += chunk
    finally:
        await reader.aclose()
    return bytes(out)


async def test_2_a_complete_that_lost_its_quorum_can_be_completed_again(tmp_disks) -> None:
    """Before: the Complete moved the parts on the disks where it succeeded, then removed
    them with the failed write; every retry lost its quorum again."""
    disks = [FaultyDisk(LocalDisk(p)) for p in tmp_disks(4)]
    store = await Store.open_disks(disks, sync=False, **OPTS)
    try:
        await store.make_bucket("bkt")
        up = await store.create_multipart_upload("bkt", "k")
        data = body("k", LARGE)
        part = await store.put_part("bkt", "k", up.upload_id, 1, data, len(data))
        for d in disks[:2]:
            d.fail("rename_data", error=errors.DiskError("injected"), times=1)
        with pytest.raises(errors.WriteQuorumLost):
            await store.complete_multipart_upload("bkt", "k", up.upload_id, [CompletePart(1, part.etag)])
        await store.complete_multipart_upload("bkt", "k", up.upload_id, [CompletePart(1, part.etag)])
        assert await _read(store, "bkt", "k") == data
    finally:
        await store.close()


async def test_3_the_scanner_rewrites_missing_and_stale_bucket_records(tmp_disks) -> None:
    """Before: only a refill wrote them, and a refill cut short is not resumed."""
    roots = tmp_disks(4)
    store = await Store.open(roots, sync=False, **OPTS)
    try:
        await store.make_bucket("bkt")
        await store.update_bucket("bkt", {"tagging": {"k": "v"}})
        record = await store.bucket_record("bkt")
        os.unlink(os.path.join(roots[0], paths.bucket_meta("bkt")))
        with open(os.path.join(roots[1], paths.bucket_meta("bkt")), "wb") as f:
            f.write(bucket_meta_file("bkt", {"created": record["created"], "owner": ""}))  # before the update
        result = await store.scanner.run_cycle(paced=False)
        assert result["bucket_files_rewritten"] == 2
        for root in roots:
            with open(os.path.join(root, paths.bucket_meta("bkt")), "rb") as f:
                meta = decode_meta_file(f.read())
            assert {k: v for k, v in meta.items() if k not in ("bucket", "version")} == record
        assert (await store.scanner.run_cycle(paced=False))["bucket_files_rewritten"] == 0
    finally:
        await store.close()


@pytest.mark.parametrize("left", ["empty", "partial"])
async def test_4_a_registry_left_half_built_by_a_crash_is_rebuilt(tmp_disks, left) -> None:
    """Before: an existing LMDB file was trusted, however little a crashed rebuild had put
    in it (what a crash right after the environment was created, or between two of the
    rebuild's commits, leaves)."""
    roots = tmp_disks(4)
    store = await Store.open(roots, sync=False, **OPTS)
    await store.make_bucket("bkt")
    data = {f"k{i}": body(f"k{i}", 1000 + 9000 * i) for i in range(3)}
    for key, value in data.items():
        await store.put_object("bkt", key, value, len(value))
    registry_dir = store.disks[0].local_path(REGISTRY_DIR)
    await store.close()
    shutil.rmtree(registry_dir)
    if left == "empty":
        lmdb.open(registry_dir, max_dbs=len(Registry.TABLES) + 2).close()
    else:
        reg = Registry(registry_dir, sync=False)
        reg.start()
        from buckets.registry import Op

        await reg.commit([Op("put_bucket", "bkt", value={"created": 1.0, "owner": ""})])
        await reg.close()
    store = await Store.open(roots, sync=False, **OPTS)
    try:
        for key, value in data.items():
            assert await _read(store, "bkt", key) == value
    finally:
        await store.close()


async def test_5_a_rewritten_metadata_file_never_tears(crash_dir) -> None:
    """Before: a cut between a batch's renames and its syncfs could leave PutObjectAcl's
    rewritten metadata files empty on several disks (the sweep then removed their shards)."""
    report = await run_campaign(SCENARIOS["put-object-acl"], crash_dir, limit=16, combos=32,
                                cut_filter=lambda ev: ev.kind == "syncfs")
    assert report.cuts_checked >= 8 and report.states > 0
    assert not report.violations, "\n".join(report.violations)


async def test_6_an_acknowledged_part_survives_with_its_upload_directory(crash_dir) -> None:
    """Before: the upload's directory was created with no fsync of its parent, so a power
    cut could take it, and every acknowledged part in it."""
    report = await run_campaign(SCENARIOS["upload-part"], crash_dir, limit=16, combos=32)
    assert report.states > 0
    assert not report.violations, "\n".join(report.violations)


@pytest.mark.xfail(strict=True, reason="the rebuild counts metadata files only; the state made here by hand (the "
                                        "registry commit without the kill records synced before it) is no longer "
                                        "reachable, so this stays as a record of the rebuild's assumption")
async def test_a_version_deleted_by_id_is_not_revived_torn_by_a_rebuild(tmp_disks) -> None:
    """What the versioned campaigns found (crash_harness.KNOWN_TORN_REVIVAL): DELETE of a
    version by id commits the registry, then removes the write's files, metadata first, then
    data. The power cut keeps the data's unlink on some disks and loses the metadata's: here
    the state is made by hand (v1's metadata on every disk, its part file gone from three).
    After a registry rebuild v1 must be gone or whole; it comes back listed and unreadable."""
    roots = tmp_disks(4)
    store = await Store.open(roots, sync=False, **OPTS)
    await store.make_bucket("bkt", settings={"versioning": "Enabled"})
    v1 = await store.put_object("bkt", "k", body("v1", LARGE), LARGE)
    v2 = await store.put_object("bkt", "k", body("v2", 1000), 1000)
    entry = store.registry.get_object_version("bkt", "k", v1.version_id)
    registry_dir = store.disks[0].local_path(REGISTRY_DIR)
    await store.catalog.delete_version("bkt", "k", v1.version_id)  # the registry commit of the DELETE
    await store.close()
    for root in roots[:3]:  # what the power cut kept of the removal: the data's unlink only
        os.unlink(os.path.join(root, paths.part_path("bkt", "k", entry["wid"], 1)))
    shutil.rmtree(registry_dir)
    store = await Store.open(roots, sync=False, **OPTS)
    try:
        page = await store.list_object_versions("bkt", prefix="k")
        listed = [v.version_id for v in page.versions]
        if v1.version_id in listed:  # back: then whole
            assert await _read_version(store, "bkt", "k", v1.version_id) == body("v1", LARGE)
        assert listed[0] == v2.version_id
    finally:
        await store.close()


async def _read_version(store: Store, bucket: str, key: str, vid: str) -> bytes:
    reader = await store.get_object(bucket, key, version_id=vid)
    out = bytearray()
    try:
        async for chunk in reader:
            out += chunk
    finally:
        await reader.aclose()
    return bytes(out)


async def _delete_short_of_space_setup(run: Run) -> None:
    await run.open_store(small_log=True)
    await run.make_bucket()
    await run.put("k", body("k", 1000))


async def _delete_short_of_space(run: Run) -> None:
    for d in run.store.disks:
        d.refused_at = time.monotonic()  # short of space: removed records are punched at once
    await run.delete("k")


async def test_8_no_record_is_punched_before_the_appends_before_it_are_durable(crash_dir) -> None:
    """Before: on a store short of space, DELETE of a small object appended a kill record of
    the write to each disk (unsynced), punched its records, then did the same to its delete
    marker; a power cut could keep the marker's hole and lose the kill record, and a registry
    rebuilt from the disks revived the key (``log-release-delete``, ``log-release-compaction``;
    the state is made by hand below). Every segment appended to is now fsynced before records
    are punched (``LocalDisk._sync_appended``): at each punch the model must find no appended
    bytes of the log that a power cut could still lose."""
    scenario = Scenario("delete short of space", _sealed(_delete_short_of_space_setup), _delete_short_of_space)
    _, model = await record(scenario, crash_dir / "rec")
    segments = {ev.ino: ev.path for ev in model.events if ev.kind == "creat" and ev.path.startswith(f"{LOG_DIR}/")}
    punches = [i for i, ev in enumerate(model.events) if ev.kind == "punch"]
    if not punches:
        pytest.skip("this file system does not punch holes")
    assert len({model.events[i].root for i in punches}) == DISKS
    for i in punches:
        ev = model.events[i]
        unsynced = [segments[e.ino] for e in model.pending(ev.root, i) if e.kind == "write" and e.ino in segments]
        assert not unsynced, f"{ev.path}@{ev.offset} punched while appends to {unsynced} were not durable"


@pytest.mark.xfail(strict=True, reason="the rebuild trusts a deleted write with no kill record; the state made here "
                                        "by hand (the marker's hole durable, the deleted write's kill records lost) "
                                        "is no longer reachable (test_8), so this stays as a record of that assumption")
async def test_a_small_object_deleted_short_of_space_is_not_revived_by_a_rebuild(tmp_disks) -> None:
    """What the release campaigns found (``log-release-delete``, ``log-release-compaction``),
    before ``LocalDisk._sync_appended``: on a store short of space, DELETE of a small object
    commits the registry, then appends a kill record of the write to each disk, unsynced, and
    punches its records, then does the same to its delete marker. The power cut kept the
    marker's hole (its zeroed bytes written back with their page) and lost the rest (the kill
    records past the segment's durable length, the object's hole): made here by hand on every
    disk. After a registry rebuild the key must stay deleted; it comes back."""
    roots = tmp_disks(4)
    store = await Store.open(roots, sync=False, small_log=True, **OPTS)
    await store.make_bucket("bkt")
    data = body("k", 1000)
    await store.put_object("bkt", "k", data, len(data))
    entry = store.registry.get_object("bkt", "k")
    records = {}
    for slot, disk_id in enumerate(entry["disks"]):
        seg, off, length = entry["lg"][slot]
        path = store.by_id[disk_id].local_path(f"{LOG_DIR}/{rlog.segment_name(seg)}")
        with open(path, "rb") as f:
            f.seek(off)
            records[path] = (off, f.read(length))
    registry_dir = store.disks[0].local_path(REGISTRY_DIR)
    await store.close()
    store = await Store.open(roots, sync=False, small_log=True, **OPTS)  # the delete's records: a new segment
    for d in store.disks:
        d.refused_at = time.monotonic()  # short of space: removed records are punched at once
    await store.delete_object("bkt", "k")
    tails = {}
    for d in store.disks:
        segments = await d.list_segments()
        first_kill = [loc async for loc, _ in d.walk_records(segments[-1][0])][0]
        tails[d.local_path(f"{LOG_DIR}/{rlog.segment_name(segments[-1][0])}")] = first_kill[1]
    await store.close()
    for path, (off, raw) in records.items():  # the object's hole lost
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(raw)
    for path, end in tails.items():  # the marker's hole kept (zeros), the kill records after it lost
        with open(path, "r+b") as f:
            if f.read(end) != bytes(end):
                pytest.skip("this file system does not punch holes")
            f.truncate(end)
    shutil.rmtree(registry_dir)
    store = await Store.open(roots, sync=False, small_log=True, **OPTS)
    try:
        with pytest.raises(errors.NoSuchKey):
            await _read(store, "bkt", "k")
    finally:
        await store.close()


async def _delete_log_off_setup(run: Run) -> None:
    await run.open_store()  # the record log off: objects and markers are metadata files
    await run.make_bucket()
    await run.put("obj", body("obj-v1", LARGE))


async def _delete_log_off(run: Run) -> None:
    await run.delete("obj")


async def test_9_a_delete_marker_goes_only_after_the_objects_removal_is_durable(crash_dir) -> None:
    """Before: with the record log off, an unversioned DELETE removed the object's metadata
    file, then its delete marker's, two unlinks in the key's directory with no sync between
    them; a power cut could keep the marker's unlink and lose the object's, and a registry
    rebuilt from the disks brought the key back (the ``delete`` campaign with its rebuild
    check: 20 of 541 states). The directory is now fsynced in between: at each disk's unlink
    of the marker, the model must find the object's unlink there durable."""
    scenario = Scenario("delete, record log off", _delete_log_off_setup, _delete_log_off)
    _, model = await record(scenario, crash_dir / "rec")
    checked = 0
    for rid in range(DISKS):
        metas = [i for i, ev in enumerate(model.events)
                 if ev.root == rid and ev.kind == "unlink" and ev.path.endswith(".meta")]
        assert len(metas) == 2, f"disk {rid}: the .meta unlinks {[model.events[i].path for i in metas]}"
        obj, marker = metas  # the object's first, then the marker's
        pending = model.pending(rid, marker)
        assert model.events[obj] not in pending, f"disk {rid}: the marker's unlink while the object's is not durable"
        checked += 1
    assert checked == DISKS


async def test_10_a_deleted_buckets_directory_is_gone_durably_before_the_answer(crash_dir) -> None:
    """Before: DeleteBucket committed the registry, removed the bucket's directory from each
    disk and answered, the removal not synced; a power cut could keep ``buckets/<name>/`` (its
    ``.bucket.meta``), and a registry rebuilt from the disks brought the deleted bucket back
    (the ``delete-bucket`` campaigns: 20 of 28 crash states, record log off, and 20 of 29 with
    it). ``buckets/`` is now fsynced before the answer: at the acknowledgement, the model must
    find the bucket directory's removal durable on every disk."""
    scenario = SCENARIOS["delete-bucket"]
    run, model = await record(scenario, crash_dir / "rec")
    drop = next(o for o in run.ops if o.kind == "drop_bucket")
    assert drop.ack is not None, drop.error
    for rid in range(DISKS):
        removed = [ev for ev in model.events[:drop.ack]
                   if ev.root == rid and ev.kind == "rmdir" and ev.path == f"{DATA_DIR}/gone"]
        assert len(removed) == 1, f"disk {rid}: {removed}"
        assert removed[0] not in model.pending(rid, drop.ack), f"disk {rid}: the bucket's removal is not durable"
