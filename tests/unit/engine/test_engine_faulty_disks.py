"""The engine over misbehaving disks (``FaultyDisk``): while a quorum of disks works, reads
and writes go on; when it does not, they fail with a 503; and whatever the disks do
(fail, stall, tear writes and lie about it), a read never returns wrong bytes."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from engine_testkit import BLOCK, INLINE, content, eventually, get_bytes

from buckets import errors
from buckets.engine.heal import heal_object
from buckets.errors import CorruptData, DiskAccessDenied, DiskError, DiskFaulty, DiskFull, FileNotFound
from buckets.storage.format import TMP_DIR

# sizes: empty, inline, inline near the limit, several blocks with a short last one
SIZES = {"empty": 0, "tiny": 10, "inline": INLINE - 7, "blocks": 3 * BLOCK + 7, "one-block": BLOCK}


async def put_all(store, tag: str) -> dict[str, bytes]:
    out = {}
    for name, size in SIZES.items():
        data = content(f"{tag}-{name}", size)
        await store.put_object("bkt", f"{tag}/{name}", data, size)
        out[f"{tag}/{name}"] = data
    return out


async def check_all(store, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        assert await get_bytes(store, "bkt", key) == data, key
        assert (await store.head_object("bkt", key)).size == len(data)


async def test_one_failing_disk_changes_nothing_a_client_sees(faulty_store) -> None:
    store = faulty_store
    before = await put_all(store, "before")
    store.disks[1].fail("*", error=DiskFaulty)
    after = await put_all(store, "after")  # 3 of 4 disks: the write quorum of 2+2
    await check_all(store, before | after)
    assert not store.disks[1].online and "injected" in store.disks[1].last_error
    assert [i.online for i in await store.disk_infos()] == [True, False, True, True]
    listed = [o.key for o in (await store.list_objects("bkt")).objects]
    assert listed == sorted(before | after)


async def test_two_failing_disks_refuse_writes_and_still_read(faulty_store) -> None:
    store = faulty_store
    before = await put_all(store, "before")
    for i in (0, 3):
        store.disks[i].fail("*", error=DiskFaulty)
    for key, size in (("new-big", 2 * BLOCK), ("new-small", 5)):
        with pytest.raises(errors.WriteQuorumLost) as exc:
            await store.put_object("bkt", key, content(key, size), size)
        assert exc.value.status == 503
        with pytest.raises(errors.NoSuchKey):
            await store.head_object("bkt", key)
    await check_all(store, before)  # k = 2 disks are enough to read


async def test_errors_in_the_middle_of_a_stream(faulty_store) -> None:
    store = faulty_store
    store.disks[2].fail("shard.write", error=DiskFull, after=1, times=1)  # dropped after one block
    mid = content("mid", 4 * BLOCK + 3)
    await store.put_object("bkt", "mid", mid, len(mid))
    store.disks[3].fail("shard.close", error=FileNotFound, times=1)  # dropped at the very end
    end = content("end", 2 * BLOCK)
    await store.put_object("bkt", "end", end, len(end))
    assert await get_bytes(store, "bkt", "mid") == mid and await get_bytes(store, "bkt", "end") == end
    reported = set()
    while not store.heal_queue.empty():
        reported.add(store.heal_queue.get_nowait()[1])
    assert reported == {"mid", "end"}, "an incomplete write must be queued for heal"
    # both at once: two of four is below the write quorum; nothing is left behind
    store.disks[2].fail("shard.write", error=DiskFull, after=1, times=1)
    store.disks[3].fail("shard.close", error=FileNotFound, times=1)
    with pytest.raises(errors.WriteQuorumLost):
        await store.put_object("bkt", "mid", content("other", 4 * BLOCK), 4 * BLOCK)
    assert await get_bytes(store, "bkt", "mid") == mid


@pytest.mark.parametrize("liars", [[1], [0, 2]])
async def test_silently_torn_writes_are_caught_by_checksums(faulty_store, liars) -> None:
    """Disks that tear every write and report success: reads still return the exact bytes
    (the checksums reject the torn shards and metadata), and heal rebuilds them."""
    store = faulty_store
    for i in liars:
        store.disks[i].tear(keep=BLOCK // 3, silent=True)
    objects = await put_all(store, "torn")
    await check_all(store, objects)
    for i in liars:
        store.disks[i].clear()
    damaged = 0
    for key in objects:
        res = await heal_object(store, "bkt", key, deep=True)
        damaged += len(res.bad)
        assert res.failed == [], (key, res)
    assert damaged > 0, "the torn writes should have been found"
    for key in objects:
        assert (await heal_object(store, "bkt", key, deep=True)).bad == [], key
    await check_all(store, objects)


async def test_too_many_lying_disks_fail_reads_rather_than_return_wrong_bytes(faulty_store) -> None:
    store = faulty_store
    for i in (0, 1, 3):
        store.disks[i].tear(keep=100, silent=True)
    data = content("doomed", 3 * BLOCK + 7)
    await store.put_object("bkt", "doomed", data, len(data))  # every disk said yes
    with pytest.raises(errors.ReadQuorumLost) as exc:
        await get_bytes(store, "bkt", "doomed")
    assert exc.value.status == 503


async def test_a_slow_disk_still_serves_the_right_bytes(faulty_store) -> None:
    store = faulty_store
    store.disks[0].delay("read_range", "read_file", "shard.write", seconds=0.002)
    objects = await put_all(store, "slow")
    await check_all(store, objects)
    assert store.disks[0].calls["read_range"] + store.disks[0].calls["read_file"] > 0


async def test_a_failed_disk_is_probed_and_comes_back_refilled(faulty_store) -> None:
    store = faulty_store
    store.disks[2].fail("*", error=DiskFaulty)
    objects = await put_all(store, "while-away")
    assert not store.disks[2].online
    await store.scanner.check_disks()  # still failing: stays offline
    assert not store.disks[2].online
    store.disks[2].clear()
    await store.scanner.check_disks()  # answers again with its own format: back, and refilled
    assert store.disks[2].online
    await eventually(lambda: not store.disks[2].healing, timeout=30)
    for key in objects:
        assert (await heal_object(store, "bkt", key, deep=True)).bad == [], key
    await check_all(store, objects)


@pytest.mark.parametrize("full", [DiskFull, DiskAccessDenied], ids=["full", "read-only"])
async def test_a_disk_that_reads_but_cannot_write_stays_offline(faulty_store, full) -> None:
    """Its format file still reads (a failing device whose format is in the page cache), but
    a write fails with an I/O error: the monitor keeps it offline, instead of bringing it back
    for a refill that fails at every probe. Full (or read-only) is not failing: such a disk
    comes back, as it starts (its shards are read; its writes are refused as they come)."""
    store = faulty_store
    store.disks[2].fail("*", error=DiskFaulty)
    objects = await put_all(store, "while-away")
    store.disks[2].clear()
    store.disks[2].fail("write_file", "create_file", "rename_data", "append_records", error=DiskFaulty)
    for _ in range(3):
        await store.scanner.check_disks()
        assert not store.disks[2].online and not store.disks[2].healing
        assert "cannot take a write" in store.disks[2].last_error
    assert store.scanner.refill.get(store.disks[2].disk_id) is None  # no refill began
    await check_all(store, objects)
    assert [p for p in os.listdir(store.disks[2].local_path(TMP_DIR)) if p.startswith("probe-")] == []

    store.disks[2].clear()
    store.disks[2].fail("write_file", error=full, times=1)  # the probe meets a full (read-only) disk
    await store.scanner.check_disks()
    assert store.disks[2].online
    await eventually(lambda: not store.disks[2].healing, timeout=30)
    await check_all(store, objects)


@pytest.mark.parametrize("size", [SIZES["tiny"], SIZES["blocks"]], ids=["inline", "blocks"])
async def test_a_write_short_of_a_disk_is_queued_for_heal_only_once_committed(faulty_store, size) -> None:
    """A write that reached 3 of 4 disks is healed, but only once its commit stands: a heal
    begun before would read the key while the write's fate is open (on a cluster that read
    pins a failed write's index merge, which could then no longer be undone). Here the commit
    fails (its bucket was deleted while the disks were written) and nothing is queued."""
    store = faulty_store
    store.disks[3].fail("*", error=DiskFaulty)
    store.disks[0].delay("write_file", "rename_data", "shard.write", "append_records", seconds=1.5)
    data = content("doomed", size)
    put = asyncio.ensure_future(store.put_object("bkt", "doomed", data, size))
    await asyncio.sleep(0.1)
    await store.delete_bucket("bkt")  # empty: the write in flight is not committed yet
    with pytest.raises(errors.NoSuchBucket):
        await put
    assert store.heal_queue.empty() and not store._heal_pending

    await store.make_bucket("bkt")
    await store.put_object("bkt", "kept", data, size)  # committed: queued
    queued = store.heal_queue.get_nowait()
    assert queued[:2] == ("bkt", "kept") and "3 of 4" in queued[3]


@pytest.mark.parametrize("seed", range(6))
async def test_random_faults_never_produce_wrong_bytes(faulty_store, seed) -> None:
    """Every disk gets random short-lived faults (typed errors on any method, silent torn
    writes); every acknowledged write reads back exactly or fails with a 503, and a failed
    write leaves the previous value readable."""
    store = faulty_store
    rnd = random.Random(seed)
    methods = ["create_file", "write_file", "read_file", "read_range", "rename_data", "delete",
               "shard.write", "shard.close", "file_size"]
    want: dict[str, bytes] = {}
    for step in range(40):
        for d in store.disks:
            d.clear()
            d.mark_online()  # (these faults are transient: what the disk monitor would do)
            if rnd.random() < 0.5:
                d.fail(rnd.choice(methods), error=rnd.choice([DiskError, DiskFull, FileNotFound, CorruptData]),
                       after=rnd.randrange(3), times=rnd.randrange(1, 3))
            if rnd.random() < 0.15:
                d.tear(keep=rnd.randrange(1, 2 * BLOCK), silent=True, times=1)
        key = f"k{rnd.randrange(6)}"
        if rnd.random() < 0.6:
            data = content(f"{key}-{step}", rnd.choice([0, 5, INLINE - 1, BLOCK + 1, 3 * BLOCK]))
            try:
                await store.put_object("bkt", key, data, len(data))
                want[key] = data
            except errors.WriteQuorumLost:
                pass
        elif key in want:
            try:
                got = await get_bytes(store, "bkt", key)
            except errors.ReadQuorumLost:
                continue
            assert got == want[key], (seed, step, key)
    assert store.heal_queue.qsize() > 0, "no fault fired: this run checked nothing"
    for d in store.disks:
        d.clear()
    for key, data in want.items():
        await heal_object(store, "bkt", key, deep=True)
        assert await get_bytes(store, "bkt", key) == data, key
