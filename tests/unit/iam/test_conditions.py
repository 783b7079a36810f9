"""Condition operators of the policy language (buckets.iam.conditions).

One table, HOLDS: (condition block, the request's context, whether it holds). It covers
each operator family with the key present and absent, ``...IfExists``,
``ForAllValues:``/``ForAnyValue:``, negated operators on absent keys, Null, Bool, IP
addresses and CIDRs (v4 and v6), dates (ISO 8601 and epoch seconds) and numbers. Then
``check_block``: what a valid block becomes, and what it refuses.
"""

from __future__ import annotations

import base64

import pytest

from buckets.iam.conditions import ConditionError, check_block, glob_match, holds, parse_operator

NOW_ISO = "2026-06-15T12:00:00Z"
NOW_EPOCH = "1781524800"  # the same instant


def ctx(**values: object) -> dict[str, list[str]]:
    """A request context: ``ctx(aws__sourceip="10.1.2.3")`` -> {"aws:sourceip": ["10.1.2.3"]}."""
    out = {}
    for name, value in values.items():
        key = name.replace("__", ":").replace("_", "-")
        out[key.lower()] = list(value) if isinstance(value, (list, tuple)) else [str(value)]
    return out


NONE = ctx()

HOLDS = [
    # --- strings ----------------------------------------------------------------------------
    ("StringEquals-match", {"StringEquals": {"s3:prefix": "docs/"}}, ctx(s3__prefix="docs/"), True),
    ("StringEquals-any-of-values", {"StringEquals": {"s3:prefix": ["a/", "docs/"]}}, ctx(s3__prefix="docs/"), True),
    ("StringEquals-mismatch", {"StringEquals": {"s3:prefix": "docs/"}}, ctx(s3__prefix="Docs/"), False),
    ("StringEquals-absent", {"StringEquals": {"s3:prefix": "docs/"}}, NONE, False),
    ("StringEquals-empty-value-absent", {"StringEquals": {"s3:prefix": ""}}, NONE, False),
    ("StringEquals-key-case-insensitive", {"StringEquals": {"S3:Prefix": "docs/"}}, ctx(s3__prefix="docs/"), True),
    ("StringNotEquals-match", {"StringNotEquals": {"s3:prefix": "docs/"}}, ctx(s3__prefix="docs/"), False),
    ("StringNotEquals-mismatch", {"StringNotEquals": {"s3:prefix": "docs/"}}, ctx(s3__prefix="img/"), True),
    ("StringNotEquals-absent", {"StringNotEquals": {"s3:prefix": "docs/"}}, NONE, True),
    ("StringNotEquals-none-of-values", {"StringNotEquals": {"s3:prefix": ["a/", "b/"]}}, ctx(s3__prefix="b/"),
     False),
    ("StringEqualsIgnoreCase-match", {"StringEqualsIgnoreCase": {"aws:username": "ALICE"}},
     ctx(aws__username="alice"), True),
    ("StringEqualsIgnoreCase-absent", {"StringEqualsIgnoreCase": {"aws:username": "ALICE"}}, NONE, False),
    ("StringNotEqualsIgnoreCase-match", {"StringNotEqualsIgnoreCase": {"aws:username": "ALICE"}},
     ctx(aws__username="alice"), False),
    ("StringNotEqualsIgnoreCase-absent", {"StringNotEqualsIgnoreCase": {"aws:username": "ALICE"}}, NONE, True),
    ("StringLike-star", {"StringLike": {"aws:referer": "https://*.example.com/*"}},
     ctx(aws__referer="https://www.example.com/page"), True),
    ("StringLike-star-mismatch", {"StringLike": {"aws:referer": "https://*.example.com/*"}},
     ctx(aws__referer="https://www.example.org/page"), False),
    ("StringLike-question-mark", {"StringLike": {"s3:prefix": "v?/"}}, ctx(s3__prefix="v1/"), True),
    ("StringLike-question-mark-one-char", {"StringLike": {"s3:prefix": "v?/"}}, ctx(s3__prefix="v10/"), False),
    ("StringLike-case-sensitive", {"StringLike": {"s3:prefix": "docs/*"}}, ctx(s3__prefix="DOCS/a"), False),
    ("StringLike-regex-chars-literal", {"StringLike": {"s3:prefix": "a.b[1]+"}}, ctx(s3__prefix="a.b[1]+"), True),
    ("StringLike-dot-not-any", {"StringLike": {"s3:prefix": "a.b"}}, ctx(s3__prefix="axb"), False),
    ("StringLike-absent", {"StringLike": {"s3:prefix": "*"}}, NONE, False),
    ("StringNotLike-match", {"StringNotLike": {"s3:prefix": "private/*"}}, ctx(s3__prefix="private/x"), False),
    ("StringNotLike-mismatch", {"StringNotLike": {"s3:prefix": "private/*"}}, ctx(s3__prefix="public/x"), True),
    ("StringNotLike-absent", {"StringNotLike": {"s3:prefix": "private/*"}}, NONE, True),
    # --- IfExists ---------------------------------------------------------------------------
    ("StringEqualsIfExists-absent", {"StringEqualsIfExists": {"s3:x-amz-acl": "private"}}, NONE, True),
    ("StringEqualsIfExists-match", {"StringEqualsIfExists": {"s3:x-amz-acl": "private"}},
     ctx(s3__x_amz_acl="private"), True),
    ("StringEqualsIfExists-mismatch", {"StringEqualsIfExists": {"s3:x-amz-acl": "private"}},
     ctx(s3__x_amz_acl="public-read"), False),
    ("StringNotEqualsIfExists-absent", {"StringNotEqualsIfExists": {"s3:x-amz-acl": "public-read"}}, NONE, True),
    ("StringNotEqualsIfExists-match", {"StringNotEqualsIfExists": {"s3:x-amz-acl": "public-read"}},
     ctx(s3__x_amz_acl="public-read"), False),
    ("NumericLessThanIfExists-absent", {"NumericLessThanIfExists": {"s3:max-keys": "10"}}, NONE, True),
    ("NumericLessThanIfExists-too-big", {"NumericLessThanIfExists": {"s3:max-keys": "10"}},
     ctx(s3__max_keys="50"), False),
    ("IpAddressIfExists-absent", {"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}}, NONE, True),
    ("IpAddressIfExists-outside", {"IpAddressIfExists": {"aws:SourceIp": "10.0.0.0/8"}},
     ctx(aws__sourceip="192.168.1.1"), False),
    ("DateLessThanIfExists-absent", {"DateLessThanIfExists": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
     NONE, True),
    ("BoolIfExists-absent", {"BoolIfExists": {"aws:SecureTransport": "true"}}, NONE, True),
    # --- multi-valued keys ------------------------------------------------------------------
    ("ForAllValues-absent", {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}, NONE, True),
    ("ForAllValues-all-in", {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b", "c"]}},
     ctx(aws__tagkeys=["a", "b"]), True),
    ("ForAllValues-one-out", {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}},
     ctx(aws__tagkeys=["a", "z"]), False),
    ("ForAllValues-StringLike", {"ForAllValues:StringLike": {"aws:TagKeys": "team-*"}},
     ctx(aws__tagkeys=["team-a", "team-b"]), True),
    ("ForAllValues-StringNotEquals", {"ForAllValues:StringNotEquals": {"aws:TagKeys": ["secret"]}},
     ctx(aws__tagkeys=["a", "b"]), True),
    ("ForAllValues-StringNotEquals-one-hit", {"ForAllValues:StringNotEquals": {"aws:TagKeys": ["secret"]}},
     ctx(aws__tagkeys=["a", "secret"]), False),
    ("ForAnyValue-absent", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}, NONE, False),
    ("ForAnyValue-one-in", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}, ctx(aws__tagkeys=["z", "a"]), True),
    ("ForAnyValue-none-in", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}, ctx(aws__tagkeys=["y", "z"]), False),
    ("ForAnyValue-StringNotEquals-one-other", {"ForAnyValue:StringNotEquals": {"aws:TagKeys": ["a"]}},
     ctx(aws__tagkeys=["a", "b"]), True),
    ("ForAnyValue-StringNotEquals-all-same", {"ForAnyValue:StringNotEquals": {"aws:TagKeys": ["a"]}},
     ctx(aws__tagkeys=["a"]), False),
    ("ForAnyValue-IfExists-absent", {"ForAnyValue:StringEqualsIfExists": {"aws:TagKeys": ["a"]}}, NONE, True),
    ("unqualified-any-value-matches", {"StringEquals": {"aws:TagKeys": "b"}}, ctx(aws__tagkeys=["a", "b"]), True),
    ("unqualified-negated-no-value-may-match", {"StringNotEquals": {"aws:TagKeys": "b"}},
     ctx(aws__tagkeys=["a", "b"]), False),
    # --- AND across keys and operators, OR across values -------------------------------------
    ("and-both-hold", {"StringEquals": {"s3:prefix": "a/", "s3:delimiter": "/"}},
     ctx(s3__prefix="a/", s3__delimiter="/"), True),
    ("and-one-fails", {"StringEquals": {"s3:prefix": "a/", "s3:delimiter": "/"}},
     ctx(s3__prefix="a/", s3__delimiter="|"), False),
    ("and-one-absent", {"StringEquals": {"s3:prefix": "a/", "s3:delimiter": "/"}}, ctx(s3__prefix="a/"), False),
    ("and-across-operators", {"StringEquals": {"s3:prefix": "a/"}, "NumericLessThan": {"s3:max-keys": "100"}},
     ctx(s3__prefix="a/", s3__max_keys="1000"), False),
    ("empty-block", {}, NONE, True),
    # --- Null -------------------------------------------------------------------------------
    ("Null-true-absent", {"Null": {"aws:username": "true"}}, NONE, True),
    ("Null-true-present", {"Null": {"aws:username": "true"}}, ctx(aws__username="alice"), False),
    ("Null-false-present", {"Null": {"aws:username": "false"}}, ctx(aws__username="alice"), True),
    ("Null-false-absent", {"Null": {"aws:username": "false"}}, NONE, False),
    ("Null-true-case", {"Null": {"aws:username": "TRUE"}}, NONE, True),
    ("Null-empty-list-is-absent", {"Null": {"aws:username": "true"}}, {"aws:username": []}, True),
    # --- Bool -------------------------------------------------------------------------------
    ("Bool-true", {"Bool": {"aws:SecureTransport": "true"}}, ctx(aws__securetransport="true"), True),
    ("Bool-true-vs-false", {"Bool": {"aws:SecureTransport": "true"}}, ctx(aws__securetransport="false"), False),
    ("Bool-false", {"Bool": {"aws:SecureTransport": "false"}}, ctx(aws__securetransport="false"), True),
    ("Bool-case-insensitive", {"Bool": {"aws:SecureTransport": "True"}}, ctx(aws__securetransport="true"), True),
    ("Bool-absent", {"Bool": {"aws:SecureTransport": "false"}}, NONE, False),
    # --- IP addresses -----------------------------------------------------------------------
    ("IpAddress-v4-in", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(aws__sourceip="10.200.3.4"), True),
    ("IpAddress-v4-out", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(aws__sourceip="11.0.0.1"), False),
    ("IpAddress-v4-boundary", {"IpAddress": {"aws:SourceIp": "192.168.1.0/24"}}, ctx(aws__sourceip="192.168.1.255"),
     True),
    ("IpAddress-v4-past-boundary", {"IpAddress": {"aws:SourceIp": "192.168.1.0/24"}},
     ctx(aws__sourceip="192.168.2.0"), False),
    ("IpAddress-v4-single", {"IpAddress": {"aws:SourceIp": "127.0.0.1"}}, ctx(aws__sourceip="127.0.0.1"), True),
    ("IpAddress-v4-single-other", {"IpAddress": {"aws:SourceIp": "127.0.0.1"}}, ctx(aws__sourceip="127.0.0.2"),
     False),
    ("IpAddress-v4-host-bits-set", {"IpAddress": {"aws:SourceIp": "10.1.2.3/8"}}, ctx(aws__sourceip="10.9.9.9"), True),
    ("IpAddress-v4-any-of-list", {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "172.16.0.0/12"]}},
     ctx(aws__sourceip="172.20.0.1"), True),
    ("IpAddress-zero", {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}, ctx(aws__sourceip="8.8.8.8"), True),
    ("IpAddress-v6-in", {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, ctx(aws__sourceip="2001:db8:1::5"), True),
    ("IpAddress-v6-out", {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, ctx(aws__sourceip="2001:db9::1"), False),
    ("IpAddress-v6-single", {"IpAddress": {"aws:SourceIp": "::1"}}, ctx(aws__sourceip="::1"), True),
    ("IpAddress-v6-scope-id", {"IpAddress": {"aws:SourceIp": "fe80::/10"}}, ctx(aws__sourceip="fe80::1%eth0"), True),
    ("IpAddress-v4-caller-v6-network", {"IpAddress": {"aws:SourceIp": "2001:db8::/32"}},
     ctx(aws__sourceip="10.0.0.1"), False),
    ("IpAddress-v6-caller-v4-network", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(aws__sourceip="::1"),
     False),
    ("IpAddress-garbage-caller", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(aws__sourceip="not-an-ip"),
     False),
    ("IpAddress-absent", {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}, NONE, False),
    ("NotIpAddress-in", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(aws__sourceip="10.0.0.1"), False),
    ("NotIpAddress-out", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(aws__sourceip="192.0.2.1"), True),
    ("NotIpAddress-v6-in", {"NotIpAddress": {"aws:SourceIp": "2001:db8::/32"}}, ctx(aws__sourceip="2001:db8::1"),
     False),
    ("NotIpAddress-absent", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, NONE, True),
    # --- dates ------------------------------------------------------------------------------
    ("DateLessThan-iso", {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
     ctx(aws__currenttime=NOW_ISO), True),
    ("DateLessThan-iso-past", {"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
     ctx(aws__currenttime=NOW_ISO), False),
    ("DateLessThan-date-only", {"DateLessThan": {"aws:CurrentTime": "2030-01-01"}},
     ctx(aws__currenttime=NOW_ISO), True),
    ("DateLessThan-offset", {"DateLessThan": {"aws:CurrentTime": "2026-06-15T13:00:01+01:00"}},
     ctx(aws__currenttime=NOW_ISO), True),
    ("DateLessThan-offset-equal", {"DateLessThan": {"aws:CurrentTime": "2026-06-15T13:00:00+01:00"}},
     ctx(aws__currenttime=NOW_ISO), False),
    ("DateLessThan-epoch-policy", {"DateLessThan": {"aws:CurrentTime": str(int(NOW_EPOCH) + 1)}},
     ctx(aws__currenttime=NOW_ISO), True),
    ("DateLessThan-epoch-context", {"DateLessThan": {"aws:EpochTime": "2026-06-15T12:00:01Z"}},
     ctx(aws__epochtime=NOW_EPOCH), True),
    ("DateLessThanEquals-same-instant", {"DateLessThanEquals": {"aws:CurrentTime": NOW_EPOCH}},
     ctx(aws__currenttime=NOW_ISO), True),
    ("DateEquals-same-instant", {"DateEquals": {"aws:EpochTime": NOW_ISO}}, ctx(aws__epochtime=NOW_EPOCH), True),
    ("DateEquals-other", {"DateEquals": {"aws:EpochTime": NOW_ISO}}, ctx(aws__epochtime="0"), False),
    ("DateNotEquals-other", {"DateNotEquals": {"aws:EpochTime": NOW_ISO}}, ctx(aws__epochtime="0"), True),
    ("DateNotEquals-absent", {"DateNotEquals": {"aws:EpochTime": NOW_ISO}}, NONE, True),
    ("DateGreaterThan", {"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}},
     ctx(aws__currenttime=NOW_ISO), True),
    ("DateGreaterThan-future", {"DateGreaterThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}},
     ctx(aws__currenttime=NOW_ISO), False),
    ("DateGreaterThanEquals-same", {"DateGreaterThanEquals": {"aws:CurrentTime": NOW_ISO}},
     ctx(aws__currenttime=NOW_ISO), True),
    ("DateLessThan-unparsable-policy", {"DateLessThan": {"aws:CurrentTime": "next tuesday"}},
     ctx(aws__currenttime=NOW_ISO), False),
    ("DateLessThan-unparsable-context", {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
     ctx(aws__currenttime="yesterday"), False),
    ("DateLessThan-absent", {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}, NONE, False),
    # --- numbers ----------------------------------------------------------------------------
    ("NumericLessThan", {"NumericLessThan": {"s3:max-keys": "100"}}, ctx(s3__max_keys="10"), True),
    ("NumericLessThan-equal", {"NumericLessThan": {"s3:max-keys": "100"}}, ctx(s3__max_keys="100"), False),
    ("NumericLessThan-not-lexicographic", {"NumericLessThan": {"s3:max-keys": "100"}}, ctx(s3__max_keys="9"), True),
    ("NumericLessThanEquals-equal", {"NumericLessThanEquals": {"s3:max-keys": "100"}}, ctx(s3__max_keys="100"), True),
    ("NumericGreaterThan", {"NumericGreaterThan": {"s3:max-keys": "100"}}, ctx(s3__max_keys="101"), True),
    ("NumericGreaterThan-equal", {"NumericGreaterThan": {"s3:max-keys": "100"}}, ctx(s3__max_keys="100"), False),
    ("NumericGreaterThanEquals", {"NumericGreaterThanEquals": {"s3:max-keys": "100"}}, ctx(s3__max_keys="100"),
     True),
    ("NumericEquals", {"NumericEquals": {"s3:max-keys": "100"}}, ctx(s3__max_keys="100.0"), True),
    ("NumericEquals-other", {"NumericEquals": {"s3:max-keys": "100"}}, ctx(s3__max_keys="99"), False),
    ("NumericNotEquals", {"NumericNotEquals": {"s3:max-keys": "100"}}, ctx(s3__max_keys="99"), True),
    ("NumericNotEquals-equal", {"NumericNotEquals": {"s3:max-keys": "100"}}, ctx(s3__max_keys="100"), False),
    ("NumericNotEquals-absent", {"NumericNotEquals": {"s3:max-keys": "100"}}, NONE, True),
    ("NumericLessThan-not-a-number", {"NumericLessThan": {"s3:max-keys": "100"}}, ctx(s3__max_keys="ten"), False),
    ("NumericLessThan-absent", {"NumericLessThan": {"s3:max-keys": "100"}}, NONE, False),
    # --- ARNs and binary --------------------------------------------------------------------
    ("ArnLike", {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::logs-*"}}, ctx(aws__sourcearn="arn:aws:s3:::logs-eu"),
     True),
    ("ArnLike-mismatch", {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::logs-*"}},
     ctx(aws__sourcearn="arn:aws:s3:::data"), False),
    ("ArnEquals", {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::logs"}}, ctx(aws__sourcearn="arn:aws:s3:::logs"),
     True),
    ("ArnNotEquals-absent", {"ArnNotEquals": {"aws:SourceArn": "arn:aws:s3:::logs"}}, NONE, True),
    ("ArnNotLike-match", {"ArnNotLike": {"aws:SourceArn": "arn:aws:s3:::logs*"}},
     ctx(aws__sourcearn="arn:aws:s3:::logs-x"), False),
    ("BinaryEquals", {"BinaryEquals": {"aws:UserAgent": base64.b64encode(b"agent").decode()}},
     ctx(aws__useragent="agent"), True),
    ("BinaryEquals-other", {"BinaryEquals": {"aws:UserAgent": base64.b64encode(b"agent").decode()}},
     ctx(aws__useragent="other"), False),
    ("BinaryEquals-bad-base64", {"BinaryEquals": {"aws:UserAgent": "***"}}, ctx(aws__useragent="agent"), False),
]


@pytest.mark.parametrize("block,context,expected", [h[1:] for h in HOLDS], ids=[h[0] for h in HOLDS])
def test_holds(block, context, expected):
    assert holds(check_block(block), context) is expected


def test_substitution_applies_to_policy_values():
    block = check_block({"StringLike": {"s3:prefix": "home/${aws:username}/*"}})
    sub = lambda v: v.replace("${aws:username}", "alice")  # noqa: E731 - what Statement.matches passes
    assert holds(block, ctx(s3__prefix="home/alice/docs"), sub)
    assert not holds(block, ctx(s3__prefix="home/bob/docs"), sub)
    assert not holds(block, ctx(s3__prefix="home/alice/docs"))  # without substitution: the literal text


# --------------------------------------------------------------------------------------------
# check_block: values become lists of strings; what it refuses

def test_check_block_normalises_values():
    block = check_block({"Bool": {"aws:SecureTransport": True}, "NumericLessThan": {"s3:max-keys": 10},
                         "NumericGreaterThan": {"s3:max-keys": 1.5},
                         "StringEquals": {"s3:prefix": ["a", "b"], "s3:ExistingObjectTag/color": "red"}})
    assert block == {"Bool": {"aws:SecureTransport": ["true"]}, "NumericLessThan": {"s3:max-keys": ["10"]},
                     "NumericGreaterThan": {"s3:max-keys": ["1.5"]},
                     "StringEquals": {"s3:prefix": ["a", "b"], "s3:ExistingObjectTag/color": ["red"]}}


@pytest.mark.parametrize("name,parsed", [
    ("StringEquals", ("stringequals", None, False)),
    ("StringLikeIfExists", ("stringlike", None, True)),
    ("ForAllValues:StringEquals", ("stringequals", "allvalues", False)),
    ("ForAnyValue:StringNotLikeIfExists", ("stringnotlike", "anyvalue", True)),
    ("Null", ("null", None, False)),
    ("IpAddress", ("ipaddress", None, False)),
])
def test_parse_operator(name, parsed):
    assert parse_operator(name) == parsed


REFUSED = [
    ("not-an-object", "IpAddress", "Condition must be an object"),
    ("unknown-operator", {"StringMatches": {"s3:prefix": "a"}}, "Invalid Condition type : StringMatches"),
    ("unknown-qualifier", {"ForEach:StringEquals": {"s3:prefix": "a"}},
     "Invalid Condition type : ForEach:StringEquals"),
    ("if-exists-alone", {"IfExists": {"s3:prefix": "a"}}, "Invalid Condition type : IfExists"),
    ("null-if-exists", {"NullIfExists": {"s3:prefix": "true"}}, "Invalid Condition type : NullIfExists"),
    ("qualified-null", {"ForAnyValue:Null": {"s3:prefix": "true"}}, "Invalid Condition type : ForAnyValue:Null"),
    ("unknown-key", {"StringEquals": {"aws:Colour": "red"}}, "Policy has an invalid condition key: aws:Colour"),
    ("unknown-s3-key", {"StringEquals": {"s3:Prefixes": "a"}}, "Policy has an invalid condition key: s3:Prefixes"),
    ("family-without-name", {"StringEquals": {"aws:RequestTag/": "a"}},
     "Policy has an invalid condition key: aws:RequestTag/"),
    ("bad-ipv4", {"IpAddress": {"aws:SourceIp": "10.0.0.256"}}, "Invalid IP address or CIDR: 10.0.0.256"),
    ("bad-cidr", {"IpAddress": {"aws:SourceIp": "10.0.0.0/40"}}, "Invalid IP address or CIDR: 10.0.0.0/40"),
    ("bad-ipv6", {"NotIpAddress": {"aws:SourceIp": "2001:db8:::1/64"}}, "Invalid IP address or CIDR: 2001:db8:::1/64"),
    ("ip-not-an-address", {"IpAddress": {"aws:SourceIp": "localhost"}}, "Invalid IP address or CIDR: localhost"),
    ("pairs-not-object", {"StringEquals": ["s3:prefix", "a"]}, "Invalid Condition block for StringEquals"),
    ("pairs-empty", {"Bool": {}}, "Invalid Condition block for Bool"),
    ("no-values", {"StringEquals": {"s3:prefix": []}}, "Condition StringEquals s3:prefix has no value"),
    ("value-object", {"StringEquals": {"s3:prefix": {"a": 1}}},
     "Condition StringEquals s3:prefix has an invalid value"),
    ("value-in-list-object", {"StringEquals": {"s3:prefix": ["a", ["b"]]}},
     "Condition StringEquals s3:prefix has an invalid value"),
]


@pytest.mark.parametrize("block,message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_check_block_refuses(block, message):
    with pytest.raises(ConditionError) as excinfo:
        check_block(block)
    assert str(excinfo.value) == message


@pytest.mark.parametrize("pattern,value,expected", [
    ("*", "", True), ("*", "anything/at/all", True), ("a*c", "abbbc", True), ("a*c", "abbb", False),
    ("a?c", "abc", True), ("a?c", "ac", False), ("a\x00*c", "a*c", True), ("a\x00*c", "abc", False),
    ("a\x00?c", "a?c", True), ("(a)|b", "(a)|b", True), ("(a)|b", "a", False), ("line*", "line\nbreak", True),
])
def test_glob_match(pattern, value, expected):
    """``*``/``?`` wildcards, ``\\x00`` making the next character literal (a policy variable's
    value), every other character literal, newlines matched by ``*``."""
    assert glob_match(pattern, value) is expected
