"""Read leases on the replicated index (``buckets.cluster.leases``): the bucket's first replica
answers a lookup alone, and never with less than every acknowledged write.

Three replicas in one process (test_index_replication.py's harness; n1 is bucket ``b``'s
holder, the first of its set), a fourth node outside the set, and a transport that can cut a
node off entirely (``down``) or only the link between two nodes (``cut``): the holder cut off
from a writer but still reaching the third replica is the case a lease must survive.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

import pytest
from test_index_history import value_entry
from test_index_replication import NODES, Net, entry, settle, start_trio, stop_trio

from buckets import errors
from buckets.cluster.index import IndexReplica, ReplicatedIndex
from buckets.cluster.leases import CONFIRM_EVERY, Promises
from buckets.registry import Registry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cluster"))
from linearizability import DELETE, GET, PUT, Op as HOp, check  # noqa: E402

SECONDS = 0.6  # the promises' length in these tests (the server's is LEASE_SECONDS)


class CutNet(Net):
    """``Net`` plus links cut between two nodes (both ways), and a count of calls by method."""

    def __init__(self, replicas) -> None:
        super().__init__(replicas)
        self.cut: set[frozenset] = set()
        self.by_method: dict[str, int] = {}

    def transport_for(self, src: str):
        inner = super().transport_for(src)

        async def call(node: str, method: str, args: dict):
            if frozenset((src, node)) in self.cut:
                self.calls += 1
                raise errors.ServiceUnavailable(f"{node} unreachable from {src}")
            self.by_method[method] = self.by_method.get(method, 0) + 1
            return await inner(node, method, args)
        return call


async def start(tmp_path, seconds: float = SECONDS):
    net, idx, regs = await start_trio(tmp_path, lease_seconds=seconds)
    cut = CutNet(net.replicas)
    for n in NODES:
        idx[n].transport = cut.transport_for(n)
    for i in idx.values():  # the replicas' start-up promises (before a restart) have ended
        i.local.promises.born -= seconds
    return cut, idx, regs


async def leased(idx, bucket: str = "b", timeout: float = 5.0) -> None:
    """Until n1 holds the bucket's lease (a lookup through it asks for one)."""
    deadline = time.monotonic() + timeout
    while bucket not in idx["n1"].leases.held():
        assert time.monotonic() < deadline, "no lease within the time allowed"
        await idx["n1"].get(bucket, "any-key")
        await asyncio.sleep(0.02)


@pytest.fixture
async def trio(tmp_path):
    net, idx, regs = await start(tmp_path)
    yield net, idx, regs
    await stop_trio(idx, regs)


async def test_a_lookup_is_one_call_through_any_node_and_none_through_the_holder(trio, tmp_path) -> None:
    net, idx, _ = trio
    await idx["n2"].put("b", "k", dict(entry("w1"), inline=True), b"tiny bytes")
    await settle(idx)
    await leased(idx)
    for via in ("n2", "n3"):
        await idx[via].get("b", "k0")  # a quorum read: the holder's answer says it holds a lease
        calls = net.calls
        got = await idx[via].get("b", "k")
        assert got["wid"] == "w1" and net.calls - calls == 1, (via, net.calls - calls)
    calls = net.calls
    assert (await idx["n1"].get("b", "k"))["wid"] == "w1" and net.calls == calls  # its own replica
    reg = Registry(str(tmp_path / "n4"), cache_size=100, sync=False)
    reg.start()
    try:  # a node outside the set: one call, and the small object's bytes come with it
        outside = ReplicatedIndex("n4", IndexReplica(reg), net.transport_for("n4"), lambda bucket: list(NODES))
        calls = net.calls
        assert await outside.get("b", "k0") is None and net.calls - calls == 2  # a first lookup: a quorum
        calls = net.calls
        got = await outside.get("b", "k")
        assert got["wid"] == "w1" and net.calls - calls == 1
        assert outside.small_copy("b", "k", "w1") == b"tiny bytes"
        await outside.close()
    finally:
        await reg.close()
    assert idx["n1"].leases.served >= 3


async def test_a_write_waits_for_the_holder_and_its_lease_answers_it_at_once(trio) -> None:
    net, idx, _ = trio
    await idx["n1"].put("b", "k", entry("w1"))
    await leased(idx)
    await idx["n3"].put("b", "k", entry("w2"))  # acknowledged: the holder has it
    assert (await idx["n1"].get("b", "k"))["wid"] == "w2"
    assert (await idx["n2"].get("b", "k"))["wid"] == "w2"
    assert idx["n3"].lease_waits == 0


