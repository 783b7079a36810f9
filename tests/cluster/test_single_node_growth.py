"""A plain single node (``buckets server BASE/n1/d{1...4}``) grows with ``cluster add-node``
(issue 10: "the single-node deployment of today is a cluster of one").

The first ``add-node`` makes the single node a cluster of one (``buckets.cluster.convert``): it
stops serving for a moment (its port stays open: connections wait in the queue, nothing is
refused), imports its buckets and users into a control plane of its own, copies its open
multipart uploads into the cluster's form, and starts again in place as a cluster node; the
CLI then adds the joining node and follows the migration. Shown here with real processes and
the real CLI, under a load of boto3 clients (its default of 3 attempts): 0 failed requests, 0
lost or wrong objects, connections never refused, bucket creation dates and users kept, an
upload opened on the single node completed through the new node, and node 1 restarted with
its original plain command line comes back as a cluster member.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from clusterproc import CONTROL_OFFSET
from growkit import GrowCluster, Load, read_all, write_seed

from buckets.admin.client import AdminCallError

# Long multi-node run: make test-cluster (make test keeps test_cluster_basic and test_growth_under_load[fast]).
pytestmark = pytest.mark.cluster


def _watch_refusals(cluster: GrowCluster, i: int, done: threading.Event, refused: list[int]) -> threading.Thread:
    """Connect to node ``i`` again and again: its port must never refuse a connection."""
    def watch() -> None:
        while not done.is_set():
            try:
                socket.create_connection((cluster.host(i), cluster.port), timeout=5).close()
            except ConnectionRefusedError:
                refused[0] += 1
            except OSError:
                pass
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_plain_single_node_grows_with_add_node(tmp_path: Path) -> None:
    cluster = GrowCluster(tmp_path, plain_first=True)
    try:
        cluster.start(1)
        cluster.wait_ready(1)
        with pytest.raises(AdminCallError, match="not a cluster node"):  # a plain single node
            cluster.nodes(1)
        s3 = cluster.s3(1, retries={"total_max_attempts": 3})
        s3.create_bucket(Bucket="plain")
        s3.create_bucket(Bucket="second")
        created = {b["Name"]: b["CreationDate"] for b in s3.list_buckets()["Buckets"]}
        seed = write_seed(s3, "plain", 14, 1)
        cluster.admin(1, "user", "add", "alice", "alice-secret-123")
        part = b"p" * (5 << 20)
        upload = s3.create_multipart_upload(Bucket="plain", Key="open/upload")["UploadId"]
        etag = s3.upload_part(Bucket="plain", Key="open/upload", UploadId=upload, PartNumber=1, Body=part)["ETag"]

        # Bad input is refused and changes nothing: still a single node.
        for body, code in (({"endpoint": "ftp://x"}, "InvalidArgument"),
                           ({"endpoint": cluster.url(2), "paths": "d1"}, "InvalidArgument"),
                           ({"endpoint": cluster.url(1)}, "InvalidArgument")):
            with pytest.raises(AdminCallError) as refused_call:
                cluster.api(1).call("POST", "cluster/add-node", body)
            assert refused_call.value.code == code, (body, refused_call.value)
        assert not list((tmp_path / "n1").rglob("members*")), "a refused add-node left a membership file"
        assert cluster.status(1) == 200

        # The joining node waits for the single node, and says why.
        cluster.start(2)
        cluster.wait_log(2, "single node")

        load = Load(cluster, "plain", [1], workers=2, seed=11, attempts=3)
        done, refused = threading.Event(), [0]
        watcher = _watch_refusals(cluster, 1, done, refused)
        load.start()
        try:
            time.sleep(1.0)
            out = cluster.admin(1, "cluster", "add-node", cluster.disks(2)).stdout
            assert "becomes a cluster of one" in out and "Migration done" in out, out
            cluster.wait_ready(2)
            load.nodes.append(2)
            time.sleep(2.0)
        finally:
            load.stop()
            done.set()
            watcher.join()
        print(f"add-node output:\n{out}")
        print(f"load while the single node became a cluster and grew: {load.summary()}; "
              f"connections refused by node 1: {refused[0]}")
        assert load.failures == [], load.failures[:10]
        assert refused[0] == 0
        assert "now a cluster of one" in cluster.log(1)

        nodes = cluster.nodes(2)["nodes"]
        assert sorted(n["endpoint"] for n in nodes) == [cluster.url(1), cluster.url(2)], nodes
        read_all(cluster, [1, 2], "plain", {**seed, **load.acked}, load.maybe)
        for i in (1, 2):
            listed = {b["Name"]: b["CreationDate"] for b in cluster.s3(i).list_buckets()["Buckets"]}
            assert listed == created, (i, listed, created)

        # The user added on the single node signs requests through the new node.
        alice = boto3.client("s3", endpoint_url=cluster.url(2), aws_access_key_id="alice",
                             aws_secret_access_key="alice-secret-123", region_name="us-east-1",
                             config=Config(retries={"total_max_attempts": 1}))
        assert "Buckets" in alice.list_buckets()

        # The upload opened on the single node is completed through the new node.
        s3b = cluster.s3(2, retries={"total_max_attempts": 3})
        assert [u["UploadId"] for u in s3b.list_multipart_uploads(Bucket="plain").get("Uploads", [])] == [upload]
        s3b.complete_multipart_upload(Bucket="plain", Key="open/upload", UploadId=upload,
                                      MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        got = s3.get_object(Bucket="plain", Key="open/upload")["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(part).digest()

        # Restarted with its original plain command line, node 1 is a cluster member; without
        # its membership file it refuses to start as a single node (that would fork the data).
        assert cluster.stop(1) == 0
        members = next((tmp_path / "n1" / "d1").rglob("members.json"))
        members.rename(members.with_suffix(".away"))
        cluster.start(1)
        assert cluster.procs[1].wait(timeout=120) == 1
        assert "became a cluster member" in cluster.log(1) and "membership file" in cluster.log(1)
        members.with_suffix(".away").rename(members)
        cluster.start(1)
        cluster.wait_ready(1)
        assert cluster.first_lines[1][-1] == f"{tmp_path}/n1/d{{1...4}}"
        assert len(cluster.nodes(1)["nodes"]) == 2
        assert cluster.leader() in (1, 2)
        assert f"127.0.0.1:{cluster.port + CONTROL_OFFSET}" in str(cluster.nodes(1))
        expected = {**seed, **load.acked, "open/upload": hashlib.sha256(part).hexdigest()}
        read_all(cluster, [1, 2], "plain", expected, load.maybe)

    finally:
        cluster.stop_all()
    bugs = cluster.bugs()
    assert not bugs, bugs


def test_a_conversion_that_cannot_start_its_control_plane_leaves_the_single_node_as_it_was(tmp_path: Path) -> None:
    """The control plane's port (S3 port + 1000) is taken: the node logs why, restarts as the
    single node it was (same data, no membership file), and add-node says what happened."""
    cluster = GrowCluster(tmp_path, plain_first=True)
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", cluster.port + CONTROL_OFFSET))
        blocker.listen(1)
        s3 = cluster.begin("stays")
        seed = write_seed(s3, "stays", 5, 0)
        pid = cluster.procs[1].pid
        result = cluster.admin(1, "cluster", "add-node", cluster.disks(2), check=False, timeout=240)
        assert result.returncode == 1 and "did not become a cluster" in result.stderr, (result.stdout, result.stderr)
        assert "cannot bind the control port" in result.stderr, result.stderr  # the reason, not "see the log"
        assert cluster.log(1).count("could not become a cluster") == 1  # tried once, not again and again
        assert cluster.procs[1].pid == pid and cluster.alive(1)  # restarted in place, same process
        cluster.wait_ready(1)
        with pytest.raises(AdminCallError, match="not a cluster node"):
            cluster.nodes(1)
        assert not list((tmp_path / "n1").rglob("members.json"))
        read_all(cluster, [1], "stays", seed)
    finally:
        blocker.close()
        cluster.stop_all()
    bugs = cluster.bugs()
    assert not bugs, bugs
