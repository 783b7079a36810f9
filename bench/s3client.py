"""``SignedS3Client``: the few S3 calls the HTTP suites make, on aiohttp, signed by botocore.

Signing uses botocore's own ``S3SigV4Auth`` (what boto3 and the AWS CLI run), so the
server sees real client requests: small bodies are signed with their SHA-256, as boto3
does over plain HTTP; streamed bodies are sent ``UNSIGNED-PAYLOAD`` with a
Content-Length (boto3 does that over HTTPS), because hashing 64 MiB up front would mean
holding it or reading it twice. CPU time spent signing is added up in ``sign_seconds``
so the report can state the client's own overhead.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import quote

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_UNSIGNED_CONFIG = SimpleNamespace(s3={"payload_signing_enabled": False})


class S3HttpError(Exception):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        code = ""
        try:
            code = ET.fromstring(body).findtext("Code") or ""
        except ET.ParseError:
            pass
        super().__init__(f"{method} {path}: HTTP {status} {code or body[:120]!r}")
        self.status = status


@dataclass(slots=True)
class ListPage:
    keys: list[str]
    next_token: str | None
    parse_seconds: float


@dataclass(slots=True)
class VersionsPage:
    versions: int  # <Version> elements
    delete_markers: int  # <DeleteMarker> elements
    next_key_marker: str | None  # None: the last page
    next_version_id_marker: str | None
    parse_seconds: float


class SignedS3Client:
    def __init__(self, session: aiohttp.ClientSession, endpoint: str, access_key: str, secret_key: str,
                 region: str = "us-east-1") -> None:
        self.session = session
        self.endpoint = endpoint.rstrip("/")
        self._signer = S3SigV4Auth(Credentials(access_key, secret_key), "s3", region)
        self.sign_seconds = 0.0
        self.signed = 0

    def _sign(self, method: str, url: str, body: bytes | None, unsigned_payload: bool = False,
              headers: dict[str, str] | None = None) -> dict[str, str]:
        t0 = time.thread_time()  # CPU, not wall: on a busy machine wall time would count preemption
        req = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
        if unsigned_payload:
            req.context["client_config"] = _UNSIGNED_CONFIG
        self._signer.add_auth(req)
        out = dict(req.headers.items())
        self.sign_seconds += time.thread_time() - t0
        self.signed += 1
        return out

    async def _request(self, method: str, path: str, query: str = "", body: bytes | None = None) -> bytes:
        url = f"{self.endpoint}{path}" + (f"?{query}" if query else "")
        headers = self._sign(method, url, body)
        async with self.session.request(method, URL(url, encoded=True), data=body, headers=headers) as resp:
            data = await resp.read()
            if resp.status >= 300:
                raise S3HttpError(method, path, resp.status, data)
            return data

    async def list_buckets(self) -> bytes:
        return await self._request("GET", "/")

    async def create_bucket(self, bucket: str) -> None:
        try:
            await self._request("PUT", f"/{bucket}")
        except S3HttpError as exc:
            if exc.status != 409:  # BucketAlreadyOwnedByYou from an earlier attempt is fine
                raise

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        await self._request("PUT", f"/{bucket}/{quote(key, safe='/~')}", body=body)

    async def put_stream(self, bucket: str, key: str, size: int, stream: AsyncIterator[bytes],
                         headers: dict[str, str] | None = None) -> None:
        """``headers``: more to send (and sign), e.g. the body's ``x-amz-checksum-crc32``."""
        path = f"/{bucket}/{quote(key, safe='/~')}"
        url = self.endpoint + path
        headers = self._sign("PUT", url, None, unsigned_payload=True, headers=headers)
        headers["Content-Length"] = str(size)  # not signed; sent so the body is not chunked
        async with self.session.put(URL(url, encoded=True), data=stream, headers=headers) as resp:
            data = await resp.read()
            if resp.status >= 300:
                raise S3HttpError("PUT", path, resp.status, data)

    async def get(self, bucket: str, key: str, version_id: str | None = None) -> int:
        """GET the object (``version_id``'s when given), reading every byte; returns how many arrived."""
        path = f"/{bucket}/{quote(key, safe='/~')}"
        url = self.endpoint + path + (f"?versionId={quote(version_id, safe='')}" if version_id else "")
        headers = self._sign("GET", url, None)
        async with self.session.get(URL(url, encoded=True), headers=headers) as resp:
            if resp.status >= 300:
                raise S3HttpError("GET", path, resp.status, await resp.read())
            n = 0
            async for chunk in resp.content.iter_any():
                n += len(chunk)
            return n

    async def _request_headers(self, method: str, path: str, query: str = "", body: bytes | None = None
                               ) -> tuple[bytes, dict[str, str]]:
        """Like ``_request``, also returning the response headers (lower-case names)."""
        url = f"{self.endpoint}{path}" + (f"?{query}" if query else "")
        headers = self._sign(method, url, body)
        async with self.session.request(method, URL(url, encoded=True), data=body, headers=headers) as resp:
            data = await resp.read()
            if resp.status >= 300:
                raise S3HttpError(method, path, resp.status, data)
            return data, {k.lower(): v for k, v in resp.headers.items()}

    async def put_bucket_versioning(self, bucket: str, status: str) -> None:
        body = (f'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Status>{status}</Status></VersioningConfiguration>").encode()
        await self._request("PUT", f"/{bucket}", "versioning", body=body)

    async def put_versioned(self, bucket: str, key: str, body: bytes) -> str | None:
        """PUT; returns the ``x-amz-version-id`` the server answered (None without one)."""
        _, headers = await self._request_headers("PUT", f"/{bucket}/{quote(key, safe='/~')}", body=body)
        return headers.get("x-amz-version-id")

    async def delete(self, bucket: str, key: str) -> tuple[str | None, bool]:
        """DeleteObject without a version id: (``x-amz-version-id``, whether a delete marker was made)."""
        _, headers = await self._request_headers("DELETE", f"/{bucket}/{quote(key, safe='/~')}")
        return headers.get("x-amz-version-id"), headers.get("x-amz-delete-marker") == "true"

    async def list_versions_page(self, bucket: str, key_marker: str | None, version_marker: str | None,
                                 max_keys: int = 1000) -> VersionsPage:
        """One ListObjectVersions page, parsed (every Version and DeleteMarker read from the XML)."""
        query = f"max-keys={max_keys}&versions"
        if key_marker:
            query = f"key-marker={quote(key_marker, safe='-_.~')}&" + query
            if version_marker:
                query += f"&version-id-marker={quote(version_marker, safe='-_.~')}"
        data = await self._request("GET", f"/{bucket}", query)
        t0 = time.perf_counter()
        root = ET.fromstring(data)
        versions = markers = 0
        for el in root:
            if el.tag == f"{S3_NS}Version":
                versions += 1
                el.findtext(f"{S3_NS}Key"), el.findtext(f"{S3_NS}VersionId")
            elif el.tag == f"{S3_NS}DeleteMarker":
                markers += 1
                el.findtext(f"{S3_NS}Key"), el.findtext(f"{S3_NS}VersionId")
        truncated = (root.findtext(f"{S3_NS}IsTruncated") or "false").lower() == "true"
        next_key = root.findtext(f"{S3_NS}NextKeyMarker") if truncated else None
        if truncated and not next_key:
            raise S3HttpError("GET", f"/{bucket}?versions", 200, b"truncated page without NextKeyMarker")
        next_vid = root.findtext(f"{S3_NS}NextVersionIdMarker") if truncated else None
        return VersionsPage(versions, markers, next_key, next_vid, time.perf_counter() - t0)

    async def list_page(self, bucket: str, token: str | None, max_keys: int = 1000) -> ListPage:
        """One ListObjectsV2 page, parsed the way a client must (every Key read from the XML)."""
        query = f"list-type=2&max-keys={max_keys}"
        if token:
            query = f"continuation-token={quote(token, safe='-_.~')}&" + query
        data = await self._request("GET", f"/{bucket}", query)
        t0 = time.perf_counter()
        root = ET.fromstring(data)
        keys = [el.text or "" for el in root.iter(f"{S3_NS}Key")]
        truncated = (root.findtext(f"{S3_NS}IsTruncated") or "false").lower() == "true"
        next_token = root.findtext(f"{S3_NS}NextContinuationToken") if truncated else None
        if truncated and not next_token:
            raise S3HttpError("GET", f"/{bucket}?list-type=2", 200, b"truncated page without NextContinuationToken")
        return ListPage(keys, next_token, time.perf_counter() - t0)
