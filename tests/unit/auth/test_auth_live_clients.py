"""Real clients against a tiny real aiohttp server that runs ``authenticate`` + ``payload_reader``.

boto3 with its default settings (over https it sends aws-chunked bodies with a CRC32
trailer; over http a signed sha256 body plus a checksum header), presigned URLs fetched
with urllib, and raw sockets that hang up mid-body.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import os
import ssl
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import boto3
import pytest
from aiohttp import web
from auth_testkit import ACCESS_KEY, CREDS, SECRET_KEY
from botocore.config import Config

from buckets import checksums
from buckets.errors import BucketsError, IncompleteBody
from buckets.s3.auth import authenticate, payload_reader

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


class Recorder:
    """Server side: authenticates, decodes the body, remembers what it saw."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.seen: list[dict[str, object]] = []
        self.errors: list[BaseException] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            ctx = await authenticate(request, CREDS)
            reader = payload_reader(request, ctx, chunk_size=64 * 1024)
            body = bytearray()
            async for piece in reader:
                assert len(piece) <= 64 * 1024
                body += piece
        except BucketsError as exc:
            self.errors.append(exc)
            return web.Response(status=exc.status, text=f"<Error><Code>{exc.code}</Code></Error>",
                                content_type="application/xml")
        except Exception as exc:  # noqa: BLE001 - a test server must report, not hide, surprises
            self.errors.append(exc)
            raise
        self.seen.append({"method": ctx.method, "content_sha256": ctx.content_sha256,
                          "trailers": dict(reader.trailers), "headers": dict(request.headers)})
        if request.method == "PUT":
            self.objects[request.path] = bytes(body)
            return web.Response(headers={"ETag": '"0123456789abcdef0123456789abcdef"'})
        data = self.objects.get(request.path)
        if data is None:
            return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>")
        return web.Response(body=data, headers={"ETag": '"0123456789abcdef0123456789abcdef"'})


def self_signed_context(directory: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


class LiveServer:
    """The production server setup (AppRunner + TCPSite, handler_cancellation off) on a free port."""

    def __init__(self, runner: web.AppRunner, port: int, scheme: str) -> None:
        self.runner, self.port, self.url = runner, port, f"{scheme}://127.0.0.1:{port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(recorder: Recorder, ssl_context: ssl.SSLContext | None = None) -> LiveServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return LiveServer(runner, port, "https" if ssl_context else "http")


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name="us-east-1", verify=False,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


async def test_boto3_default_put_over_https_streams_an_unsigned_trailer(tmp_path: Path) -> None:
    recorder = Recorder()
    server = await start(recorder, self_signed_context(tmp_path))
    try:
        client = s3_client(server.url)
        data = os.urandom(300_000)
        await asyncio.to_thread(client.put_object, Bucket="bucket", Key="dir/a b+c.bin", Body=data)
        assert recorder.errors == []
        seen = recorder.seen[-1]
        assert seen["content_sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        assert recorder.objects["/bucket/dir/a b+c.bin"] == data
        crc = checksums.checksum_of("CRC32", data)
        assert seen["trailers"] == {"x-amz-checksum-crc32": base64.b64encode(crc).decode()}
        got = await asyncio.to_thread(client.get_object, Bucket="bucket", Key="dir/a b+c.bin")
        assert got["Body"].read() == data

        bad = boto3.client("s3", endpoint_url=server.url, aws_access_key_id=ACCESS_KEY,
                           aws_secret_access_key="wrong", region_name="us-east-1", verify=False,
                           config=Config(retries={"max_attempts": 1}))
        with pytest.raises(bad.exceptions.ClientError) as info:
            await asyncio.to_thread(bad.put_object, Bucket="bucket", Key="k", Body=b"x")
        assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    finally:
        await server.close()


async def test_boto3_put_over_http_signs_the_body(tmp_path: Path) -> None:
    recorder = Recorder()
    server = await start(recorder)
    try:
        client = s3_client(server.url)
        await asyncio.to_thread(client.put_object, Bucket="bucket", Key="k", Body=b"signed body",
                                ChecksumAlgorithm="CRC32C")
        seen = recorder.seen[-1]
        assert seen["method"] == "v4-header" and len(str(seen["content_sha256"])) == 64
        headers = {k.lower(): v for k, v in seen["headers"].items()}  # type: ignore[union-attr]
        assert checksums.validate_b64("CRC32C", headers["x-amz-checksum-crc32c"]) == \
            checksums.checksum_of("CRC32C", b"signed body")

        v4_client = boto3.client("s3", endpoint_url=server.url, aws_access_key_id=ACCESS_KEY,
                                 aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                                 config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        # boto3's default presigner is SigV2 ("s3-query") for this setup; s3v4 gives SigV4.
        for presigner, method in ((client, "v2-query"), (v4_client, "v4-query")):
            url = await asyncio.to_thread(presigner.generate_presigned_url, "get_object",
                                          Params={"Bucket": "bucket", "Key": "k"}, ExpiresIn=60)
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
            assert body == b"signed body" and recorder.seen[-1]["method"] == method
            tampered = url.replace("/bucket/k?", "/bucket/other?")
            with pytest.raises(urllib.error.HTTPError) as info:
                await asyncio.to_thread(lambda: urllib.request.urlopen(tampered, timeout=10))
            assert info.value.code == 403
    finally:
        await server.close()


async def hang_up_mid_body(server: LiveServer, head: str, partial_body: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head.encode() + partial_body)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("chunked", [False, True])
async def test_client_disconnect_is_incomplete_body(chunked: bool) -> None:
    recorder = Recorder()
    server = await start(recorder)
    try:
        if chunked:
            head = ("PUT /bucket/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                    "x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\nContent-Encoding: aws-chunked\r\n"
                    "x-amz-decoded-content-length: 99000\r\n\r\n")
            partial = b"%x\r\n" % 99000 + b"x" * 5000
        else:
            head = "PUT /bucket/k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
            partial = b"x" * 5000
        await hang_up_mid_body(server, head, partial)
        for _ in range(100):
            if recorder.errors:
                break
            await asyncio.sleep(0.02)
        assert len(recorder.errors) == 1 and isinstance(recorder.errors[0], IncompleteBody)
        assert recorder.objects == {}
    finally:
        await server.close()


def test_crc32_trailer_matches_zlib() -> None:
    """Sanity link between the trailer botocore sends and our CRC32: same bytes as zlib's."""
    assert checksums.checksum_of("CRC32", b"abc") == zlib.crc32(b"abc").to_bytes(4, "big")
