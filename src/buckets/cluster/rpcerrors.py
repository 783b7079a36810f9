"""Errors of peer RPC: the transport's own, and typed errors carried across the wire.

A handler on one node raises a typed error (``FileNotFound``, ``NoSuchKey``,
``WriteQuorumLost``...); the server sends it as a msgpack record and the client raises
the same class again, so code above ``RemoteDisk`` catches exactly what it would catch
from a ``LocalDisk``. Records are keyed by class name, because S3 codes are shared by
several classes (``InvalidObjectName`` and ``InvalidArgument`` both answer
``InvalidArgument``)::

    {"type": "FileNotFound", "family": "disk", "code": "FileNotFound", "status": 500,
     "message": "...", "resource": null, "extra": {}}

Every subclass of ``BucketsError``, ``DiskError`` and ``FormatError`` round-trips without
registration (found by name among their subclasses); :func:`register_wire_error` adds any
other class, or settles a name two classes share. A record whose type this node does not
know (a newer peer) falls back on its ``family``: a plain ``DiskError`` or ``FormatError``
(still a disk failure to the engine), or :class:`RemoteError`, which keeps the code,
status and message, so it still renders as the right S3 error.

Transport failures are :class:`PeerError` subclasses (503 ``ServiceUnavailable`` if one
ever reached a client): the peer is offline, unreachable, too slow, refused our
signature, or answered something that is not this protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from buckets.errors import BucketsError, DiskError, FormatError

log = logging.getLogger("buckets.cluster.rpc")

_ROOTS: tuple[type[BaseException], ...] = (BucketsError, DiskError, FormatError)
_REGISTERED: dict[str, type[BaseException]] = {}
_FOUND: dict[str, type[BaseException]] = {}  # names resolved by walking the roots' subclasses
_MAX_MESSAGE = 2048  # characters of a message sent over the wire


# --- transport errors ----------------------------------------------------------------------


class PeerError(BucketsError):
    """A call to a peer failed in transport; the peer's own answer is unknown."""

    code = "ServiceUnavailable"
    status = 503
    default_message = "A peer node did not answer."
    # True when the call certainly never reached the peer (it was offline, or the connection
    # could not be made): the peer did not act on it.
    unsent = False

    def __init__(self, message: str | None = None, *, endpoint: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.endpoint = endpoint


class PeerOffline(PeerError):
    """The peer is marked offline: the call failed fast, nothing was sent."""

    default_message = "The peer node is offline."
    unsent = True


class PeerUnreachable(PeerError):
    """Connecting to the peer failed (refused, no route, DNS)."""

    default_message = "The peer node cannot be reached."


class PeerTimeout(PeerError):
    """The peer did not answer (or stopped sending) within the call's timeout. ``alive``: it
    answered other calls meanwhile (slow, not gone: not counted against its health)."""

    default_message = "The peer node did not answer in time."
    alive = False


class PeerProtocolError(PeerError):
    """The peer answered, but not with this protocol (bad framing, truncated stream, odd status)."""

    default_message = "The peer node sent an answer this node cannot read."


class PeerAuthRefused(PeerProtocolError):
    """The peer refused our signature: another cluster secret, or clocks too far apart.
    ``clock_offset``: the peer's clock minus ours by its answer's ``Date`` header, when that
    alone is enough to refuse (beyond the signatures' window); None otherwise."""

    default_message = ("The peer node refused this node's signature: check that both use the "
                       "same cluster secret and that their clocks agree.")

    def __init__(self, *args, clock_offset: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clock_offset = clock_offset


def clock_cause(exc: BaseException) -> str | None:
    """What to tell an operator when a peer's refusal of our signature is explained by the
    clocks alone (``PeerAuthRefused.clock_offset``); None when it is not (then the secrets are
    the suspect, in words that fit the caller)."""
    from buckets.cluster.rpcauth import DEFAULT_WINDOW

    offset = getattr(exc, "clock_offset", None)
    if offset is None:
        return None
    return (f"its clock is {offset:+.0f} s from this node's, beyond the {DEFAULT_WINDOW:g} s a peer request's "
            f"signature is valid for: make the nodes' clocks agree (NTP)")


def refused_signature(exc: BaseException) -> bool:
    """True when a peer refused this node's signature (another cluster secret, or clocks too
    far apart): by the error's type and status, never by its text (a peer's URL with a port
    like 40351 contains "403")."""
    return (isinstance(exc, PeerAuthRefused) or type(exc).__name__ == "AccessDenied"
            or (isinstance(exc, RemoteError) and exc.status == 403))


# --- errors a server answers with before calling a handler --------------------------------


class BadPeerRequest(BucketsError):
    """An authenticated request this server cannot take (malformed control message, body
    that does not match its declaration, wrong HTTP method)."""

    code = "InvalidRequest"
    status = 400
    default_message = "The peer request is malformed."


class UnknownPeerMethod(BucketsError):
    """An authenticated request for a service or method nobody registered (version skew)."""

    code = "NotImplemented"
    status = 501
    default_message = "The peer does not serve this RPC method."


class PeerBodyIncomplete(BadPeerRequest):
    """The request body ended before its declared length, or the sender went away."""

    default_message = "The peer request body ended early."


class RemoteError(BucketsError):
    """A typed error from a peer whose class this node does not know; keeps its code,
    status and message (and the peer's class name in ``remote_type``)."""

    def __init__(self, remote_type: str, code: str, status: int, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.remote_type = remote_type
        self.code = code
        self.status = status


# --- the wire form -------------------------------------------------------------------------


def register_wire_error(cls: type[BaseException], name: str | None = None) -> type[BaseException]:
    """Let ``cls`` round-trip under ``name`` (its class name by default). Usable as a decorator."""
    _REGISTERED[name or cls.__name__] = cls
    return cls


def _subclasses(root: type[BaseException]) -> list[type[BaseException]]:
    found, stack = [], [root]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def _lookup(name: str) -> type[BaseException] | None:
    cls = _REGISTERED.get(name) or _FOUND.get(name)
    if cls is not None:
        return cls
    # Classes are made at import time (define_error), so the walk sees every class that
    # exists now; a hit is remembered, a miss is walked again (a module may load later).
    matches = {c for root in _ROOTS for c in _subclasses(root) if c.__name__ == name}
    if len(matches) == 1:
        cls = _FOUND[name] = matches.pop()
        return cls
    if matches:
        log.warning("wire error %s names %d classes; register one with register_wire_error", name,
                    len(matches))
    return None


def error_to_wire(error: BaseException) -> dict[str, Any]:
    """The msgpack-able record of ``error`` (see the module docstring)."""
    if isinstance(error, BucketsError):
        message, resource = error.message, error.resource
        extra = {str(k): str(v) for k, v in error.extra.items()}
    else:
        message, resource, extra = str(error), None, {}
    name = type(error).__name__
    if isinstance(error, RemoteError):
        name = error.remote_type  # pass it on unchanged through a third node
    code = getattr(error, "code", None)
    status = getattr(error, "status", None)
    family = ("disk" if isinstance(error, DiskError) else "format" if isinstance(error, FormatError)
              else "buckets" if isinstance(error, BucketsError) else "other")
    return {"type": name, "family": family, "code": code if isinstance(code, str) else "InternalError",
            "status": status if isinstance(status, int) else 500,
            "message": message[:_MAX_MESSAGE], "resource": resource, "extra": extra}


def _text(value: object, default: str) -> str:
    return value if isinstance(value, str) else default


def error_from_wire(record: object) -> BaseException:
    """The exception a record describes: the same class when this node knows it."""
    if not isinstance(record, Mapping):
        return PeerProtocolError("the peer sent an error record that is not a map")
    name = _text(record.get("type"), "")
    message = _text(record.get("message"), "")
    resource = record.get("resource") if isinstance(record.get("resource"), str) else None
    raw_extra = record.get("extra")
    extra = {str(k): str(v) for k, v in raw_extra.items()} if isinstance(raw_extra, Mapping) else {}
    code = _text(record.get("code"), "InternalError")
    status = record.get("status") if isinstance(record.get("status"), int) else 500
    cls = _lookup(name) if name else None
    if cls is not None:
        try:
            if issubclass(cls, BucketsError):
                return cls(message or None, resource=resource, **extra)
            return cls(message)
        except Exception:  # noqa: BLE001 - a constructor with another signature
            error = cls.__new__(cls)
            Exception.__init__(error, message)
            if isinstance(error, BucketsError):
                error.message, error.resource, error.extra = message or error.default_message, resource, extra
            return error
    family = record.get("family")
    if family == "disk":
        return DiskError(message or f"disk error {name or code} on the peer")
    if family == "format":
        return FormatError(message or f"format error {name or code} on the peer")
    return RemoteError(name or "unknown", code, status, message or "The peer failed.", resource=resource, **extra)
