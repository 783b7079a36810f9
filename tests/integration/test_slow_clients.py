"""Slow and greedy clients cannot hold the server (issue 8, item 6).

Real `buckets server` processes with short timeouts and small connection limits set
through the environment, driven over raw sockets (what an attacker sends) and boto3
(what users run):

- many connections trickling header bytes are closed once the header timeout passes,
  while boto3 PUT/GET keep working next to them;
- the per-address and per-server connection limits answer 503 SlowDown, while another
  client address (127.0.0.2: a distinct address on loopback) is still served;
- a stalled upload ends with 400 RequestTimeout and nothing stored; slow uploads and
  downloads that keep moving are not cut; a download the client stops reading is dropped;
- an idle kept-alive connection outlives the header timeout and is closed after the idle
  timeout.

No test asserts how fast anything is: "closed" means the client saw EOF (or a reset)
before a generous deadline, well after the configured timeout.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import select
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from rawhttp import key_path, request, sign
from s3server import ServerProcess, error_of, start_server, stop_server
from serverproc import no_new_tracebacks

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
IDLE_TIMEOUT = 4.0
SLACK = 15.0  # generous: a loaded 2-core machine must never make these tests flaky

TIMEOUTS = {"BUCKETS_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "BUCKETS_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "BUCKETS_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Short timeouts; connection limits high enough for every test here but the limit test."""
    srv = start_server(tmp_path_factory.mktemp("slow"), extra_env=TIMEOUTS)
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """At most 8 connections, 5 per client address; timeouts long enough to hold them."""
    srv = start_server(tmp_path_factory.mktemp("limited"), extra_env={
        "BUCKETS_MAX_CONNECTIONS": "8", "BUCKETS_MAX_CONNECTIONS_PER_CLIENT": "5",
        "BUCKETS_HEADER_TIMEOUT": "120", "BUCKETS_IDLE_TIMEOUT": "120"})
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture
def slow_bucket(slow_server: ServerProcess) -> Iterator[str]:
    name = f"slow-{uuid.uuid4().hex[:12]}"
    s3 = slow_server.client()
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture(autouse=True)
def no_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever these clients do, the server logs no traceback (the shared guard)."""
    with ExitStack() as guards:
        for name in ("slow_server", "limited_server"):
            if name in request.fixturenames:
                guards.enter_context(no_new_tracebacks(request.getfixturevalue(name).log_text))
        yield


# --- raw socket helpers ------------------------------------------------------------------------


def connect(server: ServerProcess, source: str | None = None, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes: (bytes, True), or (bytes, False) if it
    is still open at ``deadline``."""
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(data), False
        sock.settimeout(left)
        try:
            piece = sock.recv(65536)
        except socket.timeout:
            return bytes(data), False
        except ConnectionResetError:
            return bytes(data), True
        if not piece:
            return bytes(data), True
        data += piece


