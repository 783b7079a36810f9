"""s3fs-fuse (Debian's ``s3fs``, `make tools` installs it): a bucket mounted as a directory, as
people mount buckets for programs that only know files.

Every file operation becomes S3 calls of its own shape: a write is a PUT at close (multipart
above its part size), a read is ranged GETs, ``ls`` is a delimited listing plus a HEAD per
entry, ``mkdir`` writes a ``dir/`` object, ``chmod``/``touch`` copy an object onto itself
with new metadata, ``mv`` copies then deletes, appending re-uploads. The result is checked
through the mount and through boto3.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from s3server import ROOT_PASSWORD, ROOT_USER

S3FS = shutil.which("s3fs")
FUSERMOUNT = shutil.which("fusermount") or shutil.which("fusermount3")
MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(S3FS is None or FUSERMOUNT is None or not os.path.exists("/dev/fuse"),
                                reason="s3fs-fuse or /dev/fuse is not available (make tools installs s3fs)")


@pytest.fixture
def mount(server, bucket, tmp_path):
    point = tmp_path / "mnt"
    point.mkdir()
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{ROOT_USER}:{ROOT_PASSWORD}\n")
    passwd.chmod(0o600)
    proc = subprocess.run([S3FS, bucket, str(point), "-o", f"url={server.endpoint}", "-o", "use_path_request_style",
                           "-o", f"passwd_file={passwd}", "-o", "multipart_size=5", "-o", "parallel_count=4",
                           "-o", "stat_cache_expire=0", "-o", "nonempty",
                           "-o", "dbglevel=warn", "-o", f"tmpdir={tmp_path}"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and ("fuse" in proc.stderr.lower() and ("permission" in proc.stderr.lower()
                                                                     or "device" in proc.stderr.lower())):
        pytest.skip(f"FUSE mounts are not allowed here: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"s3fs failed:\n{proc.stdout}\n{proc.stderr}"
    deadline = time.monotonic() + 30
    while not os.path.ismount(point):
        assert time.monotonic() < deadline, "the s3fs mount did not appear"
        time.sleep(0.1)
    try:
        yield point
    finally:
        if subprocess.run([FUSERMOUNT, "-u", str(point)], capture_output=True, timeout=60).returncode != 0:
            subprocess.run([FUSERMOUNT, "-u", "-z", str(point)], capture_output=True, timeout=60)  # busy: detach it


def test_files_directories_and_metadata_through_the_mount(mount: Path, s3, bucket):
    (mount / "hello.txt").write_bytes(b"hello through fuse\n")
    big = os.urandom(12 * MIB + 999)
    (mount / "docs").mkdir()
    (mount / "docs" / "big.bin").write_bytes(big)
    assert s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello through fuse\n"
    assert s3.head_object(Bucket=bucket, Key="docs/big.bin")["ContentLength"] == len(big)
    assert "docs/" in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}

    assert sorted(os.listdir(mount)) == ["docs", "hello.txt"]
    assert (mount / "docs" / "big.bin").read_bytes() == big
    with open(mount / "docs" / "big.bin", "rb") as f:  # ranged reads
        f.seek(7 * MIB + 5)
        assert f.read(1000) == big[7 * MIB + 5:7 * MIB + 1005]

    with open(mount / "hello.txt", "ab") as f:
        f.write(b"and a second line\n")
    assert s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello through fuse\nand a second line\n"

    os.chmod(mount / "hello.txt", 0o640)  # a copy onto itself with new metadata
    assert (mount / "hello.txt").stat().st_mode & 0o777 == 0o640
    os.utime(mount / "hello.txt", (1_600_000_000, 1_600_000_000))
    assert int((mount / "hello.txt").stat().st_mtime) == 1_600_000_000
    assert s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello through fuse\nand a second line\n"

    os.rename(mount / "docs" / "big.bin", mount / "moved.bin")  # copy, then delete
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert "docs/big.bin" not in keys and "moved.bin" in keys
    assert s3.get_object(Bucket=bucket, Key="moved.bin")["Body"].read() == big

    s3.put_object(Bucket=bucket, Key="made-by-boto3/inner.txt", Body=b"seen from the mount")
    assert (mount / "made-by-boto3" / "inner.txt").read_bytes() == b"seen from the mount"

    (mount / "moved.bin").unlink()
    (mount / "docs").rmdir()
    assert sorted(os.listdir(mount)) == ["hello.txt", "made-by-boto3"]
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == \
        ["hello.txt", "made-by-boto3/inner.txt"]
    # Not exercised: truncate(2) of a closed file. s3fs 1.90 uploads zeros for the part it
    # keeps (its request carries the SHA-256 of zeros: the server stores what was sent).
