"""A cluster whose disks fill up: every node's disks are small tmpfs mounts. New data through
any node is refused with ``507 StorageFull`` once the disks reach their reserve (the peers'
disks refuse shard files and small objects' records; a delete marker sharing the call goes
in), deletions through another node free space, and writes go in again. Marked ``cluster``
(make test-cluster); the single node's case is in make test (integration/test_disk_full.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError
from clusterproc import ROOT_PASSWORD, ROOT_USER, Cluster
from serverproc import BIN
from smalldisks import put_once_freed, small_disks

pytestmark = pytest.mark.cluster

MiB = 1 << 20


def _code(error: ClientError) -> tuple[str, int]:
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


def _fill(s3, prefix: str, size: int, limit: int) -> tuple[list[str], ClientError]:
    stored = []
    for i in range(limit):
        try:
            s3.put_object(Bucket="full", Key=f"{prefix}/{i:04d}", Body=os.urandom(size))
        except ClientError as refused:
            return stored, refused
        stored.append(f"{prefix}/{i:04d}")
    raise AssertionError(f"{limit} objects of {size} bytes went into the small disks")


def test_a_full_cluster_refuses_new_data_with_507_and_still_deletes(tmp_path) -> None:
    c = Cluster(tmp_path, nodes=3, disks=2)
    with small_disks(c.disk_roots(), 20):
        c.start()
        try:
            s3 = {i: c.client(i) for i in (1, 2, 3)}
            s3[1].create_bucket(Bucket="full")
            big, refused = _fill(s3[1], "big", MiB, 300)
            assert len(big) >= 10 and _code(refused) == ("StorageFull", 507), (len(big), refused.response)
            small, refused = _fill(s3[3], "small", 3000, 3000)  # records on the peers' logs
            assert _code(refused) == ("StorageFull", 507), refused.response
            assert len(s3[2].get_object(Bucket="full", Key=big[0])["Body"].read()) == MiB
            s3[2].delete_object(Bucket="full", Key=big[0])
            deleted = s3[3].delete_objects(Bucket="full", Delete={"Objects": [{"Key": k} for k in big[1:6] + small]})
            assert "Errors" not in deleted, deleted["Errors"][:3]
            listed = [o["Key"] for o in s3[1].list_objects_v2(Bucket="full").get("Contents", [])]
            assert listed == sorted(big[6:])
            put_once_freed(s3[1], "full", "after-delete", b"a" * MiB)
            assert s3[3].get_object(Bucket="full", Key="after-delete")["Body"].read() == b"a" * MiB
            put_once_freed(s3[2], "full", "small-after", b"s" * 100)
            assert s3[1].get_object(Bucket="full", Key="small-after")["Body"].read() == b"s" * 100
        finally:
            c.stop_and_check_logs()



def test_an_index_replicas_registry_disk_at_its_reserve_stops_new_objects(tmp_path) -> None:
    """Node 1's registry disk (its first) smaller than every other disk: once it is at its
    reserve, new objects are refused with 507 although the other disks could take their
    shards. Before, the writes went on degraded to the other disks (an object has at most one
    shard on the small one) and the index entries grew node 1's registry, which replicates
    every bucket of a 3-node cluster, into the space its disk keeps for deletions."""
    c = Cluster(tmp_path, nodes=3, disks=2)
    roots = c.disk_roots()
    with small_disks(roots, [12] + [24] * 5):
        c.start()
        try:
            s3 = {i: c.client(i) for i in (1, 2, 3)}
            s3[1].create_bucket(Bucket="full")
            if not (roots[0] / ".buckets.sys" / "registry").is_dir():
                pytest.skip("node 1's registry went to another disk")
            stored, refused = _fill(s3[2], "obj", 16 << 10, 8000)
            assert _code(refused) == ("StorageFull", 507), refused.response
            free = [os.statvfs(r).f_bavail * os.statvfs(r).f_frsize for r in roots]
            # the other disks had room: what stopped the writes is node 1's registry disk, which
            # keeps some of its reserve (5% of 12 MiB: its statvfs is read at most once a second
            # while it has room, and a second's writes take a third of so small a reserve)
            assert min(free[1:]) > 6 * MiB and free[0] > 64 << 10, (len(stored), free)
            deleted = s3[3].delete_objects(Bucket="full", Delete={"Objects": [{"Key": k} for k in stored[:300]]})
            assert "Errors" not in deleted, deleted["Errors"][:3]
            listed = [o["Key"] for page in s3[1].get_paginator("list_objects_v2").paginate(Bucket="full")
                      for o in page.get("Contents", [])]
            assert listed == stored[300:]
            assert len(s3[1].get_object(Bucket="full", Key=stored[-1])["Body"].read()) == 16 << 10
            put_once_freed(s3[3], "full", "after-delete", b"d" * (16 << 10))
        finally:
            c.stop_and_check_logs()


def test_a_disk_removal_onto_full_disks_keeps_their_reserve_and_ends_once_there_is_room(tmp_path) -> None:
    """A one-node cluster of five small disks, filled with small objects until 507; then the
    fifth disk is removed. Its objects' shards must go onto the four others, which are at their
    reserve: the migration's copies are refused (each object's move fails and is tried again by
    the next pass) and the disks keep their reserve for deletions. Before, a small object's copy
    (a metadata file) ignored the reserve: the migration filled the disks to their last blocks.
    Once deletions make room, the migration ends and the disk leaves."""
    from growkit import GrowCluster

    from buckets.storage.local import reserve_bytes

    cluster = GrowCluster(tmp_path)
    base = tmp_path / "n1"
    roots = [base / f"d{i}" for i in range(1, 6)]
    with small_disks(roots, 24):
        try:
            s3 = cluster.begin("full")
            out = cluster.admin(1, "cluster", "add-disk", f"{cluster.url(1)}{base}/d5").stdout
            assert "Migration done" in out, out
            stored, refused = _fill(s3, "obj", 32 << 10, 4000)
            assert _code(refused) == ("StorageFull", 507), refused.response
            removal = json.loads(cluster.admin(1, "cluster", "remove-disk", f"{cluster.url(1)}{base}/d5",
                                               "--no-wait", "--json").stdout)
            to_gen = removal["generation"]
            deadline = time.monotonic() + 60
            status = cluster.migration(1)
            while (status.get("errors") or 0) < 20 and time.monotonic() < deadline:
                time.sleep(0.5)
                status = cluster.migration(1)
            assert status.get("state") != "done" and (status.get("errors") or 0) >= 20, status

            def free(root) -> int:
                st = os.statvfs(root)
                return st.f_bavail * st.f_frsize

            reserve = reserve_bytes(os.statvfs(roots[0]).f_blocks * os.statvfs(roots[0]).f_frsize)
            # the moves stopped at the reserve; the registry's commits may use a little of it
            assert all(free(r) >= reserve * 3 // 4 for r in roots[:4]), ([free(r) for r in roots], reserve)
            for key in stored[::40]:  # every object still reads while its moves fail
                assert len(s3.get_object(Bucket="full", Key=key)["Body"].read()) == 32 << 10

            gone, kept = stored[::2], stored[1::2]
            for at in range(0, len(gone), 1000):
                deleted = s3.delete_objects(Bucket="full", Delete={"Objects": [{"Key": k} for k in gone[at:at + 1000]]})
                assert "Errors" not in deleted, deleted["Errors"][:3]
            deadline = time.monotonic() + 300  # the migration ends, then the disk leaves (a generation more)
            while f"{base}/d5" in [d["path"] for d in cluster.nodes(1)["nodes"][0]["disks"]]:
                assert time.monotonic() < deadline, f"the drained disk did not leave: {cluster.migration(1)}"
                time.sleep(0.5)
            # The generation that dropped it, and then its migration's job, are two commits: the
            # disk can be gone from the listing while the job is still the last one's, done.
            deadline = time.monotonic() + 60
            while (status := cluster.migration(1))["state"] != "done" or status["to_gen"] <= to_gen:
                assert time.monotonic() < deadline, status
                time.sleep(0.5)
            for key in kept:
                assert len(s3.get_object(Bucket="full", Key=key)["Body"].read()) == 32 << 10
        finally:
            cluster.stop_all()
    bugs = cluster.bugs()
    assert not bugs, bugs


def _fill_to_the_last_block(path) -> None:
    """Another program's file on that file system, written until no block is left (again after
    the disk monitor released the disk's ballast into it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for _ in range(3):
            try:
                while True:
                    os.write(fd, b"x" * 4096)
            except OSError:
                pass
            time.sleep(2.5)  # (a disk monitor round: the ballast goes, and its space with it)
    finally:
        os.close(fd)


