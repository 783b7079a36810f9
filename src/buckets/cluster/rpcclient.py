"""The peer RPC client: one :class:`PeerClient` per peer node, all on one pooled session.

Owns calling a peer (:meth:`PeerClient.call` for control calls, :meth:`call_stream_in`
to stream bytes to a handler, :meth:`call_stream_out` to stream bytes back), the
timeouts of every call, and the peer's health as this node sees it:

``online``
    calls go through.
``suspect``
    a call timed out, failed to connect or lost its connection; calls still go through
    (the next success makes the peer online again).
``offline``
    ``failures_to_offline`` consecutive failures, or one refused connection (nothing
    listens there: the node is down). Calls fail at once with :class:`PeerOffline`
    instead of waiting for a timeout each, and a background probe (``node/ping``) every
    ``probe_interval`` seconds brings the peer back online by itself.

Typed errors a peer's handler raises are raised here as the same class and say nothing
about health (the peer answered). A 403 (:class:`PeerAuthRefused`: another secret, or
clocks apart) is not a health failure either, but it keeps a probing peer offline.

Timeouts (:class:`PeerTimeouts`): ``connect`` for the TCP connect; ``call`` for the
whole of a control call, including the wait for a pooled connection, and for the answer
to an upload once its last byte is sent (the peer may fsync); ``idle`` for a streamed
call: the longest the peer may take to accept the next chunk of an upload or to send the
next bytes of a download.

Must not: parse S3, or know what the services do.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp

from buckets.runtime import cancel_and_wait
from buckets.cluster import rpcchannel as channels
from buckets.cluster import rpcframe as wire
from buckets.cluster.rpcauth import DEFAULT_WINDOW, NONCE_HEADER, PeerSigner, body_declaration
from buckets.cluster.rpcerrors import (
    PeerAuthRefused, PeerError, PeerOffline, PeerProtocolError, PeerTimeout, PeerUnreachable, error_from_wire,
)

log = logging.getLogger("buckets.cluster.rpc")

POOL_LIMIT = 512  # connections from this process to all peers
POOL_LIMIT_PER_HOST = 64  # to one peer: enough for every disk of a node streaming at once
KEEPALIVE = 15.0  # idle pooled connections are closed well before any server's idle timeout
MAX_RESULT = 64 << 20  # bytes of a msgpack result (control answers are small by design)
CHANNEL_RETRY = 60.0  # a peer that would not open a channel is called over HTTP this long


@dataclass(frozen=True, slots=True)
class PeerTimeouts:
    connect: float = 2.0
    call: float = 10.0
    idle: float = 10.0
    probe: float = 2.0  # a probe's whole ping


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    failures_to_offline: int = 3
    probe_interval: float = 1.0


class PeerState(str, Enum):
    ONLINE = "online"
    SUSPECT = "suspect"
    OFFLINE = "offline"


class PeerHealth:
    """The state machine above, with counters for metrics and ``/health/cluster``."""

    def __init__(self, policy: HealthPolicy) -> None:
        self.policy = policy
        self.state = PeerState.ONLINE
        self.since = time.time()
        self.consecutive_failures = 0
        self.last_error = ""
        self.last_ok: float | None = None
        self.heard = float("-inf")  # time.monotonic() of the peer's last answer (or streamed frame)
        self.slow_timeouts = 0  # calls that timed out while the peer answered others (not failures)
        self.calls = 0
        self.failures = 0
        self.times_offline = 0

    def _move(self, state: PeerState) -> None:
        if state is not self.state:
            self.state, self.since = state, time.time()

    def succeeded(self) -> bool:
        """Record an answer from the peer; True if that brought it back from offline."""
        was_offline = self.state is PeerState.OFFLINE
        self.consecutive_failures = 0
        self.last_ok = time.time()
        self.heard = time.monotonic()
        self._move(PeerState.ONLINE)
        return was_offline

    def failed(self, error: str, *, definitive: bool = False) -> bool:
        """Record a transport failure; True if the peer went offline because of it."""
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = error
        if self.state is PeerState.OFFLINE:
            return False
        if definitive or self.consecutive_failures >= self.policy.failures_to_offline:
            self._move(PeerState.OFFLINE)
            self.times_offline += 1
            return True
        self._move(PeerState.SUSPECT)
        return False

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state.value, "since": self.since, "consecutive_failures": self.consecutive_failures,
                "last_error": self.last_error, "last_ok": self.last_ok, "calls": self.calls,
                "failures": self.failures, "times_offline": self.times_offline,
                "slow_timeouts": self.slow_timeouts}


# --- one pooled session per process (per event loop) ---------------------------------------

_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = weakref.WeakKeyDictionary()
_BULK_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary())
# aiohttp's read buffer per response (its default is 64 KiB): a shard read answers 100 KiB to
# 1 MiB at once, and a smaller buffer pauses and resumes the socket several times per answer.
# A stream holds at most about twice this (aiohttp pauses reading above 2x) plus one frame.
READ_BUFSIZE = 256 << 10


_CLIENT_SSL: list[ssl.SSLContext] = []  # --certs-dir: what https peers are verified with


def set_client_tls(context: ssl.SSLContext | None) -> None:
    """Verify https peers with ``context`` (the node's certificate and CAs/ besides the
    system store); sessions made from now on use it."""
    _CLIENT_SSL[:] = [context] if context is not None else []


def _peer_ssl() -> ssl.SSLContext | bool:
    return _CLIENT_SSL[0] if _CLIENT_SSL else True


_LINGER_RESET = struct.pack("ii", 1, 0)


def _resetting_socket(addr_info: tuple) -> socket.socket:
    """A peer connection's socket whose close discards what it has not sent yet (``SO_LINGER``
    0: a reset, not a FIN after the queue drains). A connection is closed with bytes queued only
    when a call is cut: a write dropping a lagging shard stream, a hedged read's spare beating
    it. Drained, those bytes would hold a slow link for seconds after nobody wants them (a
    socket's send buffer grows to megabytes), and the calls behind them (the cleanup deletes,
    the index's replica calls) would time out on a live peer. A connection closed after its
    answer has nothing queued: the reset changes nothing for it."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    return sock


def shared_session(*, bulk: bool = False) -> aiohttp.ClientSession:
    """The process's peer session (one per event loop: a session cannot change loops).

    ``bulk``: the session for long-lived byte streams (a GET's shard streams, which live as
    long as the S3 client takes to read the object), with its own connections, so they never
    hold the pooled connections control calls wait for. Its connector has no limit of its
    own: callers bound how many streams they open (``remotedisk.READ_STREAMS_PER_PEER``).
    """
    loop = asyncio.get_running_loop()
    sessions = _BULK_SESSIONS if bulk else _SESSIONS
    session = sessions.get(loop)
    if session is None or session.closed:
        if bulk:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=KEEPALIVE, ttl_dns_cache=60,
                                             ssl=_peer_ssl(), socket_factory=_resetting_socket)
        else:
            connector = aiohttp.TCPConnector(limit=POOL_LIMIT, limit_per_host=POOL_LIMIT_PER_HOST,
                                             keepalive_timeout=KEEPALIVE, ttl_dns_cache=60, ssl=_peer_ssl(),
                                             socket_factory=_resetting_socket)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                        read_bufsize=READ_BUFSIZE)
        sessions[loop] = session
    return session


