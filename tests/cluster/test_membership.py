"""Membership: a one-node URL cluster grows by a node that joins, and shrinks again.

Real ``buckets server`` processes on 127.0.0.1 and 127.0.0.5 (same port), driven by boto3
and by the real ``buckets-admin`` CLI as a subprocess:

1. (default run) ``buckets server --address 127.0.0.1:P http://127.0.0.1:P/.../n1/d{1...4}``
   is a cluster of one; objects are written; ``buckets server --address 127.0.0.5:P --join
   http://127.0.0.1:P http://127.0.0.5:P/.../n5/d{1...4}`` answers S3 with 503 until
   ``buckets-admin cluster add-node`` places it; a node that is not running is refused (503,
   nothing changes; the other refusals are in tests/unit/cluster/test_membership_rules.py); once the
   migration is done every object reads back through both nodes with the right bytes, and
   ``list-nodes`` shows both nodes active.
2. (``cluster`` marker) both nodes restart with their first command lines (membership comes
   from the control plane on their disks), objects still read back through both; then
   ``remove-node`` drains the second node, which then answers S3 with 503, every object
   reads back through the first one, and the removed node refuses to start with one line.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import diskview
import pytest
from botocore.config import Config
from clusterproc import ROOT_PASSWORD, ROOT_USER, free_cluster_port

from serverproc import BIN, server_env, spawn, stop

SIZES = [0, 10, 5000, 200_000, 1_500_000]  # empty, inline, single block, multi-block
OBJECTS = 15
DOMAIN = "s3.membership.test"


def body_of(i: int) -> bytes:
    size = SIZES[i % len(SIZES)]
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Pair:
    """Node 1 (127.0.0.1, the seed) and node 5 (127.0.0.5, the joiner), same port."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_cluster_port(1, 1, also=("127.0.0.5",))
        self.env = server_env({"BUCKETS_ROOT_USER": ROOT_USER, "BUCKETS_ROOT_PASSWORD": ROOT_PASSWORD,
                               "BUCKETS_SCANNER_RATE": "0", "BUCKETS_MIGRATION_GRACE": "1"})
        self.admin_env = dict(self.env, BUCKETS_CLIENT_CONFIG=str(base / "client.json"))
        self.procs: dict[int, subprocess.Popen] = {}
        self.runs: dict[int, int] = {1: 0, 5: 0}
        self.logs: list[Path] = []

    def url(self, i: int) -> str:
        return f"http://127.0.0.{i}:{self.port}"

    def disks(self, i: int) -> str:
        return f"{self.url(i)}{self.base}/n{i}/d{{1...4}}"

    def command(self, i: int) -> list[str]:
        line = [str(BIN / "buckets"), "server", "--address", f"127.0.0.{i}:{self.port}", "--domain", DOMAIN]
        if i == 5:
            line += ["--join", self.url(1)]
        return line + [self.disks(i)]

    def start(self, i: int) -> None:
        self.runs[i] += 1
        log = self.base / f"node{i}.{self.runs[i]}.log"
        self.logs.append(log)
        self.procs[i] = spawn(self.command(i), self.env, log, self.base)

    def log(self, i: int) -> str:
        return (self.base / f"node{i}.{self.runs[i]}.log").read_text(errors="replace")

    def status(self, i: int, path: str = "/health/ready", host: str | None = None) -> int:
        """``GET path`` on node ``i`` (with ``host`` as its Host header): the status, 0 if none."""
        request = urllib.request.Request(f"{self.url(i)}{path}", headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def wait_ready(self, i: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                raise AssertionError(f"node {i} exited:\n{self.log(i)[-4000:]}")
            if self.status(i) == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"node {i} not ready within {timeout}s:\n{self.log(i)[-4000:]}")

    def wait_log(self, i: int, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(i):
            if self.procs[i].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"node {i} never logged {text!r}:\n{self.log(i)[-4000:]}")
            time.sleep(0.2)

    def admin(self, *args: str, check: bool = True, timeout: float = 180.0) -> subprocess.CompletedProcess:
        result = subprocess.run([str(BIN / "buckets-admin"), *args], env=self.admin_env, capture_output=True,
                                text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"buckets-admin {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def s3(self, i: int):
        return boto3.client("s3", endpoint_url=self.url(i), aws_access_key_id=ROOT_USER,
                            aws_secret_access_key=ROOT_PASSWORD, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 8, "mode": "standard"}))

    def stop(self, i: int) -> int:
        return stop(self.procs[i])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)


def read_back(pair: Pair, i: int, bucket: str = "grow") -> None:
    s3 = pair.s3(i)
    for n in range(OBJECTS):
        got = s3.get_object(Bucket=bucket, Key=f"obj/{n:03d}")["Body"].read()
        assert got == body_of(n), f"object {n} read through node {i}: {len(got)} bytes, wrong content"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert keys == [f"obj/{n:03d}" for n in range(OBJECTS)] + ["parts/big"]
    big = s3.get_object(Bucket=bucket, Key="parts/big")["Body"].read()
    assert big == b"a" * (5 << 20) + b"b" * 1000


def object_files(pair: Pair, i: int) -> list:
    """The objects' shards (metadata files and log records) on node ``i``'s disks."""
    return [s for disk in sorted((pair.base / f"n{i}").glob("d*")) for s in diskview.shards(disk)]


def nodes_listed(pair: Pair) -> dict[str, str]:
    listing = json.loads(pair.admin("cluster", "list-nodes", "c1", "--json").stdout)
    return {n["endpoint"]: n["state"] for n in listing["nodes"]}


