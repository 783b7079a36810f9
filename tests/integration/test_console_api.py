"""The web console's server side over plain HTTP (http.client), against real servers.

* Sessions: no cookie, a forged or altered cookie, a cookie replayed after logout or after
  its expiry all get 401; state-changing calls without the CSRF token (or from another
  origin) get 403; nothing changes on the server when a call is refused.
* Authorization is S3's for the logged-in user: a user sees only the buckets it may list,
  is refused others' objects and the root-only pages; a disabled user's session ends.
* The data path: uploads (one streamed PUT, multipart) land as S3 objects with a checksum,
  downloads stream back the same bytes, listings page with continuation tokens, deletes of
  many keys report per key, a share link is a presigned URL any client can use.
* Bad input gets a JSON error with the S3 status, never a 500 (the server log is checked).
* ``--console-address`` over TLS: the console on its own HTTPS port (Secure cookies), the
  S3 port leaves ``/console`` to S3; a short session lifetime ends sessions.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.exceptions import ClientError
from consoleclient import COOKIE, CSRF_COOKIE, CSRF_HEADER, ConsoleClient
from s3server import (ROOT_PASSWORD, ROOT_USER, ServerProcess, empty_and_delete, start_server, start_tls_server,
                      stop_server)
from serverproc import free_port, no_new_tracebacks

SHORT_TTL = 4  # seconds a login lasts on the TLS server


class Webhook:
    """A bucket-notification receiver: records every event the server posts."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/events"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("console-api"),
                          extra_args=["--notify-webhook", f"hook={webhook.url}"])
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def tls_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    """HTTPS, the console on a port of its own, logins lasting SHORT_TTL seconds."""
    console_port = free_port()
    server = start_tls_server(tmp_path_factory.mktemp("console-tls"), extra_env={
        "BUCKETS_CONSOLE_ADDRESS": f"127.0.0.1:{console_port}", "BUCKETS_CONSOLE_SESSION_TTL": str(SHORT_TTL)})
    try:
        yield server, console_port
    finally:
        stop_server(server)


@pytest.fixture(autouse=True)
def no_server_bugs(request: pytest.FixtureRequest) -> Iterator[None]:
    """A traceback or an unhandled error in the log of a server the test used is a bug."""
    servers = [request.getfixturevalue(name) for name in ("srv", "tls_srv") if name in request.fixturenames]
    logs = [(s[0] if isinstance(s, tuple) else s).log_text for s in servers]
    if not logs:
        yield
        return
    with no_new_tracebacks(lambda: "".join(text() for text in logs)):
        yield


def client(srv: ServerProcess) -> ConsoleClient:
    return ConsoleClient(srv.endpoint, srv.ca_file)


@pytest.fixture
def root(srv: ServerProcess) -> ConsoleClient:
    console = client(srv)
    assert console.login(ROOT_USER, ROOT_PASSWORD).status == 200
    return console


@pytest.fixture
def bucket(srv: ServerProcess, root: ConsoleClient) -> Iterator[str]:
    name = f"console-{uuid.uuid4().hex[:10]}"
    root.ok("POST", "buckets", {"name": name})
    yield name
    empty_and_delete(srv.client(), name)


def bucket_exists(srv: ServerProcess, name: str) -> bool:
    try:
        srv.client().head_bucket(Bucket=name)
        return True
    except ClientError:
        return False


# --- pages ------------------------------------------------------------------------------------


