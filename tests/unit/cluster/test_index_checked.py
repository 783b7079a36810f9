"""Conditional writes on the replicated index (``ReplicatedIndex.write_checked``): the check
and the commit are one step on a quorum of the key's replicas, under the key's lock there, so
no write lands between them (architecture/consistency.md, "Conditional writes and deletes").

Three replicas in one process (the harness of test_index_replication.py)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from test_index_replication import NODES, held, entry, new_on_n1_only, settle, start_trio, stop_trio

from buckets import errors


@pytest.fixture
async def cluster(tmp_path):
    net, idx, regs = await start_trio(tmp_path)
    yield net, idx, regs
    await stop_trio(idx, regs)


async def wid_through(net, idx, via: str, *, without: str) -> str | None:
    """Key ``k``'s write id as a read through ``via`` sees it while ``without`` is unreachable."""
    net.down = {without}
    try:
        got = await idx[via].get("b", "k")
    finally:
        net.down = set()
    return got["wid"] if got is not None else None


async def until(condition, seconds: float = 30.0) -> None:
    """Poll ``condition`` every 5 ms until it holds or ``seconds`` pass (a bound for a loaded
    machine, not a timing assertion: the caller asserts the condition after)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def expect_etag(etag: str | None):
    """The judge of an ``If-Match: <etag>`` write (None: ``If-None-Match: *``)."""
    def judge(current: dict | None) -> None:
        if etag is None:
            if current is not None:
                raise errors.ConditionalRequestConflict()
        elif current is None or current["etag"] != etag:
            raise errors.ConditionalRequestConflict()
    return judge


async def test_a_write_acknowledged_after_the_first_check_fails_the_condition(cluster) -> None:
    """The engine checks a condition when the request arrives and again at commit. An
    unconditional write acknowledged through another node in between (here: after the first
    check, before the commit) must make the conditional write fail, and stay the object."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    assert (await idx["n1"].get("b", "k"))["etag"] == "E0"  # the condition holds when checked
    await idx["n2"].put_displacing("b", "k", entry("u", etag="EU"))  # acknowledged through n2
    with pytest.raises(errors.ConditionalRequestConflict):
        await idx["n1"].write_checked("b", "k", entry("c", etag="EC"), expect_etag("E0"))
    await settle(idx)
    for n in ("n1", "n2", "n3"):
        assert (await idx[n].get("b", "k"))["wid"] == "u"
    t0 = time.monotonic()
    await idx["n3"].put_displacing("b", "k", entry("u2"))  # the refused write left no lock behind
    assert time.monotonic() - t0 < 1.0


async def commit_with_a_racing_write(idx, racing_write) -> asyncio.Future:
    """A conditional write through n1 (If-Match of "old") during whose commit
    ``racing_write()`` starts through another node; the racing write must wait while the key
    is locked on a quorum. Returns it, running."""
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    racing: list[asyncio.Future] = []

    def judge(current: dict | None) -> None:
        expect_etag("E0")(current)
        racing.append(asyncio.ensure_future(racing_write()))

    async def still_locked(current: dict | None) -> None:
        await asyncio.sleep(0.05)
        assert not racing[0].done()  # it waits at the locked replicas

    replaced = await idx["n1"].write_checked("b", "k", entry("c", etag="EC"), judge, before_commit=still_locked)
    assert replaced["wid"] == "old"
    return racing[0]


async def test_a_write_arriving_during_the_commit_waits_and_lands_after_it(cluster) -> None:
    """Before, the commit-time check was a quorum read followed by a merge: a write
    acknowledged between the two was overwritten by the conditional one, whose condition no
    longer held (with the old two steps in place of ``write_checked``, this test and the
    increments below fail: the racing write is acknowledged first, and increments are lost)."""
    net, idx, regs = cluster
    racing = await commit_with_a_racing_write(idx, lambda: idx["n2"].put_displacing("b", "k", entry("u", etag="EU")))
    assert "c" in [e["wid"] for e in await racing]  # it replaced the conditional write
    await settle(idx)
    # The racing write was acknowledged after the conditional one: it is the later write.
    for n in ("n1", "n2", "n3"):
        assert (await idx[n].get("b", "k"))["wid"] == "u"


async def test_a_refused_condition_changes_nothing_and_releases_the_key(cluster) -> None:
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    with pytest.raises(errors.ConditionalRequestConflict):
        await idx["n1"].write_checked("b", "k", entry("c", etag="EC"), expect_etag("nope"))
    with pytest.raises(errors.ConditionalRequestConflict):
        await idx["n2"].write_checked("b", "k", None, expect_etag("nope"))  # a conditional delete
    await settle(idx)
    assert (await idx["n3"].get("b", "k"))["wid"] == "old"
    t0 = time.monotonic()
    await idx["n2"].put("b", "k", entry("u"))
    assert time.monotonic() - t0 < 1.0


async def test_a_conditional_delete_leaves_a_tombstone(cluster) -> None:
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    removed = await idx["n2"].write_checked("b", "k", None, expect_etag("E0"))
    assert removed["wid"] == "old"
    await settle(idx)
    for n in ("n1", "n2", "n3"):
        assert await idx[n].get("b", "k") is None
        assert regs[n].get_version("b", "k")[1] is not None  # a tombstone, newer than "old"


async def test_one_replica_down_a_quorum_commits_and_the_late_one_catches_up(cluster) -> None:
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    net.down = {"n3"}
    await idx["n1"].write_checked("b", "k", entry("c", etag="EC"), expect_etag("E0"))
    net.down = {"n1"}
    assert (await idx["n2"].get("b", "k"))["wid"] == "c"  # n2 and n3: read repair brings n3 up
    net.down = {"n2", "n3"}
    with pytest.raises(errors.WriteQuorumLost):
        await idx["n1"].write_checked("b", "k", entry("d"), expect_etag("EC"))


