"""The S3 aiohttp application: `create_app(store, cfg)`.

Owns the request pipeline every S3 call goes through: a request id, the error
middleware (every `BucketsError` becomes S3 XML with its status; anything else is a bug,
logged with the request id and answered as InternalError), routing (path- and
virtual-host-style, see `buckets.s3.router`), authentication, and dispatch to the
handler of the operation. Every response carries `x-amz-request-id`, `x-amz-id-2` and
`Server: Buckets`, set just before headers go out so streamed responses get them too, and
the CORS headers of the bucket's matching rule when the request has an `Origin`
(`buckets.s3.corsrules`). A preflight `OPTIONS` is never authenticated.
Requests too malformed to parse never reach the pipeline: aiohttp answers them 400, and
`ClientProtocolErrorLogger` logs them as one INFO line instead of an ERROR traceback.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import sys
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger

from buckets.errors import AccessDenied, BucketsError, IncompleteBody, InternalError, MethodNotAllowed, NotImplementedErr
from buckets.obs.access import REQUEST_ID, S3_ACCESS_KEY, S3_OPERATION, S3_TARGET
from buckets.obs.endpoints import serving_refusal
from buckets.registry.store import storage_failure
from buckets.s3 import corsrules
from buckets.s3.auth import METHOD_ANONYMOUS, AuthContext, authenticate
from buckets.s3.context import DELETED_KEYS, WRITTEN_KEY, S3Request, region_is_strict
from buckets.s3.credentials import ServerCredentials
from buckets.s3.errors import InvalidURI, error_response
from buckets.iam.actions import OPERATION_ACTIONS, VERSION_ACTIONS
from buckets.s3.handlers import OPERATIONS
from buckets.s3.handlers.notification import NOTIFIER_KEY
from buckets.s3.permissions import authorize, caller_of, check_expected_owner
from buckets.s3.router import Target, parse_target, select_operation

log = logging.getLogger("buckets.s3")

SERVER_NAME = "Buckets"
# Operations that notify (buckets.notify), with the event each produces.
EVENT_OPERATIONS = {
    "PutObject": "s3:ObjectCreated:Put", "PostObject": "s3:ObjectCreated:Post",
    "CopyObject": "s3:ObjectCreated:Copy", "CompleteMultipartUpload": "s3:ObjectCreated:CompleteMultipartUpload",
    "DeleteObject": "s3:ObjectRemoved:Delete", "DeleteObjects": "s3:ObjectRemoved:Delete",
}


# Request ids without a syscall each (the OS random source costs a GIL round trip on
# the event loop): a random per-process prefix and a counter.
_ID_PREFIX = os.urandom(4).hex().upper()
_ID_COUNTER = itertools.count(1)
_HOST_TAG = os.urandom(24)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08X}"


def _host_id(request_id: str = "") -> str:
    return base64.b64encode(_HOST_TAG + request_id.encode()).decode("ascii")


@web.middleware
async def s3_error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request_id = request.get(REQUEST_ID) or _new_request_id()
    request[REQUEST_ID] = request_id
    try:
        return await handler(request)
    except BucketsError as err:
        error = err
    except ConnectionResetError:
        # The client went away mid-request; the engine has already cleaned up. Nobody is
        # left to read an answer, so this is not a server fault.
        log.info("request %s: client disconnected during %s %s", request_id, request.method, request.path)
        error = IncompleteBody()
    except web.HTTPNotFound:
        if request.raw_path.startswith("/"):
            raise
        # Asterisk form (``OPTIONS *``) or authority form (``CONNECT host:443``): no route
        # matches a target that is not a path; answer as S3 would, in XML.
        error = MethodNotAllowed() if request.method == "CONNECT" else InvalidURI()
    except web.HTTPException:
        raise
    except Exception as exc:
        failed = storage_failure(exc)  # the registry's disk failed under a read: 503, logged there once
        if failed is not None:
            error = failed
        else:
            log.exception("request %s: unhandled error in %s %s", request_id, request.method, request.path)
            error = InternalError()
    target: Target | None = request.get(S3_TARGET)
    resource = target.resource if target is not None else (error.resource or request.path)
    if error.status >= 500 and error.code != "NotImplemented":
        log.warning("request %s: %s %s -> %s %s", request_id, request.method, request.path,
                    error.status, error.code)
    return error_response(error, request_id=request_id, host_id=_host_id(request_id), resource=resource,
                          head=request.method == "HEAD")


async def _stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID) or _new_request_id()
    request[REQUEST_ID] = request_id
    response.headers["x-amz-request-id"] = request_id
    response.headers["x-amz-id-2"] = _host_id(request_id)
    response.headers["Server"] = SERVER_NAME
    if request.can_read_body and (not request.content.is_eof() or request.content.exception() is not None):
        # Answered before the body arrived (an error, or a client still waiting for
        # 100 Continue), or the body's framing was broken: the unread body would be parsed
        # as the next request, so this connection cannot be reused. Tell the client, as S3
        # does.
        response.headers["Connection"] = "close"
        response.force_close()
    elif request.message.upgrade and response.status != 101:
        # An upgrade this server declines (``Upgrade: h2c``: S3 is HTTP/1.1 here). aiohttp's
        # C parser (3.14) drops whatever the client sent after such a request in the same
        # read, so a request pipelined behind it would never be answered: close instead,
        # and the client sends it again on a new connection, as after any closed keep-alive.
        response.headers["Connection"] = "close"
        response.force_close()


async def _defer_continue(request: web.Request) -> None:
    """Do not answer `Expect: 100-continue` before routing and auth: the body module sends
    100 Continue once the request is known to be acceptable (see `buckets.s3.body`)."""
    return None


class S3Service:
    """The catch-all handler: route, authenticate, dispatch."""

    def __init__(self, store: Any, cfg: Any) -> None:
        self.store = store
        self.cfg = cfg
        self.domains: list[str] = list(getattr(cfg, "domains", None) or [])
        self.region: str = getattr(cfg, "region", "us-east-1")
        # Clients carry whatever default region their user configured (eu-west-1, rclone's
        # "other-v2-signature", s3cmd's "US"); like MinIO without a configured region, any
        # region in the credential scope is accepted (the signature still binds it) unless
        # the operator asked for a strict one.
        self.signing_region: str | None = self.region if region_is_strict(cfg) else None
        self.credentials = ServerCredentials(cfg.root_user, cfg.root_password, getattr(store, "users", None))
        self.notifier: Any = None  # buckets.notify.Notifier, when the server has webhook targets

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refusal = serving_refusal(self.store)
        if refusal is not None:  # a cluster node removed, or behind the control plane: 503
            raise refusal
        target = parse_target(request.headers.get("Host", ""), request.raw_path, self.domains)
        request[S3_TARGET] = target
        if request.method == "OPTIONS":
            # A CORS preflight is never signed; the browser sends it to the URL of the actual
            # request, whose presigned query it does not sign for OPTIONS: do not verify it.
            auth = AuthContext(access_key=None, method=METHOD_ANONYMOUS, content_sha256=None)
        else:
            auth = await authenticate(request, self.credentials, region=self.signing_region,
                                      bucket_from_host=target.host_bucket)
        request[S3_ACCESS_KEY] = auth.access_key
        operation = select_operation(request.method, target, request.query, request.headers)
        request[S3_OPERATION] = operation  # read by the access log and metrics (buckets.obs)
        handler = OPERATIONS.get(operation)
        if handler is None:
            raise NotImplementedErr(f"{operation} is not implemented by this server.")
        s3req = S3Request(request=request, store=self.store, config=self.cfg, target=target,
                          operation=operation, request_id=request[REQUEST_ID], auth=auth)
        if operation not in OPERATION_ACTIONS:  # fail closed: an operation with no action is root's
            if not caller_of(s3req).root:
                raise AccessDenied()
        elif OPERATION_ACTIONS[operation] is not None:
            action = OPERATION_ACTIONS[operation]
            if "versionId" in request.query:  # a version named by id needs the version's action
                action = VERSION_ACTIONS.get(action, action)
            await authorize(s3req, action, target.bucket, target.key)
        if target.bucket is not None and "x-amz-expected-bucket-owner" in request.headers \
                and operation != "CreateBucket":
            check_expected_owner(s3req, await self.store.bucket_record(target.bucket))
        response = await handler(s3req)
        if self.notifier is not None and operation in EVENT_OPERATIONS and response.status < 300 \
                and self.notifier.wants(target.bucket):
            await self._notify(s3req, response)  # queued durably before the answer goes out
        return response

    async def _notify(self, req: S3Request, response: web.StreamResponse) -> None:
        event = EVENT_OPERATIONS[req.operation]
        request = req.request
        version = response.headers.get("x-amz-version-id")
        if req.operation == "DeleteObjects":
            # (key, version id, whether a delete marker was written) per key it deleted
            items = request.get(DELETED_KEYS) or []
        else:
            # A DELETE without a version id that wrote a delete marker (a versioned bucket)
            # is AWS's ObjectRemoved:DeleteMarkerCreated; one by version id is :Delete.
            marker = (req.operation == "DeleteObject" and "versionId" not in request.query
                      and response.headers.get("x-amz-delete-marker") == "true")
            items = [(request.get(WRITTEN_KEY) or req.target.key, version, marker)]
        happenings = []
        for key, version_id, marker in items:
            happening = {"event": "s3:ObjectRemoved:DeleteMarkerCreated" if marker else event, "key": key}
            if version_id:
                happening["version_id"] = version_id
            if event.startswith("s3:ObjectCreated"):
                try:
                    info = await self.store.head_object(req.bucket, key)
                    happening.update(size=info.size, etag=info.etag)
                except BucketsError:  # replaced or deleted meanwhile: what the answer said
                    happening.update(size=0, etag=response.headers.get("ETag", "").strip('"'))
            happenings.append(happening)
        await self.notifier.emit(req.bucket, happenings, request_id=req.request_id,
                                 principal=req.auth.access_key or "anonymous", source_ip=request.remote or "")


class ClientProtocolErrorLogger(logging.LoggerAdapter):
    """The logger aiohttp's connection handler uses (``aiohttp.server``), made quiet about
    clients that do not speak HTTP properly.

    aiohttp answers a request it cannot parse (bad header token, bad chunk size, a line
    over the size limit) with 400 itself, then logs it at ERROR with a traceback, as if
    the server were broken. That is the client's fault: it becomes one INFO line here
    (the access log records the 400 as well). Everything else aiohttp logs, including
    exceptions from handlers, passes through unchanged.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            self.logger.info(f"{msg}: malformed HTTP request (%s)", *args, _one_line(error))
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def _one_line(error: HttpProcessingError) -> str:
    """``400 BadHttpMessage: Invalid header token: b'Bad Header'``: aiohttp's message
    without its caret-marker line, squeezed onto one line and capped."""
    lines = [line.strip() for line in str(error.message or "").splitlines()]
    text = " ".join(line for line in lines if line and set(line) - set("^~ "))
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{error.code} {type(error).__name__}: {text}"


