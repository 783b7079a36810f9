"""Versions with a generation: ``[hlc, wid, gen]`` (an entry the migration moved) against
``[hlc, wid]``, in the registry's last-writer-wins merge, its tombstones, the anti-entropy
digests, and ``ReplicatedIndex.put_version`` (the migration's compare-and-set) on three
in-process replicas."""

from __future__ import annotations

import pytest

from buckets import errors
from buckets.registry.digests import range_digests
from buckets.cluster.index import IndexReplica, ReplicatedIndex
from buckets.registry import Op, Registry
from buckets.registry.store import entry_version, version_tuple

NODES = ["n1", "n2", "n3"]


@pytest.fixture
async def registry(tmp_path):
    reg = Registry(str(tmp_path / "r"), cache_size=100, sync=False)
    reg.start()
    yield reg
    await reg.close()


def entry(wid: str, ts: list | None = None, size: int = 1) -> dict:
    e = {"wid": wid, "size": size, "etag": "e", "mt": 1.0, "vid": "null"}
    return e if ts is None else dict(e, ts=ts)


async def merge(reg: Registry, ts: list, *, tomb: bool = False, key: str = "k") -> bool:
    op = Op("merge_object", "b", key, value=None if tomb else entry(str(ts[1]), ts), ts=tuple(ts))
    await reg.commit([op])
    return op.applied


# (stored version, stored is a tombstone, incoming version, incoming is a tombstone, incoming applied)
ORDER = [
    ([10, "a"], False, [10, "a", 2], False, True),     # the move replaces exactly the version it moved
    ([10, "a", 2], False, [10, "a"], False, False),    # ... and the version it moved never comes back
    ([10, "a", 2], False, [10, "a", 3], False, True),  # a later generation's move wins
    ([10, "a", 3], False, [10, "a", 2], False, False),  # an earlier generation's (stale) move loses
    ([10, "a", 2], False, [10, "a", 2], False, False),  # the same version twice: applied once
    ([10, "a"], False, [11, "b"], False, True),         # sanity: plain versions as before
    ([10, "a", 2], False, [11, "b"], False, True),     # a newer overwrite beats a moved entry
    ([11, "b"], False, [10, "a", 9], False, False),     # a move of an overwritten version loses
    ([11, "a"], True, [10, "a", 2], False, False),      # a move of a deleted version loses to the delete
    ([10, "a", 2], False, [11, "a"], True, True),       # a delete after the move wins
    ([10, "a"], True, [10, "a", 2], True, True),        # a moved tombstone replaces the tombstone
    ([10, "a", 2], True, [10, "a"], False, False),      # ... and the older one cannot come back
    ([10, "a", 2], True, [10, "a", 3], False, True),
    ([10, "b"], False, [10, "a", 7], False, False),     # same clock, wid decides before gen
]


@pytest.mark.parametrize("stored, stored_tomb, incoming, incoming_tomb, applied", ORDER)
async def test_version_order_in_the_registry(registry, stored, stored_tomb, incoming, incoming_tomb,
                                             applied) -> None:
    assert await merge(registry, stored, tomb=stored_tomb)
    assert await merge(registry, incoming, tomb=incoming_tomb) is applied
    winner, winner_tomb = (incoming, incoming_tomb) if applied else (stored, stored_tomb)
    got, version = registry.get_version("b", "k")
    assert version == version_tuple(winner)
    assert (got is None) is winner_tomb
    if got is not None:
        assert entry_version(got) == version_tuple(winner)
    assert registry.bucket_versions("b") == [("k", version_tuple(winner), winner_tomb)]


@pytest.mark.parametrize("a, b", [((10, "a"), (10, "a", 1)), ((10, "a", 1), (10, "a", 2)),
                                  ((10, "a", 99), (11, "a")), ((10, "a", 5), (10, "b"))])
def test_version_tuples_order(a, b) -> None:
    assert version_tuple(list(a)) < version_tuple(list(b))
    assert version_tuple(["10", "a", "3"]) == (10, "a", 3)  # wire values are normalised


def test_entry_version_keeps_the_generation() -> None:
    assert entry_version(entry("w", [5, "w", 4])) == (5, "w", 4)
    assert entry_version(entry("w", [5, "w"])) == (5, "w")
    assert entry_version({"wid": "w", "mt": 2.0}) == (2000 << 16, "w")


def test_digests_tell_a_moved_version_from_the_one_it_moved() -> None:
    plain = range_digests([("k", (5, "w"), False)], 8)
    moved = range_digests([("k", (5, "w", 2), False)], 8)
    assert plain != moved
    assert moved != range_digests([("k", (5, "w", 3), False)], 8)
    # The digest of a plain version is what it always was (replicas agree across versions).
    import xxhash
    idx = xxhash.xxh3_64_intdigest(b"k") % 8
    assert plain[idx] == xxhash.xxh3_64_intdigest(b"k\x005\x00w\x000")


async def test_tombstones_with_a_generation_survive_and_expire(registry) -> None:
    assert await merge(registry, [10, "a", 2], tomb=True, key="t")
    assert registry.get_version("b", "t") == (None, (10, "a", 2))
    assert registry.old_tombstones("b", 11, 10) == [("t", (10, "a", 2))]  # (its version's clock is 10)
    forget = Op("forget_tombstone", "b", "t", ts=(10, "a", 2))
    await registry.commit([forget])
    assert forget.applied and registry.get_version("b", "t") == (None, None)


