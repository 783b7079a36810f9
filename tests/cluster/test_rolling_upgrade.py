"""A cluster upgraded one node at a time, serving throughout (marked `cluster`: `make test-cluster`).

The old release is the last commit before control levels (``OLD_RELEASE``), taken from this
repository's history (``git archive``) and run from its own source tree, the new one is this
checkout: three nodes start on the old release, take objects, and are restarted one by one
on the new one while clients keep writing and reading through the other nodes. Then:

- nothing acknowledged is lost or wrong, through any node;
- while the releases are mixed, the cluster stays at control level 1 and says who is behind
  (``/health/cluster``, ``buckets-admin info``); once every node runs the new release it rises
  to 2 by itself;
- a node cannot go back: restarted on a release of level 1 that knows levels (this checkout
  with its level set to 1), it stops once it has caught up;
- a node of the old release is then refused by ``cluster add-node`` (409 LevelTooLow, the
  cluster unchanged), and the same node started on the new release is added, with two disks
  where the layout has three data shards.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from clusterproc import ROOT_PASSWORD, ROOT_USER, Cluster
from growkit import Load, read_all, write_seed

from buckets.cluster.control_records import CONTROL_LEVEL
from serverproc import BIN, spawn, stop

pytestmark = pytest.mark.cluster

# Session 34's last commit: its nodes name no control level (level 1). A release that raises
# CONTROL_LEVEL points this at the last commit of the release before it.
OLD_RELEASE = "da13d85"
OLD_LEVEL = 1
ROOT = Path(__file__).resolve().parents[2]
BUCKET = "upgrade"
# A later release's node that knows levels but runs an older one than the cluster: this checkout, level 1.
LEVEL_ONE = ("import sys; import buckets.cluster.control_records as r; r.CONTROL_LEVEL = 1; "
             "from buckets.cli.server import main; sys.argv[0] = 'buckets'; sys.exit(main())")


def old_release(into: Path) -> Path:
    """The old release's ``src`` tree, from this repository's history."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD_RELEASE}^{{commit}}"],
                      capture_output=True).returncode != 0:
        pytest.skip(f"this clone's history does not hold {OLD_RELEASE} (a shallow clone)")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_RELEASE, "src"], capture_output=True,
                             check=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


