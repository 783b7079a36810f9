"""The one decision: may this caller do this action on this resource?

Users are isolated from each other the way AWS isolates accounts:

1. The root user may do everything.
2. An explicit ``Deny`` (in the caller's user policy, or in a bucket-policy statement that
   applies to the caller) beats every ``Allow``.
3. The bucket's owner may do what its user policy or the bucket policy allows.
4. Another user needs both: its own user policy must allow the action (a read-only user
   stays read-only everywhere) *and* the bucket's owner must grant it, by the bucket policy
   or an ACL (the bucket's, or for object reads the object's).
5. An anonymous caller needs a grant to everyone: a bucket policy for ``*`` or an ACL grant
   to AllUsers.

Object ownership ``BucketOwnerEnforced`` turns ACLs off; the public access block's
``IgnorePublicAcls`` ignores ACL grants to AllUsers/AuthenticatedUsers, and
``RestrictPublicBuckets`` ignores a public bucket policy's grants for anyone but the owner.
The bucket's owner may do everything its policies allow to every object in the bucket,
whoever wrote it (as with ``BucketOwnerEnforced``, AWS's default ownership).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from buckets.iam.acl import ACL, BUCKET_PERMISSIONS, OBJECT_PERMISSIONS
from buckets.iam.actions import resource_arn
from buckets.iam.identity import Caller, canonical_id
from buckets.iam.policy import Policy


@dataclass(frozen=True, slots=True)
class BucketAccess:
    """What the bucket says about access: its owner, policy, ACL and switches."""

    owner: str  # access key of the owner; "" the root user
    policy: Policy | None = None
    acl: ACL | None = None  # None: nobody set one (the owner alone)
    acls_enabled: bool = True  # False under BucketOwnerEnforced
    ignore_public_acls: bool = False
    restrict_public_buckets: bool = False


@dataclass(frozen=True, slots=True)
class AccessRequest:
    caller: Caller
    action: str  # "s3:GetObject"
    bucket: str | None
    key: str | None = None
    identity: Policy | None = None  # the caller's user policy (None: allows nothing)
    context: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    # Not allowed yet, but the object's ACL could still grant it: ask again with it.
    needs_object_acl: bool = False


def _effects(policy: Policy | None, req: AccessRequest, resource: str, variables: Mapping[str, str],
             *, skip_public: bool = False) -> tuple[bool, bool]:
    """(some statement allows, some statement denies) for this request."""
    if policy is None:
        return False, False
    allow = deny = False
    for st in policy.statements:
        if not st.applies_to(req.caller.access_key, req.caller.root):
            continue
        if st.allow and (allow or (skip_public and st.is_public)):
            continue
        if not st.allow and deny:
            continue
        if st.matches(req.action, resource, req.context, variables):
            if st.allow:
                allow = True
            else:
                deny = True
    return allow, deny


def decide(req: AccessRequest, bucket: BucketAccess | None = None, object_acl: ACL | None = None,
           *, object_acl_known: bool = False) -> Decision:
    caller = req.caller
    if caller.root:
        return Decision(True, "root user")
    resource = resource_arn(req.bucket, req.key)
    # An anonymous caller has no name: a statement that needs one does not apply to it.
    variables = {} if caller.anonymous else {"aws:username": caller.access_key, "aws:userid": caller.access_key}
    identity_allow, identity_deny = (False, False) if caller.anonymous else \
        _effects(req.identity, req, resource, variables)
    if identity_deny:
        return Decision(False, "explicit deny in the user's policy")
    if bucket is None:  # a service-level action (ListAllMyBuckets, CreateBucket)
        if identity_allow:
            return Decision(True, "user policy")
        return Decision(False, "not allowed by the user's policy")
    owner = caller.is_owner(bucket.owner)
    restrict = bucket.restrict_public_buckets and not owner and bucket.policy is not None and bucket.policy.is_public
    bucket_allow, bucket_deny = _effects(bucket.policy, req, resource, variables, skip_public=restrict)
    if restrict:
        bucket_allow = False
    if bucket_deny:
        return Decision(False, "explicit deny in the bucket policy")
    if owner:
        if identity_allow or bucket_allow:
            return Decision(True, "bucket owner")
        return Decision(False, "not allowed by the owner's user policy")
    if not caller.anonymous and not identity_allow:
        return Decision(False, "not allowed by the user's policy")
    if bucket_allow:
        return Decision(True, "bucket policy")
    if bucket.acls_enabled:
        caller_id = None if caller.anonymous else canonical_id(caller.access_key)  # type: ignore[arg-type]
        if bucket.acl is not None and bucket.acl.allows(BUCKET_PERMISSIONS, req.action, caller_id,
                                                        bucket.ignore_public_acls):
            return Decision(True, "bucket ACL")
        if req.key is not None and any(req.action in p for p in OBJECT_PERMISSIONS.values()):
            if not object_acl_known:
                return Decision(False, "no grant yet", needs_object_acl=True)
            if object_acl is not None and object_acl.allows(OBJECT_PERMISSIONS, req.action, caller_id,
                                                            bucket.ignore_public_acls):
                return Decision(True, "object ACL")
    return Decision(False, "no policy or ACL of the bucket's owner grants it")
