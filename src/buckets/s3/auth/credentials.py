"""Where request authentication gets secrets from, and what it hands back.

``CredentialStore`` is the one question auth asks of the user database ("what is the
secret of this access key?"); ``AuthContext`` is the verified identity plus everything
the payload decoder needs to keep verifying the body (seed signature, signing key,
scope, request time). Nothing here reads HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# x-amz-content-sha256 values (besides a hex SHA-256 of the body).
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
# SigV4a (ECDSA) and event-stream variants are recognised only to refuse them clearly.
STREAMING_NOT_IMPLEMENTED = (
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    "STREAMING-AWS4-HMAC-SHA256-EVENTS",
)
STREAMING_PAYLOADS = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

METHOD_V4_HEADER = "v4-header"
METHOD_V4_QUERY = "v4-query"
METHOD_V2_HEADER = "v2-header"
METHOD_V2_QUERY = "v2-query"
METHOD_ANONYMOUS = "anonymous"


@runtime_checkable
class CredentialStore(Protocol):
    async def secret_for(self, access_key: str) -> str | None:
        """The secret key of ``access_key``; None when the user is unknown or disabled."""
        ...


class StaticCredentialStore:
    """A fixed access-key -> secret map (root user, tests)."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = dict(secrets)

    async def secret_for(self, access_key: str) -> str | None:
        return self._secrets.get(access_key)


@dataclass(frozen=True)
class AuthContext:
    """Who sent a request and how; produced by ``authenticate``.

    ``access_key`` None means anonymous. The v4 fields (``seed_signature``,
    ``signing_key``, ``scope``, ``amz_date``) let ``payload_reader`` verify chunk and
    trailer signatures of a streaming body against the same key that signed the headers.
    """

    access_key: str | None
    method: str  # METHOD_* above
    content_sha256: str | None  # x-amz-content-sha256 as sent, else None
    seed_signature: str | None = None  # the verified request signature (hex for v4)
    signing_key: bytes | None = field(default=None, repr=False)  # v4 kSigning
    scope: str | None = None  # "20130524/us-east-1/s3/aws4_request"
    amz_date: str | None = None  # "20130524T000000Z", the request's signing time
    region: str | None = None  # region from the credential scope
    signed_headers: tuple[str, ...] = ()  # lower-case names covered by a v4 signature
    expires_at: float | None = None  # presigned URLs: epoch seconds after which it is refused

    @property
    def is_anonymous(self) -> bool:
        return self.access_key is None

    @property
    def can_verify_chunks(self) -> bool:
        return self.signing_key is not None and self.seed_signature is not None

