"""Access control lists (buckets.iam.acl): canned ACLs and ``x-amz-grant-*`` headers as
grants, what each permission allows on a bucket and on an object, and which ACLs are public.
"""

from __future__ import annotations

import pytest

from buckets.errors import InvalidArgument
from buckets.iam.acl import (
    ACL,
    ALL_USERS,
    AUTHENTICATED_USERS,
    BUCKET_PERMISSIONS,
    CANNED_ACLS,
    LOG_DELIVERY,
    OBJECT_PERMISSIONS,
    Grant,
    canned_acl,
    grants_from_headers,
    make_grant,
    owner_acl,
)
from buckets.iam.errors import MalformedACLError, UnresolvableGrantByEmailAddress
from buckets.iam.identity import canonical_id

OWNER, OWNER_ID = "owner", canonical_id("owner")
BUCKET_OWNER_ID = canonical_id("bucket-owner")
ALICE_ID, BOB_ID = canonical_id("alice"), canonical_id("bob")
KNOWN = {OWNER_ID, BUCKET_OWNER_ID, ALICE_ID, BOB_ID}


def full(grantee: str = OWNER_ID) -> Grant:
    return Grant("id", grantee, "FULL_CONTROL")


# --------------------------------------------------------------------------------------------
# Canned ACLs: (name, for a bucket?, bucket owner's ID, the grants)

CANNED = [
    ("private", True, None, [full()]),
    ("public-read", True, None, [full(), Grant("group", ALL_USERS, "READ")]),
    ("public-read-write", True, None,
     [full(), Grant("group", ALL_USERS, "READ"), Grant("group", ALL_USERS, "WRITE")]),
    ("authenticated-read", True, None, [full(), Grant("group", AUTHENTICATED_USERS, "READ")]),
    ("aws-exec-read", True, None, [full()]),
    ("log-delivery-write", True, None,
     [full(), Grant("group", LOG_DELIVERY, "WRITE"), Grant("group", LOG_DELIVERY, "READ_ACP")]),
    # bucket-owner-* mean something only for an object someone else's bucket holds
    ("bucket-owner-read", True, BUCKET_OWNER_ID, [full()]),
    ("bucket-owner-full-control", True, BUCKET_OWNER_ID, [full()]),
    ("bucket-owner-read", False, BUCKET_OWNER_ID, [full(), Grant("id", BUCKET_OWNER_ID, "READ")]),
    ("bucket-owner-full-control", False, BUCKET_OWNER_ID, [full(), full(BUCKET_OWNER_ID)]),
    ("bucket-owner-full-control", False, OWNER_ID, [full()]),  # the writer owns the bucket too
    ("bucket-owner-read", False, None, [full()]),
    ("public-read", False, BUCKET_OWNER_ID, [full(), Grant("group", ALL_USERS, "READ")]),
]


def _canned_id(case: tuple) -> str:
    name, for_bucket, bucket_owner_id, _ = case
    return f"{name}-{'bucket' if for_bucket else 'object'}-{'same' if bucket_owner_id in (None, OWNER_ID) else 'other'}"


@pytest.mark.parametrize("name,for_bucket,bucket_owner_id,grants", CANNED, ids=[_canned_id(c) for c in CANNED])
def test_canned_acls(name, for_bucket, bucket_owner_id, grants):
    acl = canned_acl(name, OWNER, OWNER_ID, bucket_owner_id, for_bucket=for_bucket)
    assert acl == ACL(OWNER, tuple(grants))


def test_every_canned_acl_is_known():
    for name in CANNED_ACLS:
        assert canned_acl(name, OWNER, OWNER_ID, for_bucket=True).grants[0] == full()


@pytest.mark.parametrize("name", ["public", "Private", "PUBLIC-READ", "", "private "])
def test_unknown_canned_acl_is_invalid_argument(name):
    with pytest.raises(InvalidArgument) as excinfo:
        canned_acl(name, OWNER, OWNER_ID, for_bucket=True)
    assert excinfo.value.extra == {"ArgumentName": "x-amz-acl", "ArgumentValue": name}


# --------------------------------------------------------------------------------------------
# x-amz-grant-* headers