async def test_a_late_lock_answer_is_released_after_the_write(cluster) -> None:
    """A lock that reaches a replica only after the write finished (its call was slow) must not
    hold the key there until it expires."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    gate = asyncio.Event()
    real_lock = net.replicas["n3"].lock

    async def slow_lock(args: dict) -> dict:
        await gate.wait()
        return await real_lock(args)

    net.replicas["n3"].lock = slow_lock  # type: ignore[method-assign]
    await idx["n1"].write_checked("b", "k", entry("c", etag="EC"), expect_etag("E0"))
    gate.set()
    await settle(idx)
    await asyncio.sleep(0.05)
    await settle(idx)
    t0 = time.monotonic()
    await net.replicas["n3"].merge({"bucket": "b", "key": "k", "entry": None, "data": None,
                                    "ts": [idx["n3"].clock.now(), "x"]})
    assert time.monotonic() - t0 < 1.0


async def test_conditional_increments_through_three_nodes_never_lose_one(cluster) -> None:
    """Read, then write value + 1 if the key is still what was read, through all three nodes
    at once and with no lease above the index: every acknowledged increment is one step of one
    sequence (no two writers both win from the same value)."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "c", entry("v0", etag="0"))
    won: list[int] = []
    conflicts = 0

    rng = random.Random(7)

    async def worker(node: str, rounds: int) -> None:
        nonlocal conflicts
        done = 0
        pause = 0.001
        while done < rounds:
            current = await idx[node].get("b", "c")
            value = int(current["etag"])
            try:
                await idx[node].write_checked("b", "c", entry(f"v{value + 1}-{node}-{done}", etag=str(value + 1)),
                                              expect_etag(str(value)))
            except errors.ConditionalRequestConflict:  # a client's retry, with jittered backoff
                conflicts += 1
                await asyncio.sleep(rng.uniform(0, pause))
                pause = min(pause * 2, 0.05)
                continue
            won.append(value + 1)
            done += 1
            pause = 0.001

    await asyncio.gather(*(worker(n, 8) for n in ("n1", "n2", "n3")))
    assert sorted(won) == list(range(1, 25))
    assert int((await idx["n2"].get("b", "c"))["etag"]) == 24
    assert conflicts > 0  # they did race


async def test_a_blind_put_seen_by_a_read_does_not_come_back_after_a_later_write(cluster) -> None:
    """PUT A reaches replica n1 only (its calls to n2 and n3 are slow); a read through n3 and
    n1 returns A (writing it back to n3); PUT B is then acknowledged, newer, and read back;
    then A's slow calls arrive and are refused as older. A must not be merged again, newer
    than B: a read after all that must return B, since A was seen before B was written. (n3
    answers that the B it holds replaced A there, so A's writer counts A as applied on n1 and
    n3, a write quorum.)"""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old"))
    await settle(idx)
    gate = asyncio.Event()
    for node in ("n2", "n3"):
        real = net.replicas[node].merge

        async def slow_first_put(args: dict, real=real) -> dict:
            if args.get("displaced") and (args.get("entry") or {}).get("wid") == "A":
                await gate.wait()
            return await real(args)

        net.replicas[node].merge = slow_first_put  # type: ignore[method-assign]
    put_a = asyncio.ensure_future(idx["n1"].put_displacing("b", "k", entry("A")))
    while (regs["n1"].get_object("b", "k") or {}).get("wid") != "A":
        await asyncio.sleep(0.001)
    assert await wid_through(net, idx, "n3", without="n2") == "A"  # n3 and n1: A, written back to n3
    await asyncio.sleep(0.002)
    await idx["n2"].put_displacing("b", "k", entry("B"))
    assert await wid_through(net, idx, "n2", without="n1") == "B"
    gate.set()
    await put_a
    await settle(idx)
    assert (await idx["n2"].get("b", "k"))["wid"] == "B"


async def test_a_lock_left_by_another_write_on_one_replica_does_not_stop_a_conditional_write(
        cluster, monkeypatch) -> None:
    """A replica still held by another write (one that died between its locks and its commit,
    or whose unlock is still on its way) is like a replica that does not answer: a quorum of
    this write's own locks is enough. Held on a quorum, the write waits for them, then 409."""
    from buckets.cluster import index as index_module

    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    await net.replicas["n3"].lock({"bucket": "b", "key": "k", "id": "dead-writer", "ttl": 10})
    await idx["n1"].write_checked("b", "k", entry("c", etag="EC"), expect_etag("E0"))
    net.down = {"n3"}
    assert (await idx["n2"].get("b", "k"))["wid"] == "c"
    net.down = set()
    monkeypatch.setattr(index_module, "KEY_LOCK_WAIT", 0.3)
    await net.replicas["n2"].lock({"bucket": "b", "key": "k", "id": "dead-writer", "ttl": 10})
    t0 = time.monotonic()
    with pytest.raises(errors.ConditionalRequestConflict):
        await idx["n1"].write_checked("b", "k", entry("d", etag="ED"), expect_etag("EC"))
    assert time.monotonic() - t0 >= 0.3
    await net.replicas["n2"].unlock({"bucket": "b", "key": "k", "id": "dead-writer"})
    await idx["n1"].write_checked("b", "k", entry("d", etag="ED"), expect_etag("EC"))
    assert (await idx["n1"].get("b", "k"))["wid"] == "d"


async def test_a_blind_put_applied_on_a_quorum_stands_when_a_newer_write_refused_it(tmp_path) -> None:
    """PUT A is applied on n1 and n3 (n3's answer is slow) and refused on n2, which holds B,
    a newer write still in flight. A read through n1 and n3 returns A; B then lands on n3 and
    a read returns B. A must not be merged again over B (it would come back after B was
    read): having heard n3, A's writer finds its first version applied on a write quorum,
    so no write acknowledged before A began can be newer, and A stands as it is, older than
    B. (Before, A was merged again as soon as n2 refused it.)"""
    walls = {"n1": time.time, "n2": lambda: time.time() + 10.0, "n3": time.time}  # n2 writes newer versions
    net, idx, regs = await start_trio(tmp_path, walls)
    try:
        await idx["n1"].put("b", "k", entry("old"))
        await settle(idx)
        version_b = [idx["n2"].clock.now(), "B"]
        merge_b = {"bucket": "b", "key": "k", "entry": dict(entry("B"), ts=version_b), "data": None, "ts": version_b}
        await net.replicas["n2"].merge(merge_b)  # B in flight: on n2 only
        gate = asyncio.Event()
        attempts: set[tuple] = set()
        real_n1, real_n3 = net.replicas["n1"].merge, net.replicas["n3"].merge

        async def n1_merge(args: dict) -> dict:
            if args.get("displaced") and args["entry"]["wid"] == "A":
                attempts.add(tuple(args["ts"]))
            return await real_n1(args)

        async def n3_merge(args: dict) -> dict:
            ans = await real_n3(args)  # applied at once, answered late
            if args.get("displaced") and args["entry"]["wid"] == "A":
                await gate.wait()
            return ans

        net.replicas["n1"].merge, net.replicas["n3"].merge = n1_merge, n3_merge  # type: ignore[method-assign]
        put_a = asyncio.ensure_future(idx["n1"].put_displacing("b", "k", entry("A")))
        while any((regs[n].get_object("b", "k") or {}).get("wid") != "A" for n in ("n1", "n3")):
            await asyncio.sleep(0.001)
        assert await wid_through(net, idx, "n1", without="n2") == "A"
        await real_n3(merge_b)  # B reaches n3 too: acknowledged
        assert await wid_through(net, idx, "n2", without="n1") == "B"
        gate.set()
        await put_a
        await settle(idx)
        assert len(attempts) == 1  # A was not merged again
        for n in NODES:
            assert (await idx[n].get("b", "k"))["wid"] == "B"
    finally:
        await stop_trio(idx, regs)


