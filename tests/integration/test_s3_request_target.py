"""Request targets exactly as they cross the socket: what the server's HTTP parser accepts,
what it refuses, and what the S3 layer then makes of it.

The unit fuzz test for authentication once failed on the target ``//:a``: the test built
its request with ``yarl.URL("//:a")``, which reads a host and a bad port. The server never
does that: aiohttp's parser takes a target starting with ``/`` as a path
(``URL.build(path=...)``). These tests send such targets through a real socket, so the
unit tests (which now parse heads with the same parser, see
tests/unit/auth/auth_testkit.py) stay tied to what the server really receives.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import rawhttp
from s3server import DOMAIN, ServerProcess

# Targets yarl.URL() would read as "//authority...": to the server they are paths.
AUTHORITY_LOOKALIKES = ["//:a", "//a:b", "//[x", "//a@b/c", "//:80/x"]


def disk_state(server: ServerProcess) -> dict[str, int]:
    """Every file under the disks, with its size (on a cluster, not the control plane's
    journal and snapshot: pysyncobj rewrites them at its own pace)."""
    state = {}
    for root, _dirs, files in os.walk(server.data_dir):
        for name in files:
            path = Path(root, name)
            if "control" in path.parts:
                continue
            state[str(path.relative_to(server.data_dir))] = path.stat().st_size
    return state


def raw_exchange(server: ServerProcess, request: bytes) -> bytes:
    """Send ``request`` as given; return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        answer = bytearray()
        while chunk := sock.recv(65536):
            answer += chunk
    return bytes(answer)


@pytest.mark.parametrize("target", AUTHORITY_LOOKALIKES)
def test_virtual_host_keys_that_look_like_an_authority(server, s3, bucket, target):
    """Virtual-host-style, ``//:a`` is the key ``/:a``: botocore signs it, the server
    verifies that signature, stores the object under that key and lists it."""
    host = f"{bucket}.{DOMAIN}:{server.port}"
    key = target[1:]
    put = rawhttp.request(server, "PUT", target, body=b"body of " + key.encode(), host=host)
    assert (put.status, put.code) == (200, None), put.text
    got = rawhttp.request(server, "GET", target, host=host)
    assert (got.status, got.body) == (200, b"body of " + key.encode())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"body of " + key.encode()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    deleted = rawhttp.request(server, "DELETE", target, host=host)
    assert deleted.status == 204
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


# The server's own paths: virtual-host-style, each is an object key in the bucket.
OWN_PATHS = ["/_buckets/admin/v1/info", "/_buckets/peer/v1/node/ping", "/console/api/login", "/metrics",
             "/health/ready"]


@pytest.mark.parametrize("target", OWN_PATHS)
def test_virtual_host_keys_under_the_servers_own_paths(server, s3, bucket, target):
    """Virtual-host-style, the admin API's, peer RPC's, console's, metrics' and health's paths
    are object keys like any other: stored, read back, listed and deleted through the S3
    handler (the peer RPC once answered them 403 itself)."""
    host = f"{bucket}.{DOMAIN}:{server.port}"
    key = target[1:]
    body = b"body of " + key.encode()
    put = rawhttp.request(server, "PUT", target, body=body, host=host)
    assert (put.status, put.code) == (200, None), put.text
    got = rawhttp.request(server, "GET", target, host=host)
    assert (got.status, got.body) == (200, body), got.text
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    deleted = rawhttp.request(server, "DELETE", target, host=host)
    assert deleted.status == 204, deleted.text
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


@pytest.mark.parametrize("target", AUTHORITY_LOOKALIKES)
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "anonymous"])
def test_path_style_empty_bucket_segment_is_invalid_uri(server, target, signed):
    """Path-style, ``//:a`` names no bucket (the first segment is empty): 400 InvalidURI,
    as S3 XML, whether or not the request is signed, and nothing is written."""
    before = disk_state(server)
    for method, body in (("GET", b""), ("PUT", b"x"), ("DELETE", b"")):
        response = rawhttp.request(server, method, target, body=body, signed=signed)
        assert (response.status, response.code) == (400, "InvalidURI"), (method, response.text)
        assert response.headers["content-type"] == "application/xml"
    assert disk_state(server) == before


@pytest.mark.parametrize("line", [
    b"GET /bucket/\xc3\xa9 HTTP/1.1",  # a non-ASCII byte (clients send %C3%A9)
    b"GET /bucket/a b HTTP/1.1",  # a space inside the target
    b"GET /bucket/\x01 HTTP/1.1",  # a control character
    b"GET /bucket/\x7f HTTP/1.1",  # DEL
    b"GET bucket/key HTTP/1.1",  # no leading slash and no scheme
    b"G@T /bucket/key HTTP/1.1",  # a method that is not a token
], ids=["non-ascii", "space", "control", "del", "relative", "bad-method"])
def test_request_lines_the_parser_refuses_get_400(server, line):
    """Request lines aiohttp's parser refuses are answered 400 before any handler (the
    unit fuzz tests expect exactly this 400 for such targets), logged as one line, not a
    traceback, and the server goes on serving."""
    before = disk_state(server)
    answer = raw_exchange(server, line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1] == b"400", answer[:300]
    assert disk_state(server) == before
    assert rawhttp.request(server, "GET", "/").status == 200
    server.wait_log("malformed HTTP request")
