"""A node with one slow disk: the cluster goes around that disk, not around the node.

Node 3's second disk is an ext4 file system on a loop device whose I/O, for node 3's process,
is throttled to 512 KB/s by cgroup v1 ``blkio`` (``faultkit.SlowDisk``), with the page cache
dropped every 3 s so that its reads go to the device: a disk retrying sectors, answering most
calls at once and some only after seconds.

A peer's shards come to a reader in one stream and a writer's records go to a peer in one
call, so one slow disk holds back the whole peer. Before session 52 the other nodes marked node
3 as a whole slow, went around all its disks, and took it out of the load balancers' rotation
as if its link were slow (503 from 18 s on in the experiment this test comes from). Node 3 now
names its lagging disk (``storage/pace.py``) and its peers put lags on that disk alone.

Checked, under 40 s of reads and writes through nodes 1, 2 and 4 (no retries): no request
fails and every byte read is right; node 3 names the disk in its log, in ``/health/cluster``
in ``buckets_disk_lagging`` and in ``buckets-admin info``; the other nodes blame that disk (their log names it, not the node); node
3 stays in rotation (``/health/ready``) at all but at most one of the checks made every 3 s
(the first lags can land on the node before it has judged its disk); and once the disk is
fast again everything, the writes made meanwhile included, reads back through every node.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from clusterproc import ROOT_PASSWORD, ROOT_USER
from faultkit import FaultCluster, MixedLoad, SlowDisk, slow_disk_support
from loopdisk import LoopDisk
from serverproc import BIN

pytestmark = pytest.mark.cluster

REASON = slow_disk_support()
RATE = 512 << 10
SECONDS = 40.0


def ready(c: FaultCluster, i: int) -> int:
    try:
        with urllib.request.urlopen(f"{c.url(i)}/health/ready", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as refused:
        return refused.code


def admin_info(c: FaultCluster, tmp_path, i: int) -> str:
    """What ``buckets-admin info`` prints for node ``i``."""
    env = dict(c.env, BUCKETS_CLIENT_CONFIG=str(tmp_path / "client.json"))
    admin = str(BIN / "buckets-admin")
    subprocess.run([admin, "alias", "set", f"n{i}", c.url(i), ROOT_USER, ROOT_PASSWORD], env=env, check=True,
                   capture_output=True, timeout=60)
    return subprocess.run([admin, "info", f"n{i}"], env=env, capture_output=True, text=True, timeout=60).stdout


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_a_node_with_one_slow_disk_stays_in_rotation_and_the_others_go_around_the_disk(tmp_path) -> None:
    c = FaultCluster(tmp_path, nodes=4, disks=4)
    slow_path = c.disk_roots()[2 * 4 + 1]  # node 3's second disk
    loop = LoopDisk(tmp_path / "slow.img", slow_path, size_mb=1024)
    try:
        c.start()
        s3 = c.client(1)
        s3.create_bucket(Bucket="slowdisk")
        rng = random.Random(3)
        digests: dict[str, str] = {}
        for name, count, size in (("big", 4, 16 << 20), ("small", 30, 4096)):
            for i in range(count):
                body = rng.randbytes(size)
                digests[f"{name}{i}"] = hashlib.sha256(body).hexdigest()
                s3.put_object(Bucket="slowdisk", Key=f"{name}{i}", Body=body)
        with SlowDisk(c, 3, loop.device) as disk:
            disk.slow(RATE)
            disk.drop_caches()
            load = MixedLoad(c, "slowdisk", digests, writer_seed=10, big_share=0.2).start()
            checks: list[int] = []
            named: list[str] = []
            gauge = shown = ""
            try:
                started = time.monotonic()
                while time.monotonic() - started < SECONDS:
                    checks.append(ready(c, 3))
                    if not named:
                        named = (c.health(3) or {}).get("disks_lagging") or []
                        if named:  # ... and the gauge says so meanwhile
                            with urllib.request.urlopen(f"{c.url(3)}/metrics", timeout=30) as r:
                                gauge = next((line for line in r.read().decode().splitlines()
                                              if line.startswith("buckets_disk_lagging{") and named[0] in line), "")
                            shown = admin_info(c, tmp_path, 3)  # (asked right after: it may have changed since)
                    elif "Disks:    LAGGING" not in shown:
                        shown = admin_info(c, tmp_path, 3)
                    disk.drop_caches()
                    time.sleep(3)
            finally:
                load.stop()
        print(f"node 3's /health/ready every 3 s: {checks}; its disks_lagging: {named}; {load.summary()}")
        assert not load.failures, load.failures[:10]
        lagging = [json.loads(line)["message"] for line in c.log(3).splitlines()
                   if "lags this node's other disks" in line]
        assert lagging and str(slow_path) in lagging[0], lagging
        assert named == [str(slow_path)], named
        assert gauge.endswith(" 1.0"), gauge
        assert f"Disks:    LAGGING: {slow_path} lag this node's other disks" in shown, shown
        blamed_disk = [line for i in (1, 2, 4) for line in c.log(i).splitlines()
                       if f"{c.url(3)}{slow_path} lag" in line]
        print(f"lines blaming the disk on the other nodes: {len(blamed_disk)}")
        assert blamed_disk, "no other node put a lag on node 3's slow disk"
        assert checks.count(503) <= 1, f"node 3 taken out of rotation for one slow disk: {checks}"
        digests.update(load.written)
        for via in (1, 2, 3, 4):  # the disk fast again: everything through every node
            client = c.client(via, retries={"max_attempts": 1, "mode": "standard"}, read_timeout=300)
            for key, digest in digests.items():
                got = client.get_object(Bucket="slowdisk", Key=key)["Body"].read()
                assert hashlib.sha256(got).hexdigest() == digest, f"{key} through node {via}"
        assert not c.bug_lines(), c.bug_lines()
    finally:
        c.close()
        loop.close()
