"""Hand-built S3 requests for what SDKs will not send: bad names, broken XML, odd headers.

Requests are signed with botocore's own SigV4 signer (so the server sees a genuine
client signature) and sent with http.client, which adds nothing of its own.
"""

from __future__ import annotations

import http.client
import re
import ssl
from dataclasses import dataclass
from urllib.parse import quote

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from s3server import REGION, ROOT_PASSWORD, ROOT_USER


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str | None:
        m = re.search(rb"<Code>([^<]*)</Code>", self.body)
        return m.group(1).decode() if m else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def sign(method: str, url: str, headers: dict[str, str], body: bytes,
         access_key: str = ROOT_USER, secret_key: str = ROOT_PASSWORD, region: str = REGION) -> dict[str, str]:
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    content_sha256 = headers.get("x-amz-content-sha256")
    if content_sha256 == "UNSIGNED-PAYLOAD":
        # botocore signs payloads over plain http unless told not to.
        req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    elif content_sha256 == "STREAMING-UNSIGNED-PAYLOAD-TRAILER":
        # botocore keeps this value only when it believes it is sending a trailer.
        req.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32",
                                                         "name": "x-amz-checksum-crc32"}}
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", region).add_auth(req)
    return dict(req.headers.items())


def request(server, method: str, path: str, *, query: str = "", body: bytes = b"",
            headers: dict[str, str] | None = None, signed: bool = True,
            host: str | None = None, **signer) -> RawResponse:
    """`path` is sent as given (already percent-encoded where needed)."""
    target = path + (f"?{query}" if query else "")
    host_header = host or f"127.0.0.1:{server.port}"
    hdrs = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", **(headers or {})}
    if signed:
        hdrs = sign(method, f"{getattr(server, 'scheme', 'http')}://{host_header}{target}", hdrs, body, **signer)
    hdrs.setdefault("Host", host_header)
    if getattr(server, "scheme", "http") == "https":  # verified against the test CA that signed it
        context = ssl.create_default_context(cafile=getattr(server, "ca_file", None))
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", server.port, timeout=30, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in hdrs.items():
            conn.putheader(name, value)
        if body or method in ("PUT", "POST"):
            present = {name.lower() for name in hdrs}
            if "content-length" not in present and "transfer-encoding" not in present:
                conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def key_path(bucket: str, key: str) -> str:
    return f"/{bucket}/{quote(key, safe='/~')}"


def aws_chunked(data: bytes, trailers: dict[str, str], chunk: int = 65536) -> bytes:
    """An unsigned aws-chunked body with trailing headers (STREAMING-UNSIGNED-PAYLOAD-TRAILER)."""
    out = bytearray()
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    out += b"0\r\n"
    for name, value in trailers.items():
        out += f"{name}:{value}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def sigv4_streaming_put(server, path: str, data: bytes, *, chunk: int = 65536, tamper: bool = False,
                        extra_headers: dict[str, str] | None = None) -> RawResponse:
    """PUT with STREAMING-AWS4-HMAC-SHA256-PAYLOAD: every chunk signed, chained from the
    request signature (what the Java/Go SDKs and minio clients send). Signed here by hand
    because botocore never produces this framing."""
    import datetime
    import hashlib
    import hmac

    def hm(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{REGION}/s3/aws4_request"
    key = hm(hm(hm(hm(("AWS4" + ROOT_PASSWORD).encode(), day), REGION), "s3"), "aws4_request")
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    encoded_length = sum(len(f"{len(p):x};chunk-signature=") + 64 + 4 + len(p) for p in pieces)
    headers = {
        "host": f"127.0.0.1:{server.port}",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(len(data)),
        "content-encoding": "aws-chunked",
        "content-length": str(encoded_length),
        **{k.lower(): v for k, v in (extra_headers or {}).items()},
    }
    names = sorted(headers)
    canonical = "\n".join([
        "PUT", path, "",
        "".join(f"{n}:{headers[n].strip()}\n" for n in names),
        ";".join(names), "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    seed = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ROOT_USER}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={seed}")
    body = bytearray()
    previous = seed
    empty = hashlib.sha256(b"").hexdigest()
    for index, piece in enumerate(pieces):
        string = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, empty,
                            hashlib.sha256(piece).hexdigest()])
        signature = hmac.new(key, string.encode(), hashlib.sha256).hexdigest()
        previous = signature
        if tamper and index == 1:
            piece = bytes([piece[0] ^ 1]) + piece[1:]
        body += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + piece + b"\r\n"
    headers = {("Host" if k == "host" else k): v for k, v in headers.items()}
    return request(server, "PUT", path, body=bytes(body), headers=headers, signed=False)
