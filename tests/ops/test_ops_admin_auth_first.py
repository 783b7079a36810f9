"""The admin API authenticates before it routes (issue 8, item 7).

Until a request is signed by the root user, nothing under ``/_buckets/admin/v1`` tells
an endpoint that exists from one that does not, nor which methods one takes: every path
and method gets the same answer (anonymous, a wrong signature, an unknown access key, a
valid user who is not root), and ``100 Continue`` is not sent. Also checked here: the
other unauthenticated routes (``/metrics`` in bearer mode, health) answer only their own
path and methods, anything else near them is S3's ``AccessDenied``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import uuid
from collections.abc import Iterator

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from opsserver import METRICS_TOKEN, ROOT_PASSWORD, ROOT_USER, Server

PREFIX = "/_buckets/admin/v1"
EXISTING = ["/info", "/users", "/users/someone", "/users/someone/enable", "/users/someone/disable", "/heal",
            "/config"]
MISSING = ["", "/", "/nothing-here", "/info/extra", "/INFO", "/users/a/b/c", "/heal/start", "/info%0A", "/%0A",
           "/..", "/../v1/info", "/%2E%2E/info", "/users/%00", "/" + "x" * 300]
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]
VOLATILE = {"date", "x-amz-request-id", "x-amz-id-2"}


def signed_headers(server: Server, method: str, path: str, body: bytes, access_key: str,
                   secret_key: str) -> dict[str, str]:
    """SigV4 as S3 clients sign (the path exactly as sent, not normalised)."""
    request = AWSRequest(method=method, url=server.url + path, data=body,
                         headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def send(server: Server, method: str, path: str, body: bytes = b"", *,
         credentials: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = signed_headers(server, method, path, body, *credentials) if credentials else {}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def normalised(status: int, headers: dict[str, str], body: bytes) -> tuple:
    """What may differ between two answers: nothing but the request id (and the date)."""
    kept = tuple(sorted((k, v) for k, v in headers.items() if k not in VOLATILE))
    if body:
        document = json.loads(body)
        assert document.pop("request_id") == headers["x-amz-request-id"]
        body = json.dumps(document, sort_keys=True).encode()
    return status, kept, body


@pytest.fixture(scope="module")
def plain_user(server: Server) -> Iterator[tuple[str, str]]:
    """A valid user who is not root."""
    user = (f"auth-first-{uuid.uuid4().hex[:8]}", "plain-user-secret-123")
    status, _, body = send(server, "PUT", f"{PREFIX}/users/{user[0]}", json.dumps({"secret_key": user[1]}).encode(),
                           credentials=(ROOT_USER, ROOT_PASSWORD))
    assert status == 200, body
    yield user
    send(server, "DELETE", f"{PREFIX}/users/{user[0]}", credentials=(ROOT_USER, ROOT_PASSWORD))


def refusal_modes(plain_user: tuple[str, str]) -> dict[str, tuple[tuple[str, str] | None, str]]:
    return {
        "anonymous": (None, "AccessDenied"),
        "wrong secret": ((ROOT_USER, "not-the-root-password"), "SignatureDoesNotMatch"),
        "unknown key": (("no-such-access-key", "whatever-secret-123"), "InvalidAccessKeyId"),
        "not root": (plain_user, "AccessDenied"),
    }


@pytest.mark.parametrize("mode", ["anonymous", "wrong secret", "unknown key", "not root"])
def test_every_path_and_method_gets_one_answer_until_root_signs(server: Server, plain_user, mode: str) -> None:
    credentials, code = refusal_modes(plain_user)[mode]
    answers: dict[tuple, list[str]] = {}
    for method in METHODS:
        for path in EXISTING + MISSING:
            status, headers, body = send(server, method, PREFIX + path, credentials=credentials)
            assert status == 403, (method, path, status, body)
            if method != "HEAD":
                assert json.loads(body)["code"] == code, (method, path, body)
            key = normalised(status, headers, body)
            answers.setdefault(key if method != "HEAD" else ("HEAD",) + key, []).append(f"{method} {path}")
    # One answer for every method with a body, one for HEAD (the same, without the body).
    assert len(answers) == 2, {k: v[:3] for k, v in answers.items()}
    (with_body, _), (head, _) = sorted(answers.items(), key=lambda item: item[0][0] == "HEAD")
    assert head[1:3] == with_body[:2] and head[3] == b""


def test_root_still_gets_routed(server: Server) -> None:
    """Once root has signed, routing answers as before: that is where 404 and 405 live."""
    root = (ROOT_USER, ROOT_PASSWORD)
    status, _, body = send(server, "GET", f"{PREFIX}/info", credentials=root)
    assert status == 200 and json.loads(body)["erasure"]["data"] == 2
    status, _, body = send(server, "GET", f"{PREFIX}/nothing-here", credentials=root)
    assert (status, json.loads(body)["code"]) == (404, "NoSuchAdminEndpoint")
    status, _, body = send(server, "DELETE", f"{PREFIX}/info", credentials=root)
    assert (status, json.loads(body)["code"]) == (405, "MethodNotAllowed")
    status, _, body = send(server, "GET", PREFIX, credentials=root)
    assert (status, json.loads(body)["code"]) == (404, "NoSuchAdminEndpoint")


def _exchange(server: Server, head: bytes, body: bytes | None) -> list[bytes]:
    """Send a request head with Expect: 100-continue; send the body only after a 100.
    Returns the status lines received, in order."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        reply = sock.recv(65536)
        lines = [reply.split(b"\r\n", 1)[0]]
        if lines[0].startswith(b"HTTP/1.1 100") and body is not None:
            rest = reply.split(b"\r\n\r\n", 1)[1]
            sock.sendall(body)
            while b"\r\n\r\n" not in rest:
                rest += sock.recv(65536)
            lines.append(rest.split(b"\r\n", 1)[0])
        else:
            lines.append(reply)
    return lines


