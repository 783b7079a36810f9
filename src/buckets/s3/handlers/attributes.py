"""GetObjectAttributes: ETag, Checksum, ObjectParts, StorageClass, ObjectSize in one call."""

from __future__ import annotations

from aiohttp import web

from buckets import checksums
from buckets.engine.crypto import check_customer_key
from buckets.errors import InvalidArgument
from buckets.s3.context import S3Request, check_key
from buckets.s3.handlers.common import xml_response
from buckets.s3.handlers.object import version_param
from buckets.s3.headers import http_date
from buckets.s3.params import int_argument
from buckets.s3.sse import read_key
from buckets.s3.xmlio import XmlBuilder

ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")


async def get_object_attributes(req: S3Request) -> web.StreamResponse:
    check_key(req.key)
    version_id = version_param(req)
    raw = req.headers.get("x-amz-object-attributes", "")
    wanted = {a.strip() for a in raw.split(",") if a.strip()}
    if not wanted:
        raise InvalidArgument("The x-amz-object-attributes header specifying the attributes to be "
                              "retrieved is either missing or empty", ArgumentName="x-amz-object-attributes")
    unknown = wanted - set(ATTRIBUTES)
    if unknown:
        raise InvalidArgument("Invalid attribute name specified.", ArgumentName="x-amz-object-attributes",
                              ArgumentValue=sorted(unknown)[0])
    max_parts = int_argument(req.headers.get("x-amz-max-parts"), "x-amz-max-parts", default=1000, cap=1000)
    marker = int_argument(req.headers.get("x-amz-part-number-marker"), "x-amz-part-number-marker", default=0)
    customer_key = read_key(req.headers)
    info = await req.store.head_object(req.bucket, req.key, version_id)
    check_customer_key(info.sse, customer_key)  # an SSE-C object's attributes need its key, as in S3

    doc = XmlBuilder("GetObjectAttributesResponse")
    if "ETag" in wanted:
        doc.elem("ETag", info.etag)
    sums = {a: v for a, v in info.checksums.items() if a in checksums.ALGORITHMS}
    if "Checksum" in wanted and sums:
        doc.open("Checksum")
        for alg, value in sums.items():
            doc.elem("Checksum" + alg, value)
        doc.elem("ChecksumType", info.checksum_type or "FULL_OBJECT")
        doc.close()
    if "ObjectParts" in wanted and "-" in info.etag:
        parts = [p for p in info.parts if p.number > marker]
        page = parts[:max_parts]
        truncated = len(parts) > len(page)
        doc.open("ObjectParts").elem("PartsCount", len(info.parts))
        doc.elem("PartNumberMarker", marker)
        doc.elem("NextPartNumberMarker", page[-1].number if page else marker)
        doc.elem("MaxParts", max_parts).elem("IsTruncated", truncated)
        for part in page:
            doc.open("Part").elem("PartNumber", part.number).elem("Size", part.size)
            for alg, value in part.checksums.items():
                if alg in checksums.ALGORITHMS:
                    doc.elem("Checksum" + alg, value)
            doc.close()
        doc.close()
    if "StorageClass" in wanted:
        doc.elem("StorageClass", info.storage_class or "STANDARD")
    if "ObjectSize" in wanted:
        doc.elem("ObjectSize", info.size)
    return xml_response(doc.finish(), headers={"Last-Modified": http_date(info.last_modified)})
