"""Versioning through boto3 (default settings) and the aws cli against a real server: version
ids, delete markers, undelete, the null version, ListObjectVersions paging, copies of a version,
and every error path (nothing changes after a refused request)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from botocore.exceptions import ClientError
from s3server import ROOT_PASSWORD, ROOT_USER, error_of, new_bucket_name
from serverproc import BIN

import rawhttp


@pytest.fixture
def vbucket(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def versions(s3, bucket, **kw):
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, **kw):
        out += [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in page.get("Versions", [])]
        out += [(v["Key"], v["VersionId"], v["IsLatest"], True) for v in page.get("DeleteMarkers", [])]
    return out


def test_versioning_status_round_trip(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    for bad in ({"Status": "Disabled"}, {}):
        with pytest.raises(ClientError) as exc:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=bad)
        assert error_of(exc) == ("MalformedXML", 400)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"})
    assert error_of(exc)[1] == 400
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=new_bucket_name(), VersioningConfiguration={"Status": "Enabled"})
    assert error_of(exc) == ("NoSuchBucket", 404)


def test_versions_delete_markers_and_undelete(s3, vbucket):
    b = vbucket
    v1 = s3.put_object(Bucket=b, Key="doc", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="doc", Body=b"two")["VersionId"]
    assert v1 != v2
    assert s3.get_object(Bucket=b, Key="doc")["Body"].read() == b"two"
    got = s3.get_object(Bucket=b, Key="doc", VersionId=v1)
    assert got["Body"].read() == b"one" and got["VersionId"] == v1
    assert s3.head_object(Bucket=b, Key="doc", VersionId=v2)["VersionId"] == v2
    deleted = s3.delete_object(Bucket=b, Key="doc")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=b, Key="doc")
    assert error_of(exc) == ("NoSuchKey", 404)
    headers = exc.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=b, Key="doc", VersionId=marker)
    assert error_of(exc)[1] == 405
    assert s3.list_objects_v2(Bucket=b).get("KeyCount") == 0
    assert versions(s3, b) == [("doc", v2, False, False), ("doc", v1, False, False), ("doc", marker, True, True)]
    # deleting the marker undeletes
    undo = s3.delete_object(Bucket=b, Key="doc", VersionId=marker)
    assert undo["DeleteMarker"] is True and undo["VersionId"] == marker
    assert s3.get_object(Bucket=b, Key="doc")["Body"].read() == b"two"
    # deleting a version by id removes it for good; the next newest becomes current
    assert s3.delete_object(Bucket=b, Key="doc", VersionId=v2)["VersionId"] == v2
    assert s3.get_object(Bucket=b, Key="doc")["Body"].read() == b"one"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=b, Key="doc", VersionId=v2)
    assert error_of(exc) == ("NoSuchVersion", 404)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=b, Key="doc", VersionId="not-a-version")
    assert error_of(exc) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=b, Key="doc", VersionId="not-a-version")
    assert error_of(exc) == ("InvalidArgument", 400)
    assert versions(s3, b) == [("doc", v1, True, False)]
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=b)
    assert error_of(exc) == ("BucketNotEmpty", 409)


def test_suspended_bucket_null_version(s3, vbucket):
    b = vbucket
    kept = s3.put_object(Bucket=b, Key="k", Body=b"kept")["VersionId"]
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=b, Key="k", Body=b"null-1")
    s3.put_object(Bucket=b, Key="k", Body=b"null-2")
    assert versions(s3, b) == [("k", "null", True, False), ("k", kept, False, False)]
    assert s3.get_object(Bucket=b, Key="k", VersionId="null")["Body"].read() == b"null-2"
    gone = s3.delete_object(Bucket=b, Key="k")
    assert gone["DeleteMarker"] is True and gone["VersionId"] == "null"
    assert versions(s3, b) == [("k", kept, False, False), ("k", "null", True, True)]


def test_list_object_versions_paging_and_prefixes(s3, vbucket):
    b = vbucket
    want = []
    for key in ("a", "dir/1", "dir/2", "z"):
        ids = [s3.put_object(Bucket=b, Key=key, Body=key.encode())["VersionId"] for _ in range(3)]
        want += [(key, vid) for vid in reversed(ids)]
    got = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=b, PaginationConfig={"PageSize": 2}):
        got += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
    assert got == want
    page = s3.list_object_versions(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["dir/"]
    assert {v["Key"] for v in page["Versions"]} == {"a", "z"}
    page = s3.list_object_versions(Bucket=b, Prefix="dir/", MaxKeys=4)
    assert page["IsTruncated"] and page["NextKeyMarker"] == "dir/2" and len(page["Versions"]) == 4
    with pytest.raises(ClientError) as exc:
        s3.list_object_versions(Bucket=b, VersionIdMarker=want[0][1])
    assert error_of(exc) == ("InvalidArgument", 400)


def test_copy_a_version_and_delete_objects_with_versions(s3, vbucket):
    b = vbucket
    v1 = s3.put_object(Bucket=b, Key="src", Body=b"first")["VersionId"]
    s3.put_object(Bucket=b, Key="src", Body=b"second")
    copied = s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src", "VersionId": v1})
    assert copied["CopySourceVersionId"] == v1 and copied["VersionId"]
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"first"
    res = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "src"}, {"Key": "dst", "VersionId": copied["VersionId"]},
                                                          {"Key": "src", "VersionId": "bad"}]})
    deleted = {(d["Key"], d.get("VersionId")): d for d in res["Deleted"]}
    assert deleted[("src", None)]["DeleteMarker"] is True and deleted[("src", None)]["DeleteMarkerVersionId"]
    assert ("dst", copied["VersionId"]) in deleted
    assert [(e["Key"], e["Code"]) for e in res["Errors"]] == [("src", "InvalidArgument")]
    assert s3.get_object(Bucket=b, Key="src", VersionId=v1)["Body"].read() == b"first"


def test_versioned_multipart(s3, vbucket):
    b = vbucket
    up = s3.create_multipart_upload(Bucket=b, Key="mp")
    part = s3.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1000)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    done = s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload=parts)
    assert done["VersionId"]
    again = s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload=parts)
    assert (again["ETag"], again["VersionId"]) == (done["ETag"], done["VersionId"])


def test_aws_cli_versioning(server, s3, bucket, tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": ROOT_USER,
           "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def aws(*args: str) -> dict:
        done = subprocess.run([str(BIN / "aws"), "--endpoint-url", server.endpoint, "--output", "json", *args],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"aws {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else {}

    aws("s3api", "put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled")
    assert aws("s3api", "get-bucket-versioning", "--bucket", bucket)["Status"] == "Enabled"
    src = tmp_path / "f"
    src.write_bytes(b"cli")
    first = aws("s3api", "put-object", "--bucket", bucket, "--key", "f", "--body", str(src))["VersionId"]
    aws("s3api", "delete-object", "--bucket", bucket, "--key", "f")
    listed = aws("s3api", "list-object-versions", "--bucket", bucket)
    assert [v["VersionId"] for v in listed["Versions"]] == [first] and len(listed["DeleteMarkers"]) == 1


def test_raw_bad_versioning_documents_change_nothing(server, s3, bucket):
    for body in (b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>", b"not xml"):
        resp = rawhttp.request(server, "PUT", f"/{bucket}", query="versioning", body=body)
        assert resp.status == 400, resp.body
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
