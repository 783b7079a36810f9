"""Object and bucket tagging against a real server: Put/Get/DeleteObjectTagging, x-amz-tagging on
PutObject, CopyObject (with x-amz-tagging-directive) and multipart uploads, x-amz-tagging-count
on GET/HEAD, Put/Get/DeleteBucketTagging; boto3 at its default configuration, the aws cli, and
raw requests for what SDKs will not send. Every refused request is followed by a look at what
is stored: nothing changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import rawhttp
from botocore.exceptions import ClientError
from s3server import ROOT_PASSWORD, ROOT_USER, error_of, new_bucket_name
from serverproc import BIN

from buckets.admin.client import AdminClient
from buckets.iam.identity import account_id


def tagset(tags: dict[str, str]) -> dict:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}


def tags_of(s3, bucket: str, key: str, **kwargs) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key, **kwargs)["TagSet"]}


def bucket_tags(s3, bucket: str) -> dict[str, str] | None:
    try:
        return {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchTagSet"
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        return None


def absent(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def refused(fn, **kwargs) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as exc:
        fn(**kwargs)
    code, status = error_of(exc)
    return code, status, exc.value.response["Error"].get("Message", "")


def tagging_doc(pairs: list[tuple[str, str]]) -> bytes:
    tags = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in pairs)
    return f"<Tagging><TagSet>{tags}</TagSet></Tagging>".encode()


def md5_header(body: bytes) -> dict[str, str]:
    return {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()}


# --- objects ----------------------------------------------------------------------------------


def test_object_tagging_put_get_replace_delete(s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"data")
    assert tags_of(s3, bucket, "obj") == {}
    assert "x-amz-tagging-count" not in s3.head_object(Bucket=bucket, Key="obj")["ResponseMetadata"]["HTTPHeaders"]

    s3.put_object_tagging(Bucket=bucket, Key="obj", Tagging=tagset({"project": "blue", "cost centre": "4 2"}))
    assert tags_of(s3, bucket, "obj") == {"project": "blue", "cost centre": "4 2"}
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["TagCount"] == 2 and got["Body"].read() == b"data"
    head = s3.head_object(Bucket=bucket, Key="obj")["ResponseMetadata"]["HTTPHeaders"]
    assert head["x-amz-tagging-count"] == "2"
    # A range read reports the tag count too.
    assert s3.get_object(Bucket=bucket, Key="obj", Range="bytes=0-1")["TagCount"] == 2

    # A Put replaces the whole set; an empty set removes it.
    s3.put_object_tagging(Bucket=bucket, Key="obj", Tagging=tagset({"only": ""}))
    assert tags_of(s3, bucket, "obj") == {"only": ""}
    s3.put_object_tagging(Bucket=bucket, Key="obj", Tagging={"TagSet": []})
    assert tags_of(s3, bucket, "obj") == {}
    s3.put_object_tagging(Bucket=bucket, Key="obj", Tagging=tagset({"a": "1"}))
    deleted = s3.delete_object_tagging(Bucket=bucket, Key="obj")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert tags_of(s3, bucket, "obj") == {}
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="obj")
    # Tags change nothing else: the object's bytes and ETag are the same.
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"data"


def test_overwrite_takes_the_new_writes_tags(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"1", Tagging="old=1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"2")
    assert tags_of(s3, bucket, "k") == {}
    s3.put_object(Bucket=bucket, Key="k", Body=b"3", Tagging="new=3")
    assert tags_of(s3, bucket, "k") == {"new": "3"}


def test_limits_are_accepted_at_the_edge(s3, bucket):
    s3.put_object(Bucket=bucket, Key="edge", Body=b"x")
    ten = {f"key-{i}" + "k" * 100: "v" * 256 for i in range(10)}
    s3.put_object_tagging(Bucket=bucket, Key="edge", Tagging=tagset(ten))
    assert tags_of(s3, bucket, "edge") == ten
    unicode_tags = {"Ñandú 日本": "élan vital", "k" * 128: "", "a_b.c:d/e=f+g-h@i": "x y"}
    s3.put_object_tagging(Bucket=bucket, Key="edge", Tagging=tagset(unicode_tags))
    assert tags_of(s3, bucket, "edge") == unicode_tags


BAD_TAG_SETS = [
    ({f"k{i}": "v" for i in range(11)}, ("BadRequest", 400, "Object tags cannot be greater than 10")),
    ({"aws:reserved": "v"}, ("InvalidTag", 400, "Your TagKey cannot be prefixed with aws:")),
    ({"k" * 129: "v"}, ("InvalidTag", 400, "The TagKey you have provided is too long, max 128")),
    ({"k": "v" * 257}, ("InvalidTag", 400, "The TagValue you have provided is too long, max 256")),
    ({"semi;colon": "v"}, ("InvalidTag", 400, "The TagKey you have provided is invalid")),
    ({"k": "<&>"}, ("InvalidTag", 400, "The TagValue you have provided is invalid")),
    ({"k": "dollar$"}, ("InvalidTag", 400, "The TagValue you have provided is invalid")),
]


@pytest.mark.parametrize("tags, expected", BAD_TAG_SETS)
def test_bad_object_tag_sets_change_nothing(s3, bucket, tags, expected):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x", Tagging="keep=me")
    assert refused(s3.put_object_tagging, Bucket=bucket, Key="obj", Tagging=tagset(tags)) == expected
    assert tags_of(s3, bucket, "obj") == {"keep": "me"}


def test_duplicate_keys_in_a_document(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x", Tagging="keep=me")
    body = tagging_doc([("a", "1"), ("a", "2")])
    resp = rawhttp.request(server, "PUT", f"/{bucket}/obj", query="tagging", body=body, headers=md5_header(body))
    assert (resp.status, resp.code) == (400, "InvalidTag")
    assert "Cannot provide multiple Tags with the same key" in resp.text
    assert tags_of(s3, bucket, "obj") == {"keep": "me"}


@pytest.mark.parametrize("body", [
    b"",
    b"<Tagging/>",
    b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Key></Key><Value>v</Value></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag>",
    b"<Other><TagSet/></Other>",
    b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY e "x">]><Tagging><TagSet/></Tagging>',
])
def test_malformed_tagging_documents_change_nothing(server, s3, bucket, body):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x", Tagging="keep=me")
    resp = rawhttp.request(server, "PUT", f"/{bucket}/obj", query="tagging", body=body, headers=md5_header(body))
    expected = "InvalidTag" if b"<Key></Key>" in body else "MalformedXML"
    assert (resp.status, resp.code) == (400, expected), resp.text
    assert tags_of(s3, bucket, "obj") == {"keep": "me"}


def test_bad_content_md5_changes_nothing(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x", Tagging="keep=me")
    body = tagging_doc([("new", "tag")])
    resp = rawhttp.request(server, "PUT", f"/{bucket}/obj", query="tagging", body=body,
                           headers=md5_header(body + b" "))
    assert (resp.status, resp.code) == (400, "BadDigest")
    assert tags_of(s3, bucket, "obj") == {"keep": "me"}


def test_tagging_a_missing_object_or_bucket(s3, bucket):
    code, status, _ = refused(s3.put_object_tagging, Bucket=bucket, Key="nope", Tagging=tagset({"a": "b"}))
    assert (code, status) == ("NoSuchKey", 404)
    assert refused(s3.get_object_tagging, Bucket=bucket, Key="nope")[:2] == ("NoSuchKey", 404)
    assert refused(s3.delete_object_tagging, Bucket=bucket, Key="nope")[:2] == ("NoSuchKey", 404)
    assert absent(s3, bucket, "nope")
    missing = new_bucket_name("missing")
    assert refused(s3.put_object_tagging, Bucket=missing, Key="k", Tagging=tagset({"a": "b"}))[:2] == \
        ("NoSuchBucket", 404)


def test_tagging_header_on_put(s3, bucket):
    s3.put_object(Bucket=bucket, Key="h", Body=b"x", Tagging="a=b&two+words=x%20y&bare&k%C3%A9=%C3%BC")
    assert tags_of(s3, bucket, "h") == {"a": "b", "two words": "x y", "bare": "", "ké": "ü"}
    assert s3.get_object(Bucket=bucket, Key="h")["TagCount"] == 4
    s3.put_object(Bucket=bucket, Key="empty", Body=b"x", Tagging="")
    assert tags_of(s3, bucket, "empty") == {}


HEADER_ERRORS = [
    ("a=1&a=2", ("InvalidArgument", 400, "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded "
                 "URL query parameters without tag name duplicates.")),
    ("TagSet=[{Key=string,Value=string}]", ("InvalidArgument", 400, "The header 'x-amz-tagging' shall be encoded "
                                           "as UTF-8 then URLEncoded URL query parameters without tag name "
                                           "duplicates.")),
    ("TagSet%3D%5B%7BKey%3Dstring%2CValue%3Dstring%7D%5D", ("InvalidTag", 400,
                                                          "The TagKey you have provided is invalid")),
    ("&".join(f"k{i}=v" for i in range(11)), ("BadRequest", 400, "Object tags cannot be greater than 10")),
    ("aws%3Akey=v", ("InvalidTag", 400, "Your TagKey cannot be prefixed with aws:")),
]


@pytest.mark.parametrize("header, expected", HEADER_ERRORS)
def test_bad_tagging_headers_store_nothing(s3, bucket, header, expected):
    assert refused(s3.put_object, Bucket=bucket, Key="bad", Body=b"x", Tagging=header) == expected
    assert absent(s3, bucket, "bad")
    code = refused(s3.create_multipart_upload, Bucket=bucket, Key="bad-mp", Tagging=header)[0]
    assert code == expected[0]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_copy_keeps_or_replaces_tags(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source", Tagging="from=source&n=1")
    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "src"})
    assert tags_of(s3, bucket, "copied") == {"from": "source", "n": "1"}
    # COPY (the default) ignores a tagging header; REPLACE takes it, or none.
    s3.copy_object(Bucket=bucket, Key="copied2", CopySource={"Bucket": bucket, "Key": "src"}, Tagging="x=y")
    assert tags_of(s3, bucket, "copied2") == {"from": "source", "n": "1"}
    s3.copy_object(Bucket=bucket, Key="replaced", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="REPLACE", Tagging="new=tags")
    assert tags_of(s3, bucket, "replaced") == {"new": "tags"}
    s3.copy_object(Bucket=bucket, Key="bare", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="REPLACE")
    assert tags_of(s3, bucket, "bare") == {}
    # Copying onto itself with REPLACE metadata changes the tags as asked.
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", TaggingDirective="REPLACE", Tagging="self=1")
    assert tags_of(s3, bucket, "src") == {"self": "1"}
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == b"source"


def test_bad_copy_tagging_stores_nothing(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source", Tagging="a=b")
    code, status, _ = refused(s3.copy_object, Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                              TaggingDirective="MERGE")
    assert (code, status) == ("InvalidArgument", 400)
    assert refused(s3.copy_object, Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   TaggingDirective="REPLACE", Tagging="aws:x=1")[:2] == ("InvalidTag", 400)
    assert absent(s3, bucket, "dst")


def test_multipart_upload_carries_its_tags(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="stage=raw&team=data")
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 1024)
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert tags_of(s3, bucket, "mp") == {"stage": "raw", "team": "data"}
    assert s3.get_object(Bucket=bucket, Key="mp")["TagCount"] == 2


# --- buckets ----------------------------------------------------------------------------------


def test_bucket_tagging_put_get_delete(s3, bucket):
    assert bucket_tags(s3, bucket) is None
    fifty = {f"team-{i}": f"value {i}" for i in range(50)}
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset(fifty))
    assert bucket_tags(s3, bucket) == fifty
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset({"env": "prod"}))
    assert bucket_tags(s3, bucket) == {"env": "prod"}
    assert s3.delete_bucket_tagging(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert bucket_tags(s3, bucket) is None
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset({"env": "prod"}))
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": []})
    assert bucket_tags(s3, bucket) is None
    # Bucket tags are not object tags.
    s3.put_object(Bucket=bucket, Key="o", Body=b"x")
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset({"env": "prod"}))
    assert tags_of(s3, bucket, "o") == {}


@pytest.mark.parametrize("tags, expected", [
    ({f"k{i}": "v" for i in range(51)}, ("BadRequest", 400, "Bucket tag count cannot be greater than 50")),
    ({"aws:cloudformation:stack": "v"}, ("InvalidTag", 400, "System tags cannot be added/updated by requester")),
    ({"k" * 129: "v"}, ("InvalidTag", 400, "The TagKey you have provided is too long, max 128")),
    ({"k": "bad|value"}, ("InvalidTag", 400, "The TagValue you have provided is invalid")),
])
def test_bad_bucket_tag_sets_change_nothing(s3, bucket, tags, expected):
    s3.put_bucket_tagging(Bucket=bucket, Tagging=tagset({"keep": "me"}))
    assert refused(s3.put_bucket_tagging, Bucket=bucket, Tagging=tagset(tags)) == expected
    assert bucket_tags(s3, bucket) == {"keep": "me"}


def test_bucket_tagging_needs_an_integrity_header(server, s3, bucket):
    body = tagging_doc([("a", "b")])
    resp = rawhttp.request(server, "PUT", f"/{bucket}", query="tagging", body=body)
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    assert bucket_tags(s3, bucket) is None
    resp = rawhttp.request(server, "PUT", f"/{bucket}", query="tagging", body=body, headers=md5_header(body))
    assert resp.status == 204
    assert bucket_tags(s3, bucket) == {"a": "b"}


def test_bucket_tagging_of_a_missing_bucket(s3):
    missing = new_bucket_name("missing")
    assert refused(s3.get_bucket_tagging, Bucket=missing)[:2] == ("NoSuchBucket", 404)
    assert refused(s3.put_bucket_tagging, Bucket=missing, Tagging=tagset({"a": "b"}))[:2] == ("NoSuchBucket", 404)
    assert refused(s3.delete_bucket_tagging, Bucket=missing)[:2] == ("NoSuchBucket", 404)


# --- who may ------------------------------------------------------------------------------------


def test_tagging_permissions(server, s3, bucket):
    api = AdminClient(server.endpoint, ROOT_USER, ROOT_PASSWORD)
    reader, writer = f"tag-reader-{os.getpid()}", f"tag-writer-{os.getpid()}"
    api.call("PUT", f"users/{reader}", {"secret_key": "reader-secret-1", "policy": "readonly"})
    api.call("PUT", f"users/{writer}", {"secret_key": "writer-secret-1", "policy": "writeonly"})
    as_reader = server.client(access_key=reader, secret_key="reader-secret-1")
    as_writer = server.client(access_key=writer, secret_key="writer-secret-1")
    # The bucket's policy lets both in; their own policies (readonly, writeonly) decide the rest.
    users = [f"arn:aws:iam::{account_id(u)}:user/{u}" for u in (reader, writer)]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": users}, "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=b")

    assert tags_of(as_reader, bucket, "t") == {"a": "b"}  # s3:GetObjectTagging (readonly: s3:Get*)
    assert as_reader.get_object(Bucket=bucket, Key="t")["TagCount"] == 1
    assert refused(as_reader.put_object_tagging, Bucket=bucket, Key="t", Tagging=tagset({"c": "d"}))[:2] == \
        ("AccessDenied", 403)
    assert refused(as_reader.delete_object_tagging, Bucket=bucket, Key="t")[:2] == ("AccessDenied", 403)
    assert refused(as_reader.put_bucket_tagging, Bucket=bucket, Tagging=tagset({"c": "d"}))[:2] == \
        ("AccessDenied", 403)
    assert tags_of(s3, bucket, "t") == {"a": "b"} and bucket_tags(s3, bucket) is None
    # A write that tags needs s3:PutObjectTagging as well as s3:PutObject.
    as_writer.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert refused(as_writer.put_object, Bucket=bucket, Key="tagged", Body=b"x", Tagging="c=d")[:2] == \
        ("AccessDenied", 403)
    assert absent(s3, bucket, "tagged")


# --- the aws cli --------------------------------------------------------------------------------


def test_aws_cli_tagging(server, s3, bucket, tmp_path: Path):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": ROOT_USER,
           "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def aws(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "aws"), "--endpoint-url", server.endpoint, *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert (done.returncode == 0) == ok, f"aws {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    src = tmp_path / "f.txt"
    src.write_bytes(b"cli body")
    aws("s3api", "put-object", "--bucket", bucket, "--key", "cli", "--body", str(src), "--tagging", "via=cli&n=1")
    assert tags_of(s3, bucket, "cli") == {"via": "cli", "n": "1"}
    aws("s3api", "put-object-tagging", "--bucket", bucket, "--key", "cli", "--tagging",
        json.dumps(tagset({"changed": "yes"})))
    got = json.loads(aws("s3api", "get-object-tagging", "--bucket", bucket, "--key", "cli").stdout)
    assert got["TagSet"] == [{"Key": "changed", "Value": "yes"}]
    bad = aws("s3api", "put-object-tagging", "--bucket", bucket, "--key", "cli", "--tagging",
              json.dumps(tagset({f"k{i}": "v" for i in range(11)})), ok=False)
    assert "BadRequest" in bad.stderr and "Object tags cannot be greater than 10" in bad.stderr
    assert tags_of(s3, bucket, "cli") == {"changed": "yes"}
    aws("s3api", "delete-object-tagging", "--bucket", bucket, "--key", "cli")
    assert tags_of(s3, bucket, "cli") == {}
    aws("s3api", "put-bucket-tagging", "--bucket", bucket, "--tagging", json.dumps(tagset({"owner": "cli"})))
    got = json.loads(aws("s3api", "get-bucket-tagging", "--bucket", bucket).stdout)
    assert got["TagSet"] == [{"Key": "owner", "Value": "cli"}]
    aws("s3api", "delete-bucket-tagging", "--bucket", bucket)
    missing = aws("s3api", "get-bucket-tagging", "--bucket", bucket, ok=False)
    assert "NoSuchTagSet" in missing.stderr
