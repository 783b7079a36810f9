"""Body decoding: sha256-verified plain bodies, signed aws-chunked bodies (AWS vector and botocore-signed
headers with hand-encoded chunks), signed and unsigned trailers, and every way a body can be wrong."""

from __future__ import annotations

import base64
import os
import zlib

import pytest
from aiohttp.test_utils import make_mocked_request
from auth_testkit import CREDS, ENDPOINT, make_stream, sign_v4, sign_v4_streaming, sign_v4_unsigned_trailer
from multidict import CIMultiDict

from buckets.errors import (
    AccessDenied,
    EntityTooLarge,
    IncompleteBody,
    InvalidRequest,
    SignatureDoesNotMatch,
    XAmzContentSHA256Mismatch,
)
from buckets.s3.auth import AuthContext, authenticate, payload_reader

URL = f"{ENDPOINT}/bucket/object.bin"
DATA = os.urandom(200_000)
SIZES = [65536, 65536, 65536, 200_000 - 3 * 65536]


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def collect(reader) -> list[bytes]:
    return [piece async for piece in reader]


async def decode(signed, *, body: bytes | None = None, chunk_size: int = 1 << 20):
    request = signed.to_request(body=body)
    ctx = await authenticate(request, CREDS)
    reader = payload_reader(request, ctx, chunk_size=chunk_size)
    return reader, await collect(reader)


