"""Bucket lifecycle against the real server: Put/Get/DeleteBucketLifecycleConfiguration with
S3's validation (boto3 at its defaults, the aws cli, raw requests for every refusal),
``x-amz-expiration`` on PUT, GET and HEAD, and the rules applied for real by the worker of a
server whose lifecycle "day" is shortened to a couple of seconds.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate, parsedate_to_datetime

import pytest
from botocore.exceptions import ClientError

import rawhttp
from s3server import ROOT_PASSWORD, ROOT_USER, error_of, new_bucket_name, start_server, stop_server
from serverproc import BIN, no_new_tracebacks

DAY = 2.0  # seconds in a lifecycle day on the `fast` server
INTERVAL = 0.5  # seconds between its worker's passes


def put_xml(server, bucket: str, xml: str | bytes, *, md5: bool | str = True) -> rawhttp.RawResponse:
    body = xml.encode() if isinstance(xml, str) else xml
    headers = {}
    if md5 is True:
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    elif md5:
        headers["Content-MD5"] = md5
    return rawhttp.request(server, "PUT", f"/{bucket}", query="lifecycle", body=body, headers=headers)


def message(resp: rawhttp.RawResponse) -> str:
    m = re.search(rb"<Message>([^<]*)</Message>", resp.body)
    return html.unescape(m.group(1).decode()) if m else ""


def config(*rules: str) -> str:
    return '<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' + "".join(rules) + \
        "</LifecycleConfiguration>"


def rule(body: str = "<Expiration><Days>1</Days></Expiration>", rid: str = "r",
         flt: str = "<Filter><Prefix>p/</Prefix></Filter>", status: str = "Enabled") -> str:
    return f"<Rule><ID>{rid}</ID>{flt}<Status>{status}</Status>{body}</Rule>"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll until ``check()`` holds (the worker runs every INTERVAL seconds); the bound only
    keeps a broken build from hanging the suite."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for: {what}")
        time.sleep(0.2)


def exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


RULES = [
    {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}},
    {"ID": "tagged", "Filter": {"And": {"Prefix": "tmp/", "Tags": [{"Key": "class", "Value": "scratch"}],
                                        "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 5000}},
     "Status": "Disabled", "Expiration": {"Date": datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc)}},
    {"ID": "versions", "Filter": {}, "Status": "Enabled",
     "NoncurrentVersionExpiration": {"NoncurrentDays": 7, "NewerNoncurrentVersions": 2},
     "Expiration": {"ExpiredObjectDeleteMarker": True}},
    {"ID": "uploads", "Filter": {"Prefix": "up/"}, "Status": "Enabled",
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}},
    {"ID": "size", "Filter": {"ObjectSizeLessThan": 100}, "Status": "Enabled", "Expiration": {"Days": 1}},
]


# --- the configuration ------------------------------------------------------------------------------


def test_put_get_delete_round_trip(s3, bucket):
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": RULES})
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == RULES
    # A PUT replaces the whole configuration.
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": RULES[:1]})
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == RULES[:1]
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_of(exc) == ("NoSuchLifecycleConfiguration", 404)
    assert exc.value.response["Error"]["BucketName"] == bucket
    s3.delete_bucket_lifecycle(Bucket=bucket)  # deleting none is fine, as in S3


def test_legacy_prefix_and_a_generated_id_read_back_as_sent(server, s3, bucket):
    resp = put_xml(server, bucket, config("<Rule><Prefix>old/</Prefix><Status>Enabled</Status>"
                                          "<Expiration><Days>5</Days></Expiration></Rule>"))
    assert resp.status == 200, resp.body
    (got,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert got["Prefix"] == "old/" and "Filter" not in got and got["Expiration"] == {"Days": 5}
    assert len(got["ID"]) == 48
    # The same ID on every read.
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]["ID"] == got["ID"]


def test_no_bucket(s3):
    for call in (s3.get_bucket_lifecycle_configuration, s3.delete_bucket_lifecycle):
        with pytest.raises(ClientError) as exc:
            call(Bucket="no-such-bucket-lifecycle")
        assert error_of(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_lifecycle_configuration(Bucket="no-such-bucket-lifecycle",
                                              LifecycleConfiguration={"Rules": RULES[:1]})
    assert error_of(exc) == ("NoSuchBucket", 404)


def test_the_body_must_carry_its_digest(server, s3, bucket):
    xml = config(rule())
    resp = put_xml(server, bucket, xml, md5=False)
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    assert message(resp) == "Missing required header for this request: Content-MD5"
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    resp = put_xml(server, bucket, xml, md5=wrong)
    assert (resp.status, resp.code) == (400, "BadDigest")
    resp = put_xml(server, bucket, xml, md5="not base64!")
    assert (resp.status, resp.code) == (400, "InvalidDigest")
    with pytest.raises(ClientError):
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)  # nothing was stored


ABORT = "<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload>"
TAG = "<Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter>"


@pytest.mark.parametrize("xml, status, code, text", [
    ("", 400, "MalformedXML", ""),
    ("<LifecycleConfiguration", 400, "MalformedXML", ""),
    (config(), 400, "MalformedXML", ""),
    ("<CORSConfiguration/>", 400, "MalformedXML", ""),
    (config(*(rule(rid=f"r{i}") for i in range(1001))), 400, "InvalidRequest",
     "must not exceed the allowed limit of 1000 rules"),
    (config(rule(rid="i" * 256)), 400, "InvalidArgument", "ID length should not exceed allowed limit of 255"),
    (config(rule(rid="twice"), rule(rid="twice")), 400, "InvalidArgument", "Rule ID must be unique"),
    (config(rule(status="On")), 400, "MalformedXML", ""),
    (config(rule(flt="")), 400, "MalformedXML", ""),
    (config(rule(flt="<Prefix>a</Prefix><Filter><Prefix>a</Prefix></Filter>")), 400, "MalformedXML", ""),
    (config(rule(flt="<Filter><Prefix>a</Prefix><ObjectSizeLessThan>4</ObjectSizeLessThan></Filter>")), 400,
     "MalformedXML", ""),
    (config(rule(flt="<Filter><And><ObjectSizeGreaterThan>9</ObjectSizeGreaterThan>"
                     "<ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>")), 400, "InvalidRequest",
     "'ObjectSizeGreaterThan' must be less than 'ObjectSizeLessThan'."),
    (config(rule(flt=f"<Filter><Tag><Key>{'k' * 129}</Key><Value>v</Value></Tag></Filter>")), 400,
     "InvalidRequest", "A Tag's Key must be a length between 1 and 128"),
    (config(rule("")), 400, "InvalidRequest", "At least one action needs to be specified in a rule."),
    (config(rule("<Expiration><Days>0</Days></Expiration>")), 400, "InvalidArgument",
     "'Days' for Expiration action must be a positive integer"),
    (config(rule("<Expiration><Days>2</Days><Date>2030-01-01T00:00:00Z</Date></Expiration>")), 400,
     "MalformedXML", ""),
    (config(rule("<Expiration><Days>2</Days><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
                 "</Expiration>")), 400, "MalformedXML", ""),
    (config(rule("<Expiration><Date>2030-01-01T01:00:00Z</Date></Expiration>")), 400, "InvalidArgument",
     "'Date' must be at midnight GMT"),
    (config(rule("<Expiration><Date>tomorrow</Date></Expiration>")), 400, "MalformedXML", ""),
    (config(rule("<NoncurrentVersionExpiration><NoncurrentDays>0</NoncurrentDays></NoncurrentVersionExpiration>")),
     400, "InvalidArgument", "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer"),
    (config(rule("<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays><NewerNoncurrentVersions>0"
                 "</NewerNoncurrentVersions></NoncurrentVersionExpiration>")), 400, "InvalidArgument",
     "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must be a positive integer"),
    (config(rule("<AbortIncompleteMultipartUpload><DaysAfterInitiation>-1</DaysAfterInitiation>"
                 "</AbortIncompleteMultipartUpload>")), 400, "InvalidArgument",
     "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer"),
    (config(rule(ABORT, flt=TAG)), 400, "InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with Tags."),
    (config(rule(ABORT, flt="<Filter><ObjectSizeGreaterThan>1</ObjectSizeGreaterThan></Filter>")), 400,
     "InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with Object Size."),
    (config(rule("<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>", flt=TAG)),
     400, "InvalidRequest", "ExpiredObjectDeleteMarker cannot be specified with Tags."),
    (config(rule("<Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>")), 501,
     "NotImplemented", "Transition"),
    ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "p/">]>' + config(rule(flt="<Prefix>&e;</Prefix>")), 400,
     "MalformedXML", ""),
])
def test_refused_and_nothing_changes(server, s3, bucket, xml, status, code, text):
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": RULES[:1]})
    resp = put_xml(server, bucket, xml)
    assert (resp.status, resp.code) == (status, code), resp.body
    assert text in message(resp)
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == RULES[:1]


def test_boto3_refusals_name_the_code(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
            {"ID": "zero", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 0}}]})
    assert error_of(exc) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
            {"ID": "late", "Filter": {}, "Status": "Enabled",
             "Expiration": {"Date": datetime.datetime(2031, 1, 1, 12, tzinfo=datetime.timezone.utc)}}]})
    assert error_of(exc) == ("InvalidArgument", 400)


# --- x-amz-expiration ---------------------------------------------------------------------------------


def expected_header(last_modified: datetime.datetime, days: int, rule_id: str, day: float = 86400.0) -> str:
    ts = last_modified.timestamp()
    when = ((ts // day) + days + 1) * day
    return f'expiry-date="{formatdate(when, usegmt=True)}", rule-id="{rule_id}"'


def test_expiration_header_on_put_get_and_head(s3, bucket):
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "short", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 3}},
        {"ID": "long", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 5000}},
        {"ID": "off", "Filter": {}, "Status": "Disabled", "Expiration": {"Days": 1}},
        {"ID": "date", "Filter": {"Prefix": "old/"}, "Status": "Enabled",
         "Expiration": {"Date": datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)}},
    ]})
    put = s3.put_object(Bucket=bucket, Key="logs/a", Body=b"x")
    head = s3.head_object(Bucket=bucket, Key="logs/a")
    assert put["Expiration"] == head["Expiration"] == expected_header(head["LastModified"], 3, "short")
    assert s3.get_object(Bucket=bucket, Key="logs/a", Range="bytes=0-0")["Expiration"] == head["Expiration"]
    s3.put_object(Bucket=bucket, Key="other", Body=b"y")
    other = s3.get_object(Bucket=bucket, Key="other")
    assert other["Expiration"] == expected_header(other["LastModified"], 5000, "long")
    s3.put_object(Bucket=bucket, Key="old/z", Body=b"z")
    assert s3.head_object(Bucket=bucket, Key="old/z")["Expiration"] == \
        'expiry-date="Tue, 01 Jan 2030 00:00:00 GMT", rule-id="date"'
    s3.delete_bucket_lifecycle(Bucket=bucket)
    assert "Expiration" not in s3.head_object(Bucket=bucket, Key="logs/a")
    assert "Expiration" not in s3.put_object(Bucket=bucket, Key="logs/b", Body=b"x")


def test_no_expiration_header_for_rules_without_expiration(s3, bucket):
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "mpu", "Filter": {}, "Status": "Enabled", "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "big", "Filter": {"ObjectSizeGreaterThan": 10}, "Status": "Enabled", "Expiration": {"Days": 1}},
    ]})
    assert "Expiration" not in s3.put_object(Bucket=bucket, Key="small", Body=b"0123456789")
    assert s3.put_object(Bucket=bucket, Key="big", Body=b"0123456789A")["Expiration"].endswith('rule-id="big"')


def test_abort_date_on_create_multipart_upload_and_list_parts(s3, bucket):
    """x-amz-abort-date / x-amz-abort-rule-id (boto3's AbortDate, AbortRuleId) when a rule's
    AbortIncompleteMultipartUpload selects the key: the earliest such rule; none otherwise."""
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "tmp-uploads", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}},
        {"ID": "all-uploads", "Filter": {}, "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 30}},
        {"ID": "off", "Filter": {}, "Status": "Disabled", "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]})
    before = time.time()
    up = s3.create_multipart_upload(Bucket=bucket, Key="tmp/a")
    after = time.time()
    assert up["AbortRuleId"] == "tmp-uploads"
    # the first midnight (UTC) after initiation + 3 days, S3's rounding
    assert up["AbortDate"].timestamp() in {((t // 86400) + 4) * 86400 for t in (before, after)}, up["AbortDate"]
    parts = s3.list_parts(Bucket=bucket, Key="tmp/a", UploadId=up["UploadId"])
    assert (parts["AbortDate"], parts["AbortRuleId"]) == (up["AbortDate"], "tmp-uploads")
    other = s3.create_multipart_upload(Bucket=bucket, Key="other")
    assert other["AbortRuleId"] == "all-uploads"
    s3.delete_bucket_lifecycle(Bucket=bucket)
    plain = s3.create_multipart_upload(Bucket=bucket, Key="tmp/b")
    assert "AbortDate" not in plain and "AbortRuleId" not in plain
    assert "AbortDate" not in s3.list_parts(Bucket=bucket, Key="tmp/a", UploadId=up["UploadId"])
    for key, upload in (("tmp/a", up), ("other", other), ("tmp/b", plain)):
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


# --- the aws cli --------------------------------------------------------------------------------------


def test_aws_cli(server, s3, bucket, tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": ROOT_USER,
           "AWS_SECRET_ACCESS_KEY": ROOT_PASSWORD, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def aws(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "aws"), "--endpoint-url", server.endpoint, "s3api", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert (done.returncode == 0) == ok, f"aws {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    rules = {"Rules": [{"ID": "cli", "Filter": {"Prefix": "cli/"}, "Status": "Enabled",
                        "Expiration": {"Days": 9}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
                       {"ID": "dated", "Filter": {"Prefix": "d/"}, "Status": "Enabled",
                        "Expiration": {"Date": "2032-06-01"}}]}
    path = tmp_path / "lifecycle.json"
    path.write_text(json.dumps(rules))
    aws("put-bucket-lifecycle-configuration", "--bucket", bucket, "--lifecycle-configuration", f"file://{path}")
    got = json.loads(aws("get-bucket-lifecycle-configuration", "--bucket", bucket).stdout)["Rules"]
    assert got[0] == rules["Rules"][0]
    assert got[1]["Expiration"]["Date"].startswith("2032-06-01T00:00:00")
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]["ID"] == "cli"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Rules": [{"ID": "x", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 0}}]}))
    failed = aws("put-bucket-lifecycle-configuration", "--bucket", bucket, "--lifecycle-configuration",
                 f"file://{bad}", ok=False)
    assert "InvalidArgument" in failed.stderr
    aws("delete-bucket-lifecycle", "--bucket", bucket)
    failed = aws("get-bucket-lifecycle-configuration", "--bucket", bucket, ok=False)
    assert "NoSuchLifecycleConfiguration" in failed.stderr


# --- the worker, on a server with a short day -----------------------------------------------------------


@pytest.fixture(scope="module")
def fast(tmp_path_factory) -> Iterator:
    srv = start_server(tmp_path_factory.mktemp("lifecycle"),
                       extra_env={"BUCKETS_LIFECYCLE_DAY_SECONDS": str(DAY),
                                  "BUCKETS_LIFECYCLE_INTERVAL": str(INTERVAL)})
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture
def fs3(fast):
    with no_new_tracebacks(fast.log_text):
        yield fast.client()


@pytest.fixture
def fbucket(fs3) -> Iterator[str]:
    name = new_bucket_name("lc")
    fs3.create_bucket(Bucket=name)
    yield name
    fs3.delete_bucket_lifecycle(Bucket=name)
    for up in fs3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        fs3.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
    versions = fs3.list_object_versions(Bucket=name)
    for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        fs3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
    fs3.delete_bucket(Bucket=name)


def test_objects_expire(fast, fs3, fbucket):
    fs3.put_bucket_lifecycle_configuration(Bucket=fbucket, LifecycleConfiguration={"Rules": [
        {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 1}},
        {"ID": "off", "Filter": {"Prefix": "off/"}, "Status": "Disabled", "Expiration": {"Days": 1}},
        {"ID": "big", "Filter": {"And": {"Prefix": "size/", "ObjectSizeGreaterThan": 5}}, "Status": "Enabled",
         "Expiration": {"Days": 1}},
        {"ID": "past", "Filter": {"Prefix": "dated/"}, "Status": "Enabled",
         "Expiration": {"Date": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)}},
    ]})
    for key, body in [("off/a", b"x"), ("keep/a", b"x"), ("size/small", b"12345"), ("tmp/a", b"x"),
                      ("tmp/b", b"y" * 70000), ("size/big", b"123456"), ("dated/a", b"d")]:
        fs3.put_object(Bucket=fbucket, Key=key, Body=body)
    header = fs3.head_object(Bucket=fbucket, Key="tmp/a")
    due = parsedate_to_datetime(re.search(r'expiry-date="([^"]+)"', header["Expiration"])[1])
    wait_for("tmp/ and size/big expired", lambda: not any(
        exists(fs3, fbucket, k) for k in ("tmp/a", "tmp/b", "size/big", "dated/a")))
    assert datetime.datetime.now(datetime.timezone.utc) >= due  # never before the announced date
    # Written before the expired ones, and left: a disabled rule, no rule, a size the rule skips.
    left = [o["Key"] for o in fs3.list_objects_v2(Bucket=fbucket)["Contents"]]
    assert left == ["keep/a", "off/a", "size/small"]
    assert fs3.get_object(Bucket=fbucket, Key="off/a")["Body"].read() == b"x"
    fast.wait_log("lifecycle rule 'tmp' expired")


def test_a_replaced_object_gets_a_new_expiry(fs3, fbucket):
    fs3.put_bucket_lifecycle_configuration(Bucket=fbucket, LifecycleConfiguration={"Rules": [
        {"ID": "tmp", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 3}}]})
    first = fs3.put_object(Bucket=fbucket, Key="k", Body=b"one")["Expiration"]
    time.sleep(DAY)  # the next write is at least a day later: a later expiry date
    second = fs3.put_object(Bucket=fbucket, Key="k", Body=b"two")["Expiration"]
    assert first != second
    wait_for("k expired", lambda: not exists(fs3, fbucket, "k"))


def test_incomplete_uploads_are_aborted(fs3, fbucket):
    fs3.put_bucket_lifecycle_configuration(Bucket=fbucket, LifecycleConfiguration={"Rules": [
        {"ID": "mpu", "Filter": {"Prefix": "up/"}, "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]})
    kept = fs3.create_multipart_upload(Bucket=fbucket, Key="other/big")["UploadId"]
    gone = fs3.create_multipart_upload(Bucket=fbucket, Key="up/big")["UploadId"]
    fs3.upload_part(Bucket=fbucket, Key="up/big", UploadId=gone, PartNumber=1, Body=b"p" * 1000)

    def upload_ids() -> set[str]:
        return {u["UploadId"] for u in fs3.list_multipart_uploads(Bucket=fbucket).get("Uploads", [])}

    wait_for("the up/ upload aborted", lambda: gone not in upload_ids())
    assert upload_ids() == {kept}
    with pytest.raises(ClientError) as exc:
        fs3.list_parts(Bucket=fbucket, Key="up/big", UploadId=gone)
    assert error_of(exc) == ("NoSuchUpload", 404)


def test_tag_filters_select_by_the_object_tags(fast, fs3, fbucket):
    fs3.put_bucket_lifecycle_configuration(Bucket=fbucket, LifecycleConfiguration={"Rules": [
        {"ID": "scratch", "Filter": {"Tag": {"Key": "class", "Value": "scratch"}}, "Status": "Enabled",
         "Expiration": {"Days": 1}}]})
    fs3.put_object(Bucket=fbucket, Key="kept-other-value", Body=b"a", Tagging="class=keep")
    fs3.put_object(Bucket=fbucket, Key="kept-untagged", Body=b"b")
    put = fs3.put_object(Bucket=fbucket, Key="tagged", Body=b"c", Tagging="class=scratch&x=y")
    assert put["Expiration"].endswith('rule-id="scratch"')
    wait_for("the tagged object expired", lambda: not exists(fs3, fbucket, "tagged"))
    assert [o["Key"] for o in fs3.list_objects_v2(Bucket=fbucket)["Contents"]] == ["kept-other-value", "kept-untagged"]


# --- versioned buckets -----------------------------------------------------------------------------------


def versions_of(s3, bucket: str, prefix: str) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is a delete marker, is latest), keys ascending, the latest first;
    versions keep the server's order (newest first) among themselves."""
    listed = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    out = [(v["Key"], v["VersionId"], False, v["IsLatest"]) for v in listed.get("Versions", [])]
    out += [(m["Key"], m["VersionId"], True, m["IsLatest"]) for m in listed.get("DeleteMarkers", [])]
    out.sort(key=lambda v: (v[0], not v[3]))  # stable
    return out


def test_versioned_current_noncurrent_and_markers_expire(fast, fs3, fbucket):
    fs3.put_bucket_versioning(Bucket=fbucket, VersioningConfiguration={"Status": "Enabled"})
    fs3.put_bucket_lifecycle_configuration(Bucket=fbucket, LifecycleConfiguration={"Rules": [
        {"ID": "all", "Filter": {"Prefix": "cur/"}, "Status": "Enabled", "Expiration": {"Days": 1},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]})
    v1 = fs3.put_object(Bucket=fbucket, Key="cur/a", Body=b"one")["VersionId"]
    v2 = fs3.put_object(Bucket=fbucket, Key="cur/a", Body=b"two")["VersionId"]
    assert v1 != v2
    # The current version is hidden under a delete marker, the noncurrent ones are deleted a
    # day after they stopped being current, and then the marker, alone, goes too.
    wait_for("every version of cur/a gone", lambda: versions_of(fs3, fbucket, "cur/") == [])
    # The server writes its log in batches: the last line may land just after the listing is empty.
    for line in (f"lifecycle rule 'all' expired {fbucket}/cur/a",
                 f"lifecycle rule 'all' expired noncurrent {fbucket}/cur/a version {v1}",
                 f"lifecycle rule 'all' expired noncurrent {fbucket}/cur/a version {v2}",
                 f"lifecycle rule 'all' removed the expired delete marker of {fbucket}/cur/a"):
        fast.wait_log(line)


def test_newer_noncurrent_versions_are_kept(fs3, fbucket):
    fs3.put_bucket_versioning(Bucket=fbucket, VersioningConfiguration={"Status": "Enabled"})
    fs3.put_bucket_lifecycle_configuration(Bucket=fbucket, LifecycleConfiguration={"Rules": [
        {"ID": "keep2", "Filter": {"Prefix": "k/"}, "Status": "Enabled",
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 2}}]})
    ids = [fs3.put_object(Bucket=fbucket, Key="k/doc", Body=f"v{i}".encode())["VersionId"] for i in range(5)]
    wait_for("two oldest versions gone", lambda: len(versions_of(fs3, fbucket, "k/")) == 3)
    assert [v[1] for v in versions_of(fs3, fbucket, "k/")] == ids[:1:-1]  # v4 (current), v3, v2
    for i in (2, 3, 4):
        assert fs3.get_object(Bucket=fbucket, Key="k/doc", VersionId=ids[i])["Body"].read() == f"v{i}".encode()
    assert fs3.get_object(Bucket=fbucket, Key="k/doc")["Body"].read() == b"v4"


def test_only_lone_delete_markers_are_removed(fs3, fbucket):
    fs3.put_bucket_versioning(Bucket=fbucket, VersioningConfiguration={"Status": "Enabled"})
    fs3.put_object(Bucket=fbucket, Key="dm/b-with-data", Body=b"x")
    for key in ("dm/a-lone", "dm/b-with-data", "dm/c-lone"):
        assert fs3.delete_object(Bucket=fbucket, Key=key)["DeleteMarker"] is True
    fs3.put_bucket_lifecycle_configuration(Bucket=fbucket, LifecycleConfiguration={"Rules": [
        {"ID": "markers", "Filter": {"Prefix": "dm/"}, "Status": "Enabled",
         "Expiration": {"ExpiredObjectDeleteMarker": True}}]})
    # Both lone markers gone means a pass went over dm/b-with-data too (it sorts between them).
    wait_for("the lone markers removed", lambda: {v[0] for v in versions_of(fs3, fbucket, "dm/")} == {"dm/b-with-data"})
    kinds = [(v[2], v[3]) for v in versions_of(fs3, fbucket, "dm/")]
    assert kinds == [(True, True), (False, False)]  # its marker (latest) and its data, both kept
