"""A store short of space (engine/space.py): after it refused a write for want of space, a
deletion answers once the deleted write's files are gone (up to FREE_WAIT), so that a write
right after the answer finds the space; otherwise the files go after the answer, as before."""

from __future__ import annotations

import asyncio
import time

import pytest
from engine_testkit import BLOCK, content

from buckets import errors
from buckets.engine import space


@pytest.fixture
def slow_removals(store, monkeypatch):
    """Every removal of a deleted write takes 0.3 s; the list says which ones ended."""
    ended: list[str] = []
    remove = store._remove_write

    async def slowly(bucket, key, wid, disks, **kw):
        await asyncio.sleep(0.3)
        await remove(bucket, key, wid, disks, **kw)
        ended.append(key)

    monkeypatch.setattr(store, "_remove_write", slowly)
    return ended


async def _until(done, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def test_a_deletion_waits_for_its_space_only_while_the_store_is_short_of_it(store, bucket, slow_removals,
                                                                                  monkeypatch) -> None:
    for key in ("a", "b", "c"):
        await store.put_object(bucket, key, content(key, 3 * BLOCK), 3 * BLOCK)
    await store.delete_object(bucket, "a")
    assert slow_removals == []  # answered before its files went (the store has room)

    def no_room(bucket: str) -> None:
        raise errors.StorageFull()

    with monkeypatch.context() as m:  # the registry's disk at its reserve: a 507
        m.setattr(store.catalog, "check_room", no_room)
        with pytest.raises(errors.StorageFull):
            await store.put_object(bucket, "d", content("d", BLOCK), BLOCK)
    assert store.short_of_space_until > time.monotonic() + space.SHORT_OF_SPACE - 5

    # The deletion waits for its files up to FREE_WAIT (2 s), which a loaded machine's removal
    # can pass: the test allows 60 s. It checks that b's removal ended, not that it ended last:
    # a's removal (the object's files, then its marker's) started a millisecond before b's (the
    # refused PUT between them is that quick), and on a loaded machine the disks' threads may
    # end it later (fresh-clone runs 266 and 267 ended with ['a', 'b', 'b', 'a']).
    monkeypatch.setattr(space, "FREE_WAIT", 60.0)
    started = time.monotonic()
    await store.delete_object(bucket, "b")
    assert "b" in slow_removals and time.monotonic() - started >= 0.3  # its files are gone
    # a removal that takes longer than FREE_WAIT: the deletion answers at FREE_WAIT, the files go on
    monkeypatch.setattr(space, "FREE_WAIT", 0.1)
    await store.delete_object(bucket, "c")
    assert "c" not in slow_removals
    await _until(lambda: "c" in slow_removals)


async def test_a_disk_that_refused_new_data_makes_deletions_wait_too(store, bucket, slow_removals,
                                                                     monkeypatch) -> None:
    """On a cluster a node's disks take other nodes' writes: one that refused new data (a write
    through another node, answered 507 there) makes this node's deletions wait for their space,
    though this node refused no write itself."""
    from buckets.storage import local

    for key in ("a", "b"):
        await store.put_object(bucket, key, content(key, 3 * BLOCK), 3 * BLOCK)
    await store.delete_object(bucket, "a")
    assert slow_removals == []  # no refusal anywhere: answered before its files went

    service_handle = store.disks[0].peer_handle()  # what a cluster node's disk service writes through
    try:
        with monkeypatch.context() as m:
            m.setattr(local, "disk_reserve", 100.0)
            with pytest.raises(errors.DiskFull):
                await service_handle.append_records([b"another node's small object"], sync=False, data=True)
    finally:
        await service_handle.close()
    assert store.short_of_space_until < time.monotonic()  # the store itself refused nothing
    monkeypatch.setattr(space, "FREE_WAIT", 60.0)  # (as above: a loaded machine)
    await store.delete_object(bucket, "b")
    assert "b" in slow_removals  # its files are gone (a's removal may still be under way: as above)


async def test_records_are_released_at_once_only_while_space_is_short(store, monkeypatch) -> None:
    """A removed small write's records are punched out at once while the node is short of space
    or a disk is near full; otherwise compaction reclaims them, as before (a release costs the
    file system's CPU, and on a cluster another node may still read them)."""
    assert not space.releases_space(store)
    store.disks[2].near_full = True
    assert space.releases_space(store)
    store.disks[2].near_full = False
    store.disks[1].refused_at = time.monotonic()  # a disk refused new data (another node's write)
    assert space.releases_space(store) and space.short_of_space(store)


async def test_an_upload_is_not_created_into_the_disks_reserve(store, bucket, disk_paths, monkeypatch) -> None:
    """CreateMultipartUpload writes its record beside the parts (a rebuild's source): new data,
    refused as a PUT is (507 StorageFull) where the disks are at their free-space reserve, kept
    for deletions, with nothing left behind; once there is room it is created as before."""
    import glob
    import os

    from buckets.engine import paths
    from buckets.storage import local

    monkeypatch.setattr(store.catalog, "check_room", lambda bucket: None)  # the disks' own check
    monkeypatch.setattr(local, "disk_reserve", 100.0)  # every byte of every disk is reserve
    for d in store.disks:
        d._space = None
    with pytest.raises(errors.StorageFull):
        await store.create_multipart_upload(bucket, "k")
    assert store.short_of_space_until > time.monotonic()
    assert await store.catalog.list_uploads(bucket) == []
    assert [f for root in disk_paths for f in glob.glob(os.path.join(root, paths.MULTIPART_DIR, "**"), recursive=True)
            if os.path.isfile(f)] == []  # nothing half-made

    monkeypatch.setattr(local, "disk_reserve", 0.0)
    for d in store.disks:
        d._space = None
    upload = await store.create_multipart_upload(bucket, "k")
    assert [u["uid"] for u in await store.catalog.list_uploads(bucket)] == [upload.upload_id]


async def test_an_upload_is_not_created_while_the_registrys_disk_is_full(store, bucket, monkeypatch) -> None:
    def no_room(bucket: str) -> None:
        raise errors.StorageFull()

    monkeypatch.setattr(store.catalog, "check_room", no_room)
    with pytest.raises(errors.StorageFull):
        await store.create_multipart_upload(bucket, "k")
    assert await store.catalog.list_uploads(bucket) == []