async def close_shared_session() -> None:
    """Close this loop's peer sessions (at shutdown, after the clients are closed)."""
    loop = asyncio.get_running_loop()
    for sessions in (_SESSIONS, _BULK_SESSIONS):
        session = sessions.pop(loop, None)
        if session is not None:
            await session.close()


# --- calls ---------------------------------------------------------------------------------


def _never_sent(failure: BaseException) -> bool:
    """True when a call failed because its pooled connection was already closing when the
    request was written (the peer closed an idle keep-alive connection just as we picked it
    from the pool): aiohttp refuses the write before a byte leaves, so the peer never saw
    the call and sending it again on a new connection cannot run it twice. A reset the
    kernel reports (an errno) may come after bytes left, and is not retried."""
    cause = failure.__cause__
    return (isinstance(failure, aiohttp.ClientOSError) and isinstance(cause, ConnectionResetError)
            and cause.errno is None)


class _IdleWatchdog:
    """Bounds how long an upload may stall on the peer, not on the producer of the bytes:
    armed while aiohttp writes a chunk, disarmed while the caller's iterator makes the next."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self._timeout: asyncio.Timeout | None = None
        self.producer_error: BaseException | None = None
        self.armed_at = time.monotonic()  # when the wait it bounds now began (``_transport_error``)

    def attach(self, timeout: asyncio.Timeout) -> None:
        self._timeout = timeout

    def detach(self) -> None:
        self._set(None)
        self._timeout = None

    def arm(self) -> None:
        self.armed_at = time.monotonic()
        self._set(asyncio.get_running_loop().time() + self.idle)

    def disarm(self) -> None:
        self._set(None)

    def _set(self, when: float | None) -> None:
        if self._timeout is None:
            return
        try:
            self._timeout.reschedule(when)
        except RuntimeError:  # the call already finished (an early answer): nothing to guard
            self._timeout = None


class PeerStream:
    """The bytes a peer streams back, as an async iterator; raises the peer's typed error
    if its handler failed midway, and :class:`PeerProtocolError` if the stream was cut.

    Iterate it to the end, or close it (``await stream.aclose()`` or ``async with``):
    a stream left half-read holds a connection until it is closed.
    """

    def __init__(self, client: PeerClient, response: aiohttp.ClientResponse) -> None:
        self._client = client
        self._response: aiohttp.ClientResponse | None = response
        self.received = 0

    def __aiter__(self) -> PeerStream:
        return self

    async def __anext__(self) -> bytes:
        response = self._response
        if response is None:
            raise StopAsyncIteration
        waited = time.monotonic()
        try:
            async with asyncio.timeout(self._client.timeouts.idle):  # the peer sent nothing meanwhile
                kind, payload = await self._next_frame(response)
        except asyncio.CancelledError:
            await self.aclose()
            raise
        except PeerError:
            await self.aclose()
            raise
        except Exception as error:  # noqa: BLE001 - timeouts, resets, cut streams
            await self.aclose()
            raise self._client._transport_error(error, "streaming from it", waited) from error
        self._client.health.heard = time.monotonic()
        if kind == wire.FRAME_DATA:
            self.received += len(payload)
            return payload
        if kind == wire.FRAME_END:
            response.release()
            self._response = None
            raise StopAsyncIteration
        await self.aclose()
        raise error_from_wire(payload)

    async def _next_frame(self, response: aiohttp.ClientResponse) -> tuple[bytes, Any]:
        content = response.content
        while True:
            kind, length = wire.FRAME_HEADER.unpack(await content.readexactly(wire.FRAME_HEADER.size))
            if kind == wire.FRAME_DATA and length <= wire.MAX_FRAME:
                if length:
                    return kind, await content.readexactly(length)
                continue
            if kind == wire.FRAME_END and length == 0:
                if await content.read(1):
                    raise PeerProtocolError("bytes after the end of a peer stream", endpoint=self._client.endpoint)
                return kind, None
            if kind == wire.FRAME_ERROR and length <= wire.MAX_ERROR_FRAME:
                try:
                    return kind, wire.unpack(await content.readexactly(length))
                except ValueError as error:  # msgpack's decode errors are ValueErrors
                    raise PeerProtocolError(f"unreadable error record in a peer stream: {error}",
                                            endpoint=self._client.endpoint) from None
            raise PeerProtocolError(f"bad frame {kind!r} of {length} bytes in a peer stream",
                                    endpoint=self._client.endpoint)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """``aclose`` for code that cannot await (a finalizer)."""
        response, self._response = self._response, None
        if response is not None:
            response.close()  # not read to the end: this connection cannot be reused

    async def __aenter__(self) -> PeerStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class PeerClient:
    """Calls to one peer node (``endpoint`` like ``http://127.0.0.2:9000``), signed with
    the cluster ``secret``."""

    def __init__(self, endpoint: str, secret: bytes, *, timeouts: PeerTimeouts | None = None,
                 policy: HealthPolicy | None = None, session: aiohttp.ClientSession | None = None) -> None:
        endpoint = endpoint.rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"peer endpoint {endpoint!r} must be an http:// or https:// URL")
        self.endpoint = endpoint
        self.timeouts = timeouts or PeerTimeouts()
        self.health = PeerHealth(policy or HealthPolicy())
        self._signer = PeerSigner(secret)
        self._session = session
        self._probe_task: asyncio.Task[None] | None = None
        self._closed = False
        self._channel: channels.CallerChannel | None = None
        self._channel_lock: asyncio.Lock | None = None
        self._channel_refused_until = 0.0
        self.use_channel = True  # control calls on a channel (rpcchannel); False: every call over HTTP

    @property
    def state(self) -> PeerState:
        return self.health.state

    def status(self) -> dict[str, Any]:
        """What metrics and ``/health/cluster`` show about this peer."""
        return {"endpoint": self.endpoint, **self.health.snapshot()}

    # -- the three kinds of call ------------------------------------------------------------------
    async def call(self, service: str, method: str, args: dict[str, Any] | None = None, *,
                   timeout: float | None = None) -> Any:
        """A control call: msgpack arguments in, msgpack result out, within ``timeout``
        (default ``timeouts.call``) seconds in all."""
        self._check_online()
        return await self._call(service, method, args, timeout or self.timeouts.call)

    async def call_stream_in(self, service: str, method: str, args: dict[str, Any] | None,
                             body: AsyncIterable[bytes], *, length: int | None = None) -> Any:
        """Stream ``body`` to a handler registered with ``stream_in=True``; its msgpack result.

        With ``length`` the peer knows the size up front and the iterator must yield
        exactly that many bytes; without it the body is sent chunked. If ``body`` raises,
        the upload is cut (the peer's handler sees the body end early) and the same
        exception is raised here.
        """
        self._check_online()
        path = wire.path_for(service, method)
        packed = wire.pack(args or {})
        headers = self._signer.headers("POST", path, "", packed, body_declaration(length, streamed=True))
        headers["Content-Type"] = "application/octet-stream"
        if length is not None:
            headers["Content-Length"] = str(wire.ARGS_PREFIX.size + len(packed) + length)
        dog = _IdleWatchdog(self.timeouts.idle)
        dog.armed_at = time.monotonic()
        data = self._upload(wire.args_prefix(packed) + packed, body, length, dog)
        # The watchdog bounds the upload; aiohttp's read timeout starts once the body is
        # sent and bounds the answer, which may include an fsync: a control call's time.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeouts.call,
                                        sock_connect=self.timeouts.connect, sock_read=self.timeouts.call)
        self.health.calls += 1
        try:
            async with asyncio.timeout(None) as guard:
                dog.attach(guard)
                async with self._session_().post(self.endpoint + path, data=data, headers=headers,
                                                  timeout=timeout) as response:
                    dog.detach()
                    result, error = await self._answer(response)
        except (TimeoutError, aiohttp.ClientError, OSError) as failure:
            if dog.producer_error is not None:  # aiohttp reports our source's failure as its own
                raise dog.producer_error from None
            raise self._transport_error(failure, f"streaming {service}/{method} to it", dog.armed_at) from failure
        if error is not None:
            raise error
        return result

    async def call_stream_out(self, service: str, method: str, args: dict[str, Any] | None = None, *,
                              bulk: bool = False) -> PeerStream:
        """Start a call whose answer is a byte stream; errors before the first byte (the
        handler's typed error, an offline peer) are raised here, later ones while iterating.
        ``bulk``: on the session for long-lived streams (see :func:`shared_session`)."""
        self._check_online()
        path = wire.path_for(service, method)
        packed = wire.pack(args or {})
        headers = self._signer.headers("POST", path, "", packed, body_declaration(None, streamed=False))
        # No socket read timeout: aiohttp's runs whenever the socket is read, also while our
        # consumer is busy elsewhere (a heal writing what it read to a slow disk) and the data
        # waits in the buffer; the stream times out only while its consumer waits for the
        # peer (``PeerStream``). The answer's head comes within the call timeout.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeouts.call,
                                        sock_connect=self.timeouts.connect)
        self.health.calls += 1
        response: aiohttp.ClientResponse | None = None
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeouts.call):  # until the answer's head
                try:
                    response = await self._session_(bulk).post(self.endpoint + path,
                                                               data=wire.args_prefix(packed) + packed,
                                                               headers=headers, timeout=timeout)
                except (aiohttp.ClientError, OSError) as failure:
                    if not _never_sent(failure):
                        raise
                    log.debug("%s/%s to %s: the pooled connection was closed before the call was sent; "
                              "sending it again on a new one", service, method, self.endpoint)
                    response = await self._session_(bulk).post(self.endpoint + path,
                                                               data=wire.args_prefix(packed) + packed,
                                                               headers=headers, timeout=timeout)
            if response.status == 200 and response.content_type == wire.STREAM_TYPE:
                self._succeeded()
                stream, response = PeerStream(self, response), None
                return stream
            _, error = await self._answer(response)
        except (TimeoutError, aiohttp.ClientError, OSError) as failure:
            raise self._transport_error(failure, f"calling {service}/{method}", started) from failure
        finally:
            if response is not None:
                response.release()
        raise error or PeerProtocolError(f"{service}/{method} answered a result, not a stream",
                                         endpoint=self.endpoint)

    async def ping(self) -> dict[str, Any]:
        """``node/ping``, even while the peer is offline (this is how the probe asks)."""
        return await self._call("node", "ping", None, self.timeouts.probe)

    async def close(self) -> None:
        """Stop the probe and close the channel. The shared session stays open for other clients."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
        task, self._probe_task = self._probe_task, None
        if task is not None:
            await cancel_and_wait(task)

    # -- internals -------------------------------------------------------------------------------
    def _session_(self, bulk: bool = False) -> aiohttp.ClientSession:
        return self._session if self._session is not None else shared_session(bulk=bulk)

    def _check_online(self) -> None:
        if self.health.state is PeerState.OFFLINE:
            raise PeerOffline(f"peer {self.endpoint} is offline ({self.health.last_error})", endpoint=self.endpoint)

    async def _call(self, service: str, method: str, args: dict[str, Any] | None, total: float) -> Any:
        started = time.monotonic()
        path = wire.path_for(service, method)
        packed = wire.pack(args or {})
        if self.use_channel and len(packed) <= channels.MAX_CHANNEL_ARGS:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + total
            answer = await self._call_on_channel(service, method, packed, total)
            if answer is not None:
                kind, value = answer
                if kind == channels.RESULT:
                    return value
                if kind in (channels.ERROR, channels.INTERNAL) and isinstance(value, dict):
                    raise error_from_wire(value)
                raise PeerProtocolError(f"peer {self.endpoint} answered a call with kind {kind!r}",
                                        endpoint=self.endpoint)
            total = max(deadline - loop.time(), 0.001)  # no channel to this peer: over HTTP
        headers = self._signer.headers("POST", path, "", packed, body_declaration(None, streamed=False))
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=self.timeouts.connect)
        self.health.calls += 1
        for attempt in range(2):
            try:
                async with self._session_().post(self.endpoint + path, data=wire.args_prefix(packed) + packed,
                                                  headers=headers, timeout=timeout) as response:
                    result, error = await self._answer(response)
                break
            except (TimeoutError, aiohttp.ClientError, OSError) as failure:
                if attempt == 0 and _never_sent(failure):
                    log.debug("%s/%s to %s: the pooled connection was closed before the call was sent; "
                              "sending it again on a new one", service, method, self.endpoint)
                    continue
                raise self._transport_error(failure, f"calling {service}/{method}", started) from failure
        if error is not None:
            raise error
        return result

    async def _call_on_channel(self, service: str, method: str, packed: bytes,
                               total: float) -> tuple[int, Any] | None:
        """``(kind, value)`` of a call sent on this peer's channel, or None when the peer opens
        no channel (it is then called over HTTP). A channel that closes before the call left
        is replaced once; one that closes after is a lost connection, as over HTTP."""
        self.health.calls += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(total):
                for attempt in range(2):
                    channel = await self._channel_for_call()
                    if channel is None:
                        self.health.calls -= 1  # counted again by the HTTP call
                        return None
                    try:
                        answer = await channel.call(service, method, packed)
                    except channels.ChannelClosed as closed:
                        if closed.unsent and attempt == 0:
                            continue
                        raise
                    break
        except (TimeoutError, aiohttp.ClientError, OSError) as failure:
            raise self._transport_error(failure, f"calling {service}/{method}", started) from failure
        self._succeeded()
        return answer

    async def _channel_for_call(self) -> channels.CallerChannel | None:
        channel = self._channel
        if channel is not None and channel.usable:
            return channel
        loop = asyncio.get_running_loop()
        if self._channel_refused_until > loop.time() or self._closed:
            return None
        if self._channel_lock is None:
            self._channel_lock = asyncio.Lock()
        async with self._channel_lock:  # one opening at a time; the others use what it opened
            channel = self._channel
            if channel is not None and channel.usable:
                return channel
            headers = self._signer.headers("GET", channels.CHANNEL_PATH, "", b"", body_declaration(None, streamed=False))
            try:
                async with asyncio.timeout(self.timeouts.connect + self.timeouts.probe):
                    ws = await self._session_(bulk=True).ws_connect(
                        self.endpoint + channels.CHANNEL_PATH, headers=headers, heartbeat=channels.HEARTBEAT,
                        compress=0, max_msg_size=MAX_RESULT + 4096,
                        timeout=aiohttp.ClientWSTimeout(ws_close=self.timeouts.connect))
            except aiohttp.WSServerHandshakeError as refused:
                if refused.status == 403:
                    raise self._refused(refused.headers) from None
                log.info("peer %s opens no channel (HTTP %s): calling it over HTTP for %.0f s",
                         self.endpoint, refused.status, CHANNEL_RETRY)
                self._channel_refused_until = loop.time() + CHANNEL_RETRY
                return None
            if self._closed:
                await ws.close()
                return None
            self._channel = channels.CallerChannel(
                ws, channels.channel_key(self._signer.key, headers[NONCE_HEADER]), self.endpoint)
            return self._channel

    async def _upload(self, head: bytes, body: AsyncIterable[bytes], length: int | None,
                      dog: _IdleWatchdog) -> AsyncIterator[bytes]:
        dog.arm()
        yield head
        dog.disarm()
        # One chunk is held back until the next one (or the end) arrives, so the peer never
        # has every declared byte from a producer that turns out to have more, or to fail.
        sent, pending = 0, b""
        try:
            async for chunk in body:
                if not chunk:
                    continue
                sent += len(chunk)
                if length is not None and sent > length:
                    raise ValueError(f"the body is longer than its declared {length} bytes")
                if pending:
                    dog.arm()
                    yield pending
                    dog.disarm()
                pending = chunk
            if length is not None and sent != length:
                raise ValueError(f"the body ended after {sent} of its declared {length} bytes")
        except Exception as error:  # the caller's iterator failed: cut the upload, re-raise it
            dog.producer_error = error
            raise
        if pending:
            dog.arm()
            yield pending
            dog.disarm()

    async def _answer(self, response: aiohttp.ClientResponse) -> tuple[Any, BaseException | None]:
        """``(result, None)``, or ``(None, the typed error the peer answered with)``: returned,
        not raised, so no handler error is ever mistaken for a transport failure. Raises
        only transport errors (reading the body) and :class:`PeerError`."""
        status, kind = response.status, response.content_type
        if status == 200 and kind == wire.RESULT_TYPE:
            result = self._decode(await self._read_bounded(response, MAX_RESULT))
            self._succeeded()
            return result, None
        if status in (wire.PEER_ERROR_STATUS, 500) and kind == wire.ERROR_TYPE:
            record = self._decode(await self._read_bounded(response, wire.MAX_ERROR_FRAME))
            self._succeeded()
            return None, error_from_wire(record)
        if status == 403:
            return None, self._refused(response.headers)
        raise PeerProtocolError(f"peer {self.endpoint} answered HTTP {status} ({kind}): not a Buckets peer "
                                "of this version?", endpoint=self.endpoint)

    def _refused(self, headers) -> PeerAuthRefused:
        """The peer refused our signature; its ``Date`` says whether our clocks alone explain it."""
        offset = clock_offset_from(headers)
        self.health.last_error = ("refused our signature (cluster secret or clock mismatch)" if offset is None
                                  else f"refused our signature: its clock is {offset:+.0f} s from ours")
        return PeerAuthRefused(endpoint=self.endpoint, clock_offset=offset)

    def _decode(self, data: bytes) -> Any:
        try:
            return wire.unpack(data)
        except ValueError as error:
            raise PeerProtocolError(f"peer {self.endpoint} sent an unreadable answer: {error}",
                                    endpoint=self.endpoint) from None

    @staticmethod
    async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
        if response.content_length is not None and response.content_length > limit:
            raise PeerProtocolError(f"answer of {response.content_length} bytes, over the {limit} limit")
        data = bytearray()
        while len(data) <= limit:
            more = await response.content.read(limit + 1 - len(data))
            if not more:
                return bytes(data)
            data += more
        raise PeerProtocolError(f"answer over the {limit} byte limit")

    def _succeeded(self) -> None:
        if self.health.succeeded():
            log.info("peer %s is back online", self.endpoint)

    def _transport_error(self, error: BaseException, doing: str, since: float | None = None) -> PeerError:
        """The typed error for a failed exchange; records it in the peer's health. A timeout of a
        wait that began at ``since`` (``time.monotonic()``) while the peer answered other calls
        after that is not a failure of the peer: it is alive, and slow (a saturated link, where
        a small call waits behind megabytes queued ahead of it). Its ``PeerTimeout`` says so
        (``alive``), and the health is left as it is: a peer that answers nothing is still
        taken offline after ``failures_to_offline`` timeouts."""
        if isinstance(error, TimeoutError) and since is not None and self.health.heard > since:
            typed = PeerTimeout(f"peer {self.endpoint} did not answer in time ({doing}), though it answered "
                                "other calls meanwhile", endpoint=self.endpoint)
            typed.alive = True
            self.health.slow_timeouts += 1
            return typed
        definitive = False
        if isinstance(error, aiohttp.ClientConnectorError):
            definitive = isinstance(error.os_error, ConnectionRefusedError)
            typed: PeerError = PeerUnreachable(f"cannot connect to peer {self.endpoint}: {error.strerror or error}",
                                               endpoint=self.endpoint)
            typed.unsent = True  # no connection, so no request
        elif isinstance(error, TimeoutError):  # aiohttp's connect/read timeouts are TimeoutErrors too
            typed = PeerTimeout(f"peer {self.endpoint} did not answer in time ({doing})", endpoint=self.endpoint)
        elif isinstance(error, asyncio.IncompleteReadError | aiohttp.ClientPayloadError):
            typed = PeerProtocolError(f"the stream from peer {self.endpoint} was cut", endpoint=self.endpoint)
        else:
            typed = PeerUnreachable(f"lost the connection to peer {self.endpoint} ({doing}): "
                                    f"{type(error).__name__}: {error}", endpoint=self.endpoint)
        if self.health.failed(typed.message, definitive=definitive):
            log.warning("peer %s is offline: %s", self.endpoint, typed.message)
            self._start_probe()
        return typed

    def _start_probe(self) -> None:
        if self._closed or (self._probe_task is not None and not self._probe_task.done()):
            return
        self._probe_task = asyncio.get_running_loop().create_task(self._probe(), name=f"peer-probe {self.endpoint}")

    async def _probe(self) -> None:
        while self.health.state is PeerState.OFFLINE and not self._closed:
            await asyncio.sleep(self.health.policy.probe_interval)
            try:
                await self.ping()
            except PeerError as error:
                log.debug("probe of %s failed: %s", self.endpoint, error.message)
            except Exception:  # noqa: BLE001 - the probe must survive anything a peer answers
                log.exception("probe of %s failed unexpectedly", self.endpoint)


def clock_offset_from(headers) -> float | None:
    """The answering peer's clock minus ours by its ``Date`` header (HTTP's, whole seconds),
    when it is beyond the window a peer signature is valid for; None otherwise (or no Date)."""
    from email.utils import parsedate_to_datetime

    try:
        sent = parsedate_to_datetime(headers.get("Date", "")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    offset = sent - time.time()
    return offset if abs(offset) > DEFAULT_WINDOW - 1 else None
