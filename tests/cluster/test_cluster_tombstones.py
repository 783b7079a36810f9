"""A real 4-node cluster forgets its old tombstones, and only where every replica holds them.

The nodes run with a tombstone retention of 3 s (``BUCKETS_TOMBSTONE_RETENTION``; 7 days by
default), so each node sweeps its buckets' index every 1.5 s (``ClusterNode._sweep_tombstones``).
What is checked is what an operator and a client see: the metrics ``buckets_index_tombstones``
and ``buckets_index_tombstones_forgotten`` of every node, the S3 answers for the deleted, kept
and written-again keys, and that a replica that was down when the keys were deleted holds the
forgetting back until anti-entropy gave it the tombstones (else it could keep, and spread back,
an entry a forgotten delete removed).

In `make test` (about 30 s): the only test that runs the sweeps of real nodes.
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError
from faultkit import FaultCluster

RETENTION = 3.0
NODES = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = FaultCluster(tmp_path_factory.mktemp("tombs"), nodes=4, disks=2,
                     extra_env={"BUCKETS_TOMBSTONE_RETENTION": str(RETENTION)})
    c.start()
    try:
        c.wait_healthy()
        yield c
    finally:
        c.close()
        bugs = c.bug_lines()
        assert not bugs, f"a node logged a bug: {bugs}"


def metric(c: FaultCluster, i: int, name: str) -> float:
    with urllib.request.urlopen(f"{c.url(i)}/metrics", timeout=30) as r:
        text = r.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, f"node {i} has no {name}"
    return float(found.group(1))


def tombstones(c: FaultCluster, nodes=NODES) -> int:
    return int(sum(metric(c, i, "buckets_index_tombstones") for i in nodes))


def forgotten(c: FaultCluster) -> int:
    return int(sum(metric(c, i, "buckets_index_tombstones_forgotten_total") for i in NODES))


def until(what: str, fn, bound: float = 60.0):
    deadline = time.monotonic() + bound
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {bound:g}s: {what}"
        time.sleep(0.5)


def missing(s3, bucket: str, key: str) -> bool:
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key=key)
    return caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def listed(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def replicas_of(c: FaultCluster, bucket: str) -> set[int]:
    """The nodes holding ``bucket``'s index: a probe key written, each node's own replica asked."""
    c.client(1).put_object(Bucket=bucket, Key=".probe", Body=b"p")

    def holders():
        have = {i for i in NODES if c.replica_versions(i, [(bucket, ".probe")])[0] is not None}
        return have if len(have) == 3 else None  # 3 replicas; the third may lag a moment

    return until(f"the index replicas of {bucket}", holders, bound=30)


def test_old_tombstones_are_forgotten_on_every_replica(cluster) -> None:
    c = cluster
    s3 = {i: c.client(i) for i in NODES}
    s3[1].create_bucket(Bucket="gone")
    for n in range(40):
        s3[1 + n % 4].put_object(Bucket="gone", Key=f"k{n:02d}", Body=b"first %d" % n)
    before = forgotten(c)
    for n in range(30):
        s3[1 + (n + 1) % 4].delete_object(Bucket="gone", Key=f"k{n:02d}")
    for n in range(5):  # written again after its delete: the entry replaced the tombstone
        s3[1 + (n + 2) % 4].put_object(Bucket="gone", Key=f"k{n:02d}", Body=b"again %d" % n)
    # 25 tombstones on each of the bucket's 3 replicas, all forgotten within a few sweeps.
    until("every node's tombstones forgotten", lambda: tombstones(c) == 0 and forgotten(c) - before >= 75)
    assert any("tombstones older than 3s" in c.log(i) for i in NODES)
    kept = [f"k{n:02d}" for n in (*range(5), *range(30, 40))]
    for i in NODES:
        assert listed(s3[i], "gone") == kept, i
        assert all(missing(s3[i], "gone", f"k{n:02d}") for n in range(5, 30)), i
        assert s3[i].get_object(Bucket="gone", Key="k03")["Body"].read() == b"again 3"
        assert s3[i].get_object(Bucket="gone", Key="k35")["Body"].read() == b"first 35"


def test_a_replica_down_at_the_deletes_holds_the_forgetting_back(cluster) -> None:
    c = cluster
    c.client(1).create_bucket(Bucket="held")
    replicas = replicas_of(c, "held")
    # The bucket's first replica sweeps its tombstones: the node that logs forgetting the probe's.
    said = {i: c.log(i).count("forgot ") for i in NODES}
    c.client(1).delete_object(Bucket="held", Key=".probe")
    until("the probe's tombstone forgotten", lambda: tombstones(c) == 0)
    sweepers = until("the node that forgot it", lambda: {i for i in NODES if c.log(i).count("forgot ") > said[i]})
    # Down: a replica that does not sweep (were it the sweeper, nothing would be swept at all).
    assert sweepers & replicas and replicas - sweepers, (sweepers, replicas)
    victim = max(replicas - sweepers)
    live = [i for i in NODES if i != victim]
    s3 = {i: c.client(i) for i in live}
    for n in range(10):
        s3[live[0]].put_object(Bucket="held", Key=f"h{n}", Body=b"h")
    c.kill(victim)
    for n in range(10):
        s3[live[n % 3]].delete_object(Bucket="held", Key=f"h{n}")
    # The two replicas still up hold the 10 tombstones; the one that is down still holds the
    # entries they deleted: nothing may be forgotten (three retentions, six sweeps).
    until("the live replicas' tombstones", lambda: tombstones(c, live) == 20, bound=20)
    time.sleep(3 * RETENTION)
    assert tombstones(c, live) == 20
    assert all(listed(s3[i], "held") == [] for i in live)
    c.restart(victim)
    # Anti-entropy (a pass a few seconds after the start) gives the victim the tombstones over
    # its stale entries; the next sweep forgets them on all three.
    until("the tombstones forgotten once the victim caught up", lambda: tombstones(c) == 0, bound=90)
    s3[victim] = c.client(victim)
    for i in NODES:
        assert listed(s3[i], "held") == [], i
        assert all(missing(s3[i], "held", f"h{n}") for n in range(10)), i
