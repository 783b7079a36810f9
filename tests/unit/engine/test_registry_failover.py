"""A registry whose disk failed refuses every commit with 503, and a store told to avoid that
disk (the server's restart in place, ``buckets.cli.server._registry_failure_hook``) rebuilds its
registry on another disk from the disks' metadata. The real failure, an ext4 file system shut
down under load, is ``tests/faults/test_faults_eio.py``."""

from __future__ import annotations

import json
import os

import lmdb
import pytest
from engine_testkit import BLOCK, INLINE, get_bytes

from buckets import Store
from buckets.errors import RegistryFailed
from buckets.registry.store import Op, Registry, is_disk_failure, storage_failure
from buckets.storage.format import REGISTRY_DIR


def test_what_counts_as_the_registry_disk_failing() -> None:
    assert is_disk_failure(lmdb.Error("mdb_txn_commit: Input/output error"))
    assert is_disk_failure(lmdb.Error("mdb_env_sync: Read-only file system"))
    assert is_disk_failure(lmdb.PanicError("mdb_txn_begin: MDB_PANIC: Update of meta page failed"))
    assert is_disk_failure(lmdb.CorruptedError("mdb_get: MDB_CORRUPTED: Located page was wrong type"))
    assert is_disk_failure(OSError(5, "Input/output error"))
    # a full disk or map is StorageFull's (507), a bad argument a bug's: neither moves the registry
    assert not is_disk_failure(lmdb.MapFullError("mdb_put: MDB_MAP_FULL: Environment mapsize limit reached"))
    assert not is_disk_failure(lmdb.Error("mdb_txn_commit: No space left on device"))
    assert not is_disk_failure(lmdb.BadValsizeError("mdb_put: MDB_BAD_VALSIZE: Unsupported size of key/DB name/data"))
    assert not is_disk_failure(ValueError("Input/output error"))


async def test_a_failed_registry_refuses_commits_and_says_so_once(tmp_path) -> None:
    registry = Registry(str(tmp_path / "reg"), cache_size=100, sync=False)
    registry.start()
    told: list[str] = []
    registry.on_failure = told.append
    try:
        await registry.commit([Op("put_bucket", "bkt", value={"created": 1})])
        assert registry.is_open
        # a read that met the failed environment is the request's 503, and fails the registry
        assert isinstance(storage_failure(lmdb.PanicError("mdb_txn_begin: MDB_PANIC")), RegistryFailed)
        assert storage_failure(KeyError("x")) is None
        assert storage_failure(lmdb.BadValsizeError("mdb_get: MDB_BAD_VALSIZE")) is None
        assert registry.failed and not registry.is_open
        registry.fail("again")
        assert told == ["a read failed: mdb_txn_begin: MDB_PANIC"]
        with pytest.raises(RegistryFailed) as refused:
            await registry.commit([Op("put_bucket", "other", value={"created": 1})])
        assert refused.value.status == 503 and refused.value.code == "ServiceUnavailable"
        assert "other" not in registry.buckets and "bkt" in registry.buckets  # reads go on
    finally:
        await registry.close()


async def test_a_store_that_avoids_its_registry_disk_rebuilds_the_registry_elsewhere(tmp_disks) -> None:
    paths = tmp_disks(4)
    kwargs = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64)
    store = await Store.open(paths, **kwargs)
    try:
        await store.make_bucket("bkt")
        bodies = {f"k{i}": os.urandom(size) for i, size in enumerate((0, 10, INLINE, INLINE + 1, 5 * BLOCK + 3))}
        for key, body in bodies.items():
            await store.put_object("bkt", key, body, len(body))
        await store.delete_object("bkt", "k1")
        first = store.registry_disk_id
        assert store.registry.path == store.by_id[first].local_path(REGISTRY_DIR)
    finally:
        await store.close()
    store = await Store.open(paths, registry_avoid=frozenset({first}), **kwargs)
    try:
        assert store.registry_disk_id != first
        assert store.registry.path == store.by_id[store.registry_disk_id].local_path(REGISTRY_DIR)
        for key, body in bodies.items():
            if key == "k1":
                continue
            assert await get_bytes(store, "bkt", key) == body
        names = [o.key for o in (await store.list_objects("bkt")).objects]
        assert names == sorted(k for k in bodies if k != "k1")
    finally:
        await store.close()
    # the registry lives where it was rebuilt from now on: a plain start does not go back
    store = await Store.open(paths, **kwargs)
    try:
        assert store.registry_disk_id not in (None, first)
    finally:
        await store.close()


async def test_a_registry_disk_that_cannot_take_its_pointer_at_start_gives_the_registry_up(tmp_disks,
                                                                                          monkeypatch) -> None:
    """At start the registry's disk answers reads but its first write fails (here: times out, as
    a frozen file system's does): the registry is rebuilt on another disk, and the pointer the
    other disks get names that disk at a higher epoch than the one the hung write may still
    land (the real hang, ``fsfreeze``: tests/faults/test_faults_eio.py)."""
    from buckets.errors import DiskTimeout
    from buckets.storage.format import REGISTRY_POINTER
    from buckets.storage.local import LocalDisk

    paths = tmp_disks(4)
    kwargs = dict(sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64)
    store = await Store.open(paths, **kwargs)
    try:
        await store.make_bucket("bkt")
        bodies = {f"k{i}": os.urandom(size) for i, size in enumerate((0, INLINE, 3 * BLOCK + 1))}
        for key, body in bodies.items():
            await store.put_object("bkt", key, body, len(body))
        first = store.registry_disk_id
        home = store.by_id[first].root
    finally:
        await store.close()
    write_file, tried = LocalDisk.write_file, []

    async def hanging_home(self, rel, data, **kw):
        if self.root == home and rel == REGISTRY_POINTER:
            tried.append(json.loads(data)["epoch"])
            self.mark_offline("a call (write_file) did not finish within 1s")
            raise DiskTimeout(f"{self.root}: a call (write_file) did not finish within 1s")
        return await write_file(self, rel, data, **kw)

    monkeypatch.setattr(LocalDisk, "write_file", hanging_home)
    store = await Store.open(paths, **kwargs)
    try:
        assert store.registry_disk_id != first and tried
        for key, body in bodies.items():
            assert await get_bytes(store, "bkt", key) == body
        pointers = [json.loads(await d.read_file(REGISTRY_POINTER)) for d in store.disks if d.root != home]
        assert {p["disk_id"] for p in pointers} == {store.registry_disk_id}
        assert all(p["epoch"] > max(tried) for p in pointers)
    finally:
        await store.close()
