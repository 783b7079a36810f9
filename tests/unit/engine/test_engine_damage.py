"""Damaged shards at the engine level: delete, zero, truncate or flip the shard files of up
to m disks and the object still reads back byte for byte, with the damage queued for heal;
damage beyond m is an error (ReadQuorumLost), never wrong bytes."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from engine_testkit import content, get_bytes, shard_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buckets import Store, errors
from buckets.engine import paths
from buckets.engine.types import PutOptions

BLOCK = 4096
INLINE = 1024
MODES = ["delete", "zero", "truncate", "flip", "flip_many"]


def damage(path: str, mode: str, rnd: random.Random) -> None:
    if mode == "delete":
        os.unlink(path)
        return
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if mode == "zero":
            f.write(b"\0" * size)
        elif mode == "truncate":
            f.truncate(rnd.randrange(size) if size else 0)
        else:
            for _ in range(1 if mode == "flip" else 1 + rnd.randrange(20)):
                pos = rnd.randrange(size)
                f.seek(pos)
                b = f.read(1)
                f.seek(pos)
                f.write(bytes([b[0] ^ (1 << rnd.randrange(8))]))


def queued(store) -> set[tuple[str, str, str]]:
    items = set()
    while not store.heal_queue.empty():
        b, k, wid, _reason = store.heal_queue.get_nowait()
        items.add((b, k, wid))
    return items


class Harness:
    """One store on its own loop, shared by every hypothesis example of a test."""

    def __init__(self, paths: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        # background=False: no heal worker, so what reads report stays in heal_queue to be seen;
        # small_copy_limit=0: every read goes to the disks (the registry's small-object copy
        # would serve small objects without touching the damaged shards)
        self.store = self.run(Store.open(paths, sync=False, block_size=BLOCK, inline_threshold=INLINE,
                                         partitions=32, background=False, small_copy_limit=0))
        self.run(self.store.make_bucket("dmg"))
        self.n = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture(params=[2, 3, 4, 6], ids=lambda n: f"{n}disks")
def harness(request, tmp_disks):
    h = Harness(tmp_disks(request.param))
    yield h
    h.close()


SIZES = st.integers(1, 5 * BLOCK + 100) | st.sampled_from([1, INLINE - 1, INLINE, INLINE + 1, BLOCK, 2 * BLOCK])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(size=SIZES, rnd=st.randoms(use_true_random=False), data=st.data())
def test_up_to_m_damaged_shards_read_back_exactly(harness, size, rnd, data) -> None:
    store = harness.store
    k, m = store.layout
    harness.n += 1
    key = f"obj{harness.n:06d}"  # fixed length: file sizes must not vary between hypothesis replays
    body = content(key, size)
    harness.run(store.put_object("dmg", key, body, size))
    wid = store.registry.get_object("dmg", key)["wid"]
    slots = data.draw(st.lists(st.integers(0, k + m - 1), max_size=m, unique=True), label="damaged slots")
    for slot in slots:
        damage(shard_file(store, "dmg", key, slot), rnd.choice(MODES), rnd)
    queued(store)
    assert harness.run(get_bytes(store, "dmg", key)) == body
    first = data.draw(st.integers(0, size - 1), label="range start")
    last = data.draw(st.integers(first, size + 10), label="range end")
    assert harness.run(get_bytes(store, "dmg", key, range=(first, last))) == body[first:last + 1]
    if any(s < k for s in slots):  # damage on a data shard is seen by every full read
        assert ("dmg", key, wid) in queued(store)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(size=SIZES, rnd=st.randoms(use_true_random=False), data=st.data())
def test_more_than_m_damaged_is_an_error_or_exact_never_wrong(harness, size, rnd, data) -> None:
    store = harness.store
    k, m = store.layout
    harness.n += 1
    key = f"obj{harness.n:06d}"  # fixed length: file sizes must not vary between hypothesis replays
    body = content(key, size)
    harness.run(store.put_object("dmg", key, body, size))
    count = data.draw(st.integers(m + 1, k + m), label="damaged count")
    slots = rnd.sample(range(k + m), count)
    for slot in slots:
        damage(shard_file(store, "dmg", key, slot), rnd.choice(MODES), rnd)
    try:
        got = harness.run(get_bytes(store, "dmg", key))
    except errors.ReadQuorumLost as exc:
        assert exc.status == 503
        return
    assert got == body


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(size=SIZES, data=st.data())
def test_more_than_m_deleted_shards_is_read_quorum_lost(harness, size, data) -> None:
    store = harness.store
    k, m = store.layout
    harness.n += 1
    key = f"obj{harness.n:06d}"  # fixed length: file sizes must not vary between hypothesis replays
    harness.run(store.put_object("dmg", key, content(key, size), size))
    others = data.draw(st.lists(st.integers(1, k + m - 1), min_size=m, max_size=m, unique=True))
    for slot in [0, *others]:  # a data shard and m more: only k-1 remain
        os.unlink(shard_file(store, "dmg", key, slot))
    with pytest.raises(errors.ReadQuorumLost):
        harness.run(get_bytes(store, "dmg", key))
    # HEAD still answers from the registry: the loss is in the data, not the index
    assert harness.run(store.head_object("dmg", key)).size == size


async def test_multipart_object_with_a_damaged_part_shard(tmp_disks) -> None:
    from engine_testkit import MiB, read_all

    from buckets.engine import paths
    from buckets.engine.types import CompletePart

    store = await Store.open(tmp_disks(4), sync=False, partitions=32, background=False, small_copy_limit=0)
    try:
        await store.make_bucket("dmg")
        bodies = [content("p1", 5 * MiB), content("p2", 3000)]
        up = await store.create_multipart_upload("dmg", "mp")
        done = []
        for i, b in enumerate(bodies, 1):
            p = await store.put_part("dmg", "mp", up.upload_id, i, b, len(b))
            done.append(CompletePart(i, p.etag))
        await store.complete_multipart_upload("dmg", "mp", up.upload_id, done)
        entry = store.registry.get_object("dmg", "mp")
        rnd = random.Random(7)
        for slot, part in [(0, 1), (1, 2)]:  # different data shards of different parts
            disk = store.by_id[entry["disks"][slot]]
            damage(disk.local_path(paths.part_path("dmg", "mp", entry["wid"], part)), "flip_many", rnd)
        assert await read_all(await store.get_object("dmg", "mp")) == b"".join(bodies)
        assert await read_all(await store.get_object("dmg", "mp", part_number=2)) == bodies[1]
        assert ("dmg", "mp", entry["wid"]) in queued(store)
    finally:
        await store.close()


async def test_reduced_redundancy_uses_fewer_parity_shards(tmp_disks) -> None:
    store = await Store.open(tmp_disks(6), sync=False, block_size=BLOCK, partitions=32, small_copy_limit=0)
    try:
        await store.make_bucket("dmg")
        assert store.layout == (3, 3)
        body = content("rr", 3 * BLOCK)
        info = await store.put_object("dmg", "rr", body, len(body), PutOptions(storage_class="REDUCED_REDUNDANCY"))
        assert info.storage_class == "REDUCED_REDUNDANCY"
        entry = store.registry.get_object("dmg", "rr")
        assert (entry["k"], entry["m"]) == (5, 1) and len(entry["disks"]) == 6
        os.unlink(shard_file(store, "dmg", "rr", 0))
        assert await get_bytes(store, "dmg", "rr") == body
        os.unlink(shard_file(store, "dmg", "rr", 1))
        with pytest.raises(errors.ReadQuorumLost):
            await get_bytes(store, "dmg", "rr")
    finally:
        await store.close()


async def test_reported_damage_is_repaired_by_the_heal_worker(tmp_disks) -> None:
    """With background work on (the default), a damaged read leads to the shard being rebuilt:
    a shard file byte for byte, an inline object's metadata file with the same payload (rebuilt
    from the registry's entry, its fields may come in another order)."""
    from engine_testkit import eventually

    from buckets.engine.meta import decode_meta_file
    from buckets.errors import CorruptData

    def as_stored(path: str, inline: bool):
        try:
            with open(path, "rb") as f:
                raw = f.read()
            return decode_meta_file(raw) if inline else raw
        except (OSError, CorruptData):
            return None

    store = await Store.open(tmp_disks(4), sync=False, block_size=BLOCK, partitions=32, small_copy_limit=0)
    try:
        await store.make_bucket("dmg")
        for key, size in [("streamed", 3 * BLOCK + 1), ("inline", 100)]:
            body = content(key, size)
            await store.put_object("dmg", key, body, size)
            path, inline = shard_file(store, "dmg", key, 0), size < BLOCK
            original = as_stored(path, inline)
            assert original is not None
            damage(path, "flip", random.Random(1))
            assert as_stored(path, inline) != original
            assert await get_bytes(store, "dmg", key) == body
            await eventually(lambda: as_stored(path, inline) == original, timeout=10)
    finally:
        await store.close()


