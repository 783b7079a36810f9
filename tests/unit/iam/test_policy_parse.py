"""The policy language's parser (buckets.iam.policy.parse_policy): what it accepts, and
every document it refuses as ``MalformedPolicy`` with AWS's message.

Tables: VALID (documents that parse, with what they parse into), MALFORMED (bucket-policy
documents and the message each gets), MALFORMED_USER (identity policies), PUBLIC (which
documents ``Policy.is_public`` calls public, AWS's rule for PolicyStatus and the public
access block).
"""

from __future__ import annotations

import json

import pytest

from buckets.iam.errors import MalformedPolicy
from buckets.iam.identity import canonical_id
from buckets.iam.policy import CANNED_USER_POLICIES, MAX_POLICY_BYTES, canned_user_policy, parse_policy

BUCKET = "photos"
ALICE_ARN = "arn:aws:iam::123456789012:user/alice"
OBJECTS = f"arn:aws:s3:::{BUCKET}/*"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"


def doc(*statements: dict, **top: object) -> str:
    body: dict = {"Version": "2012-10-17", **top}
    body["Statement"] = list(statements)
    return json.dumps(body)


def st(**fields: object) -> dict:
    """A valid bucket-policy statement, with ``fields`` replacing (None: removing) its fields."""
    base: dict = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": OBJECTS}
    for name, value in fields.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def ust(**fields: object) -> dict:
    """A valid user-policy statement (no Principal)."""
    return st(Principal=None, **fields)


# --------------------------------------------------------------------------------------------
# Valid documents: (id, text, bucket or None for a user policy, check of the parsed Policy)

def _one(policy):
    assert len(policy.statements) == 1
    return policy.statements[0]


VALID = [
    ("minimal", doc(st()), BUCKET,
     lambda p: (_one(p).allow, _one(p).principal.everyone, _one(p).actions, _one(p).resources)
     == (True, True, ("s3:getobject",), (OBJECTS,))),
    ("deny-effect", doc(st(Effect="Deny")), BUCKET, lambda p: _one(p).allow is False),
    ("statement-as-object", json.dumps({"Version": "2012-10-17", "Statement": st()}), BUCKET,
     lambda p: len(p.statements) == 1),
    ("version-2008", doc(st(), Version="2008-10-17"), BUCKET, lambda p: len(p.statements) == 1),
    ("no-version", json.dumps({"Statement": [st()]}), BUCKET, lambda p: len(p.statements) == 1),
    ("id-field", doc(st(), Id="my-policy"), BUCKET, lambda p: len(p.statements) == 1),
    ("principal-aws-user", doc(st(Principal={"AWS": ALICE_ARN})), BUCKET,
     lambda p: _one(p).principal.users == frozenset({"alice"}) and not _one(p).principal.everyone),
    ("principal-aws-list", doc(st(Principal={"AWS": [ALICE_ARN, "arn:aws:iam::123456789012:user/bob"]})), BUCKET,
     lambda p: _one(p).principal.users == frozenset({"alice", "bob"})),
    ("principal-aws-star", doc(st(Principal={"AWS": "*"})), BUCKET, lambda p: _one(p).principal.everyone),
    ("principal-root-arn", doc(st(Principal={"AWS": "arn:aws:iam::123456789012:root"})), BUCKET,
     lambda p: _one(p).principal.root),
    ("principal-canonical", doc(st(Principal={"CanonicalUser": canonical_id("alice")})), BUCKET,
     lambda p: _one(p).principal.canonical == frozenset({canonical_id("alice")})),
    ("not-principal", doc(st(Principal=None, NotPrincipal={"AWS": ALICE_ARN}, Effect="Deny")), BUCKET,
     lambda p: _one(p).not_principal and _one(p).principal.users == frozenset({"alice"})),
    ("action-list-and-bucket-and-objects",
     doc(st(Action=["s3:ListBucket", "s3:GetObject"], Resource=[BUCKET_ARN, OBJECTS])), BUCKET,
     lambda p: _one(p).actions == ("s3:listbucket", "s3:getobject")),
    ("action-case-insensitive", doc(st(Action="S3:gEtObJeCt")), BUCKET, lambda p: _one(p).actions == ("s3:getobject",)),
    ("action-s3-star", doc(st(Action="s3:*", Resource=[BUCKET_ARN, OBJECTS])), BUCKET,
     lambda p: _one(p).actions == ("s3:*",)),
    ("action-star", doc(st(Action="*")), BUCKET, lambda p: _one(p).actions == ("*",)),
    ("action-wildcard", doc(st(Action="s3:Get*")), BUCKET, lambda p: _one(p).actions == ("s3:get*",)),
    ("action-question-mark", doc(st(Action="s3:GetObjec?")), BUCKET, lambda p: len(p.statements) == 1),
    ("not-action", doc(st(Action=None, NotAction="s3:DeleteObject")), BUCKET, lambda p: _one(p).not_action),
    ("not-action-bucket-action-on-objects", doc(st(Action=None, NotAction="s3:ListBucket")), BUCKET,
     lambda p: _one(p).not_action),  # NotAction is not checked against the resources
    ("not-resource", doc(st(Resource=None, NotResource=f"arn:aws:s3:::{BUCKET}/private/*")), BUCKET,
     lambda p: _one(p).not_resource),
    ("resource-bucket-wildcard", doc(st(Resource="arn:aws:s3:::pho*/*")), BUCKET, lambda p: len(p.statements) == 1),
    ("resource-variable", doc(st(Resource=f"arn:aws:s3:::{BUCKET}/home/${{aws:username}}/*")), BUCKET,
     lambda p: _one(p).resources == (f"arn:aws:s3:::{BUCKET}/home/${{aws:username}}/*",)),
    ("condition", doc(st(Condition={"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]},
                                     "Bool": {"aws:SecureTransport": True},
                                     "NumericLessThan": {"s3:max-keys": 10}})), BUCKET,
     lambda p: _one(p).condition == {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]},
                                     "Bool": {"aws:SecureTransport": ["true"]},
                                     "NumericLessThan": {"s3:max-keys": ["10"]}}),
    ("sids-unique", doc(st(Sid="one"), st(Sid="two", Effect="Deny")), BUCKET,
     lambda p: [s.sid for s in p.statements] == ["one", "two"]),
    ("sid-empty-twice", doc(st(Sid=""), st(Sid="")), BUCKET, lambda p: len(p.statements) == 2),
    ("leading-whitespace", "  \n" + doc(st()), BUCKET, lambda p: len(p.statements) == 1),
    ("user-policy", doc(ust(Action="s3:*", Resource="arn:aws:s3:::*")), None,
     lambda p: _one(p).principal is None),
    ("user-policy-list-all-my-buckets", doc(ust(Action="s3:ListAllMyBuckets", Resource="*")), None,
     lambda p: _one(p).actions == ("s3:listallmybuckets",)),
    ("user-policy-other-buckets", doc(ust(Resource="arn:aws:s3:::anything/*")), None,
     lambda p: len(p.statements) == 1),
]


