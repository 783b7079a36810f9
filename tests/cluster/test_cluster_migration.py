"""The migration engine end to end, on a real 3-node cluster of ``buckets server`` processes.

A new generation that moves slots among the existing disks (``cluster/reweight``: one disk's
placement weight raised) starts a migration; the test drives it through the admin API
(throttle, pause, resume, refusals of bad input), overwrites and deletes objects while it is
paused (their moves must lose the compare-and-set), kills the coordinating node with kill -9
halfway and restarts it, waits until the job says done, and then checks that every object
reads back byte-identical through every node and that its shards sit exactly on the disks
its newest metadata names: nothing left on the vacated disks.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import diskview
import pytest
from clusterproc import ROOT_PASSWORD, ROOT_USER, Cluster

from buckets.admin.client import AdminCallError, AdminClient

pytestmark = pytest.mark.cluster

MiB = 1 << 20


def admin(cluster: Cluster, i: int) -> AdminClient:
    return AdminClient(cluster.url(i), ROOT_USER, ROOT_PASSWORD, timeout=30)


def eventually(what: str, predicate, timeout: float = 180.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (AdminCallError, OSError) as exc:  # a node restarting, a leader changing
            last = exc
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout}s: {what} (last: {last!r})")


def body(size: int, seed: int) -> bytes:
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB, different per object
    return (block * (size // len(block) + 1))[:size]


def disk_ids(cluster: Cluster) -> dict[str, Path]:
    out = {}
    for i in range(1, cluster.n + 1):
        for d in range(1, cluster.disks + 1):
            root = cluster.base / f"n{i}" / f"d{d}"
            out[json.loads((root / ".buckets.sys" / "format.json").read_text())["disk_id"]] = root
    return out


def shards_on_disk(disks: dict[str, Path], bucket: str, key: str) -> list[tuple[str, dict]]:
    """(disk id, metadata) of every metadata file, and every log record still counting, of
    ``bucket/key`` on any disk."""
    return [(disk_id, meta) for disk_id, root in disks.items() for meta in diskview.writes_of(root, bucket, key)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # 18 disks, sets of 16: a placement change moves slots among the existing disks
    c = Cluster(tmp_path_factory.mktemp("migration"), nodes=3, disks=6,
                extra_env={"BUCKETS_MIGRATION_GRACE": "1"})
    c.start()
    c.wait_healthy()
    try:
        yield c
    finally:
        c.stop_and_check_logs()


def test_migration_moves_every_object_and_survives_pause_overwrites_and_a_killed_coordinator(cluster) -> None:
    s3 = cluster.client(1)
    s3.create_bucket(Bucket="mig")
    s3.create_bucket(Bucket="mig2")
    objects: dict[tuple[str, str], bytes] = {}
    sizes = [0, 1000, 100_000, 200 * 1024, 1 * MiB + 5, 3 * MiB + 17]
    for n in range(36):
        bucket = "mig" if n % 3 else "mig2"
        key = f"obj/{n:03d}"
        data = body(sizes[n % len(sizes)], n)
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        objects[(bucket, key)] = data
    # a multipart object (parts of 5 MiB and 1 MiB)
    up = s3.create_multipart_upload(Bucket="mig", Key="multi")
    p1, p2 = body(5 * MiB, 1001), body(1 * MiB, 1002)
    etags = [s3.upload_part(Bucket="mig", Key="multi", UploadId=up["UploadId"], PartNumber=i + 1, Body=p)["ETag"]
             for i, p in enumerate((p1, p2))]
    s3.complete_multipart_upload(Bucket="mig", Key="multi", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags)]})
    objects[("mig", "multi")] = p1 + p2

    api = admin(cluster, 2)
    assert api.call("GET", "cluster/migration")["state"] in ("none", "done")
    disks = disk_ids(cluster)
    heavy = sorted(disks)[0]
    # two disks (on two nodes) nearly emptied: almost every object has a slot on one of them
    light = {json.loads((cluster.base / f"n{i}" / "d1" / ".buckets.sys" / "format.json").read_text())["disk_id"]: 0.05
             for i in (1, 2)}

    # refusals: bad input gets the right error and changes nothing
    for bad, code in (({"weights": {"no-such-disk": 2}}, "InvalidArgument"), ({"weights": {heavy: 0}}, "InvalidArgument"),
                      ({"weights": []}, "InvalidArgument")):
        with pytest.raises(AdminCallError) as caught:
            api.call("POST", "cluster/reweight", bad)
        assert caught.value.code == code and caught.value.status == 400
    generation = api.call("GET", "cluster/migration")["generation"]

    # a slow start, so the test can act while it runs
    status = api.call("POST", "cluster/reweight", {"weights": light})
    assert status["to_gen"] == generation + 1 and status["state"] == "running"
    status = api.call("POST", "cluster/migration/throttle", {"bytes_per_s": 256 * 1024, "objects": 1})
    assert status["throttle"] == {"bytes_per_s": 256 * 1024, "objects": 1}
    for bad in ({"objects": 0}, {"bytes_per_s": -1}, {"speed": 3}, {}):
        with pytest.raises(AdminCallError) as caught:
            api.call("POST", "cluster/migration/throttle", bad)
        assert caught.value.status == 400 and caught.value.code == "InvalidArgument"
    with pytest.raises(AdminCallError) as caught:  # one topology change at a time
        api.call("POST", "cluster/reweight", {"weights": {heavy: 2.0}})
    assert caught.value.status == 409 and caught.value.code == "MigrationInProgress"

    # pause: nothing moves; overwrite and delete objects meanwhile
    eventually("the plan", lambda: (api.call("GET", "cluster/migration").get("planned") or {}).get("objects"))
    assert api.call("POST", "cluster/migration/pause")["state"] == "paused"
    paused = eventually("the coordinator let go", lambda: (lambda s: s if s["coordinator"] is None
                                                          and s["state"] == "paused" else None)(
        api.call("GET", "cluster/migration")))
    assert paused["planned"]["objects"] > 0
    moved_then = api.call("GET", "cluster/migration")["moved_objects"]
    for n in (1, 2, 4):
        key = ("mig" if n % 3 else "mig2", f"obj/{n:03d}")
        objects[key] = body(150_000 + n, 5000 + n)
        cluster.client(3).put_object(Bucket=key[0], Key=key[1], Body=objects[key])
    for n in (5, 7):
        key = ("mig" if n % 3 else "mig2", f"obj/{n:03d}")
        cluster.client(2).delete_object(Bucket=key[0], Key=key[1])
        del objects[key]
    time.sleep(1.0)  # several polls of the coordinator: a paused job stays put
    assert api.call("GET", "cluster/migration")["moved_objects"] == moved_then

    # resume, then kill -9 the coordinator once it has moved something, and restart it
    api.call("POST", "cluster/migration/resume")
    coordinator = eventually("a coordinator moving", lambda: (lambda s: s["coordinator"] if s["state"] == "running"
                                                               and s["coordinator"] and s["moved_objects"] > moved_then
                                                               else None)(api.call("GET", "cluster/migration")))
    victim = next(i for i in range(1, cluster.n + 1) if cluster.url(i) == coordinator)
    before = api.call("GET", "cluster/migration") if victim != 2 else admin(cluster, 1).call("GET", "cluster/migration")
    cluster.kill(victim)
    survivor = admin(cluster, 1 if victim != 1 else 3)
    eventually("a new coordinator", lambda: (lambda s: s["coordinator"] not in (None, coordinator))(
        survivor.call("GET", "cluster/migration")), timeout=120)
    cluster.start(victim)
    survivor.call("POST", "cluster/migration/throttle", {"bytes_per_s": 0, "objects": 4})
    final = eventually("done", lambda: (lambda s: s if s["state"] == "done" else None)(
        survivor.call("GET", "cluster/migration")), timeout=300)
    assert final["moved_objects"] >= before["moved_objects"] and final["moved_objects"] > 0
    assert final["remaining_objects"] == 0 and final["to_gen"] == generation + 1
    assert final["nodes"], "per-node progress"
    with pytest.raises(AdminCallError) as caught:
        survivor.call("POST", "cluster/migration/pause")
    assert caught.value.status == 409
    cluster.wait_healthy()

    # every object through every node, byte-identical; deleted ones stay deleted
    for i in range(1, cluster.n + 1):
        client = cluster.client(i)
        for (bucket, key), data in objects.items():
            got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert got == data, f"{bucket}/{key} through node {i}: {len(got)} bytes, wrong content"
        for n in (5, 7):
            with pytest.raises(client.exceptions.NoSuchKey):
                client.get_object(Bucket="mig" if n % 3 else "mig2", Key=f"obj/{n:03d}")
        listed = {o["Key"] for o in client.list_objects_v2(Bucket="mig")["Contents"]}
        assert listed == {k for b, k in objects if b == "mig"}

    # ... and sits exactly on the disks its newest metadata names (vacated copies removed after the grace)
    moved_seen = narrow_moved = 0

    def placed_exactly() -> str | None:
        nonlocal moved_seen, narrow_moved
        moved_seen = narrow_moved = 0
        for bucket, key in objects:
            found = shards_on_disk(disks, bucket, key)
            newest = max(found, key=lambda f: (f[1].get("gen", 0), f[1]["mt"]))[1]
            current = [(d, m) for d, m in found if m["wid"] == newest["wid"]]
            if newest.get("gen") == generation + 1:
                moved_seen += 1
                # a small object on a narrow set (4+4 of the 16 slots) moved too
                narrow_moved += newest["k"] + newest["m"] == 8 == len(newest["disks"])
            want = {(disk_id, slot) for slot, disk_id in enumerate(newest["disks"])}
            have = {(d, m["shard"]) for d, m in current}
            if have != want or len(current) != len(found):
                return f"{bucket}/{key}: shards {sorted(have)} (and {len(found) - len(current)} stale), want {sorted(want)}"
        return None

    problem = eventually("no stale shards", lambda: placed_exactly() is None or None, timeout=60)
    assert problem and moved_seen > 0 and narrow_moved > 0, (placed_exactly(), moved_seen, narrow_moved)
    # Prometheus: the job's state on every node, the moves counted by the nodes that coordinated
    import urllib.request

    moved_total = 0
    for i in range(1, cluster.n + 1):
        with urllib.request.urlopen(f"{cluster.url(i)}/metrics", timeout=30) as r:
            metrics = r.read().decode()
        assert 'buckets_migration_state{state="done"} 1.0' in metrics
        assert "buckets_migration_remaining_objects 0.0" in metrics
        moved_total += int(float(next(line.split()[1] for line in metrics.splitlines()
                                      if line.startswith("buckets_migration_objects_moved_total "))))
    assert moved_total > 0
