"""Test helpers: sign requests with the real client signers and turn them into aiohttp requests.

Signing is done by botocore (SigV4 header/query, SigV2 header/query), exactly as boto3 and
the aws cli do it; the server side sees an ``aiohttp`` request built from the same
method, URL and headers, with the body in a real ``StreamReader``. The request head goes
through aiohttp's own HTTP parser (the one the server runs, see ``wire_request``), so
tests see the URL the server would see, and never one the server cannot receive. aws-chunked bodies
are encoded here by hand from the AWS specification, with an HMAC chain written
independently of the code under test.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp.http import HttpRequestParser, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import Request
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from multidict import CIMultiDict

from buckets.s3.auth import StaticCredentialStore

ACCESS_KEY = "AKIDBUCKETSTEST"
SECRET_KEY = "s3cr3t/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
ENDPOINT = "http://127.0.0.1:9000"
CREDS = StaticCredentialStore({ACCESS_KEY: SECRET_KEY, "OTHERKEY": "other-secret"})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class _BufferProtocol:
    """The flow-control hooks StreamReader calls; the whole body is fed up front."""

    _reading_paused = False

    def pause_reading(self, *args: object, **kwargs: object) -> None:
        pass

    def resume_reading(self, *args: object, **kwargs: object) -> None:
        pass


def make_stream(body: bytes, *, eof: bool = True) -> StreamReader:
    stream = StreamReader(_BufferProtocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    if body:
        stream.feed_data(body)
    if eof:
        stream.feed_eof()
    return stream


# What create_app configures (handler_args), so heads the server refuses are refused here too.
MAX_LINE_SIZE = MAX_FIELD_SIZE = 16384


def _parser() -> HttpRequestParser:
    return HttpRequestParser(_BufferProtocol(), asyncio.get_running_loop(), 2**16,  # type: ignore[arg-type]
                             max_line_size=MAX_LINE_SIZE, max_field_size=MAX_FIELD_SIZE, auto_decompress=False)


def _head_bytes(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def parse_head(method: str, target: str, headers: Mapping[str, str]) -> RawRequestMessage:
    """The message aiohttp's HTTP parser (the one the server runs) makes of this request head.

    ``target`` and header values are str as aiohttp hands them over (UTF-8 with
    surrogateescape for other bytes). Raises ``aiohttp.http_exceptions.HttpProcessingError``
    (status 400) exactly when the server would answer 400 before any handler runs.

    ``make_mocked_request`` alone is not enough: it parses the target with ``yarl.URL(...)``,
    which reads ``//:a`` as a URL with a host and an invalid port (a ValueError), while the
    server's parser builds the URL from the path (``URL.build(path=...)``) and serves it.
    """
    messages, _upgraded, _tail = _parser().feed_data(_head_bytes(method, target, headers))
    assert len(messages) == 1, f"one request head, got {len(messages)}"
    return messages[0][0]


def wire_request(method: str, target: str, headers: Mapping[str, str], body: bytes = b"", *,
                 eof: bool = True, body_as_given: bool = False) -> Request:
    """The ``aiohttp.web.Request`` a handler of the server would get for this request.

    Head and body go through aiohttp's parser, configured as the server's, and the handler
    gets the parser's own body stream: aiohttp's ``EmptyStreamReader`` when the head
    announces no body, the data without its chunked framing, cut at Content-Length. A
    head the parser refuses raises ``HttpProcessingError`` (the server's 400 before any
    handler). ``eof``: the client sent everything; if that is less than the head
    announced, or the body's framing is broken (the server answers that 400 itself and
    closes), the connection is lost, as aiohttp reports it (ConnectionResetError on the
    stream). Bytes after the request (the start of a next one) are ignored. The
    transport, writer and app around the request are aiohttp's test mocks.

    ``body_as_given``: the stream holds ``body`` exactly, whatever the head says, ended
    cleanly unless ``eof`` is false (for tests of the body decoders that alter the bytes
    of a signed request without re-framing it).
    """
    parser = _parser()
    messages, _upgraded, _tail = parser.feed_data(_head_bytes(method, target, headers))
    assert len(messages) == 1, f"one request head, got {len(messages)}"
    message, payload = messages[0]
    if body_as_given:
        payload = make_stream(body, eof=eof)
    elif body and payload is not EMPTY_PAYLOAD:
        try:
            parser.feed_data(body)
        except HttpProcessingError:  # broken framing: the server answers 400 itself and closes
            eof = True
    if eof and not body_as_given and not payload.is_eof() and payload.exception() is None:
        payload.set_exception(ConnectionResetError("Connection lost"))
    shell = make_mocked_request(message.method, "/", headers=message.headers)
    return Request(message, payload, shell.protocol, shell.writer, shell.task, asyncio.get_running_loop())


@dataclass
class Signed:
    """A signed request as a client would send it."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def to_request(self, *, body: bytes | None = None, target: str | None = None,
                   headers: dict[str, str] | None = None, eof: bool = True) -> Request:
        """The aiohttp request the server would see (optionally tampered): the head as
        aiohttp parses it, the body handed to the decoders as given (see ``wire_request``)."""
        sent = CIMultiDict(headers if headers is not None else self.headers)
        if "Host" not in sent:  # urllib3 adds Host from the URL, as botocore assumed when signing
            sent["Host"] = urlsplit(self.url).netloc
        payload = self.body if body is None else body
        return wire_request(self.method, target or self.target, sent, payload, eof=eof, body_as_given=True)


def _aws_request(method: str, url: str, headers: dict[str, str] | None, body: bytes) -> AWSRequest:
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    if body:
        request.headers["Content-Length"] = str(len(body))
    return request


