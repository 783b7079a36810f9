"""Multipart uploads: Create, UploadPart, Complete, Abort, ListParts, ListMultipartUploads.

Parts stream into the engine like PutObject bodies; CompleteMultipartUpload parses the
client's part list (capped in size), applies conditional-write headers, checks the client's
whole-object claims (checksum, checksum type, size) in the engine's verify hook, and
reports the object's ETag and checksum (COMPOSITE `b64-N` or FULL_OBJECT) as S3 does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from buckets import checksums
from buckets.engine.crypto import MODE_C
from buckets.engine.types import CompletePart, ListUploadsResult, PutOptions, SSESpec
from buckets.errors import BadDigest, InvalidArgument, InvalidRequest, MalformedXML, NotImplementedErr
from buckets.s3.body import Integrity, open_stream, read_document
from buckets.s3.acls import write_access
from buckets.s3.context import S3Request, check_key
from buckets.s3.handlers.common import add_owner, name_encoder, xml_response
from buckets.s3.handlers.lifecycle import abort_headers
from buckets.s3.handlers.objectlock import apply_write_options
from buckets.s3.headers import checksum_headers, put_options, quote_etag, unquote_etag, write_conditions
from buckets.s3.params import decimal, part_number
from buckets.s3.xmlio import MAX_REQUEST_XML, XmlBuilder, iso8601, parse_document
from buckets.s3 import sse as sse_headers

MAX_PARTS = 10000
_MAX_XS_INT = 2**31 - 1
CHECKSUM_TYPES = ("FULL_OBJECT", "COMPOSITE")


def upload_id_param(req: S3Request) -> str:
    upload_id = req.query.get("uploadId", "")
    if not upload_id:
        raise InvalidArgument("This operation requires an upload id.", ArgumentName="uploadId")
    return upload_id


def _upload_checksum(req: S3Request) -> tuple[str | None, str | None]:
    """(algorithm, type) requested by CreateMultipartUpload, validated as S3 does."""
    raw_alg = req.headers.get("x-amz-checksum-algorithm")
    raw_type = req.headers.get("x-amz-checksum-type")
    alg = None
    if raw_alg:
        alg = raw_alg.strip().upper()
        if alg not in checksums.ALGORITHMS:
            raise InvalidRequest("Checksum algorithm provided is unsupported. Please try again with "
                                 "any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]")
    ctype = None
    if raw_type:
        ctype = raw_type.strip().upper()
        if ctype not in CHECKSUM_TYPES:
            raise InvalidRequest("Value for x-amz-checksum-type header is invalid.")
        if alg is None:
            raise InvalidRequest("The x-amz-checksum-type header can only be used with the "
                                 "x-amz-checksum-algorithm header.")
    if alg is not None:
        ctype = ctype or ("FULL_OBJECT" if alg == "CRC64NVME" else "COMPOSITE")
        if ctype == "FULL_OBJECT" and alg not in checksums.CRC_ALGORITHMS:
            raise InvalidRequest(f"The FULL_OBJECT checksum type cannot be used with the "
                                 f"{alg.lower()} checksum algorithm.")
        if ctype == "COMPOSITE" and alg == "CRC64NVME":
            raise InvalidRequest("The COMPOSITE checksum type cannot be used with the "
                                 "crc64nvme checksum algorithm.")
    return alg, ctype


async def create_multipart_upload(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    opts = put_options(req.headers)
    opts.access = await write_access(req, req.bucket)
    alg, ctype = _upload_checksum(req)
    if alg:
        opts.checksum_algorithms = (alg,)
        opts.checksum_type = ctype
    await apply_write_options(req, opts)  # x-amz-tagging and the lock, carried by the upload to Complete
    info = await req.store.create_multipart_upload(req.bucket, req.key, opts)
    doc = XmlBuilder("InitiateMultipartUploadResult")
    doc.elem("Bucket", req.bucket).elem("Key", req.key).elem("UploadId", info.upload_id)
    headers = sse_headers.response_headers(info.sse, sse_headers.customer_key(req.headers))
    headers.update(abort_headers(req, req.key, info.initiated))  # a lifecycle rule will abort it then
    if alg:
        headers.update({"x-amz-checksum-algorithm": alg, "x-amz-checksum-type": ctype or "COMPOSITE"})
    return xml_response(doc.finish(), headers=headers)


def part_number_required(req: S3Request) -> int:
    return part_number(req.query.get("partNumber"))


async def upload_part(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    part_number = part_number_required(req)
    upload_id = upload_id_param(req)
    integrity = Integrity.from_headers(req.headers)
    customer = sse_headers.customer_key(req.headers)  # an SSE-C upload's parts bring its key again
    opts = PutOptions(checksum_algorithms=integrity.algorithms, verify=integrity.verify,
                      sse=SSESpec(MODE_C, customer_key=customer.key) if customer is not None else None)
    body = await open_stream(req)
    integrity.reader = body.reader
    part = await req.store.put_part(req.bucket, req.key, upload_id, part_number, body.stream, body.size, opts)
    headers = {"ETag": quote_etag(part.etag)}
    headers.update(sse_headers.response_headers(part.sse, customer))
    for alg, value in part.checksums.items():
        if alg in checksums.ALGORITHMS:
            headers[checksums.header_name(alg)] = value
    return web.Response(status=200, headers=headers)


def _parse_complete(body: bytes) -> list[CompletePart]:
    doc = parse_document(body, "CompleteMultipartUpload")
    parts: list[CompletePart] = []
    for node in doc.find_all("Part"):
        number_text = (node.child_text("PartNumber") or "").strip()
        etag = node.child_text("ETag")
        # PartNumber is an xs:int in S3's schema: ASCII digits that fit in 32 bits (int()
        # would refuse "²" or 5,000 digits with a ValueError, i.e. a 500).
        # Leading zeros are allowed (xs:int "0001" is 1) and do not count toward the length.
        significant = number_text.lstrip("0") or "0"
        if not (number_text.isascii() and number_text.isdigit()) or len(significant) > 10 \
                or int(significant) > _MAX_XS_INT or etag is None:
            raise MalformedXML()
        sums = {}
        for alg in checksums.ALGORITHMS:
            value = node.child_text("Checksum" + alg)
            if value is not None:
                sums[alg] = value.strip()
        parts.append(CompletePart(int(number_text), unquote_etag(etag), sums))
    if not parts:
        raise MalformedXML("The XML you provided was not well-formed or did not validate against "
                           "our published schema: at least one Part is required.")
    if len(parts) > MAX_PARTS:
        raise MalformedXML(f"A CompleteMultipartUpload may list at most {MAX_PARTS} parts.")
    return parts


@dataclass(frozen=True, slots=True)
class CompleteClaims:
    """What a client asserts about the whole object on Complete: a whole-object checksum
    (x-amz-checksum-*), its type (x-amz-checksum-type) and its size (x-amz-mp-object-size).

    Checked by `verify`, the engine's hook, against what the engine computed from the
    part list it is about to commit (under the upload's lock, before anything moves), so
    the claims are judged on exactly the parts that become the object and no data is
    re-read.
    """

    checksums: tuple[tuple[str, str], ...] = ()  # (algorithm, value as sent)
    checksum_type: str | None = None
    size: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> "CompleteClaims":
        claimed = tuple((alg, value.strip()) for name, value in headers.items()
                        if (alg := checksums.alg_from_header(name)))
        return cls(claimed, headers.get("x-amz-checksum-type"), headers.get("x-amz-mp-object-size"))

    @property
    def any(self) -> bool:
        return bool(self.checksums or self.checksum_type or self.size is not None)

    async def verify(self, computed: dict[str, Any]) -> None:
        """``computed`` = {"size": int, "checksum_type": "COMPOSITE"|"FULL_OBJECT"|None,
        "<ALG>": object checksum as stored}; the upload has no checksum when the type is None."""
        total = computed["size"]
        if self.size is not None and decimal(self.size.strip()) != total:
            raise InvalidRequest(f"The provided 'x-amz-mp-object-size' header value {self.size} does not "
                                 f"match what was computed: {total}")
        upload_type = computed.get("checksum_type")
        upload_alg = next((alg for alg in computed if alg in checksums.ALGORITHMS), None) if upload_type else None
        if self.checksum_type and upload_type and self.checksum_type.strip().upper() != upload_type:
            raise InvalidRequest(f"The upload was created using the {upload_type} checksum mode. The complete "
                                 f"request must use the same checksum mode.")
        for alg, value in self.checksums:
            if alg != upload_alg:
                raise InvalidRequest(f"The upload was created using the {(upload_alg or 'null').lower()} "
                                     f"checksum algorithm; the complete request must use the same algorithm.")
            # A COMPOSITE value may be sent with or without its "-N" part-count suffix.
            if value.split("-", 1)[0] != str(computed[alg]).split("-", 1)[0]:
                raise BadDigest(f"The {alg} you specified did not match the calculated checksum.")


async def complete_multipart_upload(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    upload_id = upload_id_param(req)
    if_match, if_none_match = write_conditions(req.headers)
    body, _ = await read_document(req, MAX_REQUEST_XML)
    parts = _parse_complete(body)
    claims = CompleteClaims.from_headers(req.headers)
    customer = sse_headers.customer_key(req.headers)  # optional here (SDKs send it); checked before anything moves
    opts = PutOptions(if_match=if_match, if_none_match=if_none_match,
                      verify=claims.verify if claims.any else None)
    info = await req.store.complete_multipart_upload(req.bucket, req.key, upload_id, parts, opts)

    host = req.headers.get("Host", "localhost")
    location = f"{req.request.scheme}://{host}/{quote(req.bucket)}/{quote(req.key)}"
    doc = XmlBuilder("CompleteMultipartUploadResult")
    doc.elem("Location", location).elem("Bucket", req.bucket).elem("Key", req.key)
    doc.elem("ETag", quote_etag(info.etag))
    for alg, value in info.checksums.items():
        if alg in checksums.ALGORITHMS:
            doc.elem("Checksum" + alg, value)
    if info.checksums:
        doc.elem("ChecksumType", info.checksum_type or "COMPOSITE")
    headers = checksum_headers(info.checksums, info.checksum_type)
    headers.update(sse_headers.response_headers(info.sse, customer))
    if info.version_id and info.version_id != "null":
        headers["x-amz-version-id"] = info.version_id
    return xml_response(doc.finish(), headers=headers)


async def abort_multipart_upload(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    if "x-amz-if-match-initiated-time" in req.headers:  # S3: directory buckets only; refused, not ignored
        raise NotImplementedErr("A header you provided implies functionality that is not implemented",
                                Header="x-amz-if-match-initiated-time")
    await req.store.abort_multipart_upload(req.bucket, req.key, upload_id_param(req))
    return web.Response(status=204)


async def list_parts(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    upload_id = upload_id_param(req)
    max_parts = req.int_param("max-parts", 1000, minimum=0, maximum=2**31 - 1, cap=1000)
    marker = req.int_param("part-number-marker", 0, minimum=0, maximum=2**31 - 1)
    result = await req.store.list_parts(req.bucket, req.key, upload_id, part_marker=marker,
                                        max_parts=max_parts)
    upload = result.upload
    doc = XmlBuilder("ListPartsResult")
    doc.elem("Bucket", req.bucket).elem("Key", req.key).elem("UploadId", upload_id)
    doc.elem("PartNumberMarker", marker)
    doc.elem("NextPartNumberMarker", result.next_marker if result.is_truncated else
             (result.parts[-1].number if result.parts else marker))
    doc.elem("MaxParts", max_parts).elem("IsTruncated", result.is_truncated)
    for part in result.parts:
        doc.open("Part").elem("PartNumber", part.number)
        doc.elem("LastModified", iso8601(part.last_modified or upload.initiated))
        doc.elem("ETag", quote_etag(part.etag)).elem("Size", part.size)
        for alg, value in part.checksums.items():
            if alg in checksums.ALGORITHMS:
                doc.elem("Checksum" + alg, value)
        doc.close()
    add_owner(doc, req, "Initiator")
    add_owner(doc, req)
    doc.elem("StorageClass", upload.storage_class or "STANDARD")
    if upload.checksum_algorithm:
        doc.elem("ChecksumAlgorithm", upload.checksum_algorithm)
        doc.elem("ChecksumType", upload.checksum_type or "COMPOSITE")
    return xml_response(doc.finish(), headers=abort_headers(req, req.key, upload.initiated))


async def list_multipart_uploads(req: S3Request) -> web.StreamResponse:
    enc, encoding = name_encoder(req)
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    key_marker = req.query.get("key-marker", "")
    upload_id_marker = req.query.get("upload-id-marker", "") if key_marker else ""
    max_uploads = req.int_param("max-uploads", 1000, minimum=0, maximum=2**31 - 1, cap=1000)
    if max_uploads == 0:
        await req.store.get_bucket(req.bucket)
        result = ListUploadsResult([], [], False, None, None)
    else:
        result = await req.store.list_multipart_uploads(
            req.bucket, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
            upload_id_marker=upload_id_marker, limit=max_uploads)
    doc = XmlBuilder("ListMultipartUploadsResult")
    doc.elem("Bucket", req.bucket).elem("KeyMarker", enc(key_marker)).elem("UploadIdMarker", upload_id_marker)
    doc.elem("NextKeyMarker", enc(result.next_key_marker or ""))
    doc.elem("NextUploadIdMarker", result.next_upload_id_marker or "")
    if delimiter:
        doc.elem("Delimiter", enc(delimiter))
    doc.elem("Prefix", enc(prefix)).elem("MaxUploads", max_uploads).elem("IsTruncated", result.is_truncated)
    for upload in result.uploads:
        doc.open("Upload").elem("Key", enc(upload.key)).elem("UploadId", upload.upload_id)
        add_owner(doc, req, "Initiator")
        add_owner(doc, req)
        doc.elem("StorageClass", upload.storage_class or "STANDARD")
        doc.elem("Initiated", iso8601(upload.initiated))
        if upload.checksum_algorithm:
            doc.elem("ChecksumAlgorithm", upload.checksum_algorithm)
            doc.elem("ChecksumType", upload.checksum_type or "COMPOSITE")
        doc.close()
    for p in result.prefixes:
        doc.open("CommonPrefixes").elem("Prefix", enc(p)).close()
    if encoding:
        doc.elem("EncodingType", encoding)
    return xml_response(doc.finish())
