"""The replicated object index: quorums overlap, last writer wins, tombstones, read repair,
anti-entropy, merged listings.

Three replicas with their own LMDB registries in one process; the transport calls the other
replica's handlers directly and can be cut per node (a node down, or a partition).
"""

from __future__ import annotations

import asyncio

import pytest

from buckets import errors
from buckets.cluster import index as index_module
from buckets.registry.digests import range_digests
from buckets.cluster.index import HybridClock, IndexReplica, Quorum, ReplicatedIndex
from buckets.cluster.rpcerrors import PeerOffline
from buckets.registry import Op, Registry

NODES = ["n1", "n2", "n3"]


class Net:
    def __init__(self, replicas: dict[str, IndexReplica]) -> None:
        self.replicas = replicas
        self.down: set[str] = set()
        self.calls = 0
        self.held: dict[str, asyncio.Event] = {}  # merges to these nodes wait for their event
        self.before = None  # async (src, node, method, args) awaited before each call is delivered

    def transport_for(self, src: str):
        async def call(node: str, method: str, args: dict):
            self.calls += 1
            if node in self.down or src in self.down:
                raise PeerOffline(f"{node} is offline")  # as the real transport: nothing sent
            if method == "merge" and node in self.held:
                await self.held[node].wait()
            if self.before is not None:
                await self.before(src, node, method, args)
            return await self.replicas[node].handlers()[method](args)
        return call


async def start_trio(tmp_path, walls: dict | None = None, **options):
    """Three replicas of bucket ``b``; ``walls``: a node's wall clock, by node (default: the real
    one); ``options``: ``ReplicatedIndex``'s (``leases``, ``lease_seconds``)."""
    regs = {}
    for n in NODES:
        reg = Registry(str(tmp_path / n), cache_size=100, sync=False)
        reg.start()
        await reg.commit([Op("put_bucket", "b", value={"created": 1.0})])
        regs[n] = reg
    replicas = {n: IndexReplica(r) for n, r in regs.items()}
    net = Net(replicas)
    idx = {n: ReplicatedIndex(n, replicas[n], net.transport_for(n), lambda bucket: list(NODES),
                              clock=HybridClock(walls[n]) if walls else None, **options)
           for n in NODES}
    return net, idx, regs


async def stop_trio(idx, regs) -> None:
    for i in idx.values():
        await i.close()
    for r in regs.values():
        await r.close()


@pytest.fixture
async def cluster(tmp_path):
    # Quorum reads and writes as they are without read leases (test_index_leases.py has those).
    net, idx, regs = await start_trio(tmp_path, leases=False)
    yield net, idx, regs
    await stop_trio(idx, regs)


async def settle(idx: dict[str, ReplicatedIndex]) -> None:
    """Wait for the writes still reaching their last replica (a put returns at W of N)."""
    await asyncio.gather(*(t for i in idx.values() for t in list(i._background)), return_exceptions=True)


def entry(wid: str, size: int = 1, etag: str = "e") -> dict:
    return {"wid": wid, "size": size, "etag": etag, "mt": 1.0, "vid": "null"}


def test_quorum_sizes_overlap() -> None:
    for n in range(1, 8):
        q = Quorum.for_replicas(n)
        assert q.r + q.w > n and 2 * q.w > n
    assert Quorum.for_replicas(3) == Quorum(3, 2, 2)
    assert Quorum.for_replicas(1) == Quorum(1, 1, 1)


def test_hybrid_clock_is_monotonic_and_follows_remote() -> None:
    t = [1000.0]
    clock = HybridClock(lambda: t[0])
    a = clock.now()
    t[0] = 999.0  # the wall clock steps back
    b = clock.now()
    assert b > a
    clock.observe(b + (10_000 << 16))  # a peer ten seconds ahead
    assert clock.now() > b + (10_000 << 16)


async def test_a_node_clock_passes_every_version_its_replica_merges(tmp_path) -> None:
    """Every node's wall clock reads the same: a PUT through n2 right after one through n1
    would get the same clock value and, with a smaller write id, an older version, refused
    and merged again. The version n2's replica merged moves n2's clock first."""
    net, idx, regs = await start_trio(tmp_path, {n: (lambda: 1000.0) for n in NODES}, leases=False)
    try:
        await idx["n1"].put_displacing("b", "k", entry("w2"))
        await settle(idx)
        calls = net.calls
        await idx["n2"].put_displacing("b", "k", entry("w1"))  # ("w1" < "w2")
        await settle(idx)
        assert net.calls - calls == 2  # its two peers' merges, once: nothing refused it
        assert {held(regs, n)[0] for n in NODES} == {"w1"}
        assert held(regs, "n1")[1] > (1000_000 << 16, "w2")
    finally:
        await stop_trio(idx, regs)


async def test_write_with_one_replica_down_is_read_through_any_other_quorum(cluster) -> None:
    net, idx, regs = cluster
    net.down = {"n3"}
    await idx["n1"].put("b", "k", entry("w1"))
    net.down = {"n1"}  # the writer's replica is lost; n2 and n3 form the read quorum
    got = await idx["n3"].get("b", "k")
    assert got is not None and got["wid"] == "w1"
    await asyncio.gather(*idx["n3"]._background)  # the read repair, sent in the background, has landed
    assert regs["n3"].get_object("b", "k")["wid"] == "w1"
    assert idx["n3"].read_repairs >= 1


async def new_on_n1_only(idx: dict[str, ReplicatedIndex]) -> None:
    """Key ``k``: version "old" on every replica, then "new" on n1 alone (a write in flight)."""
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    version = [idx["n1"].clock.now(), "new"]
    await idx["n1"].local.merge({"bucket": "b", "key": "k", "entry": dict(entry("new"), ts=version), "data": None,
                                 "ts": version})


async def test_a_read_that_met_a_write_in_flight_writes_it_back_before_it_answers(cluster) -> None:
    """A write on one replica of three (still in flight): a read of it and a stale replica
    returns the new version; a later read of the two other replicas must not return the old
    one, so the first read puts the new version on a write quorum before it answers."""
    net, idx, regs = cluster
    await new_on_n1_only(idx)
    net.down = {"n3"}
    net.held = {"n2": asyncio.Event()}  # the write-back to n2 is slow
    first = asyncio.ensure_future(idx["n1"].get("b", "k"))  # asks n1 (new) and n2 (old)
    await asyncio.sleep(0.05)
    assert not first.done()  # it waits until a quorum holds what it is about to return
    net.held["n2"].set()
    assert (await first)["wid"] == "new"
    assert regs["n2"].get_object("b", "k")["wid"] == "new"
    net.down, net.held = {"n1"}, {}
    assert (await idx["n3"].get("b", "k"))["wid"] == "new"  # n2 and n3: the new version still


