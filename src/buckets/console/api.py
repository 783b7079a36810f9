"""The console's server side: its pages, static files and JSON API under ``/console/``.

One aiohttp route (``/console`` and everything below it) dispatches to:

===========  ==============================================  =======================================
method       path (after ``/console``)                       what
===========  ==============================================  =======================================
GET          ``/``                                           the page (``static/index.html``)
GET          ``/static/{file}``                              CSS, ES modules, icons (package data)
POST         ``/api/login``                                  ``{"access_key", "secret_key"}``: a session
POST         ``/api/logout``                                 end the session (server side)
GET          ``/api/session``                                who is logged in, the CSRF token
GET / POST   ``/api/buckets``                                buckets the user may list / create one
DELETE       ``/api/buckets/{b}``                            delete an empty bucket
GET          ``/api/buckets/{b}/objects``                    one page: ``prefix``, ``token``, ``limit``
GET / PUT    ``/api/buckets/{b}/object?key=K``               details / upload (the body streamed)
GET          ``/api/buckets/{b}/download?key=K``             the object's bytes, streamed
POST         ``/api/buckets/{b}/delete``                     ``{"keys": [...]}`` (1 to 1000)
POST         ``/api/buckets/{b}/share``                      ``{"key", "expires"}``: a presigned GET URL
POST         ``/api/buckets/{b}/uploads``                    ``{"key", "content_type"}``: multipart
PUT          ``/api/buckets/{b}/uploads/{id}/parts/{n}?key=K``  one part (streamed)
POST         ``/api/buckets/{b}/uploads/{id}/complete``      ``{"key", "parts": [{"number", "etag"}]}``
DELETE       ``/api/buckets/{b}/uploads/{id}?key=K``         abort
GET          ``/api/cluster``                                disks, layout, heal, migration, rates (root)
POST         ``/api/cluster/heal``                           start a heal pass (root)
GET / POST   ``/api/users``                                  users / add one (root)
DELETE       ``/api/users/{ak}``                             remove (root)
POST         ``/api/users/{ak}/enable``, ``/disable``        (root)
PUT          ``/api/users/{ak}/policy``                      ``{"policy": name or JSON}`` (root)
GET          ``/api/policies``                               canned and named policies (root)
===========  ==============================================  =======================================

Authorization is S3's: every bucket and object call builds a :class:`ConsoleRequest` for
the session's user and asks ``buckets.s3.permissions.authorize`` for the action the S3
operation would need (``s3:ListAllMyBuckets`` then the ListBuckets filter, ``s3:ListBucket``
with the listing's ``s3:prefix``/``s3:delimiter``/``s3:max-keys``, ``s3:PutObject`` for
uploads and each multipart step, ``s3:GetObject``, ``s3:DeleteObject`` per key,
``s3:AbortMultipartUpload``, ``s3:CreateBucket``, ``s3:DeleteBucket``). New objects get their
owner and ACL from ``buckets.s3.acls.write_access`` and bodies stream through
``buckets.s3.body.open_stream`` into the engine, as PutObject's do; writes and deletes
notify as S3's do. The root-only pages call the admin API's own handlers
(``buckets.admin.api.AdminApi``): the same checks, the same answers.

On the S3 port the console shares the path space with a bucket named ``console``: a
request signed for S3 (an ``Authorization`` header or a presigned query), a
virtual-host-style request, a CORS preflight and a POST to ``/console`` itself go to the
S3 handler, everything else is the console's (``--console-address`` gives the console a
port of its own and leaves ``/console`` to S3 entirely).

Errors are JSON, ``{"code", "message", "request_id"}`` with the status of the matching S3
error; no session is 401, a missing or wrong CSRF token 403.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from buckets.console.assets import load_assets
from buckets.console.context import ConsoleRequest, console_auth
from buckets.console.presign import presigned_get_url
from buckets.console.rates import RateSampler
from buckets.console.sessions import (
    COOKIE_NAME, CSRF_COOKIE_NAME, CSRF_HEADER, DEFAULT_TTL, LoginLimiter, Session, SessionError, SessionTable,
)
from buckets.engine.types import CompletePart, ObjectInfo, PutOptions
from buckets.errors import (
    AccessDenied, BucketsError, IncompleteBody, InternalError, InvalidArgument, KeyTooLongError, define_error,
)
from buckets.obs.access import OPS_ACCESS_KEY, OPS_API, OPS_ERROR_CODE, REQUEST_ID
from buckets.obs.endpoints import serving_refusal
from buckets.s3.acls import write_access
from buckets.s3.auth.sigv4 import MAX_PRESIGN_EXPIRES
from buckets.s3.body import open_stream, send_continue
from buckets.s3.connections import watch_body
from buckets.s3.context import MAX_KEY_BYTES, check_key
from buckets.s3.credentials import ServerCredentials
from buckets.s3.handlers.bucket import check_bucket_name
from buckets.s3.handlers.common import decode_token, encode_token
from buckets.s3.handlers.service import _may_list  # ListBuckets' filter: what this user may see
from buckets.s3.headers import put_options
from buckets.s3.permissions import authorize, caller_of, owner_name
from buckets.s3.router import bucket_from_host

log = logging.getLogger("buckets.console")

PREFIX = "/console"
MAX_JSON = 64 * 1024
MAX_DELETE_JSON = 2 * 1024 * 1024  # 1000 keys of up to 1024 bytes, JSON-escaped
MAX_DELETE_KEYS = 1000
MAX_PAGE = 1000
DEFAULT_PAGE = 100
_S3_QUERY_AUTH = ("X-Amz-Credential", "X-Amz-Signature", "AWSAccessKeyId", "Signature")
_DELETE_CONCURRENCY = 16
_ASCII_SAFE = re.compile(r"[^A-Za-z0-9._ -]")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer"}

ConsoleNotFound = define_error("ConsoleNotFound", "NoSuchConsoleEndpoint", 404, "There is no such console page.")
ConsoleMethodNotAllowed = define_error("ConsoleMethodNotAllowed", "MethodNotAllowed", 405,
                                       "The method is not allowed on this console endpoint.")
InvalidCredentials = define_error("InvalidCredentials", "InvalidCredentials", 401,
                                  "The access key or the secret key is wrong.")
TooManyLogins = define_error("TooManyLogins", "TooManyLoginFailures", 429,
                             "Too many failed logins from this address: wait a few minutes.")
CSRFRefused = define_error("CSRFRefused", "InvalidCSRFToken", 403,
                           "The request did not carry this session's CSRF token: reload the page.")
CrossOrigin = define_error("CrossOrigin", "CrossOriginRequest", 403, "Console calls must come from the console's page.")
UnsupportedMediaType = define_error("UnsupportedMediaType", "UnsupportedMediaType", 415,
                                    "Send this call's body as JSON (Content-Type: application/json).")
UserAlreadyExists = define_error("UserAlreadyExists", "UserAlreadyExists", 409, "A user with that access key exists.")
RootOnly = define_error("RootOnly", "AccessDenied", 403, "This page is for the root user only (as the admin API is).")

# Events the console's writes and deletes produce (as the S3 operations they stand for).
EVENT_PUT = "s3:ObjectCreated:Put"
EVENT_COMPLETE = "s3:ObjectCreated:CompleteMultipartUpload"
EVENT_DELETE = "s3:ObjectRemoved:Delete"
# Console uploads carry a whole-object CRC64NVME, the checksum current AWS SDKs default to.
UPLOAD_CHECKSUM = "CRC64NVME"


async def _continue_later(request: web.Request) -> None:
    """``Expect: 100-continue`` is answered once the call is known to be acceptable (session,
    CSRF token, authorization), when its body is about to be read: ``open_stream`` for
    uploads, ``Console._json`` for documents."""
    return None


def _answer(payload: Any, status: int = 200) -> web.Response:
    response = web.Response(status=status, text=json.dumps(payload, default=str),
                            content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _secure(response: web.StreamResponse, *, html: bool = False) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if html:
        response.headers["Content-Security-Policy"] = CSP
    return response


def _looks_s3(request: web.Request, domains: list[str]) -> bool:
    """A request the S3 handler must answer although its path is under ``/console``."""
    if request.method == "OPTIONS":
        return True  # a CORS preflight, for the bucket named "console"
    if request.headers.get("Authorization", "").startswith(("AWS4-", "AWS ")):
        return True
    if any(name in request.query for name in _S3_QUERY_AUTH):
        return True
    if request.method == "POST" and request.path.rstrip("/") == PREFIX:
        return True  # a browser form upload (POST Object) to the bucket named "console"
    return bucket_from_host(request.headers.get("Host", ""), domains) is not None


def _object_json(info: ObjectInfo) -> dict[str, Any]:
    sse = None
    if info.sse is not None:
        sse = {"mode": info.sse.mode, "kms_key_id": info.sse.kms_key_id}
    return {
        "key": info.key, "size": info.size, "etag": info.etag, "last_modified": info.last_modified,
        "content_type": info.content_type, "headers": dict(info.headers), "metadata": dict(info.user_meta),
        "checksums": dict(info.checksums), "checksum_type": info.checksum_type,
        "storage_class": info.storage_class or "STANDARD", "version_id": info.version_id,
        "parts": len(info.parts) if "-" in info.etag else 1, "encryption": sse,
    }


def _attachment(key: str) -> str:
    name = key.rstrip("/").rsplit("/", 1)[-1] or "download"
    fallback = _ASCII_SAFE.sub("_", name) or "download"
    encoded = quote(name.encode("utf-8", "surrogateescape"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


class Console:
    """The console over one store. ``routes()`` for the S3 app; ``own_app()`` for a port of its own."""

    def __init__(self, store: Any, config: Any, *, admin: Any = None, metrics: Any = None, notifier: Any = None,
                 session_ttl: float | None = None) -> None:
        self.store = store
        self.config = config
        self.admin = admin
        self.metrics = metrics
        self.notifier = notifier
        self.domains: list[str] = list(getattr(config, "domains", None) or [])
        self.credentials = ServerCredentials(config.root_user, config.root_password, getattr(store, "users", None))
        ttl = session_ttl if session_ttl is not None else getattr(config, "console_session_ttl", DEFAULT_TTL)
        self.sessions = SessionTable(ttl)
        self.limiter = LoginLimiter()
        self.rates = RateSampler(metrics)
        self.assets = load_assets()
        self._migration: Any = None
        bucket = r"buckets/(?P<bucket>[^/]+)"
        upload = bucket + r"/uploads/(?P<upload_id>[^/]+)"
        # (pattern after /api/, {method: handler}, name, needs a session, root only)
        self._api: list[tuple[re.Pattern[str], dict[str, Any], str, bool, bool]] = [
            (re.compile(r"login"), {"POST": self.login}, "login", False, False),
            (re.compile(r"logout"), {"POST": self.logout}, "logout", True, False),
            (re.compile(r"session"), {"GET": self.session_info}, "session", True, False),
            (re.compile(r"buckets"), {"GET": self.list_buckets, "POST": self.create_bucket}, "buckets", True, False),
            (re.compile(bucket), {"DELETE": self.delete_bucket}, "bucket", True, False),
            (re.compile(bucket + r"/objects"), {"GET": self.list_objects}, "objects", True, False),
            (re.compile(bucket + r"/object"), {"GET": self.object_details, "PUT": self.put_object}, "object",
             True, False),
            (re.compile(bucket + r"/download"), {"GET": self.download}, "download", True, False),
            (re.compile(bucket + r"/delete"), {"POST": self.delete_objects}, "delete", True, False),
            (re.compile(bucket + r"/share"), {"POST": self.share}, "share", True, False),
            (re.compile(bucket + r"/uploads"), {"POST": self.create_upload}, "upload.create", True, False),
            (re.compile(upload + r"/parts/(?P<part>[0-9]{1,5})"), {"PUT": self.upload_part}, "upload.part",
             True, False),
            (re.compile(upload + r"/complete"), {"POST": self.complete_upload}, "upload.complete", True, False),
            (re.compile(upload), {"DELETE": self.abort_upload}, "upload.abort", True, False),
            (re.compile(r"cluster"), {"GET": self.cluster}, "cluster", True, True),
            (re.compile(r"cluster/heal"), {"POST": self.heal_start}, "cluster.heal", True, True),
            (re.compile(r"users"), {"GET": self.list_users, "POST": self.add_user}, "users", True, True),
            (re.compile(r"users/(?P<access_key>[^/]+)"), {"DELETE": self.remove_user}, "user", True, True),
            (re.compile(r"users/(?P<access_key>[^/]+)/(?P<action>enable|disable)"), {"POST": self.enable_user},
             "user.enable", True, True),
            (re.compile(r"users/(?P<access_key>[^/]+)/policy"), {"PUT": self.set_user_policy}, "user.policy",
             True, True),
            (re.compile(r"policies"), {"GET": self.list_policies}, "policies", True, True),
        ]

    # -- wiring -------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        """The console on the S3 port: registered before the S3 catch-all (``create_app``'s
        ``extra_routes``); requests that are S3's after all go back to it."""
        return [web.route("*", PREFIX + "{tail:(?s:/.*)?}", self.dispatch, expect_handler=_continue_later)]

    def attach(self, app: web.Application) -> None:
        """Start and stop the request-rate sampler with ``app``."""
        async def start(_app: web.Application) -> None:
            self.rates.start()

        async def stop(_app: web.Application) -> None:
            await self.rates.stop()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)

    def own_app(self) -> web.Application:
        """The console alone (``--console-address``): ``/`` leads to ``/console/``."""
        from buckets.obs.access import METRICS_KEY, timing_middleware

        app = web.Application(middlewares=[timing_middleware],
                              handler_args={"max_field_size": 16384, "max_line_size": 16384,
                                            "auto_decompress": False})
        if self.metrics is not None:
            app[METRICS_KEY] = self.metrics

        async def root(request: web.Request) -> web.StreamResponse:
            request[OPS_API] = "console.page"
            raise web.HTTPFound(PREFIX + "/")

        app.router.add_route("GET", "/", root)
        app.router.add_route("*", PREFIX + "{tail:(?s:/.*)?}", self.dispatch, expect_handler=_continue_later)
        return app

    # -- dispatch -----------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        from buckets.s3.app import S3_HANDLER

        s3_handler = request.app.get(S3_HANDLER)
        if s3_handler is not None and _looks_s3(request, self.domains):
            return await s3_handler(request)
        request_id = request.get(REQUEST_ID)
        if not request_id:
            request_id = request[REQUEST_ID] = secrets.token_hex(8).upper()
        tail = request.match_info.get("tail") or ""
        try:
            if tail.startswith("/api/"):
                return await self._api_call(request, tail[len("/api/"):], request_id)
            request[OPS_API] = "console.page"
            if request.method not in ("GET", "HEAD"):
                raise ConsoleMethodNotAllowed()
            if tail == "":
                raise web.HTTPFound(PREFIX + "/")
            if tail in ("/", "/index.html"):
                return self._asset(request, "index.html")
            if tail.startswith("/static/"):
                return self._asset(request, tail[len("/static/"):])
            raise ConsoleNotFound()
        except BucketsError as error:
            return self._error(request, error.code, error.message, error.status, request_id)

    def _asset(self, request: web.Request, name: str) -> web.StreamResponse:
        asset = self.assets.get(name)
        if asset is None:
            raise ConsoleNotFound()
        headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == asset.etag:
            return _secure(web.Response(status=304, headers=headers))
        response = web.Response(status=200, body=asset.body, headers=headers)
        response.headers["Content-Type"] = asset.content_type
        return _secure(response, html=name.endswith(".html"))

    def _error(self, request: web.Request, code: str, message: str, status: int, request_id: str) -> web.Response:
        request[OPS_ERROR_CODE] = code
        if status >= 500:
            log.warning("request %s: console %s %s -> %s %s", request_id, request.method, request.path, status, code)
        return _secure(_answer({"code": code, "message": message, "request_id": request_id}, status))

    async def _api_call(self, request: web.Request, tail: str, request_id: str) -> web.StreamResponse:
        request[OPS_API] = "console.api"
        try:
            refusal = serving_refusal(self.store)
            if refusal is not None:  # a cluster node removed, or behind the control plane (as S3 is)
                raise refusal
            handler, params, name, needs_session, root_only = self._resolve(request, tail)
            request[OPS_API] = f"console.{name}"
            if not needs_session:
                return _secure(await handler(request, request_id))
            session = await self._session(request)
            request[OPS_ACCESS_KEY] = session.user
            if request.method not in ("GET", "HEAD"):
                self._check_csrf(request, session)
            ctx = ConsoleRequest(request=request, store=self.store, config=self.config,
                                 auth=console_auth(session.user), request_id=request_id)
            if root_only and not caller_of(ctx).root:
                raise RootOnly()
            return _secure(await handler(request, ctx, session, **params))
        except SessionError as error:
            response = self._error(request, error.code, error.message, 401, request_id)
            self._clear_cookies(response)
            return response
        except BucketsError as error:
            return self._error(request, error.code, error.message, error.status, request_id)
        except ConnectionResetError:
            log.info("request %s: client went away during console %s %s", request_id, request.method, request.path)
            error = IncompleteBody()
            return self._error(request, error.code, error.message, error.status, request_id)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("request %s: unhandled error in console %s %s", request_id, request.method, request.path)
            error = InternalError()
            return self._error(request, error.code, error.message, error.status, request_id)

    def _resolve(self, request: web.Request, tail: str) -> tuple[Any, dict[str, str], str, bool, bool]:
        for pattern, methods, name, needs_session, root_only in self._api:
            match = pattern.fullmatch(tail)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                raise ConsoleMethodNotAllowed(f"{request.method} is not allowed here; use {', '.join(methods)}")
            return handler, match.groupdict(), name, needs_session, root_only
        raise ConsoleNotFound("There is no such console API endpoint.")

    # -- sessions -----------------------------------------------------------------------------
    async def _session(self, request: web.Request) -> Session:
        session = self.sessions.lookup(request.cookies.get(COOKIE_NAME))
        secret = await self.credentials.secret_for(session.user)
        if not self.sessions.secret_matches(session, secret):
            self.sessions.revoke(session.sid)
            raise SessionError("SessionEnded", "The user was disabled or removed, or its secret changed: "
                                               "log in again.")
        return session

    @staticmethod
    def _check_csrf(request: web.Request, session: Session) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null" and urlsplit(origin).netloc != request.host:
            raise CrossOrigin()
        header = request.headers.get(CSRF_HEADER)
        cookie = request.cookies.get(CSRF_COOKIE_NAME)
        if not (session.csrf_matches(header) and session.csrf_matches(cookie)):
            raise CSRFRefused()

    def _set_cookies(self, request: web.Request, response: web.StreamResponse, session: Session, cookie: str) -> None:
        max_age = max(1, int(session.expires - time.time()))
        secure = request.secure
        response.set_cookie(COOKIE_NAME, cookie, max_age=max_age, path=PREFIX, httponly=True,
                            samesite="Strict", secure=secure)
        response.set_cookie(CSRF_COOKIE_NAME, session.csrf, max_age=max_age, path=PREFIX,
                            samesite="Strict", secure=secure)

    @staticmethod
    def _clear_cookies(response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE_NAME, path=PREFIX)
        response.del_cookie(CSRF_COOKIE_NAME, path=PREFIX)

    @staticmethod
    def _session_json(session: Session) -> dict[str, Any]:
        return {"user": session.user, "root": session.root, "csrf": session.csrf, "expires": session.expires}

    async def login(self, request: web.Request, request_id: str) -> web.StreamResponse:
        address = request.remote or ""
        if self.limiter.blocked_for(address) > 0:
            raise TooManyLogins()
        document = await self._json(request)
        access_key, secret = document.get("access_key"), document.get("secret_key")
        if not isinstance(access_key, str) or not isinstance(secret, str) or not access_key or not secret:
            raise InvalidArgument("send {\"access_key\": ..., \"secret_key\": ...}")
        expected = await self.credentials.secret_for(access_key)
        given = secret.encode("utf-8", "surrogateescape")
        # Compare against something even for an unknown user: the answer takes as long.
        good = hmac.compare_digest((expected or "\0" * 40).encode("utf-8", "surrogateescape"), given)
        if expected is None or not good:
            self.limiter.failed(address)
            log.info("console: failed login as %r from %s", access_key[:128], address)
            raise InvalidCredentials()
        self.limiter.succeeded(address)
        try:  # logging in again ends the session this browser had
            self.sessions.revoke(self.sessions.lookup(request.cookies.get(COOKIE_NAME)).sid)
        except SessionError:
            pass
        root = hmac.compare_digest(access_key.encode("utf-8", "surrogateescape"),
                                   self.config.root_user.encode("utf-8", "surrogateescape"))
        session, cookie = self.sessions.create(access_key, root, secret)
        request[OPS_ACCESS_KEY] = access_key
        log.info("console: %s logged in from %s", access_key, address)
        response = _answer(self._session_json(session))
        self._set_cookies(request, response, session, cookie)
        return response

    async def logout(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        self.sessions.revoke(session.sid)
        log.info("console: %s logged out", session.user)
        response = _answer({"logged_out": True})
        self._clear_cookies(response)
        return response

    async def session_info(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        return _answer(self._session_json(session))

    # -- request helpers ----------------------------------------------------------------------
    @staticmethod
    async def _json(request: web.Request, limit: int = MAX_JSON) -> dict[str, Any]:
        from buckets.admin.jsonio import json_body

        if request.content_type != "application/json":
            raise UnsupportedMediaType()
        if request.content_length is not None and request.content_length > limit:
            raise InvalidArgument(f"console request bodies are limited to {limit} bytes")
        await send_continue(request)
        body = bytearray()
        async for chunk in watch_body(request, request.content.iter_any()):  # a stalled body times out
            body += chunk
            if len(body) > limit:
                raise InvalidArgument(f"console request bodies are limited to {limit} bytes")
        return json_body(bytes(body))

    @staticmethod
    def _key(value: Any) -> str:
        if not isinstance(value, str) or value == "":
            raise InvalidArgument("an object key is required (key=...)", ArgumentName="key")
        check_key(value)
        return value

    async def _notify(self, ctx: ConsoleRequest, bucket: str, happenings: list[dict]) -> None:
        notifier = self.notifier
        if notifier is None or not happenings or not notifier.wants(bucket):
            return
        await notifier.emit(bucket, happenings, request_id=ctx.request_id, principal=ctx.auth.access_key,
                            source_ip=ctx.request.remote or "")

    def _usage(self) -> dict[str, list[int]]:
        registry = getattr(self.store, "registry", None)
        return getattr(registry, "usage", None) or {}

    # -- buckets ------------------------------------------------------------------------------
    async def list_buckets(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        await authorize(ctx, "s3:ListAllMyBuckets", None)
        usage = self._usage()
        out = []
        for info in await self.store.list_buckets():
            if not await _may_list(ctx, info):
                continue
            objects, size = (usage.get(info.name) or [0, 0])[:2]
            out.append({"name": info.name, "created": info.created, "owner": info.owner or self.config.root_user,
                        "objects": objects, "bytes": size})
        return _answer({"buckets": out})

    async def create_bucket(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        name = (await self._json(request)).get("name")
        if not isinstance(name, str):
            raise InvalidArgument("send {\"name\": \"bucket-name\"}")
        await authorize(ctx, "s3:CreateBucket", name)
        check_bucket_name(name)
        info = await self.store.make_bucket(name, owner_name(ctx), {})
        log.info("console: %s created bucket %s", session.user, name)
        return _answer({"name": info.name, "created": info.created}, 201)

    async def delete_bucket(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                            bucket: str) -> web.StreamResponse:
        await authorize(ctx, "s3:DeleteBucket", bucket)
        await self.store.delete_bucket(bucket)
        log.info("console: %s deleted bucket %s", session.user, bucket)
        return _answer({"name": bucket, "deleted": True})

    # -- objects ------------------------------------------------------------------------------
    async def list_objects(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                           bucket: str) -> web.StreamResponse:
        query = request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "/")
        if delimiter not in ("", "/"):
            raise InvalidArgument("delimiter is '/' (folders) or '' (every key)", ArgumentName="delimiter")
        limit_text = query.get("limit", str(DEFAULT_PAGE))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise InvalidArgument(f"limit is a number from 1 to {MAX_PAGE}", ArgumentName="limit",
                                  ArgumentValue=limit_text[:32])
        limit = int(limit_text)
        token = query.get("token")
        after = decode_token(token, "token") if token else ""
        await authorize(ctx, "s3:ListBucket", bucket,
                        context={"s3:prefix": prefix, "s3:delimiter": delimiter, "s3:max-keys": str(limit)})
        result = await self.store.list_objects(bucket, prefix=prefix, delimiter=delimiter, start_after=after,
                                               limit=limit)
        objects = [{"key": info.key, "size": info.size, "etag": info.etag, "last_modified": info.last_modified,
                    "storage_class": info.storage_class or "STANDARD"} for info in result.objects]
        next_token = encode_token(result.next_marker) if result.is_truncated and result.next_marker else None
        return _answer({"bucket": bucket, "prefix": prefix, "objects": objects, "prefixes": result.prefixes,
                        "next_token": next_token})

    async def object_details(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                             bucket: str) -> web.StreamResponse:
        from buckets.engine.crypto import check_customer_key

        key = self._key(request.query.get("key"))
        await authorize(ctx, "s3:GetObject", bucket, key)
        info = await self.store.head_object(bucket, key)
        check_customer_key(info.sse, None)  # an SSE-C object answers only to its key, as HeadObject does
        return _answer(_object_json(info))

    async def download(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                       bucket: str) -> web.StreamResponse:
        key = self._key(request.query.get("key"))
        await authorize(ctx, "s3:GetObject", bucket, key)
        # The first block read before the headers: a failure there is still a JSON error.
        reader = await self.store.get_object(bucket, key, begin=True)
        try:
            info = reader.info
            chunks = reader.__aiter__()
            try:
                response = web.StreamResponse(status=200, headers={
                    "Content-Type": info.content_type, "Content-Disposition": _attachment(key),
                    "ETag": f'"{info.etag}"', "Cache-Control": "no-store",
                    "Content-Security-Policy": "sandbox; default-src 'none'"})
                response.content_length = info.size
                _secure(response)
                await response.prepare(request)
                try:
                    while True:
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                        await response.write(chunk)
                        del chunk
                except ConnectionResetError:
                    log.info("request %s: client went away during a console download of %s/%s",
                             ctx.request_id, bucket, key)
                    return response
                except Exception:
                    # Headers are gone: a cut connection is the only honest signal left.
                    log.exception("request %s: console download of %s/%s failed mid-stream",
                                  ctx.request_id, bucket, key)
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await response.write_eof()
                return response
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
        finally:
            await reader.aclose()

    def _write_request(self, ctx: ConsoleRequest, content_type: str | None) -> ConsoleRequest:
        return ctx.with_headers(content_type=content_type or "application/octet-stream")

    async def put_object(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                         bucket: str) -> web.StreamResponse:
        """One streamed PUT (files the page does not send as multipart)."""
        key = self._key(request.query.get("key"))
        await authorize(ctx, "s3:PutObject", bucket, key)
        write = self._write_request(ctx, request.headers.get("Content-Type"))
        opts = put_options(write.headers)
        opts.access = await write_access(write, bucket)
        opts.checksum_algorithms = (UPLOAD_CHECKSUM,)
        body = await open_stream(ctx)
        info = await self.store.put_object(bucket, key, body.stream, body.size, opts)
        await self._notify(ctx, bucket, [{"event": EVENT_PUT, "key": key, "size": info.size, "etag": info.etag}])
        return _answer(_object_json(info))

    async def delete_objects(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                             bucket: str) -> web.StreamResponse:
        keys = (await self._json(request, MAX_DELETE_JSON)).get("keys")
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_DELETE_KEYS \
                or not all(isinstance(key, str) and key for key in keys):
            raise InvalidArgument(f"send {{\"keys\": [...]}} with 1 to {MAX_DELETE_KEYS} keys")
        await self.store.get_bucket(bucket)  # a missing bucket fails the whole call
        limit = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def delete_one(key: str) -> BucketsError | None:
            async with limit:
                try:
                    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
                        raise KeyTooLongError()
                    await authorize(ctx, "s3:DeleteObject", bucket, key)
                    await self.store.delete_object(bucket, key)
                    return None
                except BucketsError as error:
                    return error
                except Exception:
                    log.exception("request %s: console delete failed for %s/%r", ctx.request_id, bucket, key)
                    return InternalError()

        results = await asyncio.gather(*(delete_one(key) for key in keys))
        deleted = [key for key, error in zip(keys, results) if error is None]
        errors_out = [{"key": key, "code": error.code, "message": error.message}
                      for key, error in zip(keys, results) if error is not None]
        await self._notify(ctx, bucket, [{"event": EVENT_DELETE, "key": key} for key in deleted])
        return _answer({"deleted": deleted, "errors": errors_out})

    async def share(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                    bucket: str) -> web.StreamResponse:
        document = await self._json(request)
        key = self._key(document.get("key"))
        expires = document.get("expires", 3600)
        if isinstance(expires, bool) or not isinstance(expires, int) or not 1 <= expires <= MAX_PRESIGN_EXPIRES:
            raise InvalidArgument(f"expires is a number of seconds from 1 to {MAX_PRESIGN_EXPIRES} (7 days)",
                                  ArgumentName="expires")
        # A link the user could not use is no link: the same decision the S3 GET will make.
        await authorize(ctx, "s3:GetObject", bucket, key)
        await self.store.head_object(bucket, key)  # NoSuchKey now, not when someone opens it
        secret = await self.credentials.secret_for(session.user)
        if secret is None:
            raise AccessDenied()
        endpoint, host = self._s3_endpoint(request)
        url = presigned_get_url(endpoint=endpoint, host=host, bucket=bucket, key=key, access_key=session.user,
                                secret=secret, region=self.config.region, expires=expires)
        return _answer({"url": url, "expires": int(time.time()) + expires})

    def _s3_endpoint(self, request: web.Request) -> tuple[str, str]:
        """(``scheme://host[:port]``, Host header) of the S3 port as the browser reaches this
        server: the console's own address when it is on the S3 port, else its host name
        with the S3 port."""
        from buckets.s3.app import S3_HANDLER

        host = request.host
        if request.app.get(S3_HANDLER) is not None:
            scheme = "https" if request.secure else "http"
            return f"{scheme}://{host}", host
        scheme = "https" if getattr(self.config, "certs_dir", None) else "http"
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        port = int(self.config.port)
        host = name if (scheme, port) in (("http", 80), ("https", 443)) else f"{name}:{port}"
        return f"{scheme}://{host}", host

    # -- multipart ----------------------------------------------------------------------------
    async def create_upload(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                            bucket: str) -> web.StreamResponse:
        document = await self._json(request)
        key = self._key(document.get("key"))
        content_type = document.get("content_type")
        if content_type is not None and not isinstance(content_type, str):
            raise InvalidArgument("content_type must be a string")
        await authorize(ctx, "s3:PutObject", bucket, key)
        write = self._write_request(ctx, content_type)
        opts = put_options(write.headers)
        opts.access = await write_access(write, bucket)
        opts.checksum_algorithms = (UPLOAD_CHECKSUM,)
        opts.checksum_type = "FULL_OBJECT"
        info = await self.store.create_multipart_upload(bucket, key, opts)
        return _answer({"upload_id": info.upload_id, "key": key}, 201)

    async def upload_part(self, request: web.Request, ctx: ConsoleRequest, session: Session, bucket: str,
                          upload_id: str, part: str) -> web.StreamResponse:
        key = self._key(request.query.get("key"))
        await authorize(ctx, "s3:PutObject", bucket, key)
        body = await open_stream(ctx)
        info = await self.store.put_part(bucket, key, upload_id, int(part), body.stream, body.size, PutOptions())
        return _answer({"number": info.number, "etag": info.etag, "size": info.size})

    async def complete_upload(self, request: web.Request, ctx: ConsoleRequest, session: Session, bucket: str,
                              upload_id: str) -> web.StreamResponse:
        document = await self._json(request, MAX_DELETE_JSON)
        key = self._key(document.get("key"))
        parts = document.get("parts")
        if not isinstance(parts, list) or not 1 <= len(parts) <= 10000 or not all(
                isinstance(p, dict) and isinstance(p.get("number"), int) and not isinstance(p.get("number"), bool)
                and isinstance(p.get("etag"), str) for p in parts):
            raise InvalidArgument("send {\"key\": ..., \"parts\": [{\"number\": 1, \"etag\": \"...\"}, ...]}")
        await authorize(ctx, "s3:PutObject", bucket, key)
        chosen = [CompletePart(p["number"], p["etag"].strip('"')) for p in parts]
        info = await self.store.complete_multipart_upload(bucket, key, upload_id, chosen)
        await self._notify(ctx, bucket, [{"event": EVENT_COMPLETE, "key": key, "size": info.size,
                                          "etag": info.etag}])
        return _answer(_object_json(info))

    async def abort_upload(self, request: web.Request, ctx: ConsoleRequest, session: Session, bucket: str,
                           upload_id: str) -> web.StreamResponse:
        key = self._key(request.query.get("key"))
        await authorize(ctx, "s3:AbortMultipartUpload", bucket, key)
        await self.store.abort_multipart_upload(bucket, key, upload_id)
        return _answer({"upload_id": upload_id, "aborted": True})

    # -- cluster (root) -----------------------------------------------------------------------
    def _admin(self) -> Any:
        if self.admin is None:
            raise InternalError("The console was started without the admin API.")
        return self.admin

    async def _migration_status(self, request: web.Request) -> dict[str, Any]:
        if getattr(self.store, "cluster_node", None) is None:
            return {"state": "none", "cluster": False}
        if self._migration is None:
            from buckets.admin.migration_api import MigrationApi

            self._migration = MigrationApi(self.store)
        return json.loads((await self._migration.status(request, b"")).text)

    async def cluster(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        admin = self._admin()
        info = json.loads((await admin.info(request, b"")).text)
        try:
            migration = await self._migration_status(request)
        except BucketsError as error:  # the control plane may be out of reach: say so, show the rest
            migration = {"state": "unknown", "error": error.message}
        return _answer({"info": info, "heal": admin.heal.status(), "migration": migration,
                        "rates": self.rates.rates()})

    async def heal_start(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        log.info("console: %s started a heal pass", session.user)
        return await self._admin().heal_start(request, b"")

    # -- users (root): the admin API's handlers -----------------------------------------------
    async def list_users(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        return await self._admin().list_users(request, b"")

    async def list_policies(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        return await self._admin().list_policies(request, b"")

    async def add_user(self, request: web.Request, ctx: ConsoleRequest, session: Session) -> web.StreamResponse:
        document = await self._json(request)
        access_key = document.get("access_key")
        if not isinstance(access_key, str):
            raise InvalidArgument("send {\"access_key\": ..., \"secret_key\": ..., \"policy\": ...}")
        if self.store.users.registry.get_user(access_key) is not None:
            raise UserAlreadyExists(f"a user {access_key!r} exists already")
        body = json.dumps({name: document[name] for name in ("secret_key", "policy", "enabled")
                           if name in document}).encode()
        response = await self._admin().put_user(request, body, access_key)
        response.set_status(201)
        return response

    async def remove_user(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                          access_key: str) -> web.StreamResponse:
        response = await self._admin().remove_user(request, b"", access_key)
        self.sessions.revoke_user(access_key)
        return response

    async def enable_user(self, request: web.Request, ctx: ConsoleRequest, session: Session, access_key: str,
                          action: str) -> web.StreamResponse:
        response = await self._admin().enable_user(request, b"", access_key, action)
        if action == "disable":
            self.sessions.revoke_user(access_key)
        return response

    async def set_user_policy(self, request: web.Request, ctx: ConsoleRequest, session: Session,
                              access_key: str) -> web.StreamResponse:
        policy = (await self._json(request)).get("policy")
        return await self._admin().set_user_policy(request, json.dumps({"policy": policy}).encode(), access_key)