async def test_small_objects_are_served_from_the_registry_copy_and_bad_copies_are_ignored(tmp_disks) -> None:
    """A small object's registry copy serves GETs without disk reads; a copy that fails its
    checksum, or belongs to an older write, is never served: the disks answer instead."""

    store = await Store.open(tmp_disks(4), sync=False, partitions=32, background=False)
    try:
        await store.make_bucket("small")
        await store.put_object("small", "k", b"first", 5)
        await store.put_object("small", "k", b"second!", 7)
        assert await get_bytes(store, "small", "k") == b"second!"
        entry = store.registry.get_object("small", "k")
        assert store.registry.get_small("small", "k", entry["wid"]) == b"second!"
        assert store.registry.get_small("small", "k", "not-this-write") is None
        # served without any disk: every shard file of the object removed
        for d in store.disks:
            os.unlink(d.local_path(paths.meta_path("small", "k", entry["wid"])))
        assert await get_bytes(store, "small", "k") == b"second!"
        # corrupt the registry copy: it is refused, and with the disks gone the read fails
        env = store.registry.env
        with env.begin(write=True, db=store.registry.db["small"]) as txn:
            (rec_key, raw), = list(txn.cursor())
            txn.put(rec_key, raw[:-1] + bytes([raw[-1] ^ 1]))
        assert store.registry.get_small("small", "k", entry["wid"]) is None
        with pytest.raises(errors.ReadQuorumLost):
            await get_bytes(store, "small", "k")
        # deleting the object removes its copy
        await store.delete_object("small", "k")
        with env.begin(db=store.registry.db["small"]) as txn:
            assert list(txn.cursor()) == []
    finally:
        await store.close()
