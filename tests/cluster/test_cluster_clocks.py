"""A node whose wall clock is off is named by every node (the fast subset, in `make test`).

Node 3 runs under libfaketime (Debian's `faketime`, installed by `make tools`), its wall clock
3 s ahead of the machine's, as on a host whose NTP is broken. (libfaketime moves its monotonic
clock too, by a constant: with `FAKETIME_DONT_FAKE_MONOTONIC` its `clock_nanosleep` fails every
`time.sleep` with EINVAL.) The
cluster keeps serving (3 s is well inside the peer signatures' 60 s window), and every node
reports the offset: `/health/cluster`, `/metrics`, the log, `buckets-admin info`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest
from clusterproc import ROOT_PASSWORD, ROOT_USER, Cluster
from serverproc import BIN

FAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
SHIFT = 3.0


def _measured(c: Cluster, i: int, timeout: float = 60.0) -> dict:
    """Node ``i``'s ``/health/cluster`` once it has an offset for every other node."""
    deadline = time.monotonic() + timeout
    health: dict = {}
    while time.monotonic() < deadline:
        health = c.health(i)
        if all(n["clock_offset"] is not None for n in health["nodes"]):
            return health
        time.sleep(0.5)
    raise AssertionError(f"node {i} measured no offset for some peers within {timeout}s: {health}")


@pytest.mark.skipif(FAKETIME is None, reason="libfaketime is not installed (make tools installs faketime)")
def test_a_node_whose_clock_is_off_is_named_by_every_node(tmp_path) -> None:
    shifted = {"LD_PRELOAD": FAKETIME, "FAKETIME": f"+{SHIFT:g}s"}
    c = Cluster(tmp_path, nodes=3, disks=2, node_env={3: shifted})
    c.start()
    try:
        # the shifted node's clock is off for real (it signs its peer calls with it)
        ahead = float(subprocess.run(["python3", "-c", "import time; print(time.time())"], env={**os.environ, **shifted},
                                     capture_output=True, text=True, check=True).stdout) - time.time()
        assert SHIFT - 1 < ahead < SHIFT + 1, ahead
        s3 = {i: c.client(i) for i in (1, 2, 3)}
        s3[3].create_bucket(Bucket="clocks")
        for i in (1, 2, 3):
            s3[i].put_object(Bucket="clocks", Key=f"k{i}", Body=b"x" * (i * 1000))
        for i in (1, 2, 3):
            assert sorted(o["Key"] for o in s3[i].list_objects_v2(Bucket="clocks")["Contents"]) == ["k1", "k2", "k3"]
            assert s3[i].get_object(Bucket="clocks", Key="k3")["Body"].read() == b"x" * 3000

        url = {i: c.url(i) for i in (1, 2, 3)}
        for i, sign in ((1, 1), (2, 1), (3, -1)):
            health = _measured(c, i)
            nodes = {n["endpoint"]: n for n in health["nodes"]}
            assert nodes[url[i]]["clock_offset"] == 0.0 and nodes[url[i]]["self"]
            for j in (1, 2, 3):
                if j == i:
                    continue
                n = nodes[url[j]]
                expected = sign * SHIFT if 3 in (i, j) else 0.0
                assert abs(n["clock_offset"] - expected) <= 0.25 + n["clock_uncertainty"], (i, j, n)
            clock = health["clock"]
            assert clock["status"] == "skewed" and clock["warn_above"] == 0.5 and clock["measured"] == 2, clock
            # node 3 sees both others off; the others see only node 3
            assert sorted(clock["skewed"]) == (sorted([url[1], url[2]]) if i == 3 else [url[3]]), clock
            assert abs(clock["max_offset"] - SHIFT) < 0.25, clock
            assert health["status"] == "ok"  # a warning, not a reason to stop serving

        # the log says which peer, how far, and what to do, once (an error: beyond the 1 s limit)
        lines = [line for line in c.log(1).splitlines() if "the clock of" in line]
        assert len(lines) == 1, lines
        logged = json.loads(lines[0])
        said = re.match(r"the clock of (\S+) is ([+-]\d+\.\d+) s \(±\d+\.\d+ s\) off this node's: .*NTP",
                        logged["message"])
        assert said and said.group(1) == url[3] and abs(float(said.group(2)) - SHIFT) < 0.25, logged
        assert logged["level"] == "error" and "no longer guaranteed" in logged["message"], logged
        assert not [line for line in c.log(2).splitlines() if "the clock of" in line and url[1] in line]

        with urllib.request.urlopen(f"{url[1]}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        gauges = dict(re.findall(r'^buckets_peer_clock_offset_seconds\{peer="([^"]+)"\} (\S+)$', metrics, re.M))
        assert set(gauges) == {url[2], url[3]}, gauges
        assert abs(float(gauges[url[3]]) - SHIFT) < 0.25 and abs(float(gauges[url[2]])) < 0.25, gauges
        assert re.search(r'^buckets_peer_clock_uncertainty_seconds\{peer="[^"]+"\} ', metrics, re.M)

        env = dict(c.env, BUCKETS_CLIENT_CONFIG=str(tmp_path / "client.json"))
        admin = str(BIN / "buckets-admin")
        subprocess.run([admin, "alias", "set", "n1", url[1], ROOT_USER, ROOT_PASSWORD], env=env, check=True,
                       capture_output=True, timeout=30)
        shown = subprocess.run([admin, "info", "n1"], env=env, capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert f"Clocks:   SKEWED: {url[3]} more than 0.5 s off" in shown.stdout, shown.stdout
        row = next(line for line in shown.stdout.splitlines() if line.startswith(url[3]))
        assert re.search(r"\+(2\.[89]|3\.[01])\d*s ±0\.\d{3}", row), row
        assert "reference" in next(line for line in shown.stdout.splitlines() if "(this node)" in line)
        as_json = json.loads(subprocess.run([admin, "info", "--json", "n1"], env=env, capture_output=True, text=True,
                                            timeout=30, check=True).stdout)
        assert as_json["cluster"]["clock"]["skewed"] == [url[3]]
    finally:
        c.stop_all()
    for i in (1, 2, 3):
        text = c.log(i)
        assert "Traceback" not in text and "unhandled error" not in text, f"node {i} logged a bug:\n{text[-6000:]}"


@pytest.mark.skipif(FAKETIME is None, reason="libfaketime is not installed (make tools installs faketime)")
def test_nodes_whose_clocks_are_minutes_apart_say_so_at_start(tmp_path) -> None:
    """Peer requests are signed with a timestamp valid for 60 s either side of the receiver's
    clock, so a node ten minutes off cannot form a cluster with the others. The node refused
    must say that its clocks are the cause (the refusal's ``Date`` tells it), not send the
    operator looking for a wrong cluster secret."""
    c = Cluster(tmp_path, nodes=3, disks=1, node_env={3: {"LD_PRELOAD": FAKETIME, "FAKETIME": "+600s"}})
    c.start(wait=False)
    try:
        deadline = time.monotonic() + 90
        said: list[str] = []
        while time.monotonic() < deadline and not said:
            said = [line for i in (1, 2, 3) for line in c.log(i).splitlines()
                    if "refused this node's signature" in line]
            time.sleep(0.5)
        assert said, [c.log(i)[-2000:] for i in (1, 2, 3)]
        for line in said:
            assert re.search(r"its clock is [+-](59\d|60\d) s from this node's, beyond the 60 s .*NTP", line), line
            assert "cluster secret" not in line, line
    finally:
        c.stop_all()
