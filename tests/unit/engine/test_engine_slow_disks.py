"""A disk that answers, but far behind the others (``engine/hedge.py``).

Reads: a shard read that lags far behind the others is read from a spare slot instead, the
slow disk is avoided for a while, and nothing it did is taken for damage. The slow disk is a
``FaultyDisk`` whose reads sleep for minutes: a read that waited for it would hang, so each
read runs under a guard far longer than a hedged read needs (a hang check, not a timing
assertion).

Writes: a shard file or record that lags beyond the write's budget once a write quorum has
its pieces is left out; the write is acknowledged degraded, the object reads back right and
is queued for heal, which rebuilds the slot once the disk keeps up.
"""

from __future__ import annotations

import asyncio

import pytest
from engine_testkit import BLOCK, INLINE, content, get_bytes, shard_file

import os

from buckets import Store
from buckets.engine import hedge, smalllog
from buckets.engine.heal import heal_object
from buckets.storage import LocalDisk
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


@pytest.fixture
def quick_lag(monkeypatch):
    monkeypatch.setattr(hedge, "LAG_MIN", 0.2)


def forward(store, seconds: float) -> None:
    """Move the store's view of slow sources ``seconds`` ahead (their avoidance lapses)."""
    clock = store.slow_sources._clock
    store.slow_sources._clock = lambda: clock() + seconds


async def heal_when_caught_up(store, key: str, slow: FaultyDisk) -> None:
    # While the disk is avoided, a heal leaves its slot alone: not read, not rebuilt (the disk
    # still lags: touching it would hang this test), no key lock held waiting for it.
    early = await guarded(heal_object(store, "bkt", key, deep=True))
    [slot] = [i for i, d in enumerate(store.registry.get_object("bkt", key)["disks"]) if store.by_id[d] is slow]
    assert early.deferred == [slot] and early.waits_on == [slow] and not early.repaired, early
    assert store.heal_stats.shards_deferred >= 1
    slow.clear()
    forward(store, hedge.SLOW_MAX)
    result = await heal_object(store, "bkt", key, deep=True)
    assert result.repaired == result.bad and result.bad, result
    assert (await heal_object(store, "bkt", key, deep=True)).bad == []


async def test_a_lagging_shard_file_is_left_out_of_a_large_write(store, quick_lag) -> None:
    data = content("big", 9 * BLOCK + 13)
    await store.put_object("bkt", "first", b"x" * (2 * BLOCK), 2 * BLOCK)  # learn the key's disks
    slow = disk_of(store, "first", 0)
    slow.delay("shard.write", seconds=5.0, after=2)  # its first pieces go through, then it lags
    info = await guarded(store.put_object("bkt", "first", data, len(data)))
    entry = store.registry.get_object("bkt", "first")
    assert entry["wid"] and info.size == len(data)
    assert not os.path.exists(shard_file(store, "bkt", "first", 0)), "the lagging slot was committed"
    assert await guarded(get_bytes(store, "bkt", "first")) == data
    assert store.slow_sources.slow(slow)
    assert ("bkt", "first", entry["wid"]) in store._heal_pending
    await heal_when_caught_up(store, "first", slow)
    assert await guarded(get_bytes(store, "bkt", "first")) == data


