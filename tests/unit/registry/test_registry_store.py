"""The LMDB registry: LRU cache accounting, group commit, long keys, usage counters."""

from __future__ import annotations

import asyncio
import os

import pytest

from buckets.registry import LRUCache, Op, Registry
from buckets.registry import store as registry_store
from buckets.registry.store import LONG, object_key, prefix_successor


@pytest.fixture
async def registry(tmp_path):
    reg = Registry(str(tmp_path / "reg"), cache_size=100, sync=False)
    reg.start()
    await reg.commit(buckets("b", "bkt"))
    yield reg
    await reg.close()


def buckets(*names: str) -> list[Op]:
    return [Op("put_bucket", n, value={"created": 1.0}) for n in names]


def entry(size: int = 1, etag: str = "e") -> dict:
    return {"size": size, "etag": etag, "wid": "w", "mt": 0.0}


# -- LRU cache -------------------------------------------------------------------------------

def test_lru_hits_misses_and_eviction_order() -> None:
    c = LRUCache(3)
    assert c.get("a") is None and (c.hits, c.misses) == (0, 1)
    for k in "abc":
        c.put(k, k.upper())
    assert c.get("a") == "A" and (c.hits, c.misses) == (1, 1)  # a is now most recent
    c.put("d", "D")  # evicts b, the least recently used
    assert c.get("b") is None and len(c) == 3
    assert [c.get(k) for k in "acd"] == ["A", "C", "D"]
    assert (c.hits, c.misses) == (4, 2)
    c.put("a", "A2")  # update refreshes recency, no growth
    c.put("e", "E")  # evicts c
    assert c.get("c") is None and c.get("a") == "A2" and len(c) == 3
    c.replace("a", "A3")  # cached: the value changes, its recency does not
    c.replace("zzz", "Z")  # not cached: nothing is admitted
    assert c.peek("a") == "A3" and c.peek("zzz") is None and list(c._data) == ["d", "e", "a"]
    c.discard("a")
    c.discard("zzz")
    assert c.get("a") is None and len(c) == 2
    c.clear()
    assert len(c) == 0


def test_lru_zero_capacity_caches_nothing() -> None:
    c = LRUCache(0)
    c.put("a", 1)
    assert c.get("a") is None and len(c) == 0


async def test_registry_lookups_go_through_the_cache(tmp_path) -> None:
    reg = Registry(str(tmp_path / "reg"), cache_size=2, sync=False)
    reg.start()
    try:
        await reg.commit(buckets("b") + [Op("put_object", "b", f"k{i}", entry(i)) for i in range(3)])
        cache = reg.cache
        assert len(cache) == 0  # a write does not admit its entry
        h, m = cache.hits, cache.misses
        assert reg.get_object("b", "k2")["size"] == 2  # miss, then LMDB, then cached
        assert (cache.hits - h, cache.misses - m) == (0, 1)
        assert reg.get_object("b", "k2")["size"] == 2
        assert (cache.hits - h, cache.misses - m) == (1, 1)
        assert reg.get_object("b", "k0")["size"] == 0 and reg.get_object("b", "k1")["size"] == 1
        assert ("b", "k2") not in cache._data  # capacity 2: the least recently read went
        assert reg.get_object("b", "absent") is None  # absent keys are not cached
        assert reg.get_object("b", "absent") is None
        assert (cache.hits - h, cache.misses - m) == (1, 5)
        await reg.commit([Op("delete_object", "b", "k0")])
        assert reg.get_object("b", "k0") is None  # delete invalidates: never stale
        await reg.commit([Op("put_object", "b", "k1", entry(99))])
        assert reg.get_object("b", "k1")["size"] == 99  # a cached key's write replaces it: never stale
    finally:
        await reg.close()


