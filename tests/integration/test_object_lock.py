"""Object Lock against a real server: CreateBucket with x-amz-bucket-object-lock-enabled,
Put/GetObjectLockConfiguration (default retention), Put/GetObjectRetention (GOVERNANCE with the
bypass and who may use it, COMPLIANCE), Put/GetObjectLegalHold, the object-lock headers of
PutObject, CopyObject and CreateMultipartUpload and of GET/HEAD, per version; boto3 at its
default configuration, the aws cli, and raw requests for what SDKs will not send. Every refused
request is followed by a look at what is stored: nothing changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import rawhttp
from botocore.exceptions import ClientError
from s3server import ROOT_PASSWORD, ROOT_USER, error_of, new_bucket_name
from serverproc import BIN

from buckets.admin.client import AdminClient
from buckets.iam.identity import account_id

MISSING_LOCK = "Bucket is missing Object Lock Configuration"
PROTECTED = "Access Denied because object protected by object lock."


def later(days: float = 1) -> datetime:
    """A retain-until date ``days`` from now, to the second (as S3 keeps it, to the ms)."""
    return (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)


def refused(fn, **kwargs) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as exc:
        fn(**kwargs)
    code, status = error_of(exc)
    return code, status, exc.value.response["Error"].get("Message", "")


def absent(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def md5_header(body: bytes) -> dict[str, str]:
    return {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()}


def lock_config(s3, bucket: str) -> dict | None:
    try:
        return s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except ClientError as exc:
        assert error_of(_Wrap(exc)) == ("ObjectLockConfigurationNotFoundError", 404)
        return None


class _Wrap:  # error_of takes a pytest ExceptionInfo; this gives it the one field it reads
    def __init__(self, exc: ClientError) -> None:
        self.value = exc


def retention(s3, bucket: str, key: str, **kwargs) -> tuple[str, datetime] | None:
    try:
        got = s3.get_object_retention(Bucket=bucket, Key=key, **kwargs)["Retention"]
    except ClientError as exc:
        assert error_of(_Wrap(exc)) == ("NoSuchObjectLockConfiguration", 404)
        return None
    return got["Mode"], got["RetainUntilDate"]


def legal_hold(s3, bucket: str, key: str, **kwargs) -> bool:
    try:
        return s3.get_object_legal_hold(Bucket=bucket, Key=key, **kwargs)["LegalHold"]["Status"] == "ON"
    except ClientError as exc:
        assert error_of(_Wrap(exc)) == ("NoSuchObjectLockConfiguration", 404)
        return False


@pytest.fixture
def locked(s3) -> str:
    """A bucket created with Object Lock (left behind: locked versions cannot be deleted)."""
    name = new_bucket_name("lock")
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


# --- the bucket's configuration ----------------------------------------------------------------


def test_create_with_object_lock_and_default_retention(s3, locked):
    assert lock_config(s3, locked) == {"ObjectLockEnabled": "Enabled"}
    assert s3.get_bucket_versioning(Bucket=locked).get("Status") == "Enabled"
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    assert lock_config(s3, locked) == {"ObjectLockEnabled": "Enabled",
                                       "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
    put = s3.put_object(Bucket=locked, Key="defaulted", Body=b"x")
    head = s3.head_object(Bucket=locked, Key="defaulted")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    expected = head["LastModified"] + timedelta(days=1)
    assert abs((head["ObjectLockRetainUntilDate"] - expected).total_seconds()) < 120
    assert retention(s3, locked, "defaulted")[0] == "GOVERNANCE"
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    # An object's own lock overrides the default.
    until = later(3)
    s3.put_object(Bucket=locked, Key="own", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    assert retention(s3, locked, "own") == ("COMPLIANCE", until)
    # Years; then no rule at all: no default any more.
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}})
    assert lock_config(s3, locked)["Rule"] == {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert lock_config(s3, locked) == {"ObjectLockEnabled": "Enabled"}
    s3.put_object(Bucket=locked, Key="plain", Body=b"x")
    assert retention(s3, locked, "plain") is None
    assert "ObjectLockMode" not in s3.head_object(Bucket=locked, Key="plain")


@pytest.mark.parametrize("rule, expected", [
    ({"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 0}},
     ("InvalidArgument", 400, "Default retention period must be a positive integer value.")),
    ({"DefaultRetention": {"Mode": "GOVERNANCE", "Years": -1}},
     ("InvalidArgument", 400, "Default retention period must be a positive integer value.")),
    ({"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 36501}},
     ("InvalidArgument", 400, "Default retention period too large.")),
    ({"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1, "Years": 1}}, ("MalformedXML", 400, None)),
    ({"DefaultRetention": {"Mode": "governance", "Days": 1}}, ("MalformedXML", 400, None)),
    ({"DefaultRetention": {"Mode": "GOVERNANCE"}}, ("MalformedXML", 400, None)),
    ({"DefaultRetention": {"Days": 1}}, ("MalformedXML", 400, None)),
    ({}, ("MalformedXML", 400, None)),
])
def test_bad_lock_configurations_change_nothing(s3, locked, rule, expected):
    good = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}}
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration=good)
    code, status, message = refused(s3.put_object_lock_configuration, Bucket=locked,
                                    ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule})
    assert (code, status) == expected[:2] and (expected[2] is None or message == expected[2])
    assert lock_config(s3, locked) == good


@pytest.mark.parametrize("body", [
    b"",
    b"<ObjectLockConfiguration/>",
    b"<ObjectLockConfiguration><ObjectLockEnabled>Disabled</ObjectLockEnabled></ObjectLockConfiguration>",
    b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule/></ObjectLockConfiguration>",
    b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>",
    b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
])
def test_malformed_lock_configuration_documents(server, s3, locked, body):
    resp = rawhttp.request(server, "PUT", f"/{locked}", query="object-lock", body=body, headers=md5_header(body))
    assert (resp.status, resp.code) == (400, "MalformedXML"), resp.text
    assert lock_config(s3, locked) == {"ObjectLockEnabled": "Enabled"}


def test_lock_configuration_needs_an_integrity_header(server, s3, locked):
    body = (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
            b"<Mode>GOVERNANCE</Mode><Days>5</Days></DefaultRetention></Rule></ObjectLockConfiguration>")
    resp = rawhttp.request(server, "PUT", f"/{locked}", query="object-lock", body=body)
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    assert lock_config(s3, locked) == {"ObjectLockEnabled": "Enabled"}
    resp = rawhttp.request(server, "PUT", f"/{locked}", query="object-lock", body=body, headers=md5_header(body))
    assert resp.status == 200
    assert lock_config(s3, locked)["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": 5}


def test_a_bucket_without_object_lock(s3, bucket):
    code, status, message = refused(s3.get_object_lock_configuration, Bucket=bucket)
    assert (code, status) == ("ObjectLockConfigurationNotFoundError", 404)
    assert message == "Object Lock configuration does not exist for this bucket"
    # Not versioned: Object Lock cannot be turned on.
    code, status, _ = refused(s3.put_object_lock_configuration, Bucket=bucket,
                              ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert (code, status) == ("InvalidBucketState", 409)
    assert lock_config(s3, bucket) is None
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x")
    for call, kwargs in ((s3.get_object_retention, {}), (s3.get_object_legal_hold, {}),
                         (s3.put_object_retention, {"Retention": {"Mode": "GOVERNANCE", "RetainUntilDate": later()}}),
                         (s3.put_object_legal_hold, {"LegalHold": {"Status": "ON"}})):
        assert refused(call, Bucket=bucket, Key="obj", **kwargs) == ("InvalidRequest", 400, MISSING_LOCK)
    # Lock headers on a write: refused, nothing stored.
    assert refused(s3.put_object, Bucket=bucket, Key="locked", Body=b"x", ObjectLockMode="GOVERNANCE",
                   ObjectLockRetainUntilDate=later()) == ("InvalidRequest", 400, MISSING_LOCK)
    assert refused(s3.put_object, Bucket=bucket, Key="locked", Body=b"x", ObjectLockLegalHoldStatus="ON") == \
        ("InvalidRequest", 400, MISSING_LOCK)
    assert absent(s3, bucket, "locked")
    assert refused(s3.create_multipart_upload, Bucket=bucket, Key="locked", ObjectLockMode="GOVERNANCE",
                   ObjectLockRetainUntilDate=later())[:2] == ("InvalidRequest", 400)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_lock_configuration_of_a_missing_bucket(s3):
    missing = new_bucket_name("missing")
    assert refused(s3.get_object_lock_configuration, Bucket=missing)[:2] == ("NoSuchBucket", 404)
    assert refused(s3.put_object_lock_configuration, Bucket=missing,
                   ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})[:2] == ("NoSuchBucket", 404)


# --- a version's retention and legal hold --------------------------------------------------


def test_governance_retention_extend_shorten_bypass_remove(s3, locked):
    s3.put_object(Bucket=locked, Key="g", Body=b"governed")
    assert retention(s3, locked, "g") is None
    first = later(2)
    resp = s3.put_object_retention(Bucket=locked, Key="g", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": first})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert retention(s3, locked, "g") == ("GOVERNANCE", first)
    head = s3.head_object(Bucket=locked, Key="g")
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] == first
    # Extending needs nothing special.
    longer = later(4)
    s3.put_object_retention(Bucket=locked, Key="g", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": longer})
    assert retention(s3, locked, "g") == ("GOVERNANCE", longer)
    # Shortening or removing is refused without the bypass...
    assert refused(s3.put_object_retention, Bucket=locked, Key="g",
                   Retention={"Mode": "GOVERNANCE", "RetainUntilDate": first}) == ("AccessDenied", 403, PROTECTED)
    assert retention(s3, locked, "g") == ("GOVERNANCE", longer)
    # ...and allowed with it (the root user may bypass).
    s3.put_object_retention(Bucket=locked, Key="g", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": first},
                            BypassGovernanceRetention=True)
    assert retention(s3, locked, "g") == ("GOVERNANCE", first)
    s3.put_object_retention(Bucket=locked, Key="g", Retention={}, BypassGovernanceRetention=True)
    assert retention(s3, locked, "g") is None
    assert "ObjectLockMode" not in s3.head_object(Bucket=locked, Key="g")
    assert s3.get_object(Bucket=locked, Key="g")["Body"].read() == b"governed"


def test_compliance_is_never_shortened(s3, locked):
    until = later(2)
    s3.put_object(Bucket=locked, Key="c", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    for new in ({"Mode": "COMPLIANCE", "RetainUntilDate": later(1)},
                {"Mode": "GOVERNANCE", "RetainUntilDate": later(5)}):
        for bypass in (False, True):
            assert refused(s3.put_object_retention, Bucket=locked, Key="c", Retention=new,
                           BypassGovernanceRetention=bypass) == ("AccessDenied", 403, PROTECTED)
    assert refused(s3.put_object_retention, Bucket=locked, Key="c", Retention={},
                   BypassGovernanceRetention=True)[:2] == ("AccessDenied", 403)
    assert retention(s3, locked, "c") == ("COMPLIANCE", until)
    longer = later(3)
    s3.put_object_retention(Bucket=locked, Key="c", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": longer})
    assert retention(s3, locked, "c") == ("COMPLIANCE", longer)


def test_bad_retention_requests_change_nothing(server, s3, locked):
    until = later(2)
    s3.put_object(Bucket=locked, Key="r", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    past = datetime.now(timezone.utc) - timedelta(days=1)
    assert refused(s3.put_object_retention, Bucket=locked, Key="r",
                   Retention={"Mode": "GOVERNANCE", "RetainUntilDate": past}) == \
        ("InvalidArgument", 400, "The retain until date must be in the future!")
    for body in (b"<Retention><Mode>GOVERNANCE</Mode></Retention>",
                 b"<Retention><Mode>FOREVER</Mode><RetainUntilDate>2099-01-01T00:00:00Z</RetainUntilDate></Retention>",
                 b"<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>soon</RetainUntilDate></Retention>",
                 b"<Retention><Mode>GOVERNANCE</Mode>", b""):
        resp = rawhttp.request(server, "PUT", f"/{locked}/r", query="retention", body=body, headers=md5_header(body))
        assert (resp.status, resp.code) == (400, "MalformedXML"), (body, resp.text)
    # Content-MD5 or a checksum is required, and must match.
    body = b"<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>2099-01-01T00:00:00Z</RetainUntilDate></Retention>"
    resp = rawhttp.request(server, "PUT", f"/{locked}/r", query="retention", body=body)
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    resp = rawhttp.request(server, "PUT", f"/{locked}/r", query="retention", body=body,
                           headers=md5_header(body + b"x"))
    assert (resp.status, resp.code) == (400, "BadDigest")
    assert retention(s3, locked, "r") == ("GOVERNANCE", until)
    assert refused(s3.put_object_retention, Bucket=locked, Key="nope",
                   Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})[:2] == ("NoSuchKey", 404)
    assert absent(s3, locked, "nope")


def test_legal_hold(server, s3, locked):
    s3.put_object(Bucket=locked, Key="h", Body=b"x")
    assert legal_hold(s3, locked, "h") is False
    assert refused(s3.get_object_legal_hold, Bucket=locked, Key="h")[:2] == ("NoSuchObjectLockConfiguration", 404)
    s3.put_object_legal_hold(Bucket=locked, Key="h", LegalHold={"Status": "ON"})
    assert legal_hold(s3, locked, "h") is True
    assert s3.head_object(Bucket=locked, Key="h")["ObjectLockLegalHoldStatus"] == "ON"
    assert s3.get_object(Bucket=locked, Key="h")["ObjectLockLegalHoldStatus"] == "ON"
    for body in (b"<LegalHold><Status>on</Status></LegalHold>", b"<LegalHold/>", b"<Retention/>"):
        resp = rawhttp.request(server, "PUT", f"/{locked}/h", query="legal-hold", body=body, headers=md5_header(body))
        assert (resp.status, resp.code) == (400, "MalformedXML")
    assert legal_hold(s3, locked, "h") is True
    s3.put_object_legal_hold(Bucket=locked, Key="h", LegalHold={"Status": "OFF"})
    assert "ObjectLockLegalHoldStatus" not in s3.head_object(Bucket=locked, Key="h")
    # On a write.
    s3.put_object(Bucket=locked, Key="held", Body=b"x", ObjectLockLegalHoldStatus="ON")
    assert legal_hold(s3, locked, "held") is True and retention(s3, locked, "held") is None


@pytest.mark.parametrize("extra, expected", [
    ({"ObjectLockMode": "GOVERNANCE"}, ("InvalidArgument", 400, "x-amz-object-lock-retain-until-date and "
                                        "x-amz-object-lock-mode must both be supplied")),
    ({"ObjectLockRetainUntilDate": "later"}, ("InvalidArgument", 400, "x-amz-object-lock-retain-until-date and "
                                              "x-amz-object-lock-mode must both be supplied")),
    ({"ObjectLockMode": "FOREVER", "ObjectLockRetainUntilDate": "later"},
     ("InvalidArgument", 400, "Unknown wormMode directive.")),
    ({"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": "past"},
     ("InvalidArgument", 400, "The retain until date must be in the future!")),
    ({"ObjectLockLegalHoldStatus": "MAYBE"}, ("InvalidArgument", 400, "Legal Hold must be either of 'ON' or 'OFF'")),
])
def test_bad_lock_headers_store_nothing(s3, locked, extra, expected):
    when = {"later": later(), "past": datetime.now(timezone.utc) - timedelta(hours=1)}
    kwargs = {k: when.get(v, v) if k == "ObjectLockRetainUntilDate" else v for k, v in extra.items()}
    assert refused(s3.put_object, Bucket=locked, Key="bad", Body=b"x", **kwargs) == expected
    assert absent(s3, locked, "bad")
    assert refused(s3.create_multipart_upload, Bucket=locked, Key="bad", **kwargs)[:2] == expected[:2]
    assert s3.list_multipart_uploads(Bucket=locked).get("Uploads", []) == []


def test_lock_headers_need_an_integrity_header(server, s3, locked):
    headers = {"x-amz-object-lock-mode": "GOVERNANCE",
               "x-amz-object-lock-retain-until-date": later().strftime("%Y-%m-%dT%H:%M:%SZ")}
    resp = rawhttp.request(server, "PUT", f"/{locked}/raw", body=b"data", headers=headers)
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    assert "Content-MD5 OR x-amz-checksum- HTTP header is required" in resp.text
    assert absent(s3, locked, "raw")
    resp = rawhttp.request(server, "PUT", f"/{locked}/raw", body=b"data", headers={**headers, **md5_header(b"data")})
    assert resp.status == 200
    assert s3.head_object(Bucket=locked, Key="raw")["ObjectLockMode"] == "GOVERNANCE"


def test_a_signed_payload_hash_protects_a_locked_write_too(server, s3, locked):
    """The body's own SHA-256 in the signature (what MinIO's SDK sends over plain HTTP,
    without Content-MD5) is checked against the body as a checksum is: the write is taken,
    and one whose body does not match it is refused and leaves nothing."""
    headers = {"x-amz-object-lock-mode": "GOVERNANCE",
               "x-amz-object-lock-retain-until-date": later().strftime("%Y-%m-%dT%H:%M:%SZ")}
    signed = {**headers, "x-amz-content-sha256": hashlib.sha256(b"data").hexdigest()}
    resp = rawhttp.request(server, "PUT", f"/{locked}/signed", body=b"data", headers=signed)
    assert resp.status == 200, resp.text
    assert s3.head_object(Bucket=locked, Key="signed")["ObjectLockMode"] == "GOVERNANCE"
    # Signed for another body (botocore puts that body's SHA-256 in), then sent with this one.
    wrong = rawhttp.sign("PUT", f"http://127.0.0.1:{server.port}/{locked}/wrong",
                         dict(headers), b"other")
    wrong["x-amz-content-sha256"] = wrong.pop("X-Amz-Content-SHA256")  # request() sends its own otherwise
    assert wrong["x-amz-content-sha256"] == hashlib.sha256(b"other").hexdigest()
    resp = rawhttp.request(server, "PUT", f"/{locked}/wrong", body=b"data", headers=wrong, signed=False)
    assert (resp.status, resp.code) == (400, "XAmzContentSHA256Mismatch")
    assert absent(s3, locked, "wrong")
    # Into a bucket whose default retention applies: the same rule.
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    resp = rawhttp.request(server, "PUT", f"/{locked}/default", body=b"data")
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    resp = rawhttp.request(server, "PUT", f"/{locked}/default", body=b"data",
                           headers={"x-amz-content-sha256": hashlib.sha256(b"data").hexdigest()})
    assert resp.status == 200, resp.text
    assert s3.head_object(Bucket=locked, Key="default")["ObjectLockMode"] == "GOVERNANCE"


def test_copy_and_multipart_take_the_requests_lock(s3, locked):
    until = later(2)
    s3.put_object(Bucket=locked, Key="src", Body=b"source", ObjectLockMode="COMPLIANCE",
                  ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")
    # A copy never carries the source's lock...
    s3.copy_object(Bucket=locked, Key="copy", CopySource={"Bucket": locked, "Key": "src"})
    head = s3.head_object(Bucket=locked, Key="copy")
    assert "ObjectLockMode" not in head and "ObjectLockLegalHoldStatus" not in head
    # ...only its own.
    s3.copy_object(Bucket=locked, Key="copy2", CopySource={"Bucket": locked, "Key": "src"},
                   ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    assert retention(s3, locked, "copy2") == ("GOVERNANCE", until)
    up = s3.create_multipart_upload(Bucket=locked, Key="mp", ObjectLockMode="GOVERNANCE",
                                    ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")
    part = s3.upload_part(Bucket=locked, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 1024)
    s3.complete_multipart_upload(Bucket=locked, Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert retention(s3, locked, "mp") == ("GOVERNANCE", until)
    assert legal_hold(s3, locked, "mp") is True


def test_each_version_has_its_own_lock_and_tags(s3, locked):
    first = s3.put_object(Bucket=locked, Key="v", Body=b"one", Tagging="gen=1")["VersionId"]
    second = s3.put_object(Bucket=locked, Key="v", Body=b"two")["VersionId"]
    assert first != second
    until = later(2)
    resp = s3.put_object_retention(Bucket=locked, Key="v", VersionId=first,
                                   Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    assert resp["ResponseMetadata"]["HTTPHeaders"].get("x-amz-version-id") == first
    assert retention(s3, locked, "v", VersionId=first) == ("GOVERNANCE", until)
    assert retention(s3, locked, "v") is None  # the latest is not locked
    s3.put_object_legal_hold(Bucket=locked, Key="v", VersionId=second, LegalHold={"Status": "ON"})
    assert legal_hold(s3, locked, "v", VersionId=second) and not legal_hold(s3, locked, "v", VersionId=first)
    tagged = s3.get_object_tagging(Bucket=locked, Key="v", VersionId=first)
    assert tagged["TagSet"] == [{"Key": "gen", "Value": "1"}] and tagged["VersionId"] == first
    s3.put_object_tagging(Bucket=locked, Key="v", VersionId=second, Tagging={"TagSet": [{"Key": "gen", "Value": "2"}]})
    assert s3.get_object_tagging(Bucket=locked, Key="v")["TagSet"] == [{"Key": "gen", "Value": "2"}]
    assert s3.get_object_tagging(Bucket=locked, Key="v", VersionId=first)["TagSet"] == [{"Key": "gen", "Value": "1"}]
    head = s3.head_object(Bucket=locked, Key="v", VersionId=first)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "1"
    assert refused(s3.get_object_retention, Bucket=locked, Key="v", VersionId="no-such-version-id")[1] in (400, 404)


def test_bypass_needs_its_permission(server, s3, locked):
    api = AdminClient(server.endpoint, ROOT_USER, ROOT_PASSWORD)
    user = f"lock-user-{os.getpid()}"
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::*"},
        {"Effect": "Deny", "Action": "s3:BypassGovernanceRetention", "Resource": "arn:aws:s3:::*"}]})
    api.call("PUT", f"users/{user}", {"secret_key": "lock-user-secret", "policy": policy})
    s3.put_bucket_policy(Bucket=locked, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam::{account_id(user)}:user/{user}"]}, "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{locked}", f"arn:aws:s3:::{locked}/*"]}]}))
    as_user = server.client(access_key=user, secret_key="lock-user-secret")
    until = later(3)
    s3.put_object(Bucket=locked, Key="b", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    assert retention(as_user, locked, "b") == ("GOVERNANCE", until)
    assert refused(as_user.put_object_retention, Bucket=locked, Key="b",
                   Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later(1)},
                   BypassGovernanceRetention=True) == ("AccessDenied", 403, PROTECTED)
    assert retention(s3, locked, "b") == ("GOVERNANCE", until)
    # Extending needs no bypass.
    longer = later(4)
    as_user.put_object_retention(Bucket=locked, Key="b", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": longer})
    assert retention(s3, locked, "b") == ("GOVERNANCE", longer)


# --- the aws cli --------------------------------------------------------------------------------


def test_aws_cli_object_lock(server, s3, tmp_path: Path):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": ROOT_USER,
           "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def aws(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "aws"), "--endpoint-url", server.endpoint, *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert (done.returncode == 0) == ok, f"aws {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    name = new_bucket_name("cli-lock")
    aws("s3api", "create-bucket", "--bucket", name, "--object-lock-enabled-for-bucket")
    aws("s3api", "put-object-lock-configuration", "--bucket", name, "--object-lock-configuration",
        json.dumps({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}}))
    got = json.loads(aws("s3api", "get-object-lock-configuration", "--bucket", name).stdout)
    assert got["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": 2}
    src = tmp_path / "f.txt"
    src.write_bytes(b"cli body")
    aws("s3api", "put-object", "--bucket", name, "--key", "k", "--body", str(src))
    until = later(5)
    aws("s3api", "put-object-retention", "--bucket", name, "--key", "k", "--retention",
        json.dumps({"Mode": "COMPLIANCE", "RetainUntilDate": until.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    got = json.loads(aws("s3api", "get-object-retention", "--bucket", name, "--key", "k").stdout)["Retention"]
    assert got["Mode"] == "COMPLIANCE"
    assert retention(s3, name, "k") == ("COMPLIANCE", until)
    bad = aws("s3api", "put-object-retention", "--bucket", name, "--key", "k", "--bypass-governance-retention",
              "--retention", json.dumps({"Mode": "COMPLIANCE", "RetainUntilDate": later(1).strftime("%Y-%m-%dT%H:%M:%SZ")}),
              ok=False)
    assert "AccessDenied" in bad.stderr
    assert retention(s3, name, "k") == ("COMPLIANCE", until)
    aws("s3api", "put-object-legal-hold", "--bucket", name, "--key", "k", "--legal-hold", "Status=ON")
    got = json.loads(aws("s3api", "get-object-legal-hold", "--bucket", name, "--key", "k").stdout)
    assert got["LegalHold"]["Status"] == "ON"
