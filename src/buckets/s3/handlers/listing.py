"""Listing operations: ListObjects (v1), ListObjectsV2 and ListObjectVersions.

The engine lists keys in UTF-8 binary order with common prefixes; this module maps
the three S3 dialects (markers, continuation tokens, version markers) onto it and
renders the XML, URL-encoding names when `encoding-type=url` is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from aiohttp import web

from buckets.engine.types import ListResult, ObjectInfo
from buckets.errors import InvalidArgument
from buckets.s3.context import S3Request
from buckets.s3.handlers.common import add_owner, decode_token, encode_token, name_encoder, xml_response
from buckets.s3.headers import quote_etag
from buckets.s3.xmlio import XmlBuilder, escape, iso8601

MAX_KEYS = 1000
_INT32_MAX = 2**31 - 1


async def _list(req: S3Request, prefix: str, delimiter: str, start_after: str, limit: int) -> ListResult:
    if limit == 0:
        await req.store.get_bucket(req.bucket)  # still NoSuchBucket for a missing bucket
        return ListResult([], [], False, None)
    return await req.store.list_objects(req.bucket, prefix=prefix, delimiter=delimiter,
                                        start_after=start_after, limit=limit)


def _add_object(doc: XmlBuilder, req: S3Request, info: ObjectInfo, enc: Callable[[str], str],
                *, owner: bool, element: str = "Contents", version: bool = False) -> None:
    if not (version or owner or info.checksums):
        # The common listing entry, rendered in one string (same elements, same order as below).
        doc.raw(f"<{element}><Key>{escape(enc(info.key))}</Key>"
                f"<LastModified>{iso8601(info.last_modified)}</LastModified>"
                f"<ETag>&quot;{escape(info.etag)}&quot;</ETag><Size>{info.size}</Size>"
                f"<StorageClass>{escape(info.storage_class or 'STANDARD')}</StorageClass></{element}>")
        return
    doc.open(element).elem("Key", enc(info.key))
    if version:
        doc.elem("VersionId", info.version_id or "null").elem("IsLatest", True)
    doc.elem("LastModified", iso8601(info.last_modified)).elem("ETag", quote_etag(info.etag))
    if info.checksums:
        for alg in info.checksums:
            doc.elem("ChecksumAlgorithm", alg)
        doc.elem("ChecksumType", info.checksum_type or "FULL_OBJECT")
    doc.elem("Size", info.size)
    if owner:
        add_owner(doc, req)
    doc.elem("StorageClass", info.storage_class or "STANDARD")
    doc.close()


def _add_prefixes(doc: XmlBuilder, prefixes: list[str], enc: Callable[[str], str]) -> None:
    for prefix in prefixes:
        doc.open("CommonPrefixes").elem("Prefix", enc(prefix)).close()


def _max_keys(req: S3Request) -> int:
    return req.int_param("max-keys", MAX_KEYS, minimum=0, maximum=_INT32_MAX, cap=MAX_KEYS)


async def list_objects_v1(req: S3Request) -> web.StreamResponse:
    enc, encoding = name_encoder(req)
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    marker = req.query.get("marker", "")
    max_keys = _max_keys(req)
    result = await _list(req, prefix, delimiter, marker, max_keys)

    doc = XmlBuilder("ListBucketResult")
    doc.elem("Name", req.bucket).elem("Prefix", enc(prefix)).elem("Marker", enc(marker))
    if result.is_truncated and delimiter and result.next_marker is not None:
        # S3 sends NextMarker only with a delimiter; without one, clients use the last key.
        doc.elem("NextMarker", enc(result.next_marker))
    doc.elem("MaxKeys", max_keys)
    if delimiter:
        doc.elem("Delimiter", enc(delimiter))
    doc.elem("IsTruncated", result.is_truncated)
    for info in result.objects:
        _add_object(doc, req, info, enc, owner=True)
    _add_prefixes(doc, result.prefixes, enc)
    if encoding:
        doc.elem("EncodingType", encoding)
    return xml_response(doc.finish())


async def list_objects_v2(req: S3Request) -> web.StreamResponse:
    enc, encoding = name_encoder(req)
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    token = req.query.get("continuation-token")
    start_after = req.query.get("start-after", "")
    # An empty token is no token (lists from the start, start-after applies), still echoed.
    after = decode_token(token) if token else start_after
    max_keys = _max_keys(req)
    fetch_owner = req.query.get("fetch-owner", "").lower() == "true"
    result = await _list(req, prefix, delimiter, after, max_keys)

    doc = XmlBuilder("ListBucketResult")
    doc.elem("Name", req.bucket).elem("Prefix", enc(prefix))
    if token is not None:
        doc.elem("ContinuationToken", token)
    if result.is_truncated and result.next_marker is not None:
        doc.elem("NextContinuationToken", encode_token(result.next_marker))
    if "start-after" in req.query:
        doc.elem("StartAfter", enc(start_after))
    doc.elem("KeyCount", len(result.objects) + len(result.prefixes))
    doc.elem("MaxKeys", max_keys)
    if delimiter:
        doc.elem("Delimiter", enc(delimiter))
    doc.elem("IsTruncated", result.is_truncated)
    for info in result.objects:
        _add_object(doc, req, info, enc, owner=fetch_owner)
    _add_prefixes(doc, result.prefixes, enc)
    if encoding:
        doc.elem("EncodingType", encoding)
    return xml_response(doc.finish())


async def list_object_versions(req: S3Request) -> web.StreamResponse:
    """Every version of every key (delete markers too), keys ascending, each key's versions
    newest first; paged by key marker and version-id marker, as S3 does."""
    enc, encoding = name_encoder(req)
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    key_marker = req.query.get("key-marker", "")
    version_marker = req.query.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise InvalidArgument("A version-id marker cannot be specified without a key marker.",
                              ArgumentName="version-id-marker", ArgumentValue=version_marker)
    max_keys = _max_keys(req)
    result = await req.store.list_object_versions(req.bucket, prefix=prefix, delimiter=delimiter,
                                                  key_marker=key_marker, version_id_marker=version_marker,
                                                  limit=max_keys)

    doc = XmlBuilder("ListVersionsResult")
    doc.elem("Name", req.bucket).elem("Prefix", enc(prefix))
    doc.elem("KeyMarker", enc(key_marker)).elem("VersionIdMarker", version_marker)
    if result.is_truncated and result.next_key_marker is not None:
        doc.elem("NextKeyMarker", enc(result.next_key_marker))
        if result.next_version_id_marker:
            doc.elem("NextVersionIdMarker", result.next_version_id_marker)
    doc.elem("MaxKeys", max_keys)
    if delimiter:
        doc.elem("Delimiter", enc(delimiter))
    doc.elem("IsTruncated", result.is_truncated)
    for info in result.versions:
        _add_version(doc, req, info, enc)
    _add_prefixes(doc, result.prefixes, enc)
    if encoding:
        doc.elem("EncodingType", encoding)
    return xml_response(doc.finish())


def _add_version(doc: XmlBuilder, req: S3Request, info: ObjectInfo, enc: Callable[[str], str]) -> None:
    """A <Version> or a <DeleteMarker>, in the elements and order S3 uses."""
    if info.delete_marker:
        doc.open("DeleteMarker")
        _version_owner(doc, req, info)
        doc.elem("Key", enc(info.key)).elem("VersionId", info.version_id or "null")
        doc.elem("IsLatest", info.is_latest).elem("LastModified", iso8601(info.last_modified))
        doc.close()
        return
    doc.open("Version").elem("Key", enc(info.key)).elem("VersionId", info.version_id or "null")
    doc.elem("IsLatest", info.is_latest)
    doc.elem("LastModified", iso8601(info.last_modified)).elem("ETag", quote_etag(info.etag))
    if info.checksums:
        for alg in info.checksums:
            doc.elem("ChecksumAlgorithm", alg)
        doc.elem("ChecksumType", info.checksum_type or "FULL_OBJECT")
    doc.elem("Size", info.size)
    _version_owner(doc, req, info)
    doc.elem("StorageClass", info.storage_class or "STANDARD")
    doc.close()


def _version_owner(doc: XmlBuilder, req: S3Request, info: ObjectInfo) -> None:
    if info.owner is None:
        add_owner(doc, req)
        return
    from buckets.s3.permissions import owner_ids

    owner_id, display = owner_ids(req, info.owner)
    doc.open("Owner").elem("ID", owner_id).elem("DisplayName", display).close()
