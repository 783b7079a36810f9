"""restic (Debian's, `make tools` installs it) backing up to the server, as backup users run
it: a repository in a bucket, backups, a full check that reads every pack back, a restore,
a second backup that deduplicates, and forget with prune (which rewrites and deletes packs).

restic's S3 backend is MinIO's Go client: its own signer (streaming signed chunks for
uploads), its own listing and error handling, and a workload of many small objects (packs,
indexes, snapshots, lock files created and removed around every command).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from localfiles import tree
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, empty_and_delete, new_bucket_name

RESTIC = shutil.which("restic")

pytestmark = pytest.mark.skipif(RESTIC is None, reason="restic is not installed (make test installs it)")


def test_backup_check_restore_and_prune(server, s3, tmp_path):
    name = new_bucket_name("restic")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "RESTIC_PASSWORD": "correct horse battery",
           "AWS_ACCESS_KEY_ID": ROOT_USER, "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_DEFAULT_REGION": REGION,
           "RESTIC_REPOSITORY": f"s3:{server.endpoint}/{name}/repo", "RESTIC_CACHE_DIR": str(tmp_path / "cache")}

    def restic(*args: str) -> str:
        proc = subprocess.run([RESTIC, *args], capture_output=True,
                              text=True, env=env, timeout=300)
        assert proc.returncode == 0, f"restic {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    src = tmp_path / "src"
    for i in range(40):
        path = src / f"dir{i % 4}" / f"file{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + i * 3000))
    (src / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))
    (src / "same-a.txt").write_bytes(b"duplicate content\n" * 1000)
    (src / "same-b.txt").write_bytes(b"duplicate content\n" * 1000)
    try:
        restic("init")  # creates the bucket too
        first = json.loads(restic("backup", "--json", str(src)).strip().splitlines()[-1])
        assert first["message_type"] == "summary" and first["files_new"] == 43
        objects = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix="repo/")
                   for o in page.get("Contents", [])]
        assert any(k.startswith("repo/data/") for k in objects) and "repo/config" in objects
        assert not any(k.startswith("repo/locks/") for k in objects)  # every lock removed again

        (src / "dir0" / "file00.bin").write_bytes(os.urandom(5000))
        (src / "dir1" / "file01.bin").unlink()
        second = json.loads(restic("backup", "--json", str(src)).strip().splitlines()[-1])
        assert (second["files_new"], second["files_changed"]) == (0, 1)
        assert second["data_added"] < 50_000  # the rest was already there

        snapshots = json.loads(restic("snapshots", "--json"))
        assert len(snapshots) == 2
        restic("check", "--read-data")  # every pack downloaded and verified

        target = tmp_path / "restore"
        restic("restore", "latest", "--target", str(target))
        assert tree(target / src.relative_to("/")) == tree(src)

        restic("forget", "--keep-last", "1", "--prune")
        assert len(json.loads(restic("snapshots", "--json"))) == 1
        restic("check", "--read-data")
        again = tmp_path / "again"
        restic("restore", "latest", "--target", str(again), "--include", str(src / "big.bin"))
        assert (again / src.relative_to("/") / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    finally:
        empty_and_delete(s3, name)
