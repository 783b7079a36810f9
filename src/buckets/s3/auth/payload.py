"""Streaming request-body decoding and verification.

``payload_reader`` turns ``request.content`` into an async iterator of the object's
bytes, whatever the client's x-amz-content-sha256 said:

* a hex SHA-256: bytes pass through, hashed on the way; a mismatch raises
  ``XAmzContentSHA256Mismatch`` (checked before the last piece is handed out);
* ``UNSIGNED-PAYLOAD`` (or nothing): bytes pass through;
* ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``: aws-chunked framing is removed and
  every chunk signature is verified, chained from the request's seed signature (and the
  trailer signature after the final chunk);
* ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: aws-chunked framing removed, trailers kept.

Memory stays bounded by ``chunk_size`` whatever the body or chunk size. A piece is
handed out only after its chunk's signature has been checked when the chunk fits in one
piece; a chunk larger than ``chunk_size`` is streamed before its signature can be known,
so consumers must never commit anything until the iterator has finished without error.

Client-caused failures (short bodies, dropped connections, malformed framing) are always
``BucketsError`` subclasses (IncompleteBody, InvalidRequest, SignatureDoesNotMatch, ...).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader

from buckets.errors import (
    AccessDenied,
    EntityTooLarge,
    IncompleteBody,
    InvalidRequest,
    SignatureDoesNotMatch,
    XAmzContentSHA256Mismatch,
)
from buckets.s3.params import decimal
from buckets.runtime import hash_update

from .credentials import (
    STREAMING_PAYLOADS,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    AuthContext,
)
from .sigv4 import chunk_string_to_sign, signature_hex, signatures_equal, trailer_string_to_sign

MAX_LINE = 4096  # a chunk header is ~90 bytes, a trailer line ~80
MAX_TRAILERS = 16
_HASH_IN_THREAD = 256 * 1024  # hash big pieces off the event loop
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX_SIZE = re.compile(r"[0-9a-fA-F]{1,16}")
_DISCONNECTS = (asyncio.IncompleteReadError, ConnectionError, aiohttp.ClientError, HttpProcessingError)


@dataclass
class ChunkSigner:
    """State for verifying chained chunk signatures (kSigning never leaves this process)."""

    signing_key: bytes
    amz_date: str
    scope: str
    previous: str  # the seed signature, then each verified chunk's signature

    def verify_chunk(self, chunk_sha256: str, provided: str | None) -> None:
        expected = signature_hex(self.signing_key,
                                 chunk_string_to_sign(self.amz_date, self.scope, self.previous, chunk_sha256))
        if provided is None or not signatures_equal(expected, provided):
            raise SignatureDoesNotMatch("The chunk signature we calculated does not match the one provided.",
                                        SignatureProvided=provided or "")
        self.previous = expected

    def verify_trailer(self, canonical_trailers: bytes, provided: str | None) -> None:
        trailer_hash = hashlib.sha256(canonical_trailers).hexdigest()
        expected = signature_hex(self.signing_key,
                                 trailer_string_to_sign(self.amz_date, self.scope, self.previous, trailer_hash))
        if provided is None or not signatures_equal(expected, provided):
            raise SignatureDoesNotMatch("The trailer signature we calculated does not match the one provided.",
                                        SignatureProvided=provided or "")


async def _hash_update(hasher: hashlib._Hash, data: bytes) -> None:  # type: ignore[name-defined]
    if len(data) >= _HASH_IN_THREAD:
        await asyncio.get_running_loop().run_in_executor(None, hasher.update, data)
    else:
        hash_update(hasher, data)


class PayloadReader:
    """Async iterator over a request's decoded body; iterate once.

    After exhaustion ``trailers`` holds any aws-chunked trailers (lower-case names, e.g.
    ``{"x-amz-checksum-crc32": "..."}``; the trailer signature is not included).
    """

    def __init__(self, stream: StreamReader, *, content_sha256: str | None, declared_length: int | None,
                 chunk_size: int, signer: ChunkSigner | None = None,
                 expected_trailers: tuple[str, ...] = ()) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.content_sha256 = content_sha256
        self.declared_length = declared_length
        self.bytes_read = 0
        self.trailers: dict[str, str] = {}
        self.expected_trailers = expected_trailers  # names announced in x-amz-trailer
        self._stream = stream
        self._chunk_size = chunk_size
        self._signer = signer
        self._started = False
        self._finished = False

    @property
    def is_chunked(self) -> bool:
        return self.content_sha256 in STREAMING_PAYLOADS

    @property
    def finished(self) -> bool:
        """True once the whole body was read and every check on it passed."""
        return self._finished

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._started:
            raise RuntimeError("a request body can be read only once")
        self._started = True
        return self._chunked() if self.is_chunked else self._plain()

    async def read_all(self, limit: int) -> bytes:
        """The whole decoded body, for small XML/JSON bodies; more than ``limit`` bytes -> EntityTooLarge."""
        if self.declared_length is not None and self.declared_length > limit:
            raise EntityTooLarge(f"The request body is larger than {limit} bytes.")
        body = bytearray()
        async for piece in self:
            body += piece
            if len(body) > limit:
                raise EntityTooLarge(f"The request body is larger than {limit} bytes.")
        return bytes(body)

    # --- low-level reads: every transport failure becomes IncompleteBody -------------------

    async def _read_exactly(self, n: int) -> bytes:
        try:
            return await self._stream.readexactly(n)
        except _DISCONNECTS as exc:
            raise IncompleteBody() from exc

    async def _read_up_to(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at end of stream."""
        buffer = bytearray()
        try:
            while len(buffer) < n:
                data = await self._stream.read(n - len(buffer))
                if not data:
                    break
                buffer += data
        except _DISCONNECTS as exc:
            raise IncompleteBody() from exc
        return bytes(buffer)

    async def _read_line(self) -> bytes:
        """One line including its LF; b"" at a clean end of stream."""
        if self._stream.at_eof():
            # Also a request without a body: aiohttp's EmptyStreamReader cannot readuntil().
            return b""
        try:
            line = await self._stream.readuntil(b"\n", max_size=MAX_LINE)
        except LineTooLong as exc:
            raise InvalidRequest("Malformed aws-chunked body: a chunk header or trailer line is too long.") from exc
        except _DISCONNECTS as exc:
            raise IncompleteBody() from exc
        if line and not line.endswith(b"\n"):
            raise IncompleteBody()  # the stream ended mid-line
        return line

    # --- plain bodies ------------------------------------------------------------------------

    async def _plain(self) -> AsyncIterator[bytes]:
        expected = self.content_sha256 if self.content_sha256 and _HEX64.fullmatch(self.content_sha256) else None
        hasher = hashlib.sha256() if expected else None
        remaining = self.declared_length
        while remaining is None or remaining > 0:
            if remaining is None:
                piece = await self._read_up_to(self._chunk_size)
                if not piece:
                    break
            else:
                piece = await self._read_exactly(min(self._chunk_size, remaining))
                remaining -= len(piece)
            self.bytes_read += len(piece)
            if hasher is not None:
                await _hash_update(hasher, piece)
                if remaining == 0:  # known length: verify before the last piece leaves
                    self._check_sha256(hasher, expected)
            yield piece
        if hasher is not None and (remaining is None or self.declared_length == 0):
            self._check_sha256(hasher, expected)
        self._finished = True

    @staticmethod
    def _check_sha256(hasher: hashlib._Hash, expected: str | None) -> None:  # type: ignore[name-defined]
        computed = hasher.hexdigest()
        if computed != expected:
            raise XAmzContentSHA256Mismatch(ClientComputedContentSHA256=expected or "",
                                            S3ComputedContentSHA256=computed)

    # --- aws-chunked bodies --------------------------------------------------------------------

    async def _chunk_header(self) -> tuple[int, str | None]:
        line = await self._read_line()
        if not line:
            raise IncompleteBody()
        try:
            text = line.rstrip(b"\r\n").decode("ascii")
        except UnicodeDecodeError:
            raise InvalidRequest("Malformed aws-chunked body: the chunk header is not ASCII.") from None
        size_text, _, extensions = text.partition(";")
        if not _HEX_SIZE.fullmatch(size_text.strip()):
            raise InvalidRequest(f"Malformed aws-chunked body: invalid chunk size {size_text[:32]!r}.")
        signature = None
        for extension in extensions.split(";"):
            key, _, value = extension.partition("=")
            if key.strip() == "chunk-signature":
                signature = value.strip()
        return int(size_text, 16), signature

    async def _expect_crlf(self) -> None:
        if await self._read_exactly(2) != b"\r\n":
            raise InvalidRequest("Malformed aws-chunked body: chunk data is not followed by CRLF.")

    async def _chunked(self) -> AsyncIterator[bytes]:
        signer = self._signer
        while True:
            size, signature = await self._chunk_header()
            if self.declared_length is not None and self.bytes_read + size > self.declared_length:
                raise InvalidRequest("The aws-chunked body holds more data than x-amz-decoded-content-length.")
            if size == 0:
                if signer is not None:
                    signer.verify_chunk(hashlib.sha256().hexdigest(), signature)
                break
            hasher = hashlib.sha256() if signer is not None else None
            remaining = size
            while remaining:
                piece = await self._read_exactly(min(self._chunk_size, remaining))
                remaining -= len(piece)
                self.bytes_read += len(piece)
                if hasher is not None:
                    await _hash_update(hasher, piece)
                if remaining == 0:
                    await self._expect_crlf()
                    if signer is not None and hasher is not None:
                        signer.verify_chunk(hasher.hexdigest(), signature)
                yield piece
        await self._read_trailers()
        if self.declared_length is not None and self.bytes_read < self.declared_length:
            raise IncompleteBody()
        self._finished = True

    async def _read_trailers(self) -> None:
        """Trailer lines after the final chunk, up to the empty line that ends the body."""
        received: list[tuple[str, str]] = []
        while True:
            line = await self._read_line()
            if not line or not line.strip():  # clean EOF in place of the last CRLF is tolerated
                break
            if len(received) >= MAX_TRAILERS:
                raise InvalidRequest("Malformed aws-chunked body: too many trailer lines.")
            try:
                name, sep, value = line.decode("ascii").strip().partition(":")
            except UnicodeDecodeError:
                raise InvalidRequest("Malformed aws-chunked body: a trailer is not ASCII.") from None
            if not sep or not name.strip():
                raise InvalidRequest("Malformed aws-chunked body: a trailer line is not name:value.")
            received.append((name.strip().lower(), value.strip()))
        trailers = dict(received)
        signature = trailers.pop("x-amz-trailer-signature", None)
        if self.content_sha256 == STREAMING_SIGNED_TRAILER:
            assert self._signer is not None
            canonical = "".join(f"{name}:{value}\n" for name, value in sorted(trailers.items()))
            self._signer.verify_trailer(canonical.encode("ascii"), signature)
        elif self.content_sha256 == STREAMING_SIGNED and trailers:
            raise InvalidRequest("Trailers are only allowed with a -TRAILER x-amz-content-sha256 value.")
        missing = [name for name in self.expected_trailers if name not in trailers]
        if missing:
            raise InvalidRequest(f"The trailer {missing[0]} announced in x-amz-trailer was not sent.")
        self.trailers = trailers


