"""The peer RPC server: ``/_buckets/peer/v1/<service>/<method>`` on the node's own port.

Owns the handler registry and the request pipeline every peer call goes through:

1. authenticate (:class:`~buckets.cluster.rpcauth.PeerVerifier`) before anything else
   looks at the path: an unsigned, badly signed, stale or replayed request gets the same
   403 with the same fixed body whether or not the method exists;
2. route to a registered handler (unknown: ``UnknownPeerMethod``), check that the HTTP
   framing matches the signed body declaration, read the length-prefixed msgpack control
   message (bounded) and check it against its signed SHA-256;
3. call the handler with the decoded arguments (and, for methods registered with
   ``stream_in=True``, a :class:`BodyReader` over the rest of the request body);
4. answer with the msgpack result, or stream what the handler's async iterator yields in
   frames, or send a raised error as a typed record (see :mod:`rpcframe` and
   :mod:`rpcerrors`).

Nothing is buffered whole: the request body is read by the handler at its own pace
(aiohttp pauses the socket when its buffer is full) and a streamed answer is written
chunk by chunk with the transport's backpressure.

Must not: parse S3, or know what the services do; a node registers them (the wiring
into ``buckets server`` is :func:`build_node_rpc`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from buckets import __version__
from buckets.cluster import rpcchannel as channels
from buckets.cluster import rpcframe as wire
from buckets.cluster.rpcauth import (
    DEFAULT_WINDOW, NONCE_HEADER, AuthRefused, PeerVerifier, ReplayCache, SignedRequest, cluster_secret,
)
from buckets.cluster.rpcerrors import (
    BadPeerRequest, PeerBodyIncomplete, PeerError, UnknownPeerMethod, error_to_wire,
)
from buckets.errors import BucketsError, DiskError, FormatError, InternalError
from buckets.obs.access import METRICS_KEY, OPS_API, OPS_ERROR_CODE
from buckets.s3.router import bucket_from_host

log = logging.getLogger("buckets.cluster.rpc")

Handler = Callable[..., Any]  # (args) or (args, body) -> result | Awaitable[result] | AsyncIterator[bytes]
TYPED_ERRORS = (BucketsError, DiskError, FormatError)
# How long a stopping node waits for its callers to close their channels after GOAWAY (they do
# once their calls on it are answered); calls still running then get the shutdown timeout.
DRAIN_SECONDS = 5.0


class PeerNotReady(PeerError):
    """The peer answered, but the service asked for is not serving yet (the node is still
    starting: its store is not open) or any more (it is stopping). Retryable: callers count
    the peer's replica (or disk) as unavailable for this call, as for a peer that is down,
    and the peer's health is untouched, since it answered. A ``PeerError`` so that code
    which handles an unreachable peer handles this the same way."""

    default_message = "The peer node is starting or stopping; retry shortly."


class BodyReader:
    """The streamed part of a request body, after the control message.

    A thin layer over aiohttp's ``StreamReader``: it knows the declared length (None for
    a chunked stream), counts what arrived, and turns a body that ends early or a sender
    that went away into :class:`PeerBodyIncomplete`, so handlers catch one typed error
    (and clean up their staging) instead of aiohttp's transport exceptions.
    """

    def __init__(self, content: Any, length: int | None) -> None:
        self._content = content
        self.length = length  # declared byte count; None: chunked, ends at the last chunk
        self.received = 0

    def at_eof(self) -> bool:
        return self.length == self.received if self.length is not None else self._content.at_eof()

    async def read(self, n: int = 1 << 20) -> bytes:
        """Up to ``n`` bytes as they arrive (at least one); ``b""`` once the body is complete."""
        if self.length is not None:
            n = min(n, self.length - self.received)
            if n <= 0:
                return b""
        try:
            data = await self._content.read(n)
        except Exception as error:  # noqa: BLE001 - aiohttp's payload errors, resets
            raise PeerBodyIncomplete(f"request body cut after {self.received} bytes: {error}") from error
        if not data and self.length is not None and self.received < self.length:
            raise PeerBodyIncomplete(f"request body ended after {self.received} of {self.length} bytes")
        self.received += len(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        if self.length is not None and self.received + n > self.length:
            raise PeerBodyIncomplete(f"asked for {n} bytes, {self.length - self.received} left in the body")
        try:
            data = await self._content.readexactly(n)
        except Exception as error:  # noqa: BLE001 - IncompleteReadError, payload errors, resets
            raise PeerBodyIncomplete(f"request body cut after {self.received} bytes: {error}") from error
        self.received += n
        return data

    async def iter_chunks(self, size: int = 1 << 20) -> AsyncIterator[bytes]:
        while chunk := await self.read(size):
            yield chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.iter_chunks()


@dataclass(frozen=True, slots=True)
class Registration:
    fn: Handler
    stream_in: bool


class PeerRpcServer:
    """A registry of peer RPC handlers and the aiohttp route that serves them."""

    def __init__(self, verifier: PeerVerifier, *, max_args: int = wire.DEFAULT_MAX_ARGS) -> None:
        self.verifier = verifier
        self.max_args = max_args
        self._handlers: dict[tuple[str, str], Registration] = {}
        self._channels: set[channels.ServedChannel] = set()
        # The apps sent away (``go_away``): a channel one of them opens later is sent away as it
        # opens (its upgrade was read before the port closed, its handler ran after the GOAWAY).
        self._gone: weakref.WeakSet = weakref.WeakSet()
        self.refused = 0  # requests answered 403 (for metrics)
        # The S3 domains (``buckets server --domain``): a virtual-host-style request's
        # /_buckets/peer/... is an object key in its bucket, handed to the S3 handler.
        self.domains: list[str] = []
        self.register("node", "ping", self._ping)

    def register(self, service: str, method: str, fn: Handler, *, stream_in: bool = False) -> None:
        """Serve ``service/method`` with ``fn``.

        ``fn(args)``, or ``fn(args, body)`` when ``stream_in``, may be sync or async and
        returns a msgpack-able result, or an async iterator of bytes to stream back.
        Errors it raises (``BucketsError``, ``DiskError``, ``FormatError`` subclasses)
        reach the caller as the same type.
        """
        wire.path_for(service, method)  # validates the names
        if (service, method) in self._handlers:
            raise ValueError(f"peer method {service}/{method} is already registered")
        self._handlers[(service, method)] = Registration(fn, stream_in)

    def methods(self) -> list[str]:
        return sorted(f"{service}/{method}" for service, method in self._handlers)

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", wire.ROUTE_PREFIX + "/{tail:.*}", self.dispatch)]

    @staticmethod
    async def _ping(args: dict[str, Any]) -> dict[str, Any]:
        return {"time": time.time()}

    # -- the pipeline ---------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.domains and bucket_from_host(request.headers.get("Host", ""), self.domains) is not None:
            from buckets.s3.app import S3_HANDLER

            return await request.app[S3_HANDLER](request)
        request[OPS_API] = "peer"
        url = request.rel_url
        try:
            signed = self.verifier.verify(request.method, url.raw_path, url.raw_query_string, request.headers)
        except AuthRefused as refused:
            return self._forbidden(request, refused.reason)
        if url.path == channels.CHANNEL_PATH:
            return await self._channel(request, signed)
        try:
            registration, name = self._route(request)
            request[OPS_API] = f"peer.{name}"
            args = await self._read_args(request, signed)
            if args is None:
                return self._forbidden(request, "control message does not match its signed digest")
            if registration.stream_in:
                body = BodyReader(request.content, signed.body_length if signed.streamed else 0)
                result = registration.fn(args, body)
            elif signed.streamed:
                raise BadPeerRequest(f"peer method {name} takes no request body")
            else:
                result = registration.fn(args)
            if inspect.isawaitable(result):
                result = await result
            if hasattr(result, "__aiter__"):
                return await self._stream(request, name, result)
            return web.Response(status=200, body=wire.pack(result), content_type=wire.RESULT_TYPE)
        except TYPED_ERRORS as error:
            return self._error(request, error)
        except Exception:
            log.exception("peer request %s %s: unhandled error", request.method, request.path)
            return self._error(request, InternalError(), status=500)

    # -- channels (rpcchannel) ------------------------------------------------------------------
    async def _channel(self, request: web.Request, signed: SignedRequest) -> web.StreamResponse:
        """Serve a signed upgrade to a channel until the caller closes it."""
        request[OPS_API] = "peer.channel"
        ws = web.WebSocketResponse(max_msg_size=self.max_args + 4096, heartbeat=channels.HEARTBEAT,
                                   compress=False)
        if signed.streamed or request.method != "GET" or not ws.can_prepare(request).ok:
            return self._error(request, BadPeerRequest("a peer channel opens with a bodiless WebSocket upgrade (GET)"))
        try:
            await ws.prepare(request)
        except ConnectionError:  # the caller gave up (its opening timed out, it stopped) before our 101
            log.debug("peer channel from %s: the caller left before the upgrade was answered", request.remote)
            # Not ``ws``: aiohttp would finish a half-prepared WebSocket with an error. A plain
            # answer meets the closed connection, which aiohttp expects.
            return web.Response(status=400, text="the caller left before the upgrade was answered")
        metrics = request.app.get(METRICS_KEY)
        key = channels.channel_key(self.verifier.key, request.headers[NONCE_HEADER])
        channel = channels.ServedChannel(ws, key, self._invoke, metrics.observe if metrics is not None else None,
                                         request.app, request.remote or "?")
        self._channels.add(channel)
        if request.app in self._gone:
            await channel.go_away()
        try:
            await channel.run()
        finally:
            self._channels.discard(channel)
        return ws

    async def _invoke(self, service: str, method: str, args: Any) -> tuple[int, Any]:
        """One call from a channel: ``(kind, value)`` as :mod:`rpcchannel` answers it."""
        try:
            registration = self._handlers.get((service, method))
            if registration is None:
                raise UnknownPeerMethod(f"no peer method {service}/{method}")
            if registration.stream_in:
                raise BadPeerRequest(f"peer method {service}/{method} takes a body: it is called over HTTP")
            if not isinstance(args, dict):
                raise BadPeerRequest("the control message must be a msgpack map")
            result = registration.fn(args)
            if inspect.isawaitable(result):
                result = await result
            if hasattr(result, "__aiter__"):
                aclose = getattr(result, "aclose", None)
                if aclose is not None:
                    await aclose()
                raise BadPeerRequest(f"peer method {service}/{method} answers a stream: it is called over HTTP")
            return channels.RESULT, result
        except TYPED_ERRORS as error:
            # What the access line of a failed HTTP call said (a channel's calls have none).
            log.info("peer call %s/%s on a channel answered %s: %s", service, method, type(error).__name__, error)
            return channels.ERROR, error_to_wire(error)
        except Exception:
            log.exception("peer call %s/%s on a channel: unhandled error", service, method)
            return channels.INTERNAL, error_to_wire(InternalError())

    async def go_away(self, app: Any = None) -> None:
        """Ask the callers on this node's channels (those ``app`` serves; all without it) to
        open new ones for their next calls: the node stops, or its port passes to another app.
        A channel ``app`` opens after this is sent away as it opens (without ``app``, only the
        channels open now are)."""
        if app is not None:
            self._gone.add(app)
        for channel in list(self._channels):
            if app is None or channel.app is app:
                await channel.go_away()

    async def drain(self, app: Any = None, timeout: float = DRAIN_SECONDS) -> None:
        """``go_away``, then wait until the callers have closed those channels (each does once
        its calls on it are answered), for at most ``timeout`` seconds. A channel opened
        meanwhile (a caller's next call, while the port still listens) is sent away too."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await self.go_away(app)
            if not any(app is None or c.app is app for c in self._channels) \
                    or asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.02)

    @property
    def open_channels(self) -> int:
        return len(self._channels)

    def _forbidden(self, request: web.Request, reason: str) -> web.Response:
        self.refused += 1
        request[OPS_ERROR_CODE] = "AccessDenied"
        peer = request.remote or "?"
        log.info("peer request from %s refused: %s", peer, reason)
        response = web.Response(status=403, body=wire.FORBIDDEN_BODY, content_type="text/plain")
        # Always close: the unread body must not be parsed as a next request, and closing
        # only sometimes (when the body had not arrived yet) would make answers differ.
        response.force_close()
        return response

    def _route(self, request: web.Request) -> tuple[Registration, str]:
        if request.method != "POST":
            raise BadPeerRequest(f"peer RPC takes POST, not {request.method}")
        path = request.rel_url.path
        parts = path[len(wire.PREFIX) + 1:].split("/") if path.startswith(wire.PREFIX + "/") else []
        registration = self._handlers.get((parts[0], parts[1])) if len(parts) == 2 else None
        if registration is None:
            raise UnknownPeerMethod(f"no peer method {path}")
        return registration, f"{parts[0]}.{parts[1]}"

    async def _read_args(self, request: web.Request, signed: SignedRequest) -> dict[str, Any] | None:
        """The decoded control message, or None when it is not the one that was signed."""
        if signed.args_length > self.max_args:
            raise BadPeerRequest(f"control message of {signed.args_length} bytes, the limit is {self.max_args}")
        framed = wire.ARGS_PREFIX.size + signed.args_length
        declared = signed.body_length
        if signed.body == "stream":
            if request.content_length is not None:
                raise BadPeerRequest("a streamed body must be sent chunked")
        elif request.content_length != framed + (declared or 0):
            raise BadPeerRequest(f"Content-Length {request.content_length} does not match the declared body")
        reader = BodyReader(request.content, None)
        prefix = await reader.readexactly(wire.ARGS_PREFIX.size)
        (length,) = wire.ARGS_PREFIX.unpack(prefix)
        if length != signed.args_length:
            return None
        raw = await reader.readexactly(length)
        if not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), signed.args_sha256):
            return None
        try:
            args = wire.unpack(raw)
        except Exception:  # noqa: BLE001 - msgpack raises several types for bad input
            raise BadPeerRequest("the control message is not valid msgpack") from None
        if not isinstance(args, dict):
            raise BadPeerRequest("the control message must be a msgpack map")
        return args

    def _error(self, request: web.Request, error: BaseException, status: int = wire.PEER_ERROR_STATUS) -> web.Response:
        record = error_to_wire(error)
        request[OPS_ERROR_CODE] = record["type"]
        log.debug("peer request %s answered %s: %s", request.path, record["type"], record["message"])
        return web.Response(status=status, reason=wire.PEER_ERROR_REASON if status == wire.PEER_ERROR_STATUS else None,
                            body=wire.pack(record), content_type=wire.ERROR_TYPE)

    async def _stream(self, request: web.Request, name: str, chunks: AsyncIterator[bytes]) -> web.StreamResponse:
        iterator = chunks.__aiter__()
        try:
            # The first chunk before the status line: an error opening the source (a
            # missing file) is then a plain typed error answer, not a stream that fails.
            try:
                first: bytes | None = await iterator.__anext__()
            except StopAsyncIteration:
                first = None
            response = web.StreamResponse(status=200, headers={"Content-Type": wire.STREAM_TYPE})
            try:
                # (The caller may have gone before the head: a hedged read that a spare
                # already answered cancels its stream at once.)
                await response.prepare(request)
                chunk = first
                while chunk is not None:
                    await self._write_data(response, chunk)
                    try:
                        chunk = await iterator.__anext__()
                    except StopAsyncIteration:
                        chunk = None
                await response.write(wire.frame_header(wire.FRAME_END, 0))
            except TYPED_ERRORS as error:
                await self._write_error_frame(response, request, error)
            except ConnectionError:
                log.info("peer %s went away during a streamed %s answer", request.remote, name)
                return response
            except Exception:
                log.exception("peer request %s %s: unhandled error while streaming", request.method, request.path)
                await self._write_error_frame(response, request, InternalError())
            await response.write_eof()
            return response
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    async def _write_data(response: web.StreamResponse, chunk: bytes) -> None:
        view = memoryview(chunk)
        for start in range(0, len(view), wire.MAX_FRAME):
            piece = view[start:start + wire.MAX_FRAME]
            await response.write(wire.frame_header(wire.FRAME_DATA, len(piece)))
            await response.write(piece)

    async def _write_error_frame(self, response: web.StreamResponse, request: web.Request,
                                 error: BaseException) -> None:
        record = wire.pack(error_to_wire(error))
        request[OPS_ERROR_CODE] = type(error).__name__
        await response.write(wire.frame_header(wire.FRAME_ERROR, len(record)) + record)


