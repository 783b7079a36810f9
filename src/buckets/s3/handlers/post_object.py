"""POST Object: browser uploads with a signed policy document (multipart/form-data)."""

from __future__ import annotations

from aiohttp import web

from buckets.errors import NotImplementedErr
from buckets.s3.context import S3Request


async def post_object(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("POST object (browser form upload) is not implemented yet.")
