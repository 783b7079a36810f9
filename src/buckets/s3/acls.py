"""ACLs as S3 speaks them: ``x-amz-acl`` and ``x-amz-grant-*`` headers, the
``AccessControlPolicy`` document, and the ACL and owner a new object is written with.

The model (grants, canned ACLs, what each permission allows) is ``buckets.iam.acl``'s;
this module reads and writes it in S3's terms and applies the bucket's object-ownership
setting and public access block to every ACL a request sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from buckets.errors import AccessDenied, InvalidRequest
from buckets.iam.acl import ACL, GRANT_HEADERS, canned_acl, grants_from_headers, make_grant
from buckets.iam.errors import AccessControlListNotSupported, MalformedACLError
from buckets.iam.identity import canonical_id
from buckets.s3.permissions import caller_of, owner_ids, owner_key, owner_name
from buckets.s3.xmlio import XmlBuilder, XmlNode

# Canned ACLs that say no more than "the bucket owner controls it": what a bucket with
# ACLs disabled (BucketOwnerEnforced) still accepts, as AWS does.
OWNER_ONLY_CANNED = ("private", "bucket-owner-full-control")
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def known_ids(req: Any) -> set[str]:
    """The canonical IDs of every user of this deployment (grants may name only these)."""
    ids = {canonical_id(req.config.root_user)}
    users = getattr(req.store, "users", None)
    if users is not None:
        ids.update(canonical_id(ak) for ak, _ in users.registry.list_users())
    return ids


def ownership_of(record: Mapping[str, Any]) -> str:
    return record.get("ownership") or "ObjectWriter"


def acl_from_headers(req: Any, owner: str, *, for_bucket: bool, bucket_owner: str | None = None) -> ACL | None:
    """The ACL ``x-amz-acl`` or ``x-amz-grant-*`` spell for a resource owned by ``owner``
    (None when the request sets none); both at once is InvalidRequest, as AWS answers."""
    canned = req.headers.get("x-amz-acl")
    has_grants = any(h in req.headers for h in GRANT_HEADERS)
    if canned is not None and has_grants:
        raise InvalidRequest("Specifying both Canned ACLs and Header Grants is not allowed")
    owner_id = canonical_id(owner_key(req, owner))
    if canned is not None:
        bucket_owner_id = None if bucket_owner is None else canonical_id(owner_key(req, bucket_owner))
        return canned_acl(canned.strip(), owner, owner_id, bucket_owner_id, for_bucket=for_bucket)
    if has_grants:
        ids = known_ids(req)
        return grants_from_headers(req.headers, owner, owner_id, ids.__contains__)
    return None


def check_acl_allowed(req: Any, record: Mapping[str, Any], acl: ACL | None) -> None:
    """The bucket's object ownership and public access block may refuse an ACL."""
    if acl is None:
        return
    if ownership_of(record) == "BucketOwnerEnforced" and not _owner_only(req, acl):
        raise AccessControlListNotSupported()
    block = record.get("public_access_block") or {}
    if block.get("BlockPublicAcls") and acl.is_public:
        raise AccessDenied()


def _owner_only(req: Any, acl: ACL) -> bool:
    canned = req.headers.get("x-amz-acl")
    if canned is not None:
        return canned.strip() in OWNER_ONLY_CANNED
    return acl.is_owner_only


async def write_access(req: Any, bucket: str) -> dict:
    """The owner and ACL a new object of ``bucket`` is written with (``PutOptions.access``):
    the writer owns it unless the bucket's ownership setting gives it to the bucket owner;
    nothing is recorded when it is the bucket owner's with no grant beyond its own."""
    record = req.store.catalog.get_bucket(bucket) or await req.store.bucket_record(bucket)
    bucket_owner = record.get("owner", "")
    ownership = ownership_of(record)
    writer = owner_name(req)
    if caller_of(req).anonymous:
        writer = bucket_owner  # an anonymous write (public-read-write) belongs to the bucket's owner
    canned = (req.headers.get("x-amz-acl") or "").strip()
    owner = writer
    if ownership == "BucketOwnerEnforced" or (ownership == "BucketOwnerPreferred"
                                              and canned == "bucket-owner-full-control"):
        owner = bucket_owner
    acl = acl_from_headers(req, owner, for_bucket=False, bucket_owner=bucket_owner)
    check_acl_allowed(req, record, acl)
    access: dict = {}
    if owner != bucket_owner:
        access["own"] = owner
    if acl is not None and ownership != "BucketOwnerEnforced" and not (owner == bucket_owner and acl.is_owner_only):
        access["acl"] = acl.to_record()
    return access


def acl_from_document(req: Any, node: XmlNode, expected_owner: str) -> ACL:
    """An ``AccessControlPolicy`` document; its Owner must be the resource's owner."""
    owner_node = node.find("Owner")
    owner_id = owner_node.child_text("ID") if owner_node is not None else None
    expected_id = canonical_id(owner_key(req, expected_owner))
    if owner_id is None:
        raise MalformedACLError()
    if owner_id.strip() != expected_id:
        raise AccessDenied()
    acl_node = node.find("AccessControlList")
    grants = []
    ids = known_ids(req)
    for grant in (acl_node.find_all("Grant") if acl_node is not None else []):
        grantee = grant.find("Grantee")
        permission = (grant.child_text("Permission") or "").strip()
        if grantee is None or not permission:
            raise MalformedACLError()
        if grantee.child_text("ID") is not None:
            kind, value = "id", grantee.child_text("ID") or ""
        elif grantee.child_text("URI") is not None:
            kind, value = "uri", grantee.child_text("URI") or ""
        elif grantee.child_text("EmailAddress") is not None:
            kind, value = "emailaddress", grantee.child_text("EmailAddress") or ""
        else:
            raise MalformedACLError()
        grants.append(make_grant(kind, value.strip(), permission, ids.__contains__))
    return ACL(expected_owner, tuple(grants))


def render_acl(req: Any, acl: ACL) -> bytes:
    doc = XmlBuilder("AccessControlPolicy")
    owner_id, display = owner_ids(req, acl.owner)
    doc.open("Owner").elem("ID", owner_id).elem("DisplayName", display).close()
    doc.open("AccessControlList")
    names = _display_names(req)
    for g in acl.grants:
        doc.open("Grant")
        if g.kind == "id":
            doc.raw(f'<Grantee xmlns:xsi="{XSI}" xsi:type="CanonicalUser">')
            doc.elem("ID", g.grantee)
            if g.grantee in names:
                doc.elem("DisplayName", names[g.grantee])
        else:
            doc.raw(f'<Grantee xmlns:xsi="{XSI}" xsi:type="Group">')
            doc.elem("URI", g.grantee)
        doc.raw("</Grantee>")
        doc.elem("Permission", g.permission)
        doc.close()
    doc.close()
    return doc.finish()


def _display_names(req: Any) -> dict[str, str]:
    names = {canonical_id(req.config.root_user): req.config.root_user}
    users = getattr(req.store, "users", None)
    if users is not None:
        names.update((canonical_id(ak), ak) for ak, _ in users.registry.list_users())
    return names