@pytest.mark.parametrize("small_log", [True, False], ids=["records", "metadata-files"])
async def test_a_lagging_record_is_left_out_of_a_small_write(disk_paths, quick_lag, small_log) -> None:
    disks = [FaultyDisk(LocalDisk(p)) for p in disk_paths]
    store = await Store.open_disks(disks, sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64,
                                   small_copy_limit=0, background=False, small_log=small_log)
    try:
        await store.make_bucket("bkt")
        data = content("small", INLINE - 7)
        await store.put_object("bkt", "small", b"x", 1)
        slow = disk_of(store, "small", 1)
        slow.delay("append_records" if small_log else "write_file", seconds=3.0)
        await guarded(store.put_object("bkt", "small", data, len(data)))
        entry = store.registry.get_object("bkt", "small")
        if small_log:
            assert smalllog.uses_log(entry) and smalllog.location_of(entry, 1) is None
            assert all(smalllog.location_of(entry, i) is not None for i in (0, 2, 3))
        else:
            assert not os.path.exists(shard_file(store, "bkt", "small", 1))
        assert await guarded(get_bytes(store, "bkt", "small")) == data
        assert store.slow_sources.slow(slow)
        assert ("bkt", "small", entry["wid"]) in store._heal_pending
        await heal_when_caught_up(store, "small", slow)
    finally:
        for d in disks:
            d.clear()
        await store.close()


async def test_a_write_never_leaves_out_more_than_its_quorum_allows(store, quick_lag) -> None:
    """Two of four disks lagging: 2+2 needs three, so the write waits for one of them."""
    data = content("q", 3 * BLOCK)
    await store.put_object("bkt", "q", b"x" * (2 * BLOCK), 2 * BLOCK)
    for slot in (0, 1):
        disk_of(store, "q", slot).delay("shard.write", seconds=0.6 + 0.3 * slot, after=1)
    await guarded(store.put_object("bkt", "q", data, len(data)))
    assert await guarded(get_bytes(store, "bkt", "q")) == data
    present = [os.path.exists(shard_file(store, "bkt", "q", slot)) for slot in range(4)]
    assert sum(present) >= 3, present


async def test_reads_that_all_fail_at_once_still_get_their_spares() -> None:
    slow = hedge.SlowSources()

    async def read(i: int):
        return None if i < 2 else i

    answers, given_up = await guarded(hedge.read_k(2, [0, 1], [2, 3], read, ["d0", "d1", "d2", "d3"], slow))
    assert answers == {0: None, 1: None, 2: 2, 3: 3} and given_up == []


async def test_a_read_leaves_no_reference_cycle_holding_its_bytes() -> None:
    """What a span read returns is freed when its caller drops it, not at the next garbage
    collection (a cycle there made every 16 MiB GET's memory new: 4x the page faults)."""
    import gc
    import weakref

    class Piece:  # stands for a span's bytes (bytes cannot be weakly referenced)
        pass

    slow = hedge.SlowSources()
    seen = []

    async def read(i: int):
        piece = Piece()
        seen.append(weakref.ref(piece))
        return piece

    gc.disable()
    try:
        answers, _ = await hedge.read_k(2, [0, 1], [2, 3], read, ["d0", "d1", "d2", "d3"], slow)
        del answers
        await asyncio.sleep(0)
        assert all(ref() is None for ref in seen), "a span's pieces outlived the read"
    finally:
        gc.enable()


def test_a_source_that_keeps_lagging_is_avoided_longer_and_forgiven_after_a_while() -> None:
    now = [0.0]
    slow = hedge.SlowSources(clock=lambda: now[0])
    periods = []
    for _ in range(5):  # lags again each time the read after its period tries it
        slow.mark("peer", "http://peer", 0.5)
        start = now[0]
        while slow.slow("peer"):
            now[0] += 0.5
        periods.append(now[0] - start)
    assert periods == [10.0, 20.0, 40.0, 80.0, 80.0]  # doubled up to SLOW_MAX
    now[0] += 2 * hedge.SLOW_MAX + 1  # kept up for a long while
    slow.mark("peer", "http://peer", 0.5)
    now[0] += hedge.SLOW_FOR + 0.1
    assert not slow.slow("peer")  # back to the first period


class Peer:
    """A source of several slots (a peer's link carries all its disks)."""

    def __init__(self, name: str) -> None:
        self.endpoint = name


class OnPeer:
    def __init__(self, peer: Peer, i: int) -> None:
        self.client, self.i = peer, i


