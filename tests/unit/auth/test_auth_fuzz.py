"""Whatever a client sends, authentication and body decoding fail with a typed S3 error, never a crash.

Every request is built the way the server builds it: the request head goes through
aiohttp's own HTTP parser (``auth_testkit.wire_request``). A head that parser refuses
never reaches the server's code (aiohttp answers 400 itself, as
tests/integration/test_s3_request_target.py shows over a real socket); for those the
test checks that the refusal is that 400 and nothing else.

The number of examples comes from the hypothesis profile (tests/hypothesis_profiles.py):
a fixed, derandomized set in ``make test``, many random ones in ``make test-fuzz``.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from aiohttp.http_exceptions import HttpProcessingError
from auth_testkit import ACCESS_KEY, CREDS, ENDPOINT, sign_v4, wire_request
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from buckets.errors import BucketsError
from buckets.s3.auth import AuthContext, authenticate, payload_reader

# Pieces of a request target: ordinary and reserved characters, dot and empty segments,
# percent-escapes valid and not.
URL_CHARS = st.sampled_from([*"abcXYZ019-_.~/%+=&;:,!$'()*@?[]", "%2F", "%zz", "%ff", "%C3%A9", "%", "%00",
                             "//", "/..", "/."])
# Bytes a request line may not carry (non-ASCII, controls, space, a fragment) or that only
# some parsers accept: at most one per target, in about a quarter of the examples.
LINE_BREAKERS = st.one_of(st.none(), st.none(), st.none(),
                          st.sampled_from(["\u00e9", "\u00b2", " ", "\t", "\x7f", "\x01", "#", "\\"]))
_TOKENS = [
    "AWS4-HMAC-SHA256", "AWS", "Credential=", f"{ACCESS_KEY}/20240101/us-east-1/s3/aws4_request", ",", ", ",
    "SignedHeaders=host;x-amz-date", "SignedHeaders=", "Signature=" + "a" * 64, "Signature=", ":", " ", "=",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Expires=99999999999999999999", "X-Amz-Date=00010101T000000Z",
    "X-Amz-Date=99991231T235959Z", f"X-Amz-Credential={ACCESS_KEY}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request",
    "X-Amz-SignedHeaders=host", "X-Amz-Signature=" + "0" * 64, "AWSAccessKeyId=" + ACCESS_KEY,
    "Expires=-99999999999999999999", "Expires=1e9", "Signature=abc%2B", "&",
]
HEADER_TOKENS = st.sampled_from([*_TOKENS, "\u00e9", "\u00b2"])  # header values may carry non-ASCII bytes
QUERY_TOKENS = st.sampled_from([*[t for t in _TOKENS if t != " "], "%C3%A9", "%C2%B2", "%20"])
DATES = st.sampled_from(["20240101T000000Z", "Mon, 01 Jan 2024 00:00:00 GMT", "garbage", "", "00010101T000000Z",
                         "Fri, 31 Dec 9999 23:59:59 GMT", "99991231T235959Z"])
HOST_BUCKET = st.sampled_from([None, "bucket"])  # path-style, or virtual-host-style (bucket from Host)


def _refused_as_the_server_does(error: HttpProcessingError) -> None:
    """aiohttp's parser refused the head: the server answers this 400 before any handler."""
    assert error.code == 400, f"aiohttp refused the head with {error.code}, not 400: {error!r}"
    event("request head refused by aiohttp (400)")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(URL_CHARS, max_size=12), breaker=LINE_BREAKERS, where=st.integers(0, 12),
       query=st.lists(QUERY_TOKENS, max_size=8),
       authorization=st.one_of(st.none(), st.lists(HEADER_TOKENS, max_size=8).map("".join)),
       amz_date=st.one_of(st.none(), DATES), date=st.one_of(st.none(), DATES),
       content_sha256=st.one_of(st.none(), st.sampled_from(["UNSIGNED-PAYLOAD", "x", "e" * 64,
                                                            "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"])),
       host_bucket=HOST_BUCKET)
# The example that once failed `make test`: the target "//:a", which yarl.URL() reads as a
# host with a bad port but aiohttp's parser (and so the server) takes as a path.
@example(path=["/", ":", "a"], breaker=None, where=0, query=[], authorization=None, amz_date=None, date=None,
         content_sha256=None, host_bucket=None)
@example(path=["/", ":", "a"], breaker=None, where=0, query=[], authorization=None, amz_date=None, date=None,
         content_sha256=None, host_bucket="bucket")
def test_authenticate_only_raises_s3_errors(path, breaker, where, query, authorization, amz_date, date,
                                            content_sha256, host_bucket) -> None:
    """Garbage credentials never authenticate and never crash: a typed S3 error, or anonymous."""
    pieces = [piece.replace("?", "") for piece in path]
    if breaker is not None:
        pieces.insert(min(where, len(pieces)), breaker)
    target = "/" + "".join(pieces) + ("?" + "".join(query) if query else "")
    headers = {"Host": "127.0.0.1:9000"}
    for name, value in (("Authorization", authorization), ("x-amz-date", amz_date), ("Date", date),
                        ("x-amz-content-sha256", content_sha256)):
        if value is not None:
            headers[name] = value

    async def run() -> None:
        try:
            request = wire_request("GET", target, headers)
        except HttpProcessingError as error:
            _refused_as_the_server_does(error)
            return
        try:
            ctx = await authenticate(request, CREDS, bucket_from_host=host_bucket)
        except BucketsError:
            event("typed S3 error")
            return
        # No example carries a valid signature: whatever got through is anonymous.
        assert ctx.is_anonymous, f"garbage authenticated as {ctx.access_key!r}"
        event("anonymous")

    asyncio.run(run())


