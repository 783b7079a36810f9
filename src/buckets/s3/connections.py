"""Slow and greedy clients: connection limits and the timeouts aiohttp does not have.

A client on an open network must not be able to hold the server by being slow. aiohttp
closes idle keep-alive connections (``keepalive_timeout``, set to ``idle_timeout``) but
has no header-read timeout, no send-stall timeout and no bound on connections; this
module adds them where they belong, in the connection's protocol object:

* **header timeout**: a request header must arrive whole within ``header_timeout``
  seconds, counted from the connection's opening for the first request and from the
  first byte of the next request on a kept-alive connection (Go's ``ReadHeaderTimeout``
  semantics; before that first byte the connection is idle, and the idle timeout
  applies). A client that sent part of a header is answered ``400 RequestTimeout``; one
  that sent nothing at all is closed silently, as an idle connection is.
* **send stall**: a response the client stops reading (the socket accepts no bytes for
  ``body_timeout`` seconds) is abandoned and the connection dropped. Slow readers that
  keep reading are never cut.
* **connection limits**: at most ``max_connections`` open connections, and at most
  ``max_connections_per_client`` from one IP address. A connection over a limit gets
  ``503 SlowDown`` (which SDKs retry with back-off) and is closed at once.

Request bodies that stall are ended by :func:`watch_body` (used by ``buckets.s3.body``):
it sits on the handler's side of the body stream, so it knows when the server is really
waiting for bytes (after ``100 Continue`` went out, not while the server itself applies
backpressure) and can answer ``400 RequestTimeout`` through the normal error path.

Cost on the hot path: per connection one timer; per read of the socket two integer
comparisons; per request at most one clock read. Timers are reused lazily (as aiohttp's
own keep-alive timer is): a deadline moving later only reschedules when the old one fires.

The subclass relies on a few attributes of ``aiohttp.web_protocol.RequestHandler``
(``_request_count``, ``_waiter``, ``_loop``, ``_paused``) and of ``aiohttp.web.Server``
(``_kwargs``, ``_loop``); ``tests/integration/test_slow_clients.py`` fails if an aiohttp
release changes what they mean.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from buckets.errors import RequestTimeout, SlowDown
from buckets.s3.xmlio import XmlBuilder

try:
    import fcntl
    import termios

    _TIOCOUTQ: int | None = termios.TIOCOUTQ  # SIOCOUTQ on Linux: a socket's unsent/unacked bytes
except (ImportError, AttributeError):  # not a POSIX system
    _TIOCOUTQ = None

log = logging.getLogger("buckets.connections")

FD_RESERVE = 256  # descriptors kept for the registry, logs and disk files outside connections
REPORT_INTERVAL = 60.0  # seconds between two log lines about the same kind of event
DEFAULT_BODY_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The settings of ``buckets.cli.config.Config`` this module enforces."""

    header_timeout: float = 10.0
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    idle_timeout: float = 75.0
    max_connections: int = 4096
    max_connections_per_client: int = 512  # 0: no per-address limit

    @classmethod
    def from_config(cls, config: Any) -> "ConnectionLimits":
        defaults = cls()
        return cls(**{item.name: getattr(config, item.name, getattr(defaults, item.name))
                      for item in fields(cls)})


