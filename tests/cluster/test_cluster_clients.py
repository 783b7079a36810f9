"""A real backup client through the loss of a node: restic (MinIO's Go client inside) backs up
to a 4 x 4 cluster while one node is killed with SIGKILL, checks every pack with the node
down, and restores byte for byte after it returns.

What a user running nightly backups sees when a server dies mid-run: the backup finishes
(a request in flight may fail with a 503 the client retries), nothing it was told is stored
is missing or wrong, and the node that comes back serves the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterproc import ROOT_PASSWORD, ROOT_USER, Cluster

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed (make tools)")]

VICTIM = 4


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("clients"), nodes=4, disks=4)
    c.start()
    try:
        c.wait_healthy()
        yield c
    finally:
        c.stop_all()
        for i in range(1, c.n + 1):
            text = c.log(i)
            assert "Traceback" not in text and "unhandled error" not in text, f"node {i} logged a bug:\n{text[-6000:]}"


def test_restic_backs_up_through_a_killed_node_and_restores_after_it_returns(cluster: Cluster, tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "RESTIC_PASSWORD": "nightly backups",
           "AWS_ACCESS_KEY_ID": ROOT_USER, "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_DEFAULT_REGION": "us-east-1",
           "RESTIC_REPOSITORY": f"s3:{cluster.url(1)}/backups/host1", "RESTIC_CACHE_DIR": str(tmp_path / "cache")}

    def restic(*args: str, timeout: float = 600) -> str:
        proc = subprocess.run(["restic", *args], capture_output=True, text=True, env=env, timeout=timeout)
        assert proc.returncode == 0, f"restic {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    src = tmp_path / "home"
    for i in range(60):
        path = src / f"d{i % 6}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2_000 + i * 7_000))
    restic("init")
    restic("backup", str(src))

    # More data, and the second backup runs while node 4 is killed under it.
    for i in range(60, 160):
        path = src / f"e{i % 5}" / f"g{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(5_000 + i * 4_000))
    backup = subprocess.Popen(["restic", "backup", "--json", str(src)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(1.5)
        assert backup.poll() is None, "the backup ended before the kill: give it more data"
        cluster.kill(VICTIM)
        out, err = backup.communicate(timeout=600)
    finally:
        if backup.poll() is None:
            backup.kill()
    assert backup.returncode == 0, f"the backup through the kill failed:\n{out[-3000:]}\n{err[-3000:]}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["message_type"] == "summary" and summary["files_new"] == 100

    # With the node down: every snapshot there, every pack read back and verified.
    assert len(json.loads(restic("snapshots", "--json"))) == 2
    restic("check", "--read-data")
    down = tmp_path / "restore-down"
    restic("restore", "latest", "--target", str(down))
    assert tree(down / src.relative_to("/")) == tree(src)

    # The node returns: the same answers through it.
    cluster.start(VICTIM)
    cluster.wait_healthy()
    env["RESTIC_REPOSITORY"] = f"s3:{cluster.url(VICTIM)}/backups/host1"
    restic("check", "--read-data")
    back = tmp_path / "restore-back"
    restic("restore", "latest", "--target", str(back))
    assert tree(back / src.relative_to("/")) == tree(src)