async def test_a_spare_is_not_asked_of_the_lagging_slots_source_while_others_remain(monkeypatch) -> None:
    """Before a peer is known slow its parity slots are spares like any other: the spare for a
    lagging slot comes from another source first (it once came from the same slow peer, and the
    GET waited for that link: 12-16 s in the slow-link scan of session 50)."""
    monkeypatch.setattr(hedge, "HEDGE_MIN", 0.02)
    slow_peer, fast = Peer("slow"), Peer("fast")
    # 2+2: data slot 1 and parity slot 2 on the slow peer, slot 0 and parity slot 3 elsewhere.
    disks = [OnPeer(fast, 0), OnPeer(slow_peer, 1), OnPeer(slow_peer, 2), OnPeer(fast, 3)]
    never = asyncio.Event()
    asked: list[int] = []

    async def read(i: int):
        asked.append(i)
        if disks[i].client is slow_peer:
            await never.wait()
        return f"piece {i}"

    slow = hedge.SlowSources()
    answers, given_up = await guarded(hedge.read_k(2, [0, 1], [2, 3], read, disks, slow))
    assert answers == {0: "piece 0", 3: "piece 3"} and given_up == [1], (answers, given_up, asked)
    assert asked == [0, 1, 3] and slow.hedges == 1 and slow.hedges_won == 1
    assert slow.names() == ["slow"]


async def test_a_spare_that_lags_too_gets_a_spare_of_its_own(monkeypatch) -> None:
    monkeypatch.setattr(hedge, "HEDGE_MIN", 0.02)
    peers = [Peer(f"p{i}") for i in range(5)]
    disks = [OnPeer(p, i) for i, p in enumerate(peers)]
    never = asyncio.Event()

    async def read(i: int):
        if i in (1, 2):  # the lagging slot and the first spare asked for it
            await never.wait()
        return i

    slow = hedge.SlowSources()
    answers, given_up = await guarded(hedge.read_k(2, [0, 1], [2, 3, 4], read, disks, slow))
    assert answers == {0: 0, 3: 3} and sorted(given_up) == [1, 2], (answers, given_up)
    assert slow.hedges == 2 and slow.names() == ["p1", "p2"]


async def test_a_source_is_marked_slow_as_soon_as_a_spare_beats_it(monkeypatch) -> None:
    """The reads running beside a hedged read go around the source from then on, not once the
    hedged read (a whole span) is done."""
    monkeypatch.setattr(hedge, "HEDGE_MIN", 0.02)
    disks = ["d0", "d1", "d2", "d3"]
    never, spare_answered = asyncio.Event(), asyncio.Event()
    release = asyncio.Event()
    slow = hedge.SlowSources()
    seen_during: list[bool] = []

    async def read(i: int):
        if i == 1:
            await never.wait()
        if i == 2:
            spare_answered.set()
            return i
        if i == 3:
            await release.wait()  # the read goes on: it needs a third answer (k=3 of 4, say)
        return i

    async def watch() -> None:
        await spare_answered.wait()
        await asyncio.sleep(0)
        seen_during.append(slow.slow("d1"))
        release.set()

    watcher = asyncio.create_task(watch())
    answers, given_up = await guarded(hedge.read_k(3, [0, 1, 3], [2], read, disks, slow))
    await watcher
    assert answers == {0: 0, 2: 2, 3: 3} and given_up == [1]
    assert seen_during == [True]


async def test_a_deferred_heal_is_queued_again_once_its_source_keeps_up(store, monkeypatch) -> None:
    from buckets.engine import scanner as scanner_module

    monkeypatch.setattr(scanner_module, "DEFERRED_CHECK", 0.01)
    await store.put_object("bkt", "later", b"x" * (2 * BLOCK), 2 * BLOCK)
    slow = disk_of(store, "later", 0)
    store.slow_sources.mark(slow, "slow disk", 2.0)
    item = ("bkt", "later", store.registry.get_object("bkt", "later")["wid"])
    scanner = store.scanner
    scanner._defer(item, "left out by a write", [slow])
    loop_task = asyncio.create_task(scanner._deferred_loop())
    try:
        await asyncio.sleep(0.1)
        assert item in scanner.deferred and item not in store._heal_pending  # still slow: kept back
        assert scanner.status()["deferred"] == 1
        forward(store, hedge.SLOW_MAX)
        for _ in range(200):
            if item in store._heal_pending:
                break
            await asyncio.sleep(0.01)
        assert item in store._heal_pending and not scanner.deferred
        assert store.heal_queue.get_nowait()[:3] == item
    finally:
        loop_task.cancel()


