"""An HTTP fuzzer for the real server process: generated requests over raw sockets.

Each *exchange* is one TCP connection carrying bytes built here, byte by byte: a method
(S3's, others, junk), a request target (path- and virtual-host-style, odd bytes and
percent-escapes, dot segments, absolute form), a query (S3 sub-resources, numeric
parameters with odd numbers, listing parameters), headers (Range, Content-Length,
Content-MD5, x-amz-*, conditionals, checksums), authentication (SigV4 signed by
botocore with the root credentials so requests reach the handlers, presigned, SigV2,
signed aws-chunked streaming, garbage, a wrong secret, none), a body (XML documents for
DeleteObjects, CompleteMultipartUpload, CreateBucket and the other configurations, with
hostile variants: deep nesting, DTDs, entities, long comments, UTF-16; random bytes) and
a framing (Content-Length, chunked, aws-chunked with trailers, truncated, Expect:
100-continue, two pipelined requests, conflicting lengths, HTTP/1.0).

The fuzzer keeps what the server tells it (objects written, upload ids, part ETags) and
uses it in later requests, so multipart completion, copies and ranged reads on real
objects are exercised, not only refusals.

A finding is:
* a 5xx answer (every one: the fuzzer holds at most ``workers`` connections, far below
  any connection limit, so nothing justifies 503 SlowDown) except ``501 NotImplemented``,
  S3's own answer for a feature this server does not have (counted on its own);
* a traceback or "unhandled error" in the server log;
* a hang: no complete answer within ``timeout`` seconds of the request being sent;
* a crash: the server process exited.

A connection the server closes without an answer is counted, not failed: that is what
aiohttp does when a client half-closes, which the fuzzer does on purpose after a
truncated body. Findings are grouped into classes (status and S3 code, or the
exception a traceback ends with) with one example request each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import re
import socket
import sys
import threading
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from botocore.auth import HmacV1Auth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from serverproc import PYTHON, free_port, server_env, spawn, stop, wait_listening

ROOT_USER = "fuzz-admin"
ROOT_PASSWORD = "fuzz-secret-0123456789"
REGION = "us-east-1"
DOMAIN = "s3.fuzz.test"  # virtual-host-style: <bucket>.s3.fuzz.test
BUCKETS = ("fuzz-one", "fuzz-two")  # created before the run; the fuzzer also tries to make others
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SETTINGS = {"BUCKETS_ROOT_USER": ROOT_USER, "BUCKETS_ROOT_PASSWORD": ROOT_PASSWORD, "BUCKETS_SYNC": "off",
             "BUCKETS_LOG_FORMAT": "console", "BUCKETS_SCANNER_RATE": "0"}


# --- the server ------------------------------------------------------------------------------


@dataclass
class FuzzServer:
    proc: object
    port: int
    log_path: Path

    @property
    def hosts(self) -> list[str]:
        """The addresses requests go to (every one serves the same port)."""
        return ["127.0.0.1"]

    @property
    def log_paths(self) -> list[Path]:
        return [self.log_path]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None  # type: ignore[attr-defined]

    def exit_status(self) -> str:
        return f"server exited with {self.proc.returncode}"  # type: ignore[attr-defined]


@dataclass
class FuzzCluster:
    """A cluster of ``buckets server`` processes on 127.0.0.1-127.0.0.N, one port: each
    fuzzing worker sends its requests to one node (worker i to node i mod N), so a bucket
    made or an object written through one node is read, copied or deleted through others."""

    cluster: object  # tests/cluster/clusterproc.Cluster

    @property
    def port(self) -> int:
        return self.cluster.port  # type: ignore[attr-defined]

    @property
    def hosts(self) -> list[str]:
        return [self.cluster.host(i) for i in sorted(self.cluster.procs)]  # type: ignore[attr-defined]

    @property
    def log_paths(self) -> list[Path]:
        return [self.cluster.logs[i] for i in sorted(self.cluster.procs)]  # type: ignore[attr-defined]

    def log_text(self) -> str:
        return "\n".join(f"--- node {i} ({path}) ---\n" + path.read_text(errors="replace")
                         for i, path in enumerate(self.log_paths, 1))

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.cluster.procs.values())  # type: ignore[attr-defined]

    def exit_status(self) -> str:
        return "; ".join(f"node {i} exited with {proc.returncode}"
                         for i, proc in sorted(self.cluster.procs.items())  # type: ignore[attr-defined]
                         if proc.poll() is not None) or "every node is running"


def start_server(base: Path, extra_env: dict[str, str] | None = None) -> FuzzServer:
    """``python -m buckets server`` over four disks (2 data + 2 parity), as a user runs it."""
    port = free_port()
    disks = [str(base / "data" / f"disk{i}") for i in range(1, 5)]
    log_path = base / "server.log"
    env = server_env(_SETTINGS, extra_env)
    cmd = [PYTHON, "-m", "buckets", "server", "--address", f"127.0.0.1:{port}", "--domain", DOMAIN, *disks]
    proc = spawn(cmd, env, log_path, base)
    if not wait_listening(proc, port, log_path):
        raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
    return FuzzServer(proc, port, log_path)


def start_cluster(base: Path, nodes: int = 4, disks: int = 2) -> FuzzCluster:
    """A ``nodes``-node cluster (``disks`` disks each) with the single server's settings,
    started and healthy (every node sees every disk)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
    from clusterproc import Cluster  # tests/cluster is not a package

    cluster = Cluster(base, nodes=nodes, disks=disks, extra_env=_SETTINGS, extra_args=("--domain", DOMAIN))
    cluster.start()
    try:
        cluster.wait_healthy()
    except BaseException:
        cluster.stop_all()
        raise
    return FuzzCluster(cluster)


def stop_server(server: FuzzServer | FuzzCluster) -> int:
    """Stop by process id; the worst exit code (0 when every process stopped cleanly)."""
    if isinstance(server, FuzzCluster):
        return max((stop(proc) or 0 for proc in server.cluster.procs.values()), default=0)  # type: ignore[attr-defined]
    return stop(server.proc)  # type: ignore[arg-type]


# --- signing (botocore's signers, as boto3 uses them) -----------------------------------------


def _aws_request(method: str, url: str, headers: dict[str, str], body: bytes) -> AWSRequest:
    return AWSRequest(method=method, url=url, headers=dict(headers), data=body)


def _merged(headers: dict[str, str], signed: dict[str, str]) -> dict[str, str]:
    """``headers`` updated with what a signer returned, names compared case-insensitively
    (botocore writes ``X-Amz-Content-SHA256`` where the caller may have ``x-amz-content-sha256``;
    sending both would send the header twice)."""
    replaced = {name.lower() for name in signed}
    return {**{n: v for n, v in headers.items() if n.lower() not in replaced}, **signed}


