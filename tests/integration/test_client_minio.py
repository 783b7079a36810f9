"""MinIO's Python SDK (``minio``) against a real server, as its users call it.

The SDK has its own signer (SigV4 with the payload's SHA-256, not UNSIGNED-PAYLOAD), its own
multipart logic (``part_size``; a stream of unknown length is cut into parts as it reads)
and its own XML parsing, separate from botocore's: a different reader of every answer. Each
test checks what the SDK did through boto3 as well.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import urllib.request
from urllib.parse import urlsplit

import pytest
from minioclient import read_object
from s3server import REGION, ROOT_PASSWORD, ROOT_USER, empty_and_delete, new_bucket_name

minio = pytest.importorskip("minio")
from minio.commonconfig import ENABLED, REPLACE, ComposeSource, CopySource, Tags  # noqa: E402
from minio.deleteobjects import DeleteObject  # noqa: E402
from minio.error import S3Error  # noqa: E402
from minio.versioningconfig import VersioningConfig  # noqa: E402

MIB = 1024 * 1024


@pytest.fixture
def mc(server):
    """A ``minio.Minio`` client for the server: plain HTTP, the suite's region."""
    parts = urlsplit(server.endpoint)
    return minio.Minio(parts.netloc, access_key=ROOT_USER, secret_key=ROOT_PASSWORD, secure=False, region=REGION)


def test_buckets_put_get_stat_and_list(mc, s3):
    name = new_bucket_name("mc")
    mc.make_bucket(name)
    try:
        assert mc.bucket_exists(name)
        assert name in {b.name for b in mc.list_buckets()}
        body = os.urandom(100_000)
        result = mc.put_object(name, "dir/a.bin", io.BytesIO(body), len(body), content_type="application/x-test",
                               metadata={"x-amz-meta-color": "blue"})
        assert result.etag == hashlib.md5(body).hexdigest()
        stat = mc.stat_object(name, "dir/a.bin")
        assert stat.size == len(body) and stat.content_type == "application/x-test"
        assert stat.metadata["x-amz-meta-color"] == "blue"
        assert read_object(mc, name, "dir/a.bin") == body
        assert read_object(mc, name, "dir/a.bin", offset=1000, length=500) == body[1000:1500]
        for i in range(12):
            mc.put_object(name, f"dir/sub{i % 3}/k{i:02d}", io.BytesIO(b"x" * i), i)
        flat = [o.object_name for o in mc.list_objects(name, prefix="dir/")]
        assert flat == ["dir/a.bin", "dir/sub0/", "dir/sub1/", "dir/sub2/"]
        deep = [o.object_name for o in mc.list_objects(name, prefix="dir/", recursive=True)]
        assert deep == ["dir/a.bin"] + sorted(f"dir/sub{i % 3}/k{i:02d}" for i in range(12))
        after = [o.object_name for o in mc.list_objects(name, prefix="dir/sub1/", recursive=True,
                                                          start_after="dir/sub1/k04")]
        assert after == ["dir/sub1/k07", "dir/sub1/k10"]
        v1 = [o.object_name for o in mc.list_objects(name, recursive=True, use_api_v1=True)]
        assert v1 == deep

        errors = list(mc.remove_objects(name, [DeleteObject(k) for k in deep]))
        assert errors == []
        assert s3.list_objects_v2(Bucket=name).get("KeyCount") == 0
        with pytest.raises(S3Error) as missing:
            mc.stat_object(name, "dir/a.bin")
        assert missing.value.code == "NoSuchKey"
    finally:
        empty_and_delete(s3, name)
    with pytest.raises(S3Error) as gone:
        mc.list_objects(name).__next__()
    assert gone.value.code == "NoSuchBucket"