def _error_bytes(status: str, error: Any) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection (sent without a request)."""
    doc = XmlBuilder("Error", namespace=False)
    doc.elem("Code", error.code).elem("Message", error.default_message)
    body = doc.finish()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\nServer: Buckets\r\n\r\n")
    return head.encode("ascii") + body


_SLOW_DOWN = _error_bytes("503 Service Unavailable", SlowDown)
_REQUEST_TIMEOUT = _error_bytes("400 Bad Request", RequestTimeout)


def client_address(peername: Any) -> str:
    """The IP address connection limits count by; IPv4-mapped IPv6 counts as IPv4."""
    if isinstance(peername, tuple) and peername:
        host = str(peername[0])
        return host[7:] if host.startswith("::ffff:") and "." in host else host
    return ""  # a Unix socket: one client


def fit_to_fd_limit(wanted: int) -> tuple[int, int | None]:
    """``(max_connections, soft open-file limit)`` for ``wanted`` connections.

    Each connection costs its socket plus, on average, one disk file while it reads or
    writes; ``FD_RESERVE`` more are kept for the rest of the process. The soft limit is
    raised toward the hard one when that is needed (as Go and MinIO do at start-up); if it
    still falls short the connection limit is lowered instead of failing with EMFILE.
    """
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to fit
        return wanted, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY:
        return wanted, None
    return max(1, min(wanted, (soft - FD_RESERVE) // 2)), soft


def unsent_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes in the kernel's send queue of ``transport``'s socket (sent but not yet
    acknowledged by the client, or not sent yet); -1 where the system cannot tell."""
    sock = transport.get_extra_info("socket")
    if sock is None or _TIOCOUTQ is None:
        return -1
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return -1


