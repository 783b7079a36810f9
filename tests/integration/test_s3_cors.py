"""Bucket CORS against the real server: Put/Get/DeleteBucketCors with S3's validation,
preflight OPTIONS answered from the rules in order, and the CORS headers on actual
responses (errors included) when the Origin matches a rule.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re

import pytest
from botocore.exceptions import ClientError

import rawhttp
from s3server import error_of, new_bucket_name, start_server, stop_server

VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"


def put_cors_xml(server, bucket: str, xml: str | bytes, *, md5: bool | str = True) -> rawhttp.RawResponse:
    body = xml.encode() if isinstance(xml, str) else xml
    headers = {}
    if md5 is True:
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    elif md5:
        headers["Content-MD5"] = md5
    return rawhttp.request(server, "PUT", f"/{bucket}", query="cors", body=body, headers=headers)


def rule_xml(origins=("http://a.example",), methods=("GET",), extra: str = "") -> str:
    return ("<CORSRule>" + "".join(f"<AllowedOrigin>{o}</AllowedOrigin>" for o in origins)
            + "".join(f"<AllowedMethod>{m}</AllowedMethod>" for m in methods) + extra + "</CORSRule>")


def config_xml(*rules: str) -> str:
    return '<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' + "".join(rules) + \
        "</CORSConfiguration>"


def preflight(server, path: str, origin: str | None, method: str | None, headers: str | None = None,
              query: str = "") -> rawhttp.RawResponse:
    hdrs = {}
    if origin is not None:
        hdrs["Origin"] = origin
    if method is not None:
        hdrs["Access-Control-Request-Method"] = method
    if headers is not None:
        hdrs["Access-Control-Request-Headers"] = headers
    return rawhttp.request(server, "OPTIONS", path, query=query, headers=hdrs, signed=False)


def message(resp: rawhttp.RawResponse) -> str:
    m = re.search(rb"<Message>([^<]*)</Message>", resp.body)
    return html.unescape(m.group(1).decode()) if m else ""


RULES = [
    {"AllowedMethods": ["GET"], "AllowedOrigins": ["*suffix"]},
    {"AllowedMethods": ["GET"], "AllowedOrigins": ["start*end"]},
    {"AllowedMethods": ["GET"], "AllowedOrigins": ["prefix*"]},
    {"AllowedMethods": ["PUT"], "AllowedOrigins": ["*.put"]},
]


# --- the configuration ---------------------------------------------------------------------------


def test_put_get_delete_round_trip(s3, bucket):
    rules = [{"ID": "uploads", "AllowedHeaders": ["*"], "AllowedMethods": ["PUT", "POST"],
              "AllowedOrigins": ["https://app.example", "https://*.app.example"],
              "ExposeHeaders": ["ETag", "x-amz-request-id"], "MaxAgeSeconds": 3000},
             {"AllowedMethods": ["GET", "HEAD"], "AllowedOrigins": ["*"]}]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == rules
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert error_of(exc) == ("NoSuchCORSConfiguration", 404)
    s3.delete_bucket_cors(Bucket=bucket)  # deleting none is fine, as in S3


def test_put_replaces_the_whole_configuration(s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES[:1]})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES[:1]


def test_no_configuration_and_no_bucket(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert error_of(exc) == ("NoSuchCORSConfiguration", 404)
    assert exc.value.response["Error"]["BucketName"] == bucket
    for call in (s3.get_bucket_cors, s3.delete_bucket_cors):
        with pytest.raises(ClientError) as exc:
            call(Bucket="no-such-bucket-cors")
        assert error_of(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_cors(Bucket="no-such-bucket-cors", CORSConfiguration={"CORSRules": RULES})
    assert error_of(exc) == ("NoSuchBucket", 404)


@pytest.mark.parametrize("xml, code, text", [
    (config_xml(), "MalformedXML", ""),
    (config_xml(rule_xml(methods=())), "MalformedXML", "at least one origin and one method"),
    (config_xml(rule_xml(origins=())), "MalformedXML", "at least one origin and one method"),
    (config_xml(rule_xml(methods=("PATCH",))), "InvalidRequest", "Unsupported method is PATCH"),
    (config_xml(rule_xml(methods=("get",))), "InvalidRequest", "Unsupported method is get"),
    (config_xml(rule_xml(origins=("http://*.*.example",))), "InvalidRequest",
     'AllowedOrigin "http://*.*.example" can not have more than one wildcard.'),
    (config_xml(rule_xml(extra="<AllowedHeader>x-*-*</AllowedHeader>")), "InvalidRequest",
     'AllowedHeader "x-*-*" can not have more than one wildcard.'),
    (config_xml(rule_xml(extra="<ExposeHeader>x-amz-*</ExposeHeader>")), "InvalidRequest", "wildcard"),
    (config_xml(rule_xml(extra="<ExposeHeader>bad header</ExposeHeader>")), "InvalidRequest", "invalid character"),
    (config_xml(rule_xml(extra="<MaxAgeSeconds>soon</MaxAgeSeconds>")), "MalformedXML", "MaxAgeSeconds"),
    (config_xml(rule_xml(extra="<MaxAgeSeconds>-1</MaxAgeSeconds>")), "MalformedXML", "MaxAgeSeconds"),
    (config_xml(rule_xml(extra="<MaxAgeSeconds>1</MaxAgeSeconds><MaxAgeSeconds>2</MaxAgeSeconds>")),
     "MalformedXML", ""),
    (config_xml(rule_xml(extra="<ID>" + "i" * 256 + "</ID>")), "InvalidRequest", "ID"),
    (config_xml(rule_xml(extra="<AllowedFruit>apple</AllowedFruit>")), "MalformedXML", ""),
    (config_xml(rule_xml(origins=("",))), "MalformedXML", ""),
    (config_xml(*[rule_xml()] * 101), "InvalidRequest", "100 rules"),
    ("<CORSConfiguration><CORSRule>", "MalformedXML", ""),
    ("<LifecycleConfiguration/>", "MalformedXML", ""),
], ids=["no-rule", "no-method", "no-origin", "bad-method", "lower-case-method", "two-origin-wildcards",
        "two-header-wildcards", "expose-wildcard", "expose-bad-char", "max-age-text", "max-age-negative",
        "two-max-ages", "long-id", "unknown-element", "empty-origin", "101-rules", "broken-xml", "wrong-root"])
def test_invalid_configurations_are_refused(server, s3, bucket, xml, code, text):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES[:1]})
    resp = put_cors_xml(server, bucket, xml)
    assert (resp.status, resp.code) == (400, code), resp.text
    assert text in message(resp)
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES[:1]


def test_one_hundred_rules_are_accepted(server, s3, bucket):
    resp = put_cors_xml(server, bucket, config_xml(*[rule_xml()] * 100))
    assert resp.status == 200, resp.text
    assert len(s3.get_bucket_cors(Bucket=bucket)["CORSRules"]) == 100


def test_integrity_check_is_required(server, s3, bucket):
    xml = config_xml(rule_xml())
    resp = put_cors_xml(server, bucket, xml, md5=False)
    assert (resp.status, resp.code) == (400, "InvalidRequest")
    resp = put_cors_xml(server, bucket, xml, md5=base64.b64encode(hashlib.md5(b"other").digest()).decode())
    assert (resp.status, resp.code) == (400, "BadDigest")
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert error_of(exc) == ("NoSuchCORSConfiguration", 404)


def test_configuration_survives_a_restart(tmp_path):
    srv = start_server(tmp_path)
    try:
        client = srv.client()
        name = new_bucket_name()
        client.create_bucket(Bucket=name)
        client.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": RULES})
    finally:
        stop_server(srv)
    srv = start_server(tmp_path)
    try:
        assert srv.client().get_bucket_cors(Bucket=name)["CORSRules"] == RULES
        assert preflight(srv, f"/{name}/k", "a.suffix", "GET").status == 200
    finally:
        stop_server(srv)
    assert "Traceback" not in srv.log_text()


# --- preflight -----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin, method, allowed", [
    ("foo.suffix", "GET", True), ("foo.bar", "GET", False), ("foo.suffix.get", "GET", False),
    ("startend", "GET", True), ("start1end", "GET", True), ("start12end", "GET", True),
    ("0start12end", "GET", False), ("prefix", "GET", True), ("prefix.suffix", "GET", True),
    ("bla.prefix", "GET", False), ("foo.put", "GET", False), ("foo.put", "PUT", True),
    ("foo.suffix", "PUT", False), ("FOO.suffix", "GET", True), ("foo.SUFFIX", "GET", False),
])
def test_preflight_matches_origins_and_methods(server, s3, bucket, origin, method, allowed):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    resp = preflight(server, f"/{bucket}/some/key", origin, method)
    if allowed:
        assert resp.status == 200, resp.text
        assert resp.headers["access-control-allow-origin"] == origin
        assert resp.headers["access-control-allow-methods"] == method
        assert resp.headers["access-control-allow-credentials"] == "true"
        assert resp.headers["vary"] == VARY
        assert resp.body == b""
    else:
        assert (resp.status, resp.code) == (403, "AccessForbidden"), resp.text
        assert message(resp).startswith("CORSResponse: This CORS request is not allowed.")
        assert b"<ResourceType>OBJECT</ResourceType>" in resp.body
        assert "access-control-allow-origin" not in resp.headers


def test_preflight_first_matching_rule_wins_and_headers_must_be_allowed(server, s3, bucket):
    rules = [{"ID": "narrow", "AllowedOrigins": ["https://app.example"], "AllowedMethods": ["PUT", "GET"],
              "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
             {"ID": "wide", "AllowedOrigins": ["*"], "AllowedMethods": ["PUT", "DELETE"], "AllowedHeaders": ["*"]}]
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    resp = preflight(server, f"/{bucket}/k", "https://app.example", "PUT", "Content-Type, X-Amz-Date")
    assert resp.status == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == "https://app.example"
    assert resp.headers["access-control-allow-credentials"] == "true"
    assert resp.headers["access-control-allow-methods"] == "PUT, GET"
    assert resp.headers["access-control-allow-headers"] == "content-type, x-amz-date"
    assert resp.headers["access-control-expose-headers"] == "ETag"
    assert resp.headers["access-control-max-age"] == "600"
    # A header the first rule does not allow: the second (wildcard) rule answers.
    resp = preflight(server, f"/{bucket}/k", "https://app.example", "PUT", "authorization")
    assert resp.status == 200
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in resp.headers
    assert resp.headers["access-control-allow-methods"] == "PUT, DELETE"
    assert resp.headers["access-control-allow-headers"] == "authorization"
    assert "access-control-max-age" not in resp.headers
    # GET with that header: no rule allows both.
    resp = preflight(server, f"/{bucket}/k", "https://app.example", "GET", "authorization")
    assert (resp.status, resp.code) == (403, "AccessForbidden")
    # Bucket-level preflight.
    resp = preflight(server, f"/{bucket}", "https://other.example", "DELETE")
    assert resp.status == 200 and resp.headers["access-control-allow-origin"] == "*"


def test_preflight_needs_origin_and_method(server, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    resp = preflight(server, f"/{bucket}/k", None, "GET")
    assert (resp.status, resp.code) == (400, "BadRequest")
    assert message(resp) == "Insufficient information. Origin request header needed."
    resp = preflight(server, f"/{bucket}/k", "foo.suffix", None)
    assert (resp.status, resp.code) == (400, "BadRequest")
    assert message(resp) == "Invalid Access-Control-Request-Method: null"
    resp = preflight(server, f"/{bucket}/k", "foo.suffix", "PATCH")
    assert (resp.status, resp.code) == (400, "BadRequest")


def test_preflight_without_configuration_or_bucket(server, s3, bucket):
    resp = preflight(server, f"/{bucket}", "https://app.example", "GET")
    assert (resp.status, resp.code) == (403, "AccessForbidden")
    assert message(resp) == "CORSResponse: CORS is not enabled for this bucket."
    assert b"<ResourceType>BUCKET</ResourceType>" in resp.body and b"<Method>GET</Method>" in resp.body
    resp = preflight(server, "/no-such-bucket-cors/k", "https://app.example", "GET")
    assert (resp.status, resp.code) == (404, "NoSuchBucket")


def test_preflight_of_a_presigned_url_is_not_checked_as_a_signature(server, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://page.example"], "AllowedMethods": ["PUT"], "AllowedHeaders": ["content-type"]}]})
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=300)
    path, _, query = url.partition("?")
    path = path.split(f"{server.port}", 1)[1]
    resp = preflight(server, path, "http://page.example", "PUT", "content-type", query=query)
    assert resp.status == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == "http://page.example"


# --- actual responses ----------------------------------------------------------------------------


def test_actual_responses_carry_the_headers_of_a_matching_rule(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"body")
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["https://app.example"], "AllowedMethods": ["GET", "PUT"],
         "ExposeHeaders": ["ETag", "x-amz-meta-a"], "MaxAgeSeconds": 60},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]}]})
    origin = {"Origin": "https://app.example"}
    got = rawhttp.request(server, "GET", f"/{bucket}/k", headers=origin)
    assert (got.status, got.body) == (200, b"body")
    assert got.headers["access-control-allow-origin"] == "https://app.example"
    assert got.headers["access-control-allow-credentials"] == "true"
    assert got.headers["access-control-allow-methods"] == "GET, PUT"
    assert got.headers["access-control-expose-headers"] == "ETag, x-amz-meta-a"
    assert got.headers["vary"] == VARY
    # An error answer carries them too (the browser must be able to read it).
    missing = rawhttp.request(server, "GET", f"/{bucket}/missing", headers=origin)
    assert (missing.status, missing.code) == (404, "NoSuchKey")
    assert missing.headers["access-control-allow-origin"] == "https://app.example"
    put = rawhttp.request(server, "PUT", f"/{bucket}/k2", body=b"x", headers=origin)
    assert put.status == 200 and put.headers["access-control-allow-origin"] == "https://app.example"
    # HEAD is allowed only by the wildcard rule.
    head = rawhttp.request(server, "HEAD", f"/{bucket}/k", headers=origin)
    assert head.status == 200 and head.headers["access-control-allow-origin"] == "*"
    # No rule allows DELETE: no CORS headers, but the answer still varies by Origin.
    deleted = rawhttp.request(server, "DELETE", f"/{bucket}/k2", headers=origin)
    assert deleted.status == 204 and "access-control-allow-origin" not in deleted.headers
    assert deleted.headers["vary"] == VARY
    # An origin no rule names, and no Origin at all.
    other = rawhttp.request(server, "GET", f"/{bucket}/k", headers={"Origin": "https://evil.example"})
    assert other.status == 200 and "access-control-allow-origin" not in other.headers
    plain = rawhttp.request(server, "GET", f"/{bucket}/k")
    assert "access-control-allow-origin" not in plain.headers and "vary" not in plain.headers


def test_no_headers_once_the_configuration_is_deleted(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"body")
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]})
    got = rawhttp.request(server, "GET", f"/{bucket}/k", headers={"Origin": "https://a.example"})
    assert got.headers["access-control-allow-origin"] == "*"
    s3.delete_bucket_cors(Bucket=bucket)
    got = rawhttp.request(server, "GET", f"/{bucket}/k", headers={"Origin": "https://a.example"})
    assert "access-control-allow-origin" not in got.headers
    assert preflight(server, f"/{bucket}/k", "https://a.example", "GET").status == 403


def test_a_post_form_answer_carries_the_cors_headers(server, s3, bucket):
    from postform import post_form, v4_fields

    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://page.example"], "AllowedMethods": ["POST"], "ExposeHeaders": ["ETag"]}]})
    fields = {"key": "from-page", **v4_fields([{"bucket": bucket}, {"key": "from-page"}])}
    resp = post_form(server, bucket, fields, headers={"Origin": "http://page.example"})
    assert resp.status == 204, resp.text
    assert resp.headers["access-control-allow-origin"] == "http://page.example"
    assert resp.headers["access-control-expose-headers"] == "ETag"
