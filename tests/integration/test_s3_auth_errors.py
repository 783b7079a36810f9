"""Authentication, presigned URLs (used with curl) and hostile inputs, end to end.

Every refusal asserts the exact S3 error code and status, and that nothing was left
behind (object absent, listing unchanged).
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

import rawhttp
from s3server import DOMAIN, ROOT_PASSWORD, ROOT_USER, error_of, new_bucket_name


def curl(*args: str) -> tuple[int, str, bytes]:
    """Run curl; returns (HTTP status, response headers text, body)."""
    out = subprocess.run(["curl", "-s", "-S", "-D", "-", "-o", "/dev/stdout", *args],
                         capture_output=True, timeout=60, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, body = body.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode("latin-1"), body


def keys_of(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_wrong_secret_and_unknown_key(server, s3, bucket):
    bad_secret = server.client(secret_key="not-the-secret")
    with pytest.raises(ClientError) as exc:
        bad_secret.put_object(Bucket=bucket, Key="forged", Body=b"x")
    assert error_of(exc) == ("SignatureDoesNotMatch", 403)
    unknown = server.client(access_key="NOSUCHKEY", secret_key="whatever")
    with pytest.raises(ClientError) as exc:
        unknown.list_buckets()
    assert error_of(exc) == ("InvalidAccessKeyId", 403)
    with pytest.raises(ClientError) as exc:
        unknown.get_object(Bucket=bucket, Key="forged")
    assert error_of(exc) == ("InvalidAccessKeyId", 403)
    assert keys_of(s3, bucket) == []


def test_anonymous_is_denied(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    for method, path, body in (("GET", "/", b""), ("GET", f"/{bucket}/private", b""),
                               ("PUT", f"/{bucket}/anon", b"x"), ("DELETE", f"/{bucket}/private", b"")):
        resp = rawhttp.request(server, method, path, body=body, signed=False)
        assert (resp.status, resp.code) == (403, "AccessDenied"), (method, path)
    assert keys_of(s3, bucket) == ["private"]


def test_clock_skew(server, s3, bucket, monkeypatch):
    import botocore.auth
    import botocore.crt.auth  # botocore signs with awscrt when it is installed

    skewed = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)

    def twenty_minutes_ago(remove_tzinfo: bool = True) -> datetime.datetime:
        return skewed.replace(tzinfo=None) if remove_tzinfo else skewed

    for module in (botocore.auth, botocore.crt.auth):
        monkeypatch.setattr(module, "get_current_datetime", twenty_minutes_ago)
    with pytest.raises(ClientError) as exc:
        server.client(retries={"max_attempts": 1}).put_object(Bucket=bucket, Key="skewed", Body=b"x")
    assert error_of(exc) == ("RequestTimeTooSkewed", 403)
    monkeypatch.undo()
    assert keys_of(s3, bucket) == []


def test_presigned_get_and_put_with_curl(s3, bucket, tmp_path):
    payload = os.urandom(300_000)
    src = tmp_path / "upload.bin"
    src.write_bytes(payload)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre/signed file"},
                                        ExpiresIn=300)
    status, _, body = curl("-X", "PUT", "-T", str(src), put_url)
    assert status == 200, body
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre/signed file"},
                                        ExpiresIn=300)
    status, headers, body = curl(get_url)
    assert status == 200 and body == payload
    assert "x-amz-request-id" in headers.lower()
    status, headers, body = curl("-H", "Range: bytes=10-19", get_url)
    assert status == 206 and body == payload[10:20]
    # A presigned URL authorises exactly what it signed: another key is refused.
    forged = get_url.replace("pre/signed%20file", "pre/other")
    status, _, body = curl(forged)
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body


def test_expired_presigned_url(s3, bucket):
    s3.put_object(Bucket=bucket, Key="exp", Body=b"soon gone")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "exp"}, ExpiresIn=1)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "late"}, ExpiresIn=1)
    time.sleep(2.1)
    status, _, body = curl(url)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body and b"expired" in body
    status, _, body = curl("-X", "PUT", "--data-binary", "late body", put_url)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    assert keys_of(s3, bucket) == ["exp"]


def test_presigned_virtual_host_with_curl(server, s3, bucket):
    import boto3
    from botocore.config import Config

    s3.put_object(Bucket=bucket, Key="vh/key.txt", Body=b"through the host name")
    vclient = boto3.client("s3", endpoint_url=f"http://{DOMAIN}:{server.port}", region_name="us-east-1",
                           aws_access_key_id=ROOT_USER, aws_secret_access_key=ROOT_PASSWORD,
                           config=Config(s3={"addressing_style": "virtual"}, signature_version="s3v4"))
    url = vclient.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "vh/key.txt"})
    assert url.startswith(f"http://{bucket}.{DOMAIN}:{server.port}/vh/key.txt?")
    status, _, body = curl("--resolve", f"{bucket}.{DOMAIN}:{server.port}:127.0.0.1", url)
    assert status == 200 and body == b"through the host name"


def _signed_put_head(server, bucket: str, key: str, length: int) -> bytes:
    url = f"http://127.0.0.1:{server.port}/{bucket}/{key}"
    headers = rawhttp.sign("PUT", url, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                                        "Content-Length": str(length)}, b"")
    lines = [f"PUT /{bucket}/{key} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("how", ["half-close", "reset"])
def test_truncated_body_leaves_nothing(server, s3, bucket, how):
    """A body shorter than its Content-Length (client stops, then leaves) commits nothing."""
    s3.put_object(Bucket=bucket, Key="truncated", Body=b"previous version")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(_signed_put_head(server, bucket, "truncated", 3_000_000))
        sock.sendall(os.urandom(1_500_000))
        if how == "half-close":
            sock.shutdown(socket.SHUT_WR)
            try:
                reply = sock.recv(65536)
            except ConnectionResetError:
                reply = b""
            # Either the connection is dropped or the answer is a 4xx, never a 2xx.
            assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:200]
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    finally:
        sock.close()
    time.sleep(0.3)
    assert s3.get_object(Bucket=bucket, Key="truncated")["Body"].read() == b"previous version"
    assert keys_of(s3, bucket) == ["truncated"]
    # The server is still healthy.
    s3.put_object(Bucket=bucket, Key="after", Body=b"fine")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"fine"


def test_truncated_part_leaves_no_part(server, s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    url_path = f"/{bucket}/mp?partNumber=1&uploadId={upload_id}"
    headers = rawhttp.sign("PUT", f"http://127.0.0.1:{server.port}{url_path}",
                           {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": "2000000"}, b"")
    lines = [f"PUT {url_path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"] + [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + os.urandom(700_000))
        sock.shutdown(socket.SHUT_WR)
        try:
            sock.recv(65536)
        except ConnectionResetError:
            pass
    time.sleep(0.3)
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id)


def test_malformed_xml_create_bucket(server, s3):
    name = new_bucket_name()
    for body in (b"<CreateBucketConfiguration><LocationConstraint>", b"not xml at all",
                 b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><CreateBucketConfiguration/>'):
        resp = rawhttp.request(server, "PUT", f"/{name}", body=body)
        assert (resp.status, resp.code) == (400, "MalformedXML"), body
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_unknown_method_and_service_put(server):
    resp = rawhttp.request(server, "PUT", "/")
    assert (resp.status, resp.code) == (405, "MethodNotAllowed")
    resp = rawhttp.request(server, "PATCH", f"/{new_bucket_name()}/k")
    assert (resp.status, resp.code) == (405, "MethodNotAllowed")


def test_expect_100_continue_refused_early(server, s3, bucket):
    """A refused upload is answered before the body is sent (no 100 Continue), and the
    connection is closed so the unsent body cannot be misread as a next request."""
    missing = new_bucket_name("gone")
    url = f"http://127.0.0.1:{server.port}/{missing}/k"
    headers = rawhttp.sign("PUT", url, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": "1000",
                                        "Expect": "100-continue"}, b"")
    lines = [f"PUT /{missing}/k HTTP/1.1", f"Host: 127.0.0.1:{server.port}"] + [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 404"), reply
    assert "<Code>NoSuchBucket</Code>" in reply
    assert "Connection: close" in reply

    url = f"http://127.0.0.1:{server.port}/{bucket}/cont"
    headers = rawhttp.sign("PUT", url, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": "5",
                                        "Expect": "100-continue"}, b"")
    lines = [f"PUT /{bucket}/cont HTTP/1.1", f"Host: 127.0.0.1:{server.port}"] + [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        sock.sendall(b"hello")
        final = sock.recv(65536)
        assert final.startswith(b"HTTP/1.1 200") or b"HTTP/1.1 200" in interim, final
    assert s3.get_object(Bucket=bucket, Key="cont")["Body"].read() == b"hello"


def test_stored_users_authenticate(tmp_path):
    """Users kept in the store (what `buckets-admin user add` writes) sign requests too;
    disabled users are unknown."""
    import asyncio

    from buckets.engine.store import Store
    from buckets.engine.users import derive_kek
    from s3server import start_server, stop_server

    disks = [str(tmp_path / "data" / f"disk{i}") for i in range(1, 3)]

    async def add_users() -> None:
        store = await Store.open(disks, sync=False, background=False)
        try:
            store.users.set_kek(derive_kek(ROOT_USER, ROOT_PASSWORD, store.deployment_id))
            await store.users.put("alice-key", "alice-secret-123")
            await store.users.put("bob-key", "bob-secret-456", enabled=False)
        finally:
            await store.close()

    asyncio.run(add_users())
    srv = start_server(tmp_path, disks=2)
    try:
        alice = srv.client(access_key="alice-key", secret_key="alice-secret-123")
        alice.create_bucket(Bucket="alice-bucket")
        alice.put_object(Bucket="alice-bucket", Key="k", Body=b"from alice")
        assert alice.get_object(Bucket="alice-bucket", Key="k")["Body"].read() == b"from alice"
        with pytest.raises(ClientError) as exc:
            srv.client(access_key="alice-key", secret_key="wrong-secret").list_buckets()
        assert error_of(exc) == ("SignatureDoesNotMatch", 403)
        with pytest.raises(ClientError) as exc:
            srv.client(access_key="bob-key", secret_key="bob-secret-456").list_buckets()
        assert error_of(exc) == ("InvalidAccessKeyId", 403)
        assert srv.client().list_buckets()["Buckets"][0]["Name"] == "alice-bucket"
    finally:
        stop_server(srv)


@pytest.mark.parametrize("path,expected", [
    ("/%FF%FE", ("InvalidURI", 400)),              # not UTF-8
    ("/{bucket}/%C3%28", ("InvalidURI", 400)),
    ("/{bucket}/a%00b", ("InvalidArgument", 400)),  # NUL in a key (dot segments are plain keys)
    ("/a%0Abc/k", ("InvalidBucketName", 400)),      # a line feed in the bucket name
    ("/../k", ("InvalidBucketName", 400)),
])
def test_hostile_paths_are_4xx(server, s3, bucket, path, expected):
    resp = rawhttp.request(server, "PUT", path.format(bucket=bucket), body=b"x")
    assert (resp.code, resp.status) == expected, resp.text
    resp = rawhttp.request(server, "GET", path.format(bucket=bucket))
    assert 400 <= resp.status < 500, resp.text
    assert keys_of(s3, bucket) == []


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n",
], ids=["header-token", "content-length", "long-line", "chunk-size"])
def test_malformed_http_is_one_info_line(server, raw):
    """Requests too broken to parse get 400 and one INFO line in the log, not an ERROR with
    a traceback (the autouse fixture fails the test on any traceback)."""
    before = len(server.log_text())
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400"), reply
    deadline = time.monotonic() + 5
    while "malformed HTTP request" not in server.log_text()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    new = server.log_text()[before:]
    lines = [line for line in new.splitlines() if "malformed HTTP request" in line]
    assert len(lines) == 1 and " INFO " in lines[0] and "127.0.0.1" in lines[0], new
    assert "ERROR" not in new, new