@pytest.mark.parametrize("text,bucket,check", [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_documents_parse(text, bucket, check):
    policy = parse_policy(text, bucket)
    assert policy.text == text  # kept as given, to give back on GetBucketPolicy
    assert check(policy)


def test_canned_user_policies_parse():
    for name in CANNED_USER_POLICIES:
        assert canned_user_policy(name) is not None, name
    assert canned_user_policy("no-such-policy") is None


# --------------------------------------------------------------------------------------------
# Malformed bucket policies: (id, text, the message MalformedPolicy carries)

BIG_RESOURCES = [f"arn:aws:s3:::{BUCKET}/{i:06d}-" + "x" * 80 for i in range(250)]

MALFORMED = [
    # the document
    ("empty", "", "Policies must be valid JSON and the first byte must be '{'"),
    ("whitespace", "   ", "Policies must be valid JSON and the first byte must be '{'"),
    ("array", json.dumps([st()]), "Policies must be valid JSON and the first byte must be '{'"),
    ("string", json.dumps("policy"), "Policies must be valid JSON and the first byte must be '{'"),
    ("not-json", "{not json", "This policy contains invalid Json"),
    ("truncated", doc(st())[:-3], "This policy contains invalid Json"),
    ("deep-nesting", '{"a":' + "[" * 5000 + "]" * 5000 + "}", "This policy contains invalid Json"),
    ("too-large", doc(st(Resource=BIG_RESOURCES)), "Policy exceeds the maximum allowed document size."),
    ("unknown-top-field", doc(st(), Statements=[]), "Unknown field Statements"),
    ("bad-version", doc(st(), Version="2020-01-01"), "The policy must contain a valid version string"),
    ("missing-statement", json.dumps({"Version": "2012-10-17"}), "Missing required field Statement"),
    ("empty-statement", doc(), "Could not parse the policy: Statement is empty!"),
    ("duplicate-json-key", '{"Version": "2012-10-17", "Version": "2012-10-17", "Statement": []}',
     "Duplicate field Version in policy"),
    ("statement-not-object", json.dumps({"Statement": ["Allow"]}), "Invalid statement in policy"),
    # the statement's fields
    ("unknown-statement-field", doc(st(Actions="s3:GetObject")), "Unknown field Actions"),
    ("missing-effect", doc(st(Effect=None)), "Missing required field Effect"),
    ("bad-effect", doc(st(Effect="Permit")), "Invalid effect: Permit"),
    ("effect-lower-case", doc(st(Effect="allow")), "Invalid effect: allow"),
    ("missing-action", doc(st(Action=None)), "Missing required field Action"),
    ("action-and-not-action", doc(st(NotAction="s3:PutObject")), "Statement can not have both Action and NotAction"),
    ("missing-resource", doc(st(Resource=None)), "Missing required field Resource"),
    ("resource-and-not-resource", doc(st(NotResource=OBJECTS)),
     "Statement can not have both Resource and NotResource"),
    ("missing-principal", doc(st(Principal=None)), "Missing required field Principal"),
    ("principal-and-not-principal", doc(st(NotPrincipal="*")), None),  # AWS's wording unknown: any message
    ("sid-not-string", doc(st(Sid=5)), "Invalid Sid in policy"),
    ("duplicate-sid", doc(st(Sid="same"), st(Sid="same", Effect="Deny")),
     "Statement IDs (SID) in a single policy must be unique"),
    # actions
    ("unknown-action", doc(st(Action="s3:GetObjects")), "Policy has invalid action"),
    ("non-s3-action", doc(st(Action="iam:CreateUser")), "Policy has invalid action"),
    ("action-without-service", doc(st(Action="GetObject")), "Policy has invalid action"),
    ("wildcard-matching-nothing", doc(st(Action="s3:Frobnicate*")), "Policy has invalid action"),
    ("empty-action", doc(st(Action="")), "Policy has invalid action"),
    ("empty-action-list", doc(st(Action=[])), "Policy has invalid action"),
    ("action-not-string", doc(st(Action=5)), "Policy has invalid action"),
    ("one-bad-action-in-list", doc(st(Action=["s3:GetObject", "s3:Nope"])), "Policy has invalid action"),
    # resources
    ("resource-other-bucket", doc(st(Resource="arn:aws:s3:::other/*")), "Policy has invalid resource"),
    ("resource-other-bucket-in-list", doc(st(Resource=[OBJECTS, "arn:aws:s3:::other/*"])),
     "Policy has invalid resource"),
    ("resource-bucket-prefix", doc(st(Resource="arn:aws:s3:::photosx/*")), "Policy has invalid resource"),
    ("resource-not-s3", doc(st(Resource="arn:aws:sqs:us-east-1:123456789012:queue")), "Policy has invalid resource"),
    ("resource-plain-name", doc(st(Resource=BUCKET)), "Policy has invalid resource"),
    ("not-resource-other-bucket", doc(st(Resource=None, NotResource="arn:aws:s3:::other/*")),
     "Policy has invalid resource"),
    ("empty-resource-list", doc(st(Resource=[])), "Invalid Resource in policy"),
    ("resource-not-string", doc(st(Resource={"arn": OBJECTS})), "Invalid Resource in policy"),
    # actions that apply to no resource of the statement
    ("object-action-on-bucket", doc(st(Action="s3:GetObject", Resource=BUCKET_ARN)),
     "Action does not apply to any resource(s) in statement"),
    ("bucket-action-on-objects", doc(st(Action="s3:ListBucket", Resource=OBJECTS)),
     "Action does not apply to any resource(s) in statement"),
    ("bucket-wildcard-on-objects", doc(st(Action="s3:ListBucket*", Resource=OBJECTS)),
     "Action does not apply to any resource(s) in statement"),
    ("service-action-on-bucket", doc(st(Action="s3:ListAllMyBuckets", Resource=BUCKET_ARN)),
     "Action does not apply to any resource(s) in statement"),
    # principals
    ("principal-plain-string", doc(st(Principal="alice")), "Invalid principal in policy"),
    ("principal-empty-object", doc(st(Principal={})), "Invalid principal in policy"),
    ("principal-aws-name", doc(st(Principal={"AWS": "alice"})), "Invalid principal in policy"),
    ("principal-aws-empty-list", doc(st(Principal={"AWS": []})), "Invalid principal in policy"),
    ("principal-aws-not-string", doc(st(Principal={"AWS": [5]})), "Invalid principal in policy"),
    ("principal-aws-role", doc(st(Principal={"AWS": "arn:aws:iam::123456789012:role/admin"})),
     "Invalid principal in policy"),
    ("principal-aws-user-empty", doc(st(Principal={"AWS": "arn:aws:iam::123456789012:user/"})),
     "Invalid principal in policy"),
    ("principal-service", doc(st(Principal={"Service": "s3.amazonaws.com"})), "Invalid principal in policy"),
    ("principal-federated", doc(st(Principal={"Federated": "cognito-identity.amazonaws.com"})),
     "Invalid principal in policy"),
    ("principal-canonical-short", doc(st(Principal={"CanonicalUser": "abc123"})), "Invalid principal in policy"),
    ("principal-canonical-upper", doc(st(Principal={"CanonicalUser": canonical_id("alice").upper()})),
     "Invalid principal in policy"),
    ("principal-list", doc(st(Principal=["*"])), "Invalid principal in policy"),
    ("not-principal-bad", doc(st(Principal=None, NotPrincipal={"AWS": "alice"})), "Invalid principal in policy"),
    # conditions
    ("condition-not-object", doc(st(Condition=["IpAddress"])), "Condition must be an object"),
    ("condition-bad-operator", doc(st(Condition={"StringEqualz": {"s3:prefix": "a"}})),
     "Invalid Condition type : StringEqualz"),
    ("condition-bad-qualifier", doc(st(Condition={"ForSomeValues:StringEquals": {"s3:prefix": "a"}})),
     "Invalid Condition type : ForSomeValues:StringEquals"),
    ("condition-null-if-exists", doc(st(Condition={"NullIfExists": {"s3:prefix": "true"}})),
     "Invalid Condition type : NullIfExists"),
    ("condition-qualified-null", doc(st(Condition={"ForAllValues:Null": {"s3:prefix": "true"}})),
     "Invalid Condition type : ForAllValues:Null"),
    ("condition-bad-key", doc(st(Condition={"StringEquals": {"s3:nope": "a"}})),
     "Policy has an invalid condition key: s3:nope"),
    ("condition-tag-family-without-name", doc(st(Condition={"StringEquals": {"s3:ExistingObjectTag/": "a"}})),
     "Policy has an invalid condition key: s3:ExistingObjectTag/"),
    ("condition-bad-ipv4", doc(st(Condition={"IpAddress": {"aws:SourceIp": "300.1.2.3/8"}})),
     "Invalid IP address or CIDR: 300.1.2.3/8"),
    ("condition-bad-ipv6", doc(st(Condition={"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::zz/32"]}})),
     "Invalid IP address or CIDR: 2001:db8::zz/32"),
    ("condition-bad-mask", doc(st(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}})),
     "Invalid IP address or CIDR: 10.0.0.0/33"),
    ("condition-empty-block", doc(st(Condition={"StringEquals": {}})), "Invalid Condition block for StringEquals"),
    ("condition-block-not-object", doc(st(Condition={"StringEquals": "s3:prefix"})),
     "Invalid Condition block for StringEquals"),
    ("condition-no-value", doc(st(Condition={"StringEquals": {"s3:prefix": []}})),
     "Condition StringEquals s3:prefix has no value"),
    ("condition-object-value", doc(st(Condition={"StringEquals": {"s3:prefix": {"a": "b"}}})),
     "Condition StringEquals s3:prefix has an invalid value"),
    ("condition-null-value", doc(st(Condition={"StringEquals": {"s3:prefix": None}})),
     "Condition StringEquals s3:prefix has an invalid value"),
]