async def test_a_read_whose_write_back_finds_no_quorum_fails_and_does_not_answer(cluster) -> None:
    net, idx, _ = cluster
    await new_on_n1_only(idx)
    net.down = {"n3"}

    async def refuse(args: dict) -> dict:  # n2 answers reads but its merges fail
        raise errors.ServiceUnavailable("n2's registry is failing")

    net.replicas["n2"].merge = refuse  # type: ignore[method-assign]
    with pytest.raises(errors.ReadQuorumLost):
        await idx["n1"].get("b", "k")


async def test_no_quorum_fails_clearly_and_never_half_answers(cluster) -> None:
    net, idx, _ = cluster
    net.down = {"n2", "n3"}
    with pytest.raises(errors.WriteQuorumLost):
        await idx["n1"].put("b", "k", entry("w1"))
    with pytest.raises(errors.ReadQuorumLost):
        await idx["n1"].get("b", "k")


async def test_last_writer_wins_and_tombstones_hide_older_writes(cluster) -> None:
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("w1"))
    net.down = {"n3"}
    # The engine reads an entry before it deletes it (the shards to remove): that read is what
    # makes the deleting node's clock pass the put's version, even when n2's own copy of the
    # put is still in flight and both writes fall in the same millisecond.
    assert (await idx["n2"].get("b", "k"))["wid"] == "w1"
    await idx["n2"].delete("b", "k", "w1")
    net.down = {"n1"}
    # n3 still has w1; n2 has the tombstone, which is newer: the key is gone.
    assert await idx["n3"].get("b", "k") is None
    net.down = set()
    # A late, older write (e.g. a delayed replica message) cannot resurrect the key.
    stale = {"bucket": "b", "key": "k", "entry": entry("w0"), "data": None, "ts": [1, "w0"]}
    assert (await idx["n1"].local.merge(stale))["applied"] is False
    assert await idx["n1"].get("b", "k") is None


async def test_anti_entropy_converges_every_replica(cluster) -> None:
    net, idx, regs = cluster
    net.down = {"n3"}
    for i in range(50):
        await idx["n1"].put("b", f"k{i:03d}", entry(f"w{i}"))
    for i in range(0, 50, 5):
        await idx["n1"].delete("b", f"k{i:03d}", f"w{i}")
    net.down = set()
    assert regs["n3"].count_objects() == 0
    repaired = await idx["n3"].sync_bucket("b")
    assert repaired == 50  # 40 live entries and 10 tombstones
    assert regs["n3"].count_objects() == 40
    assert await idx["n3"].sync_bucket("b") == 0  # converged: digests agree
    digests = [(await idx[n].local.digest({"bucket": "b"}))["digest"] for n in NODES]
    assert digests[0] == digests[1] == digests[2]


async def test_anti_entropy_exchanges_only_the_ranges_that_stay_different(cluster, monkeypatch) -> None:
    """Each range exchanged costs both replicas a scan of the bucket (``versions``). A range
    that differs only while a write is still on its way to one replica is equal again at the
    next comparison and is not exchanged; one where a replica really lacks a write is."""
    from buckets.cluster import index

    net, idx, regs = cluster
    monkeypatch.setattr(index, "SETTLE_SECONDS", 0.05)
    for i in range(20):
        await idx["n1"].put("b", f"k{i:03d}", entry(f"w{i}"))
    await settle(idx)
    asked: list[str] = []

    async def count(src, node, method, args):
        asked.append(method)

    # In flight: n1 holds a write that reaches n3 after the first comparison
    late = {"bucket": "b", "key": "late", "entry": entry("wl"), "data": None, "ts": [idx["n1"].clock.now(), "wl"]}
    await idx["n1"].local.merge(late)

    async def arrive(src, node, method, args):
        asked.append(method)
        if asked.count("digest") == 3:
            await idx["n3"].local.merge(late)

    net.before = arrive
    assert await idx["n2"].exchange("b", "n1", "n3", settle=2) == 0
    assert "versions" not in asked and asked.count("digest") == 4
    net.before = count
    # Without the settle (an index move's copy) the same difference is exchanged at once
    await idx["n1"].local.merge(dict(late, key="late2"))
    asked.clear()
    assert await idx["n2"].exchange("b", "n1", "n3") == 1
    assert asked.count("versions") == 2
    # A difference that stays is exchanged after the comparisons
    await idx["n1"].local.merge(dict(late, key="late3"))
    asked.clear()
    assert await idx["n2"].exchange("b", "n1", "n3", settle=2) == 1
    assert asked.count("digest") == 6 and asked.count("versions") == 2
    assert (await idx["n3"].local.digest({"bucket": "b"}))["digest"] == \
        (await idx["n1"].local.digest({"bucket": "b"}))["digest"]


async def test_listing_merges_replicas_and_resolves_disagreement(cluster) -> None:
    net, idx, regs = cluster
    for i in range(20):
        await idx["n1"].put("b", f"a/{i:02d}", entry(f"w{i}"))
    net.down = {"n3"}
    await idx["n1"].delete("b", "a/05", "w5")
    await idx["n1"].put("b", "a/99", entry("w99"))
    net.down = {"n1"}  # n2 (fresh) and n3 (stale: has a/05, lacks a/99) answer
    objects, prefixes, truncated = await idx["n3"].list("b", prefix="a/")
    keys = [k for k, _ in objects]
    assert "a/05" not in keys and "a/99" in keys and len(keys) == 20 and not truncated
    # Paging with a small limit walks every key exactly once.
    seen, after = [], ""
    while True:
        objects, _, truncated = await idx["n3"].list("b", start_after=after, limit=3)
        seen += [k for k, _ in objects]
        if not truncated:
            break
        after = objects[-1][0]
    assert seen == sorted(keys)
    objects, prefixes, _ = await idx["n3"].list("b", delimiter="/")
    assert objects == [] and prefixes == ["a/"]


