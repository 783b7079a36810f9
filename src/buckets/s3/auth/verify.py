"""``authenticate``: decide which signing scheme a request uses and verify it.

One entry point for the S3 layer. It does not decide whether the identity may do what
it asks (policy and ACLs do); it only establishes who is asking, or that nobody
claims to be (anonymous).
"""

from __future__ import annotations

import time

from aiohttp import web

from buckets.errors import InvalidArgument, NotImplementedErr

from . import sigv2, sigv4
from .canonical import decoded_query_params, split_raw_target
from .credentials import METHOD_ANONYMOUS, AuthContext, CredentialStore

_V4_QUERY_MARKERS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
_V2_QUERY_MARKERS = ("AWSAccessKeyId", "Signature")


async def authenticate(request: web.Request, creds: CredentialStore, *, region: str | None = "us-east-1",
                       now: float | None = None, max_skew: float = 900.0, bucket_from_host: str | None = None,
                       service: str = "s3") -> AuthContext:
    """Verify the request's signature (SigV4 header/query, SigV2 header/query) or return anonymous.

    ``region=None`` accepts any region in the credential scope (the signature still binds
    it). ``bucket_from_host`` names the bucket of a virtual-host-style request; SigV2
    signs it as part of the resource. ``now`` (epoch seconds) is for tests.
    """
    current = time.time() if now is None else now
    authorization = request.headers.get("Authorization")
    _, raw_query = split_raw_target(request)
    query = decoded_query_params(raw_query) if raw_query else {}
    v4_query = any(marker in query for marker in _V4_QUERY_MARKERS)
    v2_query = any(marker in query for marker in _V2_QUERY_MARKERS)

    if authorization is not None and (v4_query or v2_query):
        raise InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
            "string parameter or the Authorization header should be specified", ArgumentName="Authorization")
    if authorization is not None:
        scheme = authorization.strip().partition(" ")[0]
        if scheme == sigv4.ALGORITHM:
            return await sigv4.verify_header(request, creds, region=region, now=current, max_skew=max_skew,
                                             service=service)
        if scheme == "AWS":
            return await sigv2.verify_header(request, creds, now=current, max_skew=max_skew,
                                             bucket_from_host=bucket_from_host)
        if scheme.startswith("AWS4-ECDSA"):
            raise NotImplementedErr("SigV4a (AWS4-ECDSA-P256-SHA256) signatures are not supported.")
        raise InvalidArgument("Unsupported Authorization Type", ArgumentName="Authorization",
                              ArgumentValue=authorization[:64])
    if v4_query:
        return await sigv4.verify_query(request, creds, region=region, now=current, max_skew=max_skew,
                                        service=service)
    if v2_query:
        return await sigv2.verify_query(request, creds, now=current, bucket_from_host=bucket_from_host)
    return AuthContext(access_key=None, method=METHOD_ANONYMOUS,
                       content_sha256=request.headers.get("x-amz-content-sha256"))
