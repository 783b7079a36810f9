"""Object Lock: Put/GetObjectLockConfiguration, Put/GetObjectRetention, Put/GetObjectLegalHold,
and what writes and reads of objects carry of it (with their tags).

The bucket's configuration is its record's ``lock`` (``buckets.s3.lockrules``); a version's
retention and legal hold are changed with ``Store.update_object``, which enforces what may be
changed (COMPLIANCE never shortened or removed, GOVERNANCE only with the bypass). The bypass
(``x-amz-bypass-governance-retention: true``) counts only for a caller allowed
``s3:BypassGovernanceRetention``: ``bypass_governance`` decides it, for this module and for
the delete handlers.

``apply_write_options`` is what PutObject, CopyObject and CreateMultipartUpload call to turn
``x-amz-tagging`` (and CopyObject's ``x-amz-tagging-directive``) and the object-lock headers
into ``PutOptions``; ``read_headers`` gives GET and HEAD ``x-amz-tagging-count`` and the lock
headers, each only to a caller allowed to read it, as S3 does.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from buckets.errors import InvalidArgument, InvalidRequest
from buckets.s3 import lockrules, tagrules
from buckets.s3.auth.credentials import STREAMING_SIGNED, STREAMING_SIGNED_TRAILER
from buckets.s3.body import Integrity, read_document
from buckets.s3.context import S3Request, check_key
from buckets.s3.handlers.common import empty_response, xml_response
from buckets.s3.handlers.tagging import version_headers, version_param
from buckets.s3.permissions import allowed, authorize, caller_of

_HEX64 = re.compile(r"[0-9a-f]{64}")
LOCK_CHECKSUM_REQUIRED = ("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests "
                          "with Object Lock parameters")


async def _record(req: S3Request) -> dict:
    return req.store.catalog.get_bucket(req.bucket) or await req.store.bucket_record(req.bucket)


async def bypass_governance(req: S3Request, bucket: str | None = None, key: str | None = None) -> bool:
    """True when the request asks to bypass GOVERNANCE retention and its caller may."""
    if not lockrules.bypass_requested(req.headers):
        return False
    return await allowed(req, "s3:BypassGovernanceRetention", bucket or req.bucket, key or req.key)


def create_bucket_settings(headers) -> dict:
    """CreateBucket's ``x-amz-bucket-object-lock-enabled: true``: Object Lock on, and with it
    versioning (which can then never be suspended)."""
    if (headers.get("x-amz-bucket-object-lock-enabled") or "").strip().lower() == "true":
        return {"lock": {"enabled": True, "mode": None, "days": None, "years": None}, "versioning": "Enabled"}
    return {}


# --- the bucket's configuration ----------------------------------------------------------------


async def put_object_lock_configuration(req: S3Request) -> web.StreamResponse:
    integrity = Integrity.from_headers(req.headers)
    body, reader = await read_document(req, lockrules.MAX_LOCK_XML)
    integrity.reader = reader
    integrity.check_document(body, required=True)
    config = lockrules.parse_configuration(body)

    def check(record: dict) -> None:
        if not lockrules.lock_enabled(record) and record.get("versioning") != "Enabled":
            # S3 turns Object Lock on for an existing bucket only when its versioning is Enabled
            # (judged on the record the change applies to: a suspension of versioning through
            # another node meanwhile refuses it, update_bucket).
            raise lockrules.InvalidBucketState(
                "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration",
                BucketName=req.bucket)

    await req.store.update_bucket(req.bucket, set={"lock": config}, check=check, reads=("lock", "versioning"))
    return empty_response(200)


async def get_object_lock_configuration(req: S3Request) -> web.StreamResponse:
    record = await req.store.bucket_record(req.bucket)
    if not lockrules.lock_enabled(record):
        raise lockrules.ObjectLockConfigurationNotFound(BucketName=req.bucket)
    return xml_response(lockrules.configuration_xml(record["lock"]))


# --- a version's retention and legal hold --------------------------------------------------


async def _lock_document(req: S3Request) -> bytes:
    check_key(req.key)
    integrity = Integrity.from_headers(req.headers)
    body, reader = await read_document(req, lockrules.MAX_LOCK_XML)
    integrity.reader = reader
    integrity.check_document(body, required=True)
    return body


async def put_object_retention(req: S3Request) -> web.StreamResponse:
    body = await _lock_document(req)
    mode, until = lockrules.parse_retention(body)
    lockrules.require_lock(await req.store.bucket_record(req.bucket), req.bucket)
    bypass = await bypass_governance(req)
    info = await req.store.update_object(req.bucket, req.key, version_param(req), lock_mode=mode, lock_until=until,
                                         bypass_governance=bypass)
    return empty_response(200, version_headers(info.version_id))


async def get_object_retention(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    lockrules.require_lock(await req.store.bucket_record(req.bucket), req.bucket)
    info = await req.store.head_object(req.bucket, req.key, version_id=version_param(req))
    if not info.lock_mode or info.lock_until is None:
        raise lockrules.NoSuchObjectLockConfiguration()
    return xml_response(lockrules.retention_xml(info.lock_mode, info.lock_until))


async def put_object_legal_hold(req: S3Request) -> web.StreamResponse:
    body = await _lock_document(req)
    on = lockrules.parse_legal_hold(body)
    lockrules.require_lock(await req.store.bucket_record(req.bucket), req.bucket)
    info = await req.store.update_object(req.bucket, req.key, version_param(req), legal_hold=on)
    return empty_response(200, version_headers(info.version_id))


async def get_object_legal_hold(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    lockrules.require_lock(await req.store.bucket_record(req.bucket), req.bucket)
    info = await req.store.head_object(req.bucket, req.key, version_id=version_param(req))
    if info.legal_hold is None:  # never set on this version (one turned OFF answers OFF)
        raise lockrules.NoSuchObjectLockConfiguration()
    return xml_response(lockrules.legal_hold_xml(info.legal_hold))


# --- writes and reads of objects ----------------------------------------------------------------


def _payload_verified(req: S3Request) -> bool:
    """True when the body is checked end to end by its signature: SigV4 with the body's own
    SHA-256 in ``x-amz-content-sha256`` (the payload reader refuses a body that does not
    match it) or with signed aws-chunked chunks. S3 asks a locked write for Content-MD5 or a
    checksum so that a corrupted body cannot be locked in place; these protect it as well.
    MinIO's Python SDK sends exactly this over plain HTTP (Content-MD5 only over HTTPS)."""
    sha = getattr(req.auth, "content_sha256", None)
    return bool(sha) and (_HEX64.fullmatch(sha) is not None or sha in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER))


