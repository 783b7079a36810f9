"""Growing and shrinking a cluster under load, one node at a time (issue 10, "Must show").

Real ``buckets server`` processes on 127.0.0.1-6 (growkit.py): node 1 starts as a one-node URL
cluster, the others join with ``--join`` and are placed with the real ``buckets-admin cluster
add-node``; client threads (boto3, retries off, so every failure is counted) run
PUT/GET/DELETE/LIST through random live nodes meanwhile.

1. ``test_growth_under_load`` (``fast`` in the default run: 1 -> 2 -> 3 nodes; ``full`` under
   the ``cluster`` marker: 1 -> 2 -> 3 -> 4 nodes) with objects of mixed sizes (inline, single-block,
   multi-block, multipart): 0 failed requests other than 503s (counted and printed), 0 lost
   objects, 0 wrong bytes, complete listings; the shard bytes each step moved are printed
   beside the optimum 1/(N+1) and bounded by 1.1 x optimum + a slack for tiny data sets
   (growkit.movement_bound says why).

The ``cluster``-marked chain (one cluster, each test leaves it for the next):

2. remove-node 4 -> 3 under the same load and guarantees; the drained node leaves and holds
   nothing;
3. the linearizability checker (linearizability.py) over clients on a few keys through every
   node while node 5 is added;
4. pause, resume and throttle of a running migration (node 5 drained again) take effect
   within a second, seen on the job's counters;
5. kill -9 of the coordinator (the control-plane leader) halfway through adding node 6; it
   restarts with its first command line; the migration resumes from its checkpoint and every
   object reads back through every node;
6. ``remove-node --force`` of a killed node; the migration rebuilds its shards from parity and
   a heal pass after it leaves every object with k+m shards on live disks.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import diskview
import pytest
from botocore.exceptions import ClientError
from growkit import GrowCluster, Load, movement_bound, read_all, shard_totals, write_seed
from linearizability import DELETE, GET, PUT, Op, check

from buckets.admin.client import AdminCallError

# fast (the default run): 1 -> 2 -> 3 nodes, a small data set; full: 1 -> 2 -> 3 -> 4.
SIZES = {"fast": {"objects": 7, "multipart": 1, "workers": 2, "grow_to": 3},
         "full": {"objects": 70, "multipart": 3, "workers": 4, "grow_to": 4}}


def check_no_bugs(cluster: GrowCluster) -> None:
    bugs = cluster.bugs()
    assert not bugs, "a node logged a traceback:\n" + "\n".join(f"node {i}:\n{t}" for i, t in bugs.items())


def grow_step(cluster: GrowCluster, live: list[int], new: int, load: Load | None) -> dict:
    """Add node ``new`` to the nodes ``live`` (through a random one of them) and wait for the
    migration; returns what moved beside the optimum."""
    measured: list[tuple[int, int]] = []  # the shard bytes just before the change
    added = cluster.join(new, through=random.Random(new).choice(live),
                         before_add=lambda: measured.append(shard_totals(cluster.census(live))))
    total, largest = measured[0]
    status = cluster.wait_migration_done(live[0], added["generation"])
    if load is not None:
        load.nodes.append(new)
    cluster.wait_ready(new)
    optimum, slack, bound = movement_bound(total, largest, len(live))
    step = {"nodes": f"{len(live)} -> {len(live) + 1}", "moved": status["moved_bytes"], "optimum": optimum,
            "slack": slack, "bound": bound, "total": total, "objects": status["moved_objects"],
            "errors": status["errors"]}  # moves retried by a later pass
    print(f"grow {step['nodes']}: moved {step['moved'] / 2**20:.2f} MiB of {total / 2**20:.2f} MiB shard bytes "
          f"({step['objects']} objects, {step['errors']} retried); optimum 1/{len(live) + 1} = {optimum / 2**20:.2f} MiB "
          f"(ratio {step['moved'] / optimum if optimum else 0:.2f}); bound 1.1 x optimum + {slack / 2**20:.2f} MiB")
    live.append(new)
    return step


# --- 1. growth under load ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", ["fast", pytest.param("full", marks=pytest.mark.cluster)])
def test_growth_under_load(tmp_path, size: str) -> None:
    params = SIZES[size]
    cluster = GrowCluster(tmp_path)
    try:
        s3 = cluster.begin("grow")
        seed = write_seed(s3, "grow", params["objects"], params["multipart"])
        load = Load(cluster, "grow", [1], workers=params["workers"], seed=7)
        live = [1]
        steps = []
        load.start()
        try:
            for new in range(2, params["grow_to"] + 1):
                steps.append(grow_step(cluster, live, new, load))
        finally:
            load.stop()
        print(f"load during growth: {load.summary()}")
        assert load.failures == [], load.failures[:10]
        assert sum(load.counts.values()) >= 20, "too few requests to show anything"
        for step in steps:
            assert step["moved"] <= step["bound"], step
        read_all(cluster, live, "grow", {**seed, **load.acked}, load.maybe)
        census = cluster.census(live)
        for i in live:  # every node holds a share now
            assert any(str(cluster.base / f"n{i}") in d for shards in census.values() for d in shards), i
    finally:
        cluster.stop_all()
    check_no_bugs(cluster)


# --- the chain: one cluster through shrink, linearizability, pause, kills, force ------------------------

class Chain:
    def __init__(self, cluster: GrowCluster) -> None:
        self.cluster = cluster
        self.live: list[int] = []
        self.expected: dict[str, str] = {}  # bucket "chain": key -> sha256
        self.maybe: set[str] = set()
        self.broken = False


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Iterator[Chain]:
    cluster = GrowCluster(tmp_path_factory.mktemp("chain"))
    c = Chain(cluster)
    try:
        cluster.start(1)
        cluster.wait_ready(1)
        s3 = cluster.s3(1, retries={"total_max_attempts": 3})
        s3.create_bucket(Bucket="chain")
        c.expected.update(write_seed(s3, "chain", 40, 2))
        c.live = [1]
        for new in (2, 3, 4):
            grow_step(cluster, c.live, new, None)
        yield c
    finally:
        cluster.stop_all()
    check_no_bugs(cluster)


@pytest.fixture
def grown(chain: Chain) -> Chain:
    if chain.broken:
        pytest.skip("an earlier test of the chain left the cluster broken")
    chain.broken = True
    return chain


def _done(chain: Chain) -> None:
    chain.broken = False


@pytest.mark.cluster
def test_remove_node_under_load(grown: Chain) -> None:
    c = grown.cluster
    assert grown.live == [1, 2, 3, 4]
    # 2+2 (the first node's 4 disks) on 3 nodes puts 2 shards of some objects on one node: the
    # removal lowers what the cluster survives, refused until the operator accepts it.
    generation = c.nodes(1)["generation"]
    refused = c.admin(2, "cluster", "remove-node", c.url(4), "--no-progress", check=False)
    assert refused.returncode != 0 and "ToleranceWouldFall" in refused.stderr, (refused.stdout, refused.stderr)
    assert "tolerates 0 node failure(s), not 1" in refused.stderr and "--accept-lower-tolerance" in refused.stderr
    assert c.nodes(1)["generation"] == generation
    load = Load(c, "chain", [1, 2, 3], workers=3, seed=11)
    load.start()
    try:
        removed = c.admin(2, "cluster", "remove-node", c.url(4), "--accept-lower-tolerance", "--no-progress",
                          "--wait-timeout", "400")
    finally:
        load.stop()
    print(f"load during remove-node: {load.summary()}")
    assert f"{c.url(4)} is removed: it can be stopped" in removed.stdout, removed.stdout
    assert "Warning: once this change is done the cluster tolerates 0 node failure(s), not 1" in removed.stdout
    assert load.failures == [], load.failures[:10]
    grown.live = [1, 2, 3]
    grown.expected.update(load.acked)
    grown.maybe |= load.maybe
    states = {n["endpoint"]: n["state"] for n in c.nodes(1)["nodes"]}
    assert states[c.url(4)] == "removed" and all(states[c.url(i)] == "active" for i in grown.live), states
    # A removed node no longer serves S3 once it adopted the topology that says so, and the
    # command says it can be stopped only once the node said it had (one run, before the
    # command waited for that, asked the node 19 ms too early and got the 403 of an anonymous
    # request to a serving node).
    assert c.status(4, "/chain") == 503
    read_all(c, grown.live, "chain", grown.expected, grown.maybe)
    # Its shards went away once the grace delay (1 s here) for readers of the old entries passed.
    deadline = time.monotonic() + 60
    while left := c.census([4]):
        assert time.monotonic() < deadline, f"the drained node still holds {list(left)[:3]}"
        time.sleep(0.5)
    assert c.stop(4) == 0
    _done(grown)


# -- linearizability while a node is added ---------------------------------------------------------------
LIN_KEYS = [f"k{i}" for i in range(4)]


def lin_body(value: str) -> bytes:
    head = value.encode() + b"\n"
    return head + hashlib.shake_256(head).digest(300_000) if value.endswith("L") else head


def lin_client(c: GrowCluster, nodes: list[int], n: int, history: list[Op], unexpected: list,
               stop: threading.Event) -> None:
    rng = random.Random(100 + n)
    clients = {}
    seq = 0
    while not stop.is_set():
        node = rng.choice(list(nodes))
        s3 = clients.get(node) or clients.setdefault(node, c.s3(node, read_timeout=60))
        key = rng.choice(LIN_KEYS)
        kind = rng.choices([PUT, GET, DELETE], [45, 45, 10])[0]
        seq += 1
        value = f"{key}:{n}:{seq}{'L' if rng.random() < 0.25 else ''}" if kind == PUT else None
        call = time.monotonic()
        try:
            if kind == PUT:
                s3.put_object(Bucket="lin", Key=key, Body=lin_body(value))
            elif kind == DELETE:
                s3.delete_object(Bucket="lin", Key=key)
            else:
                try:
                    body = s3.get_object(Bucket="lin", Key=key)["Body"].read()
                    tag = body.split(b"\n", 1)[0].decode(errors="replace")
                    value = tag if body == lin_body(tag) else f"WRONG BYTES {hashlib.sha256(body).hexdigest()}"
                except ClientError as exc:
                    if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
                        raise
                    value = None
            history.append(Op(n, key, kind, value, call, time.monotonic()))
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 503:
                unexpected.append((kind, key, node, exc.response["Error"]))
            history.append(Op(n, key, kind, value, call, None))  # may or may not have taken effect
        except Exception as exc:  # noqa: BLE001 - no node is killed here: any other failure is a bug
            unexpected.append((kind, key, node, repr(exc)))
            history.append(Op(n, key, kind, value, call, None))


@pytest.mark.cluster
def test_linearizable_while_a_node_is_added(grown: Chain) -> None:
    c = grown.cluster
    c.s3(1, retries={"total_max_attempts": 3}).create_bucket(Bucket="lin")
    history: list[Op] = []
    unexpected: list = []
    stop = threading.Event()
    nodes = list(grown.live)
    threads = [threading.Thread(target=lin_client, args=(c, nodes, n, history, unexpected, stop), daemon=True)
               for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        added = c.join(5, through=2)
        c.wait_migration_done(1, added["generation"])
        c.wait_ready(5)
        nodes.append(5)  # and through the new node for a while
        time.sleep(5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    grown.live.append(5)
    result = check(history)
    kinds = Counter(op.kind for op in history)
    print(f"linearizability during add-node: {len(history)} operations ({dict(kinds)}), "
          f"{sum(op.ret is None for op in history)} with unknown outcome")
    print(result.report())
    assert unexpected == [], unexpected[:5]
    assert kinds[GET] >= 20 and kinds[PUT] >= 20, "too few operations to show anything"
    assert not any(op.kind == GET and isinstance(op.value, str) and op.value.startswith("WRONG") for op in history)
    assert result.ok, result.report()
    read_all(c, grown.live, "chain", grown.expected, grown.maybe)
    _done(grown)


# -- pause, resume, throttle ----------------------------------------------------------------------------
def counters(status: dict) -> tuple[int, int]:
    return status["moved_objects"], status["moved_bytes"]


@pytest.mark.cluster
def test_pause_resume_and_throttle_take_effect_within_a_second(grown: Chain) -> None:
    c = grown.cluster
    assert grown.live == [1, 2, 3, 5]
    api = c.api(2)
    # A tiny rate makes every step observable: 96 KiB/s, one object at a time (the throttle of a
    # finished job carries over to the next one).
    slow = 96 << 10
    api.call("POST", "cluster/migration/throttle", {"bytes_per_s": slow, "objects": 1})
    # 4 nodes to 3 at 2+2: one node holds two shards of some objects, so it is accepted explicitly
    c.admin(3, "cluster", "remove-node", c.url(5), "--no-wait", "--accept-lower-tolerance")
    deadline = time.monotonic() + 120
    while (status := c.migration(1))["moved_objects"] < 2 or status["state"] != "running":
        assert time.monotonic() < deadline, f"nothing moves: {status}"
        time.sleep(0.2)

    # The rate follows the throttle: over a window, no more than the rate allows (plus the
    # one-second burst, one in-flight request of at most 4 blocks, the checkpoint lag).
    t0, (o0, b0) = time.monotonic(), counters(c.migration(1))
    time.sleep(4)
    t1, (o1, b1) = time.monotonic(), counters(c.migration(1))
    allowed = slow * (t1 - t0 + 3) + (4 << 20)
    print(f"throttled at {slow} B/s: {b1 - b0} bytes ({o1 - o0} objects) in {t1 - t0:.1f}s; allowed {allowed:.0f}")
    assert b1 - b0 <= allowed

    # Pause: once the pause is committed, the counters stop within a second.
    paused = api.call("POST", "cluster/migration/pause")
    assert paused["state"] == "paused"
    time.sleep(1.0)
    frozen = counters(c.migration(1))
    time.sleep(3.0)
    after = c.migration(1)
    assert counters(after) == frozen and after["state"] == "paused", (frozen, after)
    for i in grown.live:  # every node agrees
        assert c.migration(i)["state"] == "paused"
    # Resume: they advance again (from the checkpoint: nothing is redone from the start).
    assert api.call("POST", "cluster/migration/resume")["state"] == "running"
    deadline = time.monotonic() + 120
    while counters(status := c.migration(1))[0] <= frozen[0]:
        assert time.monotonic() < deadline, f"nothing moves after resume: {status}"
        time.sleep(0.2)
    # Unthrottled, the rest moves at once (at 96 KiB/s it would take far longer).
    remaining = status.get("remaining_bytes") or 0
    api.call("POST", "cluster/migration/throttle", {"bytes_per_s": 0, "objects": 4})
    t2 = time.monotonic()
    done = c.wait_migration_done(1, status["to_gen"], timeout=300)
    print(f"unthrottled: the remaining {remaining} bytes moved in {time.monotonic() - t2:.1f}s "
          f"(at {slow} B/s: {remaining / slow:.0f}s)")
    assert done["errors"] == 0, done
    # Pausing a finished migration is refused with a typed error.
    with pytest.raises(AdminCallError) as refused:
        api.call("POST", "cluster/migration/pause")
    assert refused.value.status == 409 and "MigrationFinished" in str(refused.value.code)
    deadline = time.monotonic() + 60
    while {n["endpoint"]: n["state"] for n in c.nodes(1)["nodes"]}[c.url(5)] != "removed":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    grown.live = [1, 2, 3]
    assert c.stop(5) == 0
    read_all(c, grown.live, "chain", grown.expected, grown.maybe)
    _done(grown)


# -- kill -9 the coordinator ------------------------------------------------------------------------------
@pytest.mark.cluster
def test_kill_the_coordinator_halfway(grown: Chain) -> None:
    c = grown.cluster
    assert grown.live == [1, 2, 3]
    api = c.api(1)
    api.call("POST", "cluster/migration/throttle", {"bytes_per_s": 1 << 20, "objects": 1})
    added = c.join(6, through=1)
    deadline = time.monotonic() + 120
    while True:
        status = c.migration(1)
        if status["state"] == "running" and status["moved_objects"] > 0 and status.get("cursor"):
            break
        assert status["state"] != "done", f"the migration ended before the kill: {status}"
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    victim = c.node_of_url(status.get("coordinator")) or c.leader()
    assert victim is not None, status
    c.kill(victim)
    at_kill = counters(status)
    print(f"killed node {victim} (coordinator) at {at_kill[0]} objects, {at_kill[1]} bytes, cursor {status['cursor']}")
    others = [i for i in [*grown.live, 6] if i != victim]
    c.api(others[0]).call("POST", "cluster/migration/throttle", {"bytes_per_s": 0, "objects": 4})
    c.start(victim)  # its first command line
    c.wait_ready(victim)
    done = c.wait_migration_done(others[0], added["generation"], timeout=400)
    assert done["errors"] == 0 or done["state"] == "done", done
    # Resumed from the checkpoint: the new coordinator started from a cursor, not from the
    # start of a pass, and the totals went on from where they were.
    resumed = [line for i in [*grown.live, 6] for line in c.log(i).splitlines()
               if f"migration {added['from_generation']} -> {added['generation']}: coordinated by" in line]
    assert len(resumed) >= 2, resumed
    assert "pass 1 start" not in resumed[-1], resumed
    assert done["moved_objects"] >= at_kill[0], (done, at_kill)
    grown.live.append(6)
    read_all(c, grown.live, "chain", grown.expected, grown.maybe)
    _done(grown)


# -- force removal of a dead node, then heal ----------------------------------------------------------
def index_entry(c: GrowCluster, nodes: list[int], bucket: str, key: str) -> dict | None:
    """The newest entry of ``key`` among the given nodes' own index replicas (signed peer RPC)."""
    import asyncio

    from buckets.cluster.rpcauth import cluster_secret
    from buckets.cluster.rpcclient import PeerClient, close_shared_session
    from clusterproc import ROOT_PASSWORD, ROOT_USER

    async def go():
        best = None
        for i in nodes:
            client = PeerClient(c.url(i), cluster_secret(None, ROOT_USER, ROOT_PASSWORD))
            try:
                answer = await client.call("index", "get", {"bucket": bucket, "key": key}, timeout=10)
            finally:
                await client.close()
            if answer.get("ts") is not None and (best is None or tuple(answer["ts"]) > tuple(best["ts"])):
                best = answer
        await close_shared_session()
        return best

    return asyncio.run(go())


