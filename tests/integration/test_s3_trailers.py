"""aws-chunked bodies with trailing checksums: boto3's default over https, and raw ones.

boto3 (default config) sends PutObject/UploadPart bodies as aws-chunked with an
`x-amz-checksum-crc32` trailer only over TLS, so those tests use the real server with TLS on
(`buckets server --certs-dir`, a certificate from a test CA the client verifies). Raw
trailer requests need no TLS.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from awscrt import checksums as crt

import rawhttp
from s3server import ServerProcess, empty_and_delete, new_bucket_name, start_tls_server, stop_server

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    srv = start_tls_server(tmp_path_factory.mktemp("tls"))
    yield srv
    stop_server(srv)


@pytest.fixture
def tls_s3(tls_server: ServerProcess):
    return tls_server.client()


@pytest.fixture
def tls_bucket(tls_s3):
    name = new_bucket_name("tls")
    tls_s3.create_bucket(Bucket=name)
    yield name
    empty_and_delete(tls_s3, name)


def _crc32(data: bytes) -> str:
    return base64.b64encode(crt.crc32(data).to_bytes(4, "big")).decode()


def test_boto3_default_put_uses_trailer(tls_s3, tls_bucket):
    seen = {}

    def capture(request, **_):
        seen.update({k.lower(): v for k, v in request.headers.items()})

    tls_s3.meta.events.register("before-send.s3.PutObject", capture)
    data = os.urandom(3 * MIB + 7)
    import io

    resp = tls_s3.put_object(Bucket=tls_bucket, Key="trailer", Body=io.BytesIO(data))
    assert seen["x-amz-content-sha256"] in (b"STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert resp["ChecksumCRC32"] == _crc32(data)
    head = tls_s3.head_object(Bucket=tls_bucket, Key="trailer", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == _crc32(data) and head["ContentLength"] == len(data)
    assert tls_s3.get_object(Bucket=tls_bucket, Key="trailer")["Body"].read() == data


def test_boto3_default_upload_file_multipart_over_tls(tls_s3, tls_bucket, tmp_path):
    data = os.urandom(17 * MIB)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    tls_s3.upload_file(str(src), tls_bucket, "mp.bin")
    head = tls_s3.head_object(Bucket=tls_bucket, Key="mp.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    # s3transfer creates the upload with CRC32 and no type: COMPOSITE, "<crc of crcs>-3".
    assert head["ChecksumCRC32"].endswith("-3") and head["ChecksumType"] == "COMPOSITE"
    dst = tmp_path / "g.bin"
    tls_s3.download_file(tls_bucket, "mp.bin", str(dst))
    assert hashlib.md5(dst.read_bytes()).digest() == hashlib.md5(data).digest()


def _trailer_put(server, bucket, key, data, trailer_value, *, declared=None):
    body = rawhttp.aws_chunked(data, {"x-amz-checksum-crc32": trailer_value})
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data) if declared is None else declared),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-sdk-checksum-algorithm": "CRC32",
    }
    return rawhttp.request(server, "PUT", f"/{bucket}/{key}", body=body, headers=headers)


def test_raw_trailer_checksum_verified(server, s3, bucket):
    data = os.urandom(200_000)
    resp = _trailer_put(server, bucket, "good", data, _crc32(data))
    assert resp.status == 200, resp.text
    assert resp.headers["x-amz-checksum-crc32"] == _crc32(data)
    got = s3.get_object(Bucket=bucket, Key="good")
    assert got["Body"].read() == data
    assert "ContentEncoding" not in got  # aws-chunked is framing, never stored

    resp = _trailer_put(server, bucket, "bad", data, _crc32(b"something else"))
    assert (resp.status, resp.code) == (400, "BadDigest"), resp.text
    resp = _trailer_put(server, bucket, "bad", data, "not-base64!")
    assert (resp.status, resp.code) == (400, "InvalidRequest"), resp.text
    resp = _trailer_put(server, bucket, "bad", data, _crc32(data), declared=len(data) + 10)
    assert resp.status == 400 and resp.code == "IncompleteBody", resp.text
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["good"]


def test_signed_streaming_payload(server, s3, bucket):
    data = os.urandom(300_000)
    resp = rawhttp.sigv4_streaming_put(server, f"/{bucket}/signed-chunks", data,
                                       extra_headers={"x-amz-meta-origin": "chunked"})
    assert resp.status == 200, resp.text
    assert resp.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="signed-chunks")
    assert got["Body"].read() == data and got["Metadata"] == {"origin": "chunked"}
    assert "ContentEncoding" not in got
    # One flipped byte in the second chunk: its signature fails and nothing is committed.
    resp = rawhttp.sigv4_streaming_put(server, f"/{bucket}/tampered", data, tamper=True)
    assert (resp.status, resp.code) == (403, "SignatureDoesNotMatch"), resp.text
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["signed-chunks"]