async def test_writes_do_not_push_the_read_entries_out(tmp_path) -> None:
    """A burst of writes of new keys (a backup, a log shipper) leaves the entries clients read
    where they are: a write refreshes a cached entry's value and admits nothing."""
    reg = Registry(str(tmp_path / "reg"), cache_size=3, sync=False)
    reg.start()
    try:
        await reg.commit(buckets("b") + [Op("put_object", "b", f"hot{i}", entry(i)) for i in range(3)])
        assert [reg.get_object("b", f"hot{i}")["size"] for i in range(3)] == [0, 1, 2]
        hot = list(reg.cache._data)
        await reg.commit([Op("put_object", "b", f"new{i}", entry(i)) for i in range(50)])
        await reg.commit([Op("put_object", "b", "hot0", entry(100))])  # overwrite of a cached key
        assert list(reg.cache._data) == hot  # no eviction, no reordering by a write
        h, m = reg.cache.hits, reg.cache.misses
        assert [reg.get_object("b", f"hot{i}")["size"] for i in range(3)] == [100, 1, 2]
        assert (reg.cache.hits - h, reg.cache.misses - m) == (3, 0)
        assert reg.get_object("b", "new7")["size"] == 7  # written keys are read from LMDB
        assert reg.cache.misses - m == 1
    finally:
        await reg.close()


async def test_a_background_workers_lookups_leave_the_cache_as_it_is(tmp_path) -> None:
    """The compactor, the scanner, a refill and the heal worker look every key up once: they
    neither enter the LRU nor refresh what is in it (the clients' hot entries stay)."""
    from buckets.registry.cache import background_lookups

    reg = Registry(str(tmp_path / "reg"), cache_size=2, sync=False)
    reg.start()
    try:
        await reg.commit(buckets("b") + [Op("put_object", "b", f"k{i}", entry(i)) for i in range(4)])
        reg.cache.clear()
        assert reg.get_object("b", "k0") and reg.get_object("b", "k1")  # a client's reads: k0, k1 cached
        hot = list(reg.cache._data)

        async def scan() -> list:
            background_lookups()
            return [reg.get_object("b", f"k{i}")["size"] for i in (3, 2, 0)]

        h, m = reg.cache.hits, reg.cache.misses
        assert await asyncio.ensure_future(scan()) == [3, 2, 0]  # read right, from LMDB or the cache
        assert list(reg.cache._data) == hot and (reg.cache.hits, reg.cache.misses) == (h, m)
        assert reg.get_object("b", "k2")["size"] == 2  # the client's task is not affected
        assert reg.cache.misses == m + 1 and ("b", "k2") in reg.cache._data
    finally:
        await reg.close()


async def test_cache_is_cold_after_reopen(tmp_path) -> None:
    path = str(tmp_path / "reg")
    reg = Registry(path, sync=False)
    reg.start()
    await reg.commit(buckets("b") + [Op("put_object", "b", "k", entry(5))])
    await reg.close()
    reg = Registry(path, sync=False)
    reg.start()
    try:
        assert not reg.created
        assert reg.get_object("b", "k")["size"] == 5
        assert (reg.cache.hits, reg.cache.misses) == (0, 1)
        assert reg.get_object("b", "k")["size"] == 5
        assert (reg.cache.hits, reg.cache.misses) == (1, 1)
    finally:
        await reg.close()


# -- group commit ---------------------------------------------------------------------------

async def test_concurrent_commits_share_transactions(registry) -> None:
    before = registry.commits
    n = 300
    await asyncio.gather(*(registry.commit([Op("put_object", "b", f"k{i:04d}", entry(i))]) for i in range(n)))
    txns = registry.commits - before
    assert 1 <= txns < n // 10, f"{n} commits took {txns} transactions"
    assert registry.committed_ops >= n
    assert all(registry.get_object("b", f"k{i:04d}")["size"] == i for i in range(n))


async def test_group_commit_through_the_engine(tmp_disks) -> None:
    from buckets import Store

    store = await Store.open(tmp_disks(4), sync=True, partitions=32)
    try:
        await store.make_bucket("bkt")
        before = store.registry.commits
        n = 60
        await asyncio.gather(*(store.put_object("bkt", f"k{i}", b"x" * i, i) for i in range(n)))
        txns = store.registry.commits - before
        assert txns < n, f"{n} PUTs took {txns} registry transactions"
        assert store.registry.usage["bkt"] == [n, sum(range(n))]
    finally:
        await store.close()


