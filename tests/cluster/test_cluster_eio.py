"""A cluster node's first disk fails with I/O errors while the cluster serves.

Node 2's first disk holds its replica of the index (an LMDB registry), its control-plane
journal, and data. Here it is an ext4 file system on a loop device, shut down under load
(``EXT4_IOC_SHUTDOWN``: every read and write fails with EIO from then on, see
``tests/loopdisk.py``). The index replica there refuses its merges (``503 RegistryFailed``
across the peer call), the other replicas carry the quorum, node 2 goes on serving S3 as a
coordinator while its ``/health/ready`` says ``registry_open: false``; no client request fails,
every object reads back exactly through any node, and no node logs a traceback. Marked
``cluster`` (make test-cluster); the single node's case is tests/faults/test_faults_eio.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from clusterproc import Cluster
from fusedisk import FuseDisk
from loopdisk import LoopDisk
from serverproc import stop

pytestmark = pytest.mark.cluster


@contextlib.contextmanager
def cluster_with_loop_disk(tmp_path, where: str, buckets: list[str], fuse: bool = False,
                           **kwargs) -> Iterator[tuple[Cluster, LoopDisk]]:
    """A 4-node cluster of 2 disks each, disk ``where`` (``n2/d1``) a loop-mounted ext4 file
    system (``fuse``: a FUSE disk with bad sectors, tests/fusedisk.py), started, with ``buckets``
    created through node 1; at the end the disk is thawed, the nodes stopped (failing on a
    traceback in a log) and the disk detached."""
    cluster = Cluster(tmp_path, nodes=4, disks=2, **kwargs)
    name = where.replace("/", "")
    disk = FuseDisk(tmp_path / (name + "-backing"), tmp_path / where) if fuse else \
        LoopDisk(tmp_path / (name + ".img"), tmp_path / where, size_mb=512)
    try:
        cluster.start()
        s3 = cluster.client(1)
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield cluster, disk
    finally:
        if not fuse:
            disk.thaw()
        try:
            cluster.stop_and_check_logs()
        finally:
            disk.close()


def ready(cluster: Cluster, i: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{cluster.url(i)}/health/ready", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_log(cluster: Cluster, i: int, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, cluster.log(i))):
        assert time.monotonic() < deadline, f"node {i} never logged {pattern!r}:\n{cluster.log(i)[-3000:]}"
        time.sleep(0.5)
    return found


def written_through(s3, buckets: list[str], count: int) -> dict[tuple[str, str], str]:
    """``count`` objects (3000 bytes and 200 KB, in turn) PUT through ``s3`` over ``buckets``
    in turn: their MD5 digests by (bucket, key)."""
    written: dict[tuple[str, str], str] = {}
    for n in range(count):
        body = os.urandom(3000 if n % 2 else 200_000)
        bucket, key = buckets[n % len(buckets)], f"before/{n:03d}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        written[bucket, key] = hashlib.md5(body).hexdigest()
    return written


def test_a_nodes_first_disk_failing_under_load(tmp_path) -> None:
    # Four buckets: each has three of the four nodes as its index replicas, so node 2's
    # registry is written to whatever the placement (one bucket alone may leave it out).
    buckets = [f"eio-{n}" for n in range(4)]
    with cluster_with_loop_disk(tmp_path, "n2/d1", buckets) as (cluster, disk):
        clients = {i: cluster.client(i) for i in (1, 2, 3)}
        written: dict[tuple[str, str], str] = {}

        def put(i: int, key: str, size: int) -> None:
            body = os.urandom(size)
            bucket = buckets[sum(map(ord, key)) % len(buckets)]
            clients[i].put_object(Bucket=bucket, Key=key, Body=body)
            written[bucket, key] = hashlib.md5(body).hexdigest()

        for n in range(40):
            put(1 + n % 3, f"before/{n:03d}", 3000 if n % 2 else 200_000)
        disk.fail()
        errors: list[str] = []
        for n in range(60):  # small and large objects through every node, node 2 included
            key = f"after/{n:03d}"
            try:
                put(1 + n % 3, key, 3000 if n % 2 else 200_000)
                bucket = buckets[sum(map(ord, key)) % len(buckets)]
                back = clients[1 + (n + 1) % 3].get_object(Bucket=bucket, Key=key)["Body"].read()
                assert hashlib.md5(back).hexdigest() == written[bucket, key], key
            except Exception as exc:  # noqa: BLE001 - counted: none is expected
                errors.append(f"{key}: {exc}")
        assert not errors, errors[:5]
        status, health = ready(cluster, 2)
        assert status == 503 and health.get("registry_open") is False, (status, health)
        for i in (1, 3, 4):
            assert ready(cluster, i)[0] == 200, i
        s3 = cluster.client(4)
        for (bucket, key), digest in written.items():
            assert hashlib.md5(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == digest, key
        listed = {(bucket, o["Key"]) for bucket in buckets
                  for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for o in page.get("Contents", [])}
        assert listed == set(written)


@pytest.mark.parametrize("damage", ["dead", "registry-unreadable", "journal-unreadable"])
def test_a_node_restarts_with_its_first_disk_failing(tmp_path, damage) -> None:
    """Node 2 stopped, and meanwhile its first disk died (``dead``: its journal is gone, and a
    Raft member may not come back without what it voted), or the pages of its index replica
    or of its control-plane journal there became unreadable (``registry-unreadable``,
    ``journal-unreadable``: bad sectors on a FUSE disk; read through LMDB's or pysyncobj's map,
    a SIGBUS at every start before; an emptied replica must not answer for writes it
    acknowledged). It must refuse to start with a message that says what to do, not a
    traceback or a signal; the other three serve every object and take writes."""
    buckets = [f"{damage[:4]}-{n}" for n in range(4)]
    with cluster_with_loop_disk(tmp_path, "n2/d1", buckets, fuse=damage != "dead") as (cluster, disk):
        written = written_through(cluster.client(1), buckets, 40)
        assert stop(cluster.procs[2]) == 0
        if damage == "dead":
            disk.fail()
            says = "this node's first disk is failing"
        elif damage == "registry-unreadable":
            registry = ".buckets.sys/registry/data.mdb"
            disk.bad(registry, 2 * 4096, os.path.getsize(disk.path / registry))  # past LMDB's meta pages
            says = "first disk is failing (its registry, this node's replica of the index, cannot be read: " \
                   "Input/output error reading data.mdb"
        else:
            journal = next(disk.path.glob("**/raft.journal")).relative_to(disk.path)
            disk.bad(str(journal), 4096, os.path.getsize(disk.path / journal))  # past its header
            says = "this node's first disk is failing (Input/output error reading raft.journal at byte"
        cluster.start(2, wait=False)
        code = cluster.procs[2].wait(timeout=60)
        said = cluster.log(2)
        assert code > 0, (code, said[-3000:])  # refused, not ended by a signal
        assert says in said and "remove-node" in said, said[-3000:]
        assert "Traceback" not in said, said[-3000:]
        del cluster.procs[2]
        for i in (1, 3, 4):  # the others serve every object, and take writes, without it
            c = cluster.client(i)
            for (bucket, key), digest in written.items():
                assert hashlib.md5(c.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == digest, key
            c.put_object(Bucket=buckets[i % 4], Key=f"after/{i}", Body=b"still writable")
            assert c.get_object(Bucket=buckets[i % 4], Key=f"after/{i}")["Body"].read() == b"still writable"


@pytest.mark.parametrize("failure", ["eio", "hung"])
def test_a_peers_data_disk_failing_or_hanging(tmp_path, failure) -> None:
    """Node 3's second disk (data only) dies (EIO) or hangs (frozen) while objects are written
    through node 1, whose writes reach that disk over peer RPC: node 3 takes the disk offline
    (at once, or after ``--disk-timeout`` 3 s), the writers go on degraded, every object reads
    back through every node; a thawed disk comes back online for the writer, refilled, a dead
    one replaced by an empty file system at its mount point is formatted into its slot and
    refilled."""
    buckets = [f"peer-{n}" for n in range(2)]
    with cluster_with_loop_disk(tmp_path, "n3/d2", buckets, extra_env={"BUCKETS_DISK_TIMEOUT": "3"}) as (cluster, disk):
        s3 = cluster.client(1)
        written: dict[tuple[str, str], str] = {}

        def put(key: str, size: int) -> None:
            body = os.urandom(size)
            bucket = buckets[len(written) % 2]
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            written[bucket, key] = hashlib.md5(body).hexdigest()

        for n in range(20):
            put(f"before/{n:03d}", 3000 if n % 2 else 200_000)
        disk.fail() if failure == "eio" else disk.freeze()
        started = time.monotonic()
        for n in range(40):
            put(f"after/{n:03d}", 3000 if n % 2 else 200_000)
        took = time.monotonic() - started
        assert took < 40, f"40 PUTs took {took:.0f}s with a peer's disk {failure}"
        # (Writes leave the lagging disk out after 1 s and the next ones go without it, so the
        # loop may end before node 3's --disk-timeout finds the hang: wait for it.)
        deadline = time.monotonic() + 30
        while not re.search(r"disk \S+n3/d2 went offline", cluster.log(3)):
            assert time.monotonic() < deadline, cluster.log(3)[-3000:]
            time.sleep(0.2)
        for i in range(1, 5):
            c = cluster.client(i)
            for (bucket, key), digest in written.items():
                assert hashlib.md5(c.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == digest, (i, key)
        if failure == "hung":
            disk.thaw()
        else:  # the operator swaps the dead disk for a new, empty one with the node running
            disk.replace()
        # Back online and refilled: by the nodes that wrote while it was away (node 1 took it
        # offline, node 3 refusing its calls once one hung; node 3's own handle only if node 3
        # wrote there meanwhile), and a new empty disk by whichever node's monitor formats it
        # into its slot first (the others then find it formatted: nothing left to rebuild).
        assert refilled(cluster, "n3/d2") > 0
        through3 = cluster.client(3)
        for (bucket, key), digest in written.items():
            assert hashlib.md5(through3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == digest


def refilled(cluster: Cluster, disk: str, timeout: float = 120) -> int:
    """Shards rebuilt onto ``disk`` by every node's refills, once one rebuilt some (a failed
    refill fails)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = [cluster.log(i) for i in range(1, cluster.n + 1)]
        failed = [log for log in logs if re.search(rf"refill of \S+{disk} failed", log)]
        assert not failed, failed[0][-3000:]
        rebuilt = sum(int(n) for log in logs
                      for n in re.findall(rf"refill of \S+{disk} finished: (\d+) shards rebuilt", log))
        if rebuilt:
            return rebuilt
        assert time.monotonic() < deadline, f"no node refilled {disk} within {timeout:g}s:\n{logs[0][-3000:]}"
        time.sleep(0.5)


