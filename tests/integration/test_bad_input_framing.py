"""Hostile framing and request targets that the 10-minute fuzz run found, over raw sockets.

* a chunked body whose framing breaks after the handler started reading it (a bad chunk
  size, a chunk without its CRLF): the request is answered ``400 IncompleteBody`` at once
  and the connection closed, not left waiting for the body timeout; nothing is written;
* an absolute-form target (``GET http://host/bucket/key HTTP/1.1``, which RFC 9112 says a
  server must accept): served like its origin form with the target's authority as Host,
  including an authority no IDNA decoder accepts (``xn--abc``), which used to leave the
  connection unanswered;
* asterisk and authority forms (``OPTIONS *``, ``CONNECT host:443``): an S3 XML error;
* ``response-*`` overrides carrying control characters (CR, LF, NUL, DEL): ``400
  InvalidArgument`` naming the parameter, for GET and HEAD, never a 500 or a header
  injection.

The autouse ``no_server_bugs`` fixture (conftest.py) fails a test whose request made the
server log a traceback.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

import rawhttp
from s3server import ServerProcess, new_bucket_name

BAD_CHUNKS = {
    "non-hex-size": b"zz\r\nhello\r\n0\r\n\r\n",
    "missing-crlf": b"5\r\nhello0\r\n\r\n",
    "negative-size": b"-1\r\n\r\n",
    "size-overflow": b"ffffffffffffffffffff\r\n",
}


def disk_state(server: ServerProcess) -> dict[str, int]:
    state = {}
    for root, _dirs, files in os.walk(server.data_dir):
        for name in files:
            path = Path(root, name)
            if (path.suffix not in (".mdb", ".log", ".lock") and "registry" not in path.parts
                    and "control" not in path.parts):  # a cluster's Raft files change at their own pace
                state[str(path.relative_to(server.data_dir))] = path.stat().st_size
    return state


def exchange(server: ServerProcess, head: bytes, body: bytes = b"", *, pause: float = 0.0,
             timeout: float = 20.0) -> tuple[bytes, float]:
    """Send ``head``, wait ``pause`` (so the handler is already reading), send ``body``;
    return everything answered until the server closes, and how long that took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head)
        if pause:
            time.sleep(pause)
        if body:
            sock.sendall(body)
        answer = bytearray()
        while chunk := sock.recv(65536):
            answer += chunk
    return bytes(answer), time.monotonic() - started


