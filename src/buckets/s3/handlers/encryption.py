"""Bucket default encryption: Put/Get/DeleteBucketEncryption (SSE-S3, SSE-KMS)."""

from __future__ import annotations

from aiohttp import web

from buckets.errors import NotImplementedErr
from buckets.s3.context import S3Request


async def put_bucket_encryption(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("Bucket encryption is not implemented yet.")


async def get_bucket_encryption(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("Bucket encryption is not implemented yet.")


async def delete_bucket_encryption(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("Bucket encryption is not implemented yet.")