def test_a_peers_data_disk_with_bad_sectors(tmp_path) -> None:
    """Node 3's second disk (data only) gets sectors it cannot read under every shard file and
    log segment it holds (a FUSE disk): every object reads back exactly through every node
    (read around, the reads' errors crossing peer RPC as damage), and the disk stays online on
    node 3 and for the others: one bad sector is not a dead disk. The slots a GET met are
    rewritten by the heal after it (over peer RPC, into new files and records)."""
    buckets = [f"sectors-{n}" for n in range(2)]
    with cluster_with_loop_disk(tmp_path, "n3/d2", buckets, fuse=True) as (cluster, disk):
        written = written_through(cluster.client(1), buckets, 30)
        files = [p for p in disk.backing.rglob("*") if p.is_file() and p.stat().st_size > 0 and (
            p.suffix == ".seg" or (".buckets.sys" not in p.parts and not p.name.endswith(".meta")))]
        assert files
        for f in files:
            disk.bad(str(f.relative_to(disk.backing)), 0, f.stat().st_size)
        for i in range(1, 5):
            c = cluster.client(i)
            for (bucket, key), digest in written.items():
                assert hashlib.md5(c.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == digest, (i, key)
        for i in range(1, 5):
            assert not re.search(r"n3/d2\S* went offline", cluster.log(i)), cluster.log(i)[-3000:]
        def rewritten() -> list:
            return [p for p in disk.backing.rglob("*") if p.is_file() and ".buckets.sys" not in p.parts
                    and not p.name.endswith(".meta") and p.stat().st_size > 0 and not disk.is_bad(p)]

        deadline = time.monotonic() + 30
        while not rewritten() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert rewritten(), "no slot on the disk was rewritten after the GETs"


def test_a_nodes_first_disk_frozen_while_the_cluster_serves(tmp_path) -> None:
    """Node 2's first disk (its replica of the index, its control-plane journal and data) frozen
    for 12 s, as a snapshot tool freezes a file system, while objects are written and read
    through every node. Node 2 was restarted first, so its lookups start from a cold cache.
    Reads through every node, node 2 included, are served throughout, with no retry: LMDB's
    reader table is in memory (on that disk, the replica's reads waited in a page fault of node
    2's event loop: every request of the node stopped), and the disk's reads do not wait behind
    its writes that hung. Writes through every node go on (the other replicas and disks make
    the quorums): after one disk timeout, at once, as node 2 refuses the disk's writes until
    the calls that hung return, and the peers take that answer (they had each waited the
    timeout, again after every probe that read the disk's format); through node 2, when it
    holds the bucket's read lease, about a second and the lease's end. After the thaw, node 2
    is ready again and every object reads back through every node."""
    buckets = [f"frozen-{n}" for n in range(4)]
    with cluster_with_loop_disk(tmp_path, "n2/d1", buckets, extra_env={"BUCKETS_DISK_TIMEOUT": "3"}) as (cluster, disk):
        written = written_through(cluster.client(1), buckets, 24)
        assert stop(cluster.procs[2]) == 0
        cluster.start(2)
        readers = {i: cluster.client(i, read_timeout=15, retries={"total_max_attempts": 1}) for i in range(1, 5)}
        writers = {i: cluster.client(i) for i in range(1, 5)}
        disk.freeze()
        thaw_at = time.monotonic() + 12
        failed: list[str] = []
        n, slowest = 0, 0.0
        while time.monotonic() < thaw_at:
            i = 1 + n % 4
            for (bucket, key), digest in list(written.items())[n % 4::6]:
                try:
                    asked = time.monotonic()
                    body = readers[i].get_object(Bucket=bucket, Key=key)["Body"].read()
                    slowest = max(slowest, time.monotonic() - asked)
                    assert hashlib.md5(body).hexdigest() == digest, (i, key)
                except AssertionError:
                    raise
                except Exception as exc:  # noqa: BLE001 - counted: none is expected
                    failed.append(f"GET {key} through node {i}: {exc}")
            body = os.urandom(3000 if n % 2 else 200_000)
            bucket, key = buckets[n % 4], f"during/{n:03d}"
            try:
                writers[i].put_object(Bucket=bucket, Key=key, Body=body)
                written[bucket, key] = hashlib.md5(body).hexdigest()
            except Exception as exc:  # noqa: BLE001 - counted: none is expected
                failed.append(f"PUT {key} through node {i}: {exc}")
            n += 1
        assert not failed, failed[:5]
        assert n >= 4, f"only {n} rounds of reads and writes in 12 s"
        assert slowest < 2, f"a GET took {slowest:.1f}s: it waited for the frozen disk"
        disk.thaw()
        deadline = time.monotonic() + 60
        while ready(cluster, 2)[0] != 200:
            assert time.monotonic() < deadline, ready(cluster, 2)
            time.sleep(0.5)
        for i in range(1, 5):
            c = cluster.client(i)
            for (bucket, key), digest in written.items():
                assert hashlib.md5(c.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == digest, (i, key)


def test_a_node_restarted_with_its_first_disk_hung_waits_for_it_and_says_so(tmp_path) -> None:
    """Node 2 stopped, its first disk (its control-plane journal) frozen, node 2 started: it
    cannot start without its journal, so it waits, but its event loop must not wait inside that
    disk: it says so in its log, answers /health/ready (503) at once, and its other disk
    answers its peers. Once the disk is thawed it starts and serves every object."""
    with cluster_with_loop_disk(tmp_path, "n2/d1", ["hung-first"]) as (cluster, disk):
        s3 = cluster.client(1)
        written = {}
        for n in range(12):
            body = os.urandom(3000 if n % 2 else 200_000)
            s3.put_object(Bucket="hung-first", Key=f"k{n}", Body=body)
            written[f"k{n}"] = hashlib.md5(body).hexdigest()
        assert stop(cluster.procs[2]) == 0
        disk.freeze()
        cluster.start(2, wait=False)
        wait_log(cluster, 2, r"the disk of its journal \(\S+\) has not taken a write in \d+s: it hangs", timeout=60)
        started = time.monotonic()
        try:
            urllib.request.urlopen(f"{cluster.url(2)}/health/ready", timeout=5)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 503 and time.monotonic() - started < 5, status
        disk.thaw()
        cluster.wait_ready(2, timeout=120)
        assert "the journal's disk answered after" in cluster.log(2)
        c = cluster.client(2)
        for key, digest in written.items():
            assert hashlib.md5(c.get_object(Bucket="hung-first", Key=key)["Body"].read()).hexdigest() == digest, key