def signed_head(server: ServerProcess, method: str, target: str, headers: dict[str, str]) -> bytes:
    host = f"127.0.0.1:{server.port}"
    signed = rawhttp.sign(method, f"http://{host}{target}",
                          {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", **headers}, b"")
    signed.setdefault("Host", host)
    lines = [f"{method} {target} HTTP/1.1"] + [f"{name}: {value}" for name, value in signed.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_and_code(answer: bytes) -> tuple[int, str | None]:
    status = int(answer.split(b" ", 2)[1])
    code = re.search(rb"<Code>([^<]+)</Code>", answer)
    return status, code.group(1).decode() if code else None


@pytest.mark.parametrize("payload", ["UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"],
                         ids=["plain", "aws-chunked"])
@pytest.mark.parametrize("pause", [0.0, 0.2], ids=["together", "after-header"])
@pytest.mark.parametrize("chunks", list(BAD_CHUNKS.values()), ids=list(BAD_CHUNKS))
@pytest.mark.parametrize("operation", ["PutObject", "CreateBucket"])
def test_broken_chunk_framing_is_answered_at_once(server, bucket, operation, chunks, pause, payload):
    """``aws-chunked``: the body is read line by line (``readuntil``), which, woken by the
    last good bytes of the read that also broke the framing, waited again unwoken: a chunk of
    5 with 6 bytes after it, sent after the header, hung until the body timeout (the cluster
    HTTP fuzzer, seed 40001, on a CompleteMultipartUpload)."""
    target = f"/{bucket}/framed" if operation == "PutObject" else f"/{new_bucket_name()}"
    before = disk_state(server)
    head = signed_head(server, "PUT", target, {"Transfer-Encoding": "chunked", "x-amz-content-sha256": payload})
    answer, took = exchange(server, head, chunks, pause=pause)
    status, code = status_and_code(answer)
    # Parsed together with the header, aiohttp's parser refuses the request itself (plain
    # 400); once the handler runs, the body stream fails and S3's code is answered.
    assert status == 400, answer[:300]
    assert code in (None, "IncompleteBody"), answer[:300]
    assert took < 10, f"answered after {took:.1f} s: the body timeout, not the framing error"
    assert disk_state(server) == before
    listed = rawhttp.request(server, "GET", f"/{bucket}")
    assert b"<Key>framed</Key>" not in listed.body


def test_absolute_form_target_is_served_as_origin_form(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="abs/key", Body=b"absolute")
    host = f"127.0.0.1:{server.port}"
    head = signed_head(server, "GET", f"/{bucket}/abs/key", {})
    head = head.replace(f"GET /{bucket}/abs/key ".encode(), f"GET http://{host}/{bucket}/abs/key ".encode(), 1)
    answer, _ = exchange(server, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert answer.endswith(b"\r\n\r\nabsolute")


@pytest.mark.parametrize("authority", ["xn--abc", "xn--", "user@xn--abc:1", "[::1]:80", "a..b"])
def test_absolute_form_with_an_undecodable_authority_is_answered(server, authority):
    answer, took = exchange(server, f"GET http://{authority}/b/k HTTP/1.1\r\nHost: x\r\n"
                                    f"Connection: close\r\n\r\n".encode())
    status, code = status_and_code(answer)
    # Unsigned requests are routed first (a public bucket may serve them): "b" is no bucket name.
    assert (status, code) == (400, "InvalidBucketName"), answer[:300]
    assert took < 10


@pytest.mark.parametrize("line, expected", [
    (b"OPTIONS * HTTP/1.1", (400, "InvalidURI")),
])  # ("GET *" is refused by aiohttp's parser itself, with a plain 400)
def test_non_path_targets_get_an_s3_error(server, line, expected):
    answer, _ = exchange(server, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_and_code(answer) == expected, answer[:300]
    assert b"Content-Type: application/xml" in answer


def test_connect_gets_an_s3_error(server):
    answer, _ = exchange(server, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
                                 b"Connection: close\r\n\r\n")
    status, code = status_and_code(answer)
    assert 400 <= status < 500 and code is not None, answer[:300]


CONTROL = {"cr": "%0D", "lf": "%0A", "crlf-injection": "a%0D%0AX-Injected:%201", "nul": "%00",
           "del": "%7F", "bell": "%07"}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("value", list(CONTROL.values()), ids=list(CONTROL))
@pytest.mark.parametrize("param", ["response-content-type", "response-content-disposition",
                                   "response-cache-control", "response-expires"])
def test_response_override_with_a_control_character_is_invalid_argument(server, s3, bucket, method, param, value):
    s3.put_object(Bucket=bucket, Key="o", Body=b"object")
    got = rawhttp.request(server, method, f"/{bucket}/o", query=f"{param}={value}")
    assert got.status == 400, got.text
    assert "x-injected" not in got.headers
    if method == "GET":
        assert got.code == "InvalidArgument", got.text
        assert f"<ArgumentName>{param}</ArgumentName>" in got.text


def test_response_override_with_a_tab_is_served(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"object")
    got = rawhttp.request(server, "GET", f"/{bucket}/o", query="response-content-type=text/plain;%09x=1")
    assert (got.status, got.body) == (200, b"object")
    assert got.headers["content-type"] == "text/plain;\tx=1"


@pytest.mark.parametrize("method, body", [("GET", b""), ("PUT", b"hello")], ids=["get", "put-with-body"])
def test_a_request_pipelined_behind_a_declined_upgrade_is_not_left_unanswered(server, bucket, method, body):
    """``Upgrade: h2c`` (curl --http2 on http://), declined, with a second request pipelined
    in the same write (the 5-minute fuzz run of session 29, FUZZ_SEED=1872576992). aiohttp's
    C parser dropped the bytes after the upgrade request, and the second request waited for an
    answer until the connection's idle timeout. The declined upgrade's answer now closes the
    connection, so the client knows to send the second request again; nothing is lost either
    way (the first request is served as usual)."""
    target = f"/{bucket}/upgraded"
    head = signed_head(server, method, target, {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
                                                "HTTP2-Settings": "AAMAAABkAAQCAAAAAAIAAAAA",
                                                **({"Content-Length": str(len(body))} if body else {})})
    follow = f"GET /{bucket}/upgraded HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    answer, took = exchange(server, head + body + follow)
    assert took < 10, f"the connection stayed open {took:.1f} s with the pipelined request unanswered"
    first = answer.split(b"\r\n\r\n", 1)[0]
    assert first.startswith(b"HTTP/1.1 200" if method == "PUT" else b"HTTP/1.1 404"), answer[:300]
    assert b"Connection: close" in first, first
    if method == "PUT":
        listed = rawhttp.request(server, "GET", f"/{bucket}/upgraded")
        assert listed.body == body