async def test_a_failing_batch_fails_its_waiters_and_the_committer_survives(registry) -> None:
    with pytest.raises(ValueError):
        await registry.commit([Op("no_such_op", "x")])
    await registry.commit([Op("put_object", "b", "after", entry())])
    assert registry.get_object("b", "after") is not None


async def test_preconditions_reject_only_their_own_commit(registry) -> None:
    """Bucket existence and emptiness are checked inside the write transaction: in one
    group-commit batch a failed precondition fails that caller alone."""
    from buckets import errors

    await registry.commit(buckets("full", "empty") + [Op("put_object", "full", "x", entry(4))])
    results = await asyncio.gather(
        registry.commit([Op("put_object", "missing", "k", entry())]),
        registry.commit([Op("put_object", "bkt", "ok", entry(2))]),
        registry.commit([Op("delete_bucket", "full")]),
        registry.commit([Op("delete_bucket", "empty")]),
        registry.commit([Op("put_object", "bkt", "ok2", entry(3)), Op("put_object", "missing", "k2", entry())]),
        return_exceptions=True)
    assert isinstance(results[0], errors.NoSuchBucket)
    assert results[1] is None
    assert isinstance(results[2], errors.BucketNotEmpty)
    assert results[3] is None
    assert isinstance(results[4], errors.NoSuchBucket)
    assert registry.get_object("bkt", "ok")["size"] == 2
    assert registry.get_object("bkt", "ok2") is None  # its commit failed as a whole
    assert registry.get_object("missing", "k") is None
    assert registry.get_bucket("full") is not None and registry.get_bucket("empty") is None
    assert registry.usage["bkt"] == [1, 2] and registry.usage["full"] == [1, 4]


async def test_ops_in_one_commit_are_atomic(registry) -> None:
    with pytest.raises(ValueError):
        await registry.commit([Op("put_object", "b", "partial", entry()), Op("bogus", "x")])
    assert registry.get_object("b", "partial") is None


# -- long keys ------------------------------------------------------------------------------

def long(prefix: str, n: int, total: int = 1024) -> str:
    tail = f"/{n:05d}"
    return prefix + "q" * (total - len(prefix.encode()) - len(tail)) + tail


async def test_long_keys_share_a_record_and_round_trip(registry) -> None:
    stem = "s" * 600
    keys = [long(stem, i) for i in range(20)] + [stem[:400], stem + "x", "short", long("é" * 300, 1)]
    assert all(len(k.encode()) <= 1024 for k in keys)
    await registry.commit([Op("put_object", "bkt", k, entry(i, k[-8:])) for i, k in enumerate(keys)])
    registry.cache.clear()
    for i, k in enumerate(keys):
        e = registry.get_object("bkt", k)
        assert e is not None and e["size"] == i, k[-10:]
    assert registry.get_object("bkt", long(stem, 999)) is None
    assert registry.count_objects() < len(keys)  # the long ones share records
    objs, prefixes, truncated = registry.scan_objects("bkt", limit=1000)
    assert [k for k, _ in objs] == sorted(keys, key=lambda k: k.encode())
    # delete some long keys, one by one and in one batch; the rest are untouched
    await registry.commit([Op("delete_object", "bkt", keys[3])])
    await registry.commit([Op("delete_object", "bkt", k) for k in keys[5:10]])
    registry.cache.clear()
    left = [k for i, k in enumerate(keys) if i != 3 and not 5 <= i < 10]
    assert [k for k, _ in registry.scan_objects("bkt")[0]] == sorted(left, key=lambda k: k.encode())
    assert registry.usage["bkt"][0] == len(left)
    # walk (scanner path) sees every key once
    assert sorted(k for b, k, _ in registry.walk_objects() if b == "bkt") == sorted(left)