async def test_a_holder_cut_off_from_the_writer_loses_its_lease_before_the_write_is_acknowledged(trio) -> None:
    """n1 holds the lease and still reaches n3, but not n2. A write through n2 is merged on n2
    and n3, whose promises name n1: n2 cannot reach n1, so it revokes them and waits until
    they end before it answers. Meanwhile n1 keeps answering from its lease (the old value,
    the write not being acknowledged yet); after, n1 answers the new value, never the old."""
    net, idx, regs = trio
    await idx["n1"].put("b", "k", entry("w1"))
    await settle(idx)
    await leased(idx)
    net.cut = {frozenset(("n1", "n2"))}
    loop = asyncio.get_running_loop()
    started = loop.time()
    write = asyncio.ensure_future(idx["n2"].put("b", "k", entry("w2")))
    reads: list[tuple[float, str]] = []
    while not write.done():
        got = await idx["n1"].get("b", "k")
        reads.append((loop.time(), got["wid"]))
        await asyncio.sleep(0.01)
    await write
    acked = loop.time()
    assert acked - started >= 0.2  # it waited out a promise
    assert idx["n2"].lease_waits >= 1
    for _ in range(20):  # after the acknowledgement: the new value only, through every node
        for via in NODES:
            assert (await idx[via].get("b", "k"))["wid"] == "w2", via
    assert {wid for _, wid in reads} <= {"w1", "w2"}
    assert regs["n1"].get_object("b", "k")["wid"] == "w2"  # the read repaired it


async def test_the_holder_down_a_write_waits_out_its_promise_then_reads_go_around_it(trio) -> None:
    net, idx, _ = trio
    await idx["n1"].put("b", "k", entry("w1"))
    await leased(idx)
    net.down = {"n1"}
    await idx["n2"].put("b", "k", entry("w2"))
    assert idx["n2"].lease_waits >= 1
    assert (await idx["n3"].get("b", "k"))["wid"] == "w2"
    net.down = set()
    # Back: n1 lacks w2. Its next lease starts with a catch-up, so it never answers w1.
    deadline = time.monotonic() + 5
    while "b" not in idx["n1"].leases.held() or idx["n1"].leases.served == 0:
        assert (await idx["n1"].get("b", "k"))["wid"] == "w2"
        assert (await idx["n2"].get("b", "k"))["wid"] == "w2"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_a_new_lease_catches_up_with_the_writes_made_around_the_holder(trio) -> None:
    """Writes acknowledged by n2 and n3 while n1 was down (its promises ended): n1, back,
    takes a new lease only after pulling them, so its first lease answer for a key nobody
    read since is the new value, not the one it held before."""
    net, idx, regs = trio
    for key in ("k1", "k2"):
        await idx["n1"].put("b", key, entry("old"))
    await settle(idx)
    await leased(idx)
    net.down = {"n1"}
    await asyncio.sleep(SECONDS)  # its promises end unrenewed
    for key in ("k1", "k2"):
        await idx["n2"].put("b", key, entry("new"))
    net.down = set()
    served = idx["n1"].leases.served
    await leased(idx)  # a new lease, through lookups of another key
    assert regs["n1"].get_object("b", "k2")["wid"] == "new"  # pulled from a granter
    await idx["n3"].get("b", "k0")  # n3 learns that n1 holds a lease (a quorum read asks n1 first)
    assert (await idx["n3"].get("b", "k2"))["wid"] == "new"
    assert (await idx["n1"].get("b", "k1"))["wid"] == "new"
    assert idx["n1"].leases.served >= served + 2


async def test_the_holder_does_not_answer_a_version_only_it_holds(trio) -> None:
    """A write that reached the holder alone (its writer failed): answering it from the
    lease, then losing the lease, would let a later read of the two others go back in time.
    The holder answers it only through a quorum, which writes it back first."""
    net, idx, regs = trio
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    await leased(idx)
    net.down = {"n2", "n3"}  # the holder alone, until its lease lapses
    version = [idx["n1"].clock.now(), "new"]
    await idx["n1"].local.merge({"bucket": "b", "key": "k", "entry": dict(entry("new"), ts=version),
                                 "data": None, "ts": version})
    with pytest.raises(errors.ReadQuorumLost):
        await idx["n1"].get("b", "k")
    net.down = set()
    got = await idx["n1"].get("b", "k")  # a quorum read: it puts "new" on n2 or n3 first
    assert got["wid"] == "new"
    net.down = {"n1"}
    assert (await idx["n2"].get("b", "k"))["wid"] == "new"