async def apply_write_options(req: S3Request, opts: Any, *, source: Any = None,
                              integrity: Integrity | None = None) -> None:
    """Fill ``opts`` (PutOptions) with the tags and the lock a write asks for.

    ``source``: CopyObject's source ObjectInfo (its tags are copied unless
    ``x-amz-tagging-directive: REPLACE``; its lock never is). ``integrity``: PutObject's, whose
    body must carry Content-MD5 or a checksum when a lock applies to it, as S3 requires.
    Everything is checked before a byte of the body is read.
    """
    if source is not None and tagrules.directive(req.headers) == "COPY":
        tags = dict(getattr(source, "tags", None) or {})
    else:
        tags = tagrules.parse_header(req.headers.get("x-amz-tagging"))
    lock = lockrules.parse_write_headers(req.headers)
    record = await _record(req)
    if lock.asked:
        if caller_of(req).anonymous:
            raise InvalidArgument("Put Object requests with Object Lock parameters require AWS Signature Version 4",
                                  ArgumentName="Authorization")
        lockrules.require_lock(record, req.bucket)
    default = (record.get("lock") or {}).get("mode") if lockrules.lock_enabled(record) else None
    if integrity is not None and (lock.asked or default) \
            and integrity.content_md5 is None and integrity.algorithm is None and not _payload_verified(req):
        raise InvalidRequest(LOCK_CHECKSUM_REQUIRED)
    if "x-amz-tagging" in req.headers and tags:
        await authorize(req, "s3:PutObjectTagging", req.bucket, req.key)
    if lock.mode is not None:
        await authorize(req, "s3:PutObjectRetention", req.bucket, req.key)
    if lock.legal_hold is not None:
        await authorize(req, "s3:PutObjectLegalHold", req.bucket, req.key)
    opts.tags = tags
    opts.lock_mode = lock.mode
    opts.lock_until = lock.until
    opts.legal_hold = bool(lock.legal_hold)


async def read_headers(req: S3Request, info: Any) -> dict[str, str]:
    """GET/HEAD: ``x-amz-tagging-count`` when the version has tags, and its lock, for a caller
    allowed to read them (s3:GetObjectTagging, s3:GetObjectRetention, s3:GetObjectLegalHold)."""
    out: dict[str, str] = {}
    tags = getattr(info, "tags", None)
    if tags and await allowed(req, "s3:GetObjectTagging", req.bucket, req.key):
        out["x-amz-tagging-count"] = str(len(tags))
    mode, until = getattr(info, "lock_mode", None), getattr(info, "lock_until", None)
    if mode and until is not None and await allowed(req, "s3:GetObjectRetention", req.bucket, req.key):
        out.update(lockrules.response_headers(mode, until, None))
    if getattr(info, "legal_hold", False) and await allowed(req, "s3:GetObjectLegalHold", req.bucket, req.key):
        out[lockrules.HOLD_HEADER] = "ON"
    return out
