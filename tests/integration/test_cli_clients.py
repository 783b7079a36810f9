"""The aws cli (v1) and s3cmd against a real server process, as users run them."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import pytest
from localfiles import run, tree, write_files
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, crc64nvme_b64, empty_and_delete, new_bucket_name
from serverproc import BIN

MIB = 1024 * 1024


# --- aws cli ------------------------------------------------------------------------------


def aws_cli(server, home: Path, region: str = REGION):
    """The aws cli as a user runs it: credentials from the environment, a default region,
    and s3 transfer settings small enough to make multipart uploads of a few MiB."""
    config = home / f"aws-config-{region}"
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(home),
        "AWS_ACCESS_KEY_ID": ROOT_USER, "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD,
        "AWS_DEFAULT_REGION": region, "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
    }
    aws_bin = str(BIN / "aws")
    run([aws_bin, "configure", "set", "default.s3.multipart_threshold", "5MB"], env)
    run([aws_bin, "configure", "set", "default.s3.multipart_chunksize", "5MB"], env)

    def call(*args: str) -> str:
        return run([aws_bin, "--endpoint-url", server.endpoint, *args], env)

    return call


@pytest.fixture
def aws(server, tmp_path):
    return aws_cli(server, tmp_path)


def test_aws_cli_s3_commands(aws, s3, tmp_path):
    bucket = new_bucket_name("awscli")
    try:
        assert f"make_bucket: {bucket}" in aws("s3", "mb", f"s3://{bucket}")
        big = os.urandom(12 * MIB + 321)  # over the 5 MB threshold: a 3-part multipart upload
        src = tmp_path / "src"
        write_files(src, {"big.bin": big, "a.txt": b"alpha", "sub/b.txt": b"beta", "sub/deep/c.txt": b"gamma"})
        aws("s3", "cp", str(src / "big.bin"), f"s3://{bucket}/single/big.bin")
        head = s3.head_object(Bucket=bucket, Key="single/big.bin")
        assert head["ETag"].endswith('-3"') and head["ContentLength"] == len(big)
        aws("s3", "cp", f"s3://{bucket}/single/big.bin", str(tmp_path / "big.down"))
        assert (tmp_path / "big.down").read_bytes() == big

        aws("s3", "sync", str(src), f"s3://{bucket}/synced")
        listing = aws("s3", "ls", "--recursive", f"s3://{bucket}/synced/")
        for name in ("synced/a.txt", "synced/sub/b.txt", "synced/sub/deep/c.txt", "synced/big.bin"):
            assert name in listing
        top = aws("s3", "ls", f"s3://{bucket}/synced/")
        assert "PRE sub/" in top and "a.txt" in top
        (src / "a.txt").write_bytes(b"alpha, changed")
        out = aws("s3", "sync", str(src), f"s3://{bucket}/synced")
        assert "a.txt" in out and "b.txt" not in out  # only the changed file is sent again
        down = tmp_path / "down"
        aws("s3", "sync", f"s3://{bucket}/synced", str(down))
        assert tree(down) == tree(src)

        assert "delete:" in aws("s3", "rm", f"s3://{bucket}/synced/a.txt")
        aws("s3", "rm", "--recursive", f"s3://{bucket}/synced/")
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["single/big.bin"]
        assert f"remove_bucket: {bucket}" in aws("s3", "rb", "--force", f"s3://{bucket}")
        assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        if bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            empty_and_delete(s3, bucket)


def test_aws_cli_s3api(aws, s3, bucket, tmp_path):
    body = tmp_path / "body.txt"
    body.write_bytes(b"s3api body")
    import json

    put = json.loads(aws("s3api", "put-object", "--bucket", bucket, "--key", "api/key.txt",
                         "--body", str(body), "--content-type", "text/plain", "--metadata", "k=v"))
    assert put["ETag"] == f'"{hashlib.md5(b"s3api body").hexdigest()}"'
    head = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "api/key.txt"))
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"k": "v"}
    listed = json.loads(aws("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "api/"))
    assert [o["Key"] for o in listed["Contents"]] == ["api/key.txt"]
    out = tmp_path / "out.txt"
    json.loads(aws("s3api", "get-object", "--bucket", bucket, "--key", "api/key.txt", "--range", "bytes=0-4",
                   str(out)))
    assert out.read_bytes() == b"s3api"
    loc = json.loads(aws("s3api", "get-bucket-location", "--bucket", bucket))
    assert loc["LocationConstraint"] is None


@pytest.mark.slow  # many CLI process starts: make test-slow (make test keeps this CLI's other tests)
def test_aws_cli_with_another_default_region(server, s3, tmp_path):
    """A user whose aws cli defaults to ap-south-1: mb sends that LocationConstraint and
    every request is signed for ap-south-1; the server takes both, and still reports its
    own region."""
    import json

    aws = aws_cli(server, tmp_path, region="ap-south-1")
    bucket = new_bucket_name("south")
    try:
        assert f"make_bucket: {bucket}" in aws("s3", "mb", f"s3://{bucket}")
        data = os.urandom(6 * MIB + 7)  # over the 5 MB threshold: multipart
        (tmp_path / "up.bin").write_bytes(data)
        aws("s3", "cp", str(tmp_path / "up.bin"), f"s3://{bucket}/up.bin")
        assert "up.bin" in aws("s3", "ls", f"s3://{bucket}/")
        aws("s3", "cp", f"s3://{bucket}/up.bin", str(tmp_path / "down.bin"))
        assert (tmp_path / "down.bin").read_bytes() == data
        url = aws("s3", "presign", f"s3://{bucket}/up.bin").strip()
        assert "ap-south-1" in url  # SigV4 query auth scoped to the client's region
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert hashlib.md5(resp.read()).digest() == hashlib.md5(data).digest()
        loc = json.loads(aws("s3api", "get-bucket-location", "--bucket", bucket))
        assert loc["LocationConstraint"] is None  # the server's us-east-1
        aws("s3", "rb", "--force", f"s3://{bucket}")
        assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        if bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            empty_and_delete(s3, bucket)


# --- s3cmd --------------------------------------------------------------------------------


@pytest.fixture
def s3cmd(server, tmp_path):
    def make(signature_v2: bool, bucket_location: str = REGION):
        config = tmp_path / f"s3cfg-{'v2' if signature_v2 else 'v4'}"
        config.write_text("\n".join([
            "[default]",
            f"access_key = {ROOT_USER}",
            f"secret_key = {ROOT_PASSWORD}",
            f"host_base = 127.0.0.1:{server.port}",
            f"host_bucket = 127.0.0.1:{server.port}",
            "use_https = False",
            f"signature_v2 = {'True' if signature_v2 else 'False'}",
            f"bucket_location = {bucket_location}",
            "check_ssl_certificate = False",
            "multipart_chunk_size_mb = 5",
            "",
        ]))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}

        def call(*args: str) -> str:
            return run([str(BIN / "s3cmd"), "-c", str(config), *args], env)

        return call

    return make


# s3cmd's own default location is "US"; a user in Europe sets eu-west-1 (SigV4 then signs
# for eu-west-1 and mb sends it as the LocationConstraint).
@pytest.mark.parametrize("signature_v2,location", [(True, "US"), (False, "US"), (False, "eu-west-1")],
                         ids=["sigv2", "sigv4", "sigv4-eu-west-1"])
def test_s3cmd(s3cmd, s3, tmp_path, signature_v2, location):
    call = s3cmd(signature_v2, location)
    bucket = new_bucket_name("s3cmd")
    try:
        assert f"Bucket 's3://{bucket}/' created" in call("mb", f"s3://{bucket}")
        small = tmp_path / "small.txt"
        small.write_bytes(b"hello from s3cmd")
        big = tmp_path / "big.bin"
        big_data = os.urandom(6 * MIB + 5)  # over multipart_chunk_size_mb: two parts
        big.write_bytes(big_data)
        call("put", str(small), f"s3://{bucket}/dir/small.txt")
        call("put", str(big), f"s3://{bucket}/big.bin")
        assert s3.head_object(Bucket=bucket, Key="big.bin")["ETag"].endswith('-2"')
        # s3cmd sends no flexible checksum: both objects get S3's default CRC64NVME (the
        # multipart one combined from its parts'), which boto3 checks as it reads them.
        for key, data in (("dir/small.txt", b"hello from s3cmd"), ("big.bin", big_data)):
            got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            assert got["ChecksumCRC64NVME"] == crc64nvme_b64(data)
            assert got["ChecksumType"] == "FULL_OBJECT" and got["Body"].read() == data
        listing = call("ls", f"s3://{bucket}/")
        assert f"s3://{bucket}/big.bin" in listing and f"s3://{bucket}/dir/" in listing
        assert f"s3://{bucket}/dir/small.txt" in call("ls", "--recursive", f"s3://{bucket}")
        call("get", f"s3://{bucket}/dir/small.txt", str(tmp_path / "small.down"))
        assert (tmp_path / "small.down").read_bytes() == b"hello from s3cmd"
        call("get", f"s3://{bucket}/big.bin", str(tmp_path / "big.down"))
        assert (tmp_path / "big.down").read_bytes() == big_data
        call("del", f"s3://{bucket}/dir/small.txt")
        call("del", f"s3://{bucket}/big.bin")
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        assert f"Bucket 's3://{bucket}/' removed" in call("rb", f"s3://{bucket}")
        assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        if bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            empty_and_delete(s3, bucket)
