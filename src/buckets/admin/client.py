"""The client side of the admin API: sign a JSON call with SigV4, send it, decode the answer.

Signing is botocore's (the same SigV4 every S3 client uses, service ``s3``), with the
body's SHA-256 in ``x-amz-content-sha256`` so the server can check the body was not
changed. Transport is the standard library's ``http.client``: one request per call, a
timeout, TLS verified unless the alias says ``insecure``.

Failures are ``AdminCallError`` with a one-line message: cannot connect, timed out, the
server refused (its error code and request id), or the answer was not the admin API's.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

PREFIX = "/_buckets/admin/v1"
MAX_RESPONSE = 16 << 20


class AdminCallError(Exception):
    """One line for the operator; ``code`` is the server's error code when it answered, and
    ``reason`` the refusal it names (``NoQuorum``, ...; None from a server before 2026-12-05)."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.reason = reason


class AdminClient:
    def __init__(self, url: str, access_key: str, secret_key: str, *, region: str = "us-east-1",
                 insecure: bool = False, ca_file: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.insecure = insecure
        self.ca_file = ca_file
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        payload = json.dumps(body).encode() if body is not None else b""
        url = f"{self.url}{PREFIX}/{quote(path, safe='/')}"
        headers = {"X-Amz-Content-SHA256": hashlib.sha256(payload).hexdigest()}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = AWSRequest(method=method, url=url, data=payload, headers=headers)
        SigV4Auth(Credentials(self.access_key, self.secret_key), "s3", self.region).add_auth(request)
        status, raw = self._send(method, url, payload, dict(request.headers.items()))
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise AdminCallError(f"{self.url} answered HTTP {status} without the admin API's JSON: "
                                 "is this a Buckets server?", status=status)
        if status >= 400:
            code = document.get("code")
            if not code:
                raise AdminCallError(f"{self.url} answered HTTP {status}", status=status)
            request_id = document.get("request_id")
            suffix = f" (request id {request_id})" if request_id else ""
            reason = document.get("reason")
            raise AdminCallError(f"{code}: {document.get('message', '')}{suffix}", code=code, status=status,
                                 reason=reason if isinstance(reason, str) else None)
        return document

    def probe(self, base: str, path: str, *, timeout: float = 2.0) -> tuple[int, dict[str, Any] | None]:
        """An unauthenticated ``GET`` of another node's operations endpoint (``/health/...``):
        its status and JSON document (None if it sent none). ``AdminCallError`` if it cannot
        be reached."""
        other = AdminClient(base, "", "", region=self.region, insecure=self.insecure, ca_file=self.ca_file,
                            timeout=timeout)
        status, raw = other._send("GET", f"{other.url}{path}", b"", {})
        try:
            document = json.loads(raw) if raw else None
        except ValueError:
            document = None
        return status, document if isinstance(document, dict) else None

    def _send(self, method: str, url: str, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.timeout, context=context)
        else:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            connection.request(method, target, body=payload, headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_RESPONSE + 1)  # admin answers are small JSON documents
            if len(body) > MAX_RESPONSE:
                raise AdminCallError(f"{self.url} sent an answer over {MAX_RESPONSE} bytes: not a Buckets admin API")
            return response.status, body
        except ssl.SSLError as error:
            raise AdminCallError(f"TLS failed with {self.url}: {error.reason or error}") from None
        except (socket.timeout, TimeoutError):
            raise AdminCallError(f"{self.url} did not answer within {self.timeout:g}s") from None
        except ConnectionRefusedError:
            raise AdminCallError(f"cannot connect to {self.url}: connection refused (is the server running?)") from None
        except socket.gaierror as error:
            raise AdminCallError(f"cannot connect to {self.url}: {error.strerror or error}") from None
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise AdminCallError(f"cannot talk to {self.url}: {reason}") from None
        finally:
            connection.close()
