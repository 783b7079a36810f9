"""rclone against a real server, as backup and sync users run it.

rclone (Debian's, `make tools` installs it) is configured the way its docs tell S3 users to:
`provider = Other`, path-style, the endpoint and keys, nothing else. Each test drives the
commands people script (copy, sync, check, copyto/moveto, cat with a range, purge, link),
with the transfer thresholds lowered so a few MiB take the multipart and server-side copy
paths rclone uses for big files, and checks the result through boto3 as well (an independent
reader of what rclone left on the server).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from localfiles import run, tree, write_files
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, empty_and_delete, new_bucket_name

MIB = 1024 * 1024
RCLONE = shutil.which("rclone")

pytestmark = pytest.mark.skipif(RCLONE is None, reason="rclone is not installed (make test installs it)")


class Rclone:
    """``rclone(*args)`` with a remote ``b:`` for the server (its docs' S3 "Other" setup)
    and transfer thresholds small enough for multipart uploads and copies of a few MiB."""

    SMALL = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--s3-copy-cutoff", "5M",
             "--low-level-retries", "1", "--retries", "1"]

    def __init__(self, endpoint: str, home: Path) -> None:
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home),
                    "RCLONE_CONFIG": str(home / "rclone.conf"), "RCLONE_CONFIG_B_TYPE": "s3",
                    "RCLONE_CONFIG_B_PROVIDER": "Other", "RCLONE_CONFIG_B_ACCESS_KEY_ID": ROOT_USER,
                    "RCLONE_CONFIG_B_SECRET_ACCESS_KEY": ROOT_PASSWORD, "RCLONE_CONFIG_B_ENDPOINT": endpoint,
                    "RCLONE_CONFIG_B_REGION": REGION, "RCLONE_CONFIG_B_FORCE_PATH_STYLE": "true"}

    def __call__(self, *args: str, **env: str) -> str:
        return run([RCLONE, *self.SMALL, *args], {**self.env, **env})

    def raw(self, *args: str, stdin: bytes | None = None) -> bytes:
        """stdout as bytes (``cat``), with ``stdin`` fed to it (``rcat``)."""
        proc = subprocess.run([RCLONE, *self.SMALL, *args], input=stdin, capture_output=True, env=self.env,
                              timeout=180)
        assert proc.returncode == 0, f"rclone {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode()}"
        return proc.stdout


@pytest.fixture
def rclone(server, tmp_path) -> Rclone:
    return Rclone(server.endpoint, tmp_path)


def keys_of(s3, bucket: str, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                  for o in page.get("Contents", []))


def test_copy_check_and_copy_back(rclone, s3, bucket, tmp_path):
    """A tree with small files, a multipart one and awkward names goes up and comes back
    byte for byte; ``rclone check`` compares every hash (the multipart file's from the MD5
    rclone stores in its metadata) and ``--checksum`` finds nothing to send again."""
    src, down = tmp_path / "src", tmp_path / "down"
    files = {"a.txt": b"hello rclone\n", "empty": b"", "dir/b.bin": os.urandom(300_000),
             "dir/sub/big.bin": os.urandom(12 * MIB + 12345),  # 3 parts of 5 MiB
             "names/with space & plus+.txt": b"space", "names/ünïcødé-名前.txt": b"unicode",
             "names/percent%20sign.txt": b"percent", "names/semi;colon=eq.txt": b"semi"}
    write_files(src, files)
    rclone("copy", str(src), f"b:{bucket}/tree")

    assert keys_of(s3, bucket, "tree/") == sorted(f"tree/{name}" for name in files)
    big = s3.head_object(Bucket=bucket, Key="tree/dir/sub/big.bin")
    assert big["ContentLength"] == len(files["dir/sub/big.bin"])
    assert big["ETag"].strip('"').endswith("-3"), big["ETag"]  # rclone uploaded it in parts
    assert big["Metadata"]["md5chksum"]  # rclone's own record of the whole file's MD5
    assert "mtime" in big["Metadata"]
    assert s3.get_object(Bucket=bucket, Key="tree/names/ünïcødé-名前.txt")["Body"].read() == b"unicode"

    rclone("check", str(src), f"b:{bucket}/tree")  # exit 0: every file there, every hash equal
    again = run([RCLONE, *Rclone.SMALL, "copy", "--checksum", "-v", str(src), f"b:{bucket}/tree"], rclone.env)
    assert "Copied" not in again  # nothing sent twice (rclone logs to stderr: run() checked it)

    rclone("copy", f"b:{bucket}/tree", str(down))
    assert tree(down) == tree(src)

    listed = json.loads(rclone("lsjson", "-R", "--hash", "--files-only", f"b:{bucket}/tree"))
    by_path = {item["Path"]: item for item in listed}
    assert set(by_path) == set(files)
    assert by_path["a.txt"]["Hashes"]["md5"] == hashlib.md5(files["a.txt"]).hexdigest()
    assert by_path["dir/sub/big.bin"]["Hashes"]["md5"] == hashlib.md5(files["dir/sub/big.bin"]).hexdigest()
    assert by_path["dir/sub/big.bin"]["Size"] == len(files["dir/sub/big.bin"])


def test_sync_deletes_and_updates(rclone, s3, bucket, tmp_path):
    """``rclone sync`` makes the bucket match the source: changed files replaced, removed
    ones deleted on the server, the rest left alone; with ListObjects v1 as well as v2."""
    src = tmp_path / "src"
    write_files(src, {f"f{i:02d}.txt": f"version one of {i}\n".encode() for i in range(20)})
    rclone("sync", str(src), f"b:{bucket}/mirror")
    for i in range(0, 20, 2):
        (src / f"f{i:02d}.txt").unlink()
    (src / "f01.txt").write_bytes(b"version two, longer than the first\n")
    (src / "new.txt").write_bytes(b"new\n")
    rclone("sync", "--s3-list-version", "1", str(src), f"b:{bucket}/mirror")
    assert keys_of(s3, bucket, "mirror/") == sorted(f"mirror/{p.name}" for p in src.iterdir())
    assert s3.get_object(Bucket=bucket, Key="mirror/f01.txt")["Body"].read() == b"version two, longer than the first\n"
    rclone("check", "--s3-list-version", "2", str(src), f"b:{bucket}/mirror")


def test_server_side_copy_move_and_ranges(rclone, s3, bucket, tmp_path):
    """copyto and moveto between keys copy on the server (CopyObject, and UploadPartCopy
    with byte ranges above the copy cutoff); ``cat --offset --count`` reads a range."""
    data = os.urandom(11 * MIB + 777)
    small = os.urandom(10_000)
    write_files(tmp_path, {"big.bin": data, "small.bin": small})
    rclone("copyto", str(tmp_path / "big.bin"), f"b:{bucket}/orig/big.bin")
    rclone("copyto", str(tmp_path / "small.bin"), f"b:{bucket}/orig/small.bin")

    rclone("copyto", f"b:{bucket}/orig/big.bin", f"b:{bucket}/copy/big.bin")
    rclone("copyto", f"b:{bucket}/orig/small.bin", f"b:{bucket}/copy/small.bin")
    copied = s3.head_object(Bucket=bucket, Key="copy/big.bin")
    assert copied["ContentLength"] == len(data)
    assert copied["ETag"].strip('"').endswith("-3"), copied["ETag"]  # copied in parts, on the server
    assert s3.get_object(Bucket=bucket, Key="copy/big.bin")["Body"].read() == data

    rclone("moveto", f"b:{bucket}/copy/small.bin", f"b:{bucket}/moved/small.bin")
    keys = keys_of(s3, bucket)
    assert "copy/small.bin" not in keys and "moved/small.bin" in keys
    assert s3.get_object(Bucket=bucket, Key="moved/small.bin")["Body"].read() == small

    assert rclone.raw("cat", "--offset", "1234", "--count", "1000", f"b:{bucket}/moved/small.bin") == small[1234:2234]
    assert rclone.raw("cat", "--offset", str(5 * MIB - 10), "--count", "100", f"b:{bucket}/copy/big.bin") == \
        data[5 * MIB - 10:5 * MIB + 90]
    assert rclone.raw("cat", "--tail", "50", f"b:{bucket}/copy/big.bin") == data[-50:]
    summed = rclone("md5sum", "--download", f"b:{bucket}/copy/big.bin").split()
    assert summed == [hashlib.md5(data).hexdigest(), "big.bin"]


def test_streaming_upload_touch_link_and_purge(rclone, s3, server, tmp_path):
    """``rcat`` streams stdin of unknown length (a multipart upload it sizes as it goes),
    ``touch`` rewrites an object's metadata in place (a copy onto itself), ``link`` makes a
    presigned URL that plain HTTP can read, and mkdir / lsd / purge / rmdir manage buckets."""
    name = new_bucket_name("rc")
    rclone("mkdir", f"b:{name}")
    try:
        assert name in rclone("lsd", "b:")
        streamed = os.urandom(7 * MIB + 3)
        rclone.raw("rcat", f"b:{name}/streamed.bin", stdin=streamed)
        head = s3.head_object(Bucket=name, Key="streamed.bin")
        assert head["ContentLength"] == len(streamed) and head["ETag"].strip('"').endswith("-2")
        assert s3.get_object(Bucket=name, Key="streamed.bin")["Body"].read() == streamed

        rclone("touch", "--timestamp", "2020-01-02T03:04:05", f"b:{name}/streamed.bin")
        touched = s3.head_object(Bucket=name, Key="streamed.bin")
        assert touched["ContentLength"] == len(streamed)
        listed = json.loads(rclone("lsjson", f"b:{name}/streamed.bin"))
        assert listed[0]["ModTime"].startswith("2020-01-02T03:04:05")
        assert s3.get_object(Bucket=name, Key="streamed.bin")["Body"].read() == streamed

        url = rclone("link", f"b:{name}/streamed.bin").strip()
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.read() == streamed

        write_files(tmp_path / "many", {f"d/{i}.txt": b"x" * i for i in range(30)})
        rclone("copy", str(tmp_path / "many"), f"b:{name}/many")
        rclone("purge", f"b:{name}/many")  # a batch delete of everything under the prefix
        assert keys_of(s3, name) == ["streamed.bin"]
        rclone("deletefile", f"b:{name}/streamed.bin")
        rclone("rmdir", f"b:{name}")
        assert name not in rclone("lsd", "b:")
    finally:
        try:
            empty_and_delete(s3, name)
        except Exception:  # noqa: BLE001 - rmdir above already removed it
            pass


def test_signature_v2(rclone, s3, bucket, tmp_path):
    """rclone's ``--s3-v2-auth`` (older gateways): the same copy and read back."""
    write_files(tmp_path / "src", {"one.txt": b"signed the old way\n", "two/three.bin": os.urandom(70_000)})
    rclone("copy", "--s3-v2-auth", str(tmp_path / "src"), f"b:{bucket}/v2")
    rclone("check", "--s3-v2-auth", str(tmp_path / "src"), f"b:{bucket}/v2")
    assert keys_of(s3, bucket, "v2/") == ["v2/one.txt", "v2/two/three.bin"]


def test_versions_of_a_versioned_bucket(rclone, s3, bucket, tmp_path):
    """On a versioned bucket rclone's ``--s3-versions`` lists and reads old versions (named
    ``file-v2026-...``) next to the current ones; a delete leaves them readable."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    path = tmp_path / "doc.txt"
    for text in (b"first draft\n", b"second draft\n"):
        path.write_bytes(text)
        rclone("copyto", str(path), f"b:{bucket}/doc.txt")
    listed = rclone("lsf", "--s3-versions", f"b:{bucket}").split()
    assert "doc.txt" in listed and len(listed) == 2, listed
    old = next(name for name in listed if name != "doc.txt")
    assert rclone.raw("cat", "--s3-versions", f"b:{bucket}/{old}") == b"first draft\n"
    rclone("deletefile", f"b:{bucket}/doc.txt")
    assert rclone("lsf", f"b:{bucket}").split() == []
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 2
    for v in s3.list_object_versions(Bucket=bucket)["Versions"]:
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
