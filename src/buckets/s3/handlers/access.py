"""Who may do what, as S3 configuration: bucket policies, ACLs, ownership controls and the
public access block. The decisions themselves are ``buckets.iam``'s; these handlers
validate and store each setting (``Store.update_bucket``, ``Store.set_object_access``) and
give it back in AWS's format."""

from __future__ import annotations

from aiohttp import web

from buckets.errors import AccessDenied, InvalidRequest, MalformedXML
from buckets.iam.acl import ACL, owner_acl
from buckets.iam.errors import (
    InvalidBucketAclWithObjectOwnership,
    MalformedACLError,
    MalformedPolicy,
    NoSuchBucketPolicy,
    NoSuchPublicAccessBlockConfiguration,
    OwnershipControlsNotFoundError,
)
from buckets.iam.identity import canonical_id
from buckets.iam.policy import MAX_POLICY_BYTES, parse_policy
from buckets.s3.acls import acl_from_document, acl_from_headers, check_acl_allowed, ownership_of, render_acl
from buckets.s3.body import read_document
from buckets.s3.context import S3Request
from buckets.s3.handlers.common import empty_response, xml_response
from buckets.s3.permissions import bucket_access, owner_key
from buckets.s3.xmlio import XmlBuilder, parse_document

MAX_ACL_XML = 64 * 1024
OWNERSHIP_VALUES = ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter")
PAB_FIELDS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