def _length_header(request: web.Request, name: str) -> int | None:
    """A declared body length; `params.BEYOND` for one of 20+ digits (too large anyway)."""
    value = request.headers.get(name)
    if value is None:
        return None
    length = decimal(value.strip())
    if length is None:
        raise InvalidRequest(f"The {name} header is not a valid length.")
    return length


def payload_reader(request: web.Request, ctx: AuthContext, *, chunk_size: int = 1 << 20) -> PayloadReader:
    """The decoder for this request's body, chosen by the context's x-amz-content-sha256."""
    content_sha256 = ctx.content_sha256
    if content_sha256 not in STREAMING_PAYLOADS:
        return PayloadReader(request.content, content_sha256=content_sha256,
                             declared_length=_length_header(request, "Content-Length"), chunk_size=chunk_size)
    signer = None
    if content_sha256 in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
        if not ctx.can_verify_chunks:
            raise AccessDenied(f"{content_sha256} bodies require a request signed with AWS Signature Version 4.")
        assert ctx.signing_key is not None and ctx.amz_date and ctx.scope and ctx.seed_signature
        signer = ChunkSigner(ctx.signing_key, ctx.amz_date, ctx.scope, ctx.seed_signature)
    elif content_sha256 != STREAMING_UNSIGNED_TRAILER:  # pragma: no cover - STREAMING_PAYLOADS is exhaustive
        raise InvalidRequest(f"Unsupported x-amz-content-sha256 {content_sha256}")
    announced = tuple(name.strip().lower() for name in request.headers.get("x-amz-trailer", "").split(",")
                      if name.strip())
    return PayloadReader(request.content, content_sha256=content_sha256,
                         declared_length=_length_header(request, "x-amz-decoded-content-length"),
                         chunk_size=chunk_size, signer=signer, expected_trailers=announced)