class Clients:
    """What ``growkit.Load`` asks of a cluster: an S3 client per node."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def s3(self, i: int, **config):
        config.setdefault("retries", {"total_max_attempts": 1})
        config.setdefault("connect_timeout", 10)
        config.setdefault("read_timeout", 90)
        return self.cluster.client(i, **config)


def level_view(c: Cluster, i: int) -> dict:
    return c.health(i).get("level") or {}


def wait_level(c: Cluster, nodes: list[int], level: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    views = {}
    while time.monotonic() < deadline:
        views = {i: level_view(c, i) for i in nodes}
        if all(v.get("cluster") == level for v in views.values()):
            return
        time.sleep(0.5)
    raise AssertionError(f"not every node at control level {level} within {timeout}s: {views}")


def wait_joining(proc: subprocess.Popen, log: Path, url: str, timeout: float = 60.0) -> None:
    """Until a node started with --join waits to be added and answers (S3 with 503 meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        if "waiting to be added" in log.read_text(errors="replace"):
            try:
                urllib.request.urlopen(url, timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 503:
                    return
            except OSError:
                pass
        time.sleep(0.2)


def admin(c: Cluster, base: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(c.env, BUCKETS_CLIENT_CONFIG=str(base / "client.json"))
    subprocess.run([str(BIN / "buckets-admin"), "alias", "set", "n1", c.url(1), ROOT_USER, ROOT_PASSWORD], env=env,
                   check=True, capture_output=True)
    return subprocess.run([str(BIN / "buckets-admin"), *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_cluster_upgrades_one_node_at_a_time_while_it_serves(tmp_path) -> None:
    old = {"PYTHONPATH": str(old_release(tmp_path / "old"))}
    c = Cluster(tmp_path, nodes=3, disks=2, node_env={1: old, 2: old, 3: old}, also_free=("127.0.0.4",))
    joiner = None
    c.start()
    try:
        c.wait_healthy()
        s3 = c.client(1)
        s3.create_bucket(Bucket=BUCKET)
        seeded = write_seed(s3, BUCKET, 24)
        assert "level" not in c.health(1)  # the old release knows no levels

        load = Load(Clients(c), BUCKET, nodes=[1, 2], workers=2, attempts=3)  # type: ignore[arg-type]
        load.start()
        try:
            for i, others in ((3, [1, 2]), (2, [1, 3]), (1, [2, 3])):
                load.nodes[:] = others  # the clients go to the nodes that stay up, as a load balancer would
                time.sleep(1.0)
                assert stop(c.procs[i]) == 0, c.log(i)[-3000:]
                c.node_env[i] = {}  # the new release: this checkout
                c.logs[i] = tmp_path / f"node{i}.new.log"
                c.start(i)
                c.wait_healthy()
                view = level_view(c, i)
                if i != 1:  # some node still runs the old release: the cluster stays at level 1
                    assert view["cluster"] == OLD_LEVEL and view["this_node"] == CONTROL_LEVEL, view
                    time.sleep(12)  # one round of the level watch (10 s) has asked every peer
                    view = level_view(c, i)
                    old_nodes = sorted(c.url(j) for j in (1, 2) if c.node_env.get(j))
                    assert view["behind"] == old_nodes and view["upgrading"] and view["cluster"] == OLD_LEVEL, view
                    nodes = {n["endpoint"]: n["level"] for n in c.health(i)["nodes"]}
                    assert nodes == {c.url(j): OLD_LEVEL if c.node_env.get(j) else CONTROL_LEVEL for j in (1, 2, 3)}, nodes
            load.nodes[:] = [1, 2, 3]
            wait_level(c, [1, 2, 3], CONTROL_LEVEL)  # every node runs level 2: the cluster moves to it
            time.sleep(2.0)
        finally:
            load.stop()
        print(f"load while upgrading: {load.summary()}")
        assert not load.failures, f"{load.summary()}: {load.failures[:10]}"
        assert load.counts["PUT ok"] > 20 and load.counts["GET ok"] > 10, load.summary()
        read_all(Clients(c), [1, 2, 3], BUCKET, {**seeded, **load.acked}, load.maybe)  # type: ignore[arg-type]
        assert any(f"the cluster's control level is now {CONTROL_LEVEL}" in c.log(i) for i in (1, 2, 3))  # the leader's
        info = admin(c, tmp_path, "info", "n1")
        assert info.returncode == 0 and f"control level {CONTROL_LEVEL}" in info.stdout and "LEVEL" in info.stdout, info.stdout
        listing = json.loads(admin(c, tmp_path, "cluster", "list-nodes", "n1", "--json").stdout)
        assert listing["level"] == CONTROL_LEVEL and [n["level"] for n in listing["nodes"]] == [CONTROL_LEVEL] * 3

        # No way back: node 3 restarted on a release of level 1 that knows levels (this checkout
        # with its level set to 1) stops once it has caught up, and starts again on level 2.
        assert stop(c.procs[3]) == 0
        log3 = tmp_path / "node3.level1.log"
        back = spawn([sys.executable, "-c", LEVEL_ONE, *c.command(3)[1:]], c.env, log3, tmp_path)
        assert back.wait(timeout=120) != 0
        assert f"the cluster runs control level {CONTROL_LEVEL}; this release knows levels up to 1" \
            in log3.read_text(), \
            log3.read_text()[-3000:]
        c.logs[3] = tmp_path / "node3.again.log"
        c.start(3)
        c.wait_healthy()

        # A node of the old release is refused now, and nothing changes; on the new release it joins.
        # (four disks: the old release cannot open a joining node with fewer disks than k)
        disks = f"http://127.0.0.4:{c.port}{tmp_path}/n4old/d{{1...4}}"
        line = [str(BIN / "buckets"), "server", "--address", f"127.0.0.4:{c.port}", "--join", c.url(1), disks]
        log4 = tmp_path / "node4.old.log"
        joiner = spawn(line, {**c.env, **old}, log4, tmp_path)
        wait_joining(joiner, log4, f"http://127.0.0.4:{c.port}")
        generation = c.health(1)["generation"]
        refused = admin(c, tmp_path, "cluster", "add-node", "n1", disks, "--no-wait", "--json")
        assert refused.returncode != 0, refused.stdout
        assert (f"runs control level {OLD_LEVEL} (an older release); the cluster runs level {CONTROL_LEVEL}"
                in refused.stderr), refused.stderr
        assert c.health(1)["generation"] == generation and len(c.health(1)["nodes"]) == 3
        assert stop(joiner) == 0
        # two disks, fewer than the layout's data shards: a joining node opens with its own disks alone
        erasure = json.loads(admin(c, tmp_path, "info", "n1", "--json").stdout)["erasure"]
        assert erasure["data"] > 2, erasure
        disks = f"http://127.0.0.4:{c.port}{tmp_path}/n4/d{{1...2}}"
        line = [*line[:-1], disks]
        log4 = tmp_path / "node4.new.log"
        joiner = spawn(line, c.env, log4, tmp_path)
        wait_joining(joiner, log4, f"http://127.0.0.4:{c.port}")
        added = admin(c, tmp_path, "cluster", "add-node", "n1", disks, "--json")
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["added"] is True
        nodes = {n["endpoint"]: n for n in c.health(1)["nodes"]}
        assert len(nodes) == 4 and level_view(c, 1)["cluster"] == CONTROL_LEVEL
        node4 = boto3.client("s3", endpoint_url=f"http://127.0.0.4:{c.port}", aws_access_key_id=ROOT_USER,
                             aws_secret_access_key=ROOT_PASSWORD, region_name="us-east-1")
        assert hashlib.sha256(node4.get_object(Bucket=BUCKET, Key="seed/0001")["Body"].read()).hexdigest() \
            == seeded["seed/0001"]
    finally:
        if joiner is not None:
            stop(joiner)
        c.stop_all()
    for path in [*tmp_path.glob("node*.log")]:
        text = path.read_text(errors="replace")
        assert "Traceback" not in text and "unhandled error" not in text, f"{path.name} logged a bug:\n{text[-6000:]}"
