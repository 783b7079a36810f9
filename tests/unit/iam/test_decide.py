"""The one decision (buckets.iam.decide), rule by rule of its docstring.

TABLE rows are (caller, the caller's user policy, the bucket's access -- owner, policy, ACL,
switches --, the object's ACL, action, key, context) -> allowed. ``evaluate`` asks the way
``buckets.s3.permissions.allowed`` does: once without the object's ACL, and again with it
only when the first answer says ``needs_object_acl``. Every rule of the docstring has rows:
root; explicit deny in either policy beats every allow; the owner with its user policy or
the bucket policy; another user needs both its user policy and the owner's grant; anonymous
needs a grant to everyone; NotAction/NotResource/NotPrincipal; wildcards in actions
(case-insensitive) and resources (case-sensitive); policy variables; BucketOwnerEnforced;
IgnorePublicAcls; RestrictPublicBuckets; conditions; service-level actions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pytest

from buckets.iam import ACL, AccessRequest, BucketAccess, Caller, Grant, canned_user_policy, decide, parse_policy
from buckets.iam.acl import ALL_USERS, AUTHENTICATED_USERS
from buckets.iam.identity import account_id, canonical_id

B = "photos"
OBJECTS, BUCKET_ARN = f"arn:aws:s3:::{B}/*", f"arn:aws:s3:::{B}"

ROOT = Caller("admin", root=True)
OWNER = Caller("owner")
ALICE = Caller("alice")
BOB = Caller("bob")
ANON = Caller(None)

RW = canned_user_policy("readwrite")
RO = canned_user_policy("readonly")
WO = canned_user_policy("writeonly")


def arn(user: str) -> str:
    return f"arn:aws:iam::{account_id(user)}:user/{user}"


def allow(principal: object = "*", action: object = "s3:*", resource: object = (BUCKET_ARN, OBJECTS),
          **extra: object) -> dict:
    return {"Effect": "Allow", "Principal": principal, "Action": action, "Resource": list(resource)
            if isinstance(resource, tuple) else resource, **extra}


def deny(principal: object = "*", action: object = "s3:*", resource: object = (BUCKET_ARN, OBJECTS),
         **extra: object) -> dict:
    return {**allow(principal, action, resource, **extra), "Effect": "Deny"}


def bucket_policy(*statements: dict):
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}), B)


def user_policy(*statements: dict):
    """Statements without a Principal: a user (identity) policy."""
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [
        {k: v for k, v in s.items() if k != "Principal"} for s in statements]}))


def grants(*pairs: tuple[str, str]) -> ACL:
    """ACL("owner") with each (grantee, permission): a grantee is a user name or a group URI."""
    out = [Grant("id", canonical_id("owner"), "FULL_CONTROL")]
    for grantee, permission in pairs:
        if grantee.startswith("http://"):
            out.append(Grant("group", grantee, permission))
        else:
            out.append(Grant("id", canonical_id(grantee), permission))
    return ACL("owner", tuple(out))


def bucket(**fields: object) -> BucketAccess:
    return BucketAccess(owner="owner", **fields)  # type: ignore[arg-type]


PLAIN = bucket()


@dataclass(frozen=True)
class Row:
    caller: Caller
    identity: object  # Policy | None
    access: BucketAccess | None
    action: str
    key: str | None
    allowed: bool
    object_acl: ACL | None = None
    context: dict = field(default_factory=dict)
    bucket_name: str | None = B


def evaluate(row: Row):
    req = AccessRequest(row.caller, row.action, row.bucket_name if row.access is not None else None, row.key,
                        row.identity, row.context)  # type: ignore[arg-type]
    decision = decide(req, row.access)
    if decision.needs_object_acl:
        decision = decide(req, row.access, row.object_acl, object_acl_known=True)
    return decision


def r(caller, identity, access, action, key, allowed, **extra) -> Row:
    return Row(caller, identity, access, action, key, allowed, **extra)


GET, PUT, LIST = "s3:GetObject", "s3:PutObject", "s3:ListBucket"

TABLE: dict[str, Row] = {
    # 1. the root user may do everything, policies or not
    "root-no-policy": r(ROOT, None, PLAIN, PUT, "k", True),
    "root-despite-bucket-deny": r(ROOT, None, bucket(policy=bucket_policy(deny())), GET, "k", True),
    "root-despite-deny-naming-root": r(ROOT, None, bucket(policy=bucket_policy(
        deny({"AWS": "arn:aws:iam::000000000000:root"}))), "s3:DeleteBucket", None, True),
    "root-service-action": r(ROOT, None, None, "s3:CreateBucket", None, True),
    "root-enforced-and-blocked": r(ROOT, None, bucket(acls_enabled=False, ignore_public_acls=True,
                                                      restrict_public_buckets=True), "s3:PutBucketPolicy", None, True),

    # 2. an explicit Deny, in the user's policy or the bucket policy, beats every Allow
    "owner-identity-deny": r(OWNER, user_policy(allow(), deny(action=GET)), PLAIN, GET, "k", False),
    "owner-identity-deny-other-action": r(OWNER, user_policy(allow(), deny(action=GET)), PLAIN, PUT, "k", True),
    "owner-bucket-deny-beats-identity-allow": r(OWNER, RW, bucket(policy=bucket_policy(deny(action=GET))),
                                                GET, "k", False),
    "owner-bucket-deny-beats-bucket-allow": r(OWNER, None, bucket(policy=bucket_policy(allow(), deny(action=PUT))),
                                              PUT, "k", False),
    "owner-bucket-deny-for-someone-else": r(OWNER, RW, bucket(policy=bucket_policy(deny({"AWS": arn("alice")}))),
                                            GET, "k", True),
    "other-bucket-deny-beats-policy-grant": r(ALICE, RW, bucket(policy=bucket_policy(
        allow({"AWS": arn("alice")}), deny({"AWS": arn("alice")}, action=GET))), GET, "k", False),
    "other-bucket-deny-beats-acl-grant": r(ALICE, RW, bucket(policy=bucket_policy(deny(action=LIST)),
                                                             acl=grants(("alice", "FULL_CONTROL"))),
                                           LIST, None, False),
    "other-bucket-deny-beats-object-acl": r(ALICE, RW, bucket(policy=bucket_policy(deny(action=GET))), GET, "k",
                                            False, object_acl=grants(("alice", "READ"))),
    "other-identity-deny-beats-grant": r(ALICE, user_policy(allow(resource="arn:aws:s3:::*"),
                                                            deny(action=GET, resource="arn:aws:s3:::*")),
                                         bucket(policy=bucket_policy(allow())), GET, "k", False),
    "anonymous-bucket-deny-beats-acl": r(ANON, None, bucket(policy=bucket_policy(deny(action=GET)),
                                                            acl=grants((ALL_USERS, "READ"))), GET, "k", False,
                                         object_acl=grants((ALL_USERS, "READ"))),
    "anonymous-deny-to-everyone-beats-allow": r(ANON, None, bucket(policy=bucket_policy(allow(), deny(action=LIST))),
                                                LIST, None, False),
    "bucket-deny-only-where-it-matches": r(ALICE, RW, bucket(policy=bucket_policy(
        allow(), deny(resource=f"arn:aws:s3:::{B}/secret/*"))), GET, "public/k", True),
    "bucket-deny-where-it-matches": r(ALICE, RW, bucket(policy=bucket_policy(
        allow(), deny(resource=f"arn:aws:s3:::{B}/secret/*"))), GET, "secret/k", False),

    # 3. the owner may do what its user policy or the bucket policy allows
    "owner-readwrite": r(OWNER, RW, PLAIN, PUT, "k", True),
    "owner-readwrite-bucket-config": r(OWNER, RW, PLAIN, "s3:PutBucketPolicy", None, True),
    "owner-readonly-get": r(OWNER, RO, PLAIN, GET, "k", True),
    "owner-readonly-put": r(OWNER, RO, PLAIN, PUT, "k", False),
    "owner-readonly-put-granted-by-bucket-policy": r(OWNER, RO, bucket(policy=bucket_policy(allow(action=PUT))),
                                                     PUT, "k", True),
    "owner-no-user-policy": r(OWNER, None, PLAIN, GET, "k", False),
    "owner-no-user-policy-bucket-policy-names-owner": r(OWNER, None, bucket(policy=bucket_policy(
        allow({"AWS": arn("owner")}, action=GET, resource=OBJECTS))), GET, "k", True),
    "owner-not-granted-by-acl": r(OWNER, None, bucket(acl=grants(("owner", "FULL_CONTROL"), (ALL_USERS, "READ"))),
                                  LIST, None, False),
    "owner-writeonly-list": r(OWNER, WO, PLAIN, LIST, None, False),
    "owner-writeonly-put": r(OWNER, WO, PLAIN, PUT, "k", True),
    "owner-of-someone-elses-object": r(OWNER, RW, PLAIN, GET, "alices-object", True,
                                       object_acl=ACL("alice", (Grant("id", canonical_id("alice"), "FULL_CONTROL"),))),

    # 4. another user needs its user policy AND the owner's grant
    "other-readwrite-no-grant": r(ALICE, RW, PLAIN, GET, "k", False),
    "other-readwrite-no-grant-list": r(ALICE, RW, PLAIN, LIST, None, False),
    "other-readwrite-no-grant-config": r(ALICE, RW, PLAIN, "s3:PutBucketPolicy", None, False),
    "other-readwrite-policy-grant": r(ALICE, RW, bucket(policy=bucket_policy(allow({"AWS": arn("alice")}))),
                                      PUT, "k", True),
    "other-readwrite-policy-grant-to-everyone": r(ALICE, RW, bucket(policy=bucket_policy(allow())), PUT, "k", True),
    "other-readwrite-policy-grant-by-canonical-id": r(ALICE, RW, bucket(policy=bucket_policy(
        allow({"CanonicalUser": canonical_id("alice")}))), GET, "k", True),
    "other-policy-grant-for-someone-else": r(ALICE, RW, bucket(policy=bucket_policy(allow({"AWS": arn("bob")}))),
                                             GET, "k", False),
    "other-policy-grant-other-action": r(ALICE, RW, bucket(policy=bucket_policy(allow(action=GET, resource=OBJECTS))),
                                         PUT, "k", False),
    "other-readonly-policy-grant-get": r(ALICE, RO, bucket(policy=bucket_policy(allow())), GET, "k", True),
    "other-readonly-policy-grant-put": r(ALICE, RO, bucket(policy=bucket_policy(allow())), PUT, "k", False),
    "other-readonly-acl-grant-put": r(ALICE, RO, bucket(acl=grants(("alice", "FULL_CONTROL"))), PUT, "k", False),
    "other-no-user-policy-despite-grant": r(ALICE, None, bucket(policy=bucket_policy(allow())), GET, "k", False),
    "other-user-policy-for-other-buckets": r(ALICE, user_policy(allow(resource="arn:aws:s3:::mine/*")),
                                             bucket(policy=bucket_policy(allow())), GET, "k", False),
    "other-user-policy-naming-this-bucket-alone": r(ALICE, user_policy(allow(resource=OBJECTS)), PLAIN, GET, "k",
                                                    False),
    "other-bucket-acl-read-list": r(ALICE, RW, bucket(acl=grants(("alice", "READ"))), LIST, None, True),
    "other-bucket-acl-read-put": r(ALICE, RW, bucket(acl=grants(("alice", "READ"))), PUT, "k", False),
    "other-bucket-acl-write-put": r(ALICE, RW, bucket(acl=grants(("alice", "WRITE"))), PUT, "k", True),
    "other-bucket-acl-write-delete": r(ALICE, RW, bucket(acl=grants(("alice", "WRITE"))), "s3:DeleteObject", "k",
                                       True),
    "other-bucket-acl-read-acp": r(ALICE, RW, bucket(acl=grants(("alice", "READ_ACP"))), "s3:GetBucketAcl", None,
                                   True),
    "other-bucket-acl-full-control-no-policy": r(ALICE, RW, bucket(acl=grants(("alice", "FULL_CONTROL"))),
                                                 "s3:GetBucketPolicy", None, False),
    "other-bucket-acl-for-bob": r(ALICE, RW, bucket(acl=grants(("bob", "FULL_CONTROL"))), LIST, None, False),
    "other-bucket-acl-authenticated-users": r(ALICE, RW, bucket(acl=grants((AUTHENTICATED_USERS, "READ"))), LIST,
                                              None, True),
    "other-bucket-acl-all-users": r(ALICE, RW, bucket(acl=grants((ALL_USERS, "WRITE"))), PUT, "k", True),
    "other-bucket-acl-read-is-not-object-read": r(ALICE, RW, bucket(acl=grants(("alice", "FULL_CONTROL"))), GET, "k",
                                                  False),
    "other-object-acl-read": r(ALICE, RW, PLAIN, GET, "k", True, object_acl=grants(("alice", "READ"))),
    "other-object-acl-read-for-bob": r(ALICE, RW, PLAIN, GET, "k", False, object_acl=grants(("bob", "READ"))),
    "other-object-acl-read-acp": r(ALICE, RW, PLAIN, "s3:GetObjectAcl", "k", True,
                                   object_acl=grants(("alice", "READ_ACP"))),
    "other-object-acl-read-is-not-read-acp": r(ALICE, RW, PLAIN, "s3:GetObjectAcl", "k", False,
                                               object_acl=grants(("alice", "READ"))),
    "other-object-acl-write-acp": r(ALICE, RW, PLAIN, "s3:PutObjectAcl", "k", True,
                                    object_acl=grants(("alice", "WRITE_ACP"))),
    "other-object-acl-full-control-not-delete": r(ALICE, RW, PLAIN, "s3:DeleteObject", "k", False,
                                                  object_acl=grants(("alice", "FULL_CONTROL"))),
    "other-object-acl-missing-object": r(ALICE, RW, PLAIN, GET, "k", False, object_acl=None),
    "other-readonly-object-acl-read": r(ALICE, RO, PLAIN, GET, "k", True, object_acl=grants(("alice", "READ"))),
    "other-readonly-object-acl-write-acp": r(ALICE, RO, PLAIN, "s3:PutObjectAcl", "k", False,
                                             object_acl=grants(("alice", "WRITE_ACP"))),

    # 5. anonymous callers need a grant to everyone
    "anonymous-no-grant": r(ANON, None, PLAIN, GET, "k", False),
    "anonymous-identity-ignored": r(ANON, RW, PLAIN, GET, "k", False),
    "anonymous-policy-to-everyone": r(ANON, None, bucket(policy=bucket_policy(allow(action=GET, resource=OBJECTS))),
                                      GET, "k", True),
    "anonymous-policy-aws-star": r(ANON, None, bucket(policy=bucket_policy(allow({"AWS": "*"}, action=LIST,
                                                                                 resource=BUCKET_ARN))),
                                   LIST, None, True),
    "anonymous-policy-to-a-user": r(ANON, None, bucket(policy=bucket_policy(allow({"AWS": arn("alice")}))),
                                    GET, "k", False),
    "anonymous-policy-other-action": r(ANON, None, bucket(policy=bucket_policy(allow(action=GET, resource=OBJECTS))),
                                       PUT, "k", False),
    "anonymous-acl-all-users-read-list": r(ANON, None, bucket(acl=grants((ALL_USERS, "READ"))), LIST, None, True),
    "anonymous-acl-all-users-read-not-put": r(ANON, None, bucket(acl=grants((ALL_USERS, "READ"))), PUT, "k", False),
    "anonymous-acl-all-users-write": r(ANON, None, bucket(acl=grants((ALL_USERS, "WRITE"))), PUT, "k", True),
    "anonymous-acl-authenticated-users": r(ANON, None, bucket(acl=grants((AUTHENTICATED_USERS, "READ"))), LIST, None,
                                           False),
    "anonymous-acl-to-a-user": r(ANON, None, bucket(acl=grants(("alice", "FULL_CONTROL"))), LIST, None, False),
    "anonymous-object-acl-all-users": r(ANON, None, PLAIN, GET, "k", True, object_acl=grants((ALL_USERS, "READ"))),
    "anonymous-object-acl-authenticated": r(ANON, None, PLAIN, GET, "k", False,
                                            object_acl=grants((AUTHENTICATED_USERS, "READ"))),
    "anonymous-service-action": r(ANON, None, None, "s3:ListAllMyBuckets", None, False),

    # NotAction / NotResource / NotPrincipal
    "not-action-allows-others": r(ALICE, RW, bucket(policy=bucket_policy(
        {"Effect": "Allow", "Principal": "*", "NotAction": "s3:DeleteObject", "Resource": [BUCKET_ARN, OBJECTS]})),
        GET, "k", True),
    "not-action-excludes-its-action": r(ALICE, RW, bucket(policy=bucket_policy(
        {"Effect": "Allow", "Principal": "*", "NotAction": "s3:DeleteObject", "Resource": [BUCKET_ARN, OBJECTS]})),
        "s3:DeleteObject", "k", False),
    "deny-not-action-denies-others": r(ALICE, RW, bucket(policy=bucket_policy(allow(), {
        "Effect": "Deny", "Principal": "*", "NotAction": ["s3:GetObject", "s3:ListBucket"], "Resource": OBJECTS})),
        PUT, "k", False),
    "deny-not-action-spares-its-actions": r(ALICE, RW, bucket(policy=bucket_policy(allow(), {
        "Effect": "Deny", "Principal": "*", "NotAction": ["s3:GetObject", "s3:ListBucket"], "Resource": OBJECTS})),
        GET, "k", True),
    "not-resource-allows-others": r(ANON, None, bucket(policy=bucket_policy(
        {"Effect": "Allow", "Principal": "*", "Action": GET, "NotResource": f"arn:aws:s3:::{B}/private/*"})),
        GET, "public/a", True),
    "not-resource-excludes-its-resource": r(ANON, None, bucket(policy=bucket_policy(
        {"Effect": "Allow", "Principal": "*", "Action": GET, "NotResource": f"arn:aws:s3:::{B}/private/*"})),
        GET, "private/a", False),
    "deny-not-resource": r(ALICE, RW, bucket(policy=bucket_policy(allow(), {
        "Effect": "Deny", "Principal": "*", "Action": GET, "NotResource": f"arn:aws:s3:::{B}/shared/*"})),
        GET, "mine/a", False),
    "deny-not-resource-spares": r(ALICE, RW, bucket(policy=bucket_policy(allow(), {
        "Effect": "Deny", "Principal": "*", "Action": GET, "NotResource": f"arn:aws:s3:::{B}/shared/*"})),
        GET, "shared/a", True),
    "deny-not-principal-spares-the-named": r(ALICE, RW, bucket(policy=bucket_policy(allow(), {
        "Effect": "Deny", "NotPrincipal": {"AWS": arn("alice")}, "Action": "s3:*", "Resource": OBJECTS})),
        GET, "k", True),
    "deny-not-principal-denies-the-others": r(BOB, RW, bucket(policy=bucket_policy(allow(), {
        "Effect": "Deny", "NotPrincipal": {"AWS": arn("alice")}, "Action": "s3:*", "Resource": OBJECTS})),
        GET, "k", False),
    "deny-not-principal-denies-anonymous": r(ANON, None, bucket(policy=bucket_policy(allow(), {
        "Effect": "Deny", "NotPrincipal": {"AWS": arn("alice")}, "Action": "s3:*", "Resource": OBJECTS})),
        GET, "k", False),
    "deny-not-principal-denies-the-owner": r(OWNER, RW, bucket(policy=bucket_policy({
        "Effect": "Deny", "NotPrincipal": {"AWS": arn("alice")}, "Action": "s3:*", "Resource": OBJECTS})),
        GET, "k", False),
    "allow-not-principal-grants-the-others": r(BOB, RW, bucket(policy=bucket_policy({
        "Effect": "Allow", "NotPrincipal": {"AWS": arn("alice")}, "Action": GET, "Resource": OBJECTS})),
        GET, "k", True),
    "allow-not-principal-not-the-named": r(ALICE, RW, bucket(policy=bucket_policy({
        "Effect": "Allow", "NotPrincipal": {"AWS": arn("alice")}, "Action": GET, "Resource": OBJECTS})),
        GET, "k", False),

    # wildcards: actions case-insensitive, resources case-sensitive
    "action-upper-case": r(ALICE, RW, bucket(policy=bucket_policy(allow(action="S3:GETOBJECT", resource=OBJECTS))),
                           GET, "k", True),
    "action-prefix-wildcard": r(ALICE, RW, bucket(policy=bucket_policy(allow(action="s3:Get*", resource=OBJECTS))),
                                "s3:GetObjectAcl", "k", True),
    "action-prefix-wildcard-other": r(ALICE, RW, bucket(policy=bucket_policy(allow(action="s3:Get*",
                                                                                    resource=OBJECTS))),
                                      PUT, "k", False),
    "action-inner-wildcard": r(ALICE, RW, bucket(policy=bucket_policy(allow(action="s3:*Object",
                                                                            resource=OBJECTS))), PUT, "k", True),
    "action-inner-wildcard-longer": r(ALICE, RW, bucket(policy=bucket_policy(allow(action="s3:*Object",
                                                                                   resource=OBJECTS))),
                                      "s3:PutObjectAcl", "k", False),
    "action-question-mark": r(ALICE, RW, bucket(policy=bucket_policy(allow(action="s3:?etObject", resource=OBJECTS))),
                              GET, "k", True),
    "action-star": r(ALICE, RW, bucket(policy=bucket_policy(allow(action="*"))), "s3:DeleteObject", "k", True),
    "resource-exact-key": r(ANON, None, bucket(policy=bucket_policy(allow(action=GET,
                                                                          resource=f"arn:aws:s3:::{B}/a.txt"))),
                            GET, "a.txt", True),
    "resource-case-sensitive": r(ANON, None, bucket(policy=bucket_policy(allow(action=GET,
                                                                               resource=f"arn:aws:s3:::{B}/Public/*"))),
                                 GET, "public/a", False),
    "resource-case-sensitive-match": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/Public/*"))), GET, "Public/a", True),
    "resource-question-mark": r(ANON, None, bucket(policy=bucket_policy(allow(action=GET,
                                                                              resource=f"arn:aws:s3:::{B}/v?/*"))),
                                GET, "v2/a", True),
    "resource-question-mark-one-char": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/v?/*"))), GET, "v10/a", False),
    "resource-star-crosses-slashes": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/a/*"))), GET, "a/b/c/d", True),
    "resource-bucket-arn-not-objects": r(ANON, None, bucket(policy=bucket_policy(allow(action=LIST,
                                                                                       resource=BUCKET_ARN))),
                                         GET, "k", False),
    "resource-bucket-wildcard": r(ANON, None, bucket(policy=bucket_policy(allow(action=GET,
                                                                                resource="arn:aws:s3:::ph*/*"))),
                                  GET, "k", True),
    "resource-object-arn-not-bucket": r(ANON, None, bucket(policy=bucket_policy(allow(action="s3:*",
                                                                                      resource=OBJECTS))),
                                        LIST, None, False),

    # policy variables
    "variable-username-own-folder": r(ALICE, RW, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/home/${{aws:username}}/*"))), GET, "home/alice/a", True),
    "variable-username-other-folder": r(ALICE, RW, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/home/${{aws:username}}/*"))), GET, "home/bob/a", False),
    "variable-userid": r(BOB, RW, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/${{aws:userid}}/*"))), GET, "bob/a", True),
    "variable-in-user-policy": r(ALICE, user_policy(allow(resource=f"arn:aws:s3:::*/home/${{aws:username}}/*")),
                                 bucket(policy=bucket_policy(allow())), PUT, "home/alice/x", True),
    "variable-in-user-policy-other": r(ALICE, user_policy(allow(resource=f"arn:aws:s3:::*/home/${{aws:username}}/*")),
                                       bucket(policy=bucket_policy(allow())), PUT, "home/bob/x", False),
    "variable-in-condition": r(ALICE, RW, bucket(policy=bucket_policy(
        allow(action=LIST, resource=BUCKET_ARN,
              Condition={"StringLike": {"s3:prefix": "home/${aws:username}/*"}}))), LIST, None, True,
        context={"s3:prefix": ["home/alice/docs"]}),
    "variable-in-condition-other": r(ALICE, RW, bucket(policy=bucket_policy(
        allow(action=LIST, resource=BUCKET_ARN,
              Condition={"StringLike": {"s3:prefix": "home/${aws:username}/*"}}))), LIST, None, False,
        context={"s3:prefix": ["home/bob/docs"]}),
    "variable-anonymous-has-no-name": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/home/${{aws:username}}/*"))), GET, "home//a", False),
    "variable-literal-star": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/star${{*}}"))), GET, "star*", True),
    "variable-literal-star-not-wildcard": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/star${{*}}"))), GET, "starX", False),
    "variable-literal-dollar": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=f"arn:aws:s3:::{B}/price${{$}}"))), GET, "price$", True),

    # conditions in a grant
    "condition-source-ip-in": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=OBJECTS, Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))),
        GET, "k", True, context={"aws:sourceip": ["10.1.2.3"]}),
    "condition-source-ip-out": r(ANON, None, bucket(policy=bucket_policy(
        allow(action=GET, resource=OBJECTS, Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))),
        GET, "k", False, context={"aws:sourceip": ["192.0.2.1"]}),
    "condition-deny-insecure-transport": r(OWNER, RW, bucket(policy=bucket_policy(
        deny(Condition={"Bool": {"aws:SecureTransport": "false"}}))), GET, "k", False,
        context={"aws:securetransport": ["false"]}),
    "condition-deny-insecure-transport-tls": r(OWNER, RW, bucket(policy=bucket_policy(
        deny(Condition={"Bool": {"aws:SecureTransport": "false"}}))), GET, "k", True,
        context={"aws:securetransport": ["true"]}),
    "condition-deny-unless-acl-private": r(ALICE, RW, bucket(policy=bucket_policy(
        allow(), deny(action=PUT, resource=OBJECTS,
                      Condition={"StringNotEquals": {"s3:x-amz-acl": "private"}}))), PUT, "k", False),
    "condition-deny-unless-acl-private-given": r(ALICE, RW, bucket(policy=bucket_policy(
        allow(), deny(action=PUT, resource=OBJECTS,
                      Condition={"StringNotEquals": {"s3:x-amz-acl": "private"}}))), PUT, "k", True,
        context={"s3:x-amz-acl": ["private"]}),

    # BucketOwnerEnforced: ACLs are off, every grant of an ACL is ignored
    "enforced-bucket-acl-ignored": r(ALICE, RW, bucket(acls_enabled=False, acl=grants(("alice", "FULL_CONTROL"))),
                                     LIST, None, False),
    "enforced-object-acl-ignored": r(ALICE, RW, bucket(acls_enabled=False), GET, "k", False,
                                     object_acl=grants(("alice", "READ"))),
    "enforced-public-acl-ignored": r(ANON, None, bucket(acls_enabled=False, acl=grants((ALL_USERS, "READ"))),
                                     LIST, None, False),
    "enforced-policy-still-counts": r(ALICE, RW, bucket(acls_enabled=False, policy=bucket_policy(allow())),
                                      GET, "k", True),
    "enforced-owner-unaffected": r(OWNER, RW, bucket(acls_enabled=False), GET, "k", True),

    # IgnorePublicAcls: grants to AllUsers/AuthenticatedUsers are ignored, grants to users kept
    "ignore-public-all-users-bucket": r(ANON, None, bucket(ignore_public_acls=True, acl=grants((ALL_USERS, "READ"))),
                                        LIST, None, False),
    "ignore-public-all-users-object": r(ANON, None, bucket(ignore_public_acls=True), GET, "k", False,
                                        object_acl=grants((ALL_USERS, "READ"))),
    "ignore-public-authenticated": r(ALICE, RW, bucket(ignore_public_acls=True,
                                                       acl=grants((AUTHENTICATED_USERS, "WRITE"))), PUT, "k", False),
    "ignore-public-user-grant-kept": r(ALICE, RW, bucket(ignore_public_acls=True, acl=grants(("alice", "READ"))),
                                       LIST, None, True),
    "ignore-public-user-object-grant-kept": r(ALICE, RW, bucket(ignore_public_acls=True), GET, "k", True,
                                              object_acl=grants(("alice", "READ"))),
    "ignore-public-policy-unaffected": r(ANON, None, bucket(ignore_public_acls=True,
                                                            policy=bucket_policy(allow(action=GET, resource=OBJECTS))),
                                         GET, "k", True),

    # RestrictPublicBuckets: a public policy grants nothing to anyone but the owner
    "restrict-anonymous": r(ANON, None, bucket(restrict_public_buckets=True,
                                               policy=bucket_policy(allow(action=GET, resource=OBJECTS))),
                            GET, "k", False),
    "restrict-other-user": r(ALICE, RW, bucket(restrict_public_buckets=True, policy=bucket_policy(allow())),
                             GET, "k", False),
    "restrict-other-user-named-in-a-public-policy": r(ALICE, RW, bucket(restrict_public_buckets=True,
                                                                        policy=bucket_policy(
                                                                            allow({"AWS": arn("alice")}),
                                                                            allow(action=GET, resource=OBJECTS))),
                                                      PUT, "k", False),
    "restrict-owner-keeps-public-grant": r(OWNER, None, bucket(restrict_public_buckets=True,
                                                               policy=bucket_policy(allow())), GET, "k", True),
    "restrict-non-public-policy-counts": r(ALICE, RW, bucket(restrict_public_buckets=True,
                                                             policy=bucket_policy(allow({"AWS": arn("alice")}))),
                                           GET, "k", True),
    "restrict-narrowed-policy-counts": r(ANON, None, bucket(restrict_public_buckets=True, policy=bucket_policy(
        allow(action=GET, resource=OBJECTS, Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))),
        GET, "k", True, context={"aws:sourceip": ["10.0.0.1"]}),
    "restrict-deny-still-counts": r(OWNER, RW, bucket(restrict_public_buckets=True,
                                                      policy=bucket_policy(allow(), deny(action=GET))),
                                    GET, "k", False),
    "restrict-acl-unaffected": r(ANON, None, bucket(restrict_public_buckets=True, policy=bucket_policy(allow(
        action=PUT, resource=OBJECTS)), acl=grants((ALL_USERS, "READ"))), LIST, None, True),

    # service-level actions (no bucket): the user's policy alone
    "service-list-readonly": r(ALICE, RO, None, "s3:ListAllMyBuckets", None, True),
    "service-list-writeonly": r(ALICE, WO, None, "s3:ListAllMyBuckets", None, False),
    "service-create-readwrite": r(ALICE, RW, None, "s3:CreateBucket", None, True),
    "service-create-readonly": r(ALICE, RO, None, "s3:CreateBucket", None, False),
    "service-no-policy": r(ALICE, None, None, "s3:ListAllMyBuckets", None, False),
    "service-identity-deny": r(ALICE, user_policy(allow(resource="*"), deny(action="s3:CreateBucket", resource="*")),
                               None, "s3:CreateBucket", None, False),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_decide(name):
    row = TABLE[name]
    decision = evaluate(row)
    assert decision.allowed is row.allowed, f"{name}: {decision.reason}"


# --------------------------------------------------------------------------------------------
# The object's ACL is asked for only when it could still change the answer

NEEDS = [
    ("other-object-read-no-grant", r(ALICE, RW, PLAIN, GET, "k", False), True),
    ("anonymous-object-read-no-grant", r(ANON, None, PLAIN, GET, "k", False), True),
    ("other-object-acl-read", r(ALICE, RW, PLAIN, "s3:GetObjectAcl", "k", False), True),
    ("other-object-acl-write", r(ALICE, RW, PLAIN, "s3:PutObjectAcl", "k", False), True),
    ("put-object-is-a-bucket-grant", r(ALICE, RW, PLAIN, PUT, "k", False), False),
    ("delete-object-is-a-bucket-grant", r(ALICE, RW, PLAIN, "s3:DeleteObject", "k", False), False),
    ("bucket-action", r(ALICE, RW, PLAIN, LIST, None, False), False),
    ("owner", r(OWNER, RW, PLAIN, GET, "k", True), False),
    ("owner-denied", r(OWNER, None, PLAIN, GET, "k", False), False),
    ("root", r(ROOT, None, PLAIN, GET, "k", True), False),
    ("granted-by-policy", r(ALICE, RW, bucket(policy=bucket_policy(allow())), GET, "k", True), False),
    ("denied-by-policy", r(ALICE, RW, bucket(policy=bucket_policy(deny())), GET, "k", False), False),
    ("denied-by-user-policy", r(ALICE, WO, PLAIN, GET, "k", False), False),
    ("no-user-policy", r(ALICE, None, PLAIN, GET, "k", False), False),
    ("acls-disabled", r(ALICE, RW, bucket(acls_enabled=False), GET, "k", False), False),
    ("granted-by-bucket-acl", r(ALICE, RW, bucket(acl=grants(("alice", "WRITE"))), PUT, "k", True), False),
]


@pytest.mark.parametrize("name,row,needs", NEEDS, ids=[n[0] for n in NEEDS])
def test_needs_object_acl(name, row, needs):
    req = AccessRequest(row.caller, row.action, B, row.key, row.identity, row.context)  # type: ignore[arg-type]
    first = decide(req, row.access)
    assert first.needs_object_acl is needs, first.reason
    if needs:
        assert not first.allowed
    assert first.allowed is row.allowed or needs


def test_object_acl_is_not_consulted_when_not_needed():
    """A grant in the object's ACL does not reach past what decides first: the bucket policy's
    Deny, the user's policy, or a bucket with ACLs disabled."""
    acl = grants(("alice", "FULL_CONTROL"))
    for access, identity in ((bucket(policy=bucket_policy(deny(action=GET))), RW), (PLAIN, WO),
                             (bucket(acls_enabled=False), RW)):
        req = AccessRequest(ALICE, GET, B, "k", identity)
        assert not decide(req, access, acl, object_acl_known=True).allowed


