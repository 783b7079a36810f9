"""Service-level operations: ListBuckets."""

from __future__ import annotations

from aiohttp import web

from buckets.engine.types import BucketInfo
from buckets.errors import BucketsError
from buckets.s3.context import S3Request
from buckets.s3.permissions import allowed, caller_of
from buckets.s3.handlers.common import add_owner, decode_token, encode_token, xml_response
from buckets.s3.xmlio import XmlBuilder, iso8601

MAX_BUCKETS_PAGE = 10000


async def _may_list(req: S3Request, info: BucketInfo) -> bool:
    """A user sees the buckets it owns and those another owner lets it list (the root user
    sees every bucket)."""
    caller = caller_of(req)
    if caller.root or caller.is_owner(info.owner):
        return True
    try:
        return await allowed(req, "s3:ListBucket", info.name)
    except BucketsError:  # deleted meanwhile
        return False


async def list_buckets(req: S3Request) -> web.StreamResponse:
    max_buckets = req.int_param("max-buckets", MAX_BUCKETS_PAGE, minimum=1, maximum=MAX_BUCKETS_PAGE)
    paginated = "max-buckets" in req.query or "continuation-token" in req.query
    prefix = req.query.get("prefix", "")
    token = req.query.get("continuation-token")
    after = decode_token(token) if token else ""
    buckets = [b for b in await req.store.list_buckets()
               if b.name.startswith(prefix) and b.name > after and await _may_list(req, b)]
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
