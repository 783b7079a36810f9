"""CORS: Put/Get/DeleteBucketCors and the preflight ``OPTIONS`` request.

The rules live in the bucket's record (``cors``, see ``buckets.s3.corsrules``); the
headers of actual (non-preflight) responses are added by ``corsrules.response_hook``.
A preflight is never signed (a browser sends none) and is answered from the rules alone:
no authorization, nothing else read.
"""

from __future__ import annotations

from aiohttp import web

from buckets.s3 import corsrules
from buckets.s3.body import Integrity, read_document
from buckets.s3.context import S3Request
from buckets.s3.handlers.common import empty_response, xml_response

MAX_CORS_XML = 64 * 1024


async def put_bucket_cors(req: S3Request) -> web.StreamResponse:
    integrity = Integrity.from_headers(req.headers)
    body, reader = await read_document(req, MAX_CORS_XML)
    integrity.reader = reader
    integrity.check_document(body, required=True)
    rules = corsrules.parse_configuration(body)
    await req.store.update_bucket(req.bucket, set={"cors": rules})
    return empty_response(200)


async def get_bucket_cors(req: S3Request) -> web.StreamResponse:
    rules = (await req.store.bucket_record(req.bucket)).get("cors")
    if not rules:
        raise corsrules.NoSuchCORSConfiguration(BucketName=req.bucket)
    return xml_response(corsrules.configuration_xml(rules))


async def delete_bucket_cors(req: S3Request) -> web.StreamResponse:
    await req.store.bucket_record(req.bucket)  # NoSuchBucket before anything else
    await req.store.update_bucket(req.bucket, unset=["cors"])
    return empty_response(204)


async def preflight(req: S3Request) -> web.StreamResponse:
    origin = req.headers.get("Origin")
    if not origin:
        raise corsrules.CORSBadRequest()
    method = req.headers.get("Access-Control-Request-Method")
    if method not in corsrules.METHODS:
        raise corsrules.CORSBadRequest(f"Invalid Access-Control-Request-Method: {method or 'null'}")
    resource_type = "OBJECT" if req.target.key else "BUCKET"
    record = await req.store.bucket_record(req.bucket)
    rules = record.get("cors")
    if not rules:
        raise corsrules.CORSForbidden(corsrules.CORS_NOT_ENABLED, Method=method, ResourceType=resource_type)
    wanted = corsrules.requested_headers(req.headers.get("Access-Control-Request-Headers"))
    rule = corsrules.find_rule(rules, origin, method, wanted)
    if rule is None:
        raise corsrules.CORSForbidden(Method=method, ResourceType=resource_type)
    headers = corsrules.rule_headers(rule, origin, allow_headers=wanted)
    return empty_response(200, headers)
