"""Request bodies: length rules, `Expect: 100-continue`, and integrity checks.

Owns how a handler obtains a body: `open_stream` for object data (streamed from the auth
layer's `payload_reader` straight to the engine, never buffered) and `read_document` for
the small XML bodies, plus `Integrity`: the Content-MD5 and flexible-checksum
expectations of a request, checked in the engine's `verify` hook so a mismatch aborts the
write before anything is committed.

The 100 Continue interim response is sent here, after authentication and the handler's
own checks, so a client that waits for it never uploads a body that will be refused.
From then on a body that stalls (no bytes for the connection's ``body_timeout``) ends the
request with 400 RequestTimeout (``buckets.s3.connections.watch_body``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import HttpVersion11, web

from buckets import checksums
from buckets.errors import (
    BadDigest,
    EntityTooLarge,
    InvalidDigest,
    InvalidRequest,
    MalformedXML,
    MissingContentLength,
)
from buckets.s3.auth import payload_reader
from buckets.s3.connections import watch_body
from buckets.s3.context import S3Request
from buckets.s3.params import BEYOND, decimal

MAX_OBJECT_SIZE = 5 * 1024**3  # single PUT / single part, as S3
_CHECKSUM_META_HEADERS = ("x-amz-checksum-mode", "x-amz-checksum-algorithm", "x-amz-checksum-type")
_CONTINUE_SENT = web.RequestKey("continue_sent", bool)  # request key: send_continue() already ran


async def send_continue(request: web.Request) -> None:
    """Send `100 Continue` once, if the client asked for it (see module docstring)."""
    if request.get(_CONTINUE_SENT):
        return
    request[_CONTINUE_SENT] = True
    if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


def require_length(request: web.Request) -> None:
    """A PUT body needs a Content-Length unless it is sent with chunked transfer encoding."""
    if request.headers.get("Content-Length") is None and \
            "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        raise MissingContentLength()


@dataclass(slots=True)
class BodyStream:
    """An object body on its way to the engine."""

    reader: Any  # the auth layer's payload reader (has .trailers once exhausted)
    stream: AsyncIterator[bytes]  # what the engine iterates
    size: int | None  # declared decoded length; None with chunked transfer encoding


async def open_stream(req: S3Request) -> BodyStream:
    """The decoded object body and its declared length (100 Continue goes out lazily)."""
    require_length(req.request)
    reader = payload_reader(req.request, req.auth)
    size = getattr(reader, "declared_length", None)
    if size is not None and size > MAX_OBJECT_SIZE:
        proposed = {"ProposedSize": str(size)} if size < BEYOND else {}  # a length of 20+ digits
        raise EntityTooLarge(MaxSizeAllowed=str(MAX_OBJECT_SIZE), **proposed)
    stream = _continue_first(req.request, reader, None if size is not None else MAX_OBJECT_SIZE)
    return BodyStream(reader, stream, size)


async def _continue_first(request: web.Request, stream: AsyncIterator[bytes],
                          limit: int | None) -> AsyncIterator[bytes]:
    """Send 100 Continue only when the engine starts reading: if it refuses the request
    first (NoSuchBucket, NoSuchUpload, ...), a waiting client never sends the body."""
    await send_continue(request)
    seen = 0
    async for chunk in watch_body(request, stream):
        if limit is not None:
            seen += len(chunk)
            if seen > limit:
                raise EntityTooLarge(MaxSizeAllowed=str(limit))
        yield chunk


async def read_document(req: S3Request, limit: int) -> tuple[bytes, Any]:
    """Read a small request document (XML) fully, refusing more than `limit` bytes."""
    declared = decimal(req.headers.get("Content-Length"))
    if declared is not None and declared > limit * 2:
        raise MalformedXML("The XML you provided was larger than the maximum allowed size.")
    reader = payload_reader(req.request, req.auth)
    size = getattr(reader, "declared_length", None)
    if size is not None and size > limit:
        raise MalformedXML("The XML you provided was larger than the maximum allowed size.")
    await send_continue(req.request)
    buf = bytearray()
    async for chunk in watch_body(req.request, reader):
        buf += chunk
        if len(buf) > limit:
            raise MalformedXML("The XML you provided was larger than the maximum allowed size.")
    return bytes(buf), reader


# --- integrity ----------------------------------------------------------------------------


def _parse_content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidDigest(**{"Content-MD5": value}) from None
    if len(digest) != 16:
        raise InvalidDigest()
    return digest


def _valid_checksum(alg: str, value: str) -> bool:
    try:
        result = checksums.validate_b64(alg, value)
    except Exception:  # noqa: BLE001 - any refusal by the validator means "not valid"
        return False
    return result is not False


def _alg_name(value: str) -> str | None:
    upper = value.strip().upper()
    return upper if upper in checksums.ALGORITHMS else None


@dataclass(slots=True)
class Integrity:
    """What the client promised about a body; checked by `verify` when the body ends."""

    content_md5: bytes | None = None
    algorithm: str | None = None  # the flexible checksum in play, if any
    header_value: str | None = None  # its value from an x-amz-checksum-* header
    trailer: str | None = None  # the trailer header carrying its value (aws-chunked)
    reader: Any = None  # the payload reader, whose .trailers exist once it is exhausted
    computed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> "Integrity":
        md5 = _parse_content_md5(headers.get("Content-MD5"))
        found: list[tuple[str, str]] = []
        for name, value in headers.items():
            lower = name.lower()
            if not lower.startswith("x-amz-checksum-") or lower in _CHECKSUM_META_HEADERS:
                continue
            alg = checksums.alg_from_header(lower)
            if alg is None:
                raise InvalidRequest(f"The {name} header is not a supported checksum.")
            found.append((alg, value.strip()))
        if len({alg for alg, _ in found}) > 1:
            raise InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
        algorithm = found[0][0] if found else None
        value = found[0][1] if found else None
        if algorithm and value is not None and not _valid_checksum(algorithm, value):
            raise InvalidRequest(f"Value for {checksums.header_name(algorithm)} header is invalid.")
        trailer = None
        declared = headers.get("x-amz-trailer")
        if declared:
            names = [t.strip().lower() for t in declared.split(",") if t.strip()]
            for tname in names:
                talg = checksums.alg_from_header(tname) if tname.startswith("x-amz-checksum-") else None
                if talg is None:
                    continue
                if algorithm and talg != algorithm:
                    raise InvalidRequest("Expecting a single x-amz-checksum- header. "
                                         "Multiple checksum Types are not allowed.")
                algorithm, trailer = talg, tname
        sdk = headers.get("x-amz-sdk-checksum-algorithm")
        if sdk:
            sdk_alg = _alg_name(sdk)
            if sdk_alg is None:
                raise InvalidRequest("Checksum algorithm provided is unsupported. Please try again "
                                     "with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]")
            if algorithm is None:
                raise InvalidRequest("x-amz-sdk-checksum-algorithm specified, but no corresponding "
                                     "x-amz-checksum-* or x-amz-trailer headers were found.")
            if sdk_alg != algorithm:
                raise InvalidRequest("Value for x-amz-sdk-checksum-algorithm header is invalid.")
        return cls(content_md5=md5, algorithm=algorithm, header_value=value, trailer=trailer)

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (self.algorithm,) if self.algorithm else ()

    def expected_checksum(self) -> str | None:
        if self.header_value is not None:
            return self.header_value
        if self.trailer is not None and self.reader is not None:
            trailers = getattr(self.reader, "trailers", None) or {}
            value = None
            for name, v in trailers.items():
                if name.lower() == self.trailer:
                    value = v.strip()
            if value is None:
                raise InvalidRequest(f"The {self.trailer} trailer was declared but not sent.")
            if not _valid_checksum(self.algorithm or "", value):
                raise InvalidRequest(f"Value for {self.trailer} trailing header is invalid.")
            return value
        return None

    def check_document(self, body: bytes, *, required: bool) -> None:
        """A small request document read whole (DeleteObjects, PutBucketCors, ...): its
        Content-MD5 and flexible checksum, when sent; ``required``: one of them must be, as S3
        demands for some operations (InvalidRequest otherwise)."""
        import hashlib

        if required and self.content_md5 is None and self.algorithm is None:
            raise InvalidRequest("Missing required header for this request: Content-MD5")
        if self.content_md5 is not None and hashlib.md5(body).digest() != self.content_md5:
            raise BadDigest("The Content-MD5 you specified did not match what we received.")
        expected = self.expected_checksum()
        if self.algorithm and expected is not None:
            digest = checksums.new_checksum(self.algorithm)
            digest.update(body)
            if digest.b64() != expected:
                raise BadDigest(f"The {self.algorithm} you specified did not match the calculated checksum.")

    async def verify(self, computed: dict[str, Any]) -> None:
        """The engine's verify hook: raise to abort the write before it is committed."""
        self.computed = computed
        if self.content_md5 is not None and computed.get("md5") != self.content_md5:
            raise BadDigest("The Content-MD5 you specified did not match what we received.")
        expected = self.expected_checksum()
        if expected is not None and self.algorithm:
            actual = computed.get(self.algorithm)
            if actual is not None and actual != expected:
                raise BadDigest(f"The {self.algorithm} you specified did not match the calculated checksum.")

    def response_headers(self, object_checksums: Mapping[str, str]) -> dict[str, str]:
        """x-amz-checksum-* for the algorithm the client used, as S3 echoes it on PUT, or, when
        the client sent none, S3's default one that the object got (CRC64NVME)."""
        out: dict[str, str] = {}
        alg = self.algorithm or checksums.DEFAULT_ALGORITHM
        if alg in object_checksums:
            out[checksums.header_name(alg)] = object_checksums[alg]
        return out