@pytest.mark.parametrize("size", [2 * BLOCK + 5, INLINE - 7], ids=["streamed", "inline"])
async def test_a_write_leaves_a_disk_known_slow_out_from_the_start(store, size) -> None:
    """While a disk's source is avoided, new writes do not queue its shard on it only to leave
    it out after 0.1 s: they go without it from the start (degraded, healed once it keeps up),
    as long as the others make the write quorum."""
    key = f"skip-{size}"
    await store.put_object("bkt", key, b"x", 1)
    slow = disk_of(store, key, 0)
    store.slow_sources.mark(slow, "slow disk", 2.0, "writes to")  # a write waited for it past its budget
    slow.calls.clear()
    left_out = store.slow_sources.left_out
    data = content(key, size)
    await guarded(store.put_object("bkt", key, data, len(data)))
    written = {name: n for name, n in slow.calls.items() if name in
               ("create_file", "shard.write", "shard.close", "append_records", "write_file", "rename_data")}
    assert written == {}, written
    assert store.slow_sources.left_out == left_out + 1
    entry = store.registry.get_object("bkt", key)
    assert ("bkt", key, entry["wid"]) in store._heal_pending
    assert await guarded(get_bytes(store, "bkt", key)) == data


async def test_a_write_still_uses_slow_disks_it_needs_for_its_quorum(store) -> None:
    """Two of four disks known slow: 2+2 needs three, so the write takes both slow ones too
    (and waits for one of them)."""
    await store.put_object("bkt", "need", b"x", 1)
    slow = [disk_of(store, "need", slot) for slot in (0, 1)]
    for d in slow:
        store.slow_sources.mark(d, f"slow {d}", 2.0, "writes to")
        d.calls.clear()
    data = content("need", 2 * BLOCK + 5)
    await guarded(store.put_object("bkt", "need", data, len(data)))
    assert all(d.calls["create_file"] == 1 for d in slow), [d.calls for d in slow]
    assert await guarded(get_bytes(store, "bkt", "need")) == data


async def test_one_reads_hedge_does_not_make_writes_leave_a_disk_out(store) -> None:
    """A single hedge (a peer's GC pause can cause one) avoids the source for reads only; new
    writes still write to it (or every write for 10 s would be degraded)."""
    await store.put_object("bkt", "once", b"x", 1)
    slow = disk_of(store, "once", 0)
    store.slow_sources.mark(slow, "slow disk", 0.3)
    slow.calls.clear()
    data = content("once", 2 * BLOCK + 5)
    await guarded(store.put_object("bkt", "once", data, len(data)))
    assert slow.calls["create_file"] == 1, slow.calls


def test_a_source_is_surely_slow_after_a_write_waited_for_it_or_when_it_lags_again() -> None:
    now = [100.0]
    slow = hedge.SlowSources(clock=lambda: now[0])
    slow.mark("peer", "http://peer", 0.5)  # one read's hedge
    assert slow.slow("peer") and not slow.surely_slow("peer")
    now[0] += hedge.SLOW_FOR + 1  # its period ended; it lags again soon after
    slow.mark("peer", "http://peer", 0.5)
    assert slow.surely_slow("peer")
    now[0] += 10 * hedge.SLOW_MAX  # forgiven
    assert not slow.slow("peer") and not slow.surely_slow("peer")
    slow.mark("peer", "http://peer", 1.0, "writes to")  # a write waited for it past its budget
    assert slow.surely_slow("peer")


