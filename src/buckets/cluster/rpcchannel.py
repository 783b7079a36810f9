"""The peer channel: a node's control calls to one peer multiplexed on one connection.

Over plain HTTP a control call costs about 0.4 ms of the caller's CPU (aiohttp's client:
a request object, headers, a pooled connection) and 0.5 ms of the peer's (parser,
request, middlewares, response, access line), several times what the handlers do. A
small PUT on a cluster makes ~6 such calls, a small GET 2. So each node keeps one
*channel* to each peer it calls: a WebSocket opened with ``GET /_buckets/peer/v1/channel``,
signed like any peer request (:mod:`rpcauth`: the cluster secret, the time window, the
replay cache), after which every control call is one binary message each way. MinIO's
internode "grid" made the same move for the same reason.

Messages (binary frames, never compressed), each ``mac | payload``:

- ``mac``: 16 bytes of keyed BLAKE3 under the channel's key over
  ``direction | sequence number (u64 big-endian) | payload`` (BLAKE3's keyed mode is a
  MAC; OpenSSL 3's one-shot HMAC costs ~7 µs of setup per message, BLAKE3 ~2). The key is derived from the
  signing key and the nonce of the signed upgrade request; ``direction`` is ``C`` from the
  caller and ``S`` from the peer, and each side counts its messages from 0. A message that
  is forged, altered, replayed, reordered or dropped fails the check, and the channel is
  closed: within a channel, nothing can be injected that a signed HTTP request would
  have refused.
- a call: msgpack ``[id, service, method, args]`` (id > 0, the caller's);
- an answer: msgpack ``[id, kind, value]``: ``RESULT`` with the handler's result,
  ``ERROR`` with a typed error record (what HTTP sends with 460), ``INTERNAL`` with one
  for a bug in the handler (HTTP's 500);
- ``[0, GOAWAY, None]`` from the peer: send no new calls here. The peer answers every
  call it has read and keeps reading until the caller closes the channel, which it does
  once its own calls on it are answered; new calls open a fresh channel. A node sends
  this when it stops, and when its port passes from the listener it forms the cluster
  with to the full app.

What does not go over a channel: calls that stream bytes either way (shard bodies: they
stay HTTP requests, each on its own pooled connection, so a large transfer never delays
control calls) and control messages over :data:`MAX_CHANNEL_ARGS`. A peer that cannot
open a channel (an older node) is called over HTTP.

Must not: know what the services do, or decide a peer's health (the client does).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from blake3 import blake3

from buckets.runtime import cancel_and_wait
from buckets.cluster import rpcframe as wire

log = logging.getLogger("buckets.cluster.rpc")

CHANNEL_PATH = wire.PREFIX + "/channel"
MAC_BYTES = 16
MAX_CHANNEL_ARGS = 1 << 20  # bigger control messages (large registry batches) go over HTTP
MAX_IN_FLIGHT = 256  # calls one channel runs at once on the peer; more wait their turn
HEARTBEAT = 30.0  # a ping every 30 s, answered within 15: else the channel is closed (the next call opens one)
GOAWAY_GRACE = 30.0  # after GOAWAY, how long the peer waits for the caller to close the channel

RESULT, ERROR, INTERNAL, GOAWAY = 0, 1, 2, 3
FROM_CALLER, FROM_PEER = b"C", b"S"
_CHANNEL_KEY_LABEL = b"buckets/v1/peer-channel\n"
_MAX_ID = (1 << 63) - 1
_REFUSED_WRITE = "Cannot write to closing transport"  # aiohttp's words for a frame it did not write


def channel_key(signing_key: bytes, nonce: str) -> bytes:
    """The MAC key of one channel: the peer RPC signing key bound to the upgrade's nonce."""
    return hmac.digest(signing_key, _CHANNEL_KEY_LABEL + nonce.encode("ascii"), "sha256")


