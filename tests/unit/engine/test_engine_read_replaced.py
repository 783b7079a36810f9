"""A read whose write is replaced (or deleted) and removed under it, as on a cluster, where an
overwrite or delete through another node removes the old write's data without waiting for
this node's GETs (this node's own removals wait for its readers).

The read does not report damage for it: nothing is damaged. ``get_object(begin=True)`` (a
GET's first bytes read before its headers go out) looks the key up again and reads what it
holds now; a read already streaming raises ``WriteReplaced``. A write whose data is gone while
it is still the key's is damage, as before: ``ReadQuorumLost``, and a heal queued.

The other node's removal is played by removing the old write's files without waiting for the
reader (``wait_readers=0``), right after the overwrite commits."""

from __future__ import annotations

import logging

import pytest
from engine_testkit import BLOCK, INLINE, content, read_all

from buckets import Store, errors
from buckets.engine import reader as reader_module
from buckets.storage import LocalDisk

SIZE = 6 * BLOCK  # part files, read in several spans (conftest: two blocks per span)


@pytest.fixture
async def store(tmp_disks):
    s = await Store.open(tmp_disks(4), sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64,
                         background=False)
    await s.make_bucket("bkt")
    yield s
    await s.close()


async def remove_now(store: Store, entry: dict) -> None:
    """What another node's overwrite or delete does to ``entry``'s data: removed at once,
    whatever this node is reading."""
    await store._remove_write("bkt", "k", entry["wid"], store.disks_for(entry["disks"]), wait_readers=0)


async def test_a_get_whose_write_is_replaced_before_its_first_read_reads_the_new_one(store, monkeypatch,
                                                                                     caplog) -> None:
    await store.put_object("bkt", "k", content("v1", SIZE), SIZE)
    original = reader_module.ObjectReader.begin
    replaced = []

    async def overwritten_first(self) -> None:
        if not replaced:  # the first lookup's write is replaced and removed before its first read
            replaced.append(self.entry)
            await store.put_object("bkt", "k", content("v2", SIZE), SIZE)
            await remove_now(store, self.entry)
        await original(self)

    monkeypatch.setattr(reader_module.ObjectReader, "begin", overwritten_first)
    with caplog.at_level(logging.INFO, logger="buckets.engine"):
        got = await store.get_object("bkt", "k", begin=True)
        assert await read_all(got) == content("v2", SIZE)
    assert got.entry["wid"] != replaced[0]["wid"]
    assert any("reading it again" in r.getMessage() for r in caplog.records)
    assert not store._heal_pending and "damaged object" not in caplog.text


async def test_a_get_whose_key_is_deleted_before_its_first_read_is_no_such_key(store, monkeypatch) -> None:
    await store.put_object("bkt", "k", content("v1", SIZE), SIZE)
    original = reader_module.ObjectReader.begin

    async def deleted_first(self) -> None:
        await store.delete_object("bkt", "k")
        await remove_now(store, self.entry)
        await original(self)

    monkeypatch.setattr(reader_module.ObjectReader, "begin", deleted_first)
    with pytest.raises(errors.NoSuchKey):
        await store.get_object("bkt", "k", begin=True)
    assert not store._heal_pending


async def test_a_conditions_check_sees_the_object_each_lookup_found(store, monkeypatch) -> None:
    """A GET's conditions are evaluated on what it serves: the new write, when the first one was
    replaced under it."""
    await store.put_object("bkt", "k", content("v1", SIZE), SIZE)
    original = reader_module.ObjectReader.begin
    seen = []

    async def overwritten_first(self) -> None:
        if len(seen) == 1:
            await store.put_object("bkt", "k", content("v2", SIZE), SIZE)
            await remove_now(store, self.entry)
        await original(self)

    monkeypatch.setattr(reader_module.ObjectReader, "begin", overwritten_first)
    got = await store.get_object("bkt", "k", begin=True, check=lambda info: seen.append(info.etag))
    await got.aclose()
    assert len(seen) == 2 and seen[0] != seen[1] and seen[1] == got.info.etag


async def test_a_read_streaming_when_its_write_is_replaced_reads_it_to_the_end(store) -> None:
    """Each slot's file is read through one descriptor from its first span on
    (``LocalDisk.open_range``): the removal unlinks the files, the read keeps them."""
    await store.put_object("bkt", "k", content("v1", SIZE), SIZE)
    got = await store.get_object("bkt", "k")
    chunks = got.__aiter__()
    first = await chunks.__anext__()
    await store.put_object("bkt", "k", content("v2", SIZE), SIZE)
    await remove_now(store, got.entry)
    rest = [chunk async for chunk in chunks]
    await got.aclose()
    assert first + b"".join(rest) == content("v1", SIZE)
    assert not store._heal_pending
    assert await read_all(await store.get_object("bkt", "k")) == content("v2", SIZE)


async def test_a_read_streaming_span_by_span_when_its_write_is_replaced_says_so(store, monkeypatch) -> None:
    """A disk read span by span (one without ``open_range``, as the fault-injecting wrappers
    are) finds the later spans gone: the read says the write was replaced, and reports no
    damage. (Its headers went out already: a GET is cut there.)"""
    monkeypatch.setattr(LocalDisk, "open_range", None)
    await store.put_object("bkt", "k", content("v1", SIZE), SIZE)
    got = await store.get_object("bkt", "k")
    chunks = got.__aiter__()
    first = await chunks.__anext__()
    assert first == content("v1", SIZE)[:len(first)]
    await store.put_object("bkt", "k", content("v2", SIZE), SIZE)
    await remove_now(store, got.entry)
    with pytest.raises(errors.WriteReplaced):
        async for _ in chunks:
            pass
    await got.aclose()
    assert not store._heal_pending


async def test_a_write_whose_data_is_gone_while_it_is_the_keys_is_damage(store) -> None:
    """Not replaced: the entry still names it. That is damage (a heal is queued), not a race."""
    await store.put_object("bkt", "k", content("v1", SIZE), SIZE)
    entry = await store.catalog.get_object("bkt", "k")
    await remove_now(store, entry)
    with pytest.raises(errors.ReadQuorumLost) as caught:
        await store.get_object("bkt", "k", begin=True)
    assert not isinstance(caught.value, errors.WriteReplaced)
    assert ("bkt", "k", entry["wid"]) in store._heal_pending


async def test_a_version_read_by_id_that_is_removed_under_it_is_no_such_version(store, monkeypatch) -> None:
    await store.set_versioning("bkt", "Enabled")
    v1 = (await store.put_object("bkt", "k", content("v1", SIZE), SIZE)).version_id
    await store.put_object("bkt", "k", content("v2", SIZE), SIZE)
    original = reader_module.ObjectReader.begin

    async def removed_first(self) -> None:
        await store.delete_object("bkt", "k", version_id=v1)
        await remove_now(store, self.entry)
        await original(self)

    monkeypatch.setattr(reader_module.ObjectReader, "begin", removed_first)
    with pytest.raises(errors.NoSuchVersion):
        await store.get_object("bkt", "k", version_id=v1, begin=True)
    assert not store._heal_pending
