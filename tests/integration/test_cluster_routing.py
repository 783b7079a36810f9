"""The ``cluster4`` server parameter spreads the suite's requests over the nodes.

boto3 requests go to a node chosen per request (signed for that node), other clients to a
node chosen per connection through the proxy on the suite's address, and the suite's views
of the logs and disks cover every node (clusterserver.py). Checked from the nodes' own
access logs. Against one node there is nothing to route: skipped.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections import Counter

import pytest
import rawhttp
from clusterserver import NODES, ClusterServer


def cluster_of(server) -> ClusterServer:
    if not isinstance(server, ClusterServer):
        pytest.skip("one node: nothing to route")
    return server


def served_by(server: ClusterServer, method: str, paths: list[str], times: int = 1) -> dict[str, list[int]]:
    """For each path, the nodes whose access log has ``METHOD PATH``; waits (bounded) until
    each path was logged ``times`` times in all, since a node logs just after it answered
    (a path requested 20 times, once logged, may still have lines to come from other nodes)."""
    found: dict[str, list[int]] = {}
    deadline = time.monotonic() + 30
    while True:
        logs = {i: server.cluster.log(i) for i in range(1, NODES + 1)}
        lines = {p: {i: text.count(f"buckets.access: {method} {p} ") for i, text in logs.items()} for p in paths}
        found = {p: [i for i, n in counts.items() if n] for p, counts in lines.items()}
        if all(sum(counts.values()) >= times for counts in lines.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_boto3_picks_a_node_per_request(server, s3, bucket):
    srv = cluster_of(server)
    run = uuid.uuid4().hex[:8]
    keys = [f"route-{run}-{n:02d}" for n in range(24)]
    before = sum(srv.requests.values())
    for key in keys:  # one client, one after the other: keep-alive would pin a connection-level choice
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert sum(srv.requests.values()) - before == len(keys)
    nodes = served_by(srv, "PUT", [f"/{bucket}/{key}" for key in keys])
    assert all(len(n) == 1 for n in nodes.values()), nodes  # each request reached exactly one node
    order = [n[0] for n in nodes.values()]
    assert len(set(order)) >= 3, Counter(order)
    assert any(a != b for a, b in zip(order, order[1:])), order  # consecutive requests move
    for key in keys:  # and what one node stored, the others serve
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()


def test_other_clients_pick_a_node_per_connection(server, s3, bucket):
    srv = cluster_of(server)
    run = uuid.uuid4().hex[:8]
    s3.put_object(Bucket=bucket, Key=f"raw-{run}", Body=b"through the proxy")
    path = f"/{bucket}/raw-{run}"
    for _ in range(20):  # rawhttp opens a connection per request, to the suite's address
        resp = rawhttp.request(srv, "GET", path)
        assert (resp.status, resp.body) == (200, b"through the proxy"), resp.text
    assert len(served_by(srv, "GET", [path], times=20)[path]) >= 2
    assert srv.proxy is not None and len(srv.proxy.connections) >= 2, srv.proxy.connections


def test_presigned_urls_name_the_suites_address(server, s3, bucket):
    srv = cluster_of(server)
    s3.put_object(Bucket=bucket, Key="presigned", Body=b"any node")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned"}, ExpiresIn=60)
    assert url.startswith(f"http://127.0.0.1:{srv.port}/{bucket}/presigned?")
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.read() == b"any node"


def test_the_merged_log_only_grows_and_covers_every_node(server, s3, bucket):
    srv = cluster_of(server)
    first = srv.log_text()
    for n in range(12):
        s3.put_object(Bucket=bucket, Key=f"log-{n}", Body=b"x")
    # A node writes its log lines in batches (within 0.1 s): twelve PUTs can all come back first.
    deadline = time.monotonic() + 10
    while True:
        later = srv.log_text()
        labels = {line.split("|", 1)[0] for line in later.splitlines()}
        grown = len(later) > len(first) and labels == {f"n{i}" for i in range(1, NODES + 1)}
        if grown or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert later.startswith(first) and len(later) > len(first)
    assert labels == {f"n{i}" for i in range(1, NODES + 1)}, labels


def test_the_data_dir_holds_every_nodes_disks(server, s3, bucket):
    srv = cluster_of(server)
    disks = srv.disk_dirs()
    assert [d.name for d in disks] == [f"n{i}-d{j}" for i in range(1, NODES + 1) for j in range(1, 5)]
    s3.put_object(Bucket=bucket, Key="spread", Body=b"y" * 1000)
    holding = {d.name.split("-")[0] for d in disks if (d / "buckets" / bucket).is_dir()}
    assert holding == {f"n{i}" for i in range(1, NODES + 1)}, holding  # the bucket exists on every node


def test_a_bucket_change_is_seen_through_every_node_once_acknowledged(server, s3) -> None:
    """Bucket settings are control-plane records read locally on each node: a change is
    acknowledged once every live node applied it (``catalog.settle``), so the next request,
    through any node, sees it. Each round changes the tags through one node and reads them
    through another (boto3 picks a node per request)."""
    name = f"settle-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    try:
        for round_ in range(25):
            s3.head_bucket(Bucket=name)  # created: every node has it
            tags = [{"Key": "round", "Value": str(round_)}]
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tags})
            assert s3.get_bucket_tagging(Bucket=name)["TagSet"] == tags, round_
            status = "Enabled" if round_ % 2 == 0 else "Suspended"
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
            assert s3.get_bucket_versioning(Bucket=name).get("Status") == status, round_
    finally:
        s3.delete_bucket(Bucket=name)