async def test_a_node_outside_the_replica_set_gets_a_small_objects_bytes_with_its_entry(cluster, tmp_path) -> None:
    """A GET through a node that holds no replica of the bucket (asking a read quorum, not a
    lease holder): the quorum's answers carry the registry's copy of a small object's bytes,
    so the GET reads no disk; the copy is keyed by write id, so an overwrite is never answered
    with the old bytes. (With a read lease: ``test_index_leases``.)"""
    net, idx, _ = cluster
    reg = Registry(str(tmp_path / "n4"), cache_size=100, sync=False)
    reg.start()
    try:
        outside = ReplicatedIndex("n4", IndexReplica(reg), net.transport_for("n4"), lambda bucket: list(NODES),
                                  leases=False)
        small = dict(entry("w1"), inline=True)
        await idx["n1"].put("b", "k", small, b"tiny bytes")
        await settle(idx)
        calls = net.calls
        got = await outside.get("b", "k")
        assert got["wid"] == "w1" and net.calls - calls == 2  # one read quorum, in parallel
        assert outside.small_copy("b", "k", "w1") == b"tiny bytes"
        await idx["n2"].put("b", "k", dict(entry("w2"), inline=True), b"new bytes")
        got = await outside.get("b", "k")
        assert got["wid"] == "w2" and outside.small_copy("b", "k", "w2") == b"new bytes"
        assert outside.small_copy("b", "k", "w3") is None
        await idx["n2"].put("b", "big", entry("w9"))  # not inline: no bytes travel
        await outside.get("b", "big")
        assert outside.small_copy("b", "big", "w9") is None
        await outside.close()
    finally:
        await reg.close()


async def test_a_digest_does_not_hold_the_bucket_in_memory(tmp_path) -> None:
    """Anti-entropy digests every bucket each minute: the versions are folded as the LMDB
    cursor yields them, so memory does not grow with the bucket (20,000 keys here)."""
    import tracemalloc

    reg = Registry(str(tmp_path / "big"), cache_size=100, sync=False)
    reg.start()
    try:
        await reg.commit([Op("put_bucket", "big", value={"created": 1.0})])
        for start in range(0, 20_000, 2_000):
            await reg.commit([Op("merge_object", "big", f"key-{n:06d}", value=dict(entry(f"w{n}"), ts=[n + 1, f"w{n}"]),
                                 ts=(n + 1, f"w{n}")) for n in range(start, start + 2_000)])
        replica = IndexReplica(reg)
        as_list = range_digests(reg.bucket_versions("big"), 64)
        tracemalloc.start()
        try:
            answer = await replica.digest({"bucket": "big", "ranges": 64})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert answer["digest"] == as_list
        assert peak < 1_000_000, f"digest of 20,000 keys peaked at {peak} bytes"
    finally:
        await reg.close()


async def test_anti_entropy_exchanges_a_big_difference_in_batches(cluster, monkeypatch) -> None:
    """A replica that missed everything gets the other side's versions in batches of about
    VERSIONS_BATCH keys (by the digests' per-range counts), never the whole bucket at once."""
    import buckets.cluster.index as index_module

    monkeypatch.setattr(index_module, "VERSIONS_BATCH", 10)
    net, idx, regs = cluster
    net.down = {"n3"}
    for i in range(120):
        await idx["n1"].put("b", f"k{i:03d}", entry(f"w{i}"))
    net.down = set()
    answered: list[int] = []
    original = idx["n1"].local.versions

    async def counted(args: dict) -> dict:
        result = await original(args)
        answered.append(len(result["versions"]))
        return result

    monkeypatch.setattr(idx["n1"].local, "versions", counted)  # handlers() looks it up per call
    assert await idx["n3"].exchange("b", "n1", "n3") == 120
    assert regs["n3"].count_objects() == 120
    assert len(answered) > 5 and max(answered) < 30, answered  # batches of ~10 keys, not one of 120


# -- a PUT without a read first (put_displacing) -------------------------------------------------

async def test_a_put_without_a_read_learns_what_it_replaced(cluster) -> None:
    net, idx, regs = cluster
    assert await idx["n1"].put_displacing("b", "k", entry("w1")) == []  # a new key replaces nothing
    await settle(idx)
    calls = net.calls
    replaced = await idx["n2"].put_displacing("b", "k", entry("w2"))
    assert net.calls - calls <= 2  # the merges only: no read of the key first
    assert [e["wid"] for e in replaced] == ["w1"]
    assert replaced[0]["ts"] < (await idx["n3"].get("b", "k"))["ts"]
    await settle(idx)
    assert all(r.get_object("b", "k")["wid"] == "w2" for r in regs.values())
    # a tombstone replaced is no write to remove
    await idx["n3"].delete("b", "k", "w2")
    await settle(idx)
    assert await idx["n1"].put_displacing("b", "k", entry("w3")) == []


async def test_a_put_through_a_node_whose_clock_is_behind_still_comes_last(tmp_path) -> None:
    """Without the read, nothing made the writing node's clock pass the acknowledged write's
    version: the replicas' refusals do, and the write is merged again under a later version."""
    walls = {"n1": lambda: 2_000_000.0, "n2": lambda: 1_000_000.0, "n3": lambda: 2_000_000.0}  # n2: 11 days behind
    _net, idx, regs = await start_trio(tmp_path, walls)
    try:
        await idx["n1"].put("b", "k", entry("w1"))
        replaced = await idx["n2"].put_displacing("b", "k", entry("w2"))
        assert [e["wid"] for e in replaced] == ["w1"]
        for n in NODES:  # every read quorum, through every node, sees the later write
            assert (await idx[n].get("b", "k"))["wid"] == "w2"
        await settle(idx)
        assert all(r.get_object("b", "k")["wid"] == "w2" for r in regs.values())
    finally:
        await stop_trio(idx, regs)


async def test_a_replica_that_does_not_say_what_it_replaced_leaves_the_caller_unsure(cluster) -> None:
    net, idx, _ = cluster
    await idx["n1"].put("b", "k", entry("w1"))
    await settle(idx)
    plain = net.transport_for("n2")

    async def older_node(node: str, method: str, args: dict):  # answers as a node without "was" would
        ans = await plain(node, method, args)
        return {k: v for k, v in ans.items() if k != "was"} if method == "merge" else ans

    idx["n2"].transport = older_node
    assert await idx["n2"].put_displacing("b", "k", entry("w2")) is None
    assert (await idx["n3"].get("b", "k"))["wid"] == "w2"


# -- a PUT that reached no quorum is undone where it was merged (IndexReplica.retract) -------------

def held(regs, node: str, key: str = "k") -> tuple[str | None, tuple | None]:
    """(write id or None, version) of ``key`` on one replica's own registry."""
    got, version = regs[node].get_version("b", key)
    return (got["wid"] if got is not None else None), version


