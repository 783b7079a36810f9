"""Table-driven cases of the pure parts of browser uploads and CORS: POST policy
documents and conditions (``buckets.s3.postpolicy``) and CORS rule matching
(``buckets.s3.corsrules``). The HTTP behaviour is in tests/integration."""

from __future__ import annotations

import base64
import json
import time

import pytest

from buckets.errors import AccessDenied
from buckets.s3 import corsrules, postpolicy


def encoded(doc: object) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


FUTURE = "2099-01-01T00:00:00.000Z"


# --- policy documents ----------------------------------------------------------------------------


def test_parse_collects_conditions_and_ranges():
    policy = postpolicy.parse_policy(encoded({"expiration": FUTURE, "conditions": [
        {"Bucket": "b", "acl": "private"}, ["STARTS-WITH", "$Key", "u/"], ["eq", "$x-amz-meta-a", "1"],
        ["content-length-range", 10, 100], ["content-length-range", "20", "200"]]}))
    assert [(c.op, c.name, c.value) for c in policy.conditions] == [
        ("eq", "bucket", "b"), ("eq", "acl", "private"), ("starts-with", "key", "u/"), ("eq", "x-amz-meta-a", "1")]
    assert policy.length_range() == (20, 100)
    assert policy.expiration.year == 2099


@pytest.mark.parametrize("expiration", ["2099-01-01T00:00:00Z", "2099-01-01T00:00:00.123Z",
                                        "2099-01-01T00:00:00.123456789Z"])
def test_expiration_forms(expiration):
    assert postpolicy.parse_policy(encoded({"expiration": expiration, "conditions": []})).expiration.year == 2099


@pytest.mark.parametrize("expiration", ["2099-01-01", "2099-13-01T00:00:00Z", "2099-01-01T00:00:00+01:00",
                                        "Fri, 01 Jan 2099 00:00:00 GMT", 4102444800, None, "٢٠٩٩-01-01T00:00:00Z"])
def test_bad_expirations(expiration):
    with pytest.raises(postpolicy.InvalidPolicyDocument):
        postpolicy.parse_policy(encoded({"expiration": expiration, "conditions": []}))


CHECK_CASES = [
    # (conditions, form values, expected failure text or None)
    ([{"bucket": "b"}, {"key": "k"}], {"bucket": "b", "key": "k"}, None),
    ([{"bucket": "b"}, ["starts-with", "$key", ""]], {"bucket": "b", "key": "anything"}, None),
    ([{"bucket": "b"}, {"key": "k"}], {"bucket": "b", "key": "K"}, 'Policy Condition failed: ["eq", "$key", "k"]'),
    ([{"bucket": "b"}, {"key": "k"}], {"bucket": "b", "key": "k", "x-amz-meta-a": "1"},
     "Extra input fields: x-amz-meta-a"),
    ([{"key": "k"}], {"bucket": "b", "key": "k"}, "Extra input fields: bucket"),
    ([{"bucket": "b"}, {"key": "k"}], {"bucket": "b", "key": "k", "policy": "p", "x-amz-signature": "s",
                                       "signature": "s", "awsaccesskeyid": "a", "x-ignore-x": "1"}, None),
    ([{"bucket": "b"}, {"key": "k"}, ["starts-with", "$x-amz-credential", ""]],
     {"bucket": "b", "key": "k", "x-amz-credential": "c"}, "Policy Condition failed"),
    ([{"bucket": "b"}, {"key": "k"}, ["starts-with", "$x-amz-meta-m", "v"]],
     {"bucket": "b", "key": "k", "x-amz-meta-m": "value"}, None),
    ([{"bucket": "b"}, {"key": "k"}, ["starts-with", "$x-amz-storage-class", ""]],
     {"bucket": "b", "key": "k", "x-amz-storage-class": "STANDARD"}, "Policy Condition failed"),
    ([{"bucket": "b"}, {"key": "k"}, ["eq", "$x-amz-meta-absent", ""]], {"bucket": "b", "key": "k"}, None),
]


@pytest.mark.parametrize("conditions, values, failure", CHECK_CASES)
def test_check_policy(conditions, values, failure):
    policy = postpolicy.parse_policy(encoded({"expiration": FUTURE, "conditions": conditions}))
    if failure is None:
        postpolicy.check_policy(policy, values, time.time())
        return
    with pytest.raises(AccessDenied) as exc:
        postpolicy.check_policy(policy, values, time.time())
    assert failure in exc.value.message


def test_expired_policy():
    policy = postpolicy.parse_policy(encoded({"expiration": "2001-01-01T00:00:00Z", "conditions": []}))
    with pytest.raises(AccessDenied, match="Policy expired"):
        postpolicy.check_policy(policy, {}, time.time())


# --- CORS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern, value, matches", [
    ("*", "anything", True), ("*", "", True), ("http://a.example", "http://a.example", True),
    ("http://a.example", "http://A.example", False), ("http://*.example", "http://x.y.example", True),
    ("http://*.example", "http://.example", True), ("http://*.example", "http://example", False),
    ("start*end", "startend", True), ("start*end", "0startend", False), ("ab*ba", "aba", False),
])
def test_wildcard_match(pattern, value, matches):
    assert corsrules.wildcard_match(pattern, value) is matches


RULES = [
    {"origins": ["https://app.example"], "methods": ["PUT", "GET"], "headers": ["Content-Type", "x-amz-*"]},
    {"origins": ["*"], "methods": ["GET"]},
]


@pytest.mark.parametrize("origin, method, headers, rule_index", [
    ("https://app.example", "PUT", [], 0),
    ("https://app.example", "PUT", ["content-type", "x-amz-date"], 0),
    ("https://app.example", "PUT", ["authorization"], None),
    ("https://app.example", "GET", ["authorization"], None),
    ("https://app.example", "GET", [], 0),
    ("https://other.example", "GET", [], 1),
    ("https://other.example", "PUT", [], None),
    ("https://other.example", "GET", ["x-amz-date"], None),
    ("https://app.example", "get", [], None),
])
def test_find_rule(origin, method, headers, rule_index):
    found = corsrules.find_rule(RULES, origin, method, headers)
    assert found is (None if rule_index is None else RULES[rule_index])


def test_rule_headers():
    out = corsrules.rule_headers({"origins": ["*"], "methods": ["GET", "HEAD"], "expose": ["ETag"], "max_age": 0},
                                 "https://x.example", allow_headers=["x-amz-date"])
    assert out == {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, HEAD",
                   "Access-Control-Allow-Headers": "x-amz-date", "Access-Control-Expose-Headers": "ETag",
                   "Access-Control-Max-Age": "0", "Vary": corsrules.VARY}
    out = corsrules.rule_headers({"origins": ["https://*.x.example"], "methods": ["GET"]}, "https://a.x.example")
    assert out["Access-Control-Allow-Origin"] == "https://a.x.example"
    assert out["Access-Control-Allow-Credentials"] == "true"


def test_configuration_round_trip():
    body = (b"<CORSConfiguration><CORSRule><ID>r</ID><AllowedOrigin>*</AllowedOrigin>"
            b"<AllowedMethod>GET</AllowedMethod><AllowedHeader>*</AllowedHeader>"
            b"<ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>30</MaxAgeSeconds></CORSRule></CORSConfiguration>")
    rules = corsrules.parse_configuration(body)
    assert rules == [{"origins": ["*"], "methods": ["GET"], "headers": ["*"], "expose": ["ETag"],
                      "max_age": 30, "id": "r"}]
    assert corsrules.parse_configuration(corsrules.configuration_xml(rules)) == rules