async def test_a_read_whose_write_back_meets_a_newer_write_reads_again(cluster) -> None:
    """A read met a write in flight on one replica and writes it back; meanwhile a newer write
    lands on the replica it writes back to. That replica's "I hold something newer" does not
    make the version read safe to return (a blind PUT refused by that newer write may be merged
    again later, newer still): the read starts again and returns the newer write."""
    net, idx, regs = cluster
    await new_on_n1_only(idx)  # "old" everywhere, "new" on n1 only
    version_b = [idx["n2"].clock.now() + (1000 << 16), "B"]
    merge_b = {"bucket": "b", "key": "k", "entry": dict(entry("B"), ts=version_b), "data": None, "ts": version_b}
    real_n3 = net.replicas["n3"].merge

    async def n3_merge(args: dict) -> dict:
        if (args.get("entry") or {}).get("wid") == "new":  # the read's write-back: B lands first
            await real_n3(merge_b)
        return await real_n3(args)

    net.replicas["n3"].merge = n3_merge  # type: ignore[method-assign]
    assert await wid_through(net, idx, "n3", without="n2") == "B"
    assert regs["n1"].get_object("b", "k")["wid"] == "B"  # written back where it was missing


@pytest.mark.parametrize("how", ["delete", "put"])
async def test_a_plain_write_that_waited_for_the_lock_comes_after_the_conditional_write(cluster, how) -> None:
    """A DELETE (or a PUT after a read, as versioned buckets do) through another node reaches
    the replicas while a conditional write holds the key; its version, taken before it waited,
    is older than the conditional write's commit. It must still come after it: the conditional
    write's check did not see it. (Found by the cluster's history checker: a GET after an
    acknowledged DELETE returned the value of a conditional PUT that had judged the key
    before the DELETE.)"""
    net, idx, regs = cluster
    racing = await commit_with_a_racing_write(
        idx, (lambda: idx["n2"].delete("b", "k", "old")) if how == "delete"
        else (lambda: idx["n2"].put("b", "k", entry("u", etag="EU"))))
    await racing
    await settle(idx)
    for n in NODES:
        got = await idx[n].get("b", "k")
        assert (got is None) if how == "delete" else (got["wid"] == "u")


async def _commit_on_n2_only(net, idx, regs, key: str = "k") -> list:
    """A conditional write locked n1 and n2 (a quorum), judged the key at "old" and committed
    on n2 with a version well ahead (its writer's clock ran ahead); its commit to n1 was lost,
    so it ended its lock there (``committing``): the key is unsettled on n1."""
    await idx["n1"].put("b", key, entry("old", etag="E0"))
    await settle(idx)
    _, judged = regs["n2"].get_version("b", key)
    n1, n2 = idx["n1"].local, idx["n2"].local
    for replica in (n1, n2):
        assert (await replica.lock({"bucket": "b", "key": key, "id": "L1", "ttl": 5}))["entry"]["wid"] == "old"
    ahead = [idx["n2"].clock.now() + (1000 << 16), "cond"]
    committed = await n2.merge({"bucket": "b", "key": key, "entry": dict(entry("cond"), ts=ahead, cj=list(judged)),
                                "data": None, "ts": ahead, "lock": "L1", "judged": list(judged)})
    assert committed["applied"]
    # (The writer's unlock names the commit's version: n1 is unsettled until it holds it.)
    await n1.unlock({"bucket": "b", "key": key, "id": "L1", "committing": True, "ts": ahead})
    return ahead


@pytest.mark.parametrize("n2_answers", ["first", "last"])
async def test_a_blind_put_on_a_quorum_refused_by_a_conditional_commit_that_did_not_see_it_comes_after(
        cluster, n2_answers) -> None:
    """Traced from a lossy history (tests/unit/cluster/lossy_trace.py): a conditional write
    judged the key at "old" and committed on n2 (its commit to the replicas it had locked
    partly lost, their locks ended); a blind PUT then lands on n1 and n3, a quorum, and n2
    refuses it as older than that commit. The conditional write did not see the PUT, so it
    comes first: the PUT must be merged again, newer. Standing as it was (older), the PUT
    was acknowledged and then every read through n2 returned the conditional write.

    ``last``: n1 and n3 answer first, a quorum; n1's answer says the key is unsettled there
    (the lock ended without the commit), so the writer hears n2 too before acknowledging."""
    net, idx, regs = cluster
    await _commit_on_n2_only(net, idx, regs)
    if n2_answers == "last":
        net.held["n2"] = gate = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, gate.set)
    await idx["n1"].put_displacing("b", "k", entry("blind"))  # acknowledged
    net.held.clear()
    for down, via in ((set(), "n1"), (set(), "n2"), ({"n1"}, "n2"), ({"n3"}, "n2"), ({"n3"}, "n1")):
        net.down = down  # every read quorum that includes n2
        assert (await idx[via].get("b", "k"))["wid"] == "blind", (down, via)
    net.down = set()


