"""A real backup client through the loss of a node and through growth: restic (MinIO's Go
client inside) backs up to a 4 x 4 cluster while one node is killed with SIGKILL, checks
every pack with the node down, and restores byte for byte after it returns; and backs up to
a cluster that grows from one node to three under it.

What a user running nightly backups sees when a server dies mid-run, or when the operator
adds a node: the backup finishes (a request in flight may fail with a 503 the client
retries), nothing it was told is stored is missing or wrong, and every node serves the same
data afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from clusterproc import ROOT_PASSWORD, ROOT_USER, Cluster
from growkit import GrowCluster

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed (make tools)")]

VICTIM = 4


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class Restic:
    def __init__(self, home: Path, repository: str) -> None:
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "RESTIC_PASSWORD": "nightly backups",
                    "AWS_ACCESS_KEY_ID": ROOT_USER, "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD,
                    "AWS_DEFAULT_REGION": "us-east-1", "RESTIC_REPOSITORY": repository,
                    "RESTIC_CACHE_DIR": str(home / "cache")}

    def __call__(self, *args: str, timeout: float = 600) -> str:
        proc = subprocess.run(["restic", *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        assert proc.returncode == 0, f"restic {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def start_backup(self, src: Path, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["restic", "backup", "--json", *args, str(src)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)

    def restores(self, target: Path, src: Path) -> None:
        """``restore latest`` into ``target`` equals ``src`` byte for byte."""
        self("restore", "latest", "--target", str(target))
        assert tree(target / src.relative_to("/")) == tree(src)


def fill(src: Path, first: int, last: int, size) -> None:
    for i in range(first, last):
        path = src / f"d{i % 6}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size(i)))


def finished(backup: subprocess.Popen, files_new: int) -> None:
    out, err = backup.communicate(timeout=600)
    assert backup.returncode == 0, f"the backup failed:\n{out[-3000:]}\n{err[-3000:]}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["message_type"] == "summary" and summary["files_new"] == files_new, summary


def test_restic_backs_up_through_a_killed_node_and_restores_after_it_returns(cluster4: Cluster, tmp_path):
    cluster = cluster4  # conftest: one 4 x 4 cluster for the module, its logs checked for bugs
    cluster.wait_healthy()
    restic = Restic(tmp_path, f"s3:{cluster.url(1)}/backups/host1")
    src = tmp_path / "home"
    fill(src, 0, 60, lambda i: 2_000 + i * 7_000)
    restic("init")
    restic("backup", str(src))

    # More data, and the second backup runs while node 4 is killed under it.
    fill(src, 60, 160, lambda i: 5_000 + i * 4_000)
    backup = restic.start_backup(src, "--limit-upload", "4096")  # ~10 s at 4 MiB/s: the kill lands inside it
    try:
        time.sleep(2.0)
        assert backup.poll() is None, "the backup ended before the kill: give it more data"
        cluster.kill(VICTIM)
        finished(backup, 100)
    finally:
        if backup.poll() is None:
            backup.kill()

    # With the node down: every snapshot there, every pack read back and verified.
    assert len(json.loads(restic("snapshots", "--json"))) == 2
    restic("check", "--read-data")
    restic.restores(tmp_path / "restore-down", src)

    # The node returns: the same answers through it.
    cluster.start(VICTIM)
    cluster.wait_healthy()
    restic.env["RESTIC_REPOSITORY"] = f"s3:{cluster.url(VICTIM)}/backups/host1"
    restic("check", "--read-data")
    restic.restores(tmp_path / "restore-back", src)


def test_restic_backs_up_while_the_cluster_grows(tmp_path):
    """One node, then two, then three, each added (``cluster add-node``) while a backup runs
    through node 1; the migration moves the packs under it. Afterwards every pack checks out
    and restores through the newest node."""
    (tmp_path / "grow").mkdir()
    grow = GrowCluster(tmp_path / "grow")
    try:
        grow.begin("backups")
        restic = Restic(tmp_path, f"s3:{grow.url(1)}/backups/host1")
        src = tmp_path / "home"
        fill(src, 0, 40, lambda i: 3_000 + i * 9_000)
        restic("init")
        restic("backup", str(src))
        done = 40
        for new in (2, 3):
            fill(src, done, done + 60, lambda i: 4_000 + (i % 50) * 8_000)
            backup = restic.start_backup(src)
            try:
                added = grow.join(new)
                grow.wait_migration_done(1, added["generation"])
                finished(backup, 60)
            finally:
                if backup.poll() is None:
                    backup.kill()
            grow.wait_ready(new)
            done += 60
        restic("check", "--read-data")
        restic.env["RESTIC_REPOSITORY"] = f"s3:{grow.url(3)}/backups/host1"
        restic("check", "--read-data")
        restic.restores(tmp_path / "restore", src)
        assert len(json.loads(restic("snapshots", "--json"))) == 3
    finally:
        grow.stop_all()
    bugs = grow.bugs()
    assert not bugs, "a node logged a traceback:\n" + "\n".join(f"node {i}:\n{t}" for i, t in bugs.items())