def sign_v4(method: str, url: str, headers: dict[str, str], body: bytes, *,
            secret: str = ROOT_PASSWORD) -> dict[str, str]:
    """Headers with botocore's SigV4 Authorization (x-amz-content-sha256 kept if given)."""
    request = _aws_request(method, url, headers, body)
    token = headers.get("x-amz-content-sha256")
    if token == "UNSIGNED-PAYLOAD":
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    elif token == "STREAMING-UNSIGNED-PAYLOAD-TRAILER":
        request.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32",
                                                             "name": "x-amz-checksum-crc32"}}
    S3SigV4Auth(Credentials(ROOT_USER, secret), "s3", REGION).add_auth(request)
    return dict(request.headers.items())


def presign_v4(method: str, url: str, headers: dict[str, str], expires: int) -> tuple[str, dict[str, str]]:
    """(target, headers) of a botocore presigned URL (generate_presigned_url)."""
    request = _aws_request(method, url, headers, b"")
    S3SigV4QueryAuth(Credentials(ROOT_USER, ROOT_PASSWORD), "s3", REGION, expires=expires).add_auth(request)
    parts = urlsplit(request.prepare().url)
    return parts.path + (f"?{parts.query}" if parts.query else ""), dict(request.headers.items())


def sign_v2(method: str, url: str, headers: dict[str, str], body: bytes, auth_path: str) -> dict[str, str]:
    request = _aws_request(method, url, headers, body)
    request.auth_path = auth_path
    HmacV1Auth(Credentials(ROOT_USER, ROOT_PASSWORD)).add_auth(request)
    return dict(request.headers.items())


class _StreamingSigV4(S3SigV4Auth):
    """botocore's S3 signer with the payload hash fixed to STREAMING-AWS4-HMAC-SHA256-PAYLOAD."""

    def payload(self, request: AWSRequest) -> str:
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_chunks(data: bytes, sizes: list[int], headers: dict[str, str], tamper: int | None) -> bytes:
    """aws-chunked body with chained chunk signatures (STREAMING-AWS4-HMAC-SHA256-PAYLOAD),
    seeded from the request signature in ``headers``; chunk ``tamper`` gets a flipped byte."""
    amz_date = headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + ROOT_PASSWORD).encode(), amz_date[:8]), REGION), "s3"), "aws4_request")
    previous = headers["Authorization"].rsplit("Signature=", 1)[1]
    out, offset = bytearray(), 0
    for index, size in enumerate([*sizes, 0]):
        chunk = data[offset:offset + size]
        offset += size
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256,
                             hashlib.sha256(chunk).hexdigest()])
        previous = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if tamper == index and chunk:
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
    return bytes(out)


# --- what a request is made of ----------------------------------------------------------------

NUMBERS = ["0", "1", "2", "3", "-1", "10000", "10001", "1000", "1001", "2147483648", "9223372036854775808",
           "1e3", "0x10", " 7", "7 ", "+1", "007", "1.5", "", "\u0663", "\u00b2", "9" * 40, "9" * 5000, "NaN"]
SUBRESOURCES = ["uploads", "acl", "tagging", "versioning", "versions", "location", "delete", "attributes",
                "policy", "cors", "lifecycle", "website", "select&select-type=2", "torrent", "restore",
                "legal-hold", "retention", "object-lock", "notification", "logging", "encryption",
                "replication", "requestPayment", "accelerate", "publicAccessBlock", "ownershipControls"]
KEYS = ["k", "dir/k", "dir/sub/k", "a/../b", "../x", "/lead", "trail/", "a//b", "%2F", "a%2Fb", "%0A", "a%0Ab",
        "%0D%0A", "%00", "%09", "%7F", "%FF", "%C3%A9", "%E2%98%83", "%F0%9F%98%80", "sp%20ace", "+plus",
        "~tilde", "*", ".", "..", "%2e%2e", "%2E", "a%5Cb", "%22%27%3C%3E%26", "x" * 300, "y" * 1025,
        "%25", "%", "%zz", "?", "%3F", "#", "%23", ";", ":", "@", "=", "k%20", "%20k", "%C0%AF", "%ED%A0%80"]
BUCKET_NAMES = ["no-such-bucket", "ab", "a" * 64, "UPPER", "x..y", "192.168.1.1", "-x-", "x-", "a_b",
                "%2e%2e", "xn--abc", "fuzz-one%0A", "fuzz%2Fone", "%C3%A9tude", "b.", ".b", "fuzz-new-1",
                "fuzz-new-2", "a" * 63, "sthree-x", "x-s3alias", "..", "."]
METHODS = ["GET"] * 6 + ["HEAD"] * 3 + ["PUT"] * 6 + ["POST"] * 4 + ["DELETE"] * 3 + [
    "OPTIONS", "PATCH", "TRACE", "CONNECT", "get", "FOO", "PROPFIND", "MKCOL", "M-SEARCH"]
RANGES = ["bytes=0-0", "bytes=0-", "bytes=-1", "bytes=-5", "bytes=5-", "bytes=0-4", "bytes=3-1", "bytes=a-b",
          "bytes=0-1,3-4", "bytes=-0", "bytes= 1-2", "items=0-1", "", "bytes=", "bytes=-", "bytes=10000000-",
          "bytes=0-99999999999999999999", "bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000,
          "bytes=-" + "9" * 5000, "bytes=1-1-1", "bytes=\u00b2-3", "BYTES=0-1"]
XML_ATTACKS = ("deep", "dtd", "entity", "comment-dtd", "utf16", "truncated", "wrong-root", "pi", "bom", "cdata",
               "latin1", "binary", "huge-text", "namespace", "many")


def wire_key(key: str) -> str:
    """A key as it goes in a path: entries of KEYS holding a ``%`` are already written
    percent-encoded (``%0A``, ``%zz``: odd encodings on purpose), the others are quoted.
    The fuzzer keeps keys in this form; ``unquote`` gives the key itself."""
    return key if "%" in key else quote(key, safe="/~")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md5_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def _crc32_b64(body: bytes) -> str:
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()


_RUN = re.compile(rb"(.)\1{31,}", re.DOTALL)


@dataclass
class Exchange:
    """One connection's worth of bytes, and how to drive it."""

    label: str
    head: bytes
    body_parts: list[bytes] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)  # one per response to read (HEAD has no body)
    expect_continue: bool = False  # wait for 100 Continue (or a final answer) before the body
    truncated: bool = False  # the request is deliberately incomplete: half-close after sending
    operation: str = ""  # what the fuzzer was aiming at (to learn from the answer)
    bucket: str = ""
    key: str = ""
    upload_id: str = ""
    part_number: int = 0

    def wire(self, limit: int = 1500) -> bytes:
        """The bytes sent, for a report: runs of one byte shortened (``9<x5000>``), capped."""
        data = _RUN.sub(lambda m: m.group(1) + f"<x{len(m.group(0))}>".encode(), self.head + b"".join(self.body_parts))
        return data if len(data) <= limit else data[:limit] + f"...<{len(data) - limit} more bytes>".encode()


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str:
        m = re.search(rb"<Code>([^<]{0,80})</Code>", self.body)
        if m:
            return m.group(1).decode("utf-8", "replace")
        return "(plain text)" if self.body else "(empty)"