async def test_a_put_that_reached_no_quorum_is_undone_on_the_replica_that_took_it(cluster) -> None:
    """Two of three replicas down: the PUT through n1 merges on n1 alone and fails. Left
    there, anti-entropy would spread it once the others return, and a write the client was
    told failed would appear. The writer puts back what it replaced: an entry, a tombstone
    (its own version), or nothing."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("w1"))
    await idx["n1"].put("b", "gone", entry("g1"))
    await idx["n1"].delete("b", "gone", "g1")
    await settle(idx)
    before = {key: held(regs, "n1", key) for key in ("k", "gone")}
    net.down = {"n2", "n3"}
    for key in ("k", "gone", "new"):
        with pytest.raises(errors.WriteQuorumLost) as failed:
            await idx["n1"].put_displacing("b", key, entry(f"failed-{key}"))
        # taken back on n1, never sent to n2 or n3: its data can go now
        assert failed.value.undone is True
    assert held(regs, "n1", "k") == before["k"] and before["k"][0] == "w1"
    assert held(regs, "n1", "gone") == before["gone"] and before["gone"] == (None, before["gone"][1])
    assert before["gone"][1] is not None  # the tombstone itself came back, with its version
    assert held(regs, "n1", "new") == (None, None)
    assert regs["n1"].count_objects() == 1
    assert idx["n1"].retractions == 3 and idx["n1"].retract_misses == 0
    net.down = set()
    for n in NODES:
        await idx[n].sync_bucket("b")
    for n in NODES:
        assert (await idx[n].get("b", "k"))["wid"] == "w1"
        assert await idx[n].get("b", "gone") is None and await idx[n].get("b", "new") is None
        assert held(regs, n, "new") == (None, None)


async def test_a_failed_put_whose_merge_answer_was_lost_keeps_its_data(cluster) -> None:
    """A merge sent to n2 whose answer never came may have been applied there: the write is
    not known to be gone, so its data is left (to the entry, should it win; else the orphan
    sweep), however the other replicas answered."""
    net, idx, regs = cluster
    plain = net.transport_for("n1")

    async def lossy(node: str, method: str, args: dict):
        if node == "n3":
            raise PeerOffline("n3 is offline")
        ans = await plain(node, method, args)
        if method == "merge" and node == "n2":
            raise errors.ServiceUnavailable("the answer was lost")  # applied, answer lost
        return ans

    idx["n1"].transport = lossy
    with pytest.raises(errors.WriteQuorumLost) as failed:
        await idx["n1"].put_displacing("b", "k", entry("w2"))
    assert not failed.value.undone
    assert held(regs, "n1") == (None, None) and held(regs, "n2")[0] == "w2"


async def test_a_failed_second_attempt_keeps_the_data_its_first_attempt_may_point_at(tmp_path) -> None:
    """The first attempt is applied on n1 and refused by n2 and n3 (a newer write, which n1 had
    missed); the second fails (n2 and n3 gone) and is undone on n1, which puts back the first
    attempt's entry: the same write, its data still needed. So it is not "undone"."""
    walls = {"n1": lambda: 1_000_000.0, "n2": lambda: 2_000_000.0, "n3": lambda: 2_000_000.0}  # n1 behind
    net, idx, regs = await start_trio(tmp_path, walls)
    try:
        net.down = {"n1"}
        await idx["n2"].put("b", "k", entry("w1"))  # on n2 and n3 only
        net.down = set()
        plain = net.transport_for("n1")
        remote_merges = 0

        async def first_round_only(node: str, method: str, args: dict):
            nonlocal remote_merges
            if method == "merge" and node != "n1":
                remote_merges += 1
                if remote_merges > 2:
                    raise PeerOffline(f"{node} is offline")
            return await plain(node, method, args)

        idx["n1"].transport = first_round_only
        with pytest.raises(errors.WriteQuorumLost) as failed:
            await idx["n1"].put_displacing("b", "k", entry("w2"))
        assert held(regs, "n1")[0] == "w2"  # the first attempt's entry, put back by the undo
        assert not failed.value.undone
    finally:
        await stop_trio(idx, regs)


async def test_a_retract_leaves_a_key_that_moved_on_alone(cluster) -> None:
    """The undo is conditional: a newer write merged since stays."""
    net, idx, regs = cluster
    replica = idx["n2"].local
    v1, v2 = [idx["n2"].clock.now(), "a"], [idx["n2"].clock.now(), "b"]
    ans = await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("a"), ts=v1), "data": None,
                               "ts": v1, "displaced": True})
    assert ans["applied"] and ans["was"] is None and ans["prior"] is None
    await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("b"), ts=v2), "data": None, "ts": v2})
    assert await replica.retract({"bucket": "b", "key": "k", "ts": v1, "was": None, "prior": None}) == \
        {"retracted": False}
    assert held(regs, "n2") == ("b", tuple(v2))
    # and it never moves a key forward: "what it replaced" newer than the version undone is refused
    assert await replica.retract({"bucket": "b", "key": "k", "ts": v2, "was": dict(entry("z"), ts=[v2[0] + 1, "z"]),
                                  "prior": None}) == {"retracted": False}
    assert held(regs, "n2") == ("b", tuple(v2))


@pytest.mark.parametrize("args", [
    {}, {"bucket": "b", "key": "k"}, {"bucket": "b", "key": "k", "ts": "x"},
    {"bucket": "b", "key": "k", "ts": [1, "w"], "was": {"wid": "x"}},
    {"bucket": "b", "key": "k", "ts": [1, "w"], "was": None, "prior": [1]},
    {"bucket": 3, "key": "k", "ts": [1, "w"]}])
async def test_a_malformed_retract_is_a_bad_request_and_changes_nothing(cluster, args) -> None:
    from buckets.cluster.rpcerrors import BadPeerRequest
    _, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("w1"))
    await settle(idx)
    with pytest.raises(BadPeerRequest):
        await idx["n2"].local.retract(args)
    assert held(regs, "n2")[0] == "w1"


def writer_cut_off_until(net, idx, src: str, release: asyncio.Event) -> None:
    """``src``'s merges to the other replicas wait for ``release``, then fail (its reads and
    every other node's calls go through)."""
    plain = net.transport_for(src)

    async def call(node: str, method: str, args: dict):
        if method == "merge" and node != src:
            await release.wait()
            raise errors.ServiceUnavailable(f"{node} unreachable from {src}")
        return await plain(node, method, args)

    idx[src].transport = call