class Sealer:
    """One direction of a channel: seals outgoing (or opens incoming) messages in order."""

    __slots__ = ("_key", "_direction", "sequence")

    def __init__(self, key: bytes, direction: bytes) -> None:
        self._key = key
        self._direction = direction
        self.sequence = 0

    def _mac(self, payload: bytes | memoryview) -> bytes:
        mac = blake3(self._direction + self.sequence.to_bytes(8, "big"), key=self._key)
        mac.update(payload)
        return mac.digest(MAC_BYTES)

    def seal(self, payload: bytes) -> bytes:
        """``mac | payload``; call it right before the message is written (no await between)."""
        mac = self._mac(payload)
        self.sequence += 1
        return mac + payload

    def open(self, message: bytes) -> memoryview | None:
        """The payload, or None when the message is not the next one this side sent."""
        if len(message) < MAC_BYTES:
            return None
        view = memoryview(message)
        payload = view[MAC_BYTES:]
        if not hmac.compare_digest(view[:MAC_BYTES], self._mac(payload)):
            return None
        self.sequence += 1
        return payload


def call_message(call_id: int, service: str, method: str, packed_args: bytes) -> bytes:
    """``[id, service, method, args]`` in msgpack, with the args already packed (a fixarray
    of four is one byte, so the arguments are not packed twice)."""
    return b"".join((b"\x94", wire.pack(call_id), wire.pack(service), wire.pack(method), packed_args))


# --- the peer's side -----------------------------------------------------------------------------

Invoke = Callable[[str, str, Any], Awaitable[tuple[int, Any]]]  # -> (kind, value)
Observe = Callable[[str, int, float, int, int], None]  # metrics: api, status, seconds, in, out


