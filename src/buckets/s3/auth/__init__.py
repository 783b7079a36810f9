"""Request authentication for the S3 API: who sent this request, and is its body genuine.

Owns SigV4 (Authorization header, presigned URLs, signed aws-chunked bodies and
trailers), SigV2 (header and query, for s3cmd) and the streaming body decoder. It must
not decide authorisation (policies/ACLs), touch storage, or render XML: it raises the
typed errors of ``buckets.errors`` and the S3 layer renders them.

    ctx = await authenticate(request, creds, region="us-east-1", bucket_from_host=bucket)
    reader = payload_reader(request, ctx)
    async for piece in reader: ...          # decoded, verified body
    reader.trailers                          # {"x-amz-checksum-crc32": "..."} after exhaustion
"""

from .credentials import (
    EMPTY_SHA256,
    METHOD_ANONYMOUS,
    METHOD_V2_HEADER,
    METHOD_V2_QUERY,
    METHOD_V4_HEADER,
    METHOD_V4_QUERY,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthContext,
    CredentialStore,
    StaticCredentialStore,
)
from .payload import PayloadReader, payload_reader
from .sigv4 import derive_signing_key
from .verify import authenticate

__all__ = [
    "EMPTY_SHA256",
    "METHOD_ANONYMOUS",
    "METHOD_V2_HEADER",
    "METHOD_V2_QUERY",
    "METHOD_V4_HEADER",
    "METHOD_V4_QUERY",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthContext",
    "CredentialStore",
    "PayloadReader",
    "StaticCredentialStore",
    "authenticate",
    "derive_signing_key",
    "payload_reader",
]
