"""The orphan sweep: a write's files are kept only on the disks its registry entry names."""

from __future__ import annotations

import os

from engine_testkit import content, get_bytes, key_files

from buckets.registry import Op


async def test_the_current_write_on_a_disk_its_entry_does_not_name_is_swept(store, bucket, disk_paths) -> None:
    data = content("moved", 40_000)
    await store.put_object(bucket, "moved", data, len(data))
    entry = await store.catalog.get_object(bucket, "moved")
    # As if a migration had moved slot 3 to another disk and died before removing the old
    # shard: the entry names a disk that is not this one.
    vacated = store.by_id[entry["disks"][3]]
    moved = dict(entry, disks=[*entry["disks"][:3], "disk-elsewhere"])
    await store.registry.commit([Op("put_object", bucket, "moved", moved)])
    before = {p: len([f for f in key_files([p], bucket, "moved")]) for p in disk_paths}
    assert all(before.values()), before
    stats = await store.scanner.sweep(grace=0)
    after = {p: len(key_files([p], bucket, "moved")) for p in disk_paths}
    assert stats["orphans_removed"] == 1
    assert after[vacated.root] == 0  # the vacated shard is gone
    assert all(after[p] == before[p] for p in disk_paths if p != vacated.root)  # the others stay
    # The entry's disks still hold k good shards: the object reads back.
    await store.registry.commit([Op("put_object", bucket, "moved", entry)])
    assert await get_bytes(store, bucket, "moved") == data
    assert os.path.isdir(vacated.root)


async def test_the_directory_of_a_bucket_that_no_longer_exists_goes_after_the_grace(store, bucket, disk_paths) -> None:
    """A DeleteBucket that missed a disk (offline then, or its node down) left the bucket's
    directory there, and the sweep skipped every directory not named by a bucket: it stayed
    for good. Now it goes once untouched for the grace period; a younger one (a bucket being
    created) stays, and so do the buckets that exist."""
    import time

    await store.put_object(bucket, "kept", b"data", 4)
    stale = os.path.join(disk_paths[0], "buckets", "long-gone")
    os.makedirs(os.path.join(stale, "ab"))
    with open(os.path.join(stale, "ab", "x.0123.meta"), "wb") as f:
        f.write(b"old")
    await store.scanner.sweep()  # default grace (an hour): too young
    assert os.path.isdir(stale)
    past = time.time() - 7200
    os.utime(stale, (past, past))
    stats = await store.scanner.sweep()
    assert not os.path.exists(stale)
    assert stats["orphans_removed"] == 1
    assert all(os.path.isdir(os.path.join(p, "buckets", bucket)) for p in disk_paths)
    assert await get_bytes(store, bucket, "kept") == b"data"
