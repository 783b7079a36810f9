"""Versioned buckets on a cluster: a plain single node with versions, delete markers, tags and
the ``null`` version becomes a cluster with ``add-node`` (its versions imported into the index's
versions shadow and moved by the migration like every object), then a third node joins; every
version reads back byte-identical by id through every node, ListObjectVersions is the same
through every node, and removing versions by id works through any node."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from growkit import GrowCluster, body_of

pytestmark = pytest.mark.cluster


def listing(s3, bucket: str) -> list[tuple[str, str, bool, bool]]:
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        out += [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in page.get("Versions", [])]
        out += [(m["Key"], m["VersionId"], m["IsLatest"], True) for m in page.get("DeleteMarkers", [])]
    return sorted(out)


def check(cluster: GrowCluster, nodes: list[int], bucket: str, versions: dict[tuple[str, str], str],
          expected_listing: list) -> None:
    for i in nodes:
        s3 = cluster.s3(i, retries={"total_max_attempts": 3})
        wrong = []
        for (key, vid), digest in sorted(versions.items()):
            got = s3.get_object(Bucket=bucket, Key=key, VersionId=vid)["Body"].read()
            if hashlib.sha256(got).hexdigest() != digest:
                wrong.append((key, vid, len(got)))
        assert not wrong, f"through node {i}: wrong versions {wrong[:5]}"
        assert listing(s3, bucket) == expected_listing, f"through node {i}"


def test_versions_survive_conversion_and_growth(tmp_path: Path) -> None:
    cluster = GrowCluster(tmp_path, plain_first=True)
    try:
        cluster.start(1)
        cluster.wait_ready(1)
        s3 = cluster.s3(1, retries={"total_max_attempts": 3})
        s3.create_bucket(Bucket="vers")
        versions: dict[tuple[str, str], str] = {}
        before = body_of("before", 3000)  # written while unversioned: the null version
        s3.put_object(Bucket="vers", Key="doc", Body=before)
        versions[("doc", "null")] = hashlib.sha256(before).hexdigest()
        s3.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
        for n, size in enumerate((10, 200_000, 3 << 20)):
            body = body_of(f"doc/{n}", size)
            vid = s3.put_object(Bucket="vers", Key="doc", Body=body, Tagging=f"n={n}")["VersionId"]
            versions[("doc", vid)] = hashlib.sha256(body).hexdigest()
        for n in range(6):
            body = body_of(f"other/{n}", 5000 + n)
            vid = s3.put_object(Bucket="vers", Key=f"other/{n}", Body=body)["VersionId"]
            versions[(f"other/{n}", vid)] = hashlib.sha256(body).hexdigest()
        marker = s3.delete_object(Bucket="vers", Key="other/0")["VersionId"]
        single = listing(s3, "vers")
        assert ("other/0", marker, True, True) in single

        cluster.start(2)
        cluster.wait_log(2, "single node")
        out = cluster.admin(1, "cluster", "add-node", cluster.disks(2)).stdout
        assert "becomes a cluster of one" in out and "Migration done" in out, out
        cluster.wait_ready(2)
        check(cluster, [1, 2], "vers", versions, single)

        # Versioned writes and deletes through the cluster, then a third node.
        s3b = cluster.s3(2, retries={"total_max_attempts": 3})
        body = body_of("doc/cluster", 70_000)
        vid = s3b.put_object(Bucket="vers", Key="doc", Body=body)["VersionId"]
        versions[("doc", vid)] = hashlib.sha256(body).hexdigest()
        oldest = next(v for (k, v) in versions if k == "doc" and v != "null" and v != vid)
        s3b.delete_object(Bucket="vers", Key="doc", VersionId=oldest)
        del versions[("doc", oldest)]
        s3b.delete_object(Bucket="vers", Key="other/0", VersionId=marker)  # undelete through node 2
        assert s3.get_object(Bucket="vers", Key="other/0")["Body"].read() == body_of("other/0", 5000)
        assert s3.head_object(Bucket="vers", Key="doc", VersionId=list(versions)[1][1])["TagCount"] >= 0
        cluster.join(3)
        cluster.wait_migration_done(1, 3)
        cluster.wait_ready(3)
        expected = listing(cluster.s3(1), "vers")
        assert [e for e in expected if e[0] == "doc" and e[2]] == [("doc", vid, True, False)]
        assert len([e for e in expected if e[0] == "doc"]) == 4  # null + 2 left of 3 + the cluster one
        check(cluster, [1, 2, 3], "vers", versions, expected)
        with pytest.raises(ClientError) as exc:
            cluster.s3(3).delete_bucket(Bucket="vers")
        assert exc.value.response["Error"]["Code"] == "BucketNotEmpty"
        bugs = cluster.bugs()
        assert not bugs, bugs
    finally:
        cluster.stop_all()
