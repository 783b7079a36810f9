"""The cluster under failures: a real 4-node x 4-disk cluster on 127.0.0.1-4, real boto3 clients.

1. kill -9 of one node (the control-plane leader when one is known) under a PUT/GET load
   through the other nodes: no failed request once the first timeout window has passed, no
   acknowledged write lost, no wrong byte; restarted, it catches up (control plane through
   Raft, its index replicas through anti-entropy and read repair) and serves what was written
   while it was down.
2. two nodes of four killed: every object reads back byte-identical or fails with a 503,
   never wrong bytes, never a hang; control-plane changes (CreateBucket, buckets-admin user
   add) fail with a 503; after the restart everything reads back.
3. a partitioned node (peer traffic cut both ways by nftables, see faultkit.py) cannot commit a
   control-plane change or acknowledge a write, its refused changes never appear anywhere, the
   other three keep serving, and once healed it catches up.
4. a linearizability check (linearizability.py) of a PUT/GET/DELETE history on a few keys
   through every node, conditional PUTs (If-Match the ETag just read, If-None-Match: *)
   among them, with kills, restarts and a partition in between.

Each test leaves every node running and the network whole for the next one (one cluster per
module: forming one takes a while on a loaded 2-core machine). The timeouts below are
generous bounds for "never hangs", not measurements. The client's own retries are off
(``total_max_attempts=1``) so every failure the cluster gives is counted, none hidden.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
import diskview
from clusterproc import ROOT_PASSWORD, ROOT_USER
from faultkit import FaultCluster, Partition, partition_support
from linearizability import CAS, DELETE, GET, PUT, Op, check
from serverproc import BIN
from urllib3.exceptions import ProtocolError

from buckets.cluster.rpcclient import HealthPolicy, PeerTimeouts

pytestmark = pytest.mark.cluster

NODES = (1, 2, 3, 4)
# How long a failure may take to be noticed: a call in flight to a node that just died may
# wait for its whole timeout, and the peer is marked offline (calls then fail at once instead
# of waiting) after ``failures_to_offline`` failures, each taking up to the connect timeout.
_T, _H = PeerTimeouts(), HealthPolicy()
FAILURE_WINDOW = max(_T.call, _T.idle) + _T.connect * _H.failures_to_offline
HANG_BOUND = 90.0  # no request may take longer than this (generous: a loaded 2-core machine)
CATCH_UP_BOUND = 90.0
PARTITION_REASON = partition_support()

SIZES = [0, 1, 700, 4096, 60_000, 200_000, 1_100_000, 2_600_000]  # inline ... multi-block (1 MiB blocks)
SIZE_WEIGHTS = [1, 3, 3, 3, 2, 2, 1, 1]


def client(cluster: FaultCluster, i: int, read_timeout: float = HANG_BOUND):
    return cluster.client(i, retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=read_timeout)


def status_of(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def code_of(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def eventually(what: str, fn, bound: float = CATCH_UP_BOUND, pause: float = 0.5):
    """``fn()`` until it returns a true value (or stops raising); fail after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    last: object = None
    while True:
        try:
            out = fn()
            if out:
                return out
            last = out
        except Exception as exc:  # noqa: BLE001 - retried until the bound
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound:g}s (last: {last!r})")
        time.sleep(pause)


def admin(cluster: FaultCluster, home, node: int, *args: str) -> subprocess.CompletedProcess:
    """``buckets-admin GROUP VERB nNODE ARGS...`` against node ``node`` (an alias set first)."""
    env = dict(os.environ, HOME=str(home))

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "buckets-admin"), *argv], env=env, capture_output=True, text=True,
                              timeout=HANG_BOUND)

    assert run("alias", "set", f"n{node}", cluster.url(node), ROOT_USER, ROOT_PASSWORD).returncode == 0
    group, verb, *rest = args
    return run(group, verb, f"n{node}", *rest)


# --- the cluster, shared by the module -----------------------------------------------------------

@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[FaultCluster]:
    c = FaultCluster(tmp_path_factory.mktemp("faults"), partitionable=PARTITION_REASON is None)
    try:
        c.start()
        yield c
    finally:
        if c.cgroups:
            Partition(c).heal()
        c.close()