def signed_head(server: ServerProcess, method: str, path: str, headers: dict[str, str],
                query: str = "") -> bytes:
    """A signed request header (UNSIGNED-PAYLOAD) as bytes, for sending by hand."""
    host = f"127.0.0.1:{server.port}"
    target = path + (f"?{query}" if query else "")
    signed = sign(method, f"http://{host}{target}", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", **headers}, b"")
    signed.setdefault("Host", host)
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in signed.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (interim 1xx answers skipped)."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            piece = sock.recv(65536)
            assert piece, f"connection closed before a response: {buf!r}"
            buf += piece
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status >= 200:
            break
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        piece = sock.recv(65536)
        assert piece, "connection closed inside a response body"
        buf += piece
    return status, headers, buf[:length]


def code_of(body: bytes) -> str | None:
    match = re.search(rb"<Code>([^<]*)</Code>", body)
    return match.group(1).decode() if match else None


def disk_files(server: ServerProcess) -> set[tuple[str, int]]:
    """Every file on the server's disks with its size (the registry included)."""
    found = set()
    for root, _, names in os.walk(server.data_dir):
        for name in names:
            path = Path(root) / name
            found.add((str(path.relative_to(server.data_dir)), path.stat().st_size))
    return found


def metric(server: ServerProcess, name: str, labels: str) -> float:
    text = request(server, "GET", "/metrics", signed=False).text
    selector = re.escape(name) + (rf"\{{{re.escape(labels)}\}}" if labels else "")
    match = re.search(rf"^{selector} (\S+)$", text, flags=re.M)
    assert match, f"{name}{{{labels}}} not in /metrics"
    return float(match.group(1))


# --- (a) trickling headers next to normal traffic ----------------------------------------------


class Trickler(threading.Thread):
    """``count`` connections, each sending one more byte of a never-ending header every
    ``interval`` seconds, and ``silent`` ones that send nothing, until the server closes
    them. Records when each was closed and what it answered."""

    def __init__(self, server: ServerProcess, count: int, silent: int = 0, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.socks = [connect(server) for _ in range(count + silent)]
        self.silent = set(range(count, count + silent))
        self.opened = time.monotonic()
        self.interval = interval
        self.closed_after: dict[int, float] = {}
        self.answers: dict[int, bytes] = {}
        self.header = b"GET /trickle HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        self.stop = threading.Event()

    @property
    def open_count(self) -> int:
        return len(self.socks) - len(self.closed_after)

    def _closed(self, index: int) -> None:
        if index not in self.closed_after:
            self.closed_after[index] = time.monotonic() - self.opened
            self.socks[index].close()

    def run(self) -> None:
        position = 0
        while not self.stop.is_set() and self.open_count:
            for index, sock in enumerate(self.socks):
                if index in self.closed_after:
                    continue
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    data, closed = read_until_closed(sock, time.monotonic() + 5)
                    self.answers[index] = data
                    self._closed(index)
                    continue
                if index in self.silent:
                    continue
                try:
                    sock.send(self.header[position:position + 1])
                except OSError:  # reset by the server
                    self._closed(index)
            position += 1
            self.stop.wait(self.interval)


def test_trickling_headers_are_closed_while_normal_requests_continue(slow_server: ServerProcess,
                                                                     slow_bucket: str) -> None:
    s3 = slow_server.client()
    body = os.urandom(256 * 1024)

    def put_get(index: int) -> float:
        started = time.monotonic()
        s3.put_object(Bucket=slow_bucket, Key=f"obj-{index}", Body=body)
        assert s3.get_object(Bucket=slow_bucket, Key=f"obj-{index}")["Body"].read() == body
        return time.monotonic() - started

    put_get(0)  # warm up: connections in boto3's pool, the bucket's first object
    baseline = [put_get(i) for i in range(1, 6)]
    trickler = Trickler(slow_server, count=32, silent=4)
    trickler.start()
    under_attack = []
    try:
        index = 100
        # Normal traffic for as long as the trickling connections are all still open: the
        # server must serve it next to them.
        while trickler.open_count == 36 and time.monotonic() - trickler.opened < HEADER_TIMEOUT + SLACK:
            under_attack.append(put_get(index))
            index += 1
        trickler.join(HEADER_TIMEOUT + SLACK)
    finally:
        trickler.stop.set()
        trickler.join(10)
    closed = sorted(trickler.closed_after.values())
    print(f"\nPUT+GET 256 KiB latency: before {statistics.median(baseline) * 1000:.1f} ms median "
          f"({len(baseline)}), with 32 trickling and 4 silent connections {statistics.median(under_attack) * 1000:.1f} ms "
          f"median, max {max(under_attack) * 1000:.1f} ms ({len(under_attack)})")
    print(f"trickling connections closed by the server after {closed[0]:.1f}..{closed[-1]:.1f} s "
          f"(header timeout {HEADER_TIMEOUT} s)")
    assert under_attack, "no request completed while the trickling connections were open"
    assert len(trickler.closed_after) == 36, "some trickling connections were still open"
    assert closed[-1] < HEADER_TIMEOUT + SLACK
    # Each trickler was answered 400 RequestTimeout (it had sent part of a header) or reset;
    # a connection that sent nothing is closed without a word, as an idle one is.
    for index, answer in trickler.answers.items():
        if index in trickler.silent:
            assert answer == b"", answer[:100]
        elif answer:
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
            assert code_of(answer) == "RequestTimeout"
    assert metric(slow_server, "buckets_connections_timed_out_total", 'stage="header"') >= 36


def test_a_header_sent_slowly_within_the_timeout_is_served(slow_server: ServerProcess) -> None:
    head = signed_head(slow_server, "GET", "/", {})
    with connect(slow_server) as sock:
        for start in range(0, len(head), len(head) // 4 + 1):
            sock.sendall(head[start:start + len(head) // 4 + 1])
            time.sleep(HEADER_TIMEOUT / 8)
        status, _, body = read_response(sock)
    assert status == 200, body
    assert b"<ListAllMyBucketsResult" in body


# --- (b) connection limits ----------------------------------------------------------------------


def list_buckets_from(server: ServerProcess, source: str) -> tuple[int, bytes]:
    with connect(server, source=source) as sock:
        sock.sendall(signed_head(server, "GET", "/", {}))
        status, _, body = read_response(sock)
    return status, body


def refused(server: ServerProcess, source: str) -> bytes:
    """Connect from ``source`` and expect the 503 answer and the close, unasked."""
    with connect(server, source=source) as sock:
        data, closed = read_until_closed(sock, time.monotonic() + SLACK)
    assert closed, "an over-limit connection was left open"
    return data


def test_connection_limits_per_client_address_and_per_server(limited_server: ServerProcess) -> None:
    held: list[socket.socket] = []
    try:
        # Five connections from 127.0.0.1: its whole share.
        held += [connect(limited_server, source="127.0.0.1") for _ in range(5)]
        time.sleep(0.3)  # let the server admit them before the next one arrives
        answer = refused(limited_server, "127.0.0.1")
        assert answer.startswith(b"HTTP/1.1 503 ") and code_of(answer) == "SlowDown", answer
        # Another address is still served (one connection of its own at a time).
        status, body = list_buckets_from(limited_server, "127.0.0.2")
        assert status == 200, body

        # Fill the server: 5 + 3 = 8 connections; then even a new address is refused.
        held += [connect(limited_server, source="127.0.0.2") for _ in range(3)]
        time.sleep(0.3)
        answer = refused(limited_server, "127.0.0.3")
        assert answer.startswith(b"HTTP/1.1 503 ") and code_of(answer) == "SlowDown", answer

        # Freed connections are counted out: 127.0.0.1 is served again.
        for sock in held[:2]:
            sock.close()
        time.sleep(0.3)
        status, body = list_buckets_from(limited_server, "127.0.0.1")
        assert status == 200, body
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert metric(limited_server, "buckets_connections_refused_total", 'limit="client"') >= 1
    assert metric(limited_server, "buckets_connections_refused_total", 'limit="server"') >= 1
    assert metric(limited_server, "buckets_connections_max", "") == 8


def test_boto3_is_served_under_the_limits(limited_server: ServerProcess) -> None:
    s3 = limited_server.client()
    name = f"lim-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="k", Body=b"v" * 1000)
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"v" * 1000
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)


# --- (c) stalled and slow request bodies --------------------------------------------------------


@pytest.mark.parametrize("expect_continue", [False, True], ids=["plain", "100-continue"])
def test_a_stalled_upload_times_out_and_stores_nothing(slow_server: ServerProcess, slow_bucket: str,
                                                       expect_continue: bool) -> None:
    s3 = slow_server.client()
    before = disk_files(slow_server)
    headers = {"Content-Length": str(1_000_000)}
    if expect_continue:
        headers["Expect"] = "100-continue"
    with connect(slow_server) as sock:
        sock.sendall(signed_head(slow_server, "PUT", key_path(slow_bucket, "stalled"), headers))
        if expect_continue:
            interim = sock.recv(100)
            assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        sock.sendall(os.urandom(300_000))  # past the inline threshold: shard files are open
        sock.settimeout(BODY_TIMEOUT + SLACK)
        status, headers_out, body = read_response(sock)
    assert (status, code_of(body)) == (400, "RequestTimeout"), body
    assert headers_out.get("connection", "").lower() == "close"
    with pytest.raises(s3.exceptions.ClientError) as err:
        s3.head_object(Bucket=slow_bucket, Key="stalled")
    assert error_of(err)[1] == 404
    assert disk_files(slow_server) == before  # no object, no part, no temporary file left


def test_a_stalled_xml_body_times_out(slow_server: ServerProcess, slow_bucket: str) -> None:
    s3 = slow_server.client()
    s3.put_object(Bucket=slow_bucket, Key="keep", Body=b"x")
    document = b'<?xml version="1.0" encoding="UTF-8"?><Delete><Object><Key>keep</Key></Object></Delete>'
    md5 = base64.b64encode(hashlib.md5(document).digest()).decode()
    with connect(slow_server) as sock:
        sock.sendall(signed_head(slow_server, "POST", f"/{slow_bucket}",
                                 {"Content-Length": str(len(document)), "Content-MD5": md5}, query="delete="))
        sock.sendall(document[:20])
        sock.settimeout(BODY_TIMEOUT + SLACK)
        status, _, body = read_response(sock)
    assert (status, code_of(body)) == (400, "RequestTimeout"), body
    assert s3.get_object(Bucket=slow_bucket, Key="keep")["Body"].read() == b"x"


def test_a_slow_upload_that_keeps_sending_is_not_cut(slow_server: ServerProcess, slow_bucket: str) -> None:
    data = os.urandom(400_000)
    piece = 10_000  # 10 KB every 0.05 s: about 2 s in all, longer than the body timeout
    with connect(slow_server) as sock:
        sock.sendall(signed_head(slow_server, "PUT", key_path(slow_bucket, "slow-up"),
                                 {"Content-Length": str(len(data))}))
        for start in range(0, len(data), piece):
            sock.sendall(data[start:start + piece])
            time.sleep(BODY_TIMEOUT / 40)
        status, _, body = read_response(sock)
    assert status == 200, body
    got = slow_server.client().get_object(Bucket=slow_bucket, Key="slow-up")["Body"].read()
    assert hashlib.md5(got).digest() == hashlib.md5(data).digest()


# --- downloads: slow readers that read, and readers that stopped -------------------------------


def test_a_slow_download_that_keeps_reading_completes(slow_server: ServerProcess, slow_bucket: str) -> None:
    """Slower than the server can send, for longer than the body timeout: the server's
    buffers fill, and the kernel asks it for more only after the client drained a third of
    a send buffer of megabytes, seconds later. Reading on is progress all the same."""
    data = os.urandom(8 * 1024 * 1024)  # more than the server's buffers hold
    slow_server.client().put_object(Bucket=slow_bucket, Key="big", Body=data)
    received = bytearray()
    with connect(slow_server, rcvbuf=16384) as sock:
        sock.sendall(signed_head(slow_server, "GET", key_path(slow_bucket, "big"), {}))
        while b"\r\n\r\n" not in received:
            received += sock.recv(16384)
        head, _, rest = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        body = bytearray(rest)
        slow_until = time.monotonic() + BODY_TIMEOUT * 2.5
        while len(body) < len(data):
            piece = sock.recv(16384)
            assert piece, f"connection closed after {len(body)} of {len(data)} bytes"
            body += piece
            if time.monotonic() < slow_until:
                time.sleep(len(piece) / 400_000)  # about 400 KB/s, then as fast as it comes
    assert bytes(body) == data


def test_a_download_nobody_reads_is_dropped(slow_server: ServerProcess, slow_bucket: str) -> None:
    data = os.urandom(32 * 1024 * 1024)  # far more than both socket buffers hold
    slow_server.client().put_object(Bucket=slow_bucket, Key="unread", Body=data)
    with connect(slow_server, rcvbuf=4096) as sock:
        sock.sendall(signed_head(slow_server, "GET", key_path(slow_bucket, "unread"), {}))
        time.sleep(BODY_TIMEOUT * 1.5 + 2)  # read nothing: the server sees a stalled client
        received, closed = read_until_closed(sock, time.monotonic() + SLACK)
    assert closed, "the server kept the connection of a client that read nothing"
    assert len(received) < len(data)
    assert metric(slow_server, "buckets_connections_timed_out_total", 'stage="send"') >= 1


# --- (d) idle keep-alive connections ---------------------------------------------------------------


def test_an_idle_keep_alive_connection_outlives_the_header_timeout_then_closes(slow_server: ServerProcess) -> None:
    with connect(slow_server) as sock:
        sock.sendall(signed_head(slow_server, "GET", "/", {}))
        status, _, _ = read_response(sock)
        assert status == 200
        # Idle for longer than the header timeout: that clock only starts with a request's
        # first byte, so the connection is still good for a second request.
        time.sleep(HEADER_TIMEOUT + 1)
        sock.sendall(signed_head(slow_server, "GET", "/", {}))
        status, _, _ = read_response(sock)
        assert status == 200
        data, closed = read_until_closed(sock, time.monotonic() + IDLE_TIMEOUT + SLACK)
    assert closed and data == b""  # closed silently, as an idle connection is