class _Reporter:
    """One log line for the first event of a kind, then at most one per REPORT_INTERVAL
    with the count of those in between: a flood of bad clients cannot flood the log."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def note(self, kind: str, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -REPORT_INTERVAL) < REPORT_INTERVAL:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        quiet = self._quiet.pop(kind, 0)
        self._last[kind] = now
        if quiet:
            message += " (and %d more like it in the last %ds)"
            args = (*args, quiet, int(REPORT_INTERVAL))
        log.log(level, message, *args)


class ConnectionGuard:
    """Open connections of one server, in total and per client address, and the counts the
    metrics endpoint reports."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.header_timeout = limits.header_timeout
        self.body_timeout = limits.body_timeout
        self.max_connections = limits.max_connections
        self.per_client_limit = limits.max_connections_per_client
        self.open = 0
        self.per_client: dict[str, int] = {}
        self.refused = {"server": 0, "client": 0}
        self.timeouts = {"header": 0, "send": 0}
        self._reporter = _Reporter()

    @property
    def full(self) -> bool:
        return self.open >= self.max_connections

    def admit(self, client: str) -> str | None:
        """Count a new connection in, or return which limit refuses it."""
        if self.open >= self.max_connections:
            return "server"
        held = self.per_client.get(client, 0)
        if self.per_client_limit and held >= self.per_client_limit:
            return "client"
        self.open += 1
        self.per_client[client] = held + 1
        return None

    def release(self, client: str) -> None:
        self.open -= 1
        held = self.per_client.get(client, 0) - 1
        if held > 0:
            self.per_client[client] = held
        else:
            self.per_client.pop(client, None)

    def refuse(self, transport: asyncio.BaseTransport, limit: str, client: str) -> None:
        """Answer 503 SlowDown and close: the client's SDK retries after a back-off."""
        self.refused[limit] += 1
        if limit == "server":
            self._reporter.note("server", logging.WARNING,
                                "connection limit reached (%d open): refusing new connections with 503 "
                                "SlowDown (last from %s)", self.open, client or "a local socket")
        else:
            self._reporter.note("client", logging.WARNING,
                                "client %s holds %d connections, its limit: refusing more with 503 SlowDown",
                                client, self.per_client.get(client, 0))
        try:
            transport.write(_SLOW_DOWN)  # type: ignore[attr-defined]
        finally:
            transport.close()

    def timed_out(self, stage: str, client: str) -> None:
        self.timeouts[stage] += 1
        what = ("did not send a whole request header within %gs" if stage == "header"
                else "read none of its response for %gs")
        timeout = self.header_timeout if stage == "header" else self.body_timeout
        self._reporter.note(stage, logging.INFO, f"closed a connection from %s: the client {what}",
                            client or "a local socket", timeout)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol plus the limits and timeouts of the module docstring."""

    __slots__ = ("_body", "_guard", "_client", "_header_deadline", "_header_started", "_header_timer",
                 "_send_timer", "_send_resumes", "_send_mark", "_send_idle")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._body: Any = None  # the body stream of the request made last (origin_form_factory)
        self._client: str | None = None  # set once admitted
        self._header_deadline = 0.0  # 0: no header pending (a request is in progress, or idle)
        self._header_started = False  # some bytes of the pending header have arrived
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_resumes = 0
        self._send_mark: tuple[int, int, int] = (0, 0, 0)
        self._send_idle = 0

    @property
    def body_timeout(self) -> float:
        """Seconds a body may stall on this connection (read by :func:`watch_body`)."""
        return self._guard.body_timeout

    # --- admission -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        client = client_address(transport.get_extra_info("peername"))
        limit = self._guard.admit(client)
        if limit is not None:
            self._guard.refuse(transport, limit, client)
            return
        self._client = client
        super().connection_made(transport)
        self._header_deadline = self._loop.time() + self._guard.header_timeout
        self._header_timer = self._loop.call_at(self._header_deadline, self._check_header)

    def connection_lost(self, exc: BaseException | None) -> None:
        client, self._client = self._client, None
        if client is None:
            return  # refused (never admitted), or already counted out
        self._guard.release(client)
        for timer in (self._header_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._send_timer = None
        super().connection_lost(exc)

    # --- header timeout ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._client is None:
            return  # refused: the answer is on its way out, the request is not read
        count = self._request_count  # aiohttp counts each request whose header is parsed
        idle = not self._header_deadline and self._waiter is not None  # awaiting the next request
        RequestHandler.data_received(self, data)  # not super(): this runs for every read
        if self._request_count != count:
            self._fail_body_on_framing_error()
            self._header_deadline = 0.0  # a whole header arrived: the request runs
            self._header_started = False
        elif self._header_deadline:
            self._header_started = True
        elif idle and data:
            # The first bytes of the next request on a kept-alive connection.
            self._header_started = True
            self._header_deadline = self._loop.time() + self._guard.header_timeout
            if self._header_timer is None:
                self._header_timer = self._loop.call_at(self._header_deadline, self._check_header)

    def _fail_body_on_framing_error(self) -> None:
        """A framing error in the body of the request being served (a bad chunk size, a
        chunk without its CRLF) reaches aiohttp as a new "message" carrying the error, and
        the running handler's body stream is left waiting for bytes that will never be
        parsed. Hand the error to that stream instead, so the handler answers ``400
        IncompleteBody`` at once (rather than hanging until the body timeout, then being
        followed by aiohttp's plain-text 400 for the queued error), and end the stream: a
        reader woken by this same read's good bytes (the error came in the read that brought
        them) waits again without looking for an exception (aiohttp's ``StreamReader._wait``),
        and hung until the body timeout (the cluster HTTP fuzzer, seed 40001; a chunk of 5 with
        6 bytes after it, sent after the request's head). Nothing after the error can be
        parsed: the connection ends with that answer (``_stamp_headers`` in ``buckets.s3.app``
        says ``Connection: close``)."""
        if not self._messages or not isinstance(self._messages[-1][0], _ErrInfo):
            return
        # The body that was being parsed: the last request still queued, or else the one
        # whose request object was made last (its handler may not have started yet).
        body = self._messages[-2][1] if len(self._messages) > 1 else self._body
        if body is not None and not body.is_eof():
            error = self._messages.pop()[0]
            body.set_exception(error.exc)
            body.feed_eof()
            self.close()

    def _check_header(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if not deadline or self.transport is None:
            return
        if self._loop.time() < deadline:  # the deadline moved since this timer was set
            self._header_timer = self._loop.call_at(deadline, self._check_header)
            return
        self._guard.timed_out("header", self._client or "")
        if self._header_started:
            self.transport.write(_REQUEST_TIMEOUT)
        self.force_close()

    # --- send stall ----------------------------------------------------------------------
    # The transport calls pause_writing when its buffer fills (the client reads slower than
    # we write) and resume_writing when it drains. While paused, a timer checks every half
    # body_timeout that the client took bytes: the transport's buffer shrank, or the
    # kernel's send queue did (the kernel asks for more only once a third of its buffer,
    # up to megabytes, is free: a slow reader drains it for a long time before that).
    # Two checks without progress end the connection.

    def _send_progress(self, transport: asyncio.Transport) -> tuple[int, int, int]:
        return self._send_resumes, transport.get_write_buffer_size(), unsent_bytes(transport)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None and self.transport is not None:
            self._send_mark = self._send_progress(self.transport)
            self._send_idle = 0
            self._send_timer = self._loop.call_later(self._guard.body_timeout / 2, self._check_send)

    def resume_writing(self) -> None:
        self._send_resumes += 1
        super().resume_writing()

    def _check_send(self) -> None:
        self._send_timer = None
        transport = self.transport
        if transport is None or not self._paused:
            return  # the client caught up: the next pause starts a new watch
        mark = self._send_progress(transport)
        if mark != self._send_mark:
            self._send_mark, self._send_idle = mark, 0
        else:
            self._send_idle += 1
            if self._send_idle >= 2:
                self._guard.timed_out("send", self._client or "")
                transport.abort()  # close() would wait for a buffer the client never reads
                self.force_close()
                return
        self._send_timer = self._loop.call_later(self._guard.body_timeout / 2, self._check_send)


class _Refusal(asyncio.Protocol):
    """What a connection gets when the server is already full: no parser, no handler."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guard.refuse(transport, "server", client_address(transport.get_extra_info("peername")))


def origin_form(message: Any) -> Any:
    """An absolute-form request target (``GET http://host/key HTTP/1.1``) as origin form.

    RFC 9112 section 3.2.2: a server must accept the absolute form, and then the target's
    authority replaces the Host header. aiohttp keeps the whole target as the path, so
    without this the router would read a bucket named ``http:``, and reading the URL's
    host runs IDNA decoding, which raises for labels such as ``xn--abc`` while aiohttp is
    still building the request: the connection was then never answered. The authority is
    taken as the client wrote it (no decoding), so it reaches the router as any other
    Host header does.
    """
    url = message.url
    if not url.absolute:
        return message
    path = url.raw_path or "/"
    target = path + ("?" + url.raw_query_string if url.raw_query_string else "")
    headers = CIMultiDict(message.headers)
    headers["Host"] = url.raw_authority
    raw_headers = tuple((name, value) for name, value in message.raw_headers if name.lower() != b"host")
    raw_headers += ((b"Host", url.raw_authority.encode("latin-1", "replace")),)
    return message._replace(path=target, url=URL.build(path=path, query_string=url.raw_query_string,
                                                       encoded=True),
                            headers=CIMultiDictProxy(headers), raw_headers=raw_headers)


def origin_form_factory(factory: Any) -> Any:
    """Wrap aiohttp's request factory with :func:`origin_form`; it also tells the
    connection which body is being read (see ``_fail_body_on_framing_error``)."""

    def make_request(message: Any, payload: Any, protocol: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(protocol, GuardedRequestHandler):
            protocol._body = payload
        return factory(origin_form(message), payload, protocol, *args, **kwargs)

    return make_request


class GuardedServer(web.Server):
    """aiohttp's low-level server, making a :class:`GuardedRequestHandler` per connection."""

    guard: ConnectionGuard

    @classmethod
    def adopt(cls, server: web.Server, guard: ConnectionGuard) -> "GuardedServer":
        """The same server (handler, request factory, handler options) with a guard."""
        guarded = cls.__new__(cls)
        guarded.__dict__.update(vars(server))
        guarded.guard = guard
        guarded.request_factory = origin_form_factory(server.request_factory)
        return guarded

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        if self.guard.full:  # cheap refusal; admission itself is decided in connection_made
            return _Refusal(self.guard)
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


# Hooks (``async def hook(app)``) a runner awaits when it starts to stop, before aiohttp's own
# shutdown: ``on_shutdown`` comes after aiohttp has begun closing the connections, when a peer
# channel's close handshake no longer completes (the caller waits out its close timeout).
BEFORE_STOP_KEY: web.AppKey[list] = web.AppKey("buckets_before_stop", list)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are guarded; the idle timeout is aiohttp's
    keep-alive timeout, which also bounds a connection that never completes a header."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=guard.limits.idle_timeout, **kwargs)
        self.guard = guard

    async def cleanup(self) -> None:
        for hook in self.app.get(BEFORE_STOP_KEY, ()):
            await hook(self.app)
        await super().cleanup()

    async def _make_server(self) -> web.Server:
        return GuardedServer.adopt(await super()._make_server(), self.guard)


class ConnectionCollector:
    """Prometheus collector for a guard (registered by ``buckets server`` with the metrics)."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        guard = self.guard
        yield GaugeMetricFamily("buckets_connections_open", "Open client connections.", value=guard.open)
        yield GaugeMetricFamily("buckets_connections_max", "The connection limit in force.",
                                value=guard.max_connections)
        refused = CounterMetricFamily("buckets_connections_refused",
                                      "Connections answered 503 SlowDown and closed, by the limit hit.",
                                      labels=["limit"])
        for limit, count in guard.refused.items():
            refused.add_metric([limit], count)
        yield refused
        timeouts = CounterMetricFamily("buckets_connections_timed_out",
                                       "Connections closed because the client stalled: before its "
                                       "request header was complete, or reading a response.",
                                       labels=["stage"])
        for stage, count in guard.timeouts.items():
            timeouts.add_metric([stage], count)
        yield timeouts


# --- request bodies ---------------------------------------------------------------------------


class _BodyWatch:
    """Every half ``timeout``, checks that body bytes arrived since the last check; after
    two checks without any while the server waits for them, the reading task is cancelled
    (and :func:`watch_body` turns that into RequestTimeout). Bytes count as arrived while
    the transport is paused: then the server, not the client, is the slow one."""

    __slots__ = ("request", "interval", "mark", "idle", "reader", "fired", "timer")

    def __init__(self, request: web.BaseRequest, timeout: float) -> None:
        self.request = request
        self.interval = timeout / 2
        self.mark = request.content.total_bytes
        self.idle = 0
        self.reader: asyncio.Task[Any] | None = None  # the task waiting for the next piece
        self.fired = False
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(self.interval, self._check)

    def _check(self) -> None:
        self.timer = None
        content = self.request.content
        transport = self.request.transport
        if transport is None or content.is_eof():
            return  # the whole body is here (or the connection is gone): nothing to wait for
        total = content.total_bytes
        try:
            reading = transport.is_reading()  # type: ignore[attr-defined]
        except (AttributeError, NotImplementedError):
            reading = True
        if total != self.mark or not reading:
            self.mark, self.idle = total, 0
        else:
            self.idle += 1
            if self.idle >= 2 and self.reader is not None:
                self.fired = True
                self.reader.cancel()
                return
        self.timer = asyncio.get_running_loop().call_later(self.interval, self._check)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


async def watch_body(request: web.BaseRequest, stream: AsyncIterator[bytes],
                     timeout: float | None = None) -> AsyncIterator[bytes]:
    """``stream`` (the decoded body of ``request``), ended with ``RequestTimeout`` when the
    client sends nothing for ``timeout`` seconds (detected within 1.5 times that); by
    default the connection's ``body_timeout`` (:class:`GuardedRequestHandler`), or
    ``DEFAULT_BODY_TIMEOUT`` in a server without the guard.

    Start iterating only once the client may send (after ``100 Continue``). The cancel
    lands where the reading task waits inside ``stream``, which is then closed; the caller
    aborts its write as for any other body error, so nothing is stored.
    """
    if timeout is None:
        timeout = getattr(request.protocol, "body_timeout", DEFAULT_BODY_TIMEOUT)
    watch = _BodyWatch(request, timeout)
    pieces = stream.__aiter__()
    try:
        while True:
            task = watch.reader = asyncio.current_task()
            try:
                piece = await pieces.__anext__()
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if watch.fired and task is not None and task.uncancel() == 0:
                    raise RequestTimeout() from None
                raise  # cancelled by someone else too (shutdown): stay cancelled
            finally:
                watch.reader = None
            yield piece
    finally:
        watch.stop()
