"""Whatever a client sends, authentication and body decoding fail with a typed S3 error, never a crash."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import make_mocked_request
from auth_testkit import ACCESS_KEY, CREDS, make_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from buckets.errors import BucketsError
from buckets.s3.auth import AuthContext, authenticate, payload_reader

URL_CHARS = st.sampled_from(list("abcXYZ019-_.~/%+=&;:,!$'()*@?") + ["%2F", "%zz", "%ff", "%C3%A9", "%"])
TOKENS = st.sampled_from([
    "AWS4-HMAC-SHA256", "AWS", "Credential=", f"{ACCESS_KEY}/20240101/us-east-1/s3/aws4_request", ",", ", ",
    "SignedHeaders=host;x-amz-date", "SignedHeaders=", "Signature=" + "a" * 64, "Signature=", ":", " ", "=",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Expires=99999999999999999999", "X-Amz-Date=00010101T000000Z",
    "X-Amz-Date=99991231T235959Z", f"X-Amz-Credential={ACCESS_KEY}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request",
    "X-Amz-SignedHeaders=host", "X-Amz-Signature=" + "0" * 64, "AWSAccessKeyId=" + ACCESS_KEY,
    "Expires=-99999999999999999999", "Expires=1e9", "Signature=abc%2B", "&", "\u00e9", "\u00b2",
])
DATES = st.sampled_from(["20240101T000000Z", "Mon, 01 Jan 2024 00:00:00 GMT", "garbage", "", "00010101T000000Z",
                         "Fri, 31 Dec 9999 23:59:59 GMT", "99991231T235959Z"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(URL_CHARS, max_size=12), query=st.lists(TOKENS, max_size=8),
       authorization=st.one_of(st.none(), st.lists(TOKENS, max_size=8).map("".join)),
       amz_date=st.one_of(st.none(), DATES), date=st.one_of(st.none(), DATES),
       content_sha256=st.one_of(st.none(), st.sampled_from(["UNSIGNED-PAYLOAD", "x", "e" * 64,
                                                            "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"])))
def test_authenticate_only_raises_s3_errors(path, query, authorization, amz_date, date, content_sha256) -> None:
    target = "/" + "".join(path).replace("?", "") + ("?" + "".join(query) if query else "")
    headers = CIMultiDict({"Host": "127.0.0.1:9000"})
    for name, value in (("Authorization", authorization), ("x-amz-date", amz_date), ("Date", date),
                        ("x-amz-content-sha256", content_sha256)):
        if value is not None:
            headers[name] = value

    async def run() -> None:
        request = make_mocked_request("GET", target, headers=headers)
        try:
            await authenticate(request, CREDS, bucket_from_host="bucket")
        except BucketsError:
            pass

    asyncio.run(run())


@settings(max_examples=150, deadline=None)
@given(wire=st.lists(st.sampled_from([b"5", b"0", b"ff", b";chunk-signature=" + b"0" * 64, b"\r\n", b"\n",
                                      b"hello", b"x-amz-checksum-crc32:AAAAAA==", b":", b"\xff", b"zz"]),
                     max_size=12).map(b"".join),
       mode=st.sampled_from(["STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                             "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "e" * 64, "UNSIGNED-PAYLOAD"]),
       declared=st.one_of(st.none(), st.integers(0, 20).map(str), st.just("-1"), st.just("\u00b2")))
def test_body_decoding_only_raises_s3_errors(wire: bytes, mode: str, declared: str | None) -> None:
    headers = CIMultiDict({"Host": "x"})
    if declared is not None:
        headers["x-amz-decoded-content-length"] = declared
        headers["Content-Length"] = declared

    async def run() -> None:
        ctx = AuthContext(access_key=ACCESS_KEY, method="v4-header", content_sha256=mode,
                          seed_signature="0" * 64, signing_key=b"k" * 32,
                          scope="20240101/us-east-1/s3/aws4_request", amz_date="20240101T000000Z")
        request = make_mocked_request("PUT", "/b/k", headers=headers, payload=make_stream(wire))
        try:
            async for _ in payload_reader(request, ctx, chunk_size=3):
                pass
        except BucketsError:
            pass

    asyncio.run(run())