@pytest.fixture
def cluster(shared: FaultCluster) -> Iterator[FaultCluster]:
    """Every node up and the network whole before a test; no node logged a bug during it
    (the traceback guard of tests/serverproc.py, over every node and every run of it)."""
    if shared.cgroups:
        Partition(shared).heal()
    down = [i for i in NODES if not shared.alive(i)]
    if down:
        shared.start(*down, wait=False)
    for i in NODES:  # including a node still starting when the previous test ended
        shared.wait_ready(i, 180)
    shared.wait_healthy(180)  # and every node sees every node and disk online again
    before = {i: len(shared.log(i)) for i in NODES}
    yield shared
    bugs = []
    for i in NODES:
        new = shared.log(i)[before[i]:]
        lines = [line for line in new.splitlines() if "Traceback" in line or "unhandled error" in line]
        if lines:
            bugs.append(f"node {i}: {len(lines)} log lines with a traceback; the first:\n{lines[0][:6000]}")
    assert not bugs, "a node logged a bug:\n" + "\n".join(bugs)


class Steps:
    """Prints each step of a test with the time since it began (what a slow run spent time on)."""

    def __init__(self, name: str) -> None:
        self.name, self.t0 = name, time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"[{self.name} +{time.monotonic() - self.t0:.0f}s] {what}", flush=True)


def pick_victim(cluster: FaultCluster, default: int) -> int:
    """The control-plane leader if the nodes say who it is (the harder node to lose)."""
    return cluster.leader() or default


# --- a ledger of acknowledged writes, and a load that checks every byte -------------------------

@dataclass
class Ledger:
    acked: dict[tuple[str, str], str] = field(default_factory=dict)  # (bucket, key) -> sha256
    maybe: dict[tuple[str, str], str] = field(default_factory=dict)  # failed PUTs: may or may not exist
    acked_at: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, bucket: str, key: str, digest: str) -> None:
        with self.lock:
            self.acked[(bucket, key)] = digest
            self.acked_at[(bucket, key)] = time.monotonic()

    def pick(self, rng: random.Random) -> tuple[tuple[str, str], str] | None:
        with self.lock:
            if not self.acked:
                return None
            item = rng.choice(list(self.acked))
            return item, self.acked[item]


@dataclass
class Request:
    op: str
    node: int
    start: float
    end: float
    outcome: str  # "ok", or what failed: an S3 code, "WRONG BYTES", an exception name


# What a client sees when the server fails a request without an S3 error: a timeout, a refused
# or reset connection, a body cut short.
TRANSPORT_ERRORS = (BotoCoreError, ProtocolError, OSError)


