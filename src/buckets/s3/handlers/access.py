"""Who may do what, as S3 configuration: bucket policies, ACLs, ownership controls and the
public access block (the decisions themselves are ``buckets.iam``'s)."""

from __future__ import annotations

from aiohttp import web

from buckets.errors import NotImplementedErr
from buckets.s3.context import S3Request


async def get_bucket_policy(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def put_bucket_policy(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def delete_bucket_policy(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def get_bucket_policy_status(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def get_bucket_acl(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def put_bucket_acl(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def get_object_acl(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def put_object_acl(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def get_ownership_controls(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def put_ownership_controls(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def delete_ownership_controls(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def get_public_access_block(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def put_public_access_block(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")


async def delete_public_access_block(req: S3Request) -> web.StreamResponse:
    raise NotImplementedErr("not implemented yet")
