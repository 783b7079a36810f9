"""Authorization of S3 requests: may this caller do this action on this resource?

``authorize`` is the one function every operation goes through: the pipeline calls it
with the operation's action (``buckets.iam.actions.OPERATION_ACTIONS``); handlers call it
again only for what one request does to several resources (each key of DeleteObjects,
the source of a copy, the upload of a POST form). The decision itself is
``buckets.iam.decide``'s; this module gathers its inputs: the caller's user policy, the
bucket's owner, policy, ACL and switches, the object's ACL when it matters, and the
request's condition keys. The root user is allowed before anything is read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from buckets import errors
from buckets.errors import AccessDenied
from buckets.iam import ACL, AccessRequest, BucketAccess, Caller, Policy, canned_user_policy, decide, parse_policy
from buckets.iam.errors import MalformedPolicy
from buckets.iam.identity import account_id, canonical_id
from buckets.s3.auth.credentials import METHOD_V2_HEADER, METHOD_V2_QUERY, METHOD_V4_HEADER, METHOD_V4_QUERY

log = logging.getLogger("buckets.s3.access")

_READS = ("s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes", "s3:GetObjectVersionAttributes")
# Actions that need no bucket record (the bucket may not exist yet, or none is named).
_SERVICE_ACTIONS = ("s3:CreateBucket", "s3:ListAllMyBuckets")
_CONTEXT_HEADERS = (
    "x-amz-acl", "x-amz-content-sha256", "x-amz-copy-source", "x-amz-metadata-directive",
    "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-customer-algorithm", "x-amz-storage-class", "x-amz-grant-read",
    "x-amz-grant-write", "x-amz-grant-read-acp", "x-amz-grant-write-acp", "x-amz-grant-full-control",
    "x-amz-object-ownership", "if-match", "if-none-match",
)


def caller_of(req: Any) -> Caller:
    auth = req.auth
    access_key = None if auth is None else auth.access_key
    if access_key is None:
        return Caller(None)
    return Caller(access_key, root=access_key == req.config.root_user)


def owner_name(req: Any) -> str:
    """The owner recorded for what this caller creates ("" for the root user)."""
    caller = caller_of(req)
    return "" if caller.root or caller.access_key is None else caller.access_key


def owner_key(req: Any, owner: str) -> str:
    """The access key of a recorded owner ("" is the root user)."""
    return owner or req.config.root_user


def owner_ids(req: Any, owner: str) -> tuple[str, str]:
    """(canonical ID, display name) of a recorded owner."""
    name = owner_key(req, owner)
    return canonical_id(name), name


def user_policy(req: Any, access_key: str) -> Policy | None:
    """The policy attached to a user: a canned one by name, a named one, or a JSON document.
    A user whose policy cannot be resolved is allowed nothing (and the server says why)."""
    users = getattr(req.store, "users", None)
    record = users.registry.get_user(access_key) if users is not None else None
    if record is None:
        return None
    name = record.get("policy") or "readwrite"
    canned = canned_user_policy(name)
    if canned is not None:
        return canned
    text = name
    if not name.lstrip().startswith("{"):
        named = users.get_policy(name)
        if named is None:
            log.warning("user %s has policy %r, which does not exist: the user is allowed nothing", access_key, name)
            return None
        text = named["document"]
    try:
        return parse_policy(text)
    except MalformedPolicy as exc:
        log.warning("user %s: its policy %r is not valid (%s): the user is allowed nothing", access_key, name, exc)
        return None


def bucket_access(name: str, record: Mapping[str, Any]) -> BucketAccess:
    policy = None
    text = record.get("policy")
    if text:
        try:
            policy = parse_policy(text, name)
        except MalformedPolicy:  # stored only after it parsed; a newer rule may refuse it
            log.warning("bucket %s: its stored policy no longer parses; it grants nothing", name)
    block = record.get("public_access_block") or {}
    return BucketAccess(
        owner=record.get("owner", ""), policy=policy,
        acl=ACL.from_record(record.get("acl"), record.get("owner", "")),
        acls_enabled=record.get("ownership") != "BucketOwnerEnforced",
        ignore_public_acls=bool(block.get("IgnorePublicAcls")),
        restrict_public_buckets=bool(block.get("RestrictPublicBuckets")))


def request_context(req: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Sequence[str]]:
    """The condition keys of this request (lower-case names, lists of string values)."""
    request = req.request
    caller = caller_of(req)
    auth = req.auth
    now = time.time()
    ctx: dict[str, Sequence[str]] = {
        "aws:currenttime": [datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")],
        "aws:epochtime": [str(int(now))],
        "aws:securetransport": ["true" if request.secure else "false"],
        "aws:principaltype": ["Anonymous" if caller.anonymous else "Account" if caller.root else "User"],
    }
    remote = request.remote
    if remote:
        ctx["aws:sourceip"] = [remote]
    for header, key in (("Referer", "aws:referer"), ("User-Agent", "aws:useragent")):
        value = request.headers.get(header)
        if value is not None:
            ctx[key] = [value]
    if not caller.anonymous:
        ctx["aws:username"] = ctx["aws:userid"] = [caller.access_key]  # type: ignore[list-item]
        ctx["aws:principalaccount"] = [account_id(caller.access_key)]  # type: ignore[arg-type]
    method = getattr(auth, "method", None)
    if method in (METHOD_V4_HEADER, METHOD_V2_HEADER):
        ctx["s3:authtype"] = ["REST-HEADER"]
    elif method in (METHOD_V4_QUERY, METHOD_V2_QUERY):
        ctx["s3:authtype"] = ["REST-QUERY-STRING"]
    if method in (METHOD_V4_HEADER, METHOD_V4_QUERY):
        ctx["s3:signatureversion"] = ["AWS4-HMAC-SHA256"]
    elif method in (METHOD_V2_HEADER, METHOD_V2_QUERY):
        ctx["s3:signatureversion"] = ["AWS"]
    for header in _CONTEXT_HEADERS:
        value = request.headers.get(header)
        if value is not None:
            ctx["s3:" + header] = [value]
    query = request.query
    for name in ("prefix", "delimiter", "max-keys"):
        if name in query:
            ctx["s3:" + name] = [query[name]]
    if "versionId" in query:
        ctx["s3:versionid"] = [query["versionId"]]
    for key, value in (extra or {}).items():
        ctx[key.lower()] = value if isinstance(value, list) else [str(value)]
    return ctx


async def _bucket_record(req: Any, bucket: str) -> dict:
    record = req.store.catalog.get_bucket(bucket)
    if record is None:
        record = await req.store.catalog.find_bucket(bucket)
    if record is None:
        raise errors.NoSuchBucket(resource=bucket, BucketName=bucket)
    return record


async def allowed(req: Any, action: str, bucket: str | None, key: str | None = None, *,
                  context: Mapping[str, Any] | None = None, record: Mapping[str, Any] | None = None) -> bool:
    """Whether the caller may do ``action`` on ``bucket``/``key`` (``NoSuchBucket`` when the
    bucket does not exist and the action needs one)."""
    caller = caller_of(req)
    if caller.root:
        return True
    identity = None if caller.anonymous else user_policy(req, caller.access_key)  # type: ignore[arg-type]
    areq = AccessRequest(caller, action, bucket, key, identity, request_context(req, context))
    if bucket is None or action in _SERVICE_ACTIONS:
        return decide(areq).allowed
    if record is None:
        record = await _bucket_record(req, bucket)
    access = bucket_access(bucket, record)
    decision = decide(areq, access)
    if decision.needs_object_acl:
        found = await req.store.object_access(bucket, key)
        acl = None
        if found is not None:
            owner = found["own"] if found.get("own") is not None else access.owner  # "" is the root user
            acl = ACL.from_record(found.get("acl"), owner)
            if acl is None and found.get("own") is not None and found.get("own") != access.owner:
                from buckets.iam.acl import owner_acl

                acl = owner_acl(found["own"], canonical_id(owner_key(req, found["own"])))
        decision = decide(areq, access, acl, object_acl_known=True)
    if not decision.allowed:
        log.debug("request %s: %s on %s/%s by %s denied: %s", req.request_id, action, bucket, key,
                  caller.access_key or "anonymous", decision.reason)
    return decision.allowed


async def authorize(req: Any, action: str, bucket: str | None, key: str | None = None, *,
                    context: Mapping[str, Any] | None = None) -> None:
    """Raise ``AccessDenied`` unless the caller (``req.auth``) may do ``action`` (an IAM
    action name such as ``s3:PutObject``) on ``bucket``/``key``. ``context`` adds condition
    keys the request itself does not carry (``s3:x-amz-acl`` of a POST form field, ...)."""
    if not await allowed(req, action, bucket, key, context=context):
        if key is not None and action in _READS and bucket is not None \
                and await req.store.object_access(bucket, key) is None \
                and await allowed(req, "s3:ListBucket", bucket):
            # As AWS: a caller who may list the bucket learns the key is not there (404);
            # one who may not gets 403 and learns nothing.
            raise errors.NoSuchKey(resource=f"/{bucket}/{key}", Key=key)
        raise AccessDenied()


def check_expected_owner(req: Any, record: Mapping[str, Any], header: str = "x-amz-expected-bucket-owner") -> None:
    """``x-amz-expected-bucket-owner``: the bucket's owner must be the one named (by account
    ID, canonical ID or access key), else 403 AccessDenied as AWS answers."""
    expected = req.headers.get(header)
    if expected is None:
        return
    name = owner_key(req, record.get("owner", ""))
    if expected.strip() not in (account_id(name), canonical_id(name), name):
        raise AccessDenied()