class Known:
    """What the server told the fuzzer: objects that exist (keys as in paths, see
    ``wire_key``), uploads in progress, part ETags."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: list[tuple[str, str]] = [(b, "k") for b in BUCKETS]
        self.uploads: list[tuple[str, str, str]] = []  # (bucket, key, upload id)
        self.parts: dict[str, list[tuple[int, str]]] = {}  # upload id -> [(part number, ETag)]

    def learn(self, exchange: Exchange, response: Response) -> None:
        if response.status != 200:
            return
        with self.lock:
            if exchange.operation == "PutObject" and exchange.key:
                if (exchange.bucket, exchange.key) not in self.objects:
                    self.objects.append((exchange.bucket, exchange.key))
                    del self.objects[:-200]
            elif exchange.operation == "CreateMultipartUpload":
                m = re.search(rb"<UploadId>([^<]+)</UploadId>", response.body)
                if m:
                    self.uploads.append((exchange.bucket, exchange.key, m.group(1).decode()))
                    del self.uploads[:-50]
            elif exchange.operation == "UploadPart" and "etag" in response.headers:
                parts = self.parts.setdefault(exchange.upload_id, [])
                parts.append((exchange.part_number, response.headers["etag"]))
                del parts[:-20]

    def some_object(self, rng: random.Random) -> tuple[str, str]:
        with self.lock:
            return rng.choice(self.objects)

    def some_upload(self, rng: random.Random) -> tuple[str, str, str] | None:
        with self.lock:
            return rng.choice(self.uploads) if self.uploads else None

    def parts_of(self, upload_id: str) -> list[tuple[int, str]]:
        with self.lock:
            return list(self.parts.get(upload_id, []))


class Generator:
    """Builds exchanges from one ``random.Random``: the same seed gives the same requests
    (given the same answers from the server, which decide upload ids and ETags)."""

    def __init__(self, rng: random.Random, port: int, known: Known) -> None:
        self.rng = rng
        self.port = port
        self.known = known

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # -- target -----------------------------------------------------------------------------

    def _key(self) -> str:
        """A key as it appears in a path (see ``wire_key``)."""
        r = self.rng
        if self.chance(0.4):
            return self.known.some_object(r)[1] if self.chance(0.5) else "k"
        key = r.choice(KEYS)
        if self.chance(0.3):
            key = r.choice(["dir/", "a/", ""]) + key + r.choice(["", "/x", ".txt"])
        return wire_key(key)

    def _bucket(self) -> str:
        return self.rng.choice(BUCKETS) if self.chance(0.85) else self.rng.choice(BUCKET_NAMES)

    def target(self, shape: str) -> tuple[str, str, str, str]:
        """(path, Host header, bucket, key) for ``shape``: service, bucket or object."""
        r = self.rng
        host = f"127.0.0.1:{self.port}"
        bucket = self._bucket() if shape != "service" else ""
        key = self._key() if shape == "object" else ""
        if shape == "service":
            path = r.choice(["/", "/", "//", "/?", "/%2F", "*", "/.", "/.."])
        elif self.chance(0.15):  # virtual-host-style
            host = f"{bucket}.{DOMAIN}:{self.port}"
            path = "/" + key
        else:
            path = f"/{bucket}" + (f"/{key}" if shape == "object" else r.choice(["", "", "/"]))
        if self.chance(0.03):  # absolute form, as a proxy would send it
            path = f"http://{host}{path}"
        if self.chance(0.03):  # bytes a request line may not carry
            path += r.choice(["\u00e9", " x", "\t", "\x7f", "\\", "\"", "{}", "|", "^", "`"])
        return path, host, bucket, key

    def query(self, operation_hint: str, upload_id: str | None, part_number: int) -> list[str]:
        r = self.rng
        params: list[str] = []
        if operation_hint == "multipart-create":
            params.append("uploads")
        elif operation_hint in ("multipart-part", "multipart-complete", "multipart-list", "multipart-abort"):
            params.append("uploadId=" + quote(upload_id or r.choice(["", "nonexistent", "..%2F..", "%00"]),
                                              safe=""))
            if operation_hint == "multipart-part":
                params.append(f"partNumber={part_number if self.chance(0.8) else r.choice(NUMBERS)}")
        elif operation_hint == "delete":
            params.append("delete")
        elif operation_hint == "listing":
            params.extend(self._listing_params())
        for _ in range(r.choice([0, 0, 0, 1, 1, 2])):
            params.append(self._any_param())
        return params

    def _listing_params(self) -> list[str]:
        r = self.rng
        params = []
        if self.chance(0.6):
            params.append("list-type=" + r.choice(["2", "2", "1", "3", ""]))
        for name, values in (("prefix", ["", "dir/", "a", "%2F", "%00", "%0A", "%FF"]),
                             ("delimiter", ["/", "", "%2F", "ab", "%00", "%0A"]),
                             ("max-keys", NUMBERS), ("start-after", ["k", "%FF", "x" * 1100]),
                             ("marker", ["k", "", "%C3%A9"]),
                             ("continuation-token", ["", "AAAA", "!!!", "eyJ4IjoxfQ==", "x" * 2000]),
                             ("encoding-type", ["url", "URL", "junk", ""]), ("fetch-owner", ["true", "x"]),
                             ("versions", [""]), ("key-marker", ["k", ""]), ("version-id-marker", ["null", "x"])):
            if self.chance(0.25):
                params.append(f"{name}={r.choice(values)}")
        return params

    def _any_param(self) -> str:
        r = self.rng
        kind = r.randrange(8)
        if kind == 0:
            return r.choice(SUBRESOURCES)
        if kind == 1:
            name = r.choice(["partNumber", "max-keys", "max-uploads", "max-parts", "part-number-marker",
                             "upload-id-marker", "X-Amz-Expires", "Expires"])
            return f"{name}={quote(r.choice(NUMBERS), safe='')}"
        if kind == 2:
            return f"versionId={r.choice(['null', 'x', '', '%00', 'a' * 200])}"
        if kind == 3:
            return (f"response-{r.choice(['content-type', 'content-disposition', 'cache-control', 'expires'])}"
                    f"={r.choice(['text/plain', 'attachment%3B%20filename%3D%22x%22', '%0D%0AX-Evil%3A%201', ''])}")
        if kind == 4:
            return r.choice(["=", "&", "a=%zz", "%ff=1", "a=%", "%00=%00", "x-id=GetObject", "a=b=c", "=v"])
        if kind == 5:
            return r.choice(["X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Signature=00",
                             "X-Amz-Credential=x%2Fy", "X-Amz-Date=20240101T000000Z", "AWSAccessKeyId=x",
                             "Signature=x", "X-Amz-SignedHeaders=host", "X-Amz-Security-Token=x"])
        if kind == 6:
            return "uploadId=" + r.choice(["x", "", "%2F..%2F"])
        return r.choice(["prefix=dir/", "delimiter=/", "encoding-type=url", "list-type=2", "attributes"])

    # -- headers ----------------------------------------------------------------------------

    def headers(self, body: bytes, operation_hint: str) -> dict[str, str]:
        r = self.rng
        h: dict[str, str] = {}
        if operation_hint in ("get", "head") or self.chance(0.1):
            if self.chance(0.5):
                h["Range"] = r.choice(RANGES)
        if self.chance(0.3) or operation_hint == "delete":
            h["Content-MD5"] = r.choice([_md5_b64(body)] * 6 + ["", "!!!", "AAAA", _md5_b64(body + b"x"),
                                                                 base64.b64encode(b"short").decode()])
        if operation_hint == "copy" or self.chance(0.05):
            bucket, key = self.known.some_object(r)
            h["x-amz-copy-source"] = r.choice([f"/{bucket}/{key}", f"{bucket}/{quote(key, safe='')}",
                                               f"{bucket}/{key}?versionId=null", "/", "%", "nosuch/k", "/b",
                                               f"/{bucket}/", f"/{bucket}/%FF", f"/{bucket}/%0A"])
            if self.chance(0.4):
                h["x-amz-copy-source-range"] = r.choice(RANGES)
            if self.chance(0.3):
                h["x-amz-metadata-directive"] = r.choice(["COPY", "REPLACE", "junk", ""])
            for name in ("x-amz-copy-source-if-match", "x-amz-copy-source-if-none-match",
                         "x-amz-copy-source-if-modified-since", "x-amz-copy-source-if-unmodified-since"):
                if self.chance(0.05):
                    h[name] = r.choice(["*", '"x"', "Mon, 01 Jan 2024 00:00:00 GMT", "garbage"])
        for _ in range(r.choice([0, 0, 1, 2, 3])):
            name, value = self._any_header(body)
            h[name] = value
        return h

    def _any_header(self, body: bytes) -> tuple[str, str]:
        r = self.rng
        kind = r.randrange(14)
        if kind == 0:
            name = r.choice(["a", "Mixed-Case", "x" * 200, "with.dot", "\u00e9", "_"])
            return f"x-amz-meta-{name}", r.choice(["v", "", " padded ", "\u00e9\u2603", "x" * 3000, "=?utf-8?b?w6k=?="])
        if kind == 1:
            return r.choice(["If-Match", "If-None-Match"]), r.choice(["*", '"x"', '""', "x", '"a", "b"'])
        if kind == 2:
            return (r.choice(["If-Modified-Since", "If-Unmodified-Since"]),
                    r.choice(["Mon, 01 Jan 2024 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "garbage", "0"]))
        if kind == 3:
            algorithm = r.choice(["crc32", "crc32c", "sha1", "sha256", "crc64nvme", "md5"])
            value = _crc32_b64(body) if algorithm == "crc32" and self.chance(0.5) else r.choice(["AAAAAA==", "!", ""])
            return f"x-amz-checksum-{algorithm}", value
        if kind == 4:
            return "x-amz-sdk-checksum-algorithm", r.choice(["CRC32", "SHA256", "junk", ""])
        if kind == 5:
            return r.choice(["x-amz-max-parts", "x-amz-part-number-marker"]), r.choice(NUMBERS)
        if kind == 6:
            return "x-amz-object-attributes", r.choice(["ETag", "ObjectSize,StorageClass", "Junk", "", "ETag," * 50])
        if kind == 7:
            return r.choice(["x-amz-tagging", "x-amz-acl", "x-amz-storage-class", "x-amz-server-side-encryption",
                             "x-amz-website-redirect-location", "x-amz-request-payer",
                             "x-amz-expected-bucket-owner", "x-amz-bucket-object-lock-enabled",
                             "x-amz-object-lock-mode", "x-amz-grant-read"]), r.choice(
                ["a=b", "private", "STANDARD", "GLACIER", "AES256", "aws:kms", "/x", "requester", "junk", "", "true"])
        if kind == 8:
            return r.choice(["Content-Type", "Content-Encoding", "Cache-Control", "Content-Disposition",
                             "Content-Language", "Expires"]), r.choice(
                ["text/plain", "gzip", "aws-chunked", "no-cache", "attachment", "", "\u00e9", "x" * 100])
        if kind == 9:
            return r.choice(["x-amz-date", "Date"]), r.choice(
                ["20240101T000000Z", "garbage", "Mon, 01 Jan 2024 00:00:00 GMT", "", "99991231T235959Z"])
        if kind == 10:
            return "x-amz-decoded-content-length", r.choice(NUMBERS)
        if kind == 11:
            return "X-Fuzz-Long", "v" * r.choice([100, 9000, 17000])  # over 16 KiB: aiohttp refuses the line
        if kind == 12:
            return r.choice(["Connection", "Keep-Alive", "Upgrade", "TE", "Trailer"]), r.choice(
                ["close", "keep-alive", "Upgrade", "websocket", "h2c", "trailers", "x-amz-checksum-crc32"])
        return r.choice(["x-amz-content-sha256", "x-amz-security-token", "Authorization"]), r.choice(
            ["UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "e" * 64, "x", ""])

    # -- bodies -----------------------------------------------------------------------------

    def random_bytes(self) -> bytes:
        r = self.rng
        sizes = [0, 1, 5, 100, 4096, 65536, r.randrange(1, 300_000)]
        size = 3 * 2**20 if self.chance(0.01) else r.choice(sizes)  # rarely, several erasure blocks
        return r.randbytes(size)

    def delete_xml(self) -> bytes:
        r = self.rng
        objects = []
        for _ in range(r.choice([0, 1, 2, 5])):
            key = unquote(self.known.some_object(r)[1] if self.chance(0.5) else wire_key(r.choice(KEYS)))
            version = f"<VersionId>{r.choice(['null', 'x'])}</VersionId>" if self.chance(0.1) else ""
            objects.append(f"<Object><Key>{_xml_escape(key)}</Key>{version}</Object>")
        quiet = f"<Quiet>{r.choice(['true', 'false', 'maybe'])}</Quiet>" if self.chance(0.3) else ""
        return self._maybe_attack(("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                                   "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                                   f"{quiet}{''.join(objects)}</Delete>"), "Delete", "Object")

    def complete_xml(self, upload_id: str | None) -> bytes:
        r = self.rng
        parts = self.known.parts_of(upload_id) if upload_id else []
        if not parts or self.chance(0.3):
            parts = [(r.choice([1, 2, 0, -1, 10001]), r.choice(['"x"', "", '"d41d8cd98f00b204e9800998ecf8427e"']))
                     for _ in range(r.choice([0, 1, 2]))]
        if self.chance(0.2):
            r.shuffle(parts)
        text = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{_xml_escape(e)}</ETag></Part>" for n, e in parts)
        return self._maybe_attack(f"<CompleteMultipartUpload>{text}</CompleteMultipartUpload>",
                                  "CompleteMultipartUpload", "Part")

    def create_bucket_xml(self) -> bytes:
        location = self.rng.choice(["", REGION, "eu-west-1", "EU", "x" * 100, "<a/>"])
        return self._maybe_attack("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                                  f"<LocationConstraint>{location}</LocationConstraint></CreateBucketConfiguration>",
                                  "CreateBucketConfiguration", "LocationConstraint")

    def config_xml(self) -> bytes:
        root = self.rng.choice(["VersioningConfiguration", "Tagging", "AccessControlPolicy", "CORSConfiguration"])
        return self._maybe_attack(f"<{root}><Status>Enabled</Status></{root}>", root, "Status")

    def _maybe_attack(self, document: str, root: str, child: str) -> bytes:
        r = self.rng
        if not self.chance(0.35):
            return document.encode()
        attack = r.choice(XML_ATTACKS)
        if attack == "deep":
            depth = r.choice([50, 500, 1000, 5000, 20000])
            return f"<{root}>{'<a>' * depth}{'</a>' * depth}</{root}>".encode()
        if attack == "dtd":
            return (f"<!DOCTYPE {root} [<!ELEMENT {root} ANY>]>" + document).encode()
        if attack == "entity":
            return (f"<!DOCTYPE {root} [<!ENTITY e SYSTEM \"file:///etc/passwd\"><!ENTITY x \"xx\">]>"
                    + document.replace(f"</{root}>", f"<{child}>&e;&x;</{child}></{root}>")).encode()
        if attack == "comment-dtd":
            return (f"<!--{'c' * r.choice([100, 5000, 70000])}-->"
                    f"<!DOCTYPE {root} SYSTEM \"file:///etc/passwd\">" + document).encode()
        if attack == "utf16":
            return ("<?xml version=\"1.0\" encoding=\"UTF-16\"?>"
                    + (f"<!DOCTYPE {root} [<!ENTITY x \"xx\">]>" if self.chance(0.5) else "")
                    + document.replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "")).encode("utf-16")
        if attack == "truncated":
            data = document.encode()
            return data[:r.randrange(len(data))]
        if attack == "wrong-root":
            return document.replace(root, "Other").encode()
        if attack == "pi":
            return document.replace(f"</{root}>", f"<?php evil ?></{root}>").encode()
        if attack == "bom":
            return b"\xef\xbb\xbf" + document.encode()
        if attack == "cdata":
            return document.replace(f"</{root}>", f"<{child}><![CDATA[<x>]]></{child}></{root}>").encode()
        if attack == "latin1":
            return document.replace(f"</{root}>", f"<{child}>\u00e9</{child}></{root}>").encode(
                "latin-1", "xmlcharrefreplace")
        if attack == "binary":
            return self.rng.randbytes(self.rng.choice([1, 10, 1000]))
        if attack == "huge-text":
            text = "x" * r.choice([10000, 2_000_000])
            return document.replace(f"</{root}>", f"<{child}>{text}</{child}></{root}>").encode()
        if attack == "namespace":
            return document.replace(f"<{root}", f"<ns:{root} xmlns:ns=\"urn:x\"").replace(
                f"</{root}>", f"</ns:{root}>").encode()
        # "many": more elements than any S3 limit (DeleteObjects takes at most 1000)
        items = "".join(f"<{child}><Key>k{i}</Key><PartNumber>{i}</PartNumber></{child}>" for i in range(1001))
        return document.replace(f"</{root}>", items + f"</{root}>").encode()

    # -- one exchange -----------------------------------------------------------------------

    def housekeeping(self) -> list[Exchange]:
        """Signed requests that bring back what fuzzing may have deleted: the buckets and
        their object ``k`` (so later requests keep reaching object handlers)."""
        out = []
        host = f"127.0.0.1:{self.port}"
        for bucket in BUCKETS:
            for path, body in ((f"/{bucket}", b""), (f"/{bucket}/k", b"fuzz object k")):
                headers = sign_v4("PUT", f"http://{host}{path}", {"Content-Length": str(len(body))}, body)
                out.append(Exchange(f"PUT {path} (housekeeping)",
                                    self._head("PUT", path, host, headers, "HTTP/1.1"), [body] if body else [],
                                    ["PUT"]))
        return out

    def exchange(self) -> Exchange:
        r = self.rng
        method = r.choice(METHODS)
        intent = self._intent(method)
        shape = {"service": "service", "listing": "bucket", "create-bucket": "bucket", "bucket": "bucket",
                 "delete": "bucket"}.get(intent, "object")
        path, host, bucket, key = self.target(shape)
        upload = self.known.some_upload(r) if intent.startswith("multipart-") and intent != "multipart-create" else None
        if upload is not None and self.chance(0.85):
            bucket, key, upload_id = upload
            host = f"127.0.0.1:{self.port}"
            path = f"/{bucket}/{key}"
        else:
            upload_id = None
        part_number = r.choice([1, 1, 2, 3, 10000])
        params = self.query(intent, upload_id, part_number)
        body = self._body(intent, upload_id)
        headers = self.headers(body, intent)
        target = path + ("?" + "&".join(params) if params else "")
        operation = {"put": "PutObject", "multipart-create": "CreateMultipartUpload",
                     "multipart-part": "UploadPart"}.get(intent, "")
        exchange = self._frame(method, target, host, headers, body, path)
        exchange.operation = operation if method == "PUT" or intent == "multipart-create" else ""
        exchange.bucket, exchange.key = bucket, key
        exchange.upload_id, exchange.part_number = upload_id or "", part_number
        return exchange

    def _intent(self, method: str) -> str:
        r = self.rng
        if method == "GET":
            return r.choice(["get", "get", "listing", "listing", "service", "multipart-list"])
        if method == "HEAD":
            return r.choice(["head", "head", "bucket"])
        if method == "PUT":
            return r.choice(["put", "put", "put", "copy", "create-bucket", "multipart-part", "multipart-part"])
        if method == "POST":
            return r.choice(["delete", "multipart-create", "multipart-complete", "multipart-complete", "other"])
        if method == "DELETE":
            return r.choice(["delete-object", "delete-object", "multipart-abort", "bucket"])
        return r.choice(["get", "bucket", "service"])

    def _body(self, intent: str, upload_id: str | None) -> bytes:
        r = self.rng
        if self.chance(0.05):
            return self.random_bytes()
        if intent == "delete":
            return self.delete_xml()
        if intent == "multipart-complete":
            return self.complete_xml(upload_id)
        if intent == "create-bucket":
            return self.create_bucket_xml() if self.chance(0.5) else b""
        if intent in ("put", "multipart-part"):
            return self.random_bytes()
        if intent == "bucket" and self.chance(0.2):
            return self.config_xml()
        return b"" if self.chance(0.9) else r.randbytes(r.choice([1, 100]))

    # -- auth and framing -------------------------------------------------------------------

    def _frame(self, method: str, target: str, host: str, headers: dict[str, str], body: bytes,
               path: str) -> Exchange:
        r = self.rng
        framing = r.choices(["length", "chunked", "aws-chunked", "aws-signed", "truncated", "truncated-chunked",
                             "expect", "pipelined", "conflict", "bad-chunk", "http10", "no-length", "partial-head"],
                            weights=[40, 8, 8, 5, 4, 3, 8, 5, 2, 2, 3, 2, 1])[0]
        auth = r.choices(["v4", "v4-unsigned", "presign", "v2", "garbage", "wrong-secret", "anonymous"],
                         weights=[30, 15, 7, 6, 14, 5, 23])[0]
        label = f"{method} {framing} {auth}"
        sent = dict(headers)
        wire_body = body
        sizes = self._sizes(len(body))
        if framing == "chunked":
            sent["Transfer-Encoding"] = "chunked"
            wire_body = self._chunked(body, final=True)
        elif framing in ("aws-chunked", "aws-signed"):
            sent["Content-Encoding"] = "aws-chunked"
            sent["x-amz-decoded-content-length"] = str(len(body)) if self.chance(0.9) else r.choice(NUMBERS)
            if framing == "aws-chunked":
                sent["x-amz-content-sha256"] = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
                sent["x-amz-trailer"] = "x-amz-checksum-crc32"
                wire_body = self._aws_chunked_unsigned(body)
            else:
                sent["x-amz-content-sha256"] = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
                sent["Content-Length"] = str(sum(len(f"{size:x};chunk-signature=") + 64 + 4 + size
                                                 for size in [*sizes, 0]))  # signatures are fixed-width
                auth = "v4-streaming"
                label = f"{method} {framing} {auth}"
        elif framing == "truncated-chunked":
            sent["Transfer-Encoding"] = "chunked"
            wire_body = self._chunked(body, final=False)
        elif framing == "bad-chunk":
            sent["Transfer-Encoding"] = "chunked"
            wire_body = r.choice([b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhello0\r\n\r\n", b"-1\r\n\r\n",
                                  b"ffffffffffffffffffff\r\n", b"5;" + b"e" * 9000 + b"\r\nhello\r\n0\r\n\r\n"])
        elif framing == "conflict":
            sent["Transfer-Encoding"] = "chunked"
            sent["Content-Length"] = str(len(body))
            wire_body = self._chunked(body, final=True)
        if "Content-Length" not in sent and "Transfer-Encoding" not in sent and framing != "no-length":
            if framing == "truncated":
                sent["Content-Length"] = str(len(wire_body) + r.choice([1, 100, 10**6]))
            elif wire_body or method in ("PUT", "POST") or self.chance(0.2):
                sent["Content-Length"] = str(len(wire_body)) if self.chance(0.97) else r.choice(NUMBERS)
        if framing == "expect":
            sent["Expect"] = r.choice(["100-continue"] * 9 + ["200-ok"])
        if "x-amz-content-sha256" not in sent and auth == "v4-unsigned":
            sent["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        if framing in ("chunked", "truncated-chunked", "bad-chunk", "conflict") and auth == "v4":
            sent.setdefault("x-amz-content-sha256", "UNSIGNED-PAYLOAD")  # botocore would hash the chunked bytes
        target, sent = self._authenticate(auth, method, target, host, sent, body, path)
        if framing == "aws-signed":
            if "Signature=" in sent.get("Authorization", "") and "X-Amz-Date" in sent:
                wire_body = signed_chunks(body, sizes, sent, r.choice([None, None, None, 0, 1]))
            else:  # botocore could not sign this request: the same framing, unsigned
                wire_body = self._aws_chunked_unsigned(body)
        version = "HTTP/1.0" if framing == "http10" else "HTTP/1.1"
        head = self._head(method, target, host, sent, version)
        exchange = Exchange(label, head, [wire_body] if wire_body else [], [method])
        if framing == "expect" and sent.get("Expect") == "100-continue":
            exchange.expect_continue = True
        if framing in ("truncated", "truncated-chunked"):
            exchange.truncated = True
        declared = sent.get("Content-Length", "").strip(" \t")  # a header value's surrounding blanks are not part of it
        if (declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > len(wire_body))
                and "Transfer-Encoding" not in sent):
            exchange.truncated = True  # a length longer than the body: the server would wait for the rest
        if framing == "partial-head":
            exchange.head = head[:r.randrange(1, len(head))]
            exchange.body_parts = []
            exchange.truncated = True
        # "no-length": a body without Content-Length or chunked framing is, to the server, the
        # start of the next request; only the first answer is read.
        if framing == "pipelined":
            follow = self._head("GET", "/" + r.choice(BUCKETS) + "?list-type=2&max-keys=1", f"127.0.0.1:{self.port}",
                                {}, "HTTP/1.1")
            exchange.body_parts.append(follow)
            exchange.methods.append("GET")
        return exchange

    def _head(self, method: str, target: str, host: str, headers: dict[str, str], version: str) -> bytes:
        lines = [f"{method} {target} {version}"]
        if not any(name.lower() == "host" for name in headers):
            lines.append(f"Host: {host}")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        if self.chance(0.7):
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    def _sizes(self, total: int) -> list[int]:
        sizes, left = [], total
        while left > 0:
            size = min(left, self.rng.choice([1, 7, 8192, 65536, left]))
            sizes.append(size)
            left -= size
        return sizes

    def _chunked(self, body: bytes, *, final: bool) -> bytes:
        out, offset = bytearray(), 0
        for size in self._sizes(len(body)):
            out += f"{size:x}\r\n".encode() + body[offset:offset + size] + b"\r\n"
            offset += size
        if self.chance(0.1):
            out += b"0;ext=1\r\nX-Trailer: 1\r\n\r\n"
        elif final:
            out += b"0\r\n\r\n"
        return bytes(out)

    def _aws_chunked_unsigned(self, body: bytes) -> bytes:
        r = self.rng
        out, offset = bytearray(), 0
        for size in self._sizes(len(body)):
            out += f"{size:x}\r\n".encode() + body[offset:offset + size] + b"\r\n"
            offset += size
        checksum = _crc32_b64(body) if self.chance(0.8) else r.choice(["AAAAAA==", "!", ""])
        trailer = r.choice([f"x-amz-checksum-crc32:{checksum}\r\n", "", "x-amz-checksum-sha1:AAAA\r\n",
                            "bad trailer\r\n", f"x-amz-checksum-crc32:{checksum}\r\n" * 2])
        out += b"0\r\n" + trailer.encode() + b"\r\n"
        return bytes(out)

    def _authenticate(self, auth: str, method: str, target: str, host: str, headers: dict[str, str], body: bytes,
                      path: str) -> tuple[str, dict[str, str]]:
        r = self.rng
        url = f"http://{host}{target}" if not target.startswith("http") else target
        signable = {name: value for name, value in headers.items() if name not in ("Transfer-Encoding", "Expect")}
        try:
            if auth in ("v4", "v4-unsigned", "v4-streaming", "wrong-secret"):
                secret = ROOT_PASSWORD if auth != "wrong-secret" else "not-the-secret"
                if auth == "v4-streaming":
                    request = _aws_request(method, url, signable, b"")
                    _StreamingSigV4(Credentials(ROOT_USER, ROOT_PASSWORD), "s3", REGION).add_auth(request)
                    signed = dict(request.headers.items())
                else:
                    signed = sign_v4(method, url, signable, body, secret=secret)
                return target, _merged(headers, signed)
            if auth == "presign":
                presigned_target, signed = presign_v4(method, url, signable, r.choice([1, 3600, 604800]))
                return presigned_target, _merged(headers, signed)
            if auth == "v2":
                bucket_path = path if not host.endswith(f".{DOMAIN}:{self.port}") else (
                    "/" + host.split(".", 1)[0] + path)
                signed = sign_v2(method, url, signable, body, bucket_path)
                return target, _merged(headers, signed)
        except Exception:  # noqa: BLE001 - botocore refuses what it cannot sign: send it unsigned
            return target, headers
        if auth == "garbage":
            tokens = ["AWS4-HMAC-SHA256", " ", "Credential=", f"{ROOT_USER}/20240101/{REGION}/s3/aws4_request",
                      ",", "SignedHeaders=host;x-amz-date", "Signature=" + "0" * 64, "AWS ", f"{ROOT_USER}:",
                      "abc=", "=", "\u00e9", "Credential=/////", "SignedHeaders=" + ";" * 50]
            headers = {**headers, "Authorization": "".join(r.choice(tokens) for _ in range(r.randrange(1, 8)))}
            if self.chance(0.5):
                headers["x-amz-date"] = r.choice(["20240101T000000Z", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())])
        return target, headers


# --- talking to the server --------------------------------------------------------------------


class Hang(Exception):
    """No complete answer within the timeout."""


class _Conn:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Hang()
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise Hang() from None
        except OSError:  # reset by the server: the same as a close here
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def line(self) -> bytes | None:
        while True:
            index = self.buffer.find(b"\r\n")
            if index >= 0:
                out = bytes(self.buffer[:index])
                del self.buffer[:index + 2]
                return out
            if len(self.buffer) > 1 << 20 or not self._fill():
                return None

    def exactly(self, n: int, keep: int) -> bytes | None:
        kept = bytearray()
        while n > 0:
            if not self.buffer and not self._fill():
                return None
            take = min(n, len(self.buffer))
            if len(kept) < keep:
                kept += self.buffer[:min(take, keep - len(kept))]
            del self.buffer[:take]
            n -= take
        return bytes(kept)

    def rest(self, keep: int) -> bytes:
        kept = bytearray(self.buffer[:keep])
        self.buffer.clear()
        while self._fill():
            if len(kept) < keep:
                kept += self.buffer[:keep - len(kept)]
            self.buffer.clear()
        return bytes(kept)


def read_response(conn: _Conn, method: str, keep: int = 8192) -> Response | None:
    """One HTTP response (None if the connection closed before a whole one arrived)."""
    status_line = conn.line()
    if status_line is None:
        return None
    parts = status_line.decode("latin-1").split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        return Response(0, status_line.decode("latin-1"), {}, conn.rest(keep))
    headers: dict[str, str] = {}
    while True:
        line = conn.line()
        if line is None:
            return None
        if not line:
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    reason = parts[2] if len(parts) > 2 else ""
    if 100 <= status < 200 or method == "HEAD" or status in (204, 304):
        return Response(status, reason, headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = conn.line()
            if size_line is None:
                return None
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                while conn.line() not in (None, b""):  # the trailer's lines, up to the blank one
                    pass
                return Response(status, reason, headers, bytes(body))
            chunk = conn.exactly(size, keep - len(body))
            if chunk is None or conn.line() is None:
                return None
            body += chunk
    if "content-length" in headers:
        body_bytes = conn.exactly(int(headers["content-length"]), keep)
        return None if body_bytes is None else Response(status, reason, headers, body_bytes)
    return Response(status, reason, headers, conn.rest(keep))


@dataclass
class Outcome:
    responses: list[Response]
    closed: bool  # the server closed before answering every request
    hang: bool = False
    error: str = ""


def perform(port: int, exchange: Exchange, timeout: float, host: str = "127.0.0.1") -> Outcome:
    deadline = time.monotonic() + timeout
    responses: list[Response] = []
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        return Outcome([], True, error=f"connect: {error}")
    conn = _Conn(sock, deadline)
    try:
        try:
            sock.sendall(exchange.head)
            methods = list(exchange.methods)
            if exchange.expect_continue:
                interim = read_response(conn, methods[0])
                if interim is None:
                    return Outcome([], True)
                if interim.status != 100:  # a final answer without reading the body
                    return Outcome([interim], False)
            for part in exchange.body_parts:
                sock.sendall(part)
            if exchange.truncated:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (and closed) before reading everything: read its answer
        for method in exchange.methods:
            response = read_response(conn, method)
            while response is not None and response.status == 100:
                response = read_response(conn, method)
            if response is None:
                return Outcome(responses, True)
            responses.append(response)
            if response.headers.get("connection", "").lower() == "close":
                break
        return Outcome(responses, False)
    except Hang:
        return Outcome(responses, False, hang=True)
    finally:
        sock.close()


# --- a campaign ------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str  # "5xx", "traceback", "hang", "crash"
    signature: str  # the class: status and code, or the exception a traceback ends with
    label: str
    request: bytes
    detail: str


@dataclass
class Report:
    sent: int = 0
    by_class: Counter = field(default_factory=Counter)  # "2xx", "4xx", "5xx", "501 NotImplemented", "closed", "hang"
    by_code: Counter = field(default_factory=Counter)  # "404 NoSuchKey", ...
    findings: list[Finding] = field(default_factory=list)
    finding_counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    crashed: bool = False

    def summary(self) -> str:
        lines = [f"fuzz: {self.sent} requests in {self.seconds:.0f}s "
                 f"({self.sent / max(self.seconds, 1e-9):.0f}/s), by status class: "
                 + ", ".join(f"{name} {count}" for name, count in sorted(self.by_class.items()))]
        common = self.by_code.most_common(12)
        lines.append("  most frequent answers: " + ", ".join(f"{code} x{n}" for code, n in common))
        if self.finding_counts:
            lines.append(f"  findings: {sum(self.finding_counts.values())} in {len(self.finding_counts)} classes")
            shown = {f.signature: f for f in self.findings}
            for signature, count in self.finding_counts.most_common():
                finding = shown[signature]
                lines.append(f"  - [{finding.kind}] {signature} x{count} ({finding.label})")
                lines.append(f"      request: {finding.request!r}")
                lines.append("      " + finding.detail.replace("\n", "\n      "))
        else:
            lines.append("  findings: none (no 5xx, no traceback, no hang, no crash)")
        return "\n".join(lines)


_TRACEBACK_END = re.compile(r"^(\w[\w.]*(?:Error|Exception|Exit|Interrupt)\b.*)$", re.MULTILINE)
_REQUEST_ID = re.compile(r"request ([0-9A-F]{16})")
_LOG_RECORD = re.compile(r"(?m)^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


def _not_implemented(method: str, response: Response) -> bool:
    """S3's 501 for a feature this server does not have (an answer, not a fault). A HEAD
    answer has no body to show its code: there 501 itself is taken as NotImplemented."""
    return response.status == 501 and (response.code == "NotImplemented" or (method == "HEAD" and not response.body))


class Campaign:
    """Runs ``workers`` threads of generated exchanges against ``server`` until ``seconds``
    have passed or ``requests`` exchanges were sent, whichever comes first."""

    def __init__(self, server: FuzzServer | FuzzCluster, seed: int, *, workers: int = 1,
                 timeout: float = 30.0) -> None:
        self.server = server
        self.seed = seed
        self.workers = workers
        self.timeout = timeout
        self.known = Known()
        self.report = Report()
        self.lock = threading.Lock()
        self.log_offsets: dict[Path, int] = {}
        self.by_request_id: dict[str, tuple[str, bytes]] = {}

    def run(self, *, seconds: float | None = None, requests: int | None = None,
            progress: Callable[[str], None] | None = None) -> Report:
        start = time.monotonic()
        stop_at = start + seconds if seconds is not None else None
        self.log_offsets = {path: len(path.read_bytes()) for path in self.server.log_paths}
        budget = iter(range(requests)) if requests is not None else None
        budget_lock = threading.Lock()
        stopping = threading.Event()
        next_progress = [start + 60.0]

        def more() -> bool:
            if stopping.is_set() or (stop_at is not None and time.monotonic() >= stop_at):
                return False
            if budget is not None:
                with budget_lock:
                    return next(budget, None) is not None
            return True

        def worker(index: int) -> None:
            try:
                work(index)
            except Exception:  # a bug in the fuzzer itself must fail the run, not end it quietly
                with self.lock:
                    self._find("fuzzer", "the fuzzer itself failed", f"worker {index}", b"", traceback.format_exc())
                stopping.set()

        def work(index: int) -> None:
            generator = Generator(random.Random(f"{self.seed}/{index}"), self.server.port, self.known)
            hosts = self.server.hosts
            host = hosts[index % len(hosts)]
            done = 0
            while more():
                batch = generator.housekeeping() if index == 0 and done % 200 == 0 else []
                for exchange in [*batch, generator.exchange()]:
                    outcome = perform(self.server.port, exchange, self.timeout, host)
                    self._record(exchange, outcome)
                done += 1
                if not self.server.alive():
                    self.report.crashed = True
                    stopping.set()
                if progress is not None and index == 0 and time.monotonic() >= next_progress[0]:
                    next_progress[0] += 60.0
                    progress(f"fuzz: {self.report.sent} requests, {dict(self.report.by_class)}, "
                             f"{sum(self.report.finding_counts.values())} findings")

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.report.seconds = time.monotonic() - start
        self._scan_log()
        if not self.server.alive() or self.report.crashed:
            self.report.crashed = True
            tail = self.server.log_text()[-3000:]
            self._find("crash", self.server.exit_status(), "(last request)", b"", tail)
        return self.report

    def _record(self, exchange: Exchange, outcome: Outcome) -> None:
        with self.lock:
            self.report.sent += 1
            for method, response in zip(exchange.methods, outcome.responses):
                allowed = _not_implemented(method, response)
                self.report.by_class["501 NotImplemented" if allowed else f"{response.status // 100}xx"] += 1
                self.report.by_code[f"{response.status} {response.code}"] += 1
                request_id = response.headers.get("x-amz-request-id")
                if request_id:
                    self.by_request_id[request_id] = (exchange.label, exchange.wire())
                    if len(self.by_request_id) > 5000:
                        self.by_request_id.pop(next(iter(self.by_request_id)))
                if response.status >= 500 and not allowed:
                    self._find("5xx", f"{response.status} {response.code}", exchange.label, exchange.wire(),
                               response.body[:600].decode("utf-8", "replace"))
            if outcome.closed:
                self.report.by_class["closed"] += 1
            if outcome.hang:
                self.report.by_class["hang"] += 1
                self._find("hang", f"no answer within {self.timeout:.0f}s: {exchange.label.split()[1]}",
                           exchange.label, exchange.wire(), f"{len(outcome.responses)} responses before the hang")
        for response in outcome.responses:
            self.known.learn(exchange, response)
        self._scan_log(exchange)

    def _find(self, kind: str, signature: str, label: str, request: bytes, detail: str) -> None:
        self.report.finding_counts[signature] += 1
        if self.report.finding_counts[signature] == 1:
            self.report.findings.append(Finding(kind, signature, label, request, detail))

    def _scan_log(self, latest: Exchange | None = None) -> None:
        """Tracebacks the server logged since the last scan (after every exchange), one
        finding per exception type.

        Each log (one per node of a cluster) is read from where the last scan stopped, whole
        lines only; a record is a
        timestamped line and the lines under it (a traceback). A traceback naming no
        request id (aiohttp's own, "Error handling request") is put on ``latest``, the
        exchange that just ended: exact with one worker, a likely culprit with several."""
        with self.lock:
            text = ""
            for path in self.server.log_paths:
                with open(path, "rb") as log:
                    log.seek(self.log_offsets.get(path, 0))
                    new = log.read()
                cut = new.rfind(b"\n") + 1
                self.log_offsets[path] = self.log_offsets.get(path, 0) + cut
                text += new[:cut].decode("utf-8", "replace")
            for record in _LOG_RECORD.split(text):
                if "Traceback" not in record and "unhandled error" not in record:
                    continue
                ends = _TRACEBACK_END.findall(record)
                signature = "traceback: " + (ends[-1][:160] if ends else record.strip().splitlines()[0][:160])
                m = _REQUEST_ID.search(record)
                label, request = self.by_request_id.get(m.group(1) if m else "", ("(request not identified)", b""))
                if not request and latest is not None:
                    label, request = f"{latest.label}, the exchange that had just ended", latest.wire()
                self._find("traceback", signature, label, request, record.strip()[-2500:])


def env_seconds(default: float) -> float:
    return float(os.environ.get("FUZZ_SECONDS", default))