def no_bugs_logged(pair: Pair) -> None:
    for log in pair.logs:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "unhandled error" not in text, f"{log.name} logged a bug:\n{text[-6000:]}"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(tmp_path_factory.mktemp("membership"))
    try:
        yield p
    finally:
        p.stop_all()
    no_bugs_logged(p)


@pytest.mark.cluster  # make test grows a cluster in test_growth.py::test_growth_under_load[fast]
def test_one_node_cluster_grows_by_a_joining_node(pair: Pair) -> None:
    pair.start(1)
    pair.wait_ready(1)
    pair.wait_log(1, "Cluster:     1 node, generation 1")
    s3 = pair.s3(1)
    s3.create_bucket(Bucket="grow")
    for n in range(OBJECTS):
        s3.put_object(Bucket="grow", Key=f"obj/{n:03d}", Body=body_of(n))
    upload = s3.create_multipart_upload(Bucket="grow", Key="parts/big")["UploadId"]
    parts = [s3.upload_part(Bucket="grow", Key="parts/big", UploadId=upload, PartNumber=k, Body=body)["ETag"]
             for k, body in ((1, b"a" * (5 << 20)), (2, b"b" * 1000))]
    s3.complete_multipart_upload(Bucket="grow", Key="parts/big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": k + 1, "ETag": etag} for k, etag in enumerate(parts)]})

    pair.admin("alias", "set", "c1", pair.url(1), ROOT_USER, ROOT_PASSWORD)
    # A node that is not running cannot be added; nothing changes.
    refused = pair.admin("cluster", "add-node", "c1", pair.disks(5), check=False)
    assert refused.returncode == 1 and "ServiceUnavailable" in refused.stderr and "did not answer" in refused.stderr, \
        refused.stderr
    assert nodes_listed(pair) == {pair.url(1): "active"}

    pair.start(5)
    pair.wait_log(5, "waiting to be added")
    assert pair.status(5, "/") == 503  # S3 waits until the node is placed
    assert pair.status(5, "/health/live") in (200, 503)

    added = pair.admin("cluster", "add-node", "c1", pair.disks(5), "--no-wait", "--json")
    result = json.loads(added.stdout)
    assert result["added"] is True and result["generation"] == 2 and len(result["disks"]) == 4
    assert result["tolerates"] == {"before": 0, "after": 0}  # two nodes: no majority without either
    status = pair.admin("cluster", "add-node", "c1", pair.disks(5), "--no-progress", "--wait-timeout", "150")
    assert "already an active node" in status.stdout  # add-node again: nothing to do

    pair.wait_ready(5)
    deadline = time.monotonic() + 150
    while json.loads(pair.admin("cluster", "migration-status", "c1", "--json").stdout)["state"] != "done":
        assert time.monotonic() < deadline, pair.admin("cluster", "migration-status", "c1").stdout
        time.sleep(0.5)
    assert nodes_listed(pair) == {pair.url(1): "active", pair.url(5): "active"}
    read_back(pair, 1)
    read_back(pair, 5)
    # Both nodes' disks hold shards now (the new node got its share of the objects).
    assert object_files(pair, 5), "no object moved to the new node"
    info = pair.admin("info", "c1").stdout
    assert "2/2 nodes online, generation 2" in info and "Migration: done, generation 1 -> 2" in info, info
    assert "Layout:   2+2, each object on 4 of the 8 disks; tolerates 0 node failure(s)" in info, info
    text = pair.admin("cluster", "node-info", "c1", pair.url(5)).stdout
    assert "State:     active, online" in text and text.count(" yes ") == 4, text


@pytest.mark.cluster
def test_restart_with_first_command_lines_then_remove_the_node(pair: Pair) -> None:
    if len(pair.procs) != 2 or set(nodes_listed(pair).values()) != {"active"}:
        pytest.skip("needs the grown cluster of the first test")
    assert pair.stop(1) == 0 and pair.stop(5) == 0
    pair.start(1)
    pair.start(5)
    pair.wait_ready(1)
    pair.wait_ready(5)
    pair.wait_log(1, "Cluster:     2 nodes, generation 2")  # the banner, printed once it serves
    read_back(pair, 5)
    read_back(pair, 1)

    removed = pair.admin("cluster", "remove-node", "c1", pair.url(5), "--no-progress", "--wait-timeout", "150")
    assert f"Draining {pair.url(5)}: generation 3" in removed.stdout, removed.stdout
    assert f"{pair.url(5)} is removed: it can be stopped" in removed.stdout, removed.stdout
    assert nodes_listed(pair) == {pair.url(1): "active", pair.url(5): "removed"}
    assert pair.status(5, "/grow") == 503  # a removed node no longer serves S3
    # nor virtual-host-style (also a key under the admin API's path), nor the console's API
    assert pair.status(5, "/_buckets/admin/v1/info", host=f"grow.{DOMAIN}:{pair.port}") == 503
    assert pair.status(5, "/console/api/buckets") == 503
    assert pair.status(1, "/_buckets/admin/v1/info", host=f"grow.{DOMAIN}:{pair.port}") == 403  # (anonymous)
    read_back(pair, 1)
    # The vacated shards go once the grace delay (1 s here) for readers of the old entries passed.
    deadline = time.monotonic() + 60
    while left := object_files(pair, 5):
        assert time.monotonic() < deadline, f"the drained node still holds {left[:3]}"
        time.sleep(0.5)

    assert pair.stop(5) == 0
    pair.start(5)
    assert pair.procs[5].wait(timeout=60) == 1
    assert "was removed from the cluster" in pair.log(5)
