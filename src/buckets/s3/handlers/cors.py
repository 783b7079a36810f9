"""CORS: Put/Get/DeleteBucketCors and the preflight ``OPTIONS`` request."""

from __future__ import annotations

from aiohttp import web

from buckets.errors import NotImplementedErr
from buckets.s3.context import S3Request


async def put_bucket_cors(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("CORS is not implemented yet.")


async def get_bucket_cors(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("CORS is not implemented yet.")


async def delete_bucket_cors(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("CORS is not implemented yet.")


async def preflight(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("CORS is not implemented yet.")