def verify_object(s3, bucket: str, key: str, digest: str) -> str:
    """'ok', or why not: a status code / error, or 'WRONG BYTES'."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        return f"{status_of(exc)} {code_of(exc)}"
    except TRANSPORT_ERRORS as exc:
        return type(exc).__name__
    return "ok" if sha(body) == digest else "WRONG BYTES"


def load_worker(cluster: FaultCluster, worker: int, nodes: list[int], buckets: list[str], ledger: Ledger,
                log: list[Request], stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    s3 = {i: client(cluster, i) for i in nodes}
    n = 0
    while not stop.is_set():
        node = nodes[(worker + n) % len(nodes)]
        n += 1
        picked = ledger.pick(rng) if rng.random() < 0.5 else None
        start = time.monotonic()
        if picked is None:
            bucket = rng.choice(buckets)
            key = f"w{worker}/{n:05d}"
            body = os.urandom(rng.choices(SIZES, SIZE_WEIGHTS)[0])
            try:
                s3[node].put_object(Bucket=bucket, Key=key, Body=body)
                ledger.ack(bucket, key, sha(body))
                outcome = "ok"
            except ClientError as exc:
                outcome = f"{status_of(exc)} {code_of(exc)}"
            except TRANSPORT_ERRORS as exc:
                outcome = type(exc).__name__
            if outcome != "ok":
                with ledger.lock:
                    ledger.maybe[(bucket, key)] = sha(body)
            log.append(Request("PUT", node, start, time.monotonic(), outcome))
        else:
            (bucket, key), digest = picked
            outcome = verify_object(s3[node], bucket, key, digest)
            log.append(Request("GET", node, start, time.monotonic(), outcome))


def run_load(cluster, nodes, buckets, ledger, log, workers: int, seed: int) -> tuple[threading.Event, list]:
    stop = threading.Event()
    threads = [threading.Thread(target=load_worker, args=(cluster, w, nodes, buckets, ledger, log, stop, seed + w),
                                daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    return stop, threads


def replicas_of(cluster: FaultCluster, bucket: str) -> set[int]:
    """Which nodes hold ``bucket``'s index: write a probe, ask each node's own replica."""
    client(cluster, 1).put_object(Bucket=bucket, Key=".probe", Body=b"p")

    def holders():
        have = {i for i in NODES if cluster.replica_versions(i, [(bucket, ".probe")])[0] is not None}
        return have if len(have) == 3 else None  # N = 3 replicas; the third may lag a moment

    return eventually(f"the index replicas of {bucket}", holders, bound=30)


# --- 1. one node killed under load ---------------------------------------------------------------

def test_kill_one_node_under_load(cluster: FaultCluster, tmp_path) -> None:
    step = Steps("kill one")
    victim = pick_victim(cluster, default=4)
    others = [i for i in NODES if i != victim]
    # Buckets for the load, until the victim holds the index of at least one (so its catch-up shows).
    buckets, holds = [], []
    while len(buckets) < 2 or not holds:
        name = f"load-{len(buckets)}"
        client(cluster, others[0]).create_bucket(Bucket=name)
        buckets.append(name)
        if victim in replicas_of(cluster, name):
            holds.append(name)
        assert len(buckets) < 12, "the victim holds no bucket's index replica"
    ledger, log = Ledger(), []
    step(f"victim node {victim}; load on {buckets} through nodes {others}")
    stop, threads = run_load(cluster, others, buckets, ledger, log, workers=3, seed=1)
    eventually("a warm-up of 30 acknowledged writes", lambda: len(ledger.acked) >= 30, bound=120)
    step(f"kill -9 node {victim}")

    killed_at = time.monotonic()
    cluster.kill(victim)
    # While it is down, the control plane (a majority of 3 of 4) still takes changes (once a
    # new leader is elected, if the victim led: a change may be refused with a 503 until then).
    eventually("CreateBucket with one node down",
               lambda: client(cluster, others[0]).create_bucket(Bucket="made-while-down"), bound=60)
    eventually("buckets-admin user add with one node down",
               lambda: admin(cluster, tmp_path, others[1], "user", "add", "carol", "carol-secret-123").returncode == 0,
               bound=60)
    step("bucket and user made without it")
    time.sleep(max(0.0, killed_at + FAILURE_WINDOW + 10 - time.monotonic()))
    stop.set()
    for t in threads:
        t.join(timeout=HANG_BOUND + 30)
        assert not t.is_alive(), "a load request hung"

    window_end = killed_at + FAILURE_WINDOW
    phases = {"before the kill": [r for r in log if r.start < killed_at],
              f"first {FAILURE_WINDOW:g}s after the kill": [r for r in log if killed_at <= r.start < window_end],
              "after that window": [r for r in log if r.start >= window_end]}
    wrong = [r for r in log if r.outcome == "WRONG BYTES"]
    for name, reqs in phases.items():
        failed = Counter(r.outcome for r in reqs if r.outcome != "ok")
        print(f"kill -9 node {victim}: {name}: {len(reqs)} requests "
              f"({sum(r.op == 'PUT' for r in reqs)} PUT, {sum(r.op == 'GET' for r in reqs)} GET), "
              f"{sum(failed.values())} failed {dict(failed)}")
    slowest = max((r.end - r.start for r in log), default=0)
    print(f"kill -9 node {victim}: slowest request {slowest:.1f}s; {len(ledger.acked)} writes acknowledged")
    assert not wrong, f"wrong bytes served: {wrong[:5]}"
    after = phases["after that window"]
    assert len(after) >= 10, "too little load after the window to show anything"
    assert [r for r in after if r.outcome != "ok"] == [], "requests failed after the timeout window"

    # 0 lost, 0 wrong: every acknowledged write reads back through the survivors.
    step("load stopped; reading every acknowledged write back")
    s3 = {i: client(cluster, i) for i in NODES}
    for n, ((bucket, key), digest) in enumerate(sorted(ledger.acked.items())):
        assert verify_object(s3[others[n % 3]], bucket, key, digest) == "ok", (bucket, key)
    for (bucket, key), digest in ledger.maybe.items():  # a failed PUT: absent or whole, never torn
        assert verify_object(s3[others[0]], bucket, key, digest) in ("ok", "404 NoSuchKey"), (bucket, key)

    # Restarted, it catches up.
    down = [(b, k) for (b, k), at in ledger.acked_at.items() if at > killed_at]
    down_keys = [(b, k) for b, k in down if b in holds]  # in its own index replica
    assert down_keys, "nothing was written to the victim's buckets while it was down"
    step(f"restart node {victim}")
    cluster.restart(victim)
    step(f"node {victim} ready")
    stale_before = sum(v is None for v in cluster.replica_versions(victim, down_keys))
    # Control plane: the bucket and the user made while it was down, through it.
    s3[victim].head_bucket(Bucket="made-while-down")
    assert "made-while-down" in [b["Name"] for b in s3[victim].list_buckets()["Buckets"]]
    carol = boto3.client("s3", endpoint_url=cluster.url(victim), aws_access_key_id="carol",
                         aws_secret_access_key="carol-secret-123", region_name="us-east-1")
    carol.list_buckets()  # signed with a secret only the control plane knows
    # Data: everything written while it was down reads back and lists through it.
    step(f"reading the {len(down)} objects written while it was down through it")
    for (bucket, key) in sorted(down):
        assert verify_object(s3[victim], bucket, key, ledger.acked[(bucket, key)]) == "ok", (bucket, key)
    for bucket in buckets:
        listed = set()
        for page in s3[victim].get_paginator("list_objects_v2").paginate(Bucket=bucket):
            listed.update(o["Key"] for o in page.get("Contents", []))
        want = {k for (b, k) in ledger.acked if b == bucket} | {".probe"}
        maybe = {k for (b, k) in ledger.maybe if b == bucket}
        assert want <= listed <= want | maybe, bucket

    # Its own index replica now holds what it missed (pushed by read repair, in the background).
    step("checking its index replica")
    newest = [max(v for v in versions if v is not None)
              for versions in zip(*(cluster.replica_versions(i, down_keys) for i in others))]
    eventually("the restarted node's index replica caught up",
               lambda: cluster.replica_versions(victim, down_keys) == newest)
    print(f"kill -9 node {victim}: restarted; {len(down_keys)} index entries written while it was down, "
          f"{stale_before} missing from its replica once it was ready, all there now (anti-entropy, read repair)")


# --- 2. two nodes of four killed -------------------------------------------------------------------

SMALL_BUCKETS = [f"two-small-{i}" for i in range(4)]
SMALL_PUTS = 3  # small PUTs to each of them through each survivor while two nodes are down


def test_kill_two_nodes(cluster: FaultCluster, tmp_path) -> None:
    step = Steps("kill two")
    leader = pick_victim(cluster, default=3)
    victims = sorted({leader, 4 if leader != 4 else 3})
    survivors = [i for i in NODES if i not in victims]
    s3 = {i: client(cluster, i) for i in NODES}
    ledger = Ledger()
    rng = random.Random(2)
    for b in SMALL_BUCKETS:
        s3[survivors[0]].create_bucket(Bucket=b)
    for b in ("two-a", "two-b"):
        s3[survivors[0]].create_bucket(Bucket=b)
        for n, size in enumerate(SIZES):
            body = os.urandom(size + rng.randrange(50))
            s3[NODES[n % 4]].put_object(Bucket=b, Key=f"obj{n}", Body=body)
            ledger.ack(b, f"obj{n}", sha(body))

    step(f"kill -9 nodes {victims} (the control-plane leader among them)")
    for v in victims:
        cluster.kill(v)
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    small_acked: dict[str, str] = {}
    small_refused: list[str] = []

    def timed(fn):
        nonlocal slowest
        start = time.monotonic()
        try:
            return fn()
        finally:
            elapsed = time.monotonic() - start
            slowest = max(slowest, elapsed)
            assert elapsed < HANG_BOUND, f"a request took {elapsed:.0f}s"

    for node in survivors:
        for (bucket, key), digest in sorted(ledger.acked.items()):
            got = timed(lambda: verify_object(s3[node], bucket, key, digest))
            outcomes[got] += 1
            assert got == "ok" or got.startswith("503 "), f"{bucket}/{key} through node {node}: {got}"
            try:
                head = timed(lambda: s3[node].head_object(Bucket=bucket, Key=key))
                assert head["ContentLength"] >= 0
            except ClientError as exc:
                assert status_of(exc) == 503, (bucket, key, exc.response)
        for bucket in ("two-a", "two-b"):
            try:
                listed = timed(lambda: s3[node].list_objects_v2(Bucket=bucket))
                assert {o["Key"] for o in listed.get("Contents", [])} == {k for (b, k) in ledger.acked if b == bucket}
            except ClientError as exc:
                assert status_of(exc) == 503, exc.response
        # A wide write needs 12 of 16 disks: 8 are left.
        with pytest.raises(ClientError) as refused:
            timed(lambda: s3[node].put_object(Bucket="two-a", Key=f"new-{node}", Body=os.urandom(100_000)))
        assert (status_of(refused.value), code_of(refused.value)) == (503, "SlowDown"), refused.value.response
        # A small object goes to 8 of its row's 16 disks (4+4, 5 needed) and its index entry
        # to 2 of 3 replicas: whether both are on the survivors depends on the deployment's
        # disk ids. Either it succeeds (and must read back everywhere once the nodes return)
        # or it is refused, and then it never shows, although it may have reached some disks
        # and one index replica before the refusal (the writer undoes that merge).
        # Several buckets (their index replicas: 3 of the 4 nodes, 1 or 2 of them survivors)
        # and keys (their disk windows), so that each run meets the different cases.
        for b in SMALL_BUCKETS:
            for j in range(SMALL_PUTS):
                key, body = f"small-{node}-{j}", os.urandom(5000)
                try:
                    timed(lambda: s3[node].put_object(Bucket=b, Key=key, Body=body))
                    small_acked[(b, key)] = sha(body)
                except ClientError as exc:
                    assert (status_of(exc), code_of(exc)) == (503, "SlowDown"), exc.response
                    small_refused.append((b, key))
    # Control-plane changes: no majority (2 of 4).
    step("control-plane changes")
    with pytest.raises(ClientError) as refused:
        timed(lambda: s3[survivors[0]].create_bucket(Bucket="no-majority"))
    assert status_of(refused.value) == 503, refused.value.response
    start = time.monotonic()
    added = admin(cluster, tmp_path, survivors[1], "user", "add", "dave", "dave-secret-1234")
    slowest = max(slowest, time.monotonic() - start)
    assert added.returncode == 1 and "ServiceUnavailable" in added.stderr, (added.returncode, added.stderr)
    assert "Traceback" not in added.stderr
    print(f"two nodes down ({victims}): {sum(outcomes.values())} GETs through {survivors}: {dict(outcomes)}; "
          f"control-plane changes refused with 503; small PUTs: {len(small_acked)} acknowledged, "
          f"{len(small_refused)} refused (merges undone on an index replica: "
          f"{sum(cluster.health(i)['index'].get('retractions', 0) for i in survivors)}); slowest request {slowest:.1f}s")
    assert sum(outcomes.values()) == 2 * len(ledger.acked)

    step(f"restart nodes {victims}")
    cluster.start(*victims)
    step("restarted")
    # The control plane elects a leader again, then takes changes.
    eventually("a control-plane change after the restart", lambda: s3[victims[0]].create_bucket(Bucket="after-two"))
    eventually("buckets-admin user add after the restart",
               lambda: admin(cluster, tmp_path, victims[1], "user", "add", "erin", "erin-secret-1234").returncode == 0)
    step("control plane takes changes again; reading everything through every node")
    for node in NODES:
        for (bucket, key), digest in sorted(ledger.acked.items()):
            assert verify_object(s3[node], bucket, key, digest) == "ok", (node, bucket, key)
        for (bucket, key), digest in sorted(small_acked.items()):
            assert verify_object(s3[node], bucket, key, digest) == "ok", (node, bucket, key)
    # The refused PUTs were refused: nothing half-written shows, through any node, and no
    # index replica holds an entry for one (else anti-entropy would spread it later).
    refused = [("two-a", f"new-{i}") for i in survivors] + small_refused
    for node in NODES:
        assert cluster.replica_versions(node, refused) == [None] * len(refused), node
    for node in NODES:
        for bucket, key in refused:
            with pytest.raises(ClientError) as gone:
                s3[node].head_object(Bucket=bucket, Key=key)
            assert status_of(gone.value) == 404, (node, bucket, key)
        for bucket in ["two-a", *SMALL_BUCKETS]:
            listed = {o["Key"] for o in s3[node].list_objects_v2(Bucket=bucket).get("Contents", [])}
            want = {k for (b, k) in ledger.acked if b == bucket} | {k for (b, k) in small_acked if b == bucket}
            assert listed == want, (node, bucket, listed ^ want)
    # A refused PUT that its node undid on every index replica that took it (the others down:
    # never sent) had its data removed at once: no disk holds a live write of it.
    logs = "\n".join(cluster.log(i) for i in survivors)
    undone = [(b, k) for b, k in small_refused if f"{b}/{k}: the failed write " in logs]
    for bucket, key in undone:
        left = [str(root) for root in cluster.disk_roots() for _ in diskview.writes_of(root, bucket, key)]
        assert not left, (bucket, key, left)
    print(f"refused small PUTs whose data was removed at once: {len(undone)} of {len(small_refused)}")


def test_restart_while_another_node_is_down(cluster: FaultCluster) -> None:
    """Two nodes fail; one comes back alone: it must start (3 of 4 is a majority again), so the
    control plane takes changes and writes succeed, without waiting for the last one."""
    a, b = 3, 4
    cluster.kill(a)
    cluster.kill(b)
    try:
        cluster.restart(a, timeout=45)  # a restart takes 5-10s here, with every other node up
        s3 = client(cluster, a)
        eventually("a control-plane change with 3 of 4 nodes", lambda: s3.create_bucket(Bucket="three-of-four"),
                   bound=60)
        s3.put_object(Bucket="three-of-four", Key="k", Body=b"v")
        assert client(cluster, 1).get_object(Bucket="three-of-four", Key="k")["Body"].read() == b"v"
    finally:  # the last one back: the cluster is whole again for the next test
        cluster.start(b, wait=False)
        for i in (a, b):
            if not cluster.alive(i):
                cluster.start(i, wait=False)
        for i in (a, b):
            cluster.wait_ready(i, 180)


# --- 3. a partitioned node -------------------------------------------------------------------------

@pytest.mark.skipif(PARTITION_REASON is not None, reason=f"partitions unavailable: {PARTITION_REASON}")
def test_partitioned_node(cluster: FaultCluster) -> None:
    p = pick_victim(cluster, default=2)
    others = [i for i in NODES if i != p]
    s3 = {i: client(cluster, i) for i in NODES}
    ledger = Ledger()
    s3[others[0]].create_bucket(Bucket="part")
    for n, size in enumerate(SIZES):
        body = os.urandom(size)
        s3[NODES[n % 4]].put_object(Bucket="part", Key=f"before{n}", Body=body)
        ledger.ack("part", f"before{n}", sha(body))

    with Partition(cluster) as cut:
        cut.isolate(p)
        cut_at = time.monotonic()
        # Through P: no control-plane change commits, no write is acknowledged.
        with pytest.raises(ClientError) as refused:
            s3[p].create_bucket(Bucket="made-through-p")
        assert status_of(refused.value) == 503, refused.value.response
        for n, size in enumerate((100, 300_000)):
            with pytest.raises(ClientError) as refused:
                s3[p].put_object(Bucket="part", Key=f"through-p-{n}", Body=os.urandom(size))
            assert (status_of(refused.value), code_of(refused.value)) == (503, "SlowDown"), refused.value.response
        # Reads through P: its replica alone is no read quorum; never a stale or wrong answer.
        for (bucket, key), digest in sorted(ledger.acked.items())[:3]:
            got = verify_object(s3[p], bucket, key, digest)
            assert got == "ok" or got.startswith("503 "), got
        # The other three keep serving: data plane and control plane (a new leader if P led).
        log: list[Request] = []
        for n, size in enumerate(SIZES * 2):
            body = os.urandom(size)
            node = others[n % 3]
            start = time.monotonic()
            try:
                s3[node].put_object(Bucket="part", Key=f"during{n}", Body=body)
                ledger.ack("part", f"during{n}", sha(body))
                outcome = "ok"
            except ClientError as exc:
                outcome = f"{status_of(exc)} {code_of(exc)}"
            log.append(Request("PUT", node, start, time.monotonic(), outcome))
            (bucket, key), digest = ledger.pick(random.Random(n))  # type: ignore[misc]
            start = time.monotonic()
            log.append(Request("GET", node, start, time.monotonic(), verify_object(s3[node], bucket, key, digest)))
        eventually("a control-plane change through the majority side",
                   lambda: s3[others[1]].create_bucket(Bucket="made-during-partition"), bound=60)
        failed = [r for r in log if r.outcome != "ok"]
        print(f"partition of node {p}: {len(log)} requests through {others}, {len(failed)} failed "
              f"{dict(Counter(r.outcome for r in failed))}, slowest {max(r.end - r.start for r in log):.1f}s")
        assert failed == [], failed
        for i in others:  # the refused write is nowhere
            for n in range(2):
                with pytest.raises(ClientError) as gone:
                    s3[i].head_object(Bucket="part", Key=f"through-p-{n}")
                assert status_of(gone.value) == 404
        print(f"partition of node {p}: lasted {time.monotonic() - cut_at:.0f}s")
        # The majority side's control plane as the partition ends (a new leader if P led).
        seats = {i: ((cluster.health(i) or {}).get("control") or {}) for i in others}
        before_heal = {(c.get("leader"), c.get("term")) for c in seats.values()}
        assert len(before_heal) == 1 and None not in next(iter(before_heal)), seats

    # Healed: P catches up (the bucket made without it, the objects written without it) ...
    eventually("the healed node sees the bucket made during the partition",
               lambda: s3[p].head_bucket(Bucket="made-during-partition"))
    for (bucket, key), digest in sorted(ledger.acked.items()):
        # Until its peers are back online in its eyes (the probe), it may still answer 503.
        def answer(bucket=bucket, key=key, digest=digest):
            got = verify_object(s3[p], bucket, key, digest)
            return None if got.startswith("503 ") else got

        got = eventually(f"{bucket}/{key} through the healed node", answer, bound=60)
        assert got == "ok", (bucket, key, got)
    # Rejoining cost no election (PreVote, control_raft.py): its term did not grow while it was
    # cut off, so the majority kept its leader and term through the heal.
    for i in others:
        control = (cluster.health(i) or {}).get("control") or {}
        assert {(control.get("leader"), control.get("term"))} == before_heal, (i, control, before_heal)
    # ... and what it refused never happened: no split decision. (ListBuckets reads through the
    # control plane, through the leader: right after the heal P's connections may still be in
    # TCP's retransmission backoff, hence the retries.)
    for i in NODES:
        names = [b["Name"] for b in eventually(f"ListBuckets through node {i}",
                                               lambda i=i: s3[i].list_buckets(), bound=60)["Buckets"]]
        assert "made-during-partition" in names and "made-through-p" not in names, (i, names)
        for n in range(2):
            with pytest.raises(ClientError) as gone:
                s3[i].head_object(Bucket="part", Key=f"through-p-{n}")
            assert status_of(gone.value) == 404
    # It takes writes again once its peers answer.
    eventually("a PUT through the healed node", lambda: s3[p].put_object(Bucket="part", Key="after", Body=b"x"))
    for i in others:
        assert s3[i].get_object(Bucket="part", Key="after")["Body"].read() == b"x"


# --- 4. linearizability under kills, restarts and a partition -----------------------------------------

LIN_KEYS = [f"k{i}" for i in range(5)]
LARGE = 300_000  # some values go through shards, not the inline path


def lin_body(value: str) -> bytes:
    head = value.encode() + b"\n"
    if value.endswith("L"):
        return head + hashlib.shake_256(head).digest(LARGE)
    return head


def lin_read(s3, key: str, c: int, history: list[Op], unexpected: list) -> tuple[str | None, str | None] | bool:
    """A GET, recorded: (value or None, ETag or None), or False when its outcome is unknown."""
    call = time.monotonic()
    try:
        try:
            got = s3.get_object(Bucket="lin", Key=key)
            body = got["Body"].read()
            tag = body.split(b"\n", 1)[0].decode(errors="replace")
            seen = (tag, got["ETag"]) if body == lin_body(tag) else (f"WRONG BYTES {sha(body)}", None)
        except ClientError as exc:
            if status_of(exc) != 404:
                raise
            seen = (None, None)
    except ClientError as exc:
        if status_of(exc) != 503:
            unexpected.append(("get", key, exc.response["Error"]))
        return False  # an unknown GET has no effect and nothing to check
    except (EndpointConnectionError, ConnectTimeoutError, *TRANSPORT_ERRORS):
        return False
    history.append(Op(c, key, GET, seen[0], call, time.monotonic()))
    return seen if seen[1] is not None or seen[0] is None else False


def lin_client(cluster: FaultCluster, c: int, history: list[Op], unexpected: list, stop: threading.Event,
               seed: int) -> None:
    rng = random.Random(seed)
    s3 = {i: client(cluster, i, read_timeout=60) for i in NODES}
    seq = 0
    while not stop.is_set():
        node = rng.choice(NODES)
        key = rng.choice(LIN_KEYS)
        kind = rng.choices([PUT, GET, DELETE, CAS], [35, 45, 10, 10])[0]
        seq += 1
        value = f"{key}:{c}:{seq}{'L' if rng.random() < 0.2 else ''}" if kind in (PUT, CAS) else None
        if kind == CAS:
            # A conditional PUT from what a GET just read (recorded as that GET): If-Match its
            # ETag, or If-None-Match: * when the key was absent.
            seen = lin_read(s3[rng.choice(NODES)], key, c, history, unexpected)
            if seen is False:
                continue
            value = (seen[0], value)
        call = time.monotonic()
        try:
            if kind == CAS:
                condition = {"IfMatch": seen[1]} if seen[0] is not None else {"IfNoneMatch": "*"}
                try:
                    s3[node].put_object(Bucket="lin", Key=key, Body=lin_body(value[1]), **condition)
                except ClientError as exc:
                    if status_of(exc) in (404, 409, 412):  # the condition failed: no effect
                        continue
                    raise
            elif kind == PUT:
                s3[node].put_object(Bucket="lin", Key=key, Body=lin_body(value))
            elif kind == DELETE:
                s3[node].delete_object(Bucket="lin", Key=key)
            else:
                try:
                    body = s3[node].get_object(Bucket="lin", Key=key)["Body"].read()
                    tag = body.split(b"\n", 1)[0].decode(errors="replace")
                    value = tag if body == lin_body(tag) else f"WRONG BYTES {sha(body)}"
                except ClientError as exc:
                    if status_of(exc) != 404:
                        raise
                    value = None
            history.append(Op(c, key, kind, value, call, time.monotonic()))
        except (EndpointConnectionError, ConnectTimeoutError):
            time.sleep(0.2)  # refused before the request was sent (the node is down): no effect
        except ClientError as exc:
            if status_of(exc) != 503:
                unexpected.append((kind, key, node, exc.response["Error"], exc.response["ResponseMetadata"]))
            history.append(Op(c, key, kind, value, call, None))  # may or may not have taken effect
        except TRANSPORT_ERRORS:  # a timeout or a cut connection: may or may not have taken effect
            history.append(Op(c, key, kind, value, call, None))
        except Exception as exc:  # noqa: BLE001 - recorded, so the test fails instead of a thread dying quietly
            unexpected.append((kind, key, node, repr(exc)))


def test_linearizable_under_faults(cluster: FaultCluster) -> None:
    client(cluster, 1).create_bucket(Bucket="lin")
    history: list[Op] = []
    unexpected: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=lin_client, args=(cluster, c, history, unexpected, stop, 40 + c), daemon=True)
               for c in range(5)]
    rng = random.Random(4)
    faults = []
    for t in threads:
        t.start()
    try:
        time.sleep(8)
        a = rng.choice(NODES)
        faults.append(f"kill -9 node {a}")
        cluster.kill(a)
        time.sleep(12)
        faults.append(f"restart node {a}")
        cluster.restart(a)
        time.sleep(5)
        if PARTITION_REASON is None:
            b = rng.choice([i for i in NODES if i != a])
            faults.append(f"partition node {b}")
            with Partition(cluster) as cut:
                cut.isolate(b)
                time.sleep(15)
            faults.append(f"heal node {b}")
            time.sleep(8)
        c = cluster.leader() or rng.choice(NODES)
        faults.append(f"kill -9 node {c} (leader)")
        cluster.kill(c)
        time.sleep(12)
        faults.append(f"restart node {c}")
        cluster.restart(c)
        time.sleep(8)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=HANG_BOUND)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert unexpected == [], unexpected[:5]
    result = check(history)
    kinds = Counter(op.kind for op in history)
    unknown = sum(op.ret is None for op in history)
    print(f"linearizability: faults: {', '.join(faults)}")
    print(f"linearizability: {len(history)} operations recorded ({dict(kinds)}), {unknown} with unknown outcome")
    print(result.report())
    counters = [cluster.health(i)["index"] for i in NODES if cluster.procs[i].poll() is None]
    leased = sum(c.get("lease_lookups", 0) for c in counters)
    print(f"linearizability: since the last restarts, {leased} lookups answered from read leases, "
          f"{sum(c.get('lease_waits', 0) for c in counters)} waits for a lease holder")
    assert leased > 0, "no lookup was answered from a read lease"
    assert kinds[GET] >= 50 and kinds[PUT] >= 50 and kinds[CAS] >= 10, "too few operations to show anything"
    assert not any(op.kind == GET and isinstance(op.value, str) and op.value.startswith("WRONG") for op in history)
    assert result.ok, result.report()
