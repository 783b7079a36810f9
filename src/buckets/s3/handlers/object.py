"""Single-object operations: PutObject, GetObject, HeadObject, DeleteObject.

GET streams: the engine's ObjectReader is iterated straight into a `StreamResponse`, so
memory stays bounded by the blocks in flight whatever the object size. PUT streams the
decoded request body into the engine; Content-MD5 and checksums are checked in the
engine's verify hook, before commit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from buckets.engine.crypto import check_customer_key
from buckets.engine.types import ObjectInfo
from buckets.errors import (
    InvalidArgument,
    InvalidPart,
    InvalidPartNumber,
    InvalidRange,
    InvalidRequest,
    NotImplementedErr,
    WriteReplaced,
)
from buckets.s3.body import Integrity, open_stream
from buckets.s3.conditions import ReadOutcome, evaluate_read
from buckets.s3.acls import write_access
from buckets.s3.context import S3Request, check_key
from buckets.s3.errors import set_response_headers
from buckets.s3.handlers.lifecycle import expiration_headers
from buckets.s3.handlers.objectlock import apply_write_options, bypass_governance, read_headers as tag_and_lock_headers
from buckets.s3 import lockrules
from buckets.s3.headers import (
    apply_response_overrides,
    check_response_overrides,
    checksum_headers,
    http_date,
    object_headers,
    put_options,
    quote_etag,
    unquote_etag,
    write_conditions,
)
from buckets.s3.params import part_number as parse_part_number
from buckets.s3.permissions import authorize
from buckets.s3.ranges import parse_range
from buckets.s3 import sse as sse_headers

log = logging.getLogger("buckets.s3")


def version_param(req: S3Request) -> str | None:
    """The ``versionId`` a request names (None: the current version); a malformed one is
    400 InvalidArgument, an empty one too (as S3 answers both)."""
    version = req.query.get("versionId")
    if version is not None:
        check_version_id(version)
    return version


def check_version_id(version: str) -> None:
    from buckets.engine.versions import check_version_id as check

    if version == "":
        raise InvalidArgument("Version id cannot be the empty string", ArgumentName="versionId",
                              ArgumentValue="")
    check(version)


def part_number_param(req: S3Request) -> int | None:
    raw = req.query.get("partNumber")
    return None if raw is None else parse_part_number(raw)


# --- PUT -------------------------------------------------------------------------------------


async def put_object(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    opts = put_options(req.headers)
    opts.access = await write_access(req, req.bucket)
    opts.if_match, opts.if_none_match = write_conditions(req.headers)
    integrity = Integrity.from_headers(req.headers)
    opts.checksum_algorithms = integrity.algorithms
    opts.verify = integrity.verify
    await apply_write_options(req, opts, integrity=integrity)  # x-amz-tagging, object lock
    body = await open_stream(req)
    integrity.reader = body.reader
    info = await req.store.put_object(req.bucket, req.key, body.stream, body.size, opts)
    headers = {"ETag": quote_etag(info.etag)}
    if info.version_id != "null":
        headers["x-amz-version-id"] = info.version_id
    headers.update(expiration_headers(req, info))  # x-amz-expiration, when a lifecycle rule applies
    headers.update(sse_headers.response_headers(info.sse, sse_headers.customer_key(req.headers)))
    headers.update(integrity.response_headers(info.checksums))
    if integrity.algorithm or info.checksum_type == "FULL_OBJECT":
        headers["x-amz-checksum-type"] = "FULL_OBJECT"
    return web.Response(status=200, headers=headers)


# --- GET / HEAD ------------------------------------------------------------------------------


def _read_headers(req: S3Request, info: ObjectInfo, part_number: int | None, whole: bool) -> dict[str, str]:
    headers = object_headers(info)
    headers.update(expiration_headers(req, info))
    headers.update(sse_headers.response_headers(info.sse, sse_headers.customer_key(req.headers)))
    if req.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        if whole:
            headers.update(checksum_headers(info.checksums, info.checksum_type))
        elif part_number is not None and 0 < part_number <= len(info.parts):
            part = info.parts[part_number - 1]
            if info.checksum_type != "FULL_OBJECT":
                headers.update(checksum_headers(part.checksums, "COMPOSITE"))
    if part_number is not None and "-" in info.etag:
        headers["x-amz-mp-parts-count"] = str(len(info.parts))
    apply_response_overrides(headers, req.query)
    return headers


def _not_modified(info: ObjectInfo) -> web.Response:
    return web.Response(status=304, headers={"ETag": quote_etag(info.etag),
                                             "Last-Modified": http_date(info.last_modified)})


class _NotModified(Exception):
    """A GET's conditions say 304: raised from the check ``Store.get_object`` runs on the
    object it looked up, before any of its bytes are read."""

    def __init__(self, info: ObjectInfo) -> None:
        super().__init__()
        self.info = info


async def _open_reader(req: S3Request, *, body: bool):
    """Resolve range/partNumber and open a reader; conditions decide before errors. For a GET
    (``body``) the reader has read its first chunk, so a read that fails still gets an S3
    error (and one whose write was replaced meanwhile reads the key again: the conditions are
    evaluated on what it reads)."""
    check_key(req.key)
    version_id = version_param(req)
    check_response_overrides(req.query)
    part_number = part_number_param(req)
    range_header = req.headers.get("Range")
    if part_number is not None and range_header:
        raise InvalidRequest("Cannot specify both Range header and partNumber query parameter")
    wanted = parse_range(range_header)
    customer_key = sse_headers.read_key(req.headers)

    def conditions(info: ObjectInfo) -> None:
        if evaluate_read(req.headers, info) is ReadOutcome.NOT_MODIFIED:
            raise _NotModified(info)

    try:
        reader = await req.store.get_object(req.bucket, req.key, range=wanted, part_number=part_number,
                                            customer_key=customer_key, version_id=version_id,
                                            begin=body, check=conditions if body else None)
    except _NotModified as nm:
        return None, _not_modified(nm.info), part_number
    except (InvalidRange, InvalidPart, InvalidPartNumber) as err:
        # Preconditions take precedence over an unsatisfiable range, as in S3.
        info = await req.store.head_object(req.bucket, req.key, version_id)
        if evaluate_read(req.headers, info) is ReadOutcome.NOT_MODIFIED:
            return None, _not_modified(info), part_number
        if part_number is not None:
            raise InvalidPartNumber(PartNumberRequested=str(part_number),
                                    ActualPartCount=str(max(len(info.parts), 1))) from None
        err.extra.setdefault("RangeRequested", range_header or "")
        err.extra.setdefault("ActualObjectSize", str(info.size))
        raise set_response_headers(err, {"Content-Range": f"bytes */{info.size}"})
    return reader, None, part_number


def _range_headers(reader, info: ObjectInfo, headers: dict[str, str]) -> int:
    """Content-Length/Content-Range for what the reader yields; returns the HTTP status.

    A partNumber read is a 206 with the part's Content-Range, as S3 answers it. The engine
    gives no range for an empty object (nothing to select): that is a 200 with an empty
    body, since no Content-Range can describe zero bytes.
    """
    headers["Content-Length"] = str(reader.length)
    if reader.range is not None:
        headers["Content-Range"] = f"bytes {reader.range.start}-{reader.range.end - 1}/{info.size}"
        return 206
    return 200


async def _read_response(req: S3Request, *, body: bool) -> web.StreamResponse:
    """GET, and HEAD with Range or partNumber: open a reader, apply the conditions, and
    answer with the headers of the selected bytes (streaming them for GET)."""
    reader, early, part_number = await _open_reader(req, body=body)
    if early is not None:
        return early
    try:
        info = reader.info
        if evaluate_read(req.headers, info) is ReadOutcome.NOT_MODIFIED:
            return _not_modified(info)
        headers = _read_headers(req, info, part_number, whole=reader.range is None and part_number is None)
        headers.update(await tag_and_lock_headers(req, info))
        status = _range_headers(reader, info, headers)
        if not body:
            return web.Response(status=status, headers=headers)
        length = int(headers.pop("Content-Length"))
        return await _stream(req, reader, status, headers, length)
    finally:
        await reader.aclose()


async def get_object(req: S3Request) -> web.StreamResponse:
    return await _read_response(req, body=True)


async def _stream(req: S3Request, reader, status: int, headers: dict[str, str], length: int) -> web.StreamResponse:
    """Write the reader's bytes as the response body, block by block. The reader has read its
    first block already (``Store.get_object(..., begin=True)``): a failure there (quorum
    lost, ...) was answered as a proper S3 error instead of a cut connection."""
    chunks = reader.__aiter__()
    try:
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        await resp.prepare(req.request)
        try:
            # Drop each chunk as soon as it is written: a name still bound to it would pin
            # one more span per GET while the next is read.
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                await resp.write(chunk)
                del chunk
        except ConnectionError:  # reset, or aiohttp's "Connection lost" while draining: not a bug
            log.info("request %s: client went away during GET %s/%s", req.request_id, req.bucket, req.key)
            return resp
        except Exception as exc:
            # Headers are gone already: the only honest signal left is a cut connection.
            if isinstance(exc, WriteReplaced):  # (a cluster's overwrite through another node: not a bug)
                log.warning("request %s: GET %s/%s cut mid-stream: %s", req.request_id, req.bucket, req.key, exc)
            else:
                log.exception("request %s: GET %s/%s failed mid-stream", req.request_id, req.bucket, req.key)
            transport = req.request.transport
            if transport is not None:
                transport.abort()
            return resp
        await resp.write_eof()
        return resp
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def head_object(req: S3Request) -> web.StreamResponse:
    if req.query.get("partNumber") is not None or req.headers.get("Range"):
        return await _read_response(req, body=False)
    check_key(req.key)
    version_id = version_param(req)
    check_response_overrides(req.query)
    customer_key = sse_headers.read_key(req.headers)
    info = await req.store.head_object(req.bucket, req.key, version_id)
    check_customer_key(info.sse, customer_key)
    if evaluate_read(req.headers, info) is ReadOutcome.NOT_MODIFIED:
        return _not_modified(info)
    headers = _read_headers(req, info, None, whole=True)
    headers.update(await tag_and_lock_headers(req, info))
    headers["Content-Length"] = str(info.size)
    return web.Response(status=200, headers=headers)


# --- DELETE ----------------------------------------------------------------------------------


def delete_condition(headers: Mapping[str, str]) -> str | None:
    """A conditional delete's ``If-Match`` (an ETag, or ``*``: the object exists). The
    conditions S3 takes only for directory buckets (``x-amz-if-match-last-modified-time``,
    ``x-amz-if-match-size``) are refused rather than ignored: a client that asked for one must
    not see its object deleted unconditionally."""
    for name in ("x-amz-if-match-last-modified-time", "x-amz-if-match-size"):
        if name in headers:
            raise NotImplementedErr("A header you provided implies functionality that is not implemented",
                                    Header=name)
    value = headers.get("If-Match")
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise InvalidArgument("If-Match cannot be empty.", ArgumentName="If-Match", ArgumentValue="")
    return "*" if value == "*" else unquote_etag(value)


async def delete_object(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    version = version_param(req)
    if_match = delete_condition(req.headers)
    if if_match is not None and if_match != "*":
        # As S3: deleting on an ETag's condition tells the caller about the object, so it
        # needs the right to read it too.
        await authorize(req, "s3:GetObject", req.bucket, req.key)
    lockrules.check_bypass_header(req.headers, await req.store.bucket_record(req.bucket))
    bypass = await bypass_governance(req, req.bucket, req.key)
    result = await req.store.delete_object(req.bucket, req.key, version, bypass_governance=bypass,
                                           if_match=if_match)
    headers = {}
    if result.version_id is not None:
        headers["x-amz-version-id"] = result.version_id
    if result.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    return web.Response(status=204, headers=headers)