def parse(headers: dict[str, str]) -> ACL | None:
    return grants_from_headers(headers, OWNER, OWNER_ID, KNOWN.__contains__)


GRANT_HEADERS = [
    ("id", {"x-amz-grant-read": f'id="{ALICE_ID}"'}, [Grant("id", ALICE_ID, "READ")]),
    ("id-unquoted", {"x-amz-grant-write": f"id={ALICE_ID}"}, [Grant("id", ALICE_ID, "WRITE")]),
    ("id-upper-case-kind", {"x-amz-grant-read-acp": f'ID="{ALICE_ID}"'}, [Grant("id", ALICE_ID, "READ_ACP")]),
    ("id-spaces", {"x-amz-grant-write-acp": f'  id = "{ALICE_ID}"  '}, [Grant("id", ALICE_ID, "WRITE_ACP")]),
    ("uri-all-users", {"x-amz-grant-read": f'uri="{ALL_USERS}"'}, [Grant("group", ALL_USERS, "READ")]),
    ("uri-authenticated", {"x-amz-grant-full-control": f'uri="{AUTHENTICATED_USERS}"'},
     [Grant("group", AUTHENTICATED_USERS, "FULL_CONTROL")]),
    ("uri-log-delivery", {"x-amz-grant-write": f"uri={LOG_DELIVERY}"}, [Grant("group", LOG_DELIVERY, "WRITE")]),
    ("several-grantees", {"x-amz-grant-read": f'id="{ALICE_ID}", id="{BOB_ID}", uri="{ALL_USERS}"'},
     [Grant("id", ALICE_ID, "READ"), Grant("id", BOB_ID, "READ"), Grant("group", ALL_USERS, "READ")]),
    ("several-headers", {"x-amz-grant-read": f'id="{ALICE_ID}"', "x-amz-grant-full-control": f'id="{BOB_ID}"'},
     [Grant("id", ALICE_ID, "READ"), Grant("id", BOB_ID, "FULL_CONTROL")]),
    ("empty-header", {"x-amz-grant-read": ""}, []),
]


@pytest.mark.parametrize("headers,grants", [g[1:] for g in GRANT_HEADERS], ids=[g[0] for g in GRANT_HEADERS])
def test_grant_headers(headers, grants):
    assert parse(headers) == ACL(OWNER, tuple(grants))


def test_no_grant_headers_is_none():
    assert parse({}) is None
    assert parse({"x-amz-acl": "private", "content-type": "text/plain"}) is None


@pytest.mark.parametrize("value", ['emailAddress="alice@example.com"', "emailaddress=alice@example.com",
                                   f'id="{ALICE_ID}", emailAddress="bob@example.com"'])
def test_grant_by_email_is_unresolvable(value):
    with pytest.raises(UnresolvableGrantByEmailAddress) as excinfo:
        parse({"x-amz-grant-read": value})
    assert (excinfo.value.code, excinfo.value.status) == ("UnresolvableGrantByEmailAddress", 400)


@pytest.mark.parametrize("header,value,message", [
    ("x-amz-grant-read", f'id="{canonical_id("nobody")}"', "Invalid id"),
    ("x-amz-grant-read", 'id="alice"', "Invalid id"),
    ("x-amz-grant-write", 'id=""', "Invalid id"),
    ("x-amz-grant-read", 'uri="http://acs.amazonaws.com/groups/global/Everyone"', "Invalid group uri"),
    ("x-amz-grant-read", "uri=AllUsers", "Invalid group uri"),
    ("x-amz-grant-read", f"{ALICE_ID}", "Argument format not recognized"),
    ("x-amz-grant-read", f'user="{ALICE_ID}"', "Argument format not recognized"),
    ("x-amz-grant-read", f'id="{ALICE_ID}" id="{BOB_ID}"', "Argument format not recognized"),
])
def test_bad_grant_headers_are_invalid_argument(header, value, message):
    with pytest.raises(InvalidArgument) as excinfo:
        parse({header: value})
    assert excinfo.value.message == message
    assert excinfo.value.extra["ArgumentName"] == header


