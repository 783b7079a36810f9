"""Moving a bucket's index replicas to a new generation's nodes (``ClusterCatalog.move_bucket_index``).

Six in-process nodes, each with its own LMDB registry; the control plane is the real
deterministic state machine (``ControlMachine``) with generation 1 on three nodes and
generation 2 on six; every node places the index through its own ``IndexPlacer`` over its
own *view* of the control plane, which lags: a node sees a committed change only when
``wait_applied`` (the membership layer's job in a real cluster) brings it up to date, one
node at a time, while clients keep writing and reading through every node. The transport
delays every call a little, so calls straddle the phase changes.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from buckets import errors
from buckets.cluster.catalog import UPLOADS, ClusterCatalog, IndexPlacer, applied_waiter, index_phase
from buckets.cluster.control import plan_table
from buckets.cluster.control_records import DiskRecord, Layout, NodeRecord
from buckets.cluster.control_state import ControlMachine, encode_command
from buckets.cluster.index import IndexPlacement, IndexReplica, ReplicatedIndex
from buckets.registry import Op as RegistryOp, Registry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cluster"))
from linearizability import DELETE, GET, PUT, Op, check  # noqa: E402

LAYOUT = Layout(k=2, m=1, block_size=1 << 20, partitions=64)
NAMES = [f"n{i}" for i in range(1, 7)]


def node(name: str) -> NodeRecord:
    i = int(name[1:])
    return NodeRecord(name, f"http://127.0.0.{i}:9000", f"127.0.0.{i}:10000", "active",
                      (DiskRecord(f"{name}d0", f"/srv/{name}/d0"),))


class Control:
    """The control plane's state machine, applied in-process (what ``ControlPlane`` offers the
    catalog: ``snapshot``, ``apply``, ``read``)."""

    def __init__(self) -> None:
        self.machine = ControlMachine()
        self.ts = 1_700_000_000.0
        self.real_time = False  # stamp commands with the wall clock, as ``ControlPlane.apply`` does
        self.fail_after: str | None = None  # crash the coordinator after committing this phase

    @property
    def snapshot(self):
        return self.machine.snapshot

    async def apply(self, op: str, **args: Any) -> Any:
        self.ts = time.time() if self.real_time else self.ts + 1
        result = self.machine.apply(encode_command(op, args, os.urandom(16), self.ts))
        if result[0] != "ok":
            if result[1] == "NoSuchBucket":
                raise errors.NoSuchBucket(resource=args.get("name"), BucketName=args.get("name"))
            if result[1] == "BucketChanged":
                raise errors.BucketSettingsChanged(result[2])
            if result[1] == "OperationAborted":
                raise errors.OperationAborted(result[2])
            raise AssertionError(result)
        await asyncio.sleep(0)
        return result[1]

    async def read(self, *, linearizable: bool = False):
        return self.machine.snapshot


class Cluster:
    def __init__(self, tmp_path: Path, seed: int = 1) -> None:
        self.tmp = tmp_path
        self.rng = random.Random(seed)
        self.control = Control()
        self.views: dict[str, Any] = {}
        self.regs: dict[str, Registry] = {}
        self.replicas: dict[str, IndexReplica] = {}
        self.idx: dict[str, ReplicatedIndex] = {}
        self.down: set[str] = set()
        self.delay = 0.002
        self.phases_seen: list[tuple] = []

    async def start(self) -> None:
        first = [node(n) for n in NAMES[:3]]
        await self.control.apply("init_cluster", deployment_id="dep", layout=LAYOUT.to_wire(),
                                 nodes=[n.to_wire() for n in first], table=plan_table(LAYOUT, first, 1))
        everyone = [node(n) for n in NAMES]
        previous = self.control.snapshot.topology.partition_table(1)
        await self.control.apply("propose_generation", expected_generation=1, nodes=[n.to_wire() for n in everyone],
                                 table=plan_table(LAYOUT, everyone, 2, previous))
        for n in NAMES:
            self.regs[n] = Registry(str(self.tmp / n), cache_size=1000, sync=False)
            self.regs[n].start()
            self.replicas[n] = IndexReplica(self.regs[n])
            self.views[n] = self.control.snapshot
            placer = IndexPlacer(lambda n=n: self.views[n])
            self.idx[n] = ReplicatedIndex(n, self.replicas[n], self.transport_for(n), placer.placement)
        # The coordinator runs on n1 and reads the control plane it just wrote.
        self.catalog = ClusterCatalog(self.control, self.idx["n1"])  # type: ignore[arg-type]

    async def close(self) -> None:
        for i in self.idx.values():
            await i.close()
        for r in self.regs.values():
            await r.close()

    def transport_for(self, src: str):
        async def call(dst: str, method: str, args: dict):
            await asyncio.sleep(self.rng.random() * self.delay)
            if dst in self.down or src in self.down:
                raise errors.ServiceUnavailable(f"{dst} unreachable")
            result = await self.replicas[dst].handlers()[method](args)
            await asyncio.sleep(self.rng.random() * self.delay)
            return result
        return call

    async def wait_applied(self, applied: int) -> None:
        """Every node applies the control plane up to ``applied``, one at a time, in random
        order, with the clients running in between."""
        assert self.control.snapshot.applied >= applied
        order = list(NAMES)
        self.rng.shuffle(order)
        for n in order:
            await asyncio.sleep(self.rng.random() * self.delay * 3)
            self.views[n] = self.control.snapshot
        if self.control.fail_after is not None:
            bucket = next(iter(self.control.snapshot.buckets.values()))
            if self.control.fail_after in bucket.settings or (self.control.fail_after == "plain"
                                                               and index_phase(bucket.settings)[1:] == (None, None)):
                self.control.fail_after = None
                raise ConnectionError("the coordinator died")
        for b in self.control.snapshot.buckets.values():
            self.phases_seen.append(index_phase(b.settings))

    def sets(self, bucket: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        placer = self.catalog.placer
        return placer.replica_set(bucket, 1), placer.replica_set(bucket, 2)

    async def bucket(self, name: str) -> None:
        await self.control.apply("create_bucket", name=name)
        for n in NAMES:
            self.views[n] = self.control.snapshot


def moving_bucket(cluster: Cluster, want_overlap: bool | None = None) -> str:
    """A bucket name whose index replica set changes from generation 1 to 2."""
    placer = IndexPlacer(lambda: cluster.control.snapshot)
    for i in range(1000):
        name = f"bucket-{i}"
        old, new = placer.replica_set(name, 1), placer.replica_set(name, 2)
        if set(old) != set(new) and (want_overlap is None or bool(set(old) & set(new)) == want_overlap):
            return name
    raise AssertionError("no bucket moves")


@pytest.fixture
async def cluster(tmp_path):
    c = Cluster(tmp_path)
    await c.start()
    yield c
    await c.close()


def entry(wid: str, size: int = 1) -> dict:
    return {"wid": wid, "size": size, "etag": "e", "mt": 1.0, "vid": "null"}


def live_keys(reg: Registry, bucket: str) -> dict[str, tuple]:
    return {k: v for k, v, tomb in reg.bucket_versions(bucket) if not tomb}


async def fill(cluster: Cluster, bucket: str, n: int = 120) -> tuple[set[str], set[str]]:
    keys = {f"k{i:03d}" for i in range(n)}
    for i, key in enumerate(sorted(keys)):
        await cluster.idx[NAMES[i % 6]].put(bucket, key, entry(f"w{i}"))
    deleted = {f"k{i:03d}" for i in range(0, n, 7)}
    for key in deleted:
        await cluster.idx["n4"].get(bucket, key)  # as the engine does: read, then delete
        await cluster.idx["n4"].delete(bucket, key, "x")
    await cluster.idx["n2"].put(bucket + UPLOADS, "up1", entry("up1"))
    await cluster.idx["n2"].put(bucket + UPLOADS, "up1/00001", entry("p1"))
    return keys - deleted, deleted


# -- placement -----------------------------------------------------------------------------------
async def test_placement_follows_the_phase(cluster) -> None:
    name = moving_bucket(cluster)
    await cluster.bucket(name)
    old, new = cluster.sets(name)
    placer = cluster.catalog.placer
    assert placer.placement(name) == IndexPlacement.single(old)
    assert placer.placement(name + UPLOADS) == placer.placement(name)  # uploads move with the bucket
    await cluster.control.apply("update_bucket", name=name, set={"index_next": 2})
    assert placer.placement(name) == IndexPlacement(old, (old, new))
    await cluster.control.apply("update_bucket", name=name, set={"index_gen": 2, "index_prev": 1},
                                unset=["index_next"])
    assert placer.placement(name) == IndexPlacement(new, (new, old))
    await cluster.control.apply("update_bucket", name=name, unset=["index_prev"])
    assert placer.placement(name) == IndexPlacement.single(new)
    assert set(placer.replicas(name)) == set(new)
    # A bucket deleted since keeps its last placement for its last calls (its uploads).
    await cluster.control.apply("delete_bucket", name=name)
    assert placer.placement(name + UPLOADS) == IndexPlacement.single(new)
    assert cluster.catalog.tables_by_generation().keys() == {1, 2}


# -- the move, step by step -------------------------------------------------------------------------
@pytest.mark.parametrize("overlap", [True, False], ids=["sets-overlap", "sets-disjoint"])
async def test_move_copies_entries_and_tombstones_and_drops_the_old_replicas(cluster, overlap) -> None:
    try:
        name = moving_bucket(cluster, overlap)
    except AssertionError:
        pytest.skip("no bucket with that kind of move in this table")
    await cluster.bucket(name)
    live, deleted = await fill(cluster, name)
    old, new = cluster.sets(name)

    result = await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
    assert result["copied"] > 0
    assert index_phase(cluster.control.snapshot.buckets[name].settings) == (2, None, None)
    assert cluster.phases_seen == [(1, 2, None), (2, None, 1), (2, None, 1), (2, None, None)]
    assert cluster.catalog.buckets_to_move(2) == []
    assert cluster.catalog.index_generations_in_use() == {2}

    for n in new:  # every new replica has every entry and every tombstone
        versions = {k: tomb for k, _, tomb in cluster.regs[n].bucket_versions(name)}
        assert {k for k, t in versions.items() if not t} == live
        assert {k for k, t in versions.items() if t} == deleted
        assert set(live_keys(cluster.regs[n], name + UPLOADS)) == {"up1", "up1/00001"}
    for n in set(old) - set(new):  # the old-only replicas hold nothing of the bucket any more
        assert cluster.regs[n].bucket_versions(name) == []
        assert cluster.regs[n].bucket_versions(name + UPLOADS) == []
    # Every node reads every entry from the new set (the old-only replicas are not asked).
    cluster.down = set(old) - set(new)
    for n in new:
        objects, _, truncated = await cluster.idx[n].list(name, limit=1000)
        assert {k for k, _ in objects} == live and not truncated
        assert await cluster.idx[n].get(name, sorted(deleted)[0]) is None
        assert (await cluster.idx[n].get(name + UPLOADS, "up1"))["wid"] == "up1"


async def test_a_new_replica_that_does_not_empty_itself_stops_the_move(cluster) -> None:
    """Step (a): a new-only replica may hold entries from an earlier stay of the index, among
    them one whose delete's tombstone was forgotten since (``forget_tombstones``); kept, it
    would spread that entry back. So its drop must succeed before the move goes on."""
    name = moving_bucket(cluster)
    await cluster.bucket(name)
    live, deleted = await fill(cluster, name)
    old, new = cluster.sets(name)
    fresh = sorted(set(new) - set(old))[0]
    stale = sorted(deleted)[0]
    await cluster.regs[fresh].commit([RegistryOp("merge_object", name, stale, value=entry("stale"), ts=(1, "stale"))])
    cluster.down = {fresh}
    with pytest.raises(errors.WriteQuorumLost):
        await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
    assert index_phase(cluster.control.snapshot.buckets[name].settings) == (1, None, None)
    cluster.down = set()
    await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
    assert index_phase(cluster.control.snapshot.buckets[name].settings) == (2, None, None)
    versions = {k: tomb for k, _, tomb in cluster.regs[fresh].bucket_versions(name)}
    assert versions[stale] is True and {k for k, t in versions.items() if not t} == live


async def test_writes_during_the_move_reach_a_quorum_of_both_sets(cluster) -> None:
    name = moving_bucket(cluster)
    await cluster.bucket(name)
    old, new = cluster.sets(name)
    await cluster.control.apply("update_bucket", name=name, set={"index_next": 2})
    await cluster.wait_applied(cluster.control.snapshot.applied)
    await cluster.idx["n5"].put(name, "during", entry("wd"))
    for members in (old, new):
        holders = [n for n in members if "during" in live_keys(cluster.regs[n], name)]
        assert len(holders) >= len(members) // 2 + 1
    # The old set is still what is read: a key only on new-only replicas is not seen.
    for n in set(new) - set(old):
        await cluster.regs[n].drop_entries(name)
    assert (await cluster.idx["n1"].get(name, "during"))["wid"] == "wd"


async def test_a_write_that_straddles_a_phase_change_is_written_again_under_the_new_one(cluster) -> None:
    name = moving_bucket(cluster, True)
    await cluster.bucket(name)
    old, new = cluster.sets(name)
    writer = sorted(set(NAMES) - set(old) - set(new)) or ["n1"]
    idx = cluster.idx[writer[0]]
    real = idx._call
    changed = asyncio.Event()

    async def slow(dst: str, method: str, args: dict, timeout: float | None = None):
        ans = await real(dst, method, args, timeout)
        if method == "merge" and not changed.is_set():
            # The phase changes at this node while its write is in flight to the old set.
            await cluster.control.apply("update_bucket", name=name, set={"index_next": 2})
            cluster.views[writer[0]] = cluster.control.snapshot
            changed.set()
        return ans

    idx._call = slow  # type: ignore[method-assign]
    await idx.put(name, "k", entry("w"))
    holders = [n for n in new if "k" in live_keys(cluster.regs[n], name)]
    assert len(holders) >= len(new) // 2 + 1


async def test_the_move_resumes_after_the_coordinator_dies_at_any_phase(cluster) -> None:
    name = moving_bucket(cluster)
    await cluster.bucket(name)
    live, deleted = await fill(cluster, name, 60)
    old, new = cluster.sets(name)
    for phase in ("index_next", "index_prev", "plain"):
        cluster.control.fail_after = phase
        with pytest.raises(ConnectionError):
            await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
        await cluster.idx["n3"].put(name, f"after-{phase}", entry(f"a-{phase}"))
        live.add(f"after-{phase}")
    await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
    assert index_phase(cluster.control.snapshot.buckets[name].settings) == (2, None, None)
    cluster.down = set(old) - set(new)
    for n in new:
        objects, _, _ = await cluster.idx[n].list(name, limit=1000)
        assert {k for k, _ in objects} == live
    for n in set(old) - set(new):  # the drop the last coordinator missed was done by the next
        assert cluster.regs[n].bucket_versions(name) == []
    assert "index_drop" not in cluster.control.snapshot.buckets[name].settings
    # Moving again is a no-op.
    again = await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
    assert again["copied"] == 0 and again["dropped"] == 0


async def test_the_copy_needs_a_read_quorum_of_the_old_set(cluster) -> None:
    name = moving_bucket(cluster, False)
    await cluster.bucket(name)
    live, _ = await fill(cluster, name, 30)
    old, new = cluster.sets(name)
    # One old replica down: the other two are a read quorum; the copy completes.
    cluster.down = {old[0]}
    await cluster.idx[next(n for n in NAMES if n != old[0])].put(name, "late", entry("late"))
    cluster.down = {old[0], old[1]}  # two of three down: no read quorum of the old set
    with pytest.raises(errors.WriteQuorumLost):
        await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
    assert index_phase(cluster.control.snapshot.buckets[name].settings) == (1, 2, None)  # stopped in (a)
    cluster.down = {old[0]}
    await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
    cluster.down = set()
    for n in new:
        assert set(live_keys(cluster.regs[n], name)) == live | {"late"}


async def test_an_unknown_generation_or_bucket_is_refused(cluster) -> None:
    name = moving_bucket(cluster)
    with pytest.raises(errors.NoSuchBucket):
        await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
    await cluster.bucket(name)
    with pytest.raises(errors.InvalidArgument):
        await cluster.catalog.move_bucket_index(name, 3, wait_applied=cluster.wait_applied)
    assert index_phase(cluster.control.snapshot.buckets[name].settings) == (1, None, None)


# -- clients during the move: nothing acknowledged is lost, every read is linearizable ----------------
@pytest.mark.parametrize("seed, overlap", [(1, True), (2, False), (3, True), (4, False)])
async def test_concurrent_clients_during_a_move_are_linearizable(tmp_path, seed, overlap) -> None:
    cluster = Cluster(tmp_path, seed)
    await cluster.start()
    try:
        name = moving_bucket(cluster, overlap)
        await cluster.bucket(name)
        # Enough keys that some are not rewritten while a phase lasts: a read that looked in
        # the wrong set would miss their last acknowledged write.
        keys = [f"key{i:02d}" for i in range(16)]
        cold = [f"cold{i}" for i in range(4)]  # written once before the move, only read after
        history: list[Op] = []
        acked: dict[str, int] = {}
        stop = asyncio.Event()
        counter = 0
        t0 = time.monotonic()

        def now() -> float:
            return time.monotonic() - t0

        for i, key in enumerate(keys + cold):
            start = now()
            await cluster.idx[NAMES[i % 6]].put(name, key, entry(f"first-{key}"))
            history.append(Op(50, key, PUT, f"first-{key}", start, now()))

        async def client(cid: int, via: str) -> None:
            nonlocal counter
            rng = random.Random(seed * 100 + cid)
            while not stop.is_set():
                key = rng.choice(keys)
                roll = rng.random()
                start = now()
                try:
                    if roll < 0.55:
                        # As the engine does: a PUT or DELETE first reads the key through a
                        # quorum, so its version is newer than every acknowledged one.
                        await cluster.idx[via].get(name, key)
                    if roll < 0.45:
                        counter += 1
                        value = f"v{counter}"
                        await cluster.idx[via].put(name, key, entry(value))
                        history.append(Op(cid, key, PUT, value, start, now()))
                    elif roll < 0.55:
                        await cluster.idx[via].delete(name, key, "x")
                        history.append(Op(cid, key, DELETE, None, start, now()))
                    else:
                        key = rng.choice(keys + cold)
                        got = await cluster.idx[via].get(name, key)
                        history.append(Op(cid, key, GET, None if got is None else got["wid"], start, now()))
                except errors.BucketsError:
                    raise AssertionError("no node is down: every call must succeed")
                acked[via] = acked.get(via, 0) + 1

        clients = [asyncio.ensure_future(client(i, NAMES[i % 6])) for i in range(6)]
        await asyncio.sleep(0.05)
        await cluster.catalog.move_bucket_index(name, 2, wait_applied=cluster.wait_applied)
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)

        assert len(acked) == 6 and sum(acked.values()) > 100
        result = check(history)
        assert result.ok, result.report()
        # After the move, the final state of every key, read through any node from the new set
        # alone, is the last acknowledged operation's.
        old, new = cluster.sets(name)
        cluster.down = set(old) - set(new)
        final = check(history + [Op(99, k, GET, _value(await cluster.idx[new[0]].get(name, k)), now(), now())
                                 for k in keys + cold])
        assert final.ok, final.report()
    finally:
        await cluster.close()


def _value(got: dict | None) -> str | None:
    return None if got is None else got["wid"]


async def test_applied_waiter_waits_for_every_live_node(cluster) -> None:
    target = cluster.control.snapshot.applied
    asked: list[str] = []
    behind = {"n2": 2}  # n2 answers "behind" twice, then catches up

    async def ask(node: str) -> int:
        asked.append(node)
        if node == "n6":
            raise errors.ServiceUnavailable("n6 is down")  # not live: not waited for
        if behind.get(node):
            behind[node] -= 1
            return target - 1
        return target

    await applied_waiter(lambda: cluster.control.snapshot, ask, poll=0)(target)
    assert asked.count("n2") == 3 and asked.count("n6") == 1 and asked.count("n1") == 1

    async def stuck(node: str) -> int:
        return target - 1

    with pytest.raises(errors.ServiceUnavailable):
        await applied_waiter(lambda: cluster.control.snapshot, stuck, poll=0, timeout=0)(target)

    async def hangs_on_n3(node: str) -> int:  # a node cut off: its call never answers
        if node == "n3":
            await asyncio.sleep(3600)
        return target

    t0 = asyncio.get_running_loop().time()
    await applied_waiter(lambda: cluster.control.snapshot, hangs_on_n3, poll=0, ask_timeout=0.05)(target)
    assert asyncio.get_running_loop().time() - t0 < 1.0  # not waited for past its call's timeout
    # Without any way to wait, a move refuses to start.
    name = moving_bucket(cluster)
    await cluster.bucket(name)
    with pytest.raises(errors.ServiceUnavailable):
        await cluster.catalog.move_bucket_index(name, 2)
    assert index_phase(cluster.control.snapshot.buckets[name].settings) == (1, None, None)


async def test_a_bucket_change_is_acknowledged_once_the_live_nodes_applied_it(cluster) -> None:
    """``catalog.settle``: create, update and delete (its mark, then the deletion) each wait for the live nodes with the
    number of the command just applied; a node still behind when the wait ends does not
    fail the change (it is committed)."""
    waited: list[int] = []

    async def wait(applied: int) -> None:
        waited.append(applied)
        assert cluster.control.snapshot.applied == applied  # the change itself is applied here

    catalog = ClusterCatalog(cluster.control, cluster.idx["n1"], wait_settled=wait)  # type: ignore[arg-type]
    await catalog.create_bucket("settled", {"created": 1.0})
    await catalog.update_bucket("settled", {"tags": {"a": "b"}}, [])
    await catalog.delete_bucket("settled")  # twice: its mark (writes refused), then the deletion
    assert len(waited) == 4 and waited == sorted(waited) and len(set(waited)) == 4

    async def behind(applied: int) -> None:
        raise errors.ServiceUnavailable("n2 has not applied it within 2s")

    slow = ClusterCatalog(cluster.control, cluster.idx["n1"], wait_settled=behind)  # type: ignore[arg-type]
    await slow.create_bucket("still-made", {"created": 1.0})
    assert "still-made" in cluster.control.snapshot.buckets
    # ... except a deletion's mark: a live node that has not applied it could acknowledge a
    # write that the emptiness check misses. The deletion fails (503), its mark removed.
    with pytest.raises(errors.ServiceUnavailable):
        await slow.delete_bucket("still-made")
    assert "deleting" not in cluster.control.snapshot.buckets["still-made"].settings


async def test_a_replica_down_during_a_deletion_drops_the_index_before_the_name_is_free(cluster) -> None:
    """A replica down while a bucket is deleted keeps the bucket's entries (here an object
    deleted meanwhile, whose tombstone it never got). The deletion records it as still to drop
    (``INDEX_DROP``), and a bucket of that name cannot be created until it has. The replicas that
    dropped refuse that replica's writes into the deleted bucket (a read's write-back would
    put the old object back into them). Back, it drops its copy and frees the name."""
    for replica in cluster.replicas.values():
        replica.bucket_known = lambda name: name in cluster.control.snapshot.buckets
    await cluster.bucket("gone")
    nodes = cluster.catalog.placer.placement("gone").nodes
    await cluster.idx["n1"].put("gone", "k", entry("w1"))
    victim = next(n for n in nodes if n != "n1")
    cluster.down.add(victim)
    await cluster.idx["n1"].get("gone", "k")
    await cluster.idx["n1"].delete("gone", "k", "x")
    await cluster.catalog.delete_bucket("gone")
    assert cluster.control.snapshot.jobs["index-drop/gone"].value == {"nodes": [victim]}
    with pytest.raises(errors.OperationAborted):
        await cluster.control.apply("create_bucket", name="gone")
    cluster.down.discard(victim)
    assert "k" in live_keys(cluster.regs[victim], "gone")
    with pytest.raises(errors.BucketsError):  # its write-back of the old object: refused by the others
        await cluster.idx[victim].put("gone", "k", entry("w1"))
    for n in nodes:
        if n != victim:
            assert not live_keys(cluster.regs[n], "gone"), n
    returned = ClusterCatalog(cluster.control, cluster.idx[victim])  # type: ignore[arg-type]
    assert await returned.finish_index_drops(victim) == 1
    assert not live_keys(cluster.regs[victim], "gone")
    assert "index-drop/gone" not in cluster.control.snapshot.jobs
    await cluster.bucket("gone")
    assert (await cluster.idx["n1"].list("gone"))[0] == []


def _watch_incarnations(cluster: Cluster) -> None:
    """Each replica and index asks the control plane which bucket a name is now (as ``node.py``
    wires them): whether it exists, and when that bucket was created."""
    def created(name: str) -> float | None:
        rec = cluster.control.snapshot.buckets.get(name)
        return rec.created if rec is not None else None

    for replica in cluster.replicas.values():
        replica.bucket_known = lambda name: name in cluster.control.snapshot.buckets
        replica.bucket_created = created
    for index in cluster.idx.values():
        index.bucket_created = created


async def test_a_write_back_held_past_a_bucket_deletion_stays_out_of_a_bucket_created_again(cluster) -> None:
    """A read's write-back delayed in the network (or a slow peer) past the object's deletion,
    its bucket's deletion and a new bucket of that name: it brought the deleted object into
    the new bucket. The write-back carries when the bucket it read was created; a replica
    refuses it into another bucket of that name (``NoSuchBucket``)."""
    _watch_incarnations(cluster)
    await cluster.bucket("again")
    nodes = cluster.catalog.placer.placement("again").nodes
    reader = next(n for n in NAMES if n not in nodes)  # reads nodes[0] and nodes[1]
    lacking = nodes[1]
    cluster.down.add(lacking)
    await cluster.idx[nodes[0]].put("again", "k", entry("w1"))  # on nodes[0] and nodes[2]
    cluster.down.discard(lacking)
    gate, held = asyncio.Event(), asyncio.Event()
    plain = cluster.idx[reader].transport

    async def slow_write_back(dst: str, method: str, args: dict):
        if dst == lacking and method == "merge" and (args.get("entry") or {}).get("wid") == "w1":
            held.set()
            await gate.wait()
        return await plain(dst, method, args)

    cluster.idx[reader].transport = slow_write_back
    assert (await cluster.idx[reader].get("again", "k"))["wid"] == "w1"  # on a quorum: returned
    await asyncio.wait_for(held.wait(), 5)
    await cluster.idx[nodes[0]].delete("again", "k", "x")
    await cluster.catalog.delete_bucket("again")
    await cluster.bucket("again")
    gate.set()
    for _ in range(200):  # the held call runs to its end
        await asyncio.sleep(0.01)
    for n in nodes:
        assert not live_keys(cluster.regs[n], "again"), n
    assert await cluster.idx[reader].get("again", "k") is None
    assert (await cluster.idx[reader].list("again"))[0] == []


async def test_a_write_back_reaching_a_replica_behind_the_deletion_after_its_drop_is_refused(cluster) -> None:
    """The same write-back reaching a replica whose node has not applied the deletion yet, but
    has dropped the bucket's index (the deleting node's call): the name still names the old
    bucket there, so the creation time matches; the replica remembers what it dropped."""
    _watch_incarnations(cluster)
    await cluster.bucket("behind")
    nodes = cluster.catalog.placer.placement("behind").nodes
    old = cluster.control.snapshot.buckets["behind"].created
    lag = nodes[1]
    stale_view = cluster.control.snapshot  # lag's node does not apply the deletion
    cluster.replicas[lag].bucket_known = lambda name: name in stale_view.buckets
    cluster.replicas[lag].bucket_created = lambda name: stale_view.buckets[name].created \
        if name in stale_view.buckets else None
    await cluster.catalog.delete_bucket("behind")  # its replica drops the index (as deleted)
    write_back = {"bucket": "behind", "key": "k", "entry": entry("w1"), "data": None, "ts": [1, 0], "created": old}
    with pytest.raises(errors.NoSuchBucket):
        await cluster.replicas[lag].merge(write_back)
    assert not live_keys(cluster.regs[lag], "behind")
    # A merge of another bucket under that name, or an untagged one (a writer's), is not refused.
    await cluster.replicas[lag].merge({**write_back, "created": None, "key": "k2"})


async def test_writes_from_a_node_behind_a_deletion_stay_out_of_a_bucket_created_again(cluster) -> None:
    """A node that has not applied a bucket's deletion and its creation again (behind on the
    control plane) still writes into the bucket it has: a PUT, a DELETE, a conditional write,
    and the migration's move of an entry read before the deletion. Each names the bucket it
    writes into, and the replicas, which dropped that bucket, refuse it: nothing of the old
    bucket lands in the new one."""
    _watch_incarnations(cluster)
    await cluster.bucket("twice")
    nodes = cluster.catalog.placer.placement("twice").nodes
    writer = next(n for n in NAMES if n not in nodes)
    old = cluster.control.snapshot.buckets["twice"].created
    cluster.idx[writer].bucket_created = lambda name: old  # its node stays behind
    await cluster.catalog.delete_bucket("twice")
    await cluster.bucket("twice")
    assert cluster.control.snapshot.buckets["twice"].created != old
    index = cluster.idx[writer]
    with pytest.raises(errors.BucketsError):
        await index.put("twice", "k", entry("w1"))
    with pytest.raises(errors.BucketsError):
        await index.put_displacing("twice", "k", entry("w2"))
    with pytest.raises(errors.BucketsError):
        await index.write_checked("twice", "k", entry("w3"), lambda current: None)
    with pytest.raises(errors.BucketsError):
        await index.put_version("twice", "k", entry("w4"), [1, "w4", 2])
    with pytest.raises(errors.BucketsError):  # the mover read it from the old bucket
        await cluster.idx["n1"].put_version("twice", "k", entry("w5"), [2, "w5", 2], created=old)
    for n in nodes:
        assert not live_keys(cluster.regs[n], "twice"), n
    # The same writes from a node that has the new bucket land.
    await cluster.idx["n1"].put("twice", "k", entry("w6"))
    assert (await cluster.idx["n1"].get("twice", "k"))["wid"] == "w6"


async def test_two_deletions_of_one_bucket_at_once_each_get_its_own_answer(cluster) -> None:
    """Two DeleteBuckets of one bucket through two nodes at once (the cluster fuzz found it:
    31 answers of 503 in 300 s). Each set the mark, and the first to fail removed it under the
    other, whose emptiness check then found no replica with a mark: 503; and a write in that
    unmarked window could be deleted with the bucket. The mark is now each deletion's own: a
    bucket not empty answers ``BucketNotEmpty`` to both, an empty one is deleted by one while
    the other answers ``NoSuchBucket``."""
    from buckets.cluster.catalog import DELETING

    for replica in cluster.replicas.values():
        replica.bucket_known = lambda name: name in cluster.control.snapshot.buckets
        replica.bucket_deleting = cluster.catalog.deleting

    def settling(seconds: float):  # the live nodes take a while to apply each change
        async def wait(applied: int) -> None:
            await asyncio.sleep(seconds)
        return wait

    one = ClusterCatalog(cluster.control, cluster.idx["n1"], wait_settled=settling(0.01))  # type: ignore[arg-type]
    two = ClusterCatalog(cluster.control, cluster.idx["n2"], wait_settled=settling(0.2))  # type: ignore[arg-type]
    await cluster.bucket("both")
    await cluster.idx["n1"].put("both", "k", entry("w1"))
    for _ in range(4):
        answers = await asyncio.gather(one.delete_bucket("both"), two.delete_bucket("both"), return_exceptions=True)
        assert all(isinstance(a, errors.BucketNotEmpty) for a in answers), answers
        assert DELETING not in cluster.control.snapshot.buckets["both"].settings
    await cluster.idx["n1"].get("both", "k")
    await cluster.idx["n1"].delete("both", "k", "x")
    answers = await asyncio.gather(one.delete_bucket("both"), two.delete_bucket("both"), return_exceptions=True)
    assert sorted(type(a).__name__ for a in answers) == ["NoSuchBucket", "list"], answers
    assert "both" not in cluster.control.snapshot.buckets
    # The deletion itself applies only under the mark its check ran under.
    await cluster.bucket("solo")
    await cluster.control.apply("update_bucket", name="solo", set={DELETING: 2e9}, unset=[])
    with pytest.raises(errors.BucketSettingsChanged):
        await cluster.control.apply("delete_bucket", name="solo", drop=[], expect={DELETING: 2e9 + 1})
    assert "solo" in cluster.control.snapshot.buckets


async def test_a_deletion_that_stalls_past_its_mark_leaves_the_writes_let_in_after_the_mark(cluster, monkeypatch) -> None:
    """A DeleteBucket whose node stalled after its emptiness check until its mark had ended (a
    long pause of the process, a slow control plane) went on and deleted the bucket, while every
    node had let writes in again since the mark ended: an acknowledged PUT went with the bucket.
    A deletion is now proposed only while enough of its mark is left (``DELETING_MARGIN``), and
    the control plane applies it only if its proposal time says so too (``before``)."""
    from buckets.cluster import catalog as catalog_module

    monkeypatch.setattr(catalog_module, "DELETING_SECONDS", 0.6)
    monkeypatch.setattr(catalog_module, "DELETING_MARGIN", 0.2)
    for replica in cluster.replicas.values():
        replica.bucket_known = lambda name: name in cluster.control.snapshot.buckets
        replica.bucket_deleting = cluster.catalog.deleting
    cluster.control.real_time = True
    writer = ClusterCatalog(cluster.control, cluster.idx["n2"])  # type: ignore[arg-type]
    for name, stall in (("paused", "proposal"), ("slow", "check")):
        await cluster.bucket(name)
        stalled = asyncio.Event()
        apply, uploads = cluster.control.apply, cluster.catalog.list_uploads

        async def slow_apply(op: str, **args: Any) -> Any:
            if op == "delete_bucket":  # the deleting node stalls between its check and the proposal
                stalled.set()
                await asyncio.sleep(0.8)
            return await apply(op, **args)

        async def slow_uploads(bucket: str) -> Any:  # the end of the check (uploads to drop) is slow
            found = await uploads(bucket)
            stalled.set()
            await asyncio.sleep(0.8)
            return found

        if stall == "proposal":
            monkeypatch.setattr(cluster.control, "apply", slow_apply)
        else:
            monkeypatch.setattr(cluster.catalog, "list_uploads", slow_uploads)
        deletion = asyncio.ensure_future(cluster.catalog.delete_bucket(name))
        await stalled.wait()
        await asyncio.sleep(0.7)
        assert not cluster.catalog.deleting(name)  # the mark ended: writes are let in, and acknowledged
        await writer.put_object(name, "late", entry(f"w-{name}"))
        with pytest.raises(errors.OperationAborted):
            await deletion
        monkeypatch.setattr(cluster.control, "apply", apply)
        monkeypatch.setattr(cluster.catalog, "list_uploads", uploads)
        assert name in cluster.control.snapshot.buckets, stall
        assert (await cluster.idx["n3"].get(name, "late"))["wid"] == f"w-{name}"
        assert "deleting" not in cluster.control.snapshot.buckets[name].settings  # its mark went with it