async def test_long_key_paging_and_prefixes(registry) -> None:
    stem = "p/" + "x" * 700
    keys = sorted([long(stem, i) for i in range(10)] + [stem + "/a/b", stem + "/a/c", stem + "/b"],
                  key=lambda k: k.encode())
    await registry.commit([Op("put_object", "bkt", k, entry()) for k in keys])
    got: list[str] = []
    after = ""
    while True:
        objs, _, truncated = registry.scan_objects("bkt", start_after=after, limit=3)
        got += [k for k, _ in objs]
        if not truncated:
            break
        after = objs[-1][0]
    assert got == keys
    objs, prefixes, _ = registry.scan_objects("bkt", prefix=stem + "/", delimiter="/")
    assert prefixes == [stem + "/a/"] and [k for k, _ in objs] == [stem + "/b"]
    objs, prefixes, _ = registry.scan_objects("bkt", prefix=stem[:LONG], limit=1000)
    assert len(objs) == len(keys)


def test_record_key_helpers() -> None:
    assert object_key("b", "k") == b"b\0k"
    assert prefix_successor(b"ab") == b"ac"
    assert prefix_successor(b"a\xff") == b"b"
    assert prefix_successor(b"\xff\xff") is None


# -- usage counters ---------------------------------------------------------------------------

async def test_usage_counters_follow_put_overwrite_delete(registry) -> None:
    await registry.commit(buckets("u1", "u2"))
    await registry.commit([Op("put_object", "u1", "a", entry(10)), Op("put_object", "u1", "b", entry(5))])
    assert registry.usage["u1"] == [2, 15]
    await registry.commit([Op("put_object", "u1", "a", entry(3))])  # overwrite: same count, new size
    assert registry.usage["u1"] == [2, 8]
    await registry.commit([Op("delete_object", "u1", "b"), Op("delete_object", "u1", "never-existed")])
    assert registry.usage["u1"] == [1, 3]
    await registry.commit([Op("put_object", "u2", long("z" * 600, 1), entry(7)),
                           Op("put_object", "u2", long("z" * 600, 1), entry(9))])  # same key twice, one batch
    assert registry.usage["u2"] == [1, 9]
    await registry.commit([Op("delete_object", "u1", "a"), Op("delete_bucket", "u1")])
    assert "u1" not in registry.usage


async def test_usage_counters_persist_across_reopen(tmp_path) -> None:
    path = str(tmp_path / "reg")
    reg = Registry(path, sync=True)
    reg.start()
    await reg.commit(buckets("b") + [Op("put_object", "b", f"k{i}", entry(i)) for i in range(10)])
    await reg.commit([Op("delete_object", "b", "k0"), Op("delete_object", "b", "k9")])
    await reg.close()
    reg = Registry(path, sync=True)
    reg.start()
    try:
        assert reg.usage["b"] == [8, sum(range(1, 9))]
    finally:
        await reg.close()


async def test_usage_through_the_engine(tmp_disks) -> None:
    from buckets import Store
    from buckets.engine.types import CompletePart

    store = await Store.open(tmp_disks(4), sync=False, partitions=32)
    try:
        await store.make_bucket("bkt")
        await store.make_bucket("other")
        await store.put_object("bkt", "a", b"x" * 100, 100)
        await store.put_object("bkt", "b", b"x" * 50, 50)
        await store.put_object("other", "a", b"x" * 7, 7)
        assert store.registry.usage["bkt"] == [2, 150]
        await store.put_object("bkt", "a", b"x" * 10, 10)
        assert store.registry.usage["bkt"] == [2, 60]
        up = await store.create_multipart_upload("bkt", "mp")
        p = await store.put_part("bkt", "mp", up.upload_id, 1, b"y" * 30, 30)
        assert store.registry.usage["bkt"] == [2, 60]  # parts in flight do not count
        await store.complete_multipart_upload("bkt", "mp", up.upload_id, [CompletePart(1, p.etag)])
        assert store.registry.usage["bkt"] == [3, 90]
        await store.delete_object("bkt", "b")
        await store.delete_object("bkt", "b")
        assert store.registry.usage["bkt"] == [2, 40]
        assert store.registry.usage["other"] == [1, 7]
        for k in ("a", "mp"):
            await store.delete_object("bkt", k)
        await store.delete_bucket("bkt")
        assert "bkt" not in store.registry.usage
    finally:
        await store.close()


# -- other tables ---------------------------------------------------------------------------