async def test_a_blind_put_merged_again_after_a_conditional_write_stays_older_than_the_writes_after_it(cluster) -> None:
    """Traced from a lossy history (2026-12-02, session 21): a blind PUT P stood on n1 and n2
    (n2's answer lost), was read, and was replaced by W, acknowledged and read too; then its
    merge on n3, waiting behind a conditional write C's lock there, was refused by C's
    commit (newer than P's first version, and its check had not seen P). P is merged again
    after C, but just above C's version: merged again at its node's clock, P came back after
    W, a write that came after it (every read then returned P: one PUT taking effect twice)."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    _, judged = regs["n3"].get_version("b", "k")
    n3 = idx["n3"].local
    assert (await n3.lock({"bucket": "b", "key": "k", "id": "L1", "ttl": 5}))["entry"]["wid"] == "old"
    real = idx["n1"].transport
    lose = {"n2"}

    async def transport(node: str, method: str, args: dict):
        ans = await real(node, method, args)
        if method == "merge" and node in lose and (args.get("entry") or {}).get("wid") == "P":
            lose.discard(node)
            raise errors.ServiceUnavailable(f"{node}: answer lost")
        return ans

    idx["n1"].transport = transport
    put = asyncio.ensure_future(idx["n1"].put_displacing("b", "k", entry("P")))
    # P applied on n1 and n2; its merge on n3 waits for C's lock
    await until(lambda: held(regs, "n1")[0] == "P" and held(regs, "n2")[0] == "P")
    p_version = held(regs, "n1")[1]
    assert not put.done()
    net.down = {"n3"}  # (P's call to n3 is already on its way)
    assert (await idx["n2"].get("b", "k"))["wid"] == "P"
    await idx["n2"].put_displacing("b", "k", entry("W"))
    assert (await idx["n2"].get("b", "k"))["wid"] == "W"
    net.down = set()
    c_version = [p_version[0] + 1, "C"]  # C's writer took its version after P's, before W's
    assert tuple(c_version) < held(regs, "n1")[1]
    committed = await n3.merge({"bucket": "b", "key": "k", "entry": dict(entry("C"), ts=c_version), "data": None,
                                "ts": c_version, "lock": "L1", "judged": list(judged)})
    assert committed["applied"]
    await put
    await settle(idx)
    for down, via in ((set(), "n1"), (set(), "n3"), ({"n1"}, "n3"), ({"n2"}, "n3"), ({"n3"}, "n1")):
        net.down = down
        assert (await idx[via].get("b", "k"))["wid"] == "W", (down, via)
    net.down = set()


async def test_a_blind_put_that_cannot_hear_an_unsettled_keys_last_replica_is_not_acknowledged(cluster) -> None:
    """The same conditional commit, n2 (which holds it) down: the PUT reaches n1 and n3, a
    quorum, but n1 says the key is unsettled and n2 cannot say whether it holds a newer
    conditional write that comes first. Acknowledged, the PUT would be lost to that write when
    n2 returns; it fails instead (its outcome open, 503) and is undone where it was merged."""
    net, idx, regs = cluster
    await _commit_on_n2_only(net, idx, regs)
    net.down = {"n2"}
    with pytest.raises(errors.WriteQuorumLost, match="did not answer"):
        await idx["n1"].put_displacing("b", "k", entry("blind"))
    await settle(idx)
    assert regs["n1"].get_version("b", "k")[0]["wid"] == "old"
    assert regs["n3"].get_version("b", "k")[0]["wid"] == "old"
    net.down = set()
    assert (await idx["n1"].get("b", "k"))["wid"] == "cond"  # the conditional write's outcome was open


async def test_a_refused_conditional_write_leaves_the_key_settled(cluster) -> None:
    """A conditional write whose check refused it ends its locks before any commit: nothing
    was committed anywhere, so a blind PUT with a replica down is acknowledged as usual."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    for node in ("n1", "n2"):
        await idx[node].local.lock({"bucket": "b", "key": "k", "id": "L1", "ttl": 5})
        await idx[node].local.unlock({"bucket": "b", "key": "k", "id": "L1", "committing": False})
    net.down = {"n2"}
    await idx["n1"].put_displacing("b", "k", entry("blind"))
    assert (await idx["n1"].get("b", "k"))["wid"] == "blind"
    net.down = set()


async def test_an_expired_lock_leaves_the_key_unsettled(cluster, monkeypatch) -> None:
    """A lock whose writer never came back (no commit, no unlock) expires; the first merge
    after it says the key is unsettled, and an unsettled key is forgotten after
    UNSETTLED_SECONDS."""
    import buckets.cluster.index as index_module
    net, idx, regs = cluster
    n1 = idx["n1"].local
    await n1.lock({"bucket": "b", "key": "k", "id": "L1", "ttl": 0.05})
    await asyncio.sleep(0.1)
    v = [idx["n1"].clock.now(), "w1"]
    ans = await n1.merge({"bucket": "b", "key": "k", "entry": dict(entry("w1"), ts=v), "data": None, "ts": v})
    assert ans["applied"] and ans.get("unsettled") is True
    monkeypatch.setattr(index_module, "UNSETTLED_SECONDS", 0.0)
    v = [idx["n1"].clock.now(), "w2"]
    ans = await n1.merge({"bucket": "b", "key": "k", "entry": dict(entry("w2"), ts=v), "data": None, "ts": v})
    assert ans["applied"] and "unsettled" not in ans


async def _commit_unseen_by_n3(idx, regs) -> list:
    """A conditional write C judged key ``k`` at "old" and committed on n1 and n2, its version
    well ahead of n3's clock (which has passed "old": a write through n3 is newer than "old"
    and older than C, and C's check did not see it). Returns C's version."""
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    _, judged = regs["n1"].get_version("b", "k")
    idx["n3"].clock.observe(judged[0])  # W's writer read the key first (its version is newer than "old")
    for replica in (idx["n1"].local, idx["n2"].local):
        await replica.lock({"bucket": "b", "key": "k", "id": "L1", "ttl": 5})
    c = [idx["n3"].clock.now() + (1000 << 16), "C"]  # C's writer's clock ran ahead
    for replica in (idx["n1"].local, idx["n2"].local):
        assert (await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("C"), ts=c), "data": None,
                                     "ts": c, "lock": "L1", "judged": list(judged)}))["applied"]
    return c


@pytest.mark.parametrize("how", ["put", "delete"])
async def test_a_write_merged_again_after_a_conditional_write_goes_above_a_blind_put_that_may_be_undone(
        cluster, how) -> None:
    """A conditional write C locked n1 and n2, judged the key at "old" and committed there. A
    write W through n3 (its clock behind C's) is refused by C on n1 and n2 (C's check did not
    see it) and merged again just above C; meanwhile a blind PUT Z took that same clock value
    on n1 and n2 and wins the tie. Z's writer may still undo it there (no read returned it):
    counted as a newer write that stands, W was acknowledged on n3 alone, and once Z failed
    and was undone, reads returned C. W is merged again above Z instead (session 22 found this
    for the blind PUT in a lossy history; session 23 for a DELETE or a versioned write)."""
    net, idx, regs = cluster
    c = await _commit_unseen_by_n3(idx, regs)
    n1, n2 = idx["n1"].local, idx["n2"].local
    z = [c[0] + 1, "Z"]  # "Z" > "W": Z wins the tie with W's second version
    undo: dict[str, dict] = {}
    landed = asyncio.Event()
    real = idx["n3"].transport

    async def transport(node: str, method: str, args: dict):
        if method == "merge" and list(args.get("ts") or [])[:1] == [z[0]]:
            if not undo:  # the first of W's second merges: Z lands first
                undo["started"] = {}
                for name, replica in (("n1", n1), ("n2", n2)):
                    undo[name] = await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("Z"), ts=z),
                                                      "data": None, "ts": z, "displaced": True})
                landed.set()
            await landed.wait()
        return await real(node, method, args)

    idx["n3"].transport = transport
    if how == "put":
        await idx["n3"].put_displacing("b", "k", entry("W"))
    else:
        await idx["n3"].delete("b", "k", "W")
    assert undo, "W was not merged again at C's version + 1"
    assert undo["n1"]["applied"] and undo["n2"]["applied"]
    await settle(idx)
    for name, replica in (("n1", n1), ("n2", n2)):  # Z's writer heard no quorum: it undoes Z
        await replica.retract({"bucket": "b", "key": "k", "ts": z, "was": undo[name]["was"],
                               "prior": undo[name]["prior"]})
    for down, via in ((set(), "n1"), ({"n3"}, "n1"), ({"n2"}, "n1"), ({"n1"}, "n2")):
        net.down = down
        got = await idx[via].get("b", "k")
        assert (got is None) if how == "delete" else (got["wid"] == "W"), (down, via, got)
    net.down = set()