@pytest.mark.cluster
def test_force_remove_a_killed_node_then_heal(grown: Chain) -> None:
    c = grown.cluster
    assert sorted(grown.live) == [1, 2, 3, 6]
    victim = 6 if c.leader() != 6 else 3
    c.kill(victim)
    survivors = [i for i in grown.live if i != victim]
    # Written while the node is dead: some shards of these are missing from the start.
    s3 = c.s3(survivors[0], retries={"total_max_attempts": 3})
    for n in range(6):
        key = f"while-dead/{n}"
        body = hashlib.shake_256(key.encode()).digest(300_000 * n + 10)
        s3.put_object(Bucket="chain", Key=key, Body=body)
        grown.expected[key] = hashlib.sha256(body).hexdigest()
    removed = c.admin(survivors[0], "cluster", "remove-node", c.url(victim), "--force", "--no-progress",
                      "--wait-timeout", "400")
    assert f"{c.url(victim)} is removed" in removed.stdout, removed.stdout
    grown.live = survivors
    c.admin(survivors[1], "heal", "start", "--no-progress", "--wait-timeout", "400")
    read_all(c, survivors, "chain", grown.expected, grown.maybe)
    # Full redundancy: every object's entry names k+m disks of live nodes, each holding its shard.
    listing = c.nodes(survivors[0])
    live_disks = {d["id"]: d["path"] for n in listing["nodes"] if n["state"] == "active" for d in n["disks"]}
    short = []
    for key in sorted(grown.expected):
        answer = index_entry(c, survivors, "chain", key)
        entry = answer["entry"]
        assert len(entry["disks"]) == entry["k"] + entry["m"]
        for slot, disk_id in enumerate(entry["disks"]):
            if disk_id not in live_disks:
                short.append(f"{key}: slot {slot} on {disk_id}, not a live disk")
                continue
            held = [m for m in diskview.writes_of(Path(live_disks[disk_id]), "chain", key)
                    if m.get("wid") == entry["wid"]]  # its metadata file, or its log record
            if not held:
                short.append(f"{key}: slot {slot} missing on {live_disks[disk_id]}")
    assert not short, short[:10]
    _done(grown)
