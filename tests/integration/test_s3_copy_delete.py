"""CopyObject, UploadPartCopy and DeleteObjects through boto3 against a real server process."""

from __future__ import annotations

import datetime
import hashlib
import os

import pytest
from botocore.exceptions import ClientError

import rawhttp
from s3server import error_of, new_bucket_name

MIB = 1024 * 1024
DATA = os.urandom(2 * MIB + 99)


def test_copy_object_copy_and_replace(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src key+é", Body=DATA, ContentType="text/x-src",
                  Metadata={"a": "1"}, ChecksumAlgorithm="SHA256")
    dest_bucket = new_bucket_name("dst")
    s3.create_bucket(Bucket=dest_bucket)
    try:
        resp = s3.copy_object(Bucket=dest_bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "src key+é"})
        assert resp["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(DATA).hexdigest()}"'
        head = s3.head_object(Bucket=dest_bucket, Key="copied", ChecksumMode="ENABLED")
        assert head["ContentType"] == "text/x-src" and head["Metadata"] == {"a": "1"}
        assert head["ChecksumSHA256"]  # the source's algorithm is kept
        assert s3.get_object(Bucket=dest_bucket, Key="copied")["Body"].read() == DATA

        s3.copy_object(Bucket=bucket, Key="replaced", CopySource=f"{bucket}/src key+é",
                       MetadataDirective="REPLACE", ContentType="text/new", Metadata={"b": "2"})
        head = s3.head_object(Bucket=bucket, Key="replaced")
        assert head["ContentType"] == "text/new" and head["Metadata"] == {"b": "2"}
    finally:
        for key in ("copied",):
            s3.delete_object(Bucket=dest_bucket, Key=key)
        s3.delete_bucket(Bucket=dest_bucket)


def test_copy_with_version_id_null(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="v", Body=b"versioned")
    resp = rawhttp.request(server, "PUT", f"/{bucket}/v2",
                           headers={"x-amz-copy-source": f"/{bucket}/v?versionId=null"})
    assert resp.status == 200, resp.text
    assert s3.get_object(Bucket=bucket, Key="v2")["Body"].read() == b"versioned"
    resp = rawhttp.request(server, "PUT", f"/{bucket}/v3",
                           headers={"x-amz-copy-source": f"/{bucket}/v?versionId=abc"})
    assert (resp.status, resp.code) == (400, "InvalidArgument")  # not a version id S3 could issue
    resp = rawhttp.request(server, "PUT", f"/{bucket}/v3",
                           headers={"x-amz-copy-source": f"/{bucket}/v?versionId={'0' * 32}"})
    assert (resp.status, resp.code) == (404, "NoSuchVersion")
    resp = rawhttp.request(server, "PUT", f"/{bucket}/v3", headers={"x-amz-copy-source": f"{bucket}"})
    assert (resp.status, resp.code) == (400, "InvalidArgument")


def test_self_copy_needs_replace(s3, bucket):
    s3.put_object(Bucket=bucket, Key="self", Body=b"me", Metadata={"old": "1"})
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"})
    assert error_of(exc) == ("InvalidRequest", 400)
    s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"},
                   MetadataDirective="REPLACE", Metadata={"new": "2"})
    head = s3.head_object(Bucket=bucket, Key="self")
    assert head["Metadata"] == {"new": "2"}
    assert s3.get_object(Bucket=bucket, Key="self")["Body"].read() == b"me"


def test_copy_source_conditions(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="cs", Body=b"cond")
    lm = s3.head_object(Bucket=bucket, Key="cs")["LastModified"]
    src = {"Bucket": bucket, "Key": "cs"}
    s3.copy_object(Bucket=bucket, Key="ok", CopySource=src, CopySourceIfMatch=put["ETag"])
    failing = [
        {"CopySourceIfMatch": '"bad"'},
        {"CopySourceIfNoneMatch": put["ETag"]},
        {"CopySourceIfUnmodifiedSince": lm - datetime.timedelta(hours=1)},
        {"CopySourceIfModifiedSince": lm},
    ]
    for cond in failing:
        with pytest.raises(ClientError) as exc:
            s3.copy_object(Bucket=bucket, Key="nope", CopySource=src, **cond)
        assert error_of(exc) == ("PreconditionFailed", 412), cond
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["cs", "ok"]


def test_copy_missing_source(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"})
    assert error_of(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": new_bucket_name("gone"), "Key": "k"})
    assert error_of(exc) == ("NoSuchBucket", 404)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_upload_part_copy_with_ranges(s3, bucket):
    big = os.urandom(6 * MIB)
    s3.put_object(Bucket=bucket, Key="big-src", Body=big)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    p1 = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "big-src"},
                             CopySourceRange=f"bytes={MIB}-{6 * MIB - 1}")
    p2 = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "big-src"}, CopySourceRange="bytes=0-9")
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=4,
                            CopySource={"Bucket": bucket, "Key": "big-src"}, CopySourceRange=f"bytes=0-{6 * MIB}")
    assert error_of(exc) == ("InvalidArgument", 400)
    assert p2["CopyPartResult"]["ETag"] == f'"{hashlib.md5(big[:10]).hexdigest()}"'
    parts = [{"PartNumber": n, "ETag": p["CopyPartResult"]["ETag"]} for n, p in ((1, p1), (2, p2))]
    s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=upload_id,
                                 MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == big[MIB:] + big[:10]