def test_the_page_and_its_files_are_served_with_security_headers(srv: ServerProcess) -> None:
    console = client(srv)
    redirect = console.request("GET", "/console")
    assert redirect.status == 302 and redirect.headers["Location"] == "/console/"
    page = console.request("GET", "/console/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'<script type="module" src="static/js/app.js">' in page.body
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    script = console.request("GET", "/console/static/js/app.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert b"import" in script.body
    again = console.request("GET", "/console/static/js/app.js", headers={"If-None-Match": script.headers["ETag"]})
    assert again.status == 304 and again.body == b""
    for missing in ("/console/static/nope.js", "/console/static/../api.py", "/console/static/%2e%2e/api.py",
                    "/console/elsewhere"):
        answer = console.request("GET", missing)
        assert answer.status == 404 and answer.code == "NoSuchConsoleEndpoint", missing
    # Nothing refers to another origin: no CDN, no web fonts.
    for name in ("index.html", "console.css", "js/app.js", "js/browser.js", "js/upload.js"):
        text = console.request("GET", f"/console/static/{name}" if name != "index.html" else "/console/").body
        assert b"http://" not in text and b"https://" not in text, name


# --- login and sessions -----------------------------------------------------------------------


def test_wrong_credentials_are_refused_without_a_cookie(srv: ServerProcess) -> None:
    console = client(srv)
    for access_key, secret in ((ROOT_USER, "not-the-password"), ("nobody-here", ROOT_PASSWORD)):
        answer = console.login(access_key, secret)
        assert answer.status == 401 and answer.code == "InvalidCredentials"
        assert not answer.cookies()
    assert console.call("POST", "login", body=b"access_key=x&secret_key=y", csrf=False,
                        headers={"Content-Type": "application/x-www-form-urlencoded"}).status == 415
    assert console.call("POST", "login", {"access_key": ROOT_USER}, csrf=False).code == "InvalidArgument"
    assert console.call("POST", "login", body=b"{not json", csrf=False,
                        headers={"Content-Type": "application/json"}).code == "InvalidArgument"
    assert console.call("GET", "login").status == 405


def test_the_session_cookie_is_httponly_strict_and_expiring(srv: ServerProcess) -> None:
    console = client(srv)
    answer = console.login(ROOT_USER, ROOT_PASSWORD)
    assert answer.status == 200
    assert answer.json["user"] == ROOT_USER and answer.json["root"] is True
    cookies = answer.cookies()
    session, csrf = cookies[COOKIE], cookies[CSRF_COOKIE]
    assert "HttpOnly" in session["raw"] and "SameSite=Strict" in session["raw"] and "Path=/console" in session["raw"]
    assert 0 < int(session["max-age"]) <= 43200
    assert "Secure" not in session["raw"]  # plain http here; the TLS server's cookies are Secure
    assert "HttpOnly" not in csrf["raw"] and "SameSite=Strict" in csrf["raw"]  # the page reads this one
    assert csrf["value"] == answer.json["csrf"]
    assert ROOT_PASSWORD not in answer.headers.as_string() and ROOT_PASSWORD.encode() not in answer.body
    me = console.ok("GET", "session")
    assert me["user"] == ROOT_USER and me["csrf"] == answer.json["csrf"]


def test_requests_without_a_valid_cookie_get_401(srv: ServerProcess, root: ConsoleClient) -> None:
    name = f"console-forged-{uuid.uuid4().hex[:8]}"
    real = root.cookies[COOKIE]
    sid, expires, mac = real.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    attempts = {
        "no cookie": ({}, "LoginRequired"),
        "garbage": ({COOKIE: "garbage"}, "InvalidSession"),
        "another signature": ({COOKIE: f"{sid}.{expires}.{flipped}"}, "InvalidSession"),
        "a later expiry": ({COOKIE: f"{sid}.{int(expires) + 86400}.{mac}"}, "InvalidSession"),
        "made up": ({COOKIE: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
                    "InvalidSession"),
    }
    for what, (session_cookie, code) in attempts.items():
        jar = {**session_cookie, CSRF_COOKIE: root.csrf}
        listing = root.call("GET", "buckets", cookies=jar)
        assert (listing.status, listing.code) == (401, code), what
        assert listing.headers["Content-Type"].startswith("application/json")
        created = root.call("POST", "buckets", {"name": name}, cookies=jar)
        assert (created.status, created.code) == (401, code), what
    assert not bucket_exists(srv, name)
    assert root.call("GET", "buckets").status == 200  # the real cookie still works


def test_a_cookie_replayed_after_logout_gets_401(srv: ServerProcess) -> None:
    console = client(srv)
    console.login(ROOT_USER, ROOT_PASSWORD)
    saved = dict(console.cookies)
    assert console.call("GET", "buckets").status == 200
    out = console.call("POST", "logout", {})
    assert out.status == 200
    cleared = out.cookies()
    assert cleared[COOKIE]["value"] == "" and cleared[CSRF_COOKIE]["value"] == ""
    replay = console.call("GET", "buckets", cookies=saved)
    assert (replay.status, replay.code) == (401, "SessionEnded")
    assert console.call("POST", "buckets", {"name": "after-logout-x"}, cookies=saved).status == 401
    assert not bucket_exists(srv, "after-logout-x")
    assert console.call("POST", "logout", {}, cookies=saved).status == 401


def test_state_changes_need_the_csrf_token(srv: ServerProcess, root: ConsoleClient) -> None:
    name = f"console-csrf-{uuid.uuid4().hex[:8]}"
    no_header = root.call("POST", "buckets", {"name": name}, csrf=False)
    assert (no_header.status, no_header.code) == (403, "InvalidCSRFToken")
    wrong = root.call("POST", "buckets", {"name": name}, csrf=False, headers={CSRF_HEADER: "x" * 32})
    assert wrong.status == 403
    only_header = root.call("POST", "buckets", {"name": name}, cookies={COOKIE: root.cookies[COOKIE]})
    assert only_header.status == 403  # double submit: the cookie must carry it too
    other_origin = root.call("POST", "buckets", {"name": name}, headers={"Origin": "http://evil.example"})
    assert (other_origin.status, other_origin.code) == (403, "CrossOriginRequest")
    upload = root.call("PUT", f"buckets/{name}/object?key=x", body=b"data", csrf=False)
    assert upload.status == 403
    assert not bucket_exists(srv, name)
    assert root.call("POST", "buckets", {"name": name}).status == 201  # with the token it works
    root.ok("DELETE", f"buckets/{name}")


def test_repeated_failed_logins_block_that_address(srv: ServerProcess) -> None:
    """Ten failed logins from one address within five minutes refuse it, the right password
    included; other addresses are not affected (127.0.0.9 stands for an attacker here)."""
    attacker = ConsoleClient(srv.endpoint, source="127.0.0.9")
    for _ in range(10):
        assert attacker.login(ROOT_USER, "guessing-wrong").code == "InvalidCredentials"
    blocked = attacker.login(ROOT_USER, ROOT_PASSWORD)
    assert (blocked.status, blocked.code) == (429, "TooManyLoginFailures") and not blocked.cookies()
    assert client(srv).login(ROOT_USER, ROOT_PASSWORD).status == 200  # 127.0.0.1 still logs in


# --- the data path ----------------------------------------------------------------------------


def test_upload_download_details_and_delete(srv: ServerProcess, root: ConsoleClient, bucket: str) -> None:
    s3 = srv.client()
    small = os.urandom(200_000)
    put = root.call("PUT", f"buckets/{bucket}/object?key=docs/small%20file.txt", body=small,
                    headers={"Content-Type": "text/plain"})
    assert put.status == 200, put.body
    assert put.json["size"] == len(small) and put.json["etag"] == hashlib.md5(small).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="docs/small file.txt", ChecksumMode="ENABLED")
    assert got["Body"].read() == small and got["ContentType"] == "text/plain"
    assert got["ChecksumCRC64NVME"] == put.json["checksums"]["CRC64NVME"]

    # multipart: two parts (5 MiB + a little), each streamed, then complete
    data = os.urandom(5 * 1024 * 1024 + 1234)
    created = root.ok("POST", f"buckets/{bucket}/uploads", {"key": "big.bin", "content_type": "application/x-test"})
    upload = created["upload_id"]
    etags = []
    for number, chunk in enumerate((data[:5 * 1024 * 1024], data[5 * 1024 * 1024:]), start=1):
        part = root.call("PUT", f"buckets/{bucket}/uploads/{upload}/parts/{number}?key=big.bin", body=chunk)
        assert part.status == 200, part.body
        etags.append({"number": number, "etag": part.json["etag"]})
    done = root.ok("POST", f"buckets/{bucket}/uploads/{upload}/complete", {"key": "big.bin", "parts": etags})
    assert done["size"] == len(data) and done["etag"].endswith("-2") and done["checksum_type"] == "FULL_OBJECT"
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data

    download = root.call("GET", f"buckets/{bucket}/download?key=big.bin")
    assert download.status == 200 and download.body == data
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in download.headers["Content-Security-Policy"]
    details = root.ok("GET", f"buckets/{bucket}/object?key=big.bin")
    assert details["content_type"] == "application/x-test" and details["parts"] == 2
    assert set(details["checksums"]) == {"CRC64NVME"}

    # an aborted upload is gone
    other = root.ok("POST", f"buckets/{bucket}/uploads", {"key": "gone.bin"})["upload_id"]
    assert root.call("DELETE", f"buckets/{bucket}/uploads/{other}?key=gone.bin").status == 200
    assert root.call("PUT", f"buckets/{bucket}/uploads/{other}/parts/1?key=gone.bin", body=b"x").code == "NoSuchUpload"

    deleted = root.ok("POST", f"buckets/{bucket}/delete", {"keys": ["docs/small file.txt", "big.bin", "never-was"]})
    assert sorted(deleted["deleted"]) == ["big.bin", "docs/small file.txt", "never-was"] and deleted["errors"] == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    listing = root.ok("GET", "buckets")
    assert any(b["name"] == bucket for b in listing["buckets"])


def test_listing_pages_with_continuation_tokens(srv: ServerProcess, root: ConsoleClient, bucket: str) -> None:
    s3 = srv.client()
    keys = [f"k{i:03d}" for i in range(23)] + [f"dir{i}/x" for i in range(3)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    seen_objects, seen_prefixes, token, pages = [], [], None, 0
    while True:
        path = f"buckets/{bucket}/objects?limit=10" + (f"&token={token}" if token else "")
        page = root.ok("GET", path)
        pages += 1
        assert len(page["objects"]) + len(page["prefixes"]) <= 10
        seen_objects += [o["key"] for o in page["objects"]]
        seen_prefixes += page["prefixes"]
        token = page["next_token"]
        if token is None:
            break
    assert pages == 3
    assert seen_objects == sorted(k for k in keys if "/" not in k)
    assert seen_prefixes == ["dir0/", "dir1/", "dir2/"]
    inside = root.ok("GET", f"buckets/{bucket}/objects?prefix=dir1/")
    assert [o["key"] for o in inside["objects"]] == ["dir1/x"] and inside["prefixes"] == []
    flat = root.ok("GET", f"buckets/{bucket}/objects?delimiter=&limit=1000")
    assert len(flat["objects"]) == len(keys)
    usage = {b["name"]: b for b in root.ok("GET", "buckets")["buckets"]}[bucket]
    assert usage["objects"] == len(keys) and usage["bytes"] == len(keys)


def test_100_continue_only_after_the_call_is_accepted(srv: ServerProcess, root: ConsoleClient, bucket: str) -> None:
    """A client that waits for 100 Continue sends no body for a call that is refused, and
    gets one 100 Continue (not two) for one that is accepted."""
    import socket

    cookie = "; ".join(f"{name}={value}" for name, value in root.cookies.items())

    def exchange(csrf: str, body: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
            sock.sendall((f"PUT /console/api/buckets/{bucket}/object?key=expect.bin HTTP/1.1\r\n"
                          f"Host: 127.0.0.1:{srv.port}\r\nCookie: {cookie}\r\n{CSRF_HEADER}: {csrf}\r\n"
                          f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
                          ).encode())
            first = sock.recv(65536)
            if first.startswith(b"HTTP/1.1 100 "):
                sock.sendall(body)
            answer = first
            while chunk := sock.recv(65536):
                answer += chunk
            return answer

    refused = exchange("wrong-token", b"x" * 1000)
    assert refused.startswith(b"HTTP/1.1 403 ") and b"InvalidCSRFToken" in refused
    accepted = exchange(root.csrf, b"y" * 1000)
    assert accepted.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), accepted[:200]
    assert accepted.count(b"100 Continue") == 1
    assert srv.client().get_object(Bucket=bucket, Key="expect.bin")["Body"].read() == b"y" * 1000


def test_a_share_link_is_a_presigned_url_anyone_can_use(srv: ServerProcess, root: ConsoleClient,
                                                        bucket: str) -> None:
    key = "shared/été 2026 #1+.txt"
    srv.client().put_object(Bucket=bucket, Key=key, Body=b"shared bytes")
    link = root.ok("POST", f"buckets/{bucket}/share", {"key": key, "expires": 600})
    assert link["url"].startswith(f"{srv.endpoint}/{bucket}/") and "X-Amz-Signature=" in link["url"]
    assert f"X-Amz-Credential={ROOT_USER}%2F" in link["url"] and "X-Amz-Expires=600" in link["url"]
    assert link["expires"] > time.time()
    with urllib.request.urlopen(link["url"], timeout=60) as response:  # no cookie, no credentials
        assert response.read() == b"shared bytes"
    assert root.call("POST", f"buckets/{bucket}/share", {"key": "missing", "expires": 60}).code == "NoSuchKey"
    for expires in (0, 604801, "600", True):
        assert root.call("POST", f"buckets/{bucket}/share", {"key": key, "expires": expires}).status == 400


def test_users_see_only_what_s3_lets_them(srv: ServerProcess, root: ConsoleClient, bucket: str) -> None:
    s3 = srv.client()
    s3.put_object(Bucket=bucket, Key="private.txt", Body=b"root's")
    user, secret = f"alice-{uuid.uuid4().hex[:6]}", "alice-secret-key-1"
    added = root.call("POST", "users", {"access_key": user, "secret_key": secret, "policy": "readwrite"})
    assert added.status == 201 and added.json["access_key"] == user
    assert root.call("POST", "users", {"access_key": user, "secret_key": secret}).code == "UserAlreadyExists"
    assert any(u["access_key"] == user for u in root.ok("GET", "users")["users"])
    own = f"alice-own-{uuid.uuid4().hex[:6]}"
    try:
        alice = client(srv)
        assert alice.login(user, secret).json["root"] is False
        assert alice.ok("GET", "buckets")["buckets"] == []  # root's buckets are not hers to list
        assert alice.call("POST", "buckets", {"name": own}).status == 201
        assert [b["name"] for b in alice.ok("GET", "buckets")["buckets"]] == [own]
        for method, path, document in (
                ("GET", f"buckets/{bucket}/objects", None),
                ("GET", f"buckets/{bucket}/object?key=private.txt", None),
                ("GET", f"buckets/{bucket}/download?key=private.txt", None),
                ("POST", f"buckets/{bucket}/share", {"key": "private.txt", "expires": 60}),
                ("POST", f"buckets/{bucket}/uploads", {"key": "intruder"}),
                ("DELETE", f"buckets/{bucket}", None)):
            answer = alice.call(method, path, document)
            assert (answer.status, answer.code) == (403, "AccessDenied"), (method, path)
        denied = alice.ok("POST", f"buckets/{bucket}/delete", {"keys": ["private.txt"]})
        assert denied["deleted"] == [] and denied["errors"][0]["code"] == "AccessDenied"
        assert alice.call("PUT", f"buckets/{bucket}/object?key=intruder", body=b"x").code == "AccessDenied"
        for path in ("cluster", "users", "policies"):
            assert alice.call("GET", path).status == 403, path
        assert alice.call("POST", "cluster/heal", {}).status == 403
        assert s3.get_object(Bucket=bucket, Key="private.txt")["Body"].read() == b"root's"
        assert "intruder" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        # her own bucket works through the console and S3 alike
        assert alice.call("PUT", f"buckets/{own}/object?key=mine.txt", body=b"hers").status == 200
        alice_s3 = srv.client(access_key=user, secret_key=secret)
        assert alice_s3.get_object(Bucket=own, Key="mine.txt")["Body"].read() == b"hers"
        assert [b["name"] for b in root.ok("GET", "buckets")["buckets"] if b["name"] == own] == [own]
        # a disabled user's session ends at once
        root.ok("POST", f"users/{user}/disable", {})
        ended = alice.call("GET", "buckets")
        assert (ended.status, ended.code) == (401, "SessionEnded")
        assert alice.login(user, secret).status == 401
        root.ok("POST", f"users/{user}/enable", {})
        assert alice.login(user, secret).status == 200
        assert root.ok("PUT", f"users/{user}/policy", {"policy": "readonly"})["policy"] == "readonly"
        refused = alice.call("POST", f"buckets/{own}/delete", {"keys": ["mine.txt"]}).json["errors"]
        assert [error["code"] for error in refused] == ["AccessDenied"]
        assert root.call("PUT", f"users/{user}/policy", {"policy": "no-such-policy"}).code == "NoSuchPolicy"
    finally:
        empty_and_delete(s3, own)
        root.call("DELETE", f"users/{user}")
    assert alice.call("GET", "buckets").status == 401  # removed: the session is gone too
    assert root.call("DELETE", f"users/{user}").code == "NoSuchUser"


def test_console_writes_and_deletes_send_bucket_notifications(srv: ServerProcess, root: ConsoleClient, bucket: str,
                                                                 webhook: Webhook) -> None:
    srv.client().put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"Id": "all", "QueueArn": "arn:buckets:sqs::hook:webhook",
                                 "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
    assert root.call("PUT", f"buckets/{bucket}/object?key=one.txt", body=b"one").status == 200
    upload = root.ok("POST", f"buckets/{bucket}/uploads", {"key": "two.bin"})["upload_id"]
    etag = root.ok("PUT", f"buckets/{bucket}/uploads/{upload}/parts/1?key=two.bin", body=b"two")["etag"]
    root.ok("POST", f"buckets/{bucket}/uploads/{upload}/complete",
            {"key": "two.bin", "parts": [{"number": 1, "etag": etag}]})
    root.ok("POST", f"buckets/{bucket}/delete", {"keys": ["one.txt", "two.bin"]})
    wanted = {("s3:ObjectCreated:Put", "one.txt"), ("s3:ObjectCreated:CompleteMultipartUpload", "two.bin"),
              ("s3:ObjectRemoved:Delete", "one.txt"), ("s3:ObjectRemoved:Delete", "two.bin")}
    deadline = time.monotonic() + 90
    while True:  # delivered from the server's queue, at least once
        seen = {(e["EventName"], e["Key"].split("/", 1)[1]) for e in list(webhook.events)
                if e["Key"].startswith(bucket + "/")}
        if wanted <= seen:
            break
        assert time.monotonic() < deadline, f"never delivered: {sorted(wanted - seen)}"
        time.sleep(0.1)
    record = next(e for e in webhook.events if e["Key"] == f"{bucket}/one.txt")["Records"][0]
    assert record["userIdentity"]["principalId"] == ROOT_USER
    assert record["s3"]["object"]["size"] == 3


def test_the_cluster_page_data_and_a_heal_run(srv: ServerProcess, root: ConsoleClient) -> None:
    data = root.ok("GET", "cluster")
    info = data["info"]
    assert len(info["disks"]) == 4 and all(d["state"] == "online" for d in info["disks"])
    assert info["erasure"]["data"] == 2 and info["erasure"]["parity"] == 2
    assert data["migration"] == {"state": "none", "cluster": False}
    assert set(data["rates"]) == {"seconds", "total", "by_status", "by_api"}
    started = root.ok("POST", "cluster/heal", {})
    assert started["started"] is not None
    deadline = time.monotonic() + 120
    while not root.ok("GET", "cluster")["heal"]["done"]:
        assert time.monotonic() < deadline, "the heal pass did not finish"
        time.sleep(0.2)


def test_bad_input_gets_a_json_error_never_a_500(srv: ServerProcess, root: ConsoleClient, bucket: str) -> None:
    long_key = "k" * 1025
    cases = [
        ("GET", f"buckets/{bucket}/objects?limit=abc", None, None, 400, "InvalidArgument"),
        ("GET", f"buckets/{bucket}/objects?limit=0", None, None, 400, "InvalidArgument"),
        ("GET", f"buckets/{bucket}/objects?limit=1001", None, None, 400, "InvalidArgument"),
        ("GET", f"buckets/{bucket}/objects?token=%21%21%21", None, None, 400, "InvalidArgument"),
        ("GET", f"buckets/{bucket}/objects?delimiter=x", None, None, 400, "InvalidArgument"),
        ("GET", "buckets/no-such-bucket-here/objects", None, None, 404, "NoSuchBucket"),
        ("GET", f"buckets/{bucket}/object", None, None, 400, "InvalidArgument"),
        ("GET", f"buckets/{bucket}/object?key=missing", None, None, 404, "NoSuchKey"),
        ("GET", f"buckets/{bucket}/download?key=missing", None, None, 404, "NoSuchKey"),
        ("GET", f"buckets/{bucket}/object?key={long_key}", None, None, 400, "KeyTooLongError"),
        ("PUT", f"buckets/{bucket}/object?key={long_key}", None, b"x", 400, "KeyTooLongError"),
        ("POST", "buckets", {"name": "Not_A_Bucket"}, None, 400, "InvalidBucketName"),
        ("POST", "buckets", {"name": 7}, None, 400, "InvalidArgument"),
        ("POST", "buckets", [1, 2], None, 400, "InvalidArgument"),
        ("POST", "buckets", {"name": bucket}, None, 409, "BucketAlreadyOwnedByYou"),
        ("POST", f"buckets/{bucket}/delete", {"keys": []}, None, 400, "InvalidArgument"),
        ("POST", f"buckets/{bucket}/delete", {"keys": [f"k{i}" for i in range(1001)]}, None, 400, "InvalidArgument"),
        ("POST", f"buckets/{bucket}/delete", {"keys": [1]}, None, 400, "InvalidArgument"),
        ("POST", f"buckets/{bucket}/delete", {"keys": [long_key]}, None, 200, None),
        ("POST", f"buckets/{bucket}/uploads/nope/complete", {"key": "k", "parts": [{"number": "1", "etag": "x"}]},
         None, 400, "InvalidArgument"),
        ("POST", f"buckets/{bucket}/uploads/nope/complete", {"key": "k", "parts": [{"number": 1, "etag": "x"}]},
         None, 404, "NoSuchUpload"),
        ("PUT", f"buckets/{bucket}/uploads/nope/parts/0?key=k", None, b"x", 400, "InvalidArgument"),
        ("PUT", f"buckets/{bucket}/uploads/nope/parts/10001?key=k", None, b"x", 400, "InvalidArgument"),
        ("PUT", f"buckets/{bucket}/uploads/nope/parts/1?key=k", None, b"x", 404, "NoSuchUpload"),
        ("DELETE", f"buckets/{bucket}", None, None, 200, None),
        ("DELETE", f"buckets/{bucket}", None, None, 404, "NoSuchBucket"),
        ("GET", "no/such/endpoint", None, None, 404, "NoSuchConsoleEndpoint"),
        ("PATCH", "buckets", None, None, 405, "MethodNotAllowed"),
        ("POST", "users", {"access_key": "x", "secret_key": "long-enough-1"}, None, 400, "InvalidArgument"),
        ("POST", "users", {"access_key": "valid-name", "secret_key": "short"}, None, 400, "InvalidArgument"),
        ("POST", "users", {"access_key": ROOT_USER, "secret_key": "long-enough-1"}, None, 400, "InvalidArgument"),
    ]
    for method, path, document, body, status, code in cases:
        answer = root.call(method, path, document, body=body)
        assert answer.status == status, (method, path, answer.status, answer.body[:300])
        assert answer.headers["Content-Type"].startswith("application/json"), (method, path)
        if code is not None:
            assert answer.code == code, (method, path, answer.body[:300])
    assert root.call("POST", "buckets", body=b"{broken", headers={"Content-Type": "application/json"}).status == 400
    big = json.dumps({"name": "x" * (70 * 1024)}).encode()
    assert root.call("POST", "buckets", body=big, headers={"Content-Type": "application/json"}).status == 400


def test_s3_requests_to_a_bucket_named_console_still_reach_s3(srv: ServerProcess) -> None:
    s3 = srv.client()
    s3.create_bucket(Bucket="console")
    try:
        s3.put_object(Bucket="console", Key="static/js/app.js", Body=b"an object, not the page")
        assert s3.get_object(Bucket="console", Key="static/js/app.js")["Body"].read() == b"an object, not the page"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="console")["Contents"]] == ["static/js/app.js"]
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "console", "Key": "static/js/app.js"})
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.read() == b"an object, not the page"
    finally:
        empty_and_delete(s3, "console")
    # an unsigned browser request under /console/ is the console's
    assert client(srv).request("GET", "/console/static/js/app.js").body.startswith(b"//")