def _policy(bucket: str, n: int) -> str:
    """A bucket policy of about 15 KB (a big control-plane entry)."""
    resources = [f"arn:aws:s3:::{bucket}/p{n}-{i:04d}-{'r' * 40}/*" for i in range(200)]
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": f"s{n}", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": resources}]})


def _health(c: Cluster, i: int, what: str = "ready") -> tuple[int, dict]:
    """Node ``i``'s ``/health/<what>``: status and document (a 503 has one too)."""
    try:
        with urllib.request.urlopen(f"{c.url(i)}/health/{what}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_a_node_whose_journal_disk_fills_to_the_last_block_keeps_running_and_catches_up(tmp_path, role) -> None:
    """Another program fills the first disk of one node (the leader of the control plane, or a
    follower) to its last block: that disk holds the node's control-plane journal, which then
    cannot grow. Before, the next entry written into the journal's mmap killed that node with
    SIGBUS, without a log line. Now the entry is refused and not acknowledged: a leader hands
    leadership over, the cluster's changes go on through the other two nodes, and the full node
    keeps running and catches up once its disk has room. While it has missed changes it is not
    ready and answers S3 with 503 (it would grant from a stale policy), and says why."""
    c = Cluster(tmp_path, nodes=3, disks=2)
    roots = c.disk_roots()
    with small_disks(roots, 20):
        c.start()
        try:
            c.wait_healthy()
            s3 = {i: c.client(i) for i in (1, 2, 3)}
            s3[1].create_bucket(Bucket="pol")
            leader = next(i for i in (1, 2, 3) if c.health(1)["nodes"][i - 1]["leader"])
            full = leader if role == "leader" else next(i for i in (1, 2, 3) if i != leader)
            through = next(i for i in (1, 2, 3) if i != full)
            disk = roots[(full - 1) * 2]
            journals = list(disk.rglob("raft.journal"))
            assert journals, sorted(str(p) for p in disk.rglob("*"))[:20]
            _fill_to_the_last_block(disk / "filler")
            policies = [_policy("pol", n) for n in range(8)]  # ~120 KB: the journal must grow
            for text in policies:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        s3[through].put_bucket_policy(Bucket="pol", Policy=text)
                        break
                    except ClientError as exc:  # while the leadership moves: 503
                        assert _code(exc)[1] == 503 and time.monotonic() < deadline, exc.response
                        time.sleep(0.5)
            assert c.procs[full].poll() is None, c.log(full)[-3000:]
            assert json.loads(s3[through].get_bucket_policy(Bucket="pol")["Policy"]) == json.loads(policies[-1])
            assert "journal's disk is full" in c.log(full)
            status, health = _health(c, full, "cluster")
            assert status == 503 and health["control"]["journal_full"] is True  # (and buckets-admin info says so)
            assert health["control"]["behind"] is True, (health["control"], c.health(through)["control"])
            status, ready = _health(c, full)
            assert status == 503 and ready["control_behind"] is True, ready
            assert _health(c, through)[0] == 200
            admin_env = dict(c.env, BUCKETS_CLIENT_CONFIG=str(tmp_path / "client.json"))
            for argv in (["alias", "set", "full", c.url(full), ROOT_USER, ROOT_PASSWORD], ["info", "full"]):
                info = subprocess.run([str(BIN / "buckets-admin"), *argv], env=admin_env, capture_output=True,
                                      text=True, timeout=60)
            assert "JOURNAL DISK IS FULL" in info.stdout and "503" in info.stdout, (info.stdout, info.stderr)
            with pytest.raises(ClientError) as refused:  # not from the stale settings
                s3[full].get_bucket_policy(Bucket="pol")
            assert _code(refused.value) == ("ServiceUnavailable", 503)
            assert "journal disk is full" in refused.value.response["Error"]["Message"]
            assert s3[through].list_objects_v2(Bucket="pol")["KeyCount"] == 0  # the others serve
            os.unlink(disk / "filler")

            def policy_through_full() -> dict | None:
                try:
                    return json.loads(s3[full].get_bucket_policy(Bucket="pol")["Policy"])
                except ClientError as exc:  # still behind
                    assert _code(exc) == ("ServiceUnavailable", 503), exc.response
                    return None

            deadline = time.monotonic() + 60
            while policy_through_full() != json.loads(policies[-1]):
                assert time.monotonic() < deadline, "the node did not catch up"
                time.sleep(0.5)
            assert _health(c, full)[0] == 200
            s3[full].create_bucket(Bucket="after")  # and takes changes again
            assert "after" in [b["Name"] for b in s3[through].list_buckets()["Buckets"]]
            deadline = time.monotonic() + 30
            while _health(c, full, "cluster")[1]["control"]["journal_full"]:
                assert time.monotonic() < deadline, _health(c, full, "cluster")[1]["control"]
                time.sleep(0.5)
        finally:
            c.stop_and_check_logs()