def unsigned_chunked_request(wire: bytes, *, decoded_length: int | None, trailer: str | None = None,
                             eof: bool = True):
    """A framing-level request (authentication is tested elsewhere): anonymous, unsigned trailer mode."""
    headers = CIMultiDict({"Host": "x", "Content-Encoding": "aws-chunked",
                           "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
    if decoded_length is not None:
        headers["x-amz-decoded-content-length"] = str(decoded_length)
    if trailer:
        headers["x-amz-trailer"] = trailer
    request = make_mocked_request("PUT", "/bucket/key", headers=headers, payload=make_stream(wire, eof=eof))
    ctx = AuthContext(access_key=None, method="anonymous", content_sha256="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    return payload_reader(request, ctx, chunk_size=1000)


# --- the AWS documented example (66560 bytes of 'a', three chained signatures) ----------------

AWS_SIGS = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]


def aws_example_request(body: bytes):
    headers = CIMultiDict({
        "Host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560", "Content-Length": "66824"})
    request = make_mocked_request("PUT", "/examplebucket/chunkObject.txt", headers=headers,
                                  payload=make_stream(body))
    from buckets.s3.auth import derive_signing_key

    ctx = AuthContext(
        access_key="AKIAIOSFODNN7EXAMPLE", method="v4-header", content_sha256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        seed_signature="4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        signing_key=derive_signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1", "s3"),
        scope="20130524/us-east-1/s3/aws4_request", amz_date="20130524T000000Z")
    return request, ctx


def aws_example_body(corrupt_second: bool = False) -> bytes:
    body = b""
    for size, signature in zip([65536, 1024, 0], AWS_SIGS):
        data = b"a" * size
        if corrupt_second and size == 1024:
            data = b"b" + data[1:]
        body += f"{size:x};chunk-signature={signature}\r\n".encode() + data + b"\r\n"
    return body


async def test_aws_documented_chunk_signatures() -> None:
    request, ctx = aws_example_request(aws_example_body())
    reader = payload_reader(request, ctx)
    assert b"".join(await collect(reader)) == b"a" * 66560
    assert reader.finished and reader.bytes_read == reader.declared_length == 66560


async def test_aws_example_corrupted_chunk_is_rejected_before_it_is_handed_out() -> None:
    request, ctx = aws_example_request(aws_example_body(corrupt_second=True))
    reader = payload_reader(request, ctx)
    received = []
    with pytest.raises(SignatureDoesNotMatch):
        async for piece in reader:
            received.append(piece)
    assert received == [b"a" * 65536]  # the bad 1 KiB chunk never reached the consumer
    assert not reader.finished


# --- botocore-signed headers, chunks encoded per the spec ----------------------------------------


async def test_signed_streaming_body_decodes_in_bounded_pieces() -> None:
    signed = sign_v4_streaming(URL, DATA, SIZES)
    reader, pieces = await decode(signed, chunk_size=50_000)
    assert b"".join(pieces) == DATA
    assert max(map(len, pieces)) <= 50_000
    assert reader.finished and reader.trailers == {} and reader.declared_length == len(DATA)


async def test_signed_streaming_with_signed_trailer() -> None:
    trailer = ("x-amz-checksum-crc32", crc32_b64(DATA))
    signed = sign_v4_streaming(URL, DATA, SIZES, trailer=trailer)
    reader, pieces = await decode(signed)
    assert b"".join(pieces) == DATA
    assert reader.trailers == {"x-amz-checksum-crc32": trailer[1]}


async def test_empty_signed_streaming_body() -> None:
    reader, pieces = await decode(sign_v4_streaming(URL, b"", []))
    assert pieces == [] and reader.finished and reader.bytes_read == 0


async def test_bad_chunk_signature() -> None:
    signed = sign_v4_streaming(URL, DATA, SIZES)
    corrupted = bytearray(signed.body)
    corrupted[70_000] ^= 0x01  # a data byte in the second chunk
    with pytest.raises(SignatureDoesNotMatch):
        await decode(signed, body=bytes(corrupted))
    start = signed.body.index(b"chunk-signature=") + len(b"chunk-signature=")
    forged = signed.body[:start] + b"0" * 64 + signed.body[start + 64:]
    with pytest.raises(SignatureDoesNotMatch):
        await decode(signed, body=forged)
    missing = signed.body.replace(b";chunk-signature=", b";chunk-signaturX=", 1)
    with pytest.raises(SignatureDoesNotMatch):
        await decode(signed, body=missing)


async def test_chunks_signed_with_another_key_fail() -> None:
    good = sign_v4_streaming(URL, DATA, SIZES)
    other = sign_v4_streaming(URL, DATA, SIZES, secret="someone-elses-secret")
    header_len = good.body.index(b"\r\n") + 2
    # the first chunk is ours; the rest chain from a seed signed with another key
    with pytest.raises(SignatureDoesNotMatch):
        await decode(good, body=other.body[:header_len] + other.body[header_len:])


async def test_dropped_chunk_breaks_the_chain() -> None:
    signed = sign_v4_streaming(URL, DATA, [65536] * 3 + [200_000 - 3 * 65536])
    framed = len("10000;chunk-signature=") + 64 + 2 + 65536 + 2  # one 64 KiB chunk on the wire
    assert signed.body[framed:framed + 6] == b"10000;"
    with pytest.raises(SignatureDoesNotMatch):
        await decode(signed, body=signed.body[:framed] + signed.body[2 * framed:])


async def test_bad_trailer_signature_or_value() -> None:
    trailer = ("x-amz-checksum-crc32", crc32_b64(DATA))
    signed = sign_v4_streaming(URL, DATA, SIZES, trailer=trailer)
    with pytest.raises(SignatureDoesNotMatch):
        await decode(signed, body=signed.body.replace(trailer[1].encode(), crc32_b64(b"other").encode()))
    without_signature = signed.body[:signed.body.index(b"x-amz-trailer-signature")] + b"\r\n"
    with pytest.raises(SignatureDoesNotMatch):
        await decode(signed, body=without_signature)


@pytest.mark.parametrize("cut", [5, 1000, 65536 + 90, 150_000, -40])
async def test_truncated_signed_chunked_body(cut: int) -> None:
    signed = sign_v4_streaming(URL, DATA, SIZES)
    with pytest.raises(IncompleteBody):
        await decode(signed, body=signed.body[:cut])


# --- unsigned trailers (what boto3 >= 1.36 sends by default over https) ----------------------------


async def test_botocore_unsigned_trailer_body() -> None:
    signed = sign_v4_unsigned_trailer(URL, DATA, chunk_size=30_000)
    assert signed.headers["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    reader, pieces = await decode(signed)
    assert b"".join(pieces) == DATA
    assert reader.trailers == {"x-amz-checksum-crc32": crc32_b64(DATA)}
    assert reader.expected_trailers == ("x-amz-checksum-crc32",)


async def test_botocore_unsigned_trailer_truncated() -> None:
    signed = sign_v4_unsigned_trailer(URL, DATA, chunk_size=30_000)
    with pytest.raises(IncompleteBody):
        await decode(signed, body=signed.body[:100_000])


async def test_declared_length_longer_than_body() -> None:
    wire = b"5\r\nhello\r\n0\r\n\r\n"
    with pytest.raises(IncompleteBody):
        await collect(unsigned_chunked_request(wire, decoded_length=6))
    assert b"".join(await collect(unsigned_chunked_request(wire, decoded_length=5))) == b"hello"
    assert b"".join(await collect(unsigned_chunked_request(wire, decoded_length=None))) == b"hello"


async def test_declared_length_shorter_than_body() -> None:
    with pytest.raises(InvalidRequest):
        await collect(unsigned_chunked_request(b"5\r\nhello\r\n0\r\n\r\n", decoded_length=4))


async def test_announced_trailer_missing() -> None:
    with pytest.raises(InvalidRequest):
        await collect(unsigned_chunked_request(b"5\r\nhello\r\n0\r\n\r\n", decoded_length=5,
                                               trailer="x-amz-checksum-crc32"))


@pytest.mark.parametrize("wire", [
    b"zz\r\nhello\r\n0\r\n\r\n",                  # size is not hex
    b"5\r\nhelloXX0\r\n\r\n",                    # data not followed by CRLF
    b"-5\r\nhello\r\n0\r\n\r\n",                  # negative size
    b"5\r\nhello\r\n0\r\nno-colon-here\r\n\r\n",  # malformed trailer
    b"5\xff\r\nhello\r\n0\r\n\r\n",               # non-ASCII header
    b"5" + b"0" * 5000 + b"\r\n",                  # header line too long
    b"5\r\nhello\r\n0\r\n" + b"x-a:b\r\n" * 20 + b"\r\n",  # too many trailers
])
async def test_malformed_framing_is_a_client_error(wire: bytes) -> None:
    with pytest.raises(InvalidRequest):
        await collect(unsigned_chunked_request(wire, decoded_length=None))


@pytest.mark.parametrize("wire", [b"", b"5\r\nhel", b"5\r\nhello", b"5\r\nhello\r\n", b"5\r\nhello\r\n0"])
async def test_truncated_framing_is_incomplete_body(wire: bytes) -> None:
    with pytest.raises(IncompleteBody):
        await collect(unsigned_chunked_request(wire, decoded_length=None))


async def test_signed_streaming_needs_a_v4_context() -> None:
    headers = CIMultiDict({"Host": "x", "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})
    request = make_mocked_request("PUT", "/b/k", headers=headers, payload=make_stream(b""))
    ctx = AuthContext(access_key=None, method="anonymous", content_sha256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    with pytest.raises(AccessDenied):
        payload_reader(request, ctx)


# --- plain bodies --------------------------------------------------------------------------------------


async def test_plain_body_pieces_and_sha256() -> None:
    signed = sign_v4("PUT", URL, body=DATA)
    reader, pieces = await decode(signed, chunk_size=64 * 1024)
    assert b"".join(pieces) == DATA and [len(p) for p in pieces][:3] == [65536] * 3
    assert reader.declared_length == reader.bytes_read == len(DATA) and reader.finished


async def test_wrong_sha256_never_hands_out_the_last_piece() -> None:
    signed = sign_v4("PUT", URL, body=b"A" * 100)
    request = signed.to_request(body=b"B" * 100)
    reader = payload_reader(request, await authenticate(request, CREDS))
    received = []
    with pytest.raises(XAmzContentSHA256Mismatch):
        async for piece in reader:
            received.append(piece)
    assert received == []


async def test_plain_body_shorter_than_content_length() -> None:
    signed = sign_v4("PUT", URL, body=DATA)
    with pytest.raises(IncompleteBody):
        await decode(signed, body=DATA[:1000])


async def test_plain_body_without_content_length_reads_to_eof() -> None:
    headers = CIMultiDict({"Host": "x", "Transfer-Encoding": "chunked"})
    request = make_mocked_request("PUT", "/b/k", headers=headers, payload=make_stream(DATA))
    reader = payload_reader(request, AuthContext(None, "anonymous", None), chunk_size=70_000)
    pieces = await collect(reader)
    assert b"".join(pieces) == DATA and [len(p) for p in pieces] == [70_000, 70_000, 60_000]
    assert reader.declared_length is None and reader.bytes_read == len(DATA)


async def test_empty_body_with_sha256_of_empty() -> None:
    reader, pieces = await decode(sign_v4("PUT", URL, body=b""))
    assert pieces == [] and reader.finished


async def test_read_all_and_limits() -> None:
    signed = sign_v4("POST", f"{ENDPOINT}/bucket?delete", body=b"<Delete/>" * 10)
    request = signed.to_request()
    reader = payload_reader(request, await authenticate(request, CREDS))
    assert await reader.read_all(1000) == b"<Delete/>" * 10
    with pytest.raises(RuntimeError):  # a body is read once
        await reader.read_all(1000)
    request = signed.to_request()
    with pytest.raises(EntityTooLarge):
        await payload_reader(request, await authenticate(request, CREDS)).read_all(10)
    request = unsigned_chunked_request(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", decoded_length=None)
    with pytest.raises(EntityTooLarge):
        await request.read_all(7)