@pytest.mark.parametrize("how", ["put", "delete"])
async def test_a_write_merged_again_after_a_conditional_write_and_read_stands_when_a_blind_put_refuses_it(
        cluster, how) -> None:
    """Traced from test_index_history.py (session 26; 2 of 120 histories under load): a write W
    through n3 was refused by a conditional commit C whose check had not seen it and was merged
    again just above C. That second version reached n3, and a read through n1 returned it and
    wrote it back to n1: on a quorum. A blind PUT P was then acknowledged over it, and W's own
    delayed merges to n1 and n2 were refused by P, a version its writer might still undo. W's
    writer counted that as "not on a quorum" without asking and merged W again above P: a
    DELETE read as absent, then P, then absent again (one write taking effect twice). Now every
    replica is heard first, as for a first attempt: W stands on its quorum, older than P."""
    net, idx, regs = cluster
    c = await _commit_unseen_by_n3(idx, regs)
    second = c[0] + 1  # W's version once merged again just above C
    release = asyncio.Event()
    real = idx["n3"].transport

    async def transport(node: str, method: str, args: dict):
        if method == "merge" and node != "n3" and list(args.get("ts") or [])[:1] == [second]:
            await release.wait()  # W's second merges to n1 and n2 arrive late
        return await real(node, method, args)

    idx["n3"].transport = transport
    idx["n3"].timeout = 60.0  # W's held merges must not time out, however loaded the machine
    write = asyncio.ensure_future(idx["n3"].put_displacing("b", "k", entry("W")) if how == "put"
                                  else idx["n3"].delete("b", "k", "W"))
    await until(lambda: held(regs, "n3")[1][0] == second)
    assert held(regs, "n3")[1] == (second, "W")
    net.down = {"n2"}
    got = await idx["n1"].get("b", "k")  # reads n1 (C) and n3 (W), writes W back to n1
    net.down = set()
    assert (got is None) if how == "delete" else (got["wid"] == "W"), got
    assert held(regs, "n1")[1] == (second, "W")
    await idx["n1"].put_displacing("b", "k", entry("P"))
    await until(lambda: held(regs, "n2")[0] == "P")
    release.set()
    await write
    await settle(idx)
    for down, via in ((set(), "n1"), (set(), "n3"), ({"n1"}, "n2"), ({"n2"}, "n3"), ({"n3"}, "n1")):
        net.down = down
        got = await idx[via].get("b", "k")
        assert got is not None and got["wid"] == "P", (down, via, got)
    net.down = set()


@pytest.mark.parametrize("how", ["put", "delete"])
async def test_a_write_seen_by_a_conditional_write_is_not_merged_again_above_it(cluster, how) -> None:
    """Traced from test_index_history.py (session 26): a DELETE D reached n2 alone; a
    conditional write C (If-None-Match) locked n2 and n3, judged the key at D's tombstone on
    n2 and committed there. D's merge to n3 was refused by C (whose check saw D), its merge to
    n1 by a blind PUT that may be undone; D's writer, finding D on n2 alone, merged it again
    at its clock, above C: the key read absent, then C, then absent again. C's refusal says C
    came after D, as good as holding D: D stands, older than C. (A blind PUT the same.)"""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    n1, n2, n3 = idx["n1"].local, idx["n2"].local, idx["n3"].local
    release = asyncio.Event()
    real = idx["n2"].transport

    async def transport(node: str, method: str, args: dict):
        if method == "merge" and (args.get("entry") or {}).get("wid") in (None, "W") and not release.is_set():
            await release.wait()  # D's merges to n1 and n3 arrive late
        return await real(node, method, args)

    idx["n2"].transport = transport  # D's writer: n2 (its own replica answers at once)
    # D's held merges must not time out before the steps below are done, however loaded the
    # machine (fresh CI run 181: D had not reached n2 within 2 s).
    idx["n2"].timeout = 60.0
    write = asyncio.ensure_future(idx["n2"].delete("b", "k", "old") if how == "delete"
                                  else idx["n2"].put_displacing("b", "k", entry("W")))
    wrote = None if how == "delete" else "W"
    await until(lambda: held(regs, "n2")[0] == wrote)
    d = held(regs, "n2")[1]
    assert held(regs, "n2")[0] == wrote and d[1] == (wrote or "old")
    for replica in (n2, n3):
        await replica.lock({"bucket": "b", "key": "k", "id": "L1", "ttl": 5})
    c = [d[0] + 10, "C"]  # C judged the key at D (absent: If-None-Match passed; or If-Match W)
    for replica in (n2, n3):
        assert (await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry("C"), ts=c), "data": None,
                                     "ts": c, "lock": "L1", "judged": list(d)}))["applied"]
    p = [d[0] + 5, "P"]  # a blind PUT on n1 alone, its outcome still open
    assert (await n1.merge({"bucket": "b", "key": "k", "entry": dict(entry("P"), ts=p), "data": None,
                            "ts": p, "displaced": True}))["applied"]
    release.set()
    await write
    await settle(idx)
    assert held(regs, "n3")[0] == "C" and held(regs, "n2")[0] == "C"
    for down, via in ((set(), "n1"), (set(), "n3"), ({"n1"}, "n2"), ({"n2"}, "n3"), ({"n3"}, "n1")):
        net.down = down
        got = await idx[via].get("b", "k")
        assert got is not None and got["wid"] == "C", (down, via, got)
    net.down = set()