async def test_a_version_only_the_holder_holds_is_pushed_to_a_granter(trio) -> None:
    net, idx, regs = trio
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    await leased(idx)
    version = [idx["n1"].clock.now(), "new"]
    await idx["n1"].local.merge({"bucket": "b", "key": "k", "entry": dict(entry("new"), ts=version),
                                 "data": None, "ts": version})
    deadline = time.monotonic() + 6
    while not any(regs[n].get_object("b", "k")["wid"] == "new" for n in ("n2", "n3")):
        assert time.monotonic() < deadline, "the holder never put its lone version on a granter"
        await asyncio.sleep(0.05)


async def test_promises_survive_a_restart_as_a_wait_for_the_holder() -> None:
    """A replica that restarts does not know what it promised: for a lease's length it reports
    a promise to its set's holder, so no write goes around a holder that may still answer."""
    now = [100.0]
    p = Promises(2.0, lambda: now[0])
    assert p.info("b") == [[None, 2.0]]
    assert p.grant("b", "n1")["granted"] and {h for h, _ in p.info("b")} == {"n1", None}
    now[0] += 2.5
    assert p.info("b") is None  # the grant was not renewed; the start-up promise has ended
    epoch = p.grant("b", "n1")["epoch"]
    now[0] += 1.0
    assert p.grant("b", "n1")["epoch"] == epoch  # a renewal: the same promise, 2 s from now
    assert p.revoke("b") == pytest.approx(2.0)
    assert not p.grant("b", "n1")["granted"]  # revoked: not renewed until it has ended
    now[0] += 2.1
    assert p.grant("b", "n1")["epoch"] != epoch  # a new promise: the holder catches up again


async def test_only_the_first_replica_of_a_single_set_is_granted_a_lease(trio) -> None:
    _, idx, _ = trio
    assert (await idx["n2"].local.grant({"buckets": ["b"], "holder": "n1"}))["grants"]["b"]["granted"]
    assert not (await idx["n2"].local.grant({"buckets": ["b"], "holder": "n3"}))["grants"]["b"]["granted"]


# -- random histories, the holder cut off and back ----------------------------------------
KEYS = ("k0", "k1", "k2", "k3")


async def client(idx, c: int, rng: random.Random, history: list, ops: int) -> None:
    loop = asyncio.get_running_loop()
    for seq in range(ops):
        node = rng.choice(NODES)
        key = rng.choice(KEYS)
        kind = rng.choices([PUT, GET, DELETE], [30, 60, 10])[0]
        value = f"{key}:{c}:{seq}"
        call = loop.time()
        try:
            if kind == PUT:
                await idx[node].put_displacing("b", key, value_entry(value))
            elif kind == DELETE:
                current = await idx[node].get("b", key)
                if current is None:
                    kind, value = GET, None
                else:
                    await idx[node].delete("b", key, current["wid"])
            else:
                got = await idx[node].get("b", key)
                value = got["wid"] if got is not None else None
            history.append(HOp(c, key, kind, value, call, loop.time()))
        except (errors.WriteQuorumLost, errors.ReadQuorumLost):
            history.append(HOp(c, key, kind, value, call, None))
        await asyncio.sleep(rng.random() * 0.01)


async def faults(net: CutNet, rng: random.Random, stop: asyncio.Event) -> None:
    """Every 50-300 ms: heal, or cut the holder off from one node, or take a node down."""
    while not stop.is_set():
        choice = rng.random()
        if choice < 0.4:
            net.cut, net.down = set(), set()
        elif choice < 0.8:
            net.cut, net.down = {frozenset(("n1", rng.choice(["n2", "n3"])))}, set()
        else:
            net.cut, net.down = set(), {rng.choice(NODES)}
        await asyncio.sleep(0.05 + rng.random() * 0.25)
    net.cut, net.down = set(), set()


@pytest.mark.parametrize("seed", [1, 2])
async def test_histories_with_the_holder_cut_off_are_linearizable(tmp_path, seed) -> None:
    net, idx, regs = await start(tmp_path, seconds=0.3)
    rng = random.Random(seed)
    history: list = []
    stop = asyncio.Event()
    try:
        await leased(idx)
        chaos = asyncio.ensure_future(faults(net, random.Random(seed + 7), stop))
        await asyncio.gather(*(client(idx, c, random.Random(seed * 100 + c), history, 60) for c in range(4)))
        stop.set()
        await chaos
    finally:
        await stop_trio(idx, regs)
    result = check(history)
    served = sum(i.leases.served for i in idx.values())
    waits = sum(i.lease_waits for i in idx.values())
    print(f"seed {seed}: {len(history)} operations, {served} lookups answered from a lease, "
          f"{waits} waits for a holder; {result.report()}")
    assert served > 0
    assert result.ok, result.report()