def test_a_write_blames_one_disk_when_its_peers_other_disks_kept_up(store) -> None:
    """A peer's disk that hangs while the same peer's other disks keep up is that disk's lag,
    not the peer's: only it is avoided, the peer's other disks stay in use."""
    peer = Peer("http://peer")
    hung, sibling, elsewhere = OnPeer(peer, 0), OnPeer(peer, 1), OnPeer(Peer("http://other"), 2)
    hung.endpoint = "http://peer/d1"
    slow = store.slow_sources
    store.lagging_disk(hung, 1.0, [sibling, elsewhere])
    assert slow.avoids(hung) and slow.surely(hung) and not slow.avoids(sibling)
    assert slow.names() == ["http://peer/d1"]
    lone = OnPeer(Peer("http://lone"), 3)
    store.lagging_disk(lone, 1.0, [elsewhere])  # no other disk of its peer kept up: the peer lags
    assert slow.avoids(lone) and slow.avoided(lone) is lone.client
    assert slow.avoids(OnPeer(lone.client, 4))


def test_a_source_stays_lately_slow_after_its_period_until_a_write_sees_it_keep_up() -> None:
    now = [100.0]
    slow = hedge.SlowSources(clock=lambda: now[0])
    assert not slow.lately("peer")
    slow.mark("peer", "http://peer", 1.0, "writes to")
    assert slow.lately("peer") and not slow.lately("other")
    slow.kept_up(["peer"])  # a small record got through while it was avoided: it still is
    assert slow.slow("peer") and slow.lately("peer")
    now[0] += hedge.SLOW_FOR + 0.1  # its period ended: reads and writes try it again ...
    assert not slow.slow("peer") and slow.lately("peer")  # ... and writes wait for it briefly
    slow.kept_up(["other"])
    assert slow.lately("peer")
    slow.kept_up(["peer"])  # a write's slot on it kept up with its quorum: it recovered
    assert not slow.lately("peer")
    slow.mark("peer", "http://peer", 1.0, "writes to")
    now[0] += 2 * hedge.SLOW_MAX  # nothing wrote to it since: forgotten as well
    assert not slow.lately("peer")


@pytest.mark.parametrize("size", [2 * BLOCK + 5, INLINE - 7], ids=["streamed", "inline"])
async def test_a_write_trying_a_source_again_after_its_period_waits_for_it_briefly(store, monkeypatch, size) -> None:
    """When a slow source's period ends, writes use it again. If it still lags, each of them
    leaves its shard out after the reads' hedge time (0.1 s, or three times what the quorum
    took), not after the write's full budget (``LAG_MIN``, 1 s by default: here far longer
    than the guard, so a write that waited it would fail the test). Once a write finds it
    keeping up, a slot that lags gets the full budget again."""
    monkeypatch.setattr(hedge, "LAG_MIN", 2 * GUARD)
    key = f"again-{size}"
    await store.put_object("bkt", key, b"x", 1)
    slow = disk_of(store, key, 0)
    store.slow_sources.mark(slow, "slow disk", 2.0, "writes to")
    forward(store, hedge.SLOW_FOR + 0.1)  # its period is over
    assert not store.slow_sources.slow(slow) and store.known_slow(slow)
    slow.delay("shard.write", "append_records", "write_file", seconds=HANG)
    left_out = store.slow_sources.left_out
    data = content(key, size)
    await guarded(store.put_object("bkt", key, data, len(data)))  # (it would hang waiting LAG_MIN)
    assert store.slow_sources.left_out == left_out + 1
    assert store.slow_sources.slow(slow)  # avoided again, for longer
    assert await guarded(get_bytes(store, "bkt", key)) == data
    slow.clear()
    forward(store, 2 * hedge.SLOW_FOR + 0.1)  # its second, doubled period is over too
    assert not store.slow_sources.slow(slow) and store.known_slow(slow)
    await guarded(store.put_object("bkt", key, data, len(data)))
    assert not store.known_slow(slow)  # that write found it keeping up
    assert store.registry.get_object("bkt", key)["disks"][0] == slow.disk_id