async def test_buckets_uploads_users_sys(registry) -> None:
    await registry.commit([Op("put_bucket", "zz", value={"created": 1.0}), Op("put_bucket", "aa", value={"created": 2.0})])
    assert [n for n, _ in registry.list_buckets()] == ["aa", "b", "bkt", "zz"]
    assert registry.get_bucket("aa") == {"created": 2.0} and registry.get_bucket("nope") is None
    await registry.commit([Op("put_upload", "aa", "u1", {"key": "k"}), Op("put_upload", "aab", "u2", {"key": "j"})])
    assert registry.list_uploads("aa") == [{"key": "k"}]  # not aab's
    assert registry.get_upload("aa", "u1") == {"key": "k"}
    await registry.commit([Op("delete_upload", "aa", "u1")])
    assert registry.get_upload("aa", "u1") is None
    await registry.commit([Op("put_user", "AK", value={"s": 1}), Op("put_sys", "x", value=[1, 2])])
    assert registry.get_user("AK") == {"s": 1} and registry.get_sys("x") == [1, 2]
    # empty names (a malformed request) are simply absent, never an LMDB error
    assert registry.get_user("") is None and registry.get_bucket("") is None and registry.get_sys("") is None
    await registry.commit([Op("delete_user", "AK")])
    assert registry.get_user("AK") is None
    await registry.commit([Op("delete_bucket", "zz")])
    assert [n for n, _ in registry.list_buckets()] == ["aa", "b", "bkt"]
    assert registry.size_bytes() > 0


async def test_a_registry_at_its_map_size_answers_storage_full_not_a_crash(tmp_path) -> None:
    """LMDB's map size reached: the commit fails as a full store (507 StorageFull), the
    registry stays open and serves reads. (The default map is 1 TiB; this one is 1 MiB.)"""
    from buckets.errors import StorageFull

    reg = Registry(str(tmp_path / "reg"), cache_size=0, sync=False, map_size=1 << 20)
    reg.start()
    try:
        await reg.commit(buckets("b"))
        stored = 0
        with pytest.raises(StorageFull):
            for i in range(10_000):
                await reg.commit([Op("put_object", "b", f"key-{i:05d}-" + "x" * 200,
                                     value=entry(size=i, etag="e" * 32))])
                stored = i + 1
        assert stored > 100
        assert reg.get_object("b", "key-00000-" + "x" * 200)["size"] == 0
    finally:
        await reg.close()


def test_an_lmdb_io_error_on_a_disk_out_of_space_is_storage_full(tmp_path, monkeypatch) -> None:
    """LMDB reports a page it could not write for want of space as an I/O error (seen on a
    tmpfs filled to its last block): told apart from a real I/O error by the disk's free space."""
    import os

    import lmdb

    from buckets.errors import StorageFull
    from buckets.registry import store

    error = lmdb.Error("mdb_txn_commit: Input/output error")
    assert store._typed_failure(error, str(tmp_path)) is error  # this disk has room: an I/O error
    real = os.statvfs(str(tmp_path))
    full = os.statvfs_result((real.f_bsize, real.f_frsize, real.f_blocks, 0, 0, real.f_files, real.f_ffree,
                              real.f_favail, real.f_flag, real.f_namemax))
    monkeypatch.setattr(store.os, "statvfs", lambda path: full)
    assert isinstance(store._typed_failure(error, str(tmp_path)), StorageFull)


async def test_a_put_or_delete_reports_the_entry_it_replaced(registry) -> None:
    """A PUT learns which write it replaced from its commit (read in the same write
    transaction), not from a lookup before it; a long key (several entries under one LMDB
    record) too."""
    long_key = "k" * (LONG + 10)
    for key in ("k", long_key):
        first = Op("put_object", "b", key, dict(entry(), wid="w1"))
        await registry.commit([first])
        assert first.result is None
        second = Op("put_object", "b", key, dict(entry(), wid="w2"))
        await registry.commit([second])
        assert second.result["wid"] == "w1"
        gone = Op("delete_object", "b", key)
        await registry.commit([gone])
        assert gone.result["wid"] == "w2"
        again = Op("delete_object", "b", key)
        await registry.commit([again])
        assert again.result is None