async def test_leases_on_many_buckets_are_renewed_with_one_call_per_peer(trio) -> None:
    net, idx, _ = trio
    buckets = [f"b{i}" for i in range(12)]
    for bucket in buckets:
        await leased(idx, bucket)
    before = net.by_method.get("grant", 0)
    await asyncio.sleep(1.0)
    for bucket in buckets:  # still read: still held
        await idx["n1"].get(bucket, "k")
    rounds = 1.0 / (SECONDS / 4)
    grants = net.by_method.get("grant", 0) - before
    assert grants <= 2 * (rounds + 2), grants  # one call per peer per round, not one per bucket
    assert set(buckets) <= set(idx["n1"].leases.held())


async def test_a_listing_page_is_one_call_unless_its_range_holds_an_unconfirmed_merge(trio) -> None:
    net, idx, _ = trio
    for i in range(5):
        await idx["n2"].put("b", f"a/{i}", entry(f"w{i}"))
    await settle(idx)
    await leased(idx)
    deadline = time.monotonic() + 5
    while idx["n1"].leases._leases["b"].unconfirmed:  # the holder's sweep confirms the puts
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await idx["n3"].get("b", "k0")
    calls = net.calls
    objects, _, _ = await idx["n3"].list("b", prefix="a/")
    assert [k for k, _ in objects] == [f"a/{i}" for i in range(5)] and net.calls - calls == 1
    calls = net.calls
    assert len((await idx["n1"].list("b", prefix="a/"))[0]) == 5 and net.calls == calls  # the holder's own
    # A delete the holder has merged but no granter has confirmed: its key's range is listed
    # through a quorum (a page without the key, then the holder lost, must not get it back).
    version = [idx["n1"].clock.now(), "gone"]
    await idx["n1"].local.merge({"bucket": "b", "key": "a/3", "entry": None, "data": None, "ts": version})
    net.down = {"n2", "n3"}
    with pytest.raises(errors.ReadQuorumLost):
        await idx["n1"].list("b", prefix="a/")
    objects, _, _ = await idx["n1"].list("b", prefix="z/")  # another range: the lease answers
    assert objects == []


async def test_a_merge_that_lands_while_the_holder_reads_a_page_voids_the_lease_answer(trio) -> None:
    """The holder checks its lease and the page's range, then reads the page (in a thread):
    a write that reaches the holder alone meanwhile must not be answered from the lease."""
    net, idx, _ = trio
    await idx["n2"].put("b", "a/1", entry("w1"))
    await settle(idx)
    await leased(idx)
    while idx["n1"].leases._leases["b"].unconfirmed:
        await asyncio.sleep(0.02)
    local = idx["n1"].local
    real_scan = local.scan

    async def scan_meanwhile(args: dict) -> dict:  # a lone write lands between check and read
        version = [idx["n1"].clock.now(), "lone"]
        await local.merge({"bucket": "b", "key": "a/2", "entry": dict(entry("lone"), ts=version),
                           "data": None, "ts": version})
        return await real_scan(args)

    local.scan = scan_meanwhile  # type: ignore[method-assign]
    net.down = {"n2", "n3"}
    with pytest.raises(errors.ReadQuorumLost):
        await idx["n1"].list("b", prefix="a/")


@pytest.mark.parametrize("method,args", [
    ("grant", {"buckets": "b", "holder": "n1"}), ("grant", {"holder": "n1"}),
    ("revoke", {}), ("holds", {"buckets": {"b": [["k"]]}}), ("holds", {"buckets": ["b"]}),
    ("read", {"bucket": "b"}), ("read", {"key": "k"})])
async def test_malformed_lease_calls_are_refused_as_bad_requests(trio, method, args) -> None:
    from buckets.cluster.rpcerrors import BadPeerRequest
    _, idx, regs = trio
    with pytest.raises(BadPeerRequest):
        await idx["n2"].local.handlers()[method](args)
    assert idx["n2"].local.promises.info("b") is None and regs["n2"].get_object("b", "k") is None