async def test_a_conditional_commit_never_replaces_a_write_its_check_did_not_see(cluster) -> None:
    """Traced from a lossy history (session 26, the finder's wider mix): a PUT U with an
    unknown outcome stood on n3 alone, newer than "old". A conditional write C (If-Match "old")
    judged the key on n1 and n2; its coordinator's own lock on n3 answered after that quorum,
    and the commit, lost to n1 and n2, landed on n3 over U. A read that had met U on n3 wrote
    it back to n1 and n2 and returned it; the next read returned C, whose condition ("old")
    no longer held once U had been read. A commit now applies only over versions at most the
    one its check judged, on a replica it locked or not; one refused that way does not count
    toward its quorum."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    _, judged = regs["n1"].get_version("b", "k")
    n3 = idx["n3"].local
    u = [judged[0] + 5, "U"]
    assert (await n3.merge({"bucket": "b", "key": "k", "entry": dict(entry("U"), ts=u), "data": None,
                            "ts": u}))["applied"]
    # The replica rule, with this commit's lock held there (its answer came too late to be
    # judged) and without it: refused, and the lock ends all the same.
    for lock in (True, False):
        if lock:
            assert (await n3.lock({"bucket": "b", "key": "k", "id": "L1", "ttl": 5}))["entry"]["wid"] == "U"
        c = [judged[0] + 10, "C"]
        ans = await n3.merge({"bucket": "b", "key": "k", "entry": dict(entry("C"), ts=c), "data": None,
                              "ts": c, "lock": "L1", "judged": list(judged)})
        assert not ans["applied"] and ans.get("unseen"), ans
        assert held(regs, "n3") == ("U", tuple(u))
    assert (await n3.lock({"bucket": "b", "key": "k", "id": "L2", "ttl": 5}))["entry"]["wid"] == "U"
    await n3.unlock({"bucket": "b", "key": "k", "id": "L2", "committing": False})
    # The writer: n3's lock never arrives, the commit to n2 is lost, n3 refuses it: one
    # replica applied it (n1), so it fails, and U stays on n3 (before: acknowledged, U replaced).
    real = idx["n1"].transport

    async def transport(node: str, method: str, args: dict):
        if (method == "lock" and node == "n3") or (method == "merge" and args.get("lock") and node == "n2"):
            raise errors.ServiceUnavailable(f"{node}: lost on the way")
        return await real(node, method, args)

    idx["n1"].transport = transport
    with pytest.raises(errors.WriteQuorumLost):
        await idx["n1"].write_checked("b", "k", entry("C2"), expect_etag("E0"))
    idx["n1"].transport = real
    assert held(regs, "n3") == ("U", tuple(u))
    assert held(regs, "n1")[0] == "C2" and held(regs, "n2")[0] == "old"


async def test_a_blind_put_refused_by_a_conditional_write_above_one_that_did_not_see_it_comes_after(cluster) -> None:
    """Traced from a lossy history (session 23): conditional writes C1 (If-Match "old") and
    then C2 (If-Match C1's value) committed on n1 and n2; a blind PUT P, invoked after both and
    with a version older than C1's (its node's clock behind), lands on n3 and is refused on n1
    by C2, whose check judged the key at C1's version, newer than P's. C2 saw P, the PUT's
    writer concluded, and acknowledged P as it stood, older; but C1, committed above P's
    version too, judged the key at "old": P came after it, and every read returned C2. A
    refusal now answers the oldest version any conditional commit above the refused one
    judged the key at."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    _, v0 = regs["n1"].get_version("b", "k")
    idx["n3"].clock.observe(v0[0])  # P's version is newer than "old" (taken after it, as it was)
    n1, n2 = idx["n1"].local, idx["n2"].local
    v1 = [idx["n3"].clock.now() + (1000 << 16), "C1"]  # C1's and C2's writer's clock ran ahead
    v2 = [v1[0] + (1 << 16), "C2"]
    for lock, version, judged in (("L1", v1, v0), ("L2", v2, tuple(v1))):
        for replica in (n1, n2):
            await replica.lock({"bucket": "b", "key": "k", "id": lock, "ttl": 5})
            assert (await replica.merge({"bucket": "b", "key": "k", "entry": dict(entry(version[1]), ts=version),
                                         "data": None, "ts": version, "lock": lock, "judged": list(judged)}))["applied"]
    net.down = {"n2"}
    await idx["n3"].put_displacing("b", "k", entry("P"))  # acknowledged: n3 applied it, n1 answered
    for down, via in (({"n2"}, "n1"), ({"n2"}, "n3"), ({"n3"}, "n1")):
        net.down = down
        assert (await idx[via].get("b", "k"))["wid"] == "P", (down, via)
    net.down = set()


async def _delete_around_the_commit(idx, regs, ahead: list, key: str = "k") -> None:
    """A DELETE whose version is older than the conditional commit's (its writer's clock had
    not seen it) lands on n1 and n3, a quorum, around the commit held by n2 alone (n2 refuses
    it; its writer merges it again above the commit later)."""
    vd = [ahead[0] - (10 << 16), "del"]
    assert tuple(vd) > held(regs, "n3", key)[1]
    for n in ("n1", "n3"):
        assert (await idx[n].local.merge({"bucket": "b", "key": key, "entry": None, "data": None, "ts": vd}))["applied"]


async def test_a_read_through_a_replica_whose_lock_ended_without_the_commit_hears_every_replica(cluster) -> None:
    """Traced from a lossy history (session 23): a conditional write C locked n1 and n2,
    judged the key at "old" and committed on n2 only; its commit to n1 was lost, so its writer
    ended the lock there. A DELETE, older than C's version but taken after C's check, then
    landed on n1 and n3. A read through n1 and n3 returned "no object" while a read through
    n2 returned C (and wrote it back): no order explains both, as C's check saw "old", not
    the DELETE. n1 now says the key is unsettled (it holds a version older than the commit its
    writer named), and a read through it hears every replica, or fails (503) if one is silent.
    Hearing them all, it finds that C never reached a quorum (n1 and n3 refuse it: they hold
    the DELETE its check did not see), and puts the DELETE above C (session 28; before, it
    wrote C back over the DELETE, correct only while the DELETE was still in flight)."""
    net, idx, regs = cluster
    ahead = await _commit_on_n2_only(net, idx, regs)
    await _delete_around_the_commit(idx, regs, ahead)
    for via in ("n3", "n1"):
        net.down = {"n2"}
        with pytest.raises(errors.ReadQuorumLost, match="without its commit"):
            await idx[via].get("b", "k")
        net.down = set()
    assert await idx["n3"].get("b", "k") is None
    await settle(idx)
    for n in NODES:
        assert held(regs, n) == (None, (ahead[0] + 1, "del")), n
    net.down = {"n2"}  # n1 holds a version newer than the commit now: settled, a quorum of two answers again
    assert await idx["n3"].get("b", "k") is None
    net.down = set()


