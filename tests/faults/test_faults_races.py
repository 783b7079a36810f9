"""Repair racing a client overwrite, forced at the exact moment, in-process.

Under load (``test_faults_wipe.py``) a repair sometimes reads the shards of a write that
a concurrent PUT has just replaced and removed. These tests make that interleaving
certain instead of lucky: the overwrite is a real ``put_object``, run just before the
repair reads its source shards. A repair that finds its object changed must give up
quietly; a disk refill must go on past one object that could not be repaired.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from fault_disks import current_shards, files_of_key
from fault_load import MiB, content

from buckets import Store
from buckets.engine import heal as heal_module
from buckets.engine.heal import heal_object

BUCKET = "races"


async def read_back(store: Store, key: str) -> bytes:
    out = bytearray()
    async for chunk in await store.get_object(BUCKET, key):
        out += chunk
    return bytes(out)


async def overwrite_and_wait(store: Store, disks: list[Path], key: str, data: bytes) -> None:
    """A real overwrite, then wait until the replaced write's files are gone from every disk."""
    await store.put_object(BUCKET, key, data, len(data))
    new = store.registry.get_object(BUCKET, key)["wid"]
    deadline = time.monotonic() + 10
    while any(new not in f for f in files_of_key(disks, BUCKET, key)):
        assert time.monotonic() < deadline, "the replaced write was never removed"
        await asyncio.sleep(0.01)


def overwrite_before_first_rebuild(monkeypatch, store: Store, disks: list[Path], data: bytes) -> list[str]:
    """Make the next repair's source shards vanish under it (by overwriting its object)."""
    real = heal_module._rebuild_shards
    raced: list[str] = []

    async def racing(store_, bucket, key, *args):
        if not raced:
            raced.append(key)
            await overwrite_and_wait(store, disks, key, data)
        return await real(store_, bucket, key, *args)

    monkeypatch.setattr(heal_module, "_rebuild_shards", racing)
    return raced


async def open_store(tmp_path: Path) -> tuple[Store, list[Path]]:
    disks = [tmp_path / f"disk{i}" for i in range(1, 5)]
    store = await Store.open([str(d) for d in disks], background=False, sync=False)
    await store.make_bucket(BUCKET)
    return store, disks


@pytest.mark.faults
async def test_heal_gives_up_quietly_when_a_put_replaces_the_object(tmp_path, monkeypatch) -> None:
    store, disks = await open_store(tmp_path)
    try:
        old, new = content("k", 1, 2 * MiB), content("k", 2, 2 * MiB)
        await store.put_object(BUCKET, "k", old, len(old))
        shard = current_shards(disks, BUCKET, "k")[0]
        shutil.rmtree(shard.data_dir)  # one shard lost: the object needs a repair
        raced = overwrite_before_first_rebuild(monkeypatch, store, disks, new)
        result = await heal_object(store, BUCKET, "k", deep=True)  # must not raise FileNotFound
        assert raced == ["k"]
        assert result.reason.startswith("object changed"), result
        assert await read_back(store, "k") == new
        assert (await heal_object(store, BUCKET, "k", deep=True)).bad == []
    finally:
        await store.close()


@pytest.mark.faults
async def test_refill_goes_on_past_an_object_it_cannot_repair(tmp_path, monkeypatch) -> None:
    store, disks = await open_store(tmp_path)
    try:
        keys = [f"k{i}" for i in range(6)]
        for key in keys:
            data = content(key, 1, MiB + 1)
            await store.put_object(BUCKET, key, data, len(data))
        shutil.rmtree(disks[2])
        disks[2].mkdir()  # a blank disk in the slot: the monitor re-formats and refills it
        raced = overwrite_before_first_rebuild(monkeypatch, store, disks, content("raced", 2, MiB + 1))
        await store.scanner.check_disks()
        await asyncio.gather(*store.scanner.tasks)  # the refill
        status = store.scanner.status()["refill"]
        assert len(raced) == 1
        assert all(r["finished"] for r in status.values()), f"the refill stopped: {status}"
        for key in keys:
            assert (await heal_object(store, BUCKET, key, deep=False)).bad == [], key
    finally:
        await store.close()
