"""A cluster node's life: formation, the first writes, a clean stop of every node.

A real 4-node x 4-disk cluster of ``buckets server`` processes on 127.0.0.1-4:

1. Formation hands each node's port from the listener that serves peers while the cluster
   forms to the full app without closing it: writes made through the first node to serve,
   while the others are still handing over, land on all 16 disks, and no node ever counted
   a peer's disk offline.
2. SIGTERM to every node at once while anti-entropy is running: each node stops its
   background work before its registry closes: exit code 0, no traceback in any log.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import diskview
import pytest
from clusterproc import Cluster

# Long multi-node run: make test-cluster (make test keeps test_cluster_basic and test_growth_under_load[fast]).
pytestmark = pytest.mark.cluster

INLINE_AND_NOT = [10, 4096, 100_000, 300_000]  # inline (in the metadata) and shard files alike
ANTI_ENTROPY_PASS = "anti-entropy: a pass over"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("lifecycle"), nodes=4, disks=4)
    try:
        yield c
    finally:
        c.stop_all()


def no_bugs_logged(c: Cluster) -> None:
    for i in range(1, c.n + 1):
        text = c.log(i)
        assert "Traceback" not in text and "unhandled error" not in text, f"node {i} logged a bug:\n{text[-6000:]}"


def test_first_writes_after_formation_land_on_every_disk(fresh: Cluster) -> None:
    c = fresh
    s3 = c.client(1)
    refused: dict[int, int] = {i: 0 for i in range(1, c.n + 1)}
    done = threading.Event()

    def watch(i: int) -> None:
        """Connect to node i again and again, as a peer would: once its port has accepted a
        connection, it must never refuse one (a refused connection marks the peer offline)."""
        accepted = False
        while not done.is_set():
            try:
                socket.create_connection((c.host(i), c.port), timeout=2).close()
                accepted = True
            except ConnectionRefusedError:
                refused[i] += accepted
            except OSError:
                pass
            time.sleep(0.002)

    watchers = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(1, c.n + 1)]
    for w in watchers:
        w.start()
    try:
        c.start(wait=False)
        c.wait_ready(1)  # writes start the moment the first node serves, while the others hand over
        s3.create_bucket(Bucket="first")
        written = []
        for n in range(20):
            key = f"obj-{n}"
            s3.put_object(Bucket="first", Key=key, Body=os.urandom(INLINE_AND_NOT[n % 4]))
            written.append(key)
        for i in range(2, c.n + 1):
            c.wait_ready(i)
    finally:
        done.set()
        for w in watchers:
            w.join()
    assert refused == {i: 0 for i in range(1, c.n + 1)}, f"connections refused after a node listened: {refused}"
    assert len(c.disk_roots()) == 16 and all(root.is_dir() for root in c.disk_roots())
    # every shard of every write on its disk: 16 (12+4), or 8 for the small ones (4+4 on a
    # window of the row: --small-set-limit), as each write's metadata says
    short = {}
    logs = "\n".join(c.log(i) for i in range(1, c.n + 1))
    for key in written:
        metas = [m for root in c.disk_roots() for m in diskview.writes_of(root, "first", key)]
        writes: dict[str, list[dict]] = {}
        for m in metas:
            writes.setdefault(m["wid"], []).append(m)
        if len(writes) > 1:
            # A first attempt refused while the cluster formed (the client retried it): its
            # data may be left to the orphan sweep when its outcome was unknown, and the node
            # that took it said so. The write the index holds is the complete one.
            assert f"first/{key}: " in logs, f"{key}: {len(writes)} writes, and no node logged a failed one"
            # (Which write the index holds the disks cannot say: one complete one is kept.)
            complete = [(w, ms) for w, ms in writes.items() if len(ms) == ms[0]["k"] + ms[0]["m"]]
            writes = dict(complete[:1])
        short[key] = [(len(ms), {m["k"] + m["m"] for m in ms}) for ms in writes.values()]
    assert all(len(ws) == 1 and ws[0][0] in (8, 16) and ws[0][1] == {ws[0][0]} for ws in short.values()), \
        f"shards per object: {short}"
    assert {ws[0][0] for ws in short.values()} == {8, 16}
    for i in range(1, c.n + 1):
        # While the cluster forms, a node may find a peer not started yet, or its own disks
        # not formatted yet; once it serves, nothing may be offline, and no node may ever have
        # counted a peer's disk offline (the port closing for a moment did just that).
        lines = c.log(i).splitlines()
        serving = next(n for n, line in enumerate(lines) if "serving on" in line)
        offline = [line for n, line in enumerate(lines)
                   if ("went offline" in line or "is offline" in line)
                   and (n > serving or "disk http://" in line)]
        assert not offline, f"node {i}:\n" + "\n".join(offline)
    no_bugs_logged(c)


def test_sigterm_to_every_node_during_anti_entropy_stops_cleanly(fresh: Cluster) -> None:
    c = fresh
    if not c.procs:
        c.start()
    s3 = c.client(1)
    for n in range(60):  # many buckets: a pass of anti-entropy takes a while
        s3.create_bucket(Bucket=f"ae-{n}")
        s3.put_object(Bucket=f"ae-{n}", Key="k", Body=b"v")
    # Restarted, every node runs a pass of anti-entropy a few seconds after it is ready;
    # the debug log says when one starts.
    c.stop_all()
    c.env["BUCKETS_LOG_LEVEL"] = "debug"
    c.start()
    deadline = time.monotonic() + 60
    while not any(ANTI_ENTROPY_PASS in c.log(i) for i in range(1, c.n + 1)):
        assert time.monotonic() < deadline, "no anti-entropy pass within 60s of the restart"
        time.sleep(0.02)
    for proc in c.procs.values():  # every node at once, as a service manager stopping them all
        proc.terminate()
    codes = [proc.wait(timeout=60) for proc in c.procs.values()]
    assert codes == [0] * c.n, codes
    for i in range(1, c.n + 1):
        assert "stopped cleanly" in c.log(i), c.log(i)[-4000:]
    no_bugs_logged(c)
