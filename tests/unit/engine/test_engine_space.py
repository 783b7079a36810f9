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
    """Every removal of a deleted write takes 0.3 s; the list says which ones ended. No disk of
    this process refused new data lately (another test's would count)."""
    from buckets.storage import local

    monkeypatch.setattr(local, "last_refusal", float("-inf"))
    ended: list[str] = []
    remove = store._remove_write

    async def slowly(bucket, key, wid, disks, **kw):
        await asyncio.sleep(0.3)
        await remove(bucket, key, wid, disks, **kw)
        ended.append(key)

    monkeypatch.setattr(store, "_remove_write", slowly)
    return ended


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

    started = time.monotonic()
    await store.delete_object(bucket, "b")
    assert slow_removals[-1:] == ["b"] and time.monotonic() - started >= 0.3  # its files are gone
    # a removal that takes longer than FREE_WAIT: the deletion answers at FREE_WAIT, the files go on
    monkeypatch.setattr(space, "FREE_WAIT", 0.1)
    await store.delete_object(bucket, "c")
    assert "c" not in slow_removals
    for _ in range(50):
        if "c" in slow_removals:
            break
        await asyncio.sleep(0.02)
    assert "c" in slow_removals


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

    disk = store.disks[0]
    with monkeypatch.context() as m:
        m.setattr(local, "disk_reserve", 100.0)
        disk._space = None
        with pytest.raises(errors.DiskFull):
            await disk.append_records([b"another node's small object"], sync=False, data=True)
    assert store.short_of_space_until < time.monotonic()  # the store itself refused nothing
    await store.delete_object(bucket, "b")
    assert slow_removals[-1:] == ["b"]  # its files are gone


@pytest.fixture
async def log_store(tmp_disks):
    from engine_testkit import INLINE

    from buckets import Store

    s = await Store.open(tmp_disks(4), sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64,
                         small_log=True, background=False)
    await s.make_bucket("bkt")
    yield s
    await s.close()


async def test_delayed_releases_wait_out_their_grace_unless_the_node_is_short_of_space(log_store,
                                                                                        monkeypatch) -> None:
    """On a cluster a removed write's records are released after ``RELEASE_GRACE`` (another node's
    GET may still read them), at once while the node is short of space."""
    from buckets.engine import smalllog
    from buckets.errors import CorruptData
    from buckets.storage import local

    monkeypatch.setattr(local, "last_refusal", float("-inf"))
    monkeypatch.setattr(space, "RELEASE_GRACE", 0.3)
    store, bucket = log_store, "bkt"
    writes = []
    for key in ("a", "b"):
        await store.put_object(bucket, key, content(key, 100), 100)
        writes.append(store.registry.get_object(bucket, key))
    assert all(smalllog.uses_log(e) for e in writes)
    releases = space.DelayedReleases(store)
    try:
        a = writes[0]
        releases.add(a["wid"], store.disks_for(a["disks"]), a["lg"])
        await asyncio.sleep(0.1)
        disk0 = store.disks_for(a["disks"])[0]
        assert await disk0.read_record(a["lg"][0])  # not yet
        for _ in range(50):
            await asyncio.sleep(0.05)
            try:
                await disk0.read_record(a["lg"][0])
            except CorruptData:
                break
        else:
            raise AssertionError("not released after its grace")
        b = writes[1]
        store.short_of_space_until = time.monotonic() + 60
        monkeypatch.setattr(space, "RELEASE_GRACE", 60.0)
        releases.add(b["wid"], store.disks_for(b["disks"]), b["lg"])
        await asyncio.wait_for(releases.task, 5)  # at once: short of space
        with pytest.raises(CorruptData):
            await store.disks_for(b["disks"])[0].read_record(b["lg"][0])
    finally:
        store.short_of_space_until = 0.0
        await releases.close()