def test_multipart_uploads_of_known_and_unknown_length(mc, s3, bucket, tmp_path):
    """``fput_object`` of a file and ``put_object`` of a stream with ``length=-1`` both go up
    in 5 MiB parts; the server's ETag says how many."""
    data = os.urandom(16 * MIB + 5)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    mc.fput_object(bucket, "file.bin", str(path), part_size=5 * MIB)
    head = s3.head_object(Bucket=bucket, Key="file.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-4")
    mc.put_object(bucket, "stream.bin", io.BytesIO(data), length=-1, part_size=5 * MIB)
    head = s3.head_object(Bucket=bucket, Key="stream.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-4")
    down = tmp_path / "down.bin"
    mc.fget_object(bucket, "stream.bin", str(down))
    assert down.read_bytes() == data
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_copy_and_compose(mc, s3, bucket):
    """``copy_object`` (metadata kept or replaced) and ``compose_object``: a multipart upload
    whose parts are byte ranges of other objects (UploadPartCopy with ``x-amz-copy-source-range``)."""
    a, b = os.urandom(6 * MIB), os.urandom(5 * MIB + 100)
    mc.put_object(bucket, "a", io.BytesIO(a), len(a), metadata={"x-amz-meta-origin": "a"})
    mc.put_object(bucket, "b", io.BytesIO(b), len(b))
    mc.copy_object(bucket, "a-copy", CopySource(bucket, "a"))
    assert mc.stat_object(bucket, "a-copy").metadata["x-amz-meta-origin"] == "a"
    mc.copy_object(bucket, "a-new-meta", CopySource(bucket, "a"), metadata={"x-amz-meta-origin": "new"},
                   metadata_directive=REPLACE)
    assert s3.head_object(Bucket=bucket, Key="a-new-meta")["Metadata"] == {"origin": "new"}
    assert s3.head_object(Bucket=bucket, Key="a-copy")["Metadata"] == {"origin": "a"}

    mc.compose_object(bucket, "composed", [ComposeSource(bucket, "a", offset=MIB, length=5 * MIB),
                                           ComposeSource(bucket, "b")])
    expected = a[MIB:6 * MIB] + b
    got = s3.get_object(Bucket=bucket, Key="composed")
    assert got["ContentLength"] == len(expected)
    assert got["Body"].read() == expected