@pytest.mark.parametrize("first", ["n1", "n2"])
async def test_a_conditional_write_through_a_replica_whose_lock_ended_without_the_commit_hears_every_replica(
        cluster, first) -> None:
    """The same, for a conditional write's check (its locks answer what the replicas hold):
    locking n1 and n3 only, it judged the key at the DELETE and committed with a version older
    than C's, then lost to C on every replica that held it. It hears n2 too, or fails. Hearing
    all three, it finds C never reached a quorum (n1 and n3 hold the DELETE C's check did not
    see): C failed, the key is judged at the DELETE, as a read now answers (session 28), and
    the write commits above both. ``first``: whose lock answers first, with n3's own; n1's
    says the key is unsettled there, n2's holds C: the DELETE on n3 alone cannot tell whether
    C reached a quorum, so n1 is locked too (before, the check judged the key at C)."""
    net, idx, regs = cluster
    ahead = await _commit_on_n2_only(net, idx, regs)
    await _delete_around_the_commit(idx, regs, ahead)
    net.down = {"n2"}
    with pytest.raises(errors.WriteQuorumLost, match="did not answer"):
        await idx["n3"].write_checked("b", "k", entry("new"), expect_etag(None))  # If-None-Match: *
    net.down = set()
    await settle(idx)
    assert held(regs, "n3")[0] is None and held(regs, "n1")[0] is None  # (its locks ended, nothing merged)
    real = idx["n3"].transport
    answered = asyncio.Event()
    last = "n2" if first == "n1" else "n1"

    async def transport(node: str, method: str, args: dict):
        if method == "lock" and node == last:
            await answered.wait()
        ans = await real(node, method, args)
        if method == "lock" and node == first:
            answered.set()
        return ans

    idx["n3"].transport = transport
    with pytest.raises(errors.ConditionalRequestConflict):
        await idx["n3"].write_checked("b", "k", entry("new"), expect_etag("e"))  # If-Match of C's ETag
    answered.clear()
    await idx["n3"].write_checked("b", "k", entry("new"), expect_etag(None))  # If-None-Match: * (deleted)
    idx["n3"].transport = real
    await settle(idx)
    for n in NODES:
        assert (await idx[n].get("b", "k"))["wid"] == "new"


async def test_a_replica_holding_the_lost_commits_version_is_settled(cluster) -> None:
    """The unsettled key ends once the replica holds a version at least as new as the commit
    its writer named (a write-back, anti-entropy, a newer write), not 150 s later; an undo
    taking it back below that version makes it unsettled again."""
    net, idx, regs = cluster
    ahead = await _commit_on_n2_only(net, idx, regs)
    n1 = idx["n1"].local
    assert n1.unsettled("b", "k", held(regs, "n1")[1])
    newer = [ahead[0] + 1, "w"]
    ans = await n1.merge({"bucket": "b", "key": "k", "entry": dict(entry("w"), ts=newer), "data": None, "ts": newer})
    assert ans["applied"] and "unsettled" not in ans
    assert not n1.unsettled("b", "k", tuple(newer))
    assert n1.unsettled("b", "k", tuple(held(regs, "n3")[1]))  # (a version below the commit's)


async def test_a_listing_through_a_replica_whose_lock_ended_without_the_commit_reads_the_key(cluster) -> None:
    """The same for a listing page: n1 and n3 both hold "old", so their pages agree, while a
    read through n2 returns the commit (its check saw "old": it stands once written back).
    n1's page names the key as unsettled, and the key is read with a point read that hears
    every replica (503 if one is silent), as a key the pages disagree about is."""
    net, idx, regs = cluster
    await _commit_on_n2_only(net, idx, regs)
    await idx["n1"].put("b", "j", entry("j"))
    net.down = {"n2"}
    with pytest.raises(errors.ReadQuorumLost, match="without its commit"):
        await idx["n3"].list("b")
    net.down = set()
    objects, prefixes, truncated = await idx["n3"].list("b")
    assert [k for k, _ in objects] == ["j", "k"] and not prefixes and not truncated
    assert objects[1][1]["etag"] == "e" and set(objects[1][1]) == set(objects[0][1])
    net.down = {"n2"}  # the point read wrote the commit back: settled
    assert [k for k, _ in (await idx["n3"].list("b"))[0]] == ["j", "k"]
    net.down = set()


async def test_a_listing_with_a_delimiter_shows_the_prefix_of_an_unsettled_key(cluster) -> None:
    """The unsettled key is the only one under its common prefix: the point read decides
    whether the prefix is listed."""
    net, idx, regs = cluster
    await _commit_on_n2_only(net, idx, regs, key="d/k")
    objects, prefixes, _ = await idx["n3"].list("b", delimiter="/")
    assert not objects and prefixes == ["d/"]


async def _commit_over_a_write_it_missed(net, idx, regs, c_on=("n2",), p_on=("n1", "n3"),
                                        deleting: bool = False) -> tuple[list, list]:
    """"old" everywhere; a conditional write C (If-Match "old") locked n2 and n3, judged the key
    at "old" and committed on ``c_on`` (by default n2 only: its commit to n3 was lost, its
    lock there ended, and n1, locked late, refused the commit as it held P). A blind PUT P,
    newer than "old" and older than C (its writer's clock behind C's), landed on ``p_on`` (by
    default n1 and n3, a quorum: n2's refusal never reached P's writer, so P stood and was
    acknowledged). ``deleting``: C is a conditional DELETE (If-Match "old"). Returns C's and
    P's versions."""
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    _, judged = regs["n2"].get_version("b", "k")
    c = [judged[0] + (1000 << 16), "C"]
    p = [judged[0] + (10 << 16), "P"]
    for n in c_on:
        replica = idx[n].local
        assert (await replica.lock({"bucket": "b", "key": "k", "id": "L1", "ttl": 5}))["entry"]["wid"] == "old"
        # (the entry as write_checked commits it: with the version its check judged; a
        # tombstone keeps it in the replica's registry)
        committed = await replica.merge({"bucket": "b", "key": "k", "data": None, "ts": c, "lock": "L1",
                                         "entry": None if deleting else dict(entry("C"), ts=c, cj=list(judged)),
                                         "judged": list(judged)})
        assert committed["applied"]
    for n in p_on:
        assert (await idx[n].local.merge({"bucket": "b", "key": "k", "entry": dict(entry("P"), ts=p), "data": None,
                                          "ts": p, "displaced": True}))["applied"]
    return c, p