def test_no_100_continue_before_authentication(server: Server) -> None:
    body = json.dumps({"secret_key": "continue-secret-123"}).encode()
    user = f"continue-{uuid.uuid4().hex[:8]}"
    path = f"{PREFIX}/users/{user}"
    common = [f"PUT {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Content-Length: {len(body)}",
              "Expect: 100-continue"]

    anonymous = ("\r\n".join(common) + "\r\n\r\n").encode()
    status_line, reply = _exchange(server, anonymous, body)
    assert status_line.startswith(b"HTTP/1.1 403"), reply
    assert re.search(rb"(?im)^connection: close", reply), reply  # the unsent body cannot follow

    signed = signed_headers(server, "PUT", path, body, ROOT_USER, ROOT_PASSWORD)
    lines = common + [f"{k}: {v}" for k, v in signed.items()]
    status_lines = _exchange(server, ("\r\n".join(lines) + "\r\n\r\n").encode(), body)
    assert status_lines[0].startswith(b"HTTP/1.1 100"), status_lines
    assert status_lines[1].startswith(b"HTTP/1.1 200"), status_lines
    status, _, answer = send(server, "DELETE", path, credentials=(ROOT_USER, ROOT_PASSWORD))
    assert status == 200, answer


def _set_metrics_auth(server: Server, mode: str) -> None:
    status, _, body = send(server, "PUT", f"{PREFIX}/config", json.dumps({"metrics_auth": mode}).encode(),
                           credentials=(ROOT_USER, ROOT_PASSWORD))
    assert status == 200, body


def test_metrics_and_health_answer_only_their_own_paths(server: Server) -> None:
    """Bearer mode: /metrics refuses without its token (and says nothing else); paths and
    methods beside /metrics and the health checks are S3's, answered like any anonymous
    S3 request: an S3 error in XML (no such bucket, an invalid name, access denied), never
    anything of the metrics."""
    _set_metrics_auth(server, "bearer")
    try:
        for method in ("GET", "HEAD"):
            status, _, body = send(server, method, "/metrics")
            assert status == 401 and b"buckets_" not in body
        status, _, body = server.get("/metrics", headers={"Authorization": "Bearer not-the-token-0123456789"})
        assert status == 403 and b"buckets_" not in body
        status, _, body = server.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert status == 200 and b"buckets_disks" in body

        near = [("GET", p) for p in ("/metrics/x", "/metricsx", "/metrics%0A", "/health", "/health/nope",
                                      "/health/live/x", "/minio/health/nope", "/minio", "/no-such-endpoint")]
        near += [(m, p) for m in ("PUT", "POST", "DELETE", "PATCH", "OPTIONS") for p in ("/metrics", "/health/live")]
        for method, path in near:
            status, headers, body = send(server, method, path)
            # (405: POST on a key; 412: a POST that is no multipart/form-data upload, as AWS answers)
            assert status in (400, 403, 404, 405, 412) and headers["content-type"] == "application/xml", \
                (method, path, body)
            assert b"<Code>" in body and b"buckets_" not in body, (method, path, body)
        for path in ("/health/live", "/health/ready", "/minio/health/live"):
            assert send(server, "GET", path)[0] == 200  # public by design, token or not
    finally:
        _set_metrics_auth(server, "public")