def test_object_acl_known_but_absent():
    req = AccessRequest(ALICE, GET, B, "k", RW)
    decision = decide(req, PLAIN, None, object_acl_known=True)
    assert not decision.allowed and not decision.needs_object_acl


def test_reasons_say_which_rule_decided():
    cases = [
        (ROOT, None, PLAIN, "root user"),
        (OWNER, user_policy(deny()), PLAIN, "explicit deny in the user's policy"),
        (OWNER, RW, bucket(policy=bucket_policy(deny())), "explicit deny in the bucket policy"),
        (OWNER, RW, PLAIN, "bucket owner"),
        (ALICE, RW, bucket(policy=bucket_policy(allow())), "bucket policy"),
        (ALICE, RW, bucket(acl=grants(("alice", "READ"))), "bucket ACL"),
        (ALICE, WO, bucket(acl=grants(("alice", "READ"))), "not allowed by the user's policy"),
    ]
    for caller, identity, access, reason in cases:
        assert decide(AccessRequest(caller, LIST, B, None, identity), access).reason == reason


def test_rows_differ_only_in_what_they_test():
    """Guard against a table row passing for the wrong reason: flipping the one input a
    pair of rows differs in flips the answer."""
    base = TABLE["other-readwrite-policy-grant"]
    assert evaluate(base).allowed
    assert not evaluate(replace(base, identity=RO)).allowed
    assert not evaluate(replace(base, caller=BOB)).allowed
    assert not evaluate(replace(base, access=PLAIN)).allowed
