"""One access line and one set of request metrics per request, after the response is sent.

``AccessLogger`` plugs into aiohttp's server (``AppRunner(..., access_log_class=...)``),
which calls it once the last byte of the response is written (or the client went away),
so the duration and byte counts are those of the whole exchange, streamed bodies
included. It reads what the layers above left on the request:

- ``request[S3_OPERATION]``: the S3 API name (set by the S3 app once it routed);
  ``request[OPS_API]`` for the server's own endpoints (health, metrics, admin);
- ``request[S3_TARGET]``: the bucket and key addressed;
- ``request[S3_ACCESS_KEY]`` / ``request[OPS_ACCESS_KEY]``: who signed (never a secret);
- the ``x-amz-request-id`` response header: the id the client saw, so a complaint that
  quotes it finds this line and any error logged under it.
"""

from __future__ import annotations

import logging
import re
import time as clock
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from buckets.obs.logs import FIELDS
from buckets.s3.router import Target

log = logging.getLogger("buckets.access")

# What the layers above leave on the request for this module (see the module docstring).
S3_OPERATION = web.RequestKey("s3_operation", str)  # S3 API name ("PutObject"), once routed
S3_TARGET = web.RequestKey("s3_target", Target)  # bucket and key the S3 request addresses
S3_ACCESS_KEY = web.RequestKey[str | None]("s3_access_key")  # who signed an S3 request (None: anonymous)
OPS_API = web.RequestKey("ops_api", str)  # API name of a non-S3 endpoint ("health", "metrics", "admin.info")
OPS_ACCESS_KEY = web.RequestKey("ops_access_key", str)  # access key that signed an admin request
OPS_ERROR_CODE = web.RequestKey("ops_error_code", str)  # error code of a non-S3 error answer
# The id stamped into x-amz-request-id: the S3 app's, which admin and console answers reuse.
REQUEST_ID = web.RequestKey("s3_request_id", str)
QUIET_APIS = frozenset({"health", "metrics"})  # probes and scrapes: logged at debug only
METRICS_KEY: web.AppKey[Any] = web.AppKey("buckets_metrics", object)

_STARTED = web.RequestKey("obs_started", float)  # perf_counter() when the app first saw the request
_CREDENTIAL = re.compile(r"Credential=([^/,\s]{1,128})/|^AWS ([^:\s]{1,128}):")
_XML_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_MAX_PATH = 512
_T = TypeVar("_T")


def _request_value(request: Any, key: web.RequestKey[_T]) -> _T | None:
    try:
        return request.get(key)
    except Exception:  # noqa: BLE001 - a request that failed to parse may lack its mapping
        return None


def _error_code(request: Any, response: web.StreamResponse) -> str | None:
    if response.status < 400:
        return None
    code = _request_value(request, OPS_ERROR_CODE)
    if code:
        return str(code)
    body = getattr(response, "body", None)  # S3 errors are small in-memory XML bodies
    if isinstance(body, bytes | bytearray) and len(body) < 8192:
        match = _XML_CODE.search(body)
        if match:
            return match.group(1).decode("ascii")
    return None


@web.middleware
async def timing_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Outermost middleware: remember when the request reached the app.

    aiohttp hands the access logger a duration from ``loop.time()``, which uvloop keeps
    in whole milliseconds; latency histograms need better than that.
    """
    request[_STARTED] = clock.perf_counter()
    return await handler(request)


def _claimed_access_key(request: Any) -> str | None:
    """The access key a request was signed with, verified or not (a failed login names it)."""
    headers = getattr(request, "headers", None) or {}
    match = _CREDENTIAL.search(headers.get("Authorization", ""))
    if match:
        return match.group(1) or match.group(2)
    query = getattr(request, "query", None) or {}
    credential = query.get("X-Amz-Credential") or query.get("AWSAccessKeyId")
    return credential.split("/", 1)[0][:128] if credential else None


class AccessLogger(AbstractAccessLogger):
    """aiohttp access logger: metrics for every request, then one structured log line."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)

    @property
    def enabled(self) -> bool:
        return True  # metrics are recorded whatever the log level; the line checks the level itself

    def log(self, request: Any, response: web.StreamResponse, time: float) -> None:
        try:
            self._record(request, response, time)
        except Exception:  # noqa: BLE001 - never let bookkeeping break the connection
            log.exception("access logging failed")

    def _record(self, request: Any, response: web.StreamResponse, seconds: float) -> None:
        started = _request_value(request, _STARTED)
        if started is not None:
            seconds = clock.perf_counter() - started
        api = (_request_value(request, S3_OPERATION) or _request_value(request, OPS_API) or "unknown")
        content = getattr(request, "content", None)
        received = int(getattr(content, "total_bytes", 0) or 0)
        sent = int(response.body_length or 0)
        status = response.status
        try:
            metrics = request.app.get(METRICS_KEY)
        except Exception:  # noqa: BLE001 - a request rejected before routing has no app
            metrics = None
        if metrics is not None:
            metrics.observe(str(api), status, seconds, received, sent)

        # Peer RPC between cluster nodes (``peer.*``) is traffic of the cluster itself, many calls
        # per client request: debug level, unless it failed.
        quiet = api in QUIET_APIS or (str(api).startswith("peer.") and status < 400)
        level = logging.DEBUG if quiet else (logging.WARNING if status >= 500 else logging.INFO)
        if not log.isEnabledFor(level):
            return
        target = _request_value(request, S3_TARGET)
        path = getattr(request, "path", "") or ""
        fields = {
            "request_id": response.headers.get("x-amz-request-id", ""),
            "api": api,
            "method": getattr(request, "method", ""),
            "path": path[:_MAX_PATH],
            "bucket": getattr(target, "bucket", None),
            "key": getattr(target, "key", None),
            "status": status,
            "error_code": _error_code(request, response),
            "bytes_in": received,
            "bytes_out": sent,
            "duration_ms": round(seconds * 1000.0, 3),
            "access_key": _request_value(request, S3_ACCESS_KEY) or _request_value(request, OPS_ACCESS_KEY),
            "claimed_access_key": None,
            "remote": getattr(request, "remote", None),
            "user_agent": (getattr(request, "headers", {}) or {}).get("User-Agent", "")[:256],
        }
        if fields["access_key"] is None:
            fields["claimed_access_key"] = _claimed_access_key(request)  # unverified: the login failed
        fields = {name: value for name, value in fields.items() if value is not None}
        message = f"{fields['method']} {fields['path']} {status} {api}"
        log.log(level, message, extra={FIELDS: fields})