def test_presigned_urls_and_post_policy(mc, s3, bucket, server):
    """Presigned GET and PUT URLs used by plain HTTP, and a browser-style POST policy."""
    url = mc.presigned_put_object(bucket, "up.txt", expires=dt.timedelta(minutes=5))
    request = urllib.request.Request(url, data=b"put through a presigned URL", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
    url = mc.presigned_get_object(bucket, "up.txt", expires=dt.timedelta(minutes=5))
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.read() == b"put through a presigned URL"

    from minio.datatypes import PostPolicy

    policy = PostPolicy(bucket, dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5))
    policy.add_starts_with_condition("key", "posted/")
    policy.add_content_length_range_condition(1, 1024)
    fields = mc.presigned_post_policy(policy)
    boundary = "----buckets-test-boundary"
    body = io.BytesIO()
    for field, value in {**fields, "key": "posted/hello.txt"}.items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n'.encode())
    body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="hello.txt"\r\n'
               "Content-Type: text/plain\r\n\r\n".encode() + b"posted by a form\r\n" + f"--{boundary}--\r\n".encode())
    post = urllib.request.Request(f"{server.endpoint}/{bucket}", data=body.getvalue(),
                                  method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(post, timeout=30) as resp:
        assert resp.status in (200, 204)
    assert s3.get_object(Bucket=bucket, Key="posted/hello.txt")["Body"].read() == b"posted by a form"


def test_tags_versioning_and_policy(mc, s3, bucket, server):
    tags = Tags.new_bucket_tags()
    tags["team"] = "storage"
    mc.set_bucket_tags(bucket, tags)
    assert dict(mc.get_bucket_tags(bucket)) == {"team": "storage"}
    mc.put_object(bucket, "t", io.BytesIO(b"tagged"), 6)
    object_tags = Tags.new_object_tags()
    object_tags["kind"] = "test"
    mc.set_object_tags(bucket, "t", object_tags)
    assert dict(mc.get_object_tags(bucket, "t")) == {"kind": "test"}
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "kind", "Value": "test"}]

    mc.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    assert mc.get_bucket_versioning(bucket).status == ENABLED
    first = mc.put_object(bucket, "v", io.BytesIO(b"one"), 3).version_id
    second = mc.put_object(bucket, "v", io.BytesIO(b"two"), 3).version_id
    assert first and second and first != second
    assert read_object(mc, bucket, "v", version_id=first) == b"one"
    versions = [(o.object_name, o.version_id) for o in mc.list_objects(bucket, prefix="v", include_version=True)]
    assert set(versions) == {("v", first), ("v", second)}

    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/public/*"]}]}
    mc.set_bucket_policy(bucket, json.dumps(policy))
    assert json.loads(mc.get_bucket_policy(bucket))["Statement"][0]["Action"] in (["s3:GetObject"], "s3:GetObject")
    mc.put_object(bucket, "public/open.txt", io.BytesIO(b"anyone"), 6)
    with urllib.request.urlopen(f"{server.endpoint}/{bucket}/public/open.txt",
                                timeout=30) as resp:
        assert resp.read() == b"anyone"
    mc.delete_bucket_policy(bucket)
    for name, version in [(o.object_name, o.version_id)
                          for o in mc.list_objects(bucket, recursive=True, include_version=True)]:
        mc.remove_object(bucket, name, version_id=version)


def test_object_lock_retention_and_legal_hold(mc, s3):
    """A bucket created with object lock: a default retention, a version's own retention and
    legal hold, and a delete of a held version refused."""
    from minio.commonconfig import GOVERNANCE
    from minio.objectlockconfig import DAYS, ObjectLockConfig
    from minio.retention import Retention

    name = new_bucket_name("lock")
    mc.make_bucket(name, object_lock=True)
    try:
        mc.set_object_lock_config(name, ObjectLockConfig(GOVERNANCE, 1, DAYS))
        config = mc.get_object_lock_config(name)
        assert (config.mode, config.duration, config.duration_unit) == (GOVERNANCE, 1, DAYS)
        version = mc.put_object(name, "held", io.BytesIO(b"keep me"), 7).version_id
        retention = mc.get_object_retention(name, "held", version_id=version)
        assert retention.mode == GOVERNANCE and retention.retain_until_date > dt.datetime.now(dt.timezone.utc)
        later = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=3)
        mc.set_object_retention(name, "held", Retention(GOVERNANCE, later), version_id=version)
        assert mc.get_object_retention(name, "held", version_id=version).retain_until_date == later
        mc.enable_object_legal_hold(name, "held", version_id=version)
        assert mc.is_object_legal_hold_enabled(name, "held", version_id=version)
        with pytest.raises(S3Error) as refused:
            mc.remove_object(name, "held", version_id=version)
        assert refused.value.code == "AccessDenied"
        mc.disable_object_legal_hold(name, "held", version_id=version)
        assert not mc.is_object_legal_hold_enabled(name, "held", version_id=version)
        assert s3.get_object(Bucket=name, Key="held", VersionId=version)["Body"].read() == b"keep me"
    finally:
        for o in s3.list_object_versions(Bucket=name).get("Versions", []):
            s3.delete_object(Bucket=name, Key=o["Key"], VersionId=o["VersionId"], BypassGovernanceRetention=True)
        s3.delete_bucket(Bucket=name)


def test_an_unsupported_call_is_a_clear_error(mc, bucket):
    """S3 Select is not implemented: the SDK gets an S3 error it can show, not a 500."""
    from minio.select import CSVInputSerialization, CSVOutputSerialization, SelectRequest

    mc.put_object(bucket, "data.csv", io.BytesIO(b"a,b\n1,2\n"), 8)
    with pytest.raises(S3Error) as refused:
        with mc.select_object_content(bucket, "data.csv", SelectRequest(
                "select * from S3Object", CSVInputSerialization(), CSVOutputSerialization())) as result:
            list(result.stream())
    assert refused.value.code == "NotImplemented"