# --- its own port, TLS, expiry ----------------------------------------------------------------


def test_console_address_over_tls_with_secure_cookies(tls_srv: tuple[ServerProcess, int]) -> None:
    server, console_port = tls_srv
    console = ConsoleClient(f"https://127.0.0.1:{console_port}", server.ca_file)
    root_page = console.request("GET", "/")
    assert root_page.status == 302 and root_page.headers["Location"] == "/console/"
    assert console.request("GET", "/console/").status == 200
    answer = console.login(ROOT_USER, ROOT_PASSWORD)
    assert answer.status == 200
    assert "Secure" in answer.cookies()[COOKIE]["raw"] and "Secure" in answer.cookies()[CSRF_COOKIE]["raw"]
    s3 = server.client()
    s3.create_bucket(Bucket="tls-console")
    try:
        s3.put_object(Bucket="tls-console", Key="a.txt", Body=b"over https")
        link = console.call("POST", "buckets/tls-console/share", {"key": "a.txt", "expires": 300})
        if link.status == 401:  # the short session ran out under load: log in again
            console.login(ROOT_USER, ROOT_PASSWORD)
            link = console.call("POST", "buckets/tls-console/share", {"key": "a.txt", "expires": 300})
        url = link.json["url"]
        assert url.startswith(f"https://127.0.0.1:{server.port}/tls-console/a.txt?")  # the S3 port
        context = ssl.create_default_context(cafile=server.ca_file)
        with urllib.request.urlopen(url, timeout=60, context=context) as response:
            assert response.read() == b"over https"
    finally:
        empty_and_delete(s3, "tls-console")
    # the S3 port leaves /console to S3: an unsigned GET is an anonymous S3 request
    s3_side = ConsoleClient(server.endpoint, server.ca_file).request("GET", "/console/")
    assert s3_side.status in (403, 404) and b"<Error>" in s3_side.body
    assert "Console:     https://127.0.0.1:" in server.log_text()


def test_a_session_cannot_be_used_after_it_expires(tls_srv: tuple[ServerProcess, int]) -> None:
    server, console_port = tls_srv
    console = ConsoleClient(f"https://127.0.0.1:{console_port}", server.ca_file)
    answer = console.login(ROOT_USER, ROOT_PASSWORD)
    expires = answer.json["expires"]
    assert expires <= time.time() + SHORT_TTL + 1
    assert int(answer.cookies()[COOKIE]["max-age"]) <= SHORT_TTL
    saved = dict(console.cookies)
    first = console.call("GET", "buckets")
    if time.time() < expires - 1:  # on a very slow machine the session may be over already
        assert first.status == 200
    while time.time() <= expires + 0.5:
        time.sleep(0.25)
    late = console.call("GET", "buckets", cookies=saved)
    assert (late.status, late.code) == (401, "SessionExpired")
    assert console.call("POST", "buckets", {"name": "too-late-bucket"}, cookies=saved).status == 401
    again = console.call("GET", "buckets", cookies=saved)
    assert again.status == 401  # and it stays refused