def test_document_grants():
    assert make_grant("id", ALICE_ID, "READ", KNOWN.__contains__) == Grant("id", ALICE_ID, "READ")
    assert make_grant("uri", ALL_USERS, "WRITE", KNOWN.__contains__) == Grant("group", ALL_USERS, "WRITE")
    with pytest.raises(MalformedACLError):
        make_grant("id", ALICE_ID, "READ_WRITE", KNOWN.__contains__)
    with pytest.raises(MalformedACLError):
        make_grant("id", ALICE_ID, "read", KNOWN.__contains__)
    with pytest.raises(UnresolvableGrantByEmailAddress):
        make_grant("emailaddress", "a@example.com", "READ", KNOWN.__contains__)
    with pytest.raises(InvalidArgument):
        make_grant("id", canonical_id("nobody"), "READ", KNOWN.__contains__)


# --------------------------------------------------------------------------------------------
# What each permission allows: (permission, on a bucket?, action, allowed)

ALLOWS = [
    ("READ", True, "s3:ListBucket", True),
    ("READ", True, "s3:ListBucketVersions", True),
    ("READ", True, "s3:ListBucketMultipartUploads", True),
    ("READ", True, "s3:GetObject", False),
    ("READ", True, "s3:PutObject", False),
    ("READ", True, "s3:GetBucketAcl", False),
    ("READ", True, "s3:GetBucketPolicy", False),
    ("WRITE", True, "s3:PutObject", True),
    ("WRITE", True, "s3:DeleteObject", True),
    ("WRITE", True, "s3:AbortMultipartUpload", True),
    ("WRITE", True, "s3:ListBucket", False),
    ("WRITE", True, "s3:GetObject", False),
    ("WRITE", True, "s3:PutBucketAcl", False),
    ("READ_ACP", True, "s3:GetBucketAcl", True),
    ("READ_ACP", True, "s3:PutBucketAcl", False),
    ("READ_ACP", True, "s3:ListBucket", False),
    ("WRITE_ACP", True, "s3:PutBucketAcl", True),
    ("WRITE_ACP", True, "s3:GetBucketAcl", False),
    ("FULL_CONTROL", True, "s3:ListBucket", True),
    ("FULL_CONTROL", True, "s3:PutObject", True),
    ("FULL_CONTROL", True, "s3:DeleteObject", True),
    ("FULL_CONTROL", True, "s3:GetBucketAcl", True),
    ("FULL_CONTROL", True, "s3:PutBucketAcl", True),
    ("FULL_CONTROL", True, "s3:GetBucketPolicy", False),  # policies are the owner's alone
    ("FULL_CONTROL", True, "s3:PutBucketPolicy", False),
    ("FULL_CONTROL", True, "s3:DeleteBucket", False),
    ("FULL_CONTROL", True, "s3:GetObject", False),  # a bucket grant reads no object
    ("READ", False, "s3:GetObject", True),
    ("READ", False, "s3:GetObjectAttributes", True),
    ("READ", False, "s3:GetObjectAcl", False),
    ("READ", False, "s3:PutObject", False),
    ("WRITE", False, "s3:PutObject", False),  # WRITE means nothing on an object
    ("WRITE", False, "s3:DeleteObject", False),
    ("READ_ACP", False, "s3:GetObjectAcl", True),
    ("READ_ACP", False, "s3:GetObject", False),
    ("WRITE_ACP", False, "s3:PutObjectAcl", True),
    ("WRITE_ACP", False, "s3:GetObjectAcl", False),
    ("FULL_CONTROL", False, "s3:GetObject", True),
    ("FULL_CONTROL", False, "s3:GetObjectAcl", True),
    ("FULL_CONTROL", False, "s3:PutObjectAcl", True),
    ("FULL_CONTROL", False, "s3:DeleteObject", False),
    ("FULL_CONTROL", False, "s3:PutObject", False),
]


@pytest.mark.parametrize("permission,on_bucket,action,expected", ALLOWS,
                         ids=[f"{'bucket' if a[1] else 'object'}-{a[0]}-{a[2][3:]}" for a in ALLOWS])