async def test_a_registry_is_read_through_after_a_stop_that_did_not_close_it(tmp_path, monkeypatch) -> None:
    """``running.pid`` marks a registry open; a clean close removes it. A large registry is
    read through before the next open only when the mark was left behind (a kill, a crash, a
    SIGBUS); a small one always. ``read_through`` reads every byte of its files."""
    path = str(tmp_path / "reg")
    reg = Registry(path, sync=False)
    reg.start()
    await reg.commit(buckets("b1"))
    assert (tmp_path / "reg" / "running.pid").read_text().strip() == str(os.getpid())
    assert registry_store.needs_read_through(path) == (True, str(os.getpid()))  # as after kill -9
    await reg.close()
    assert not (tmp_path / "reg" / "running.pid").exists()
    assert registry_store.needs_read_through(path) == (True, None)  # small: always
    monkeypatch.setattr(registry_store, "READ_THROUGH_ALWAYS_BELOW", 0)
    assert registry_store.needs_read_through(path) == (False, None)  # large, closed cleanly
    progress = [0]
    registry_store.read_through(path, progress)
    assert progress[0] == os.path.getsize(os.path.join(path, "data.mdb"))  # (its lock is in memory: below)
    assert registry_store.needs_read_through(str(tmp_path / "none")) == (False, None)


# -- the reader table in memory ---------------------------------------------------------------

def memory_locks(directory: str) -> list[str]:
    """This process's lock files in the tmpfs ``directory``: other processes (servers that the
    other test workers start) open registries of their own at any moment."""
    return sorted(n for n in os.listdir(directory) if n.startswith(f"buckets-registry-{os.getpid()}-"))


async def test_the_reader_table_is_kept_in_memory_not_in_the_registrys_directory(tmp_path) -> None:
    """LMDB's ``lock.mdb`` is written at every read transaction: on the registry's disk, a read
    waited while that file system was frozen (``tests/faults/test_faults_eio.py``). It lives in
    an unlinked tmpfs file instead: nothing in the directory, nothing left on the tmpfs."""
    shm = registry_store._memory_lock_dir()
    if shm is None:
        pytest.skip("no writable tmpfs here (/dev/shm, /run)")
    before = memory_locks(shm)
    path = tmp_path / "reg"
    path.mkdir()
    (path / "lock.mdb").write_bytes(b"\0" * 8192)  # as an older release left it
    reg = Registry(str(path), cache_size=10, sync=False)
    reg.start()
    await reg.commit(buckets("b1"))
    assert not os.path.lexists(path / "lock.mdb") and sorted(os.listdir(path)) == ["data.mdb", "running.pid"]
    held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.islink(f"/proc/self/fd/{fd}")]
    assert any(link.startswith(f"{shm}/buckets-registry-") and link.endswith("(deleted)") for link in held), held
    assert memory_locks(shm) == before
    with reg.env.begin(db=reg.db["buckets"]) as txn:
        assert txn.get(b"b1") is not None
    await reg.close()
    again = Registry(str(path), cache_size=10, sync=False)  # reopened: a new table, the data as it was
    assert "b1" in again.buckets and not os.path.lexists(path / "lock.mdb")
    again.env.close()
    assert memory_locks(shm) == before


def test_lock_files_left_by_processes_that_died_are_swept(tmp_path) -> None:
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    for pid in (dead, os.getpid()):
        (tmp_path / f"buckets-registry-{pid}-x.lock").write_bytes(b"")
    (tmp_path / "other.lock").write_bytes(b"")
    registry_store._sweep_memory_locks(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [f"buckets-registry-{os.getpid()}-x.lock", "other.lock"]


def test_without_a_tmpfs_the_reader_table_stays_beside_the_registry(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(registry_store, "_memory_lock_dir", lambda: None)
    path = tmp_path / "reg"
    path.mkdir()
    os.symlink("/dev/shm/buckets-registry-1-gone.lock", path / "lock.mdb")  # left by a process that had one
    reg = Registry(str(path), cache_size=10, sync=False)
    assert (path / "lock.mdb").is_file() and not (path / "lock.mdb").is_symlink()
    assert not os.path.lexists("/dev/shm/buckets-registry-1-gone.lock")
    reg.env.close()