async def test_a_failed_put_that_a_read_returned_is_not_undone(cluster) -> None:
    """A read through n2 meets the failed write on n1 while n1 waits for its other merges,
    returns it and writes it back to n2. Undone on n1 after that, a read of n1 and n3 would go
    back in time; so n1 refuses the undo and the write stays (it may appear, as a write whose
    outcome the client never learned)."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("w1"))
    await settle(idx)
    release = asyncio.Event()
    writer_cut_off_until(net, idx, "n1", release)
    put = asyncio.ensure_future(idx["n1"].put_displacing("b", "k", entry("w2")))
    while held(regs, "n1")[0] != "w2":
        await asyncio.sleep(0.001)
    assert (await idx["n2"].get("b", "k"))["wid"] == "w2"  # written back to n2 first
    release.set()
    with pytest.raises(errors.WriteQuorumLost) as failed:
        await put
    assert held(regs, "n1")[0] == "w2" and idx["n1"].retractions == 0
    assert not failed.value.undone  # its data stays: the entry may still win
    idx["n1"].transport = net.transport_for("n1")
    net.down = {"n2"}
    for via in ("n1", "n3"):
        assert (await idx[via].get("b", "k"))["wid"] == "w2", via


async def test_a_failed_put_that_a_listing_showed_is_not_undone(cluster) -> None:
    net, idx, regs = cluster
    release = asyncio.Event()
    writer_cut_off_until(net, idx, "n1", release)
    put = asyncio.ensure_future(idx["n1"].put_displacing("b", "dir/new", entry("w2")))
    while held(regs, "n1", "dir/new")[0] != "w2":
        await asyncio.sleep(0.001)
    page = await idx["n1"].local.scan({"bucket": "b", "prefix": "", "delimiter": "/"})
    assert page["prefixes"] == ["dir/"]  # a prefix shows the key exists
    release.set()
    with pytest.raises(errors.WriteQuorumLost):
        await put
    assert held(regs, "n1", "dir/new")[0] == "w2"


def undo_held_at_a_gate(replica, v: list, ans: dict) -> tuple[asyncio.Event, asyncio.Future]:
    """Start the undo of version ``v`` (merged with answer ``ans``) on ``replica``; its commit
    waits until the returned event is set."""
    commit, gate = replica.registry.commit, asyncio.Event()

    async def slow_commit(ops):
        if any(op.kind == "retract_object" for op in ops):
            await gate.wait()
        return await commit(ops)

    replica.registry.commit = slow_commit  # type: ignore[method-assign]
    return gate, asyncio.ensure_future(replica.retract({"bucket": "b", "key": "k", "ts": v, "was": ans["was"],
                                                         "prior": ans["prior"]}))


async def test_a_lookup_that_meets_an_undo_committing_answers_what_it_put_back(cluster) -> None:
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("w1"))
    await settle(idx)
    replica = idx["n2"].local
    v = [idx["n2"].clock.now(), "w2"]
    ans = await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("w2"), ts=v), "data": None,
                               "ts": v, "displaced": True})
    gate, undo = undo_held_at_a_gate(replica, v, ans)
    await asyncio.sleep(0.01)
    lookup = asyncio.ensure_future(replica.get({"bucket": "b", "key": "k"}))
    await asyncio.sleep(0.01)
    assert not lookup.done()  # it waits for the undo
    gate.set()
    assert (await undo)["retracted"]
    assert (await lookup)["entry"]["wid"] == "w1"


async def test_a_failed_put_written_back_to_a_replica_that_held_it_already_is_not_undone(cluster) -> None:
    """Traced from a lossy history (2026-12-02, session 22): a blind PUT Q merged on n3, and a
    read met n3 (Q) and n1 (still the old value), returned Q and wrote it back to n1, where
    Q's own merge had arrived meanwhile (the write-back changed nothing there). Q's writer,
    its answers lost, undid Q on n1 (no lookup had been answered with Q there): Q was left on
    n3 alone, and reads of n1 and n2 went back to the old value after one had returned Q.
    A write-back that finds its version held marks it as read, as a lookup answered with it
    does."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    n1, n3 = idx["n1"].local, idx["n3"].local
    v = [held(regs, "n3")[1][0] + 1, "Q"]  # newer than "old" (whichever node's clock wrote it)
    q = {"bucket": "b", "key": "k", "entry": dict(entry("Q"), ts=v), "data": None, "ts": v}
    assert (await n3.merge(dict(q, displaced=True)))["applied"]
    assert (await n3.get({"bucket": "b", "key": "k"}))["entry"]["wid"] == "Q"  # the read, on n3
    ans = await n1.merge(dict(q, displaced=True))  # Q's own merge on n1, its answer then lost
    assert ans["applied"]
    assert (await n1.merge(q))["applied"] is False  # the read's write-back: held already
    assert await n1.retract({"bucket": "b", "key": "k", "ts": v, "was": ans["was"], "prior": ans["prior"]}) == \
        {"retracted": False}
    assert held(regs, "n1") == ("Q", tuple(v))
    net.down = {"n3"}
    assert (await idx["n2"].get("b", "k"))["wid"] == "Q"


