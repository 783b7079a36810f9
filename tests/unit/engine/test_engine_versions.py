"""Versioning in the engine: versions, delete markers, the null version, tags and object lock,
and a registry rebuild that restores all of it from the disks."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from engine_testkit import BLOCK, INLINE, MiB, content, get_bytes

from buckets import Store, errors
from buckets.engine.meta import decode_meta_file
from buckets.engine.types import CompletePart, PutOptions
from buckets.storage.format import REGISTRY_DIR

OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64)


async def versions_of(store, bucket, key=None):
    res = await store.list_object_versions(bucket, limit=10_000)
    return [(v.key, v.version_id, v.is_latest, v.delete_marker) for v in res.versions if key in (None, v.key)]


async def test_versions_markers_and_undelete(store, bucket) -> None:
    await store.put_object(bucket, "k", b"before", 6)  # written while unversioned: the null version
    await store.set_versioning(bucket, "Enabled")
    v1 = await store.put_object(bucket, "k", b"one", 3)
    v2 = await store.put_object(bucket, "k", content("two", 2 * BLOCK + 3), 2 * BLOCK + 3)
    assert v1.version_id != v2.version_id and len(v1.version_id) == 32
    assert await get_bytes(store, bucket, "k") == content("two", 2 * BLOCK + 3)
    reader = await store.get_object(bucket, "k", version_id=v1.version_id)
    assert b"".join([c async for c in reader]) == b"one"
    reader = await store.get_object(bucket, "k", version_id="null")
    assert b"".join([c async for c in reader]) == b"before"
    assert await versions_of(store, bucket) == [
        ("k", v2.version_id, True, False), ("k", v1.version_id, False, False), ("k", "null", False, False)]

    gone = await store.delete_object(bucket, "k")
    assert gone.delete_marker and gone.version_id and gone.deleted
    with pytest.raises(errors.NoSuchKey) as exc:
        await store.head_object(bucket, "k")
    assert exc.value.delete_marker is True and exc.value.version_id == gone.version_id
    with pytest.raises(errors.MethodNotAllowed):
        await store.head_object(bucket, "k", version_id=gone.version_id)
    assert (await store.list_objects(bucket)).objects == []
    with pytest.raises(errors.BucketNotEmpty):
        await store.delete_bucket(bucket)

    # removing the marker undeletes; removing a version by id removes it for good
    undo = await store.delete_object(bucket, "k", gone.version_id)
    assert undo.delete_marker and undo.version_id == gone.version_id
    assert await get_bytes(store, bucket, "k") == content("two", 2 * BLOCK + 3)
    await store.delete_object(bucket, "k", v2.version_id)
    assert await get_bytes(store, bucket, "k") == b"one"  # the next newest became current
    with pytest.raises(errors.NoSuchVersion):
        await store.head_object(bucket, "k", version_id=v2.version_id)
    with pytest.raises(errors.InvalidArgument):
        await store.head_object(bucket, "k", version_id="not-a-version")
    assert (await store.delete_object(bucket, "k", "0" * 32)).deleted is False
    for vid in (v1.version_id, "null"):
        await store.delete_object(bucket, "k", vid)
    assert await versions_of(store, bucket) == []
    assert store.registry.usage.get(bucket, [0, 0]) == [0, 0]
    await store.delete_bucket(bucket)


async def test_suspended_writes_replace_the_null_version(store, bucket, disk_paths) -> None:
    await store.set_versioning(bucket, "Enabled")
    kept = await store.put_object(bucket, "k", b"kept", 4)
    await store.set_versioning(bucket, "Suspended")
    a = await store.put_object(bucket, "k", b"null-a", 6)
    b = await store.put_object(bucket, "k", b"null-b", 6)
    assert a.version_id == b.version_id == "null"
    assert await versions_of(store, bucket) == [("k", "null", True, False), ("k", kept.version_id, False, False)]
    marker = await store.delete_object(bucket, "k")
    assert marker.version_id == "null" and marker.delete_marker
    assert await versions_of(store, bucket) == [("k", "null", True, True), ("k", kept.version_id, False, False)]
    with pytest.raises(ValueError):
        await store.set_versioning(bucket, "Disabled")


async def test_listing_pages_through_versions_and_prefixes(store, bucket) -> None:
    await store.set_versioning(bucket, "Enabled")
    want = []
    for key in ("a", "b/1", "b/2", "c"):
        ids = [(await store.put_object(bucket, key, key.encode(), len(key))).version_id for _ in range(3)]
        want += [(key, vid) for vid in reversed(ids)]
    await store.delete_object(bucket, "c")
    got, key_marker, vid_marker = [], "", ""
    while True:
        page = await store.list_object_versions(bucket, key_marker=key_marker, version_id_marker=vid_marker, limit=2)
        got += [(v.key, v.version_id) for v in page.versions if not v.delete_marker]
        if not page.is_truncated:
            break
        key_marker, vid_marker = page.next_key_marker, page.next_version_id_marker or ""
    assert got == want
    page = await store.list_object_versions(bucket, delimiter="/")
    assert page.prefixes == ["b/"] and {v.key for v in page.versions} == {"a", "c"}
    assert (await store.list_objects(bucket, delimiter="/")).prefixes == ["b/"]
    assert [o.key for o in (await store.list_objects(bucket)).objects] == ["a", "b/1", "b/2"]


async def test_object_lock_and_tags(store, disk_paths) -> None:
    await store.make_bucket("locked", settings={"lock": {"enabled": True}, "versioning": "Enabled"})
    until = time.time() + 3600
    gov = await store.put_object("locked", "g", b"gov", 3, PutOptions(lock_mode="GOVERNANCE", lock_until=until))
    comp = await store.put_object("locked", "c", b"comp", 4, PutOptions(lock_mode="COMPLIANCE", lock_until=until,
                                                                        tags={"team": "a"}))
    assert (comp.lock_mode, comp.tags) == ("COMPLIANCE", {"team": "a"})
    with pytest.raises(errors.AccessDenied):
        await store.delete_object("locked", "g", gov.version_id)
    with pytest.raises(errors.AccessDenied):
        await store.delete_object("locked", "c", comp.version_id, bypass_governance=True)
    with pytest.raises(errors.AccessDenied):
        await store.update_object("locked", "c", comp.version_id, lock_until=until - 60, bypass_governance=True)
    await store.update_object("locked", "c", comp.version_id, lock_until=until + 60)  # extending is allowed
    marker = await store.delete_object("locked", "g")  # a marker is always allowed
    assert marker.delete_marker
    with pytest.raises(errors.InvalidBucketState):
        await store.set_versioning("locked", "Suspended")
    await store.update_object("locked", "g", gov.version_id, legal_hold=True)
    with pytest.raises(errors.AccessDenied):
        await store.delete_object("locked", "g", gov.version_id, bypass_governance=True)
    await store.update_object("locked", "g", gov.version_id, legal_hold=False)
    assert (await store.delete_object("locked", "g", gov.version_id, bypass_governance=True)).deleted
    # default retention from the bucket's configuration
    await store.update_bucket("locked", set={"lock": {"enabled": True, "mode": "GOVERNANCE", "days": 1}})
    d = await store.put_object("locked", "d", b"d", 1)
    assert d.lock_mode == "GOVERNANCE" and abs(d.lock_until - (time.time() + 86400)) < 60
    # tags are in the version's metadata files too
    await store.update_object("locked", "c", None, tags={"x": "1"})
    assert (await store.head_object("locked", "c")).tags == {"x": "1"}
    metas = []
    for root in disk_paths:
        for dirpath, _, files in os.walk(os.path.join(root, "buckets", "locked")):
            metas += [decode_meta_file(open(os.path.join(dirpath, f), "rb").read())
                      for f in files if f.endswith(".meta") and not f.startswith(".")]
    assert any(m.get("tg") == {"x": "1"} and m["key"] == "c" for m in metas)


async def test_multipart_versions_and_completion_retry(store, bucket) -> None:
    await store.set_versioning(bucket, "Enabled")
    up = await store.create_multipart_upload(bucket, "mp", PutOptions(tags={"k": "v"}))
    body = content("p1", 5 * MiB)
    part = await store.put_part(bucket, "mp", up.upload_id, 1, body, len(body))
    done = await store.complete_multipart_upload(bucket, "mp", up.upload_id, [CompletePart(1, part.etag)])
    assert done.tags == {"k": "v"} and done.version_id != "null"
    again = await store.complete_multipart_upload(bucket, "mp", up.upload_id, [CompletePart(1, part.etag)])
    assert (again.etag, again.version_id) == (done.etag, done.version_id)
    with pytest.raises(errors.NoSuchUpload):
        await store.complete_multipart_upload(bucket, "mp", up.upload_id, [CompletePart(1, "0" * 32)])


async def test_rebuild_restores_versions_markers_tags_and_locks(tmp_disks) -> None:
    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    await store.make_bucket("vers")
    await store.make_bucket("plain")
    await store.put_object("vers", "k", b"null-version", 12)
    await store.set_versioning("vers", "Enabled")
    until = time.time() + 3600
    for i in range(3):
        await store.put_object("vers", "k", content(f"k{i}", [10, INLINE + 5, 2 * BLOCK][i]), [10, INLINE + 5, 2 * BLOCK][i],
                               PutOptions(tags={"i": str(i)}, lock_mode="GOVERNANCE" if i == 1 else None,
                                          lock_until=until if i == 1 else None))
    await store.put_object("vers", "gone", b"x", 1)
    await store.delete_object("vers", "gone")
    await store.put_object("plain", "deleted", b"y", 1)
    await store.put_object("plain", "kept", b"z", 1)
    await store.delete_object("plain", "deleted")
    want = await store.list_object_versions("vers")
    heads = {(v.key, v.version_id): v for v in want.versions}
    full = {kv: await store.head_object("vers", kv[0], kv[1]) for kv, v in heads.items() if not v.delete_marker}
    await store.close()
    shutil.rmtree(os.path.join(disks[0], REGISTRY_DIR))

    store = await Store.open(disks, **OPTS)
    try:
        got = await store.list_object_versions("vers")
        assert [(v.key, v.version_id, v.is_latest, v.delete_marker, v.etag, v.size) for v in got.versions] == \
            [(v.key, v.version_id, v.is_latest, v.delete_marker, v.etag, v.size) for v in want.versions]
        for (key, vid), before in full.items():
            after = await store.head_object("vers", key, vid)
            assert (after.tags, after.lock_mode, after.lock_until, after.etag) == \
                (before.tags, before.lock_mode, before.lock_until, before.etag)
            reader = await store.get_object("vers", key, version_id=vid)
            assert len(b"".join([c async for c in reader])) == before.size
        assert (await store.bucket_record("vers"))["versioning"] == "Enabled"
        assert [o.key for o in (await store.list_objects("plain")).objects] == ["kept"]
    finally:
        await store.close()


async def test_unversioned_delete_is_not_revived_by_a_rebuild(tmp_disks) -> None:
    """Crash between the registry commit of a delete and the removal of its files: the delete
    marker written first tells the rebuild the key is gone."""
    disks = tmp_disks(4)
    store = await Store.open(disks, **OPTS)
    await store.make_bucket("bkt2")
    await store.put_object("bkt2", "k", b"data", 4)

    async def crashed(*args, **kwargs) -> None:  # the removal never happens
        return None

    store._remove_write = crashed
    await store.delete_object("bkt2", "k")
    await store.close()
    shutil.rmtree(os.path.join(disks[0], REGISTRY_DIR))
    store = await Store.open(disks, **OPTS)
    try:
        assert (await store.list_objects("bkt2")).objects == []
    finally:
        await store.close()


@pytest.mark.parametrize("small_log", [True, False])
@pytest.mark.parametrize("size", [10, 2 * BLOCK + 3])
async def test_a_version_removed_by_id_is_not_revived_by_a_rebuild(tmp_disks, size, small_log) -> None:
    """Crash between the registry commit of a version's removal and the removal of its files:
    the kill records written first (durable, on a write quorum) tell the rebuild it is gone."""
    disks = tmp_disks(4)
    store = await Store.open(disks, **dict(OPTS, small_log=small_log))
    await store.make_bucket("vbk")
    await store.set_versioning("vbk", "Enabled")
    v1 = await store.put_object("vbk", "k", content("one", size), size)
    v2 = await store.put_object("vbk", "k", b"two", 3)

    async def crashed(*args, **kwargs) -> None:  # the removal never happens
        return None

    store._remove_write = crashed
    gone = await store.delete_object("vbk", "k", version_id=v1.version_id)
    assert gone.version_id == v1.version_id
    await store.close()
    shutil.rmtree(os.path.join(disks[0], REGISTRY_DIR))
    store = await Store.open(disks, **dict(OPTS, small_log=small_log))
    try:
        assert await versions_of(store, "vbk") == [("k", v2.version_id, True, False)]
        with pytest.raises(errors.NoSuchVersion):
            await store.head_object("vbk", "k", v1.version_id)
    finally:
        await store.close()