def says_lagging(*disks) -> object:
    """A cluster node's ``says_lagging``: the disks whose own node said they lag its others."""
    return lambda disk: any(disk is d for d in disks)


async def test_a_read_puts_a_lag_on_the_disk_its_node_says_lags_not_on_the_peer(monkeypatch) -> None:
    """A peer's shards come in one stream, a round of each range at a time: one slow disk holds
    back all of them, and the read found the whole peer lagging (a slow-disk experiment of
    session 52: the peers then named that node's link slow and took it out of rotation). When
    the peer says one of this read's disks lags its siblings (``storage/pace.py``), that disk is
    marked alone, whichever of the peer's slots lagged; the peer's other disks stay in use."""
    monkeypatch.setattr(hedge, "HEDGE_MIN", 0.02)
    peer, other = Peer("http://peer"), Peer("http://other")
    disks = [OnPeer(peer, 0), OnPeer(peer, 1), OnPeer(other, 2), OnPeer(other, 3), OnPeer(other, 4)]
    for d in disks:
        d.endpoint = f"{d.client.endpoint}/d{d.i}"
    never = asyncio.Event()

    async def read(i: int):
        if disks[i].client is peer:
            await never.wait()  # the whole group lags behind its slow disk (slot 1's)
        return i

    slow = hedge.SlowSources()
    slow.says_lagging = says_lagging(disks[1])
    answers, given_up = await guarded(hedge.read_k(3, [0, 1, 2], [3, 4], read, disks, slow))
    assert answers == {2: 2, 3: 3, 4: 4} and sorted(given_up) == [0, 1]
    assert slow.names() == ["http://peer/d1"] and not slow.slow(peer), slow.names()
    assert slow.avoids(disks[1]) and not slow.avoids(disks[0])
    # The same read with no word from the peer: its link is to blame, for all its disks.
    plain = hedge.SlowSources()
    await guarded(hedge.read_k(3, [0, 1, 2], [3, 4], read, disks, plain))
    assert plain.names() == ["http://peer"] and plain.avoids(disks[0])


def test_a_write_puts_a_lag_on_the_disk_its_node_says_lags(store) -> None:
    """A peer's records for all its disks go in one call: when it lags, each of its disks in
    the write lags with it. The disk its node says lags is marked alone (surely: writes leave
    it out from the start); the others are not marked, nor the peer."""
    peer = Peer("http://peer")
    lagging, sibling, elsewhere = OnPeer(peer, 0), OnPeer(peer, 1), OnPeer(Peer("http://other"), 2)
    lagging.endpoint, sibling.endpoint = "http://peer/d1", "http://peer/d2"
    store.disks.extend([lagging, sibling])  # (the store's disks: where a write's sibling slots come from)
    slow = store.slow_sources
    slow.says_lagging = says_lagging(lagging)
    try:
        store.lagging_disk(sibling, 1.0, [elsewhere])
        store.lagging_disk(lagging, 1.0, [elsewhere])
        assert slow.names() == ["http://peer/d1"] and slow.surely(lagging)
        assert not slow.avoids(sibling) and not slow.slow(peer)
    finally:
        del store.disks[-2:]


def test_a_peer_that_names_its_lagging_disk_is_forgiven_the_lags_put_on_it() -> None:
    slow = hedge.SlowSources()
    slow.mark("peer", "http://peer", 1.0, "writes to")
    assert slow.surely_slow("peer") and slow.surely_names() == ["http://peer"]
    slow.forgive("peer")
    assert not slow.slow("peer") and not slow.surely_slow("peer") and slow.surely_names() == []
    slow.forgive("never-marked")  # (nothing to forget)