async def test_a_lookup_answered_between_a_merge_s_commit_and_its_end_keeps_the_put(cluster) -> None:
    """Traced from a lossy history (2026-12-02, session 22): a lookup on n1 was answered with
    a blind PUT's version right after its merge committed there, before the merge noted the
    version as fresh; noted afterwards it counted as unseen, the PUT's writer undid it on n1,
    and the value a client had read vanished, then came back. Noted before the commit, the
    lookup marks it seen."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    replica = idx["n2"].local
    v = [held(regs, "n2")[1][0] + 1, "P"]
    commit, seen = replica.registry.commit, []

    async def commit_then_a_lookup(ops):  # the lookup runs before the merge goes on
        await commit(ops)
        if any(op.kind == "merge_object" for op in ops) and not seen:
            seen.append((await replica.get({"bucket": "b", "key": "k"}))["entry"]["wid"])

    replica.registry.commit = commit_then_a_lookup  # type: ignore[method-assign]
    ans = await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("P"), ts=v), "data": None,
                               "ts": v, "displaced": True})
    assert ans["applied"] and seen == ["P"]
    assert await replica.retract({"bucket": "b", "key": "k", "ts": v, "was": ans["was"], "prior": ans["prior"]}) == \
        {"retracted": False}
    assert held(regs, "n2") == ("P", tuple(v))


async def test_a_refused_blind_put_leaves_the_fresh_record_it_found(cluster) -> None:
    """Noted before its commit, a blind PUT refused there (a newer version held) puts back
    the key's record as it was: the newer blind PUT's, still undoable."""
    net, idx, regs = cluster
    replica = idx["n2"].local
    base = idx["n2"].clock.now()
    newer, older = [base + 10, "N"], [base + 5, "O"]
    ans = await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("N"), ts=newer), "data": None,
                               "ts": newer, "displaced": True})
    assert not (await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("O"), ts=older), "data": None,
                                     "ts": older, "displaced": True}))["applied"]
    assert replica._fresh["b"]["k"].version == tuple(newer)
    assert (await replica.retract({"bucket": "b", "key": "k", "ts": newer, "was": ans["was"],
                                   "prior": ans["prior"]}))["retracted"]


async def test_a_refusal_by_a_blind_put_that_may_be_undone_says_so(cluster) -> None:
    """A merge refused by a blind PUT's version that its writer may still undo here answers
    ``undoable`` (a PUT merged again after a conditional write must not count it as a write
    that came after it and stands); once a lookup returned that version, it does not."""
    net, idx, regs = cluster
    replica = idx["n2"].local
    base = idx["n2"].clock.now()
    p, older = [base + 10, "P"], [base + 5, "W"]
    await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("P"), ts=p), "data": None,
                         "ts": p, "displaced": True})
    w = {"bucket": "b", "key": "k", "entry": dict(entry("W"), ts=older), "data": None, "ts": older, "displaced": True}
    refused = await replica.merge(w)
    assert not refused["applied"] and refused["undoable"] is True
    await replica.get({"bucket": "b", "key": "k"})  # read: it can no longer be undone here
    assert "undoable" not in await replica.merge(w)


async def test_a_write_back_meeting_an_undo_committing_puts_the_version_back(cluster) -> None:
    """The undo goes first; the write-back then merges the version again (newer than what
    the undo put back), so the read that returns it still finds it on a quorum."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    replica = idx["n2"].local
    v = [held(regs, "n2")[1][0] + 1, "Q"]
    q = {"bucket": "b", "key": "k", "entry": dict(entry("Q"), ts=v), "data": None, "ts": v}
    ans = await replica.merge(dict(q, displaced=True))
    gate, undo = undo_held_at_a_gate(replica, v, ans)
    await asyncio.sleep(0.01)
    write_back = asyncio.ensure_future(replica.merge(q))
    await asyncio.sleep(0.01)
    assert not write_back.done()  # it waits for the undo
    gate.set()
    assert (await undo)["retracted"]
    assert (await write_back)["applied"]
    assert held(regs, "n2") == ("Q", tuple(v))


async def test_a_replica_that_forgot_a_write_does_not_undo_it(cluster) -> None:
    """Restarted (or the write forgotten, too old or too many since), a replica cannot tell
    whether a read returned the version: it keeps it."""
    net, idx, regs = cluster
    replica = idx["n3"].local
    v = [idx["n3"].clock.now(), "w2"]
    ans = await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("w2"), ts=v), "data": None,
                               "ts": v, "displaced": True})
    replica._fresh.clear()
    assert await replica.retract({"bucket": "b", "key": "k", "ts": v, "was": ans["was"],
                                  "prior": ans["prior"]}) == {"retracted": False}
    assert held(regs, "n3")[0] == "w2"


async def test_the_fresh_writes_a_replica_remembers_are_bounded(cluster, monkeypatch) -> None:
    import buckets.cluster.index as index_module
    monkeypatch.setattr(index_module, "FRESH_MAX", 5)
    _, idx, regs = cluster
    replica = idx["n1"].local
    for i in range(12):
        v = [idx["n1"].clock.now(), f"w{i}"]
        await replica.merge({"bucket": "b", "key": f"k{i}", "entry": dict(entry(f"w{i}"), ts=v), "data": None,
                             "ts": v, "displaced": True})
    assert list(replica._fresh["b"]) == [f"k{i}" for i in range(7, 12)]
    await idx["n1"].put("b", "k11", entry("plain"))  # a write that is not a blind PUT: nothing to undo
    await settle(idx)  # (the put returns at W of N: n1's own merge may be the one still on its way)
    assert held(regs, "n1", "k11")[0] == "plain"
    assert "k11" not in replica._fresh["b"]


@pytest.mark.parametrize("how", ["delete", "put"])
async def test_a_write_refused_by_a_blind_put_that_may_be_undone_is_merged_again_above_it(cluster, how) -> None:
    """A DELETE (or a PUT after a read) refused on n1 by a newer blind PUT's version that no
    read returned there, applied on n2, n3 not reached: counted as a write that the newer one
    replaced, it was acknowledged on one replica; the blind PUT then failed and was undone on
    n1, and a read through n1 and n3 found the key as it was before the acknowledged write.
    It is merged again above that version instead, which then can no longer be undone."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    idx["n2"].clock.observe(held(regs, "n2")[1][0])  # (the engine reads the key before a DELETE)
    replica = idx["n1"].local
    z = [idx["n1"].clock.now() + (1000 << 16), "Z"]  # its writer's clock ran ahead
    ans = await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("Z"), ts=z), "data": None,
                               "ts": z, "displaced": True})
    assert ans["applied"]
    net.down = {"n3"}
    if how == "delete":
        await idx["n2"].delete("b", "k", "D")
    else:
        await idx["n2"].put("b", "k", entry("D"))
    net.down = set()
    # Z's writer heard no quorum: it undoes Z where it was merged.
    await replica.retract({"bucket": "b", "key": "k", "ts": z, "was": ans["was"], "prior": ans["prior"]})
    net.down = {"n2"}
    got = await idx["n1"].get("b", "k")
    assert (got is None) if how == "delete" else (got["wid"] == "D")
    net.down = set()


@pytest.mark.parametrize("how", ["delete", "put"])
async def test_a_write_on_a_quorum_refused_by_a_blind_put_that_may_be_undone_stands(cluster, how) -> None:
    """The same refusal on n1, but the write was applied on n2 and n3 (n3's answer came after
    the quorum's): it stands as it is, on a quorum, and is not merged again above the blind
    PUT. A read may already have returned it there, and merged again it would take effect a
    second time, after writes acknowledged since (a history of make test's, session 23: a GET
    returned a PUT that came after the DELETE's first version, then the DELETE again)."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    # The engine reads the key before a DELETE: its version is then newer than "old" (without
    # that, within the same millisecond as "old" it was older, refused by "old" too: fresh run 153).
    idx["n2"].clock.observe(held(regs, "n2")[1][0])
    replica = idx["n1"].local
    z = [idx["n1"].clock.now() + (1000 << 16), "Z"]
    ans = await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("Z"), ts=z), "data": None,
                               "ts": z, "displaced": True})
    assert ans["applied"]
    net.held["n3"] = gate = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, gate.set)
    if how == "delete":
        await idx["n2"].delete("b", "k", "D")
    else:
        await idx["n2"].put("b", "k", entry("D"))
    net.held.clear()
    wid, version = held(regs, "n2")
    assert wid == (None if how == "delete" else "D") and version < tuple(z)  # its first version
    assert held(regs, "n3") == (wid, version)
    await replica.retract({"bucket": "b", "key": "k", "ts": z, "was": ans["was"], "prior": ans["prior"]})
    for down in ({"n2"}, {"n3"}, set()):
        net.down = down
        got = await idx["n1"].get("b", "k")
        assert (got is None) if how == "delete" else (got["wid"] == "D"), (down, got)
    net.down = set()