@pytest.mark.parametrize("text,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_bucket_policies(text, message):
    with pytest.raises(MalformedPolicy) as excinfo:
        parse_policy(text, BUCKET)
    if message is not None:
        assert excinfo.value.message == message
    assert (excinfo.value.code, excinfo.value.status) == ("MalformedPolicy", 400)


def test_too_large_is_about_bytes_not_characters():
    """The limit counts UTF-8 bytes: a document under the limit in characters but over it in
    bytes is refused; one just under it in bytes is accepted."""
    base = doc(st(Sid="x"))
    room = MAX_POLICY_BYTES - len(base.encode()) + 1  # the Sid's one character
    fits = doc(st(Sid="x" * room))
    assert len(fits.encode()) == MAX_POLICY_BYTES
    parse_policy(fits, BUCKET)
    wide = json.dumps({"Statement": [st(Sid="\u00e9" * (MAX_POLICY_BYTES // 2 + 1))]},  # 2 bytes each
                      ensure_ascii=False)
    assert len(wide) < MAX_POLICY_BYTES < len(wide.encode())
    with pytest.raises(MalformedPolicy) as excinfo:
        parse_policy(wide, BUCKET)
    assert excinfo.value.message == "Policy exceeds the maximum allowed document size."


# --------------------------------------------------------------------------------------------
# User (identity) policies

MALFORMED_USER = [
    ("principal", doc(st()), "Policy document should not specify a principal."),
    ("not-principal", doc(ust(NotPrincipal="*")), "Policy document should not specify a principal."),
    ("missing-action", doc(ust(Action=None)), "Missing required field Action"),
    ("non-s3-action", doc(ust(Action="ec2:RunInstances")), "Policy has invalid action"),
    ("resource-not-s3", doc(ust(Resource="arn:aws:iam::123456789012:user/alice")), "Policy has invalid resource"),
    ("object-action-on-bucket", doc(ust(Action="s3:PutObject", Resource="arn:aws:s3:::mine")),
     "Action does not apply to any resource(s) in statement"),
    ("bucket-action-on-objects", doc(ust(Action="s3:ListBucket", Resource="arn:aws:s3:::mine/*")),
     "Action does not apply to any resource(s) in statement"),
    ("duplicate-sid", doc(ust(Sid="a"), ust(Sid="a")), "Statement IDs (SID) in a single policy must be unique"),
    ("bad-condition-key", doc(ust(Condition={"StringLike": {"aws:nothing": "x"}})),
     "Policy has an invalid condition key: aws:nothing"),
    ("not-json", "{'single': 'quotes'}", "This policy contains invalid Json"),
    ("first-byte", "Statement", "Policies must be valid JSON and the first byte must be '{'"),
]


@pytest.mark.parametrize("text,message", [m[1:] for m in MALFORMED_USER], ids=[m[0] for m in MALFORMED_USER])
def test_malformed_user_policies(text, message):
    with pytest.raises(MalformedPolicy) as excinfo:
        parse_policy(text)
    assert excinfo.value.message == message


def test_the_same_statement_is_valid_as_a_user_policy_only_without_principal():
    parse_policy(doc(ust()))
    parse_policy(doc(st()), BUCKET)
    with pytest.raises(MalformedPolicy):
        parse_policy(doc(st()))
    with pytest.raises(MalformedPolicy):
        parse_policy(doc(ust()), BUCKET)


# --------------------------------------------------------------------------------------------
# Which policies are public (PolicyStatus.IsPublic, BlockPublicPolicy, RestrictPublicBuckets)

PUBLIC = [
    ("everyone", [st()], True),
    ("everyone-aws-star", [st(Principal={"AWS": "*"})], True),
    ("named-user", [st(Principal={"AWS": ALICE_ARN})], False),
    ("deny-everyone", [st(Effect="Deny")], False),
    ("not-principal-allow", [st(Principal=None, NotPrincipal={"AWS": ALICE_ARN})], False),
    ("source-ip-narrow", [st(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})], False),
    ("source-ip-zero", [st(Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}})], True),
    ("source-account-fixed", [st(Condition={"StringEquals": {"aws:SourceAccount": "123456789012"}})], False),
    ("source-arn-wildcard", [st(Condition={"ArnLike": {"aws:SourceArn": "arn:aws:s3:::*"}})], True),
    ("username-fixed", [st(Condition={"StringEquals": {"aws:username": "alice"}})], False),
    ("prefix-only", [st(Condition={"StringEquals": {"s3:prefix": "public/"}})], True),
    ("secure-transport-only", [st(Condition={"Bool": {"aws:SecureTransport": "true"}})], True),
    ("one-public-among-many", [st(Principal={"AWS": ALICE_ARN}, Sid="a"), st(Sid="b")], True),
]


@pytest.mark.parametrize("statements,public", [p[1:] for p in PUBLIC], ids=[p[0] for p in PUBLIC])
def test_is_public(statements, public):
    assert parse_policy(doc(*statements), BUCKET).is_public is public
