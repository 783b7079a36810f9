"""POST Object (browser form uploads) against the real server: forms from boto3's
generate_presigned_post and hand-built ones (SigV4 and SigV2), every policy condition,
the success_action_* answers, and every refusal with S3's code, nothing stored after it.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError

from postform import encode_policy, expiration, form_body, post, post_form, v2_fields, v4_fields
from s3server import ServerProcess


def stored(s3, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise


def keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def disk_files(server: ServerProcess) -> dict[str, int]:
    """Every shard file (not the registry's files, nor a cluster's control-plane journal and
    snapshot, which pysyncobj rewrites at its own pace) under the disks, with its size."""
    state = {}
    for root, _dirs, files in os.walk(server.data_dir):
        for name in files:
            path = Path(root, name)
            if "registry" in path.parts or "control" in path.parts or name.endswith((".mdb", ".lock")):
                continue
            state[str(path.relative_to(server.data_dir))] = path.stat().st_size
    return state


def message(resp) -> str:
    m = re.search(rb"<Message>([^<]*)</Message>", resp.body)
    return html.unescape(m.group(1).decode()) if m else ""


def fields_of(post_doc: dict) -> list[tuple[str, str]]:
    return list(post_doc["fields"].items())


# --- what works ----------------------------------------------------------------------------------


def test_boto3_sigv4_form_stores_the_file_with_its_metadata(server, s3, bucket):
    signer = server.client(signature_version="s3v4")
    doc = signer.generate_presigned_post(
        bucket, "photos/${filename}",
        Fields={"Content-Type": "image/png", "x-amz-meta-owner": "alice", "success_action_status": "201"},
        Conditions=[{"Content-Type": "image/png"}, ["starts-with", "$x-amz-meta-owner", ""],
                    {"success_action_status": "201"}, ["content-length-range", 1, 10 * 1024 * 1024]])
    assert doc["fields"]["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks of the file part and engine blocks
    resp = post_form(server, bucket, fields_of(doc), file=("cat.png", data))
    assert resp.status == 201, resp.text
    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    assert "<PostResponse>" in resp.text and "<Key>photos/cat.png</Key>" in resp.text
    assert f"<Bucket>{bucket}</Bucket>" in resp.text and "&quot;" + etag[1:-1] + "&quot;" in resp.text
    assert resp.headers["etag"] == etag
    assert resp.headers["location"] == f"http://127.0.0.1:{server.port}/{bucket}/photos/cat.png"
    got = s3.get_object(Bucket=bucket, Key="photos/cat.png")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/png"
    assert got["Metadata"] == {"owner": "alice"}
    assert got["ETag"] == etag


def test_boto3_sigv2_form_answers_204_by_default(server, s3, bucket):
    doc = s3.generate_presigned_post(bucket, "plain.txt")
    assert "signature" in doc["fields"] and "AWSAccessKeyId" in doc["fields"]
    resp = post_form(server, bucket, fields_of(doc), file=("ignored-name.txt", b"hello"))
    assert (resp.status, resp.body) == (204, b"")
    assert resp.headers["etag"] == '"' + hashlib.md5(b"hello").hexdigest() + '"'
    assert stored(s3, bucket, "plain.txt") == b"hello"
    assert s3.head_object(Bucket=bucket, Key="plain.txt")["ContentType"] == "binary/octet-stream"


@pytest.mark.parametrize("status, expected", [("200", 200), ("204", 204), ("404", 204), ("", 204)])
def test_success_action_status(server, s3, bucket, status, expected):
    fields = {"key": "s", "success_action_status": status,
              **v4_fields([{"bucket": bucket}, {"key": "s"}, {"success_action_status": status}])}
    resp = post_form(server, bucket, fields)
    assert (resp.status, resp.body) == (expected, b"")
    assert stored(s3, bucket, "s") == b"form data"


def test_success_action_redirect(server, s3, bucket):
    target = "https://app.example/done?from=form"
    fields = {"key": "r/${filename}", "success_action_redirect": target,
              **v4_fields([{"bucket": bucket}, ["starts-with", "$key", "r/"],
                           ["starts-with", "$success_action_redirect", "https://app.example/"]])}
    resp = post_form(server, bucket, fields, file=("a b.txt", b"redirected"))
    assert resp.status == 303, resp.text
    location = urlsplit(resp.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "app.example", "/done")
    query = parse_qs(location.query)
    assert query == {"from": ["form"], "bucket": [bucket], "key": ["r/a b.txt"],
                     "etag": ['"' + hashlib.md5(b"redirected").hexdigest() + '"']}
    assert stored(s3, bucket, "r/a b.txt") == b"redirected"


def test_redirect_that_is_not_a_url_falls_back_to_the_status(server, s3, bucket):
    fields = {"key": "nr", "success_action_redirect": "not a url", "success_action_status": "201",
              **v4_fields([{"bucket": bucket}, {"key": "nr"}, {"success_action_redirect": "not a url"},
                           {"success_action_status": "201"}])}
    resp = post_form(server, bucket, fields)
    assert resp.status == 201 and "<Key>nr</Key>" in resp.text


def test_field_names_and_condition_operators_are_case_insensitive(server, s3, bucket):
    conditions = [{"bUcKeT": bucket}, ["StArTs-WiTh", "$KeY", "ci/"], {"CoNtEnT-TyPe": "text/plain"},
                  ["EQ", "$X-Amz-Meta-Color", "blue"]]
    signed = v2_fields(conditions)
    fields = [("KEY", "ci/one"), ("content-TYPE", "text/plain"), ("x-AMZ-meta-COLOR", "blue"),
              ("awsaccesskeyid", signed["AWSAccessKeyId"]), ("POLICY", signed["policy"]),
              ("Signature", signed["signature"])]
    resp = post_form(server, bucket, fields, file=("x", b"case"))
    assert resp.status == 204, resp.text
    head = s3.head_object(Bucket=bucket, Key="ci/one")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"color": "blue"}


def test_x_ignore_fields_and_fields_after_the_file_need_no_condition(server, s3, bucket):
    fields = {"key": "ign", "x-ignore-tracking": "123", **v4_fields([{"bucket": bucket}, {"key": "ign"}])}
    resp = post_form(server, bucket, fields, file=("f", b"ignored fields"),
                     after=[("x-amz-meta-late", "never stored"), ("key", "other")])
    assert resp.status == 204, resp.text
    assert stored(s3, bucket, "ign") == b"ignored fields"
    assert s3.head_object(Bucket=bucket, Key="ign")["Metadata"] == {}
    assert keys(s3, bucket) == ["ign"]


def test_empty_starts_with_allows_any_value_and_an_empty_file(server, s3, bucket):
    fields = {"key": "any/thing", "Cache-Control": "max-age=60",
              **v4_fields([{"bucket": bucket}, ["starts-with", "$key", ""], ["starts-with", "$Cache-Control", ""]])}
    resp = post_form(server, bucket, fields, file=("empty", b""))
    assert resp.status == 204, resp.text
    head = s3.head_object(Bucket=bucket, Key="any/thing")
    assert head["ContentLength"] == 0 and head["CacheControl"] == "max-age=60"


def test_content_length_range_bounds_are_inclusive(server, s3, bucket):
    for size in (3, 5):
        fields = {"key": f"len{size}", **v4_fields([{"bucket": bucket}, ["starts-with", "$key", "len"],
                                                    ["content-length-range", 3, 5]])}
        assert post_form(server, bucket, fields, file=("f", b"x" * size)).status == 204
    assert keys(s3, bucket) == ["len3", "len5"]


def test_virtual_host_style_post(server, s3, bucket):
    from s3server import DOMAIN

    fields = {"key": "vh", **v4_fields([{"bucket": bucket}, {"key": "vh"}])}
    body, content_type = form_body(fields, ("f", b"virtual"))
    resp = post(server, "/", body, content_type, {"Host": f"{bucket}.{DOMAIN}:{server.port}"})
    assert resp.status == 204, resp.text
    assert resp.headers["location"] == f"http://{bucket}.{DOMAIN}:{server.port}/vh"
    assert stored(s3, bucket, "vh") == b"virtual"


def test_acl_field_is_recorded_and_checked(server, s3, bucket):
    import rawhttp

    fields = {"key": "acl", "acl": "private", **v4_fields([{"bucket": bucket}, {"key": "acl"}, {"acl": "private"}])}
    assert post_form(server, bucket, fields).status == 204
    fields = {"key": "pub", "acl": "public-read",
              **v4_fields([{"bucket": bucket}, {"key": "pub"}, {"acl": "public-read"}])}
    assert post_form(server, bucket, fields, file=("f", b"for everyone")).status == 204
    grants = s3.get_object_acl(Bucket=bucket, Key="pub")["Grants"]
    assert {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
            "Permission": "READ"} in grants
    assert rawhttp.request(server, "GET", f"/{bucket}/pub", signed=False).body == b"for everyone"
    assert rawhttp.request(server, "GET", f"/{bucket}/acl", signed=False).status == 403
    fields = {"key": "acl2", "acl": "no-such-acl",
              **v4_fields([{"bucket": bucket}, {"key": "acl2"}, {"acl": "no-such-acl"}])}
    resp = post_form(server, bucket, fields)
    assert (resp.status, resp.code) == (400, "InvalidArgument")
    assert keys(s3, bucket) == ["acl", "pub"]


# --- refusals ------------------------------------------------------------------------------------


def refused(server, s3, bucket, fields, status: int, code: str, *, file=("f", b"data"), after=()) -> str:
    before = disk_files(server)
    resp = post_form(server, bucket, fields, file=file, after=after)
    assert (resp.status, resp.code) == (status, code), resp.text
    assert resp.headers["content-type"] == "application/xml"
    assert keys(s3, bucket) == []
    assert disk_files(server) == before
    return message(resp)


def test_not_multipart_is_precondition_failed(server, s3, bucket):
    resp = post(server, f"/{bucket}", b"key=a&file=b", "application/x-www-form-urlencoded")
    assert (resp.status, resp.code) == (412, "PreconditionFailed")
    assert b"<Condition>Bucket POST must be of the enclosure-type multipart/form-data</Condition>" in resp.body
    resp = post(server, f"/{bucket}", b"", None)
    assert (resp.status, resp.code) == (412, "PreconditionFailed")
    assert keys(s3, bucket) == []


@pytest.mark.parametrize("body, content_type", [
    (b"no boundary anywhere", "multipart/form-data; boundary=abc"),
    (b"--abc\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nvalue", "multipart/form-data; boundary=abc"),
    (b"--abc\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nv\r\n--abc", "multipart/form-data"),
    (b"--abc\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n\xff\xfe\r\n--abc--\r\n",
     "multipart/form-data; boundary=abc"),
], ids=["no-boundary-line", "truncated", "no-boundary-parameter", "not-utf8"])
def test_malformed_body_is_malformed_post_request(server, s3, bucket, body, content_type):
    resp = post(server, f"/{bucket}", body, content_type)
    assert (resp.status, resp.code) == (400, "MalformedPOSTRequest"), resp.text
    assert keys(s3, bucket) == []


def test_no_file_is_incorrect_number_of_files(server, s3, bucket):
    fields = {"key": "nofile", **v4_fields([{"bucket": bucket}, {"key": "nofile"}])}
    refused(server, s3, bucket, fields, 400, "IncorrectNumberOfFilesInPostRequest", file=None)


def test_missing_key_is_invalid_argument(server, s3, bucket):
    text = refused(server, s3, bucket, v4_fields([{"bucket": bucket}]), 400, "InvalidArgument")
    assert "must contain a field named 'key'" in text
    fields = {"key": "${filename}", **v4_fields([{"bucket": bucket}, ["starts-with", "$key", ""]])}
    assert "length greater than 0" in refused(server, s3, bucket, fields, 400, "InvalidArgument", file=("", b"x"))


def test_bad_signatures(server, s3, bucket):
    conditions = [{"bucket": bucket}, {"key": "sig"}]
    forged = {"key": "sig", **v4_fields(conditions, secret_key="not-the-secret")}
    refused(server, s3, bucket, forged, 403, "SignatureDoesNotMatch")
    unknown = {"key": "sig", **v4_fields(conditions, access_key="NOSUCHKEY")}
    refused(server, s3, bucket, unknown, 403, "InvalidAccessKeyId")
    v2 = {"key": "sig", **v2_fields(conditions, secret_key="not-the-secret")}
    refused(server, s3, bucket, v2, 403, "SignatureDoesNotMatch")
    tampered = {"key": "sig", **v4_fields(conditions)}
    tampered["policy"] = encode_policy({"expiration": expiration(), "conditions": [["starts-with", "$key", ""]]})
    refused(server, s3, bucket, tampered, 403, "SignatureDoesNotMatch")


def test_missing_signature_fields(server, s3, bucket):
    conditions = [{"bucket": bucket}, {"key": "m"}]
    unsigned = {"key": "m", **v4_fields(conditions, sign=False)}
    assert "x-amz-signature" in refused(server, s3, bucket, unsigned, 400, "InvalidArgument")
    no_date = {"key": "m", **v4_fields(conditions)}
    del no_date["x-amz-date"]
    assert "x-amz-date" in refused(server, s3, bucket, no_date, 400, "InvalidArgument")
    v2 = {"key": "m", **v2_fields(conditions)}
    del v2["signature"]
    assert "Signature" in refused(server, s3, bucket, v2, 400, "InvalidArgument")
    no_policy = {"key": "m", **v4_fields(conditions)}
    del no_policy["policy"]
    assert "'policy'" in refused(server, s3, bucket, no_policy, 400, "InvalidArgument")
    bad_algorithm = {"key": "m", **v4_fields(conditions)}
    bad_algorithm["x-amz-algorithm"] = "AWS4-ECDSA-P256-SHA256"
    refused(server, s3, bucket, bad_algorithm, 400, "InvalidArgument")
    bad_credential = {"key": "m", **v4_fields(conditions)}
    bad_credential["x-amz-credential"] = "just-a-key"
    refused(server, s3, bucket, bad_credential, 400, "InvalidArgument")


def test_anonymous_form_without_a_grant_is_denied(server, s3, bucket):
    refused(server, s3, bucket, {"key": "anon"}, 403, "AccessDenied")


def test_expired_policy(server, s3, bucket):
    fields = {"key": "old", **v4_fields([{"bucket": bucket}, {"key": "old"}], expires="2001-01-01T00:00:00.000Z")}
    assert refused(server, s3, bucket, fields, 403, "AccessDenied") == "Invalid according to Policy: Policy expired."


@pytest.mark.parametrize("form, conditions, failed", [
    ({"key": "k"}, [{"bucket": "another-bucket"}, {"key": "k"}], '["eq", "$bucket", "another-bucket"]'),
    ({"key": "other/k"}, [{"bucket": "{bucket}"}, ["starts-with", "$key", "user/"]],
     '["starts-with", "$key", "user/"]'),
    ({"key": "k", "x-amz-meta-a": "barclamp"}, [{"bucket": "{bucket}"}, {"key": "k"}, ["eq", "$x-amz-meta-a", ""]],
     '["eq", "$x-amz-meta-a", ""]'),
    ({"key": "k"}, [{"bucket": "{bucket}"}, {"key": "k"}, ["starts-with", "$x-amz-meta-required", "yes"]],
     '["starts-with", "$x-amz-meta-required", "yes"]'),
    ({"key": "k", "Content-Type": "text/html"}, [{"bucket": "{bucket}"}, {"key": "k"},
                                                 ["starts-with", "$Content-Type", "image/"]],
     '["starts-with", "$Content-Type", "image/"]'),
    ({"key": "K"}, [{"bucket": "{bucket}"}, {"key": "k"}], '["eq", "$key", "k"]'),
    ({"key": "k"}, [["starts-with", "$bucket", ""], {"key": "k"}], '["starts-with", "$bucket", ""]'),
], ids=["bucket", "key-prefix", "meta-eq", "absent-field", "content-type", "values-case-sensitive",
        "starts-with-on-bucket"])
def test_a_failed_condition_is_access_denied(server, s3, bucket, form, conditions, failed):
    conditions = [{k: v.replace("{bucket}", bucket) for k, v in c.items()} if isinstance(c, dict) else c
                  for c in conditions]
    text = refused(server, s3, bucket, {**form, **v4_fields(conditions)}, 403, "AccessDenied")
    assert text == f"Invalid according to Policy: Policy Condition failed: {failed}"


def test_fields_no_condition_names_are_extra_input_fields(server, s3, bucket):
    fields = {"key": "x", "x-amz-meta-sneaky": "1", "Content-Type": "text/plain",
              **v4_fields([{"bucket": bucket}, {"key": "x"}])}
    text = refused(server, s3, bucket, fields, 403, "AccessDenied")
    assert text == "Invalid according to Policy: Extra input fields: content-type, x-amz-meta-sneaky"
    # The bucket is a field too: a policy must name it.
    fields = {"key": "x", **v4_fields([{"key": "x"}])}
    assert refused(server, s3, bucket, fields, 403, "AccessDenied").endswith("Extra input fields: bucket")


@pytest.mark.parametrize("document", [
    "not json at all",
    '["a list"]',
    '{"conditions": []}',
    '{"expiration": "2099-01-01T00:00:00Z"}',
    '{"expiration": "Mon, 01 Jan 2099 00:00:00 GMT", "conditions": []}',
    '{"EXPIRATION": "2099-01-01T00:00:00Z", "conditions": []}',
    '{"expiration": "2099-01-01T00:00:00Z", "CONDITIONS": []}',
    '{"expiration": "2099-01-01T00:00:00Z", "conditions": [{}]}',
    '{"expiration": "2099-01-01T00:00:00Z", "conditions": [["content-length-range", 0]]}',
    '{"expiration": "2099-01-01T00:00:00Z", "conditions": [["content-length-range", -1, 10]]}',
    '{"expiration": "2099-01-01T00:00:00Z", "conditions": [["content-length-range", 10, 1]]}',
    '{"expiration": "2099-01-01T00:00:00Z", "conditions": [["matches", "$key", "a"]]}',
    '{"expiration": "2099-01-01T00:00:00Z", "conditions": [["eq", "key", "a"]]}',
    '{"expiration": "2099-01-01T00:00:00Z", "conditions": [{"key": 5}]}',
    '{"expiration": "2099-01-01T00:00:00Z", "conditions": "bucket"}',
], ids=["not-json", "not-object", "no-expiration", "no-conditions", "expiration-format", "EXPIRATION",
        "CONDITIONS", "empty-condition", "range-arity", "range-negative", "range-inverted", "unknown-op",
        "no-dollar", "non-string-value", "conditions-not-list"])
def test_a_malformed_policy_is_invalid_policy_document(server, s3, bucket, document):
    fields = {"key": "doc", **v4_fields([], policy=encode_policy(document))}
    refused(server, s3, bucket, fields, 400, "InvalidPolicyDocument")


def test_policy_that_is_not_base64(server, s3, bucket):
    fields = {"key": "doc", **v4_fields([], policy="%%% not base64 %%%")}
    assert "Base64" in refused(server, s3, bucket, fields, 400, "InvalidPolicyDocument")


def test_content_length_range_is_enforced_while_streaming(server, s3, bucket):
    conditions = [{"bucket": bucket}, {"key": "big"}, ["content-length-range", 10, 1024 * 1024]]
    text = refused(server, s3, bucket, {"key": "big", **v4_fields(conditions)}, 400, "EntityTooLarge",
                   file=("f", os.urandom(3 * 1024 * 1024)))
    assert "exceeds the maximum allowed size" in text
    resp = post_form(server, bucket, {"key": "big", **v4_fields(conditions)}, file=("f", b"tiny"))
    assert (resp.status, resp.code) == (400, "EntityTooSmall")
    assert b"<MinSizeAllowed>10</MinSizeAllowed>" in resp.body and b"<ProposedSize>4</ProposedSize>" in resp.body
    assert keys(s3, bucket) == []


def test_duplicate_fields_are_refused(server, s3, bucket):
    signed = v4_fields([{"bucket": bucket}, {"key": "d"}])
    fields = [("key", "d"), ("Key", "e"), *signed.items()]
    assert "'key'" in refused(server, s3, bucket, fields, 400, "InvalidArgument")


def test_fields_before_the_file_are_limited_to_20_kib(server, s3, bucket):
    fields = {"key": "big-fields", "x-ignore-padding": "p" * (21 * 1024),
              **v4_fields([{"bucket": bucket}, {"key": "big-fields"}])}
    refused(server, s3, bucket, fields, 400, "MaxPostPreDataLengthExceededError")


@pytest.mark.parametrize("name, value", [("x-amz-server-side-encryption", "AES256"),
                                         ("tagging", "<Tagging/>")])
def test_unsupported_fields_are_refused_not_ignored(server, s3, bucket, name, value):
    fields = {"key": "u", name: value, **v4_fields([{"bucket": bucket}, {"key": "u"}, {name: value}])}
    refused(server, s3, bucket, fields, 501, "NotImplemented")


def test_metadata_over_2_kib_is_refused(server, s3, bucket):
    fields = {"key": "meta", "x-amz-meta-big": "v" * 2100,
              **v4_fields([{"bucket": bucket}, {"key": "meta"}, ["starts-with", "$x-amz-meta-big", ""]])}
    refused(server, s3, bucket, fields, 400, "MetadataTooLarge")


def test_no_such_bucket(server, s3):
    fields = {"key": "k", **v4_fields([{"bucket": "no-such-bucket-post"}, {"key": "k"}])}
    resp = post_form(server, "no-such-bucket-post", fields)
    assert (resp.status, resp.code) == (404, "NoSuchBucket")
    resp = post(server, "/no-such-bucket-post", b"not a form", "text/plain")  # before the form is looked at
    assert (resp.status, resp.code) == (404, "NoSuchBucket")


def test_a_header_signature_on_the_request_does_not_replace_the_form(server, s3, bucket):
    """The form alone says who uploads: a POST signed in its headers but carrying no policy
    is an anonymous form, refused like any other without a grant."""
    import rawhttp

    body, content_type = form_body({"key": "hdr"}, ("f", b"x"))
    resp = rawhttp.request(server, "POST", f"/{bucket}", body=body, headers={"Content-Type": content_type})
    assert (resp.status, resp.code) == (403, "AccessDenied")
    assert keys(s3, bucket) == []


def test_the_connection_stays_usable_after_a_form(server, s3, bucket):
    import http.client

    fields = {"key": "ka", **v4_fields([{"bucket": bucket}, {"key": "ka"}])}
    body, content_type = form_body(fields, ("f", b"keep-alive"), after=[("trailing", "t" * 100)])
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for _ in range(2):
            conn.request("POST", f"/{bucket}", body=body, headers={"Content-Type": content_type})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 204
            assert resp.getheader("Connection") != "close"
    finally:
        conn.close()
    assert stored(s3, bucket, "ka") == b"keep-alive"


# --- who may upload ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users(server, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Two users made with ``buckets-admin``: one ``readwrite``, one ``readonly``."""
    import subprocess
    import uuid

    from s3server import ROOT_PASSWORD, ROOT_USER
    from serverproc import BIN

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKETS_", "AWS_"))}
    env["BUCKETS_CLIENT_CONFIG"] = str(tmp_path_factory.mktemp("admin") / "config.json")

    def admin(*args: str) -> None:
        done = subprocess.run([str(BIN / "buckets-admin"), *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr

    admin("alias", "set", "srv", server.endpoint, ROOT_USER, ROOT_PASSWORD)
    made = {}
    for role, policy in (("writer", "readwrite"), ("reader", "readonly")):
        name, secret = f"post-{role}-{uuid.uuid4().hex[:8]}", "secret-" + uuid.uuid4().hex
        admin("user", "add", "srv", name, secret, "--policy", policy)
        made[role] = (name, secret)
    return made


def user_arn(access_key: str) -> str:
    from buckets.iam.identity import account_id

    return f"arn:aws:iam::{account_id(access_key)}:user/{access_key}"


def test_the_forms_signer_is_authorized_for_put_object(server, s3, bucket, users):
    import json

    (writer, writer_secret), (reader, reader_secret) = users["writer"], users["reader"]

    def form(user: str, secret: str, key: str) -> dict[str, str]:
        return {"key": key, **v4_fields([{"bucket": bucket}, {"key": key}], access_key=user, secret_key=secret)}

    # Another user's bucket: no grant, no upload (the user's own readwrite policy is not enough).
    refused(server, s3, bucket, form(writer, writer_secret, "w1"), 403, "AccessDenied")
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": [user_arn(writer), user_arn(reader)]},
         "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    assert post_form(server, bucket, form(writer, writer_secret, "w2")).status == 204
    assert s3.get_object_acl(Bucket=bucket, Key="w2")["Owner"]["DisplayName"] == writer  # the signer owns it
    # The bucket grants it, but a readonly user's own policy does not allow writing.
    resp = post_form(server, bucket, form(reader, reader_secret, "r1"))
    assert (resp.status, resp.code) == (403, "AccessDenied")
    assert keys(s3, bucket) == ["w2"]


def test_an_anonymous_form_where_a_bucket_policy_allows_it(server, s3, bucket):
    """An unsigned form is anonymous; its ``acl`` field is the ``s3:x-amz-acl`` condition key."""
    import json

    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/inbox/*",
         "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}}]}))
    resp = post_form(server, bucket, {"key": "inbox/a", "acl": "bucket-owner-full-control"}, file=("a", b"anon"))
    assert resp.status == 204, resp.text
    for fields in ({"key": "inbox/b", "acl": "private"}, {"key": "inbox/c"},
                   {"key": "elsewhere/d", "acl": "bucket-owner-full-control"}):
        resp = post_form(server, bucket, fields)
        assert (resp.status, resp.code) == (403, "AccessDenied"), fields
    assert keys(s3, bucket) == ["inbox/a"]
    assert stored(s3, bucket, "inbox/a") == b"anon"
