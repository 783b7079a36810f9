"""DeleteObjects: up to 1000 keys in one request, with per-key results.

The body must carry an integrity check (Content-MD5 or a flexible checksum), as S3
requires; it is verified before anything is deleted. An object's ``<ETag>`` makes its delete
conditional, as DeleteObject's ``If-Match`` (its failure is that key's ``<Error>``). Keys are deleted concurrently
(bounded) and reported in request order; Quiet mode reports only failures.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from buckets.errors import (
    BucketsError,
    InternalError,
    KeyTooLongError,
    MalformedXML,
    NotImplementedErr,
)
from buckets.s3.body import Integrity, read_document
from buckets.s3.context import DELETED_KEYS, MAX_KEY_BYTES, S3Request
from buckets.engine.types import DeleteResult
from buckets.s3.handlers.common import xml_response
from buckets.s3 import lockrules
from buckets.s3.handlers.object import check_version_id
from buckets.s3.handlers.objectlock import bypass_governance
from buckets.s3.headers import unquote_etag
from buckets.s3.permissions import authorize
from buckets.s3.xmlio import MAX_REQUEST_XML, XmlBuilder, parse_document

log = logging.getLogger("buckets.s3")

MAX_DELETE_KEYS = 1000
_CONCURRENCY = 16


async def delete_objects(req: S3Request) -> web.StreamResponse:
    integrity = Integrity.from_headers(req.headers)
    body, reader = await read_document(req, MAX_REQUEST_XML)
    integrity.reader = reader
    integrity.check_document(body, required=True)
    doc = parse_document(body, "Delete")
    quiet = (doc.child_text("Quiet") or "false").strip().lower() == "true"
    entries = []
    # Per key: its <ETag> (a conditional delete), if any; or the error of a condition S3 takes
    # only for directory buckets (refused for that key, not ignored: it stays).
    conditions: list[str | BucketsError | None] = []
    for node in doc.find_all("Object"):
        key = node.child_text("Key")
        if key is None:
            raise MalformedXML()
        entries.append((key, node.child_text("VersionId")))
        etag = node.child_text("ETag")
        unsupported = next((name for name in ("LastModifiedTime", "Size") if node.child_text(name) is not None), None)
        if unsupported is not None:
            conditions.append(NotImplementedErr(f"A conditional delete on {unsupported} is not implemented."))
        else:
            conditions.append(None if etag is None else ("*" if etag.strip() == "*" else unquote_etag(etag)))
    if not entries or len(entries) > MAX_DELETE_KEYS:
        raise MalformedXML(f"A DeleteObjects request must list between 1 and {MAX_DELETE_KEYS} keys.")
    # a missing bucket fails the whole request
    lockrules.check_bypass_header(req.headers, await req.store.bucket_record(req.bucket))

    limit = asyncio.Semaphore(_CONCURRENCY)

    async def delete_one(key: str, version: str | None,
                         if_match: str | BucketsError | None) -> BucketsError | DeleteResult:
        async with limit:
            try:
                if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
                    raise KeyTooLongError()
                if isinstance(if_match, BucketsError):
                    raise if_match
                await authorize(req, "s3:DeleteObject" if version is None else "s3:DeleteObjectVersion",
                                req.bucket, key)
                if if_match is not None and if_match != "*":
                    await authorize(req, "s3:GetObject", req.bucket, key)  # as DeleteObject's If-Match
                if version is not None:
                    check_version_id(version)
                bypass = await bypass_governance(req, req.bucket, key)
                return await req.store.delete_object(req.bucket, key, version, bypass_governance=bypass,
                                                     if_match=if_match)
            except BucketsError as err:
                return err
            except Exception:
                log.exception("request %s: DeleteObjects failed for key %r", req.request_id, key)
                return InternalError()

    results = await asyncio.gather(*(delete_one(k, v, c) for (k, v), c in zip(entries, conditions)))
    # for the notifier: (key, version id, delete marker written)
    req.request[DELETED_KEYS] = [(k, res.version_id if v is None else v, v is None and res.delete_marker)
                                 for (k, v), res in zip(entries, results) if isinstance(res, DeleteResult)]
    out = XmlBuilder("DeleteResult")
    for (key, version), err in zip(entries, results):
        if isinstance(err, DeleteResult):
            if not quiet:
                out.open("Deleted").elem("Key", key)
                if version is not None:
                    out.elem("VersionId", version)
                if err.delete_marker:
                    out.elem("DeleteMarker", "true")
                    if err.version_id is not None:
                        out.elem("DeleteMarkerVersionId", err.version_id)
                out.close()
        else:
            out.open("Error").elem("Key", key)
            if version is not None:
                out.elem("VersionId", version)
            out.elem("Code", err.code).elem("Message", err.message).close()
    return xml_response(out.finish())
