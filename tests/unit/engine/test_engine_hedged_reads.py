"""Hedged reads (``engine/hedge.py``): a shard read that lags far behind the others is read
from a spare slot instead, the slow disk is avoided for a while, and nothing it did is
taken for damage.

The slow disk is a ``FaultyDisk`` whose reads sleep for minutes: a read that waited for it
would hang, so each read runs under a guard far longer than a hedged read needs (a hang
check, not a timing assertion).
"""

from __future__ import annotations

import asyncio

import pytest
from engine_testkit import BLOCK, INLINE, content, get_bytes

from buckets.engine import hedge
from buckets.storage.faulty import FaultyDisk

HANG = 600.0  # the slow disk's delay: a read that waited for it would not finish in the test
GUARD = 60.0  # a hedged read finishes in well under a second


@pytest.fixture
def store(faulty_store):
    return faulty_store


def disk_of(store, key: str, slot: int) -> FaultyDisk:
    return store.by_id[store.registry.get_object("bkt", key)["disks"][slot]]


async def guarded(coro):
    return await asyncio.wait_for(coro, GUARD)


async def test_a_lagging_data_shard_is_read_from_parity_and_its_disk_avoided(store) -> None:
    data = content("big", 9 * BLOCK + 13)  # several spans
    await store.put_object("bkt", "big", data, len(data))
    slow = disk_of(store, "big", 0)
    slow.delay("read_range", "read_file", "read_record", seconds=HANG)
    assert await guarded(get_bytes(store, "bkt", "big")) == data
    sources = store.slow_sources
    assert sources.hedges >= 1 and sources.hedges_won >= 1
    assert sources.slow(slow) and sources.names() == [slow.endpoint]
    assert store.heal_queue.qsize() == 0, "a slot given up for lagging is not damage"
    # Meanwhile GETs choose other slots first: not one hedge more, ranges included
    hedges = sources.hedges
    assert await guarded(get_bytes(store, "bkt", "big")) == data
    got = await guarded(get_bytes(store, "bkt", "big", range=(BLOCK + 5, 4 * BLOCK)))
    assert got == data[BLOCK + 5:4 * BLOCK + 1]
    assert sources.hedges == hedges


async def test_a_small_objects_lagging_record_is_read_from_another_disk(store) -> None:
    data = content("small", INLINE - 7)
    await store.put_object("bkt", "small", data, len(data))
    slow = disk_of(store, "small", 1)
    slow.delay("read_range", "read_file", "read_record", seconds=HANG)
    assert await guarded(get_bytes(store, "bkt", "small")) == data
    assert store.slow_sources.hedges_won >= 1 and store.slow_sources.slow(slow)
    assert store.heal_queue.qsize() == 0


async def test_a_failed_read_gets_its_spare_at_once_and_is_damage() -> None:
    slow = hedge.SlowSources()
    disks = ["d0", "d1", "d2", "d3"]
    asked: list[int] = []

    async def read(i: int):
        asked.append(i)
        return None if i == 0 else f"piece {i}"

    answers, given_up = await guarded(hedge.read_k(2, [0, 1], [2, 3], read, disks, slow))
    assert answers == {0: None, 1: "piece 1", 2: "piece 2"} and given_up == []
    assert asked == [0, 1, 2] and slow.hedges == 0 and slow.names() == []


async def test_nothing_answering_asks_every_spare_after_a_while(monkeypatch) -> None:
    monkeypatch.setattr(hedge, "HEDGE_NONE", 0.05)
    slow = hedge.SlowSources()
    disks = ["d0", "d1", "d2", "d3"]
    late = asyncio.Event()

    async def read(i: int):
        if i < 2:
            await late.wait()  # never set: both first slots hang
        return i

    answers, given_up = await guarded(hedge.read_k(2, [0, 1], [2, 3], read, disks, slow))
    assert answers == {2: 2, 3: 3} and sorted(given_up) == [0, 1]
    assert slow.hedges == 2 and slow.hedges_won == 2
    assert slow.slow("d0") and slow.slow("d1") and not slow.slow("d2")


async def test_without_spares_a_read_waits_for_its_slots() -> None:
    slow = hedge.SlowSources()

    async def read(i: int):
        await asyncio.sleep(0.3 if i == 1 else 0)
        return i

    answers, given_up = await guarded(hedge.read_k(2, [0, 1], [], read, ["d0", "d1"], slow))
    assert answers == {0: 0, 1: 1} and given_up == [] and slow.hedges == 0


def test_a_slow_source_is_remembered_for_a_while_then_tried_again() -> None:
    now = [100.0]
    slow = hedge.SlowSources(clock=lambda: now[0])
    slow.mark("peer", "http://peer", 1.5)
    assert slow.slow("peer") and slow.names() == ["http://peer"]
    disks = ["peer", "other", "peer", "other"]
    first, spares = hedge.choose(disks, 2, slow)
    assert first == [1, 3] and spares == [0, 2]  # slots elsewhere first, parity included
    now[0] += hedge.SLOW_FOR + 0.1
    assert not slow.slow("peer") and slow.names() == []
    assert hedge.choose(disks, 2, slow) == ([0, 1], [2, 3])  # data slots first again
    assert hedge.choose([None, "a", "b", "c"], 2, slow) == ([1, 2], [3])  # offline slots are never chosen
