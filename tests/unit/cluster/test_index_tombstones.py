"""Old tombstones are forgotten (``ReplicatedIndex.forget_tombstones``): only those every replica
holds exactly, so no replica keeps an entry a forgotten delete removed; nothing while a replica
does not answer or the index moves; a replica's own forgetting only where its key still holds
the tombstone; and what anti-entropy keeps agreeing on afterwards.

Three replicas with their own LMDB registries in one process (``test_index_replication.py``).
"""

from __future__ import annotations

import pytest

from buckets.cli.config import ConfigError, build_config
from buckets.cluster.index import TOMBSTONE_SWEEP, TOMBSTONE_TTL, IndexPlacement, tombstone_sweep_interval
from buckets.cluster.rpcerrors import BadPeerRequest
from buckets.registry import Op
from buckets.registry.digests import DIGEST_RANGES, range_digests

from test_index_replication import NODES, entry, settle, start_trio, stop_trio

FAR = 1 << 62  # a horizon past every version: every tombstone is "old"


@pytest.fixture
async def cluster(tmp_path):
    net, idx, regs = await start_trio(tmp_path, leases=False)
    yield net, idx, regs
    await stop_trio(idx, regs)


def tombs(reg, bucket: str = "b") -> dict[str, tuple]:
    return {k: v for k, v, t in reg.bucket_versions(bucket) if t}


async def _deleted(idx, n: int, prefix: str = "k") -> None:
    for i in range(n):
        await idx["n1"].put("b", f"{prefix}{i:03d}", entry(f"w{i}"))
    for i in range(n):
        await idx["n1"].delete("b", f"{prefix}{i:03d}", f"d{i}")
    await settle(idx)


async def test_tombstones_every_replica_holds_are_forgotten_everywhere(cluster) -> None:
    net, idx, regs = cluster
    await _deleted(idx, 30)
    await idx["n1"].put("b", "live", entry("wl"))
    await settle(idx)
    assert all(len(tombs(regs[n])) == 30 == regs[n].count_tombstones() for n in NODES)
    before = [(await idx[n].local.digest({"bucket": "b"}))["digest"] for n in NODES]
    forgot, after = await idx["n1"].forget_tombstones("b", FAR)
    assert (forgot, after) == (30, None)
    assert all(tombs(regs[n]) == {} and regs[n].count_tombstones() == 0 for n in NODES)
    assert all(idx[n].local.tombstones_forgotten == 30 for n in NODES)  # (the metric's counter)
    # The kept digests folded the tombstones out (equal to a fresh scan), and still agree.
    digests = [(await idx[n].local.digest({"bucket": "b"}))["digest"] for n in NODES]
    assert digests[0] == digests[1] == digests[2] != before[0]
    assert all(digests[i] == range_digests(regs[n].bucket_versions("b"), DIGEST_RANGES) for i, n in enumerate(NODES))
    assert all(regs[n].digests.scans == 1 for n in NODES)  # folded, not scanned again
    assert await idx["n3"].sync_bucket("b") == 0
    assert await idx["n2"].get("b", "k005") is None and (await idx["n2"].get("b", "live"))["wid"] == "wl"


async def test_only_tombstones_older_than_the_horizon_go(cluster) -> None:
    net, idx, regs = cluster
    await _deleted(idx, 5, "old")
    horizon = idx["n1"].clock.now()
    await _deleted(idx, 5, "new")
    forgot, _ = await idx["n1"].forget_tombstones("b", horizon)
    assert forgot == 5
    assert sorted(tombs(regs["n2"])) == [f"new{i:03d}" for i in range(5)]


async def test_a_replica_that_missed_the_delete_holds_the_forgetting_back(cluster) -> None:
    """n3 still holds the entry the delete removed: forgetting the tombstone on n1 and n2 would
    leave that entry for anti-entropy to spread back."""
    net, idx, regs = cluster
    for k in ("a", "b2", "c"):
        await idx["n1"].put("b", k, entry(f"w-{k}"))
    await settle(idx)
    net.down = {"n3"}
    await idx["n1"].delete("b", "a", "da")
    net.down = set()
    await idx["n1"].delete("b", "c", "dc")
    await settle(idx)
    forgot, _ = await idx["n1"].forget_tombstones("b", FAR)
    assert forgot == 1  # "c", held by all three; "a" kept on n1 and n2
    assert sorted(tombs(regs["n1"])) == sorted(tombs(regs["n2"])) == ["a"]
    assert (await idx["n3"].local.get({"bucket": "b", "key": "a"}))["entry"]["wid"] == "w-a"
    # Anti-entropy brings the tombstone to n3; the next round forgets it everywhere.
    await idx["n3"].sync_bucket("b")
    assert sorted(tombs(regs["n3"])) == ["a"]
    assert (await idx["n1"].forget_tombstones("b", FAR))[0] == 1
    assert all(tombs(regs[n]) == {} for n in NODES)
    assert [await idx[n].get("b", "a") for n in NODES] == [None, None, None]
    assert await idx["n1"].sync_bucket("b") == 0 and await idx["n3"].sync_bucket("b") == 0