async def test_holds_says_unknown_for_a_version_older_than_it_remembers(cluster) -> None:
    """``holds``: True for a version held here before the current one, False for one never held
    (newer than the oldest remembered, or the key's versions remembered from its first), and
    None (unknown) for one older than what it remembers: it may have been held and forgotten.
    (A lossy history, session 23: a PUT on a quorum, read, then replaced by ten writes, asked a
    replica that had held it; "no" made it merge again, and it took effect a second time.)"""
    from buckets.cluster.index import RECENT_PAST

    net, idx, regs = cluster
    replica = idx["n2"].local
    base = idx["n2"].clock.now()
    versions = [[base + (i << 16), f"w{i}"] for i in range(RECENT_PAST + 3)]
    for v in versions:
        assert (await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry(v[1]), ts=v), "data": None,
                                     "ts": v}))["applied"]

    async def holds(version) -> bool | None:
        return (await replica.holds({"buckets": {"b": [["k", version]]}}))["held"]["b"][0]

    assert await holds(versions[-1]) is True  # held now
    assert await holds(versions[-2]) is True and await holds(versions[-RECENT_PAST - 1]) is True
    assert await holds([versions[-3][0] + 1, "never"]) is False  # between two it held: never held
    assert await holds(versions[0]) is None  # held, and forgotten since
    assert await holds([versions[0][0] - 1, "older"]) is None
    replica._recent.clear()  # (restarted, or the key forgotten among too many others)
    assert await holds(versions[-2]) is None
    # A key whose every version is remembered, from its first: an older one was never held.
    for i, v in enumerate(([base + (1 << 20), "a"], [base + (2 << 20), "b"])):
        await replica.merge({"bucket": "b", "key": "fresh", "entry": dict(entry(v[1]), ts=v), "data": None, "ts": v})
    assert (await replica.holds({"buckets": {"b": [["fresh", [base, "x"]]]}}))["held"]["b"] == [False]


async def test_a_replica_whose_registry_disk_is_at_its_reserve_stops_new_objects(cluster, monkeypatch) -> None:
    """A replica answers its merges with ``room: False`` while its registry's disk is at its
    reserve; a writer that heard it refuses new objects of the buckets it replicates
    (``StorageFull``) before writing anything, deletions go on, and once the replica has room
    again (the answer of a deletion's merge, or the next write after FULL_MEMORY) writes go in."""
    import buckets.cluster.index as index_module

    net, idx, regs = cluster
    room = {"n3": True}
    monkeypatch.setattr(regs["n3"], "has_room", lambda: room["n3"])
    idx["n1"].check_room("b")  # nothing heard yet
    await idx["n1"].put("b", "k1", entry("w1"))
    await settle(idx)
    idx["n1"].check_room("b")
    room["n3"] = False
    await idx["n1"].put("b", "k2", entry("w2"))  # taken: its answer says no room
    await settle(idx)
    with pytest.raises(errors.StorageFull):
        idx["n1"].check_room("b")
    idx["n2"].check_room("b")  # another writer has heard nothing yet
    await idx["n1"].delete("b", "k1", "w1")  # deletions still merge
    await settle(idx)
    with pytest.raises(errors.StorageFull):
        idx["n1"].check_room("b")
    room["n3"] = True
    await idx["n1"].delete("b", "k2", "w2")  # its answer: room again
    await settle(idx)
    idx["n1"].check_room("b")
    room["n3"] = False
    await idx["n1"].put("b", "k3", entry("w3"))
    await settle(idx)
    monkeypatch.setattr(index_module, "FULL_MEMORY", 0.0)  # the memory lapsed: the next write asks again
    idx["n1"].check_room("b")
    assert (await idx["n2"].get("b", "k3"))["wid"] == "w3"


async def test_a_lookup_asks_another_replica_when_one_of_its_quorum_lags(cluster) -> None:
    """A replica behind a slow link answers, but late: the read asks the third replica once
    the lagging one is far behind the others (``engine/hedge.py``'s rule), not after the
    call's timeout. Guarded by a timeout far above what the hedge needs (a hang check)."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("w1"))
    await settle(idx)
    asked: list[str] = []

    async def slow_n2(src, node, method, args):
        if method == "get":
            asked.append(node)
            if node == "n2":
                await asyncio.sleep(600)

    net.before = slow_n2
    got = await asyncio.wait_for(idx["n1"].get("b", "k"), 60)
    assert got is not None and got["wid"] == "w1"
    assert asked == ["n2", "n3"]  # n1's own replica is read directly; n2 first, n3 once n2 lagged
    net.before = None


async def holding_of(regs: dict, n: str, wid: str) -> None:
    """Until node ``n``'s replica holds ``wid`` as b/k."""
    while (regs[n].get_object("b", "k") or {}).get("wid") != wid:
        await asyncio.sleep(0.005)


async def w_replaced_by_x(cluster, stall: float = 0.0) -> tuple[asyncio.Task, list[dict]]:
    """W through n1, X through n2: W is applied on n1's replica, X then replaces it there (that
    replica answers X's writer "was W") and on n2; W's first merges to n2 and n3 arrive after
    X's (``stall`` seconds later: W's writer paused with its first round) and are refused.
    Returns W's PUT (a task) and what X's writer was told it replaced."""
    net, idx, regs = cluster
    first: list = []

    async def before(src: str, node: str, method: str, args: dict) -> None:
        wid = (args.get("entry") or {}).get("wid") if method == "merge" else None
        if wid == "wW":
            first[:] = first or [args["ts"]]
            if args["ts"] == first[0]:  # W's first merges to n2 and n3 arrive after X's
                await holding_of(regs, node, "wX")
                await asyncio.sleep(stall)
        elif wid == "wX" and node == "n3":
            await holding_of(regs, "n1", "wX")  # X's quorum: n1 (which answers "was W") and n2

    net.before = before
    w = asyncio.create_task(idx["n1"].put_displacing("b", "k", entry("wW")))
    await holding_of(regs, "n1", "wW")
    return w, await idx["n2"].put_displacing("b", "k", entry("wX"))