class ServedChannel:
    """A channel this node serves: reads calls, runs them, answers each as it finishes."""

    def __init__(self, ws: web.WebSocketResponse, key: bytes, invoke: Invoke, observe: Observe | None,
                 app: Any, remote: str) -> None:
        self.ws = ws
        self.app = app
        self.remote = remote
        self._in = Sealer(key, FROM_CALLER)
        self._out = Sealer(key, FROM_PEER)
        self._invoke = invoke
        self._observe = observe
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self.going_away = False

    async def run(self) -> None:
        ws = self.ws
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.ERROR:  # no pong in time, a reset, a bad frame
                    log.info("peer channel from %s lost: %s", self.remote, message.data)
                    break
                if message.type is not aiohttp.WSMsgType.BINARY:
                    log.info("peer channel from %s: unexpected %s message; closing it", self.remote, message.type.name)
                    break
                payload = self._in.open(message.data)
                if payload is None:
                    log.warning("peer channel from %s: a message failed its MAC; closing it", self.remote)
                    break
                try:
                    call_id, service, method, args = wire.unpack(payload)
                except (ValueError, TypeError):
                    log.warning("peer channel from %s: an unreadable call; closing it", self.remote)
                    break
                if not (isinstance(call_id, int) and 0 < call_id <= _MAX_ID and isinstance(service, str)
                        and isinstance(method, str)):
                    log.warning("peer channel from %s: a malformed call; closing it", self.remote)
                    break
                await self._slots.acquire()
                task = asyncio.get_running_loop().create_task(self._answer(call_id, service, method, args,
                                                                           len(payload)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            if self._tasks:  # the caller closed: what it asked still runs to the end
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if not ws.closed:
                await ws.close()

    async def _answer(self, call_id: int, service: str, method: str, args: Any, received: int) -> None:
        started = asyncio.get_running_loop().time()
        try:
            kind, value = await self._invoke(service, method, args)
            try:
                answer = wire.pack([call_id, kind, value])
            except (TypeError, ValueError, OverflowError):
                log.exception("peer call %s/%s: its result cannot be sent", service, method)
                kind, answer = INTERNAL, wire.pack([call_id, INTERNAL, {"type": "InternalError",
                                                                         "message": "unencodable result"}])
            if not self.ws.closed:
                try:
                    await self.ws.send_bytes(self._out.seal(answer))
                except (ConnectionError, aiohttp.ClientConnectionResetError):
                    pass  # the caller went away: its call fails there as a lost connection
            if self._observe is not None:
                status = 200 if kind == RESULT else (wire.PEER_ERROR_STATUS if kind == ERROR else 500)
                self._observe(f"peer.{service}.{method}", status,
                              asyncio.get_running_loop().time() - started, received, len(answer))
        finally:
            self._slots.release()

    async def go_away(self) -> None:
        """Ask the caller to take its next calls elsewhere; close the channel if it has not
        done so after :data:`GOAWAY_GRACE` seconds."""
        if self.going_away or self.ws.closed:
            return
        self.going_away = True
        try:
            await self.ws.send_bytes(self._out.seal(wire.pack([0, GOAWAY, None])))
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            return
        asyncio.get_running_loop().call_later(GOAWAY_GRACE, self._close_if_open)

    def _close_if_open(self) -> None:
        if not self.ws.closed:
            asyncio.get_running_loop().create_task(self.ws.close())


# --- the caller's side ---------------------------------------------------------------------------


class ChannelClosed(ConnectionResetError):
    """The channel closed before the call was answered. ``unsent``: the call never left
    this node (it may be sent again on a new channel)."""

    def __init__(self, message: str, *, unsent: bool = False) -> None:
        super().__init__(message)
        self.unsent = unsent


class CallerChannel:
    """A channel this node opened to a peer: sends calls, matches answers to them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, key: bytes, endpoint: str) -> None:
        self.ws = ws
        self.endpoint = endpoint
        self._out = Sealer(key, FROM_CALLER)
        self._in = Sealer(key, FROM_PEER)
        self._pending: dict[int, asyncio.Future[tuple[int, Any]]] = {}
        self._next_id = 1
        self.draining = False  # the peer sent GOAWAY: no new calls here
        self.reader = asyncio.get_running_loop().create_task(self._read(), name=f"peer-channel {endpoint}")

    @property
    def usable(self) -> bool:
        return not (self.draining or self.ws.closed or self.reader.done())

    async def call(self, service: str, method: str, packed_args: bytes) -> tuple[int, Any]:
        """``(kind, value)`` of the answer. Raises :class:`ChannelClosed` if the channel
        closes first (``unsent`` when the call never left)."""
        if not self.usable:
            raise ChannelClosed("the channel is closing", unsent=True)
        call_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            try:
                await self.ws.send_bytes(self._out.seal(call_message(call_id, service, method, packed_args)))
            except ConnectionError as error:
                # aiohttp refuses to write a frame to a closing transport before a byte of it
                # leaves: the peer never saw this call. Any other loss (while waiting for the
                # transport to drain) may come after the frame left: not sent again.
                unsent = str(error) == _REFUSED_WRITE
                self.draining = True  # a channel that failed a write takes no more calls
                raise ChannelClosed(f"the channel closed: {error}", unsent=unsent) from None
            return await future
        finally:
            self._pending.pop(call_id, None)
            if self.draining and not self._pending:
                self._close_soon()

    async def _read(self) -> None:
        why = "the peer closed the channel"
        try:
            async for message in self.ws:
                if message.type is aiohttp.WSMsgType.ERROR:
                    why = f"the channel was lost: {message.data}"
                    break
                if message.type is not aiohttp.WSMsgType.BINARY:
                    why = f"unexpected {message.type.name} message on the channel"
                    break
                payload = self._in.open(message.data)
                if payload is None:
                    why = "an answer failed its MAC"
                    log.warning("peer channel to %s: %s; closing it", self.endpoint, why)
                    break
                try:
                    call_id, kind, value = wire.unpack(payload)
                except (ValueError, TypeError):
                    why = "an unreadable answer"
                    break
                if call_id == 0 and kind == GOAWAY:
                    self.draining = True
                    if not self._pending:
                        break
                    continue
                future = self._pending.get(call_id)
                if future is not None and not future.done():
                    future.set_result((kind, value))
        except Exception as error:  # noqa: BLE001 - aiohttp's read errors: the channel is gone
            why = f"{type(error).__name__}: {error}"
        finally:
            self.draining = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelClosed(why))
            if not self.ws.closed:
                await self.ws.close()

    def _close_soon(self) -> None:
        if not self.ws.closed:
            asyncio.get_running_loop().create_task(self.ws.close())

    async def close(self) -> None:
        self.draining = True
        if not self.ws.closed:
            await self.ws.close()
        # (closing: its outcome is not reported; a cancel of this task still propagates)
        await cancel_and_wait(self.reader)
