"""Service-level operations: ListBuckets."""

from __future__ import annotations

from aiohttp import web

from buckets.s3.context import S3Request
from buckets.s3.handlers.common import add_owner, decode_token, encode_token, xml_response
from buckets.s3.xmlio import XmlBuilder, iso8601

MAX_BUCKETS_PAGE = 10000


async def list_buckets(req: S3Request) -> web.StreamResponse:
    max_buckets = req.int_param("max-buckets", MAX_BUCKETS_PAGE, minimum=1, maximum=MAX_BUCKETS_PAGE)
    paginated = "max-buckets" in req.query or "continuation-token" in req.query
    prefix = req.query.get("prefix", "")
    token = req.query.get("continuation-token")
    after = decode_token(token) if token else ""
    buckets = [b for b in await req.store.list_buckets()
               if b.name.startswith(prefix) and b.name > after]
    page, more = buckets[:max_buckets], len(buckets) > max_buckets

    doc = XmlBuilder("ListAllMyBucketsResult")
    add_owner(doc, req)
    doc.open("Buckets")
    for info in page:
        doc.open("Bucket").elem("Name", info.name).elem("CreationDate", iso8601(info.created))
        if paginated:
            doc.elem("BucketRegion", req.config.region)
        doc.close()
    doc.close()
    if more:
        doc.elem("ContinuationToken", encode_token(page[-1].name))
    if "prefix" in req.query:
        doc.elem("Prefix", prefix)
    return xml_response(doc.finish())
