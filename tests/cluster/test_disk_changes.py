"""One disk at a time: ``buckets-admin cluster add-disk`` / ``remove-disk`` (issue 10: "adding
or removing a single disk on a node uses the same machinery").

A one-node URL cluster (growkit.py) of 4 disks, 2+2: a fifth disk is added under a load of
PUT/GET/DELETE/LIST (retries off: every failure counts) and filled by the migration with about
1/5 of the shard bytes; the node restarted with its first command line (4 disks) opens all 5
(its disks come from the control plane); a disk is removed (drained, then dropped from the
node's record) under the same load, and holds nothing afterwards; a restart then opens the 4
remaining. Bad requests are refused with the right error and change nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import diskview
import pytest
from growkit import GrowCluster, Load, movement_bound, read_all, shard_totals, write_seed

from buckets.admin.client import AdminCallError

# Long multi-node run: make test-cluster (make test keeps test_cluster_basic and test_growth_under_load[fast]).
pytestmark = pytest.mark.cluster


def disk_paths(cluster: GrowCluster) -> list[str]:
    return [d["path"] for d in cluster.nodes(1)["nodes"][0]["disks"]]


def test_add_and_remove_one_disk_under_load(tmp_path: Path) -> None:
    cluster = GrowCluster(tmp_path)
    base = tmp_path / "n1"
    try:
        s3 = cluster.begin("disks")
        seed = write_seed(s3, "disks", 14, 1)
        api = cluster.api(1)
        generation = api.call("GET", "cluster/nodes")["generation"]

        # Refused, with nothing changed.
        for path, body, code in (
                ("cluster/add-disk", {"endpoint": cluster.url(1), "path": "relative/d5"}, "InvalidArgument"),
                ("cluster/add-disk", {"endpoint": cluster.url(1), "path": f"{base}/../n1/d5"}, "InvalidArgument"),
                ("cluster/add-disk", {"endpoint": "http://127.0.0.9:1", "path": f"{base}/d5"}, "NoSuchNode"),
                ("cluster/remove-disk", {"endpoint": cluster.url(1), "path": f"{base}/d1"}, "InvalidArgument"),
                ("cluster/remove-disk", {"endpoint": cluster.url(1), "path": f"{base}/d9"}, "InvalidArgument"),
                # 2+2 needs 4 disks: a fifth must come before one goes
                ("cluster/remove-disk", {"endpoint": cluster.url(1), "path": f"{base}/d2"}, "InvalidArgument")):
            with pytest.raises(AdminCallError) as caught:
                api.call("POST", path, body)
            assert caught.value.code == code, (path, body, caught.value)
        (tmp_path / "foreign").mkdir()
        (tmp_path / "foreign" / "someone-elses-file").write_text("keep me")
        with pytest.raises(AdminCallError) as caught:  # a non-empty directory is not taken
            api.call("POST", "cluster/add-disk", {"endpoint": cluster.url(1), "path": f"{tmp_path}/foreign"})
        assert caught.value.code == "InvalidArgument", caught.value
        assert (tmp_path / "foreign" / "someone-elses-file").read_text() == "keep me"
        assert api.call("GET", "cluster/nodes")["generation"] == generation
        assert disk_paths(cluster) == [f"{base}/d{i}" for i in range(1, 5)]
        again = json.loads(cluster.admin(1, "cluster", "add-disk", f"{cluster.url(1)}{base}/d1", "--json").stdout)
        assert again["added"] is False and "already" in again["message"]

        load = Load(cluster, "disks", [1], workers=2, seed=5)
        load.start()
        try:
            total, largest = shard_totals(cluster.census([1]))
            out = cluster.admin(1, "cluster", "add-disk", f"{cluster.url(1)}{base}/d5").stdout
            print(f"add-disk output:\n{out}")
            assert "Added disk" in out and "Migration done" in out, out
            status = api.call("GET", "cluster/migration")
            optimum, slack, bound = movement_bound(total, largest, 4)
            print(f"add-disk: moved {status['moved_bytes'] / 2**20:.2f} MiB of {total / 2**20:.2f} MiB shard bytes; "
                  f"optimum 1/5 = {optimum / 2**20:.2f} MiB (ratio {status['moved_bytes'] / optimum:.2f})")
            assert status["moved_bytes"] <= bound
            assert disk_paths(cluster) == [f"{base}/d{i}" for i in range(1, 6)]
            assert any(f"{base}/d5" in shards for shards in cluster.census([1]).values())
        finally:
            load.stop()
        print(f"load while a disk was added: {load.summary()}")
        assert load.failures == [], load.failures[:10]
        expected, maybe = {**seed, **load.acked}, set(load.maybe)
        read_all(cluster, [1], "disks", expected, maybe)

        # Restarted with its first command line (4 disks), the node opens the 5 its record has.
        assert cluster.command(1)[-1].endswith("/d{1...4}")
        assert cluster.stop(1) == 0
        cluster.start(1)
        cluster.wait_ready(1)
        info = json.loads(cluster.admin(1, "cluster", "node-info", cluster.url(1), "--json").stdout)
        assert [(d["path"], d["online"], d["placed"]) for d in info["disks"]] == [
            (f"{base}/d{i}", True, True) for i in range(1, 6)]
        read_all(cluster, [1], "disks", expected, maybe)

        s3.create_bucket(Bucket="disks-later")  # the workers' prefixes start empty there
        load = Load(cluster, "disks-later", [1], workers=2, seed=6)
        load.start()
        try:
            out = cluster.admin(1, "cluster", "remove-disk", f"{cluster.url(1)}{base}/d2").stdout
            print(f"remove-disk output:\n{out}")
            assert "Draining disk" in out and "removed from the cluster" in out, out
        finally:
            load.stop()
        print(f"load while a disk was removed: {load.summary()}")
        assert load.failures == [], load.failures[:10]
        assert disk_paths(cluster) == [f"{base}/d{i}" for i in (1, 3, 4, 5)]
        left = [key for key, shards in cluster.census([1]).items() if f"{base}/d2" in shards]
        assert left == [], f"shards left on the removed disk: {left[:5]}"
        later, later_maybe = dict(load.acked), set(load.maybe)
        read_all(cluster, [1], "disks", expected, maybe)
        read_all(cluster, [1], "disks-later", later, later_maybe)

        assert cluster.stop(1) == 0
        cluster.start(1)
        cluster.wait_ready(1)
        assert disk_paths(cluster) == [f"{base}/d{i}" for i in (1, 3, 4, 5)]
        health = cluster.nodes(1)["nodes"][0]["disks"]
        assert all(d["online"] for d in health), health
        read_all(cluster, [1], "disks", expected, maybe)
        read_all(cluster, [1], "disks-later", later, later_maybe)
    finally:
        cluster.stop_all()
    bugs = cluster.bugs()
    assert not bugs, bugs


def test_a_wiped_disk_of_a_member_is_formatted_under_its_known_id_and_refilled(tmp_path: Path) -> None:
    """A member restarting finds one of its disks empty (replaced): the disk gets the id the
    control plane knows it by (not a new one), and the refill rebuilds its shards."""
    import shutil
    import time

    cluster = GrowCluster(tmp_path)
    try:
        s3 = cluster.begin("wiped")
        seed = write_seed(s3, "wiped", 12, 1)
        assert cluster.stop(1) == 0
        disk = tmp_path / "n1" / "d3"
        known_id = json.loads((disk / ".buckets.sys" / "format.json").read_text())["disk_id"]
        shutil.rmtree(disk)
        disk.mkdir()
        cluster.start(1)
        cluster.wait_ready(1)
        assert json.loads((disk / ".buckets.sys" / "format.json").read_text())["disk_id"] == known_id
        deadline = time.monotonic() + 120
        while "refill of" not in cluster.log(1):
            assert time.monotonic() < deadline, cluster.log(1)[-3000:]
            time.sleep(0.2)
        print([line for line in cluster.log(1).splitlines() if "refill of" in line][-1][:240])
        assert len(diskview.shards(disk)) >= 13  # a shard of every object is back (files or log records)
        read_all(cluster, [1], "wiped", seed)
    finally:
        cluster.stop_all()
    bugs = cluster.bugs()
    assert not bugs, bugs


def test_a_multipart_upload_that_spans_a_disk_removal_completes_off_the_removed_disk(tmp_path: Path) -> None:
    """An upload begun before remove-disk, its parts on the disk being removed, completed after
    the migration was done and the disk dropped: the object must not name the removed disk (the
    migration had nothing of it to move: the parts belong to no object until the Complete)."""
    cluster = GrowCluster(tmp_path)
    base = tmp_path / "n1"
    try:
        s3 = cluster.begin("spans")
        out = cluster.admin(1, "cluster", "add-disk", f"{cluster.url(1)}{base}/d5").stdout
        assert "Migration done" in out, out
        parts = [os.urandom(5 << 20), os.urandom(1 << 20)]
        upload = s3.create_multipart_upload(Bucket="spans", Key="big")["UploadId"]
        etags = [s3.upload_part(Bucket="spans", Key="big", UploadId=upload, PartNumber=n, Body=body)["ETag"]
                 for n, body in enumerate(parts, 1)]
        holding = [f"d{i}" for i in range(2, 6) if (base / f"d{i}" / ".buckets.sys" / "multipart" / upload).is_dir()]
        assert holding, "no disk but the first holds the upload's parts"
        victim = holding[0]
        out = cluster.admin(1, "cluster", "remove-disk", f"{cluster.url(1)}{base}/{victim}").stdout
        assert "removed from the cluster" in out, out
        s3.complete_multipart_upload(Bucket="spans", Key="big", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]})
        assert s3.get_object(Bucket="spans", Key="big")["Body"].read() == b"".join(parts)
        # All four shards on disks of the cluster (the removed disk keeps its old copies: it has
        # left, nothing there is touched). Before: one of the four was only on the removed disk.
        placed = [f"{base}/{p.rsplit('/', 1)[-1]}" for p in disk_paths(cluster)]
        assert f"{base}/{victim}" not in placed
        shards = {k: {p: n for p, n in v.items() if p in placed}
                  for k, v in cluster.census([1]).items() if k[0] == "spans"}
        assert len(shards) == 1 and all(len(held) == 4 for held in shards.values()), shards
        assert cluster.stop(1) == 0  # and it reads after a restart, with the removed disk gone
        cluster.start(1)
        cluster.wait_ready(1)
        assert s3.get_object(Bucket="spans", Key="big")["Body"].read() == b"".join(parts)
    finally:
        cluster.stop_all()
    bugs = cluster.bugs()
    assert not bugs, bugs
