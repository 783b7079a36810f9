"""Server-side copies: CopyObject and UploadPartCopy.

Both stream: the source's ObjectReader is handed to the engine as the body of the
destination write, so a copy never holds more than the engine's blocks in flight.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote

from aiohttp import web

from buckets import checksums
from buckets.engine.crypto import MODE_C
from buckets.engine.types import PutOptions, SSESpec
from buckets.errors import InvalidArgument, InvalidRequest
from buckets.s3.acls import write_access
from buckets.s3.conditions import check_copy_source
from buckets.s3.context import S3Request, check_key
from buckets.s3.handlers.common import xml_response
from buckets.s3.handlers.object import check_version_id
from buckets.s3.handlers.objectlock import apply_write_options
from buckets.s3.handlers.multipart import part_number_required, upload_id_param
from buckets.s3.headers import (
    put_options,
    quote_etag,
    refuse_unsupported,
    storage_class,
    write_conditions,
)
from buckets.s3.permissions import authorize, check_expected_owner
from buckets.s3.ranges import parse_copy_source_range
from buckets.s3 import sse as sse_headers
from buckets.s3.xmlio import XmlBuilder, iso8601

MAX_COPY_SOURCE = 5 * 1024**3  # larger sources must be copied with UploadPartCopy


def parse_copy_source(header: str) -> tuple[str, str, str | None]:
    """`x-amz-copy-source`: `[/]bucket/key[?versionId=ID]`, URL-encoded: (bucket, key, version id)."""
    path, _, query = header.strip().partition("?")
    try:
        path = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgument("Invalid copy source encoding.", ArgumentName="x-amz-copy-source") from None
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or not key:
        raise InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                              ArgumentName="x-amz-copy-source", ArgumentValue=header)
    version = None
    if query:
        version = parse_qs(query, keep_blank_values=True).get("versionId", [None])[0]
        if version is not None:
            check_version_id(version)
    check_key(key)
    return bucket, key, version


async def authorize_source(req: S3Request, bucket: str, key: str, version: str | None = None) -> None:
    """The caller must be allowed to read the source (and its owner be the one expected)."""
    await authorize(req, "s3:GetObjectVersion" if version is not None else "s3:GetObject", bucket, key)
    if "x-amz-source-expected-bucket-owner" in req.headers:
        check_expected_owner(req, await req.store.bucket_record(bucket), "x-amz-source-expected-bucket-owner")


def _result(element: str, etag: str, last_modified: float, sums: dict[str, str],
            checksum_type: str | None) -> bytes:
    doc = XmlBuilder(element)
    doc.elem("ETag", quote_etag(etag)).elem("LastModified", iso8601(last_modified))
    for alg, value in sums.items():
        if alg in checksums.ALGORITHMS:
            doc.elem("Checksum" + alg, value)
    if sums and element == "CopyObjectResult":
        doc.elem("ChecksumType", checksum_type or "FULL_OBJECT")
    return doc.finish()


def _copy_checksum(req: S3Request, source_sums: dict[str, str]) -> tuple[str, ...]:
    raw = req.headers.get("x-amz-checksum-algorithm")
    if raw:
        alg = raw.strip().upper()
        if alg not in checksums.ALGORITHMS:
            raise InvalidRequest("Checksum algorithm provided is unsupported.")
        return (alg,)
    # Keep the source's algorithm; the copy is one part, so its checksum is full-object.
    return tuple(alg for alg in source_sums if alg in checksums.ALGORITHMS)[:1]


async def copy_object(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    src_bucket, src_key, src_version = parse_copy_source(req.headers["x-amz-copy-source"])
    await authorize_source(req, src_bucket, src_key, src_version)
    directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise InvalidArgument("Unknown metadata directive.", ArgumentName="x-amz-metadata-directive",
                              ArgumentValue=directive)
    if (src_bucket, src_key) == (req.bucket, req.key) and directive == "COPY" and src_version is None \
            and "x-amz-storage-class" not in req.headers and "x-amz-checksum-algorithm" not in req.headers \
            and not sse_headers.asks_for_encryption(req.headers):
        raise InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without "
            "changing the object's metadata, storage class, website redirect location or encryption attributes.")
    if_match, if_none_match = write_conditions(req.headers)
    # The source is decrypted (SSE-C: with the x-amz-copy-source-...-customer-key) and the copy
    # encrypted as the request (or the destination bucket's default) says, streamed.
    source_key = sse_headers.read_key(req.headers, sse_headers.COPY_CUSTOMER)
    destination_key = sse_headers.customer_key(req.headers)
    # (its first bytes read now: a source replaced since its lookup is looked up again)
    reader = await req.store.get_object(src_bucket, src_key, customer_key=source_key, version_id=src_version,
                                        begin=True, check=lambda info: check_copy_source(req.headers, info))
    try:
        info = reader.info
        if info.size > MAX_COPY_SOURCE:
            raise InvalidRequest(f"The specified copy source is larger than the maximum allowable size "
                                 f"for a copy source: {MAX_COPY_SOURCE}")
        if directive == "REPLACE":
            opts = put_options(req.headers)
        else:
            refuse_unsupported(req.headers)
            opts = PutOptions(headers=dict(info.headers), user_meta=dict(info.user_meta),
                              storage_class=storage_class(req.headers) if "x-amz-storage-class" in req.headers
                              else info.storage_class, sse=sse_headers.write_encryption(req.headers))
        opts.checksum_algorithms = _copy_checksum(req, info.checksums)
        await apply_write_options(req, opts, source=info)  # tags (x-amz-tagging-directive), lock: never the source's
        opts.access = await write_access(req, req.bucket)  # a copy gets the request's ACL, not the source's
        opts.if_match, opts.if_none_match = if_match, if_none_match
        new = await req.store.put_object(req.bucket, req.key, reader, reader.length, opts)
    finally:
        await reader.aclose()
    headers = sse_headers.response_headers(new.sse, destination_key)
    headers.update(_version_headers(info, new))
    return xml_response(_result("CopyObjectResult", new.etag, new.last_modified, new.checksums, new.checksum_type),
                        headers=headers)


def _version_headers(source, new=None) -> dict[str, str]:
    out = {}
    if source.version_id and source.version_id != "null":
        out["x-amz-copy-source-version-id"] = source.version_id
    if new is not None and new.version_id and new.version_id != "null":
        out["x-amz-version-id"] = new.version_id
    return out


async def upload_part_copy(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    part_number = part_number_required(req)
    upload_id = upload_id_param(req)
    src_bucket, src_key, src_version = parse_copy_source(req.headers["x-amz-copy-source"])
    await authorize_source(req, src_bucket, src_key, src_version)
    source = await req.store.head_object(src_bucket, src_key, src_version)
    check_copy_source(req.headers, source)
    range_header = req.headers.get("x-amz-copy-source-range")
    wanted = None
    if range_header:
        wanted = parse_copy_source_range(range_header, source.size)
    elif source.size > MAX_COPY_SOURCE:
        raise InvalidRequest("The specified copy source is larger than the maximum allowable size "
                             f"for a copy source: {MAX_COPY_SOURCE}")
    destination_key = sse_headers.customer_key(req.headers)
    reader = await req.store.get_object(
        src_bucket, src_key, range=wanted, version_id=src_version, begin=True,
        customer_key=sse_headers.read_key(req.headers, sse_headers.COPY_CUSTOMER),
        check=lambda info: info.etag == source.etag or check_copy_source(req.headers, info))  # (replaced: again)
    try:
        opts = PutOptions(sse=SSESpec(MODE_C, customer_key=destination_key.key) if destination_key else None)
        part = await req.store.put_part(req.bucket, req.key, upload_id, part_number, reader,
                                        reader.length, opts)
    finally:
        await reader.aclose()
    headers = sse_headers.response_headers(part.sse, destination_key)
    headers.update(_version_headers(reader.info))
    return xml_response(_result("CopyPartResult", part.etag, part.last_modified or reader.info.last_modified,
                                part.checksums, None), headers=headers)
