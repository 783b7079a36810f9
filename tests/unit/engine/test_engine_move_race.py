"""A migration's move of one object racing an overwrite (``StoreMover.move``): what each side
leaves on the disks.

The move copies the object's shards to its new disks, commits the moved entry, and reads it
back. An overwrite that lands between the commit and the read-back wins (its clock is newer).
Its writer read either the entry as it was or the moved one; which, the mover cannot know.
Whatever no entry names any more must go, and whatever one still names must stay:

- in a plain bucket the overwrite's writer removes the files of the entry it replaced; the
  move removes the rest (its copies, or the shards it vacated). Before, it removed only its
  copies, and the vacated shards stayed on the old disks, named by nothing (a removed node
  kept one write's files after it was drained: ``tests/cluster/test_growth.py``);
- in a versioned bucket the replaced entry lives on as a noncurrent version. If the writer
  read the moved entry, that version names the copies: the move must not remove them.

A real store over real directories; the cluster's catalog (``ClusterCatalog``) over one
in-process index replica on the store's own registry, as a cluster node has it. The new
placement is a permutation of the store's disks, so the object is copied whole under a fresh
write id."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest
from engine_testkit import BLOCK, INLINE, as_cluster_node, content, files_of, files_on, get_bytes

from buckets import Store
from buckets.cluster.migration import StoreMover

OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64, background=False, parity=2)
# The object's size, and its new placement: two slots on the two disks it is not on (the same
# write id), or a permutation of its disks (every slot changes, so it is copied whole under a
# new write id). A streamed object is on all six disks: it has no spare ones.
CASES = pytest.mark.parametrize("size, how", [(INLINE // 2, "two-slots"), (INLINE // 2, "rewritten"),
                                              (3 * BLOCK, "rewritten")],
                                ids=["inline-two-slots", "inline-rewritten", "streamed-rewritten"])


def new_placement(store: Store, entry: dict, how: str) -> list[str]:
    disks = list(entry["disks"])
    if how == "rewritten":
        return disks[1:] + disks[:1]
    spare = [d.disk_id for d in store.disks if d.disk_id not in disks]
    assert len(spare) == 2
    return spare + disks[2:]


class Race:
    """The mover, with an overwrite of the key landing at the move's commit. ``seen``: which
    entry the overwrite's writer replaces ("old": it lands just before the commit, which then
    loses; "moved": just after it, so it replaces the moved entry)."""

    def __init__(self, store: Store, seen: str, body: bytes) -> None:
        self.store = store
        store.replaced.window = 0.0  # what the overwrite replaced goes at once (the wait: test_engine_replaced.py)
        self.mover = StoreMover(SimpleNamespace(control=store.catalog.control), store, grace=0.0)
        self.body = body
        commit = self.mover._put_version

        async def commit_and_overwrite(bucket, key, entry, ts, created=None):
            if seen == "old":
                await self.overwrite()
            result = await commit(bucket, key, entry, ts, created)
            if seen == "moved":
                await self.overwrite()
            return result

        self.mover._put_version = commit_and_overwrite

    async def overwrite(self) -> None:
        await self.store.put_object("bkt", "k", self.body, len(self.body))

    async def move(self, target: list[str]):
        entry = await self.store.catalog.index.get("bkt", "k")
        self.mover.target = lambda *_a: list(target)
        outcome = await self.mover.move("bkt", "k", entry, list(target), 2, _no_pace)
        await self.mover.drain()
        while self.store._background:  # the overwrite's removal of what it replaced
            await asyncio.wait(set(self.store._background))
        return outcome


async def _no_pace(_n: int) -> None:
    return None


@CASES
@pytest.mark.parametrize("seen", ["old", "moved"])
async def test_an_overwrite_that_wins_over_a_move_leaves_no_files_of_either_placement(tmp_disks, size, how,
                                                                                     seen) -> None:
    paths = tmp_disks(6)
    store = await Store.open(paths, **OPTS)
    try:
        await store.make_bucket("bkt")
        await as_cluster_node(store, versioned=False)
        body = content("k", size)
        await store.put_object("bkt", "k", body, size)
        entry = await store.catalog.index.get("bkt", "k")
        assert files_of(paths, entry["wid"])
        race = Race(store, seen, content("k2", size))
        outcome = await race.move(new_placement(store, entry, how))
        assert outcome.status == "skipped", outcome
        current = await store.catalog.index.get("bkt", "k")
        assert current["wid"] not in (entry["wid"],)
        assert await get_bytes(store, "bkt", "k") == content("k2", size)
        left = [f for f in files_of(paths, "/buckets/bkt/") if current["wid"] not in f]
        assert left == [], "files of the moved write (its old shards or its copies) were left behind"
    finally:
        await store.close()


@CASES
@pytest.mark.parametrize("seen", ["old", "moved"])
async def test_an_overwrite_that_wins_over_a_move_keeps_the_replaced_version_readable(tmp_disks, size, how,
                                                                                     seen) -> None:
    paths = tmp_disks(6)
    store = await Store.open(paths, **OPTS)
    try:
        await store.make_bucket("bkt")
        await as_cluster_node(store, versioned=True)
        body = content("k", size)
        vid = (await store.put_object("bkt", "k", body, size)).version_id
        entry = await store.catalog.index.get("bkt", "k")
        race = Race(store, seen, content("k2", size))
        outcome = await race.move(new_placement(store, entry, how))
        assert outcome.status == "skipped", outcome
        assert await get_bytes(store, "bkt", "k") == content("k2", size)
        assert await get_bytes(store, "bkt", "k", version_id=vid) == body  # the noncurrent version reads
        names = [e for e in await store.catalog.noncurrent_versions("bkt", "k")]
        assert [e["vid"] for e in names] == [vid]
        named = {names[0]["wid"]}
        orphans = [f for f in files_of(paths, "") if "/buckets/bkt/" in f
                   and not any(w in f for w in named | {(await store.catalog.index.get("bkt", "k"))["wid"]})]
        assert orphans == [], "files no version names were left behind"
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def one_version_moved(tmp_disks, size: int, how: str):
    """A store with a cluster node's catalog and a versioned bucket ``bkt``, one version of
    ``k`` written, and the key's entry moved to its new placement (the record not yet):
    (store, index, mover, the entry before the move, the new disks, version id, body)."""
    paths = tmp_disks(6)
    store = await Store.open(paths, **OPTS)
    store.paths = paths
    try:
        await store.make_bucket("bkt")
        index = await as_cluster_node(store, versioned=True)
        body = content("k", size)
        vid = (await store.put_object("bkt", "k", body, size)).version_id
        entry = await index.get("bkt", "k")
        target = new_placement(store, entry, how)
        mover = StoreMover(SimpleNamespace(control=store.catalog.control), store, grace=0.0)
        mover.target = lambda *_a: list(target)
        assert (await mover.move("bkt", "k", entry, target, 2, _no_pace)).status == "moved"
        yield store, index, mover, entry, target, vid, body
    finally:
        await store.close()


@CASES
async def test_a_versions_files_stay_on_the_old_disks_until_its_record_is_moved(tmp_disks, size, how) -> None:
    """A versioned bucket's current write has two entries: the key's, and its version record
    (made when it was written). The migration moves the key's entry first, the record later
    (the bucket's versions come after it). The key's move must not remove the old disks' files
    while the record still names them: before, they went after the grace delay, and the
    record's move then found none to copy (rebuilt from parity when at most m slots changed,
    failed when every slot did). The record's move takes the key's moved files (no second
    copy); then the old ones go."""
    from buckets.cluster.catalog import VERSIONS

    async with one_version_moved(tmp_disks, size, how) as (store, index, mover, entry, target, vid, body):
        await mover.drain()
        moved = await index.get("bkt", "k")
        assert (moved["wid"] != entry["wid"]) == (how == "rewritten")
        left = entry["disks"] if how == "rewritten" else [d for d in entry["disks"] if d not in target]
        assert files_on(store, left, entry["wid"]), "the record's files went with the key's move"

        (rkey, record), = (await index.list("bkt" + VERSIONS, "k\0", "", "", 10, full=True, markers=True))[0]
        assert record["wid"] == entry["wid"] and record["disks"] == entry["disks"]
        outcome = await mover.move("bkt" + VERSIONS, rkey, record, target, 2, _no_pace)
        assert outcome.status == "moved" and outcome.bytes == 0, outcome  # it took the key's moved files
        await mover.drain()
        record = await index.get("bkt" + VERSIONS, rkey)
        assert (record["wid"], record["disks"]) == (moved["wid"], moved["disks"])
        assert files_on(store, left, entry["wid"]) == []  # named by nothing now: gone

        await store.put_object("bkt", "k", b"newer", 5)  # the version becomes noncurrent
        assert await get_bytes(store, "bkt", "k", version_id=vid) == body
        named = {e["wid"] for e in await store.catalog.live_entries("bkt", "k")}
        orphans = [f for f in files_of(store.paths, "/buckets/bkt/") if not any(w in f for w in named)]
        assert orphans == []


@CASES
async def test_a_write_that_moves_itself_takes_its_version_record_along(tmp_disks, size, how) -> None:
    """A write placed under an older table moves itself before it is acknowledged
    (``Store._follow_table``); the migration that would move its version record may be over,
    and the record then named the old disks for good (a removed node's among them). Its record
    now follows it (``StoreMover.move_record``), taking the moved files."""
    from buckets.cluster.catalog import VERSIONS, version_record

    async with one_version_moved(tmp_disks, size, how) as (store, index, mover, entry, target, vid, body):
        outcome = await mover.move_record("bkt", "k", entry, 2, _no_pace)
        assert outcome is not None and outcome.status == "moved" and outcome.bytes == 0, outcome
        await mover.drain()
        moved = await index.get("bkt", "k")
        record = await index.get("bkt" + VERSIONS, version_record("k", entry))
        assert (record["wid"], record["disks"]) == (moved["wid"], moved["disks"])
        await store.put_object("bkt", "k", b"newer", 5)
        assert await get_bytes(store, "bkt", "k", version_id=vid) == body