# Characters a client may put in a key, quoted as a client sends them (so the request
# line is one aiohttp accepts): reserved ones, dot segments, empty segments ("//:a" is
# the key "/:a" in a virtual-host-style request), non-ASCII.
KEY_CHARS = st.sampled_from([*"abc019-_.~/:@!$&'()*+,;=[] ", "..", "//", "\u00e9", "\u2603", "%", "?", "#"])


@given(key=st.lists(KEY_CHARS, max_size=10).map("".join), host_bucket=HOST_BUCKET,
       query=st.sampled_from(["", "uploads", "acl", "prefix=a%2Fb&delimiter=%2F", "list-type=2&start-after=%2F"]))
@example(key="/:a", host_bucket="bucket", query="")  # sent as "//:a"
def test_signed_requests_authenticate_whatever_the_key(key: str, host_bucket: str | None, query: str) -> None:
    """A request botocore signed for any key the server can receive verifies, as that user."""
    path = "/" + quote(key, safe="/~:@!$&'()*+,;=") if host_bucket else "/bucket/" + quote(key, safe="/~")
    host = f"{host_bucket}.s3.example.test:9000" if host_bucket else ENDPOINT.split("//", 1)[1]
    signed = sign_v4("GET", f"http://{host}{path}" + (f"?{query}" if query else ""))

    async def run() -> None:
        try:
            request = signed.to_request()
        except HttpProcessingError as error:  # botocore sent bytes aiohttp does not accept
            _refused_as_the_server_does(error)
            return
        ctx = await authenticate(request, CREDS, bucket_from_host=host_bucket)
        assert ctx.access_key == ACCESS_KEY and not ctx.is_anonymous

    asyncio.run(run())


@given(wire=st.lists(st.sampled_from([b"5", b"0", b"ff", b";chunk-signature=" + b"0" * 64, b"\r\n", b"\n",
                                      b"hello", b"x-amz-checksum-crc32:AAAAAA==", b":", b"\xff", b"zz"]),
                     max_size=12).map(b"".join),
       mode=st.sampled_from(["STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                             "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "e" * 64, "UNSIGNED-PAYLOAD"]),
       declared=st.one_of(st.none(), st.integers(0, 20).map(str), st.just("-1"), st.just("\u00b2")),
       framing=st.sampled_from(["sent", "declared", "absent", "chunked"]))
# aws-chunked announced, no body at all: aiohttp's EmptyStreamReader, whose readuntil() is broken.
@example(wire=b"", mode="STREAMING-UNSIGNED-PAYLOAD-TRAILER", declared=None, framing="absent")
def test_body_decoding_only_raises_s3_errors(wire: bytes, mode: str, declared: str | None, framing: str) -> None:
    """Any framing of any body decodes or fails with a typed S3 error.

    ``declared`` is x-amz-decoded-content-length. The HTTP framing: a Content-Length of
    what is sent, the declared value as Content-Length too (aiohttp then cuts the body
    there, or the connection ends short of it), no length at all (the server sees no
    body: aiohttp's EmptyStreamReader), or chunked transfer encoding.
    """
    headers = {"Host": "x", "Content-Encoding": "aws-chunked"}
    body, delivered = wire, wire
    if declared is not None:
        headers["x-amz-decoded-content-length"] = declared
    if framing == "sent":
        headers["Content-Length"] = str(len(wire))
    elif framing == "declared" and declared is not None:
        headers["Content-Length"] = declared
        if declared.isascii() and declared.isdigit():
            delivered = wire[:int(declared)]
    elif framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        body = (f"{len(wire):x}\r\n".encode() + wire + b"\r\n" if wire else b"") + b"0\r\n\r\n"
    else:
        delivered = b""

    async def run() -> None:
        try:
            request = wire_request("PUT", "/b/k", headers, body)
        except HttpProcessingError as error:
            _refused_as_the_server_does(error)
            return
        ctx = AuthContext(access_key=ACCESS_KEY, method="v4-header", content_sha256=mode,
                          seed_signature="0" * 64, signing_key=b"k" * 32,
                          scope="20240101/us-east-1/s3/aws4_request", amz_date="20240101T000000Z")
        received = bytearray()
        try:
            async for chunk in payload_reader(request, ctx, chunk_size=3):
                received += chunk
        except BucketsError:
            event("typed S3 error")
            return
        # Decoded without error: never more than was delivered, and what was declared.
        assert len(received) <= len(delivered)
        if declared is not None and mode.startswith("STREAMING"):
            assert str(len(received)) == declared

    asyncio.run(run())

