"""A plain HTTP client of the web console's JSON API (buckets.console), for the console tests.

http.client with the cookies handled by hand, so a test can drop, forge or replay them;
``call`` sends the session's CSRF header on state-changing calls unless told not to.
Imported by name (``from consoleclient import ...``) like s3server.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

COOKIE = "buckets_console"
CSRF_COOKIE = "buckets_csrf"
CSRF_HEADER = "X-Buckets-CSRF"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        try:
            return self.json.get("code")
        except ValueError:
            return None

    def cookies(self) -> dict[str, dict[str, str]]:
        """{name: {"value": ..., "httponly": ..., "samesite": ..., "path": ..., ...}} of Set-Cookie."""
        out: dict[str, dict[str, str]] = {}
        for header in self.headers.get_all("Set-Cookie") or []:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                attrs = {key: morsel[key] for key in morsel.keys() if morsel[key]}
                out[name] = {"value": morsel.value, **attrs, "raw": header}
        return out


@dataclass
class ConsoleClient:
    base: str  # http(s)://host:port (the console is under /console/)
    ca_file: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str | None = None
    source: str | None = None  # the local address to connect from (127.0.0.x)

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                cookies: dict[str, str] | None = None) -> Answer:
        parts = urlsplit(self.base)
        source = (self.source, 0) if self.source else None
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_file)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=120, context=context, source_address=source)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120, source_address=source)
        jar = self.cookies if cookies is None else cookies
        sent = dict(headers or {})
        if jar:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in jar.items())
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()

    def call(self, method: str, path: str, document: object = None, *, csrf: bool = True,
             headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None,
             body: bytes | None = None) -> Answer:
        """``path`` after /console/api/."""
        sent = dict(headers or {})
        if document is not None:
            body = json.dumps(document).encode()
            sent.setdefault("Content-Type", "application/json")
        if csrf and method not in ("GET", "HEAD") and self.csrf:
            sent.setdefault(CSRF_HEADER, self.csrf)
        return self.request(method, "/console/api/" + path, body=body, headers=sent, cookies=cookies)

    def login(self, access_key: str, secret_key: str) -> Answer:
        answer = self.call("POST", "login", {"access_key": access_key, "secret_key": secret_key}, csrf=False)
        if answer.status == 200:
            set_cookies = answer.cookies()
            self.cookies = {name: value["value"] for name, value in set_cookies.items()}
            self.csrf = answer.json["csrf"]
        return answer

    def ok(self, method: str, path: str, document: object = None, **kwargs) -> dict:
        answer = self.call(method, path, document, **kwargs)
        assert 200 <= answer.status < 300, (answer.status, answer.body[:500])
        return answer.json