async def test_nothing_is_forgotten_while_a_replica_does_not_answer(cluster) -> None:
    net, idx, regs = cluster
    await _deleted(idx, 4)
    net.down = {"n2"}
    with pytest.raises(Exception):
        await idx["n1"].forget_tombstones("b", FAR)
    assert all(len(tombs(regs[n])) == 4 for n in NODES)


async def test_nothing_is_forgotten_while_the_index_moves(cluster) -> None:
    net, idx, regs = cluster
    await _deleted(idx, 4)
    idx["n1"].replicas_of = lambda bucket: IndexPlacement(("n1", "n2", "n3"), (("n1", "n2", "n3"), ("n1", "n2")))
    assert await idx["n1"].forget_tombstones("b", FAR) == (0, None)
    assert all(len(tombs(regs[n])) == 4 for n in NODES)


async def test_a_replica_forgets_a_tombstone_only_while_its_key_holds_it(cluster) -> None:
    """Between the replicas' answers and the forgetting, a newer write (or one whose key is
    locked) keeps its state: the forget is conditional on the exact tombstone."""
    net, idx, regs = cluster
    await _deleted(idx, 3)
    held = {k: list(v) for k, v in tombs(regs["n2"]).items()}
    assert (await idx["n2"].local.tombs_held({"bucket": "b", "items": [[k, v] for k, v in held.items()]}))["held"] \
        == [True, True, True]
    await idx["n1"].put("b", "k001", entry("again"))  # a newer write lands meanwhile
    await settle(idx)
    await regs["n2"].commit([Op("lock_key", "b", "k002", value={"id": "L", "until": 4e9})])
    answer = await idx["n2"].local.forget_tombs({"bucket": "b", "items": [[k, v] for k, v in held.items()]})
    assert answer == {"forgot": 1}  # k000 only: k001 holds a newer entry, k002 is locked
    assert (await idx["n2"].get("b", "k001"))["wid"] == "again"
    assert sorted(tombs(regs["n2"])) == ["k002"]
    # A tombstone of another version than the key's is not "held".
    wrong = [["k002", [held["k002"][0] - 1, "x"]]]
    assert (await idx["n2"].local.tombs_held({"bucket": "b", "items": wrong}))["held"] == [False]


async def test_the_walk_resumes_in_batches(cluster) -> None:
    net, idx, regs = cluster
    await _deleted(idx, 25)
    after, total, rounds = "", 0, 0
    while after is not None:
        n, after = await idx["n1"].forget_tombstones("b", FAR, after, limit=10)
        total, rounds = total + n, rounds + 1
    assert total == 25 and rounds == 3
    assert all(tombs(regs[n]) == {} for n in NODES)


@pytest.mark.parametrize("args", [
    {}, {"bucket": "b"}, {"bucket": "", "items": []}, {"bucket": "b", "items": "k"},
    {"bucket": "b", "items": [["k"]]}, {"bucket": "b", "items": [["k", [1]]]}, {"bucket": "b", "items": [[1, [1, "w"]]]},
])
async def test_bad_calls_are_refused(cluster, args) -> None:
    net, idx, regs = cluster
    for call in (idx["n1"].local.tombs_held, idx["n1"].local.forget_tombs):
        with pytest.raises(BadPeerRequest):
            await call(args)


@pytest.mark.parametrize("raw, seconds", [(None, TOMBSTONE_TTL), (" 3 ", 3.0), ("86400", 86400.0), ("1", 1.0),
                                          ("2.5", 2.5)])
def test_the_retention_a_node_is_given(raw, seconds) -> None:
    environ = {} if raw is None else {"BUCKETS_TOMBSTONE_RETENTION": raw}
    assert build_config({"paths": ["/tmp/d1"]}, environ).tombstone_retention == seconds
    if raw is not None:
        assert build_config({"paths": ["/tmp/d1"], "tombstone_retention": raw}, {}).tombstone_retention == seconds


@pytest.mark.parametrize("raw", ["0", "0.5", "-3", "a week", "nan", "inf", "1e400"])
def test_a_retention_that_is_not_a_number_of_seconds_is_refused(raw) -> None:
    with pytest.raises(ConfigError, match="tombstone retention"):
        build_config({"paths": ["/tmp/d1"]}, {"BUCKETS_TOMBSTONE_RETENTION": raw})


def test_sweeps_are_hourly_or_twice_per_retention() -> None:
    assert tombstone_sweep_interval(TOMBSTONE_TTL) == TOMBSTONE_SWEEP == 3600
    assert tombstone_sweep_interval(600) == 300
    assert tombstone_sweep_interval(1) == 1.0  # never more than once a second