def test_delete_objects(s3, bucket):
    keys = [f"del/{i}" for i in range(30)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[:20]] + [{"Key": "never"}]})
    assert sorted(d["Key"] for d in resp["Deleted"]) == sorted(keys[:20] + ["never"])
    assert "Errors" not in resp
    remaining = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(remaining) == sorted(keys[20:])
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[20:]], "Quiet": True})
    assert "Deleted" not in resp and "Errors" not in resp
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_delete_objects_per_key_errors(s3, bucket):
    s3.put_object(Bucket=bucket, Key="fine", Body=b"x")
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "fine"}, {"Key": "k" * 1025}]})
    assert [d["Key"] for d in resp["Deleted"]] == ["fine"]
    assert [(e["Key"], e["Code"]) for e in resp["Errors"]] == [("k" * 1025, "KeyTooLongError")]


def test_delete_objects_bad_requests(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="stay", Body=b"x")
    body = b"<Delete><Object><Key>stay</Key></Object></Delete>"
    resp = rawhttp.request(server, "POST", f"/{bucket}", query="delete", body=body)
    assert (resp.status, resp.code) == (400, "InvalidRequest")  # no Content-MD5 / checksum
    import base64
    import hashlib as h

    md5 = base64.b64encode(h.md5(b"different").digest()).decode()
    resp = rawhttp.request(server, "POST", f"/{bucket}", query="delete", body=body, headers={"Content-MD5": md5})
    assert (resp.status, resp.code) == (400, "BadDigest")
    bad = b"<Delete><Object><Key>stay</Key></Object>"
    resp = rawhttp.request(server, "POST", f"/{bucket}", query="delete", body=bad,
                           headers={"Content-MD5": base64.b64encode(h.md5(bad).digest()).decode()})
    assert (resp.status, resp.code) == (400, "MalformedXML")
    many = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>"
    resp = rawhttp.request(server, "POST", f"/{bucket}", query="delete", body=many,
                           headers={"Content-MD5": base64.b64encode(h.md5(many).digest()).decode()})
    assert (resp.status, resp.code) == (400, "MalformedXML")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["stay"]
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=new_bucket_name("gone"), Delete={"Objects": [{"Key": "a"}]})
    assert error_of(exc) == ("NoSuchBucket", 404)


# --- conditional deletes -------------------------------------------------------------------


def _versions(s3, bucket: str, key: str) -> tuple[int, int, bool]:
    """(versions, delete markers, the latest is a marker) of ``key``."""
    got = s3.list_object_versions(Bucket=bucket, Prefix=key)
    versions = [v for v in got.get("Versions", []) if v["Key"] == key]
    markers = [m for m in got.get("DeleteMarkers", []) if m["Key"] == key]
    return len(versions), len(markers), any(m["IsLatest"] for m in markers)


def test_conditional_delete_object(server, s3, bucket):
    """DeleteObject with If-Match: the current ETag deletes, another is 412 and a missing key
    404 NoSuchKey, both changing nothing; ``*`` asks only that the object exist; the
    directory-bucket-only conditions are refused (501), not ignored."""
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="k", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert error_of(exc) == ("PreconditionFailed", 412)
    for header in ("x-amz-if-match-size", "x-amz-if-match-last-modified-time"):
        resp = rawhttp.request(server, "DELETE", f"/{bucket}/k", headers={header: "3"})
        assert (resp.status, resp.code) == (501, "NotImplemented"), resp.text
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"one"
    assert s3.delete_object(Bucket=bucket, Key="k", IfMatch=etag)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k")
    assert error_of(exc)[1] == 404
    for condition in (etag, "*"):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=bucket, Key="k", IfMatch=condition)
        assert error_of(exc) == ("NoSuchKey", 404)
    s3.put_object(Bucket=bucket, Key="k", Body=b"two")
    s3.delete_object(Bucket=bucket, Key="k", IfMatch="*")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_conditional_delete_in_a_versioned_bucket(s3, bucket):
    """The condition is judged on the current version: a failed one adds no delete marker, a
    kept one adds it, and once a marker is current the object counts as missing."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="v", Body=b"one")
    second = s3.put_object(Bucket=bucket, Key="v", Body=b"two")
    with pytest.raises(ClientError) as exc:  # the old version's ETag is not the current one's
        s3.delete_object(Bucket=bucket, Key="v", IfMatch=first["ETag"])
    assert error_of(exc) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as exc:  # with a version id too: judged on the current version
        s3.delete_object(Bucket=bucket, Key="v", VersionId=first["VersionId"], IfMatch=first["ETag"])
    assert error_of(exc) == ("PreconditionFailed", 412)
    assert _versions(s3, bucket, "v") == (2, 0, False)
    resp = s3.delete_object(Bucket=bucket, Key="v", IfMatch=second["ETag"])
    assert resp["DeleteMarker"] is True
    assert _versions(s3, bucket, "v") == (2, 1, True)
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="v", IfMatch="*")
    assert error_of(exc) == ("NoSuchKey", 404)
    assert _versions(s3, bucket, "v") == (2, 1, True)


def test_conditional_delete_objects(server, s3, bucket):
    """DeleteObjects: an object's <ETag> makes its delete conditional; a failed condition is
    that key's <Error> and the key stays; conditions S3 takes only for directory buckets
    (<Size>, <LastModifiedTime>) are that key's NotImplemented."""
    tags = {k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode())["ETag"] for k in ("a", "b", "c", "d", "e")}
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "ETag": tags["a"]},
        {"Key": "b", "ETag": tags["a"]},  # another object's ETag
        {"Key": "c", "ETag": "*"},
        {"Key": "missing", "ETag": tags["a"]},
        {"Key": "d", "Size": 1},
        {"Key": "e"},
    ]})
    assert sorted(d["Key"] for d in resp["Deleted"]) == ["a", "c", "e"]
    assert {e["Key"]: e["Code"] for e in resp["Errors"]} == {
        "b": "PreconditionFailed", "missing": "NoSuchKey", "d": "NotImplemented"}
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == ["b", "d"]