def test_what_each_permission_allows(permission, on_bucket, action, expected):
    table = BUCKET_PERMISSIONS if on_bucket else OBJECT_PERMISSIONS
    acl = ACL(OWNER, (Grant("id", ALICE_ID, permission),))
    assert acl.allows(table, action, ALICE_ID) is expected


# Who a grant reaches: (grantee kind, grantee, caller's canonical ID or None for anonymous,
# ignore public ACLs?, allowed)
REACHES = [
    ("id", ALICE_ID, ALICE_ID, False, True),
    ("id", ALICE_ID, BOB_ID, False, False),
    ("id", ALICE_ID, None, False, False),
    ("id", ALICE_ID, ALICE_ID, True, True),  # IgnorePublicAcls leaves grants to users alone
    ("group", ALL_USERS, None, False, True),
    ("group", ALL_USERS, BOB_ID, False, True),
    ("group", ALL_USERS, None, True, False),
    ("group", ALL_USERS, BOB_ID, True, False),
    ("group", AUTHENTICATED_USERS, BOB_ID, False, True),
    ("group", AUTHENTICATED_USERS, None, False, False),
    ("group", AUTHENTICATED_USERS, BOB_ID, True, False),
    ("group", LOG_DELIVERY, BOB_ID, False, False),
    ("group", LOG_DELIVERY, None, False, False),
]


@pytest.mark.parametrize("kind,grantee,caller_id,ignore_public,expected", REACHES)
def test_who_a_grant_reaches(kind, grantee, caller_id, ignore_public, expected):
    acl = ACL(OWNER, (Grant(kind, grantee, "READ"),))
    assert acl.allows(BUCKET_PERMISSIONS, "s3:ListBucket", caller_id, ignore_public) is expected


def test_any_grant_may_allow():
    acl = ACL(OWNER, (Grant("id", BOB_ID, "FULL_CONTROL"), Grant("id", ALICE_ID, "READ_ACP"),
                      Grant("id", ALICE_ID, "WRITE")))
    assert acl.allows(BUCKET_PERMISSIONS, "s3:PutObject", ALICE_ID)
    assert acl.allows(BUCKET_PERMISSIONS, "s3:GetBucketAcl", ALICE_ID)
    assert not acl.allows(BUCKET_PERMISSIONS, "s3:ListBucket", ALICE_ID)
    assert not ACL(OWNER, ()).allows(BUCKET_PERMISSIONS, "s3:ListBucket", ALICE_ID)


# --------------------------------------------------------------------------------------------
# Public and owner-only ACLs, records

@pytest.mark.parametrize("name,public,owner_only", [
    ("private", False, True), ("public-read", True, False), ("public-read-write", True, False),
    ("authenticated-read", True, False), ("log-delivery-write", False, False), ("aws-exec-read", False, True),
])
def test_is_public_and_owner_only(name, public, owner_only):
    acl = canned_acl(name, OWNER, OWNER_ID, for_bucket=True)
    assert acl.is_public is public
    assert acl.is_owner_only is owner_only


def test_grants_to_users_are_not_public():
    acl = ACL(OWNER, (full(), Grant("id", ALICE_ID, "READ")))
    assert not acl.is_public
    assert not acl.is_owner_only
    assert ACL(OWNER, (full(), full(BUCKET_OWNER_ID))).is_owner_only  # full control only: what AWS accepts


def test_record_round_trip():
    acl = ACL(OWNER, (full(), Grant("group", ALL_USERS, "READ"), Grant("id", ALICE_ID, "WRITE_ACP")))
    record = acl.to_record()
    assert record == {"owner": OWNER, "grants": [["id", OWNER_ID, "FULL_CONTROL"], ["group", ALL_USERS, "READ"],
                                                  ["id", ALICE_ID, "WRITE_ACP"]]}
    assert ACL.from_record(record) == acl
    assert ACL.from_record(None) is None
    assert ACL.from_record({}) is None
    assert ACL.from_record({"grants": []}, default_owner="someone") == ACL("someone", ())


def test_owner_acl():
    assert owner_acl(OWNER, OWNER_ID) == ACL(OWNER, (full(),))
