"""Key locks of the cluster index's replicas (``lock_key`` / ``unlock_key``): while a
conditional write holds one, no other write of the key merges; the write's own commit (a
merge carrying the lock's id) ends it; an expired lock counts as none; locks are durable."""

from __future__ import annotations

import time

import pytest

from buckets import errors
from buckets.registry import Op, Registry
from buckets.registry.store import NOT_JUDGED


def entry(wid: str, hlc: int) -> dict:
    return {"wid": wid, "size": 1, "etag": wid, "mt": 1.0, "vid": "null", "ts": [hlc, wid]}


def merge(wid: str | None, hlc: int, lock: str | None = None, key: str = "k") -> Op:
    return Op("merge_object", "b", key, value=entry(wid, hlc) if wid else None, ts=(hlc, wid or "tomb"), lock=lock)


def lock(lock_id: str, ttl: float = 10.0, key: str = "k") -> Op:
    return Op("lock_key", "b", key, value={"id": lock_id, "until": time.time() + ttl})


@pytest.fixture
async def reg(tmp_path):
    r = Registry(str(tmp_path / "reg"), cache_size=100, sync=False)
    r.start()
    await r.commit([Op("put_bucket", "b", value={"created": 1.0})])
    yield r
    if r.is_open:
        await r.close()


async def test_a_lock_answers_what_the_replica_holds(reg) -> None:
    op = lock("L1")
    await reg.commit([op])
    assert op.result == (None, None, NOT_JUDGED)
    await reg.commit([Op("unlock_key", "b", "k", value={"id": "L1"})])
    await reg.commit([merge("w1", 100)])
    op = lock("L2")
    await reg.commit([op])
    assert op.result[0]["wid"] == "w1" and op.result[1] == (100, "w1")
    await reg.commit([Op("unlock_key", "b", "k", value={"id": "L2"})])
    await reg.commit([merge(None, 200)])  # a delete: the lock sees its tombstone's version
    op = lock("L3")
    await reg.commit([op])
    assert op.result == (None, (200, "tomb"), NOT_JUDGED)
    await reg.commit([Op("unlock_key", "b", "k", value={"id": "L3"})])
    # A conditional delete's tombstone (a commit under the lock) keeps the version its check
    # judged; a lock (and ``held_judged``) answers it.
    await reg.commit([lock("L4")])
    deleted = merge(None, 300, lock="L4")
    deleted.judging, deleted.judged = True, (200, "tomb")
    await reg.commit([deleted])
    op = lock("L5")
    await reg.commit([op])
    assert op.result == (None, (300, "tomb"), (200, "tomb"))
    assert reg.held_judged("b", "k") == (None, (300, "tomb"), (200, "tomb"))
    assert reg.get_version("b", "k") == (None, (300, "tomb"))


async def test_other_writes_wait_while_the_lock_holders_commit_ends_it(reg) -> None:
    await reg.commit([merge("w1", 100)])
    await reg.commit([lock("L1")])
    with pytest.raises(errors.KeyLocked) as exc:
        await reg.commit([merge("u", 150)])  # an unconditional write of the key
    assert exc.value.until > time.time()
    with pytest.raises(errors.KeyLocked):
        await reg.commit([lock("L2")])  # another conditional write
    with pytest.raises(errors.KeyLocked):
        await reg.commit([merge("w1", 100)])  # even a read's write-back of what is there
    await reg.commit([merge("other", 150, key="k2")])  # other keys are not held
    assert reg.get_object("b", "k")["wid"] == "w1"
    holder = merge("c", 200, lock="L1")
    await reg.commit([holder])
    assert holder.applied and reg.get_object("b", "k")["wid"] == "c"
    late = merge("u", 150)  # the waiting write, older than the commit: refused as LWW says
    await reg.commit([late])
    assert not late.applied
    await reg.commit([merge("u2", 300)])
    assert reg.get_object("b", "k")["wid"] == "u2"


async def test_unlock_needs_the_locks_id_and_an_expired_lock_is_none(reg) -> None:
    await reg.commit([lock("L1")])
    await reg.commit([Op("unlock_key", "b", "k", value={"id": "someone-else"})])
    with pytest.raises(errors.KeyLocked):
        await reg.commit([merge("u", 100)])
    await reg.commit([Op("unlock_key", "b", "k", value={"id": "L1"})])
    await reg.commit([merge("u", 100)])
    await reg.commit([lock("L2", ttl=-1.0)])  # its writer died long ago
    await reg.commit([merge("u2", 200)])
    assert reg.get_object("b", "k")["wid"] == "u2"
    stale_commit = merge("c", 300, lock="L2")  # the stalled writer's late commit: a plain merge now
    await reg.commit([stale_commit])
    assert stale_commit.applied


async def test_a_lock_survives_a_restart(tmp_path) -> None:
    path = str(tmp_path / "reg")
    r = Registry(path, cache_size=100, sync=True)
    r.start()
    await r.commit([Op("put_bucket", "b", value={"created": 1.0}), lock("L1", key="k" * 600)])
    await r.close()
    r = Registry(path, cache_size=100, sync=True)
    r.start()
    try:
        with pytest.raises(errors.KeyLocked):
            await r.commit([merge("u", 100, key="k" * 600)])  # a long key's lock is filed by hash
        await r.commit([merge("c", 200, lock="L1", key="k" * 600)])
        assert r.get_object("b", "k" * 600)["wid"] == "c"
    finally:
        await r.close()


class _CommitAfterFirstRead:
    """The registry's LMDB environment, except that the first read transaction begun on it is
    followed, once it ends, by ``commit`` (as the committer thread's commit may land between
    two reads on the event loop)."""

    def __init__(self, env, commit) -> None:
        self._env, self._commit = env, commit

    def __getattr__(self, name):
        return getattr(self._env, name)

    def begin(self, *args, **kwargs):
        txn = self._env.begin(*args, **kwargs)
        if kwargs.get("write") or self._commit is None:
            return txn
        commit, self._commit = self._commit, None

        class Ending:
            def __enter__(self):
                return txn.__enter__()

            def __exit__(self, *exc):
                ended = txn.__exit__(*exc)
                commit()
                return ended
        return Ending()


async def test_a_key_read_while_a_write_replaces_its_tombstone_is_never_unwritten(reg) -> None:
    """A replica index answers a key's version with ``get_version``: read in two transactions
    (the entry, then the tombstone), a commit landing between them that put an entry in place
    of the tombstone made the key read as never written: a reader took that replica for one
    the key's writes had not reached and returned an older version (a lossy history, session
    28). One snapshot: the tombstone or the entry, never neither."""
    await reg.commit([merge("w1", 5)])
    await reg.commit([merge(None, 10)])  # deleted: a tombstone at version 10
    env = reg.env
    reg.env = _CommitAfterFirstRead(env, lambda: reg._apply([[merge("w2", 20)]]))
    try:
        entry, version = reg.get_version("b", "k")
    finally:
        reg.env = env
    assert version in ((10, "tomb"), (20, "w2")), (entry, version)
    assert reg.get_version("b", "k")[1] == (20, "w2")