# -- bucket policy ----------------------------------------------------------------------------
async def get_bucket_policy(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    text = record.get("policy")
    if not text:
        raise NoSuchBucketPolicy(BucketName=req.bucket)
    return web.Response(status=200, body=text.encode("utf-8", "surrogateescape"),
                        headers={"Content-Type": "application/json"})


async def put_bucket_policy(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    try:
        body, _ = await read_document(req, MAX_POLICY_BYTES * 8)
    except MalformedXML:  # the only complaint read_document has: too large
        raise MalformedPolicy("Policy exceeds the maximum allowed document size.") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPolicy("Policies must be valid JSON and the first byte must be '{'") from None
    if not text.strip():
        raise MalformedPolicy("Policies must be valid JSON and the first byte must be '{'")
    policy = parse_policy(text, req.bucket)
    block = record.get("public_access_block") or {}
    if block.get("BlockPublicPolicy") and policy.is_public:
        raise AccessDenied()
    await req.store.update_bucket(req.bucket, set={"policy": text})
    return empty_response(204)


async def delete_bucket_policy(req: S3Request) -> web.StreamResponse:
    await req.store.update_bucket(req.bucket, unset=["policy"])
    return empty_response(204)


async def get_bucket_policy_status(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    if not record.get("policy"):
        raise NoSuchBucketPolicy(BucketName=req.bucket)
    access = bucket_access(req.bucket, record)
    public = access.policy is not None and access.policy.is_public
    doc = XmlBuilder("PolicyStatus").elem("IsPublic", public)
    return xml_response(doc.finish())


# -- ACLs -------------------------------------------------------------------------------------
async def _acl_in_request(req: S3Request, owner: str, *, for_bucket: bool, bucket_owner: str):
    """The ACL a Put*Acl request sets: by header (canned or grants) or by document, not both."""
    from_headers = acl_from_headers(req, owner, for_bucket=for_bucket, bucket_owner=bucket_owner)
    body, _ = await read_document(req, MAX_ACL_XML)
    if from_headers is not None:
        if body.strip():
            raise InvalidRequest("The request may specify an ACL by headers or in the body, not both.")
        return from_headers
    if not body.strip():
        raise MalformedACLError()
    return acl_from_document(req, parse_document(body, "AccessControlPolicy"), owner)


async def get_bucket_acl(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    owner = record.get("owner", "")
    access = bucket_access(req.bucket, record)
    acl = access.acl if access.acl is not None and access.acls_enabled else \
        owner_acl(owner, canonical_id(owner_key(req, owner)))
    return xml_response(render_acl(req, acl))


async def put_bucket_acl(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    owner = record.get("owner", "")
    acl = await _acl_in_request(req, owner, for_bucket=True, bucket_owner=owner)
    check_acl_allowed(req, record, acl)
    # (judged again on the record the change applies to: an ownership or public access block
    # set through another node meanwhile refuses it, as it would have refused it before)
    judged = {"check": lambda current: check_acl_allowed(req, current, acl),
              "reads": ("ownership", "public_access_block")}
    if acl.is_owner_only:
        await req.store.update_bucket(req.bucket, unset=["acl"], **judged)
    else:
        await req.store.update_bucket(req.bucket, set={"acl": acl.to_record()}, **judged)
    return empty_response(200)


async def get_object_acl(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    await req.store.head_object(req.bucket, req.key)  # NoSuchKey first
    found = await req.store.object_access(req.bucket, req.key) or {}
    owner = found["own"] if found.get("own") is not None else record.get("owner", "")  # "" is the root user
    acl = None
    if ownership_of(record) != "BucketOwnerEnforced" and found.get("acl"):
        acl = ACL.from_record(found["acl"], owner)
    if acl is None:
        acl = owner_acl(owner, canonical_id(owner_key(req, owner)))
    return xml_response(render_acl(req, acl))


async def put_object_acl(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    await req.store.head_object(req.bucket, req.key)
    found = await req.store.object_access(req.bucket, req.key) or {}
    owner = found["own"] if found.get("own") is not None else record.get("owner", "")  # "" is the root user
    acl = await _acl_in_request(req, owner, for_bucket=False, bucket_owner=record.get("owner", ""))
    check_acl_allowed(req, record, acl)
    await req.store.set_object_access(req.bucket, req.key, {"acl": None if acl.is_owner_only else acl.to_record()})
    return empty_response(200)


# -- ownership controls -----------------------------------------------------------------------
async def get_ownership_controls(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    value = record.get("ownership")
    if not value:
        raise OwnershipControlsNotFoundError(BucketName=req.bucket)
    doc = XmlBuilder("OwnershipControls").open("Rule").elem("ObjectOwnership", value).close()
    return xml_response(doc.finish())


async def put_ownership_controls(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    body, _ = await read_document(req, MAX_ACL_XML)
    doc = parse_document(body, "OwnershipControls")
    rules = doc.find_all("Rule")
    if len(rules) != 1:
        raise MalformedXML()
    value = (rules[0].child_text("ObjectOwnership") or "").strip()
    if value not in OWNERSHIP_VALUES:
        raise MalformedXML()

    def check(current: dict) -> None:  # (judged on the record the change applies to: update_bucket)
        if value == "BucketOwnerEnforced":
            access = bucket_access(req.bucket, current)
            if access.acl is not None and not access.acl.is_owner_only:
                raise InvalidBucketAclWithObjectOwnership()

    check(record)
    await req.store.update_bucket(req.bucket, set={"ownership": value}, check=check, reads=("acl",))
    return empty_response(200)


async def delete_ownership_controls(req: S3Request) -> web.StreamResponse:
    await req.store.update_bucket(req.bucket, unset=["ownership"])
    return empty_response(204)


# -- public access block ----------------------------------------------------------------------
async def get_public_access_block(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    block = record.get("public_access_block")
    if block is None:
        raise NoSuchPublicAccessBlockConfiguration(BucketName=req.bucket)
    doc = XmlBuilder("PublicAccessBlockConfiguration")
    for name in PAB_FIELDS:
        doc.elem(name, bool(block.get(name)))
    return xml_response(doc.finish())


async def put_public_access_block(req: S3Request) -> web.StreamResponse:
    await req.store.bucket_record(req.bucket)
    body, _ = await read_document(req, MAX_ACL_XML)
    doc = parse_document(body, "PublicAccessBlockConfiguration")
    block = {}
    for name in PAB_FIELDS:
        text = doc.child_text(name)
        if text is None:
            block[name] = False
            continue
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise MalformedXML()
        block[name] = lowered == "true"
    await req.store.update_bucket(req.bucket, set={"public_access_block": block})
    return empty_response(200)


async def delete_public_access_block(req: S3Request) -> web.StreamResponse:
    await req.store.update_bucket(req.bucket, unset=["public_access_block"])
    return empty_response(204)