def _unlock_users(store: Any, cfg: Any) -> None:
    """Stored user secrets are sealed under a key derived from the root credentials; give
    the user table that key so SigV4 can use the secrets of `buckets-admin user add` users."""
    users = getattr(store, "users", None)
    if users is None or not hasattr(users, "set_kek") or not hasattr(store, "deployment_id"):
        return
    from buckets.engine.users import derive_kek

    users.set_kek(derive_kek(cfg.root_user, cfg.root_password, store.deployment_id))


# The S3 catch-all handler, for an extra route that finds a request is S3's after all (the
# admin API gives back a virtual-host-style request: there /_buckets/... is an object key).
S3_HANDLER = web.AppKey("buckets_s3_handler")


def create_app(store: Any, cfg: Any, *, extra_routes: list | None = None,
               extra_middlewares: list | None = None, notifier: Any = None) -> web.Application:
    """The S3 API over `store`; `cfg` needs region, domains, root_user, root_password
    (and may set region_strict: only then must requests be signed for `region`).

    ``extra_routes`` (aiohttp RouteDefs: metrics, health, admin) are registered before the
    S3 catch-all so they win; ``extra_middlewares`` run outside the S3 error middleware.
    """
    _unlock_users(store, cfg)
    app = web.Application(middlewares=[*(extra_middlewares or []), s3_error_middleware],
                          handler_args={"max_field_size": 16384, "max_line_size": 16384,
                                        # Bodies are stored as sent: Content-Encoding (gzip, br,
                                        # ...) is the object's metadata, never decoded here.
                                        "auto_decompress": False,
                                        "logger": ClientProtocolErrorLogger(server_logger)})
    service = S3Service(store, cfg)
    service.notifier = notifier
    app[NOTIFIER_KEY] = notifier
    if notifier is not None:
        async def start_notifier(_app: web.Application) -> None:
            notifier.start()

        async def stop_notifier(_app: web.Application) -> None:
            await notifier.stop()

        app.on_startup.append(start_notifier)
        app.on_cleanup.append(stop_notifier)
    if extra_routes:
        app.router.add_routes(extra_routes)
    # (?s): a path may hold a line feed (a key or bucket name with %0A); a bare '.' does not
    # match it, and aiohttp would answer such a request with a plain-text 404 of its own.
    app.router.add_route("*", "/{tail:(?s:.*)}", service.handle, expect_handler=_defer_continue)
    app[S3_HANDLER] = service.handle
    app.on_response_prepare.append(_stamp_headers)
    app.on_response_prepare.append(corsrules.response_hook(store, S3_TARGET))  # CORS headers of a matching rule
    return app