def _finish(request: AWSRequest, body: bytes) -> Signed:
    prepared = request.prepare()
    return Signed(request.method, prepared.url, {k: v for k, v in prepared.headers.items()}, body)


def sign_v4(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"", *,
            secret: str = SECRET_KEY, access_key: str = ACCESS_KEY, region: str = REGION,
            unsigned_payload: bool = False) -> Signed:
    """botocore's S3SigV4Auth (what boto3 uses for every S3 call)."""
    request = _aws_request(method, url, headers, body)
    if unsigned_payload:  # what boto3 does over https with a checksum header present
        request.url = request.url.replace("http://", "https://", 1)
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    S3SigV4Auth(Credentials(access_key, secret), "s3", region).add_auth(request)
    signed = _finish(request, body)
    if unsigned_payload:
        signed.url = signed.url.replace("https://", "http://", 1)
    return signed


def presign_v4(method: str, url: str, expires: int = 3600, headers: dict[str, str] | None = None, *,
               secret: str = SECRET_KEY, region: str = REGION) -> Signed:
    """botocore's S3SigV4QueryAuth (generate_presigned_url)."""
    request = _aws_request(method, url, headers, b"")
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, secret), "s3", region, expires=expires).add_auth(request)
    return _finish(request, b"")


def sign_v2(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"", *,
            auth_path: str | None = None, secret: str = SECRET_KEY) -> Signed:
    """botocore's HmacV1Auth (signature_version='s3')."""
    request = _aws_request(method, url, headers, body)
    request.auth_path = auth_path
    HmacV1Auth(Credentials(ACCESS_KEY, secret)).add_auth(request)
    return _finish(request, body)


def presign_v2(method: str, url: str, expires: int = 3600, *, secret: str = SECRET_KEY) -> Signed:
    """botocore's HmacV1QueryAuth (presigned URL with signature_version='s3')."""
    request = _aws_request(method, url, None, b"")
    HmacV1QueryAuth(Credentials(ACCESS_KEY, secret), expires=expires).add_auth(request)
    return _finish(request, b"")


# --- aws-chunked encoding, straight from the AWS documentation -----------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str = REGION) -> bytes:
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), "s3"), "aws4_request")


def seed_signature(signed: Signed) -> str:
    return signed.headers["Authorization"].rsplit("Signature=", 1)[1]


def encode_signed_chunks(data: bytes, sizes: list[int], *, key: bytes, amz_date: str, seed: str,
                         trailer: tuple[str, str] | None = None) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] framing with chained chunk signatures."""
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    previous, out, offset = seed, bytearray(), 0
    for size in [*sizes, 0]:
        chunk = data[offset:offset + size]
        offset += size
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256,
                             hashlib.sha256(chunk).hexdigest()])
        previous = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk
        if size:
            out += b"\r\n"
    assert offset == len(data), "sizes must cover the data"
    if trailer is None:
        return bytes(out + b"\r\n")
    name, value = trailer
    canonical = f"{name}:{value}\n"
    to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    trailer_sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return bytes(out + f"{name}:{value}\r\nx-amz-trailer-signature:{trailer_sig}\r\n\r\n".encode())


class _StreamingSigV4(S3SigV4Auth):
    """botocore's S3 signer with the payload hash fixed to a STREAMING-* token.

    botocore itself only streams unsigned trailers; signed streaming (minio-go, the Java
    and Go SDKs) signs the headers exactly like this and then chains chunk signatures.
    """

    def __init__(self, credentials: Credentials, token: str) -> None:
        super().__init__(credentials, "s3", REGION)
        self._token = token

    def payload(self, request: AWSRequest) -> str:
        return self._token


def sign_v4_streaming(url: str, data: bytes, sizes: list[int], *, trailer: tuple[str, str] | None = None,
                      secret: str = SECRET_KEY, headers: dict[str, str] | None = None) -> Signed:
    """A PUT with a signed aws-chunked body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER])."""
    token = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    framing = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}
    if trailer:
        framing["x-amz-trailer"] = trailer[0]
    # Signatures are fixed-width, so a throwaway encoding gives the wire length to sign.
    wire_length = len(encode_signed_chunks(data, sizes, key=b"k", amz_date="20000101T000000Z", seed="0" * 64,
                                           trailer=trailer))
    request = AWSRequest(method="PUT", url=url, headers={**(headers or {}), **framing,
                                                         "Content-Length": str(wire_length)})
    _StreamingSigV4(Credentials(ACCESS_KEY, secret), token).add_auth(request)
    signed = _finish(request, b"")
    amz_date = signed.headers["X-Amz-Date"]
    signed.body = encode_signed_chunks(data, sizes, key=signing_key(secret, amz_date[:8]), amz_date=amz_date,
                                       seed=seed_signature(signed), trailer=trailer)
    assert len(signed.body) == wire_length
    return signed


def sign_v4_unsigned_trailer(url: str, data: bytes, *, chunk_size: int = 1024 * 1024) -> Signed:
    """What boto3 >= 1.36 sends for put_object over https: aws-chunked + CRC32 trailer, unsigned body."""
    from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

    wire = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32",
                             chunk_size=chunk_size).read()
    request = AWSRequest(method="PUT", url=url, headers={
        "Content-Encoding": "aws-chunked", "X-Amz-Trailer": "x-amz-checksum-crc32",
        "X-Amz-Decoded-Content-Length": str(len(data)), "Content-Length": str(len(wire))})
    request.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32",
                                                         "name": "x-amz-checksum-crc32"}}
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION).add_auth(request)
    signed = _finish(request, b"")
    signed.body = wire
    return signed
