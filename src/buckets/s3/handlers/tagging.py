"""Tagging: Put/Get/DeleteObjectTagging (with ``versionId``) and Put/Get/DeleteBucketTagging.

An object's tag set lives with its version (``ObjectInfo.tags``, changed by
``Store.update_object``, durable in the registry and on the disks); a bucket's in its record
(``tags``). The rules, the header form and the document are ``buckets.s3.tagrules``'s; the
``x-amz-tagging`` header of writes and ``x-amz-tagging-count`` of reads are applied by
``buckets.s3.handlers.objectlock.apply_write_options`` and ``buckets.s3.headers``.
"""

from __future__ import annotations

from aiohttp import web

from buckets.s3 import tagrules
from buckets.s3.body import Integrity, read_document
from buckets.s3.context import S3Request, check_key
from buckets.s3.handlers.common import empty_response, xml_response


def version_param(req: S3Request) -> str | None:
    """The ``versionId`` a sub-resource request names (None: the latest version)."""
    version = req.query.get("versionId")
    return version if version else None


def version_headers(version_id: str | None) -> dict[str, str]:
    if version_id and version_id != "null":
        return {"x-amz-version-id": version_id}
    return {}


# --- objects ----------------------------------------------------------------------------------


async def put_object_tagging(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    integrity = Integrity.from_headers(req.headers)
    body, reader = await read_document(req, tagrules.MAX_TAGGING_XML)
    integrity.reader = reader
    integrity.check_document(body, required=False)
    tags = tagrules.parse_document_tags(body)
    info = await req.store.update_object(req.bucket, req.key, version_param(req), tags=tags)
    return empty_response(200, version_headers(info.version_id))


async def get_object_tagging(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    info = await req.store.head_object(req.bucket, req.key, version_id=version_param(req))
    return xml_response(tagrules.tagging_xml(info.tags or {}), headers=version_headers(info.version_id))


async def delete_object_tagging(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    info = await req.store.update_object(req.bucket, req.key, version_param(req), tags={})
    return empty_response(204, version_headers(info.version_id))


# --- buckets ----------------------------------------------------------------------------------


async def put_bucket_tagging(req: S3Request) -> web.StreamResponse:
    integrity = Integrity.from_headers(req.headers)
    body, reader = await read_document(req, tagrules.MAX_TAGGING_XML)
    integrity.reader = reader
    integrity.check_document(body, required=True)
    tags = tagrules.parse_document_tags(body, bucket=True)
    await req.store.bucket_record(req.bucket)  # NoSuchBucket before anything is written
    if tags:
        await req.store.update_bucket(req.bucket, set={"tags": tags})
    else:  # an empty TagSet leaves the bucket without one (GetBucketTagging: NoSuchTagSet)
        await req.store.update_bucket(req.bucket, unset=["tags"])
    return empty_response(204)


async def get_bucket_tagging(req: S3Request) -> web.StreamResponse:
    tags = (await req.store.bucket_record(req.bucket)).get("tags")
    if not tags:
        raise tagrules.NoSuchTagSet(BucketName=req.bucket)
    return xml_response(tagrules.tagging_xml(tags))


async def delete_bucket_tagging(req: S3Request) -> web.StreamResponse:
    await req.store.bucket_record(req.bucket)  # NoSuchBucket before anything else
    await req.store.update_bucket(req.bucket, unset=["tags"])
    return empty_response(204)