async def test_a_read_never_spreads_a_failed_conditional_commit_over_a_write_its_check_did_not_see(cluster) -> None:
    """Traced from a lossy history (session 28, ``lossy_trace.py``): C's commit stood on n2
    alone, newer than P but judged before it. A read through n2 met C and P and wrote C, the
    newer, back over P on n1 and n3, and returned it: P, acknowledged, was lost to a write that
    failed and whose condition no longer held. The commit's entry now carries the version its
    check judged; n1 and n3 refuse it as the commit itself would be refused (``unseen``), so C
    never reached a quorum and never will, and the read puts P just above C instead (as P's
    writer would have, had it heard n2's refusal) and returns P."""
    net, idx, regs = cluster
    c, p = await _commit_over_a_write_it_missed(net, idx, regs)
    got = await idx["n2"].get("b", "k")
    assert got is not None and got["wid"] == "P"
    await settle(idx)  # (the read returned once a quorum held P above C; the third merge lands after)
    above = (c[0] + 1, "P")
    for n in NODES:
        assert held(regs, n) == ("P", above), n
        assert (await idx[n].get("b", "k"))["wid"] == "P"
    assert idx["n2"].voided == 1
    # P's own writer, merging it again just above C, lands on the very same version.
    for n in NODES:
        assert not (await idx[n].local.merge({"bucket": "b", "key": "k", "data": None, "displaced": True,
                                              "entry": dict(entry("P"), ts=list(above)), "ts": list(above)}))["applied"]


async def test_a_read_never_spreads_a_failed_conditional_delete_over_a_write_its_check_did_not_see(cluster) -> None:
    """The same with a conditional DELETE: its tombstone keeps the version its check judged,
    and the replicas' answers and the read's write-back carry it."""
    net, idx, regs = cluster
    c, p = await _commit_over_a_write_it_missed(net, idx, regs, deleting=True)
    assert held(regs, "n2") == (None, tuple(c))
    got = await idx["n2"].get("b", "k")
    assert got is not None and got["wid"] == "P"
    await settle(idx)
    for n in NODES:
        assert held(regs, n) == ("P", (c[0] + 1, "P")), n


@pytest.mark.parametrize("deleting", [False, True])
async def test_anti_entropy_does_not_spread_a_failed_conditional_commit_over_a_write_it_missed(
        cluster, deleting) -> None:
    """The same commit (or conditional DELETE) pulled by anti-entropy: n1 and n3 refuse it
    and keep P."""
    net, idx, regs = cluster
    await _commit_over_a_write_it_missed(net, idx, regs, deleting=deleting)
    for n in ("n1", "n3"):
        await idx[n].sync_bucket("b")
        assert held(regs, n)[0] == "P"


async def test_a_conditional_commit_on_a_quorum_is_read_though_a_replica_refuses_it(cluster) -> None:
    """C committed on n2 and n3 (acknowledged); a blind PUT P, taken after C's check and older
    than it, is in flight on n1 (n2 and n3 refused it; its writer merges it again above C). A
    read through n1 meets P and C: n1 refuses C's write-back, n3 holds C, so C stands on a
    quorum and is read; P is left to its writer. With n3 silent, whether C reached a quorum
    is unknown: the read fails (503) rather than choose."""
    net, idx, regs = cluster
    await _commit_over_a_write_it_missed(net, idx, regs, c_on=("n2", "n3"), p_on=("n1",))
    net.down = {"n3"}
    with pytest.raises(errors.ReadQuorumLost):
        await idx["n1"].get("b", "k")
    net.down = set()
    got = await idx["n1"].get("b", "k")
    assert got is not None and got["wid"] == "C"
    assert held(regs, "n1")[0] == "P" and held(regs, "n3")[0] == "C" and idx["n1"].voided == 0


async def test_a_new_write_made_from_a_conditional_commits_entry_is_no_commit(cluster) -> None:
    """An entry read from the index (a conditional commit's carries the version its check
    judged) and written again (a copy onto itself, a version's record rewritten) is a new
    write: it does not carry that version, and no replica refuses it for it."""
    net, idx, regs = cluster
    await idx["n1"].put("b", "k", entry("old", etag="E0"))
    await settle(idx)
    await idx["n1"].write_checked("b", "k", entry("C"), expect_etag("E0"))
    await settle(idx)
    current = await idx["n2"].get("b", "k")
    assert "cj" in current
    await idx["n2"].put_displacing("b", "k", dict(current, wid="again"))
    await settle(idx)
    for n in NODES:
        got, _ = regs[n].get_version("b", "k")
        assert got["wid"] == "again" and "cj" not in got


async def test_a_write_refused_by_a_conditional_commit_that_came_by_a_write_back_goes_above_it(cluster) -> None:
    """Traced from a lossy history (session 28, finder seed 233154): a conditional write C
    (If-Match "old") committed on n3 only; a read then wrote it back to n1 (which held "old",
    the version C's check saw) and returned it. A DELETE taken after C's check, older than C,
    landed on n2 and was refused by n1: n1 had C from a write-back, not from C's own commit,
    so its refusal did not say that C's check had not seen the DELETE, and the DELETE was
    acknowledged, older than C; reads then returned C. The refusal now names the held
    commit's judged version (its entry carries it), and the DELETE is merged again above C."""
    net, idx, regs = cluster
    c, _ = await _commit_over_a_write_it_missed(net, idx, regs, c_on=("n3",), p_on=())
    n1 = idx["n1"].local
    assert (await n1.merge({"bucket": "b", "key": "k", "data": None, "ts": c,
                            "entry": dict(entry("C"), ts=c, cj=list(held(regs, "n1")[1]))}))["applied"]
    # The DELETE's version older than C's (its writer's clock behind), n3 unreachable.
    idx["n2"].clock = type(idx["n2"].clock)(lambda: (c[0] >> 16) / 1000.0 - 0.5)
    net.down = {"n3"}
    await idx["n2"].delete("b", "k", "old")
    net.down = set()
    await settle(idx)
    assert held(regs, "n1")[0] is None and held(regs, "n1")[1] > tuple(c), held(regs, "n1")
    for via in NODES:
        assert await idx[via].get("b", "k") is None, via


@pytest.mark.parametrize("deleting", [False, True])
async def test_anti_entropy_settles_a_failed_conditional_commit_that_no_read_met(cluster, deleting) -> None:
    """The commit stood on n2 alone and no read met it: n1 and n3 refuse it (they hold P, which
    its check missed) and n2 refuses P (older than the commit), so the key's range differed at
    every anti-entropy pass until the next write of the key. A refusal as ``unseen`` now makes
    the pass read the key through a quorum, which puts P above the commit on every replica: the
    replicas converge, and a later pass repairs nothing."""
    net, idx, regs = cluster
    c, _ = await _commit_over_a_write_it_missed(net, idx, regs, deleting=deleting)
    await idx["n1"].sync_bucket("b")
    await settle(idx)
    above = (c[0] + 1, "P")
    for n in NODES:
        assert held(regs, n) == ("P", above), n
    assert idx["n1"].voided == 1
    for n in NODES:
        assert await idx[n].sync_bucket("b") == 0, n
        assert (await idx[n].get("b", "k"))["wid"] == "P"