async def test_a_write_reported_replaced_can_still_be_merged_again(cluster) -> None:
    """Why a replaced write's data is not removed at once on a cluster (engine/replaced.py):
    W's writer, refused by X, merges it again above X, and W is the key's state. X's writer,
    told that W was replaced, must not remove W's data then: a GET found no shard of W anywhere
    (tests/cluster/test_growth.py's linearizability phase, session 53)."""
    net, idx, regs = cluster
    w, replaced_by_x = await w_replaced_by_x(cluster)
    await w  # acknowledged
    await settle(idx)
    assert [e["wid"] for e in replaced_by_x] == ["wW"]  # X's writer is told W is replaced ...
    assert (await idx["n3"].get("b", "k"))["wid"] == "wW"  # ... and W is the key's state after all


async def test_a_writer_stalled_past_its_deadline_does_not_merge_again(cluster, monkeypatch) -> None:
    """The same race, W's writer stalled between its first round and the next for longer than
    ``MERGE_AGAIN_WITHIN`` (a process paused mid-PUT): X's writer may have removed W's data by
    then (its wait for W's version is over), so W is not merged again. Its PUT fails (503, the
    outcome unknown), and X is the key's state on every replica."""
    net, idx, regs = cluster
    monkeypatch.setattr(index_module, "MERGE_AGAIN_WITHIN", 0.3)
    w, replaced_by_x = await w_replaced_by_x(cluster, stall=0.5)
    with pytest.raises(errors.WriteQuorumLost, match="too late to merge it again"):
        await w
    net.before = None
    await settle(idx)
    assert [e["wid"] for e in replaced_by_x] == ["wW"]
    for n in ("n1", "n2", "n3"):
        assert (await idx[n].get("b", "k"))["wid"] == "wX"


async def test_a_merge_held_up_past_the_deadline_is_refused_where_it_lands(cluster, monkeypatch) -> None:
    """The same race, W's writer merging again in time, but its second round held up on the
    way to n2 and n3 (a stalled link, a process paused after its check) until past
    ``MERGE_AGAIN_WITHIN`` from W's first version: those replicas refuse it on their own clocks
    (``MergedTooLate``), so W cannot land after X's writer removed its data. Its PUT fails
    (503, the outcome unknown), and X is the key's state on every replica."""
    net, idx, regs = cluster
    monkeypatch.setattr(index_module, "MERGE_AGAIN_WITHIN", 0.3)
    held: list[str] = []
    w, replaced_by_x = await w_replaced_by_x(cluster)
    first_round = net.before

    async def before(src: str, node: str, method: str, args: dict) -> None:
        if method == "merge" and (args.get("entry") or {}).get("wid") == "wW" and "again" in args:
            held.append(node)
            await asyncio.sleep(0.5)  # W's writer checked its deadline before this round left
        else:
            await first_round(src, node, method, args)

    net.before = before
    with pytest.raises(errors.WriteQuorumLost) as raised:
        await w
    assert "too late" in str(raised.value) and "merged again" in str(raised.value), raised.value
    assert sorted(held) == ["n2", "n3"]
    net.before = None
    await settle(idx)
    assert [e["wid"] for e in replaced_by_x] == ["wW"]
    for n in ("n1", "n2", "n3"):
        assert (await idx[n].get("b", "k"))["wid"] == "wX"


async def test_a_merge_again_names_its_first_version_and_one_in_time_is_taken(cluster) -> None:
    """Merged again within the deadline, W is taken everywhere (the replicas' check passes),
    and every round after the first names the first round's version (``again``)."""
    net, idx, regs = cluster
    rounds: dict[tuple, dict] = {}
    w, replaced_by_x = await w_replaced_by_x(cluster)
    first_round = net.before

    async def before(src: str, node: str, method: str, args: dict) -> None:
        if method == "merge" and (args.get("entry") or {}).get("wid") == "wW":
            rounds[tuple(args["ts"])] = args
        await first_round(src, node, method, args)

    net.before = before
    await w
    await settle(idx)
    # (the hook is set once X is acknowledged: W's first round has left by then)
    firsts = {a.get("again") for a in rounds.values()}
    assert rounds and len(firsts) == 1 and all(isinstance(f, int) and f < min(rounds)[0] for f in firsts), rounds
    assert (await idx["n3"].get("b", "k"))["wid"] == "wW"


async def test_a_common_prefix_only_a_stale_replica_lists_is_read_through_a_quorum(cluster) -> None:
    """A DELETE acknowledged by n1 and n2 while n3 was cut off leaves n3 holding the key. A
    listing with a delimiter through n3 then read n2's page (no ``d/``) and n3's (``d/``) and
    listed the union: the deleted "directory" came back (s3fs showed ``docs`` after its rmdir
    through a cluster). A prefix that not every page lists is now decided by a quorum listing
    under it; one that every page lists is kept without one."""
    net, idx, regs = cluster
    for key in ("d/k", "e/k", "top"):
        await idx["n1"].put("b", key, entry(key))
    await settle(idx)
    net.down = {"n3"}
    await idx["n1"].delete("b", "d/k", "d/k")
    net.down = {"n1"}  # the read quorum: n2 (has the DELETE) and n3 (missed it)
    assert regs["n3"].get_object("b", "d/k") is not None and regs["n2"].get_object("b", "d/k") is None
    calls = net.calls
    objects, prefixes, truncated = await idx["n3"].list("b", delimiter="/")
    assert [k for k, _ in objects] == ["top"] and prefixes == ["e/"] and not truncated
    assert net.calls - calls <= 9  # three reads of the three replicas at most: the page, under d/, d/k
    # A prefix whose only key is on the stale replica alone but newer there: listed.
    net.down = {"n1", "n2"}
    await idx["n3"].local.merge({"bucket": "b", "key": "f/k", "entry": dict(entry("f/k"), ts=[1 << 62, "f"]),
                                 "data": None, "ts": [1 << 62, "f"]})
    net.down = {"n1"}
    objects, prefixes, _ = await idx["n3"].list("b", delimiter="/")
    assert prefixes == ["e/", "f/"]