# -- put_version on three replicas ---------------------------------------------------------------
class Net:
    def __init__(self, replicas: dict[str, IndexReplica]) -> None:
        self.replicas = replicas
        self.down: set[str] = set()

    def transport_for(self, src: str):
        async def call(node: str, method: str, args: dict):
            if node in self.down or src in self.down:
                raise errors.ServiceUnavailable(f"{node} unreachable")
            return await self.replicas[node].handlers()[method](args)
        return call


@pytest.fixture
async def trio(tmp_path):
    regs = {}
    for n in NODES:
        regs[n] = Registry(str(tmp_path / n), cache_size=100, sync=False)
        regs[n].start()
    replicas = {n: IndexReplica(r) for n, r in regs.items()}
    net = Net(replicas)
    idx = {n: ReplicatedIndex(n, replicas[n], net.transport_for(n), lambda bucket: list(NODES)) for n in NODES}
    yield net, idx, regs
    for i in idx.values():
        await i.close()
    for r in regs.values():
        await r.close()


async def test_put_version_commits_the_moved_entry_and_is_idempotent(trio) -> None:
    net, idx, regs = trio
    written = await idx["n1"].put("b", "k", entry("w1"))
    moved = dict(written, disks=["d9", "d8"], gen=2)
    ts = written["ts"] + [2]
    assert await idx["n2"].put_version("b", "k", moved, ts) is True
    got = await idx["n3"].get("b", "k")
    assert got["disks"] == ["d9", "d8"] and got["ts"] == ts
    # A retry (the coordinator did not see the answer) finds exactly its version: still True.
    assert await idx["n3"].put_version("b", "k", moved, ts) is True
    # The version it moved, arriving late, cannot undo the move.
    stale = {"bucket": "b", "key": "k", "entry": written, "data": None, "ts": written["ts"]}
    assert (await idx["n1"].local.merge(stale))["applied"] is False


async def test_put_version_loses_to_a_concurrent_overwrite_or_delete(trio) -> None:
    net, idx, regs = trio
    first = await idx["n1"].put("b", "k", entry("w1"))
    await idx["n1"].put("b", "k", entry("w2"))  # overwritten before the move commits
    assert await idx["n2"].put_version("b", "k", dict(first, gen=2), first["ts"] + [2]) is False
    assert (await idx["n3"].get("b", "k"))["wid"] == "w2"

    gone = await idx["n1"].put("b", "d", entry("w3"))
    assert (await idx["n2"].get("b", "d"))["wid"] == "w3"  # as the engine does: read, then delete
    await idx["n2"].delete("b", "d", "w3")
    assert await idx["n3"].put_version("b", "d", dict(gone, gen=2), gone["ts"] + [2]) is False
    assert await idx["n1"].get("b", "d") is None


async def test_put_version_with_a_newer_write_on_one_reachable_replica_is_false(trio) -> None:
    net, idx, regs = trio
    first = await idx["n1"].put("b", "k", entry("w1"))
    net.down = {"n3"}
    await idx["n1"].put("b", "k", entry("w2"))  # on n1 and n2 only
    net.down = {"n2"}  # n1 (newer) and n3 (the moved version's base) answer
    assert await idx["n3"].put_version("b", "k", dict(first, gen=2), first["ts"] + [2]) is False
    net.down = set()
    assert (await idx["n3"].get("b", "k"))["wid"] == "w2"


async def test_put_version_without_a_quorum_is_an_open_outcome(trio) -> None:
    net, idx, regs = trio
    first = await idx["n1"].put("b", "k", entry("w1"))
    net.down = {"n2", "n3"}
    with pytest.raises(errors.WriteQuorumLost):
        await idx["n1"].put_version("b", "k", dict(first, gen=2), first["ts"] + [2])
    # It reached n1 and may still spread: anti-entropy carries it to the others.
    net.down = set()
    assert await idx["n2"].sync_bucket("b") == 1
    assert regs["n2"].get_version("b", "k")[1] == tuple(first["ts"]) + (2,)
    assert await idx["n2"].put_version("b", "k", dict(first, gen=2), first["ts"] + [2]) is True


async def test_drop_entries_forgets_one_bucket_only(registry) -> None:
    for i in range(30):
        assert await merge(registry, [10 + i, f"w{i}"], key=f"k{i:02d}")
    long_key = "x" * 700  # filed in a shared record for long keys
    assert await merge(registry, [5, "wl"], key=long_key)
    assert await merge(registry, [9, "wt"], tomb=True, key="gone")
    keep = Op("merge_object", "b\x01uploads", "u1", value=entry("u1", [3, "u1"]), ts=(3, "u1"))
    other = Op("merge_object", "bb", "k", value=entry("o", [3, "o"]), ts=(3, "o"))
    await registry.commit([keep, other])
    registry.get_object("b", "k00")  # cached
    dropped = await registry.drop_entries("b", batch=7)
    assert dropped == 31
    assert registry.bucket_versions("b") == []
    assert registry.get_object("b", "k00") is None and registry.get_object("b", long_key) is None
    assert registry.usage.get("b", [0, 0]) == [0, 0]
    assert registry.get_object("b\x01uploads", "u1") is not None and registry.get_object("bb", "k") is not None
    assert await registry.drop_entries("b") == 0