# --- the node's own peer endpoint ------------------------------------------------------------


def register_node_info(server: PeerRpcServer, config: Any, store: Callable[[], Any],
                       disks: int | None = None) -> None:
    """Serve ``node/info``: version, deployment id, address, disk count, clock. ``store()``
    is the open store, or None while a cluster node is still starting (the deployment id is
    then empty and the disk count is ``disks``, the node's command line's)."""

    def info(args: dict[str, Any]) -> dict[str, Any]:
        current = store()
        count = getattr(current, "disk_count", None) if current is not None else disks
        return {"version": __version__, "deployment_id": str(getattr(current, "deployment_id", "") or ""),
                "address": config.address, "disks": int(count or 0), "time": time.time(),
                "ready": current is not None}

    server.register("node", "info", info)


def build_node_rpc(store: Any, config: Any, *, window: float = DEFAULT_WINDOW) -> PeerRpcServer:
    """The peer RPC server of ``buckets server``: signed with the cluster secret, serving
    ``node/ping`` and ``node/info``: what a single node serves. A cluster node builds its own
    server with the disk and index services and its own ``node/info``
    (``buckets.cluster.node.ClusterNode``)."""
    secret = cluster_secret(config.cluster_secret, config.root_user, config.root_password)
    server = PeerRpcServer(PeerVerifier(secret, window=window, replay=ReplayCache()))
    register_node_info(server, config, lambda: store)

    def join_info(args: dict) -> None:
        # A node started with --join naming this single node waits: `cluster add-node` here
        # makes this node a cluster of one first (buckets.cluster.convert), then answers.
        raise PeerNotReady("this node is a single node, not a cluster yet: run `buckets-admin cluster add-node` "
                           "on it to add the joining node (it becomes a cluster of one first)")

    server.register("cluster", "join_info", join_info)
    return server
