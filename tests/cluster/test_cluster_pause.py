"""A node whose process stops answering for a while and then goes on, as after a long GC-like
pause, a VM stalled by its host, or ``kill -STOP`` / ``kill -CONT``.

It is the case a read lease must survive: the paused node may hold the bucket's lease, and
while it is stopped its peers go on without it. When it resumes, the first thing it reads may
be a request queued while it was stopped. That GET was sent after a newer PUT through another
node was acknowledged, so it must return that newer value: a holder must count its lease as
ended by its own clock (which ran on while it was stopped), never answer from what it held
before the pause. Each node is paused in turn, with the bucket's reads warmed up first so its
holder keeps a lease. Marked ``cluster`` (make test-cluster).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
from clusterproc import Cluster

pytestmark = pytest.mark.cluster

BUCKET = "paused"
KEYS = [f"k{n}" for n in range(4)]


@pytest.mark.parametrize("pause", ["long", "short"])
def test_a_paused_node_never_answers_from_before_its_pause(tmp_path, pause) -> None:
    """``long``: stopped until the PUTs through another node are acknowledged (they wait out
    the paused holder's lease), and GETs are queued to it before it resumes. ``short``: resumed
    1.3 s into the PUTs, past the writers' wait for the holder but inside its lease, and read
    through as soon as each PUT is acknowledged."""
    cluster = Cluster(tmp_path, nodes=4, disks=2)
    try:
        cluster.start()
        clients = {i: cluster.client(i) for i in range(1, 5)}
        clients[1].create_bucket(Bucket=BUCKET)
        version = 0
        for key in KEYS:
            clients[1].put_object(Bucket=BUCKET, Key=key, Body=f"{key}=0".encode())
        for paused in range(1, 5):
            for rnd in range(1 if pause == "short" else 2):
                for i in range(1, 5):  # lookups through every node: the holder takes a lease
                    for key in KEYS:
                        clients[i].get_object(Bucket=BUCKET, Key=key)["Body"].read()
                writer = 1 + paused % 4
                answers: dict[str, bytes | Exception] = {}

                def read(key: str) -> None:
                    try:
                        answers[key] = cluster.client(paused).get_object(Bucket=BUCKET, Key=key)["Body"].read()
                    except Exception as exc:  # noqa: BLE001 - reported below
                        answers[key] = exc

                version += 1
                os.kill(cluster.procs[paused].pid, signal.SIGSTOP)
                try:
                    resume = threading.Timer(1.3, os.kill, (cluster.procs[paused].pid, signal.SIGCONT))
                    if pause == "short":
                        resume.start()
                    started = time.monotonic()
                    readers = []
                    for key in KEYS:  # acknowledged while the paused node cannot answer (long)
                        clients[writer].put_object(Bucket=BUCKET, Key=key, Body=f"{key}={version}".encode())
                        if pause == "short":
                            read(key)
                    took = time.monotonic() - started
                    if pause == "long":
                        # sent now, after the PUTs' answers: queued in the stopped node's sockets
                        readers = [threading.Thread(target=read, args=(key,)) for key in KEYS]
                        for r in readers:
                            r.start()
                        time.sleep(0.5)
                finally:
                    resume.cancel()
                    if resume.is_alive():
                        resume.join()
                    os.kill(cluster.procs[paused].pid, signal.SIGCONT)  # (again, if the timer did)
                for r in readers:
                    r.join(60)
                expected = {key: f"{key}={version}".encode() for key in KEYS}
                assert answers == expected, (f"node {paused} resumed (round {rnd}, the PUTs took {took:.1f}s "
                                             f"through node {writer}): {answers}")
                for i in range(1, 5):  # and every node agrees afterwards
                    for key in KEYS:
                        assert clients[i].get_object(Bucket=BUCKET, Key=key)["Body"].read() == expected[key], (i, key)
    finally:
        for proc in cluster.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        cluster.stop_and_check_logs()


@pytest.mark.parametrize("seconds", [8, 15])
def test_a_node_resumed_after_a_pause_stays_in_rotation(tmp_path, seconds) -> None:
    """A node paused under writes is left out of them while stopped: its shards lag (the
    others mark it slow, "surely" so, as they would a slow link), and after 10 s of no answer
    it is taken offline. Once it resumes it keeps up, and its ``/health/ready`` must not send
    load balancers away as if its link were slow (``cluster/slowlink.py``: out once the others
    name it for two rounds of 5 s; their marks could outlast the pause by 10-20 s). 8 s stays
    below the offline timeout, 15 s goes past it. Checked each second for 35 s after the
    resume: 200 every time; and the writes through the others never failed."""
    cluster = Cluster(tmp_path, nodes=4, disks=2)
    try:
        cluster.start()
        cluster.client(1).create_bucket(Bucket=BUCKET)
        stop = threading.Event()
        failures: list[str] = []

        def writer(via: int) -> None:
            client = cluster.client(via, retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120)
            n = 0
            while not stop.is_set():
                try:
                    body = os.urandom(1 << 20 if n % 5 == 0 else 4096)
                    client.put_object(Bucket=BUCKET, Key=f"w{via}-{n % 20}", Body=body)
                except Exception as exc:  # noqa: BLE001 - reported below
                    failures.append(f"PUT via {via}: {exc!r}"[:300])
                n += 1

        threads = [threading.Thread(target=writer, args=(via,)) for via in (1, 2, 4)]
        for t in threads:
            t.start()
        try:
            time.sleep(3)
            os.kill(cluster.procs[3].pid, signal.SIGSTOP)
            try:
                time.sleep(seconds)
            finally:
                os.kill(cluster.procs[3].pid, signal.SIGCONT)
            answers = []
            for _ in range(35):
                answers.append(ready_status(cluster.url(3)))
                time.sleep(1)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        assert not failures, failures[:5]
        assert any(f"writes to {cluster.url(3)} lag" in cluster.log(i) for i in (1, 2, 4)), \
            "the pause was not felt: no node left node 3's shards out"
        assert answers == [200] * len(answers), f"node 3 out of rotation after it resumed: {answers}"
    finally:
        for proc in cluster.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        cluster.stop_and_check_logs()


def ready_status(url: str) -> int | str:
    try:
        with urllib.request.urlopen(f"{url}/health/ready", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as refused:
        return refused.code
    except OSError as exc:
        return f"{exc!r}"[:80]