@pytest.mark.parametrize("later", [False, True], ids=["at-once", "after-the-sweep"])
async def test_a_holder_that_undoes_a_failed_write_does_not_answer_what_it_put_back_alone(trio, later) -> None:
    """A failed write's merge reached the holder alone with a version ahead of the others'
    clocks; a write through n2 was then refused by the holder as older and acknowledged by n2
    and n3 without it. When the failed write is undone on the holder, the key goes back to
    the version before it, older than the acknowledged write: the lease must not answer that."""
    net, idx, regs = trio
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    await leased(idx)
    old, old_version = regs["n1"].get_version("b", "k")
    ahead = [idx["n1"].clock.now() + (10_000 << 16), "failed"]
    ans = await idx["n1"].local.merge({"bucket": "b", "key": "k", "entry": dict(entry("failed"), ts=ahead),
                                       "data": None, "ts": ahead, "displaced": True})
    assert ans["applied"] and ans["was"]["wid"] == "old" and tuple(ans["prior"]) == old_version
    await idx["n2"].put_displacing("b", "k", entry("acked"))  # refused by n1 alone: stands on n2, n3
    assert regs["n1"].get_object("b", "k")["wid"] == "failed"
    assert await idx["n1"].local.retract({"bucket": "b", "key": "k", "ts": ahead, "was": ans["was"],
                                          "prior": ans["prior"]}) == {"retracted": True}
    assert regs["n1"].get_object("b", "k")["wid"] == "old"
    assert "b" in idx["n1"].leases.held()
    if later:
        # The holder's sweep asks a granter about the version put back meanwhile: n2 held
        # "old" before "acked", the usual "held" for a merge the granter then saw replaced,
        # but for a version an undo put back only "holds exactly this one" counts (session
        # 22: the holder answered "old" alone 180 ms after "acked" was acknowledged).
        await asyncio.sleep(10 * CONFIRM_EVERY)
        assert "k" in idx["n1"].leases._leases["b"].unconfirmed
    for via in ("n1", "n2", "n3"):
        assert (await idx[via].get("b", "k"))["wid"] == "acked", via


async def test_a_key_whose_failed_write_was_undone_on_the_holder_is_answered_by_the_lease_again(trio) -> None:
    net, idx, regs = trio
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    await leased(idx)
    version = [idx["n1"].clock.now(), "failed"]
    ans = await idx["n1"].local.merge({"bucket": "b", "key": "k", "entry": dict(entry("failed"), ts=version),
                                       "data": None, "ts": version, "displaced": True})
    assert (await idx["n1"].local.retract({"bucket": "b", "key": "k", "ts": version, "was": ans["was"],
                                           "prior": ans["prior"]}))["retracted"]
    lease = idx["n1"].leases._leases["b"]
    deadline = time.monotonic() + 5
    while "k" in lease.unconfirmed:  # a granter says it holds "old" too
        assert time.monotonic() < deadline, "the version put back was never confirmed"
        await asyncio.sleep(0.02)
    calls = net.calls
    assert (await idx["n2"].get("b", "k"))["wid"] == "old" and net.calls - calls == 1  # the holder alone


async def test_the_holder_does_not_answer_a_key_unsettled_on_it_from_its_lease(trio) -> None:
    """A conditional write locked n1 (the holder) and n2 and committed on n2 only; its writer
    ended n1's lock naming the commit's version, which n1 does not hold: n1 must not answer the
    key alone (it would answer the version the commit replaced). A quorum read through any
    node hears every replica instead and returns the commit."""
    net, idx, regs = trio
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    await leased(idx)
    _, judged = regs["n2"].get_version("b", "k")
    for n in ("n1", "n2"):
        assert (await idx[n].local.lock({"bucket": "b", "key": "k", "id": "L1", "ttl": 5}))["entry"]["wid"] == "old"
    ahead = [idx["n2"].clock.now() + (1000 << 16), "cond"]
    assert (await idx["n2"].local.merge({"bucket": "b", "key": "k", "entry": dict(entry("cond"), ts=ahead),
                                         "data": None, "ts": ahead, "lock": "L1", "judged": list(judged)}))["applied"]
    await idx["n1"].local.unlock({"bucket": "b", "key": "k", "id": "L1", "committing": True, "ts": ahead})
    assert "b" in idx["n1"].leases.held()
    served = idx["n1"].leases.served
    for via in ("n1", "n3", "n2"):
        assert (await idx[via].get("b", "k"))["wid"] == "cond", via
    assert idx["n1"].leases.served == served  # (the key: no lease answer)
