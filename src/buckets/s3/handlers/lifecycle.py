"""Bucket lifecycle: Put/Get/DeleteBucketLifecycleConfiguration.

The rules live in the bucket's record as ``lifecycle`` (the plain data of
``buckets.lifecycle.config``); ``buckets.lifecycle.worker`` applies them and the object
handlers announce a matching Expiration in ``x-amz-expiration`` (``expiration_headers``).
A PUT replaces the whole configuration and, as in S3, must carry Content-MD5 or a
flexible checksum of its body.
"""

from __future__ import annotations

from email.utils import formatdate

from typing import Any

from aiohttp import web

from buckets.errors import define_error
from buckets.lifecycle import config as lifecycle_config
from buckets.lifecycle import rules as lifecycle_rules
from buckets.s3.body import Integrity, read_document
from buckets.s3.context import S3Request
from buckets.s3.handlers.common import empty_response, xml_response
from buckets.s3.xmlio import MAX_REQUEST_XML

NoSuchLifecycleConfiguration = define_error(
    "NoSuchLifecycleConfiguration", "NoSuchLifecycleConfiguration", 404, "The lifecycle configuration does not exist")


async def put_bucket_lifecycle(req: S3Request) -> web.StreamResponse:
    await req.store.bucket_record(req.bucket)  # NoSuchBucket before the body is read
    integrity = Integrity.from_headers(req.headers)
    body, reader = await read_document(req, MAX_REQUEST_XML)
    integrity.reader = reader
    integrity.check_document(body, required=True)
    rules = lifecycle_config.parse_configuration(body)
    await req.store.update_bucket(req.bucket, set={"lifecycle": rules})
    return empty_response(200)


async def get_bucket_lifecycle(req: S3Request) -> web.StreamResponse:
    rules = (await req.store.bucket_record(req.bucket)).get("lifecycle")
    if not rules:
        raise NoSuchLifecycleConfiguration(BucketName=req.bucket)
    return xml_response(lifecycle_config.configuration_xml(rules))


async def delete_bucket_lifecycle(req: S3Request) -> web.StreamResponse:
    await req.store.bucket_record(req.bucket)  # NoSuchBucket before anything else
    await req.store.update_bucket(req.bucket, unset=["lifecycle"])
    return empty_response(204)


def day_seconds(req: S3Request) -> float:
    return float(getattr(req.config, "lifecycle_day_seconds", lifecycle_rules.DAY) or lifecycle_rules.DAY)


def _bucket_rules(req: S3Request) -> list | None:
    """The bucket's lifecycle rules from this node's copy of its record (no round trip)."""
    catalog = getattr(req.store, "catalog", None)
    record = catalog.get_bucket(req.bucket) if catalog is not None else None
    return (record or {}).get("lifecycle")


def abort_headers(req: S3Request, key: str, initiated: float) -> dict[str, str]:
    """``x-amz-abort-date`` and ``x-amz-abort-rule-id`` for a multipart upload of ``key``
    started at ``initiated`` when an enabled rule's AbortIncompleteMultipartUpload selects it
    (CreateMultipartUpload and ListParts answer them, as S3 does); empty otherwise."""
    rules = _bucket_rules(req)
    due = lifecycle_rules.abort_date(rules, key, initiated, day_seconds(req)) if rules else None
    if due is None:
        return {}
    return {"x-amz-abort-date": formatdate(due[0], usegmt=True),
            "x-amz-abort-rule-id": lifecycle_rules.header_text(due[1])}


def expiration_headers(req: S3Request, info: Any) -> dict[str, str]:
    """``x-amz-expiration`` for the current version ``info`` when an enabled rule with an
    Expiration (Days or Date) selects it; empty otherwise. The bucket's record is this
    node's copy (no extra round trip on the read path)."""
    if getattr(info, "delete_marker", False) or getattr(info, "is_latest", True) is False:
        return {}
    rules = _bucket_rules(req)
    if not rules:
        return {}
    due = lifecycle_rules.current_expiry(rules, info.key, info.size, getattr(info, "tags", None),
                                         info.last_modified, day_seconds(req))
    if due is None:
        return {}
    return {"x-amz-expiration": lifecycle_rules.expiration_header(*due)}
