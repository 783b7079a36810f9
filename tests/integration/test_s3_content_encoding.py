"""Content-Encoding is metadata: a body is stored as sent, never decoded by the server.

`aws s3 cp --content-encoding gzip` (and any upload of pre-compressed files for a web
site) sends gzip bytes with ``Content-Encoding: gzip``. The HTTP framework used to
decompress such bodies on the way in: a SigV4-signed upload then failed its payload
hash (XAmzContentSHA256Mismatch), an unsigned-payload one stored the decompressed bytes
cut to the declared length, and a body that was not valid gzip logged a traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib

import pytest

import rawhttp


def test_boto3_put_with_content_encoding_gzip_round_trips(s3, bucket):
    data = b"hello, compressed world\n" * 500
    compressed = gzip.compress(data)
    put = s3.put_object(Bucket=bucket, Key="site/index.html", Body=compressed, ContentEncoding="gzip",
                        ContentType="text/html")
    assert put["ETag"] == f'"{hashlib.md5(compressed).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="site/index.html")
    assert got["ContentEncoding"] == "gzip"
    assert got["ContentLength"] == len(compressed)
    assert got["Body"].read() == compressed


@pytest.mark.parametrize("encoding, body", [
    ("gzip", gzip.compress(b"abc" * 1000)),
    ("deflate", zlib.compress(b"abc" * 1000)),
    ("br", b"\x1b\x0b\x00\xf8\xa5\x92\x06\xb8\x00"),  # brotli bytes the server has no reason to read
    ("gzip, deflate", zlib.compress(gzip.compress(b"abc" * 1000))),
    ("gzip", os.urandom(4096)),  # not gzip at all: still just bytes
], ids=["gzip", "deflate", "br", "gzip-deflate", "not-gzip"])
def test_encoded_bodies_are_stored_byte_for_byte(server, s3, bucket, encoding, body):
    for signing, headers in (("unsigned", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}),
                             ("signed", {"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})):
        key = f"obj-{signing}"
        response = rawhttp.request(server, "PUT", f"/{bucket}/{key}", body=body,
                                   headers={**headers, "Content-Encoding": encoding})
        assert (response.status, response.code) == (200, None), response.text
        got = rawhttp.request(server, "GET", f"/{bucket}/{key}")
        assert got.status == 200
        # An HTTP list: "gzip, deflate" and "gzip,deflate" say the same (RFC 9110, 5.6.1).
        assert [e.strip() for e in got.headers["content-encoding"].split(",")] == encoding.split(", ")
        assert got.body == body
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(body)
