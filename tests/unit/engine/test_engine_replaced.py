"""On a cluster, the data of a write that a later write or a delete replaced moments ago is
not removed at once (engine/replaced.py): that write's own writer may still merge it again
above the newer version, and it is then the key's state, acknowledged
(``tests/unit/cluster/test_index_replication.py::test_a_write_reported_replaced_can_still_be_merged_again``).
Its removal waits until its version is older than the window, then reads the key: removed if
another write is the key's state, kept if it is. A write replaced long after it was made is
removed at once, as before.

A real store over real directories with a cluster node's catalog on one in-process index
replica; the window is shortened to a fraction of a second."""

from __future__ import annotations

import asyncio

import pytest
from engine_testkit import BLOCK, INLINE, as_cluster_node, content, files_of, get_bytes

from buckets import Store
from buckets.engine import replaced
from buckets.engine.ids import made_here

OPTS = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64, background=False)
WINDOW = 0.4


@pytest.fixture
async def store(tmp_disks, monkeypatch):
    """The store; every write counts as one made through another node (whose writer may still
    be merging it), as this node's own are finished when another write of the key starts."""
    monkeypatch.setattr(replaced, "made_here", lambda wid: False)
    paths = tmp_disks(4)
    s = await Store.open(paths, **OPTS)
    await s.make_bucket("bkt")
    await as_cluster_node(s, versioned=False)
    s.replaced.window = WINDOW
    s.paths = paths
    yield s
    await s.close()


async def put(store: Store, key: str, name: str, size: int) -> dict:
    await store.put_object("bkt", key, content(name, size), size)
    return await store.catalog.index.get("bkt", key)


async def settled(store: Store) -> None:
    while store._background:
        await asyncio.wait(set(store._background))


@pytest.mark.parametrize("size", [INLINE // 2, 3 * BLOCK], ids=["inline", "streamed"])
async def test_a_replaced_write_is_removed_after_the_window(store, size) -> None:
    w = await put(store, "k", "w", size)
    x = await put(store, "k", "x", size)  # replaces w
    await settled(store)
    assert files_of(store.paths, w["wid"]), "removed at once"
    assert len(store.replaced) == 1
    await asyncio.sleep(WINDOW + 1.5)
    assert files_of(store.paths, w["wid"]) == []
    assert files_of(store.paths, x["wid"])
    assert await get_bytes(store, "bkt", "k") == content("x", size)


@pytest.mark.parametrize("size", [INLINE // 2, 3 * BLOCK], ids=["inline", "streamed"])
async def test_a_replaced_write_merged_again_keeps_its_data(store, size) -> None:
    w = await put(store, "k", "w", size)
    await put(store, "k", "x", size)  # replaces w (its writer is told so)
    await settled(store)
    # w's writer merges it again above x (as put_displacing does after a refusal): w is the key's state
    await store.catalog.index.put("bkt", "k", {f: v for f, v in w.items() if f != "ts"})
    await asyncio.sleep(WINDOW + 1.5)
    assert store.replaced.kept == 1
    assert files_of(store.paths, w["wid"])
    assert await get_bytes(store, "bkt", "k") == content("w", size)


async def test_a_delete_of_a_fresh_write_waits_too(store) -> None:
    w = await put(store, "k", "w", 3 * BLOCK)
    await store.delete_object("bkt", "k")
    assert files_of(store.paths, w["wid"])
    await asyncio.sleep(WINDOW + 1.5)
    assert files_of(store.paths, w["wid"]) == []


async def test_a_write_replaced_long_after_it_was_made_is_removed_at_once(store) -> None:
    store.replaced.window = 0.0  # every version is older than the window
    w = await put(store, "k", "w", 3 * BLOCK)
    await put(store, "k", "x", 3 * BLOCK)
    await settled(store)
    assert files_of(store.paths, w["wid"]) == []
    assert len(store.replaced) == 0


async def test_a_node_short_of_space_removes_a_replaced_write_at_once(store) -> None:
    """The space is wanted now (a DELETE on a full cluster answers once its data is gone, so a
    write right after it finds the room): the wait is skipped, as before."""
    import time

    w = await put(store, "k", "w", 3 * BLOCK)
    store.short_of_space_until = time.monotonic() + 60  # a write refused for space just now
    await store.delete_object("bkt", "k")
    await settled(store)
    assert files_of(store.paths, w["wid"]) == []
    assert len(store.replaced) == 0


async def test_a_write_made_through_this_node_is_removed_at_once(store, monkeypatch) -> None:
    """This node's writes of a key hold its key lock for their whole commit, and the next write
    of the key here waits for it: a write made here has finished merging (a single-node
    cluster never waits; ``tests/cluster/test_disk_changes.py`` found a removed disk still
    holding 93 replaced writes right after its removal when it did)."""
    monkeypatch.setattr(replaced, "made_here", made_here)  # as it is: this store made the writes
    w = await put(store, "k", "w", 3 * BLOCK)
    await put(store, "k", "x", 3 * BLOCK)
    await settled(store)
    assert files_of(store.paths, w["wid"]) == []
    assert len(store.replaced) == 0
