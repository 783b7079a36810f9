"""Signing and verifying peer RPC requests with the cluster secret (HMAC-SHA256).

Owns the cluster secret (``BUCKETS_CLUSTER_SECRET``, or derived from the root credentials
when unset), the signing key derived from it, the canonical string a request is signed
over, the time window and the replay cache. It knows header names and nothing else of
HTTP: :mod:`buckets.cluster.rpcserver` and :mod:`buckets.cluster.rpcclient` move the
headers.

What a signature covers (one line each, joined by ``\\n``)::

    BUCKETS-PEER-HMAC-SHA256
    POST                                   the HTTP method
    /_buckets/peer/v1/disk/create_file     the path, exactly as sent
    a=1&b=2                                the query string, exactly as sent ("" when none)
    1764437551123                          X-Buckets-Peer-Time: unix milliseconds
    Zk3...                                 X-Buckets-Peer-Nonce: 16 random bytes, base64url
    37:9f86d0...                           X-Buckets-Peer-Args: length and SHA-256 of the msgpack control message
    length:1048576                         X-Buckets-Peer-Body: "none", "length:N" or "stream"

The signature itself travels in ``X-Buckets-Peer-Signature`` (hex). Shard bytes after the
control message are not hashed (that would mean buffering them or a trailer); their
length or the stream marker is signed, and every piece carries its own xxh3 checksum.
Against an attacker who can modify traffic in flight (not just send requests) the
transport needs TLS, as MinIO's does.

Must not: parse S3 or touch disks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SCHEME = "BUCKETS-PEER-HMAC-SHA256"
TIME_HEADER = "X-Buckets-Peer-Time"
NONCE_HEADER = "X-Buckets-Peer-Nonce"
ARGS_HEADER = "X-Buckets-Peer-Args"
BODY_HEADER = "X-Buckets-Peer-Body"
SIGNATURE_HEADER = "X-Buckets-Peer-Signature"
SIGNED_HEADERS = (TIME_HEADER, NONCE_HEADER, ARGS_HEADER, BODY_HEADER, SIGNATURE_HEADER)

DEFAULT_WINDOW = 60.0  # seconds either side of the receiver's clock
DEFAULT_REPLAY_CAPACITY = 500_000  # nonces remembered, ~180 bytes each: ~90 MB at most

# Fixed HKDF "info" strings: changing one changes every key, so they are part of the protocol.
_SECRET_FROM_ROOT_INFO = b"buckets/v1/cluster-secret-from-root-credentials"
_PEER_RPC_KEY_INFO = b"buckets/v1/peer-rpc-hmac-sha256"

_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{22}")  # 16 bytes, base64url without padding
_TIME_RE = re.compile(r"[0-9]{1,16}")
_ARGS_RE = re.compile(r"([0-9]{1,10}):([0-9a-f]{64})")
_BODY_RE = re.compile(r"none|stream|length:[0-9]{1,19}")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def cluster_secret(explicit: str | None, root_user: str, root_password: str) -> bytes:
    """The cluster secret every node of a deployment shares.

    ``explicit`` is ``BUCKETS_CLUSTER_SECRET`` (``Config.cluster_secret``). Unset, the
    secret is derived from the root credentials (HKDF-SHA256 over ``user NUL password``
    with a fixed info string), so nodes started with the same root credentials agree
    without another setting, and a changed root password changes the cluster secret too.
    """
    if explicit:
        return explicit.encode("utf-8")
    material = root_user.encode("utf-8") + b"\x00" + root_password.encode("utf-8")
    return _hkdf(material, _SECRET_FROM_ROOT_INFO)


def signing_key(secret: bytes) -> bytes:
    """The HMAC key of peer RPC: derived, so other uses of the secret (the control plane's
    Raft password) never share a key with it."""
    return _hkdf(secret, _PEER_RPC_KEY_INFO)


def args_digest(args: bytes) -> str:
    """``X-Buckets-Peer-Args`` for a packed control message: its length and SHA-256."""
    return f"{len(args)}:{hashlib.sha256(args).hexdigest()}"


def body_declaration(length: int | None, streamed: bool) -> str:
    """``X-Buckets-Peer-Body``: no body, exactly ``length`` bytes, or a stream of unknown length."""
    if length is not None:
        return f"length:{length}"
    return "stream" if streamed else "none"


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the verifier learned from a request whose signature checked out."""

    args_length: int
    args_sha256: str
    body: str  # "none" | "stream" | "length:N"

    @property
    def body_length(self) -> int | None:
        return int(self.body[7:]) if self.body.startswith("length:") else None

    @property
    def streamed(self) -> bool:
        return self.body != "none"


class AuthRefused(Exception):
    """The request is not signed by a peer of this cluster. ``reason`` is for the server's
    log only; the client is told nothing beyond 403."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _canonical(method: str, path: str, query: str, timestamp: str, nonce: str, args: str, body: str) -> bytes:
    return "\n".join((SCHEME, method, path, query, timestamp, nonce, args, body)).encode("utf-8")


class ReplayCache:
    """Nonces seen within the time window, so a captured request cannot be sent again.

    A nonce is remembered until its own timestamp leaves the window (after that the
    window check refuses it anyway). Memory is bounded by ``capacity``: when full, the
    oldest nonces are forgotten early (and ``evicted`` counts them), which only reopens
    replay for requests that are about to fall out of the window.
    """

    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        self.capacity = capacity
        self._seen: set[str] = set()
        self._order: deque[tuple[float, str]] = deque()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, nonce: str, expires: float, now: float) -> bool:
        """True if ``nonce`` is new (and is now remembered until ``expires``); False on a replay."""
        order, seen = self._order, self._seen
        while order and order[0][0] < now:
            seen.discard(order.popleft()[1])
        if nonce in seen:
            return False
        while len(order) >= self.capacity:
            seen.discard(order.popleft()[1])
            self.evicted += 1
        seen.add(nonce)
        order.append((expires, nonce))
        return True


class PeerSigner:
    """Signs outgoing peer requests with a key derived from the cluster secret."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        self._key = signing_key(secret)
        self._clock = clock

    @property
    def key(self) -> bytes:
        """The signing key (a channel's key is derived from it: :mod:`rpcchannel`)."""
        return self._key

    def headers(self, method: str, path: str, query: str, args: bytes, body: str) -> dict[str, str]:
        """The headers that authenticate one request (``body`` from :func:`body_declaration`)."""
        timestamp = str(int(self._clock() * 1000))
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")
        digest = args_digest(args)
        signature = hmac.new(self._key, _canonical(method, path, query, timestamp, nonce, digest, body),
                             hashlib.sha256).hexdigest()
        return {TIME_HEADER: timestamp, NONCE_HEADER: nonce, ARGS_HEADER: digest, BODY_HEADER: body,
                SIGNATURE_HEADER: signature}


class PeerVerifier:
    """Checks incoming peer requests: signature, time window, then (optionally) replay.

    The order matters: the signature is checked first with a constant-time compare, so
    nothing about the window or the nonce cache is learned without the key, and a
    forged request never fills the replay cache.
    """

    def __init__(self, secret: bytes, *, window: float = DEFAULT_WINDOW, replay: ReplayCache | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        if not window > 0:
            raise ValueError("the time window must be positive")
        self._key = signing_key(secret)
        self.window = window
        self.replay = replay
        self._clock = clock

    @property
    def key(self) -> bytes:
        """The signing key (a channel's key is derived from it: :mod:`rpcchannel`)."""
        return self._key

    def verify(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> SignedRequest:
        """The signed facts of a request; raises :class:`AuthRefused` for anything else."""
        timestamp = headers.get(TIME_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        args = headers.get(ARGS_HEADER, "")
        body = headers.get(BODY_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not signature:
            raise AuthRefused("unsigned")
        args_match = _ARGS_RE.fullmatch(args)
        if not (_TIME_RE.fullmatch(timestamp) and _NONCE_RE.fullmatch(nonce) and args_match
                and _BODY_RE.fullmatch(body) and _SIGNATURE_RE.fullmatch(signature)):
            raise AuthRefused("malformed authentication headers")
        expected = hmac.new(self._key, _canonical(method, path, query, timestamp, nonce, args, body),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise AuthRefused("bad signature (another cluster secret?)")
        now = self._clock()
        sent = int(timestamp) / 1000
        if abs(now - sent) > self.window:
            raise AuthRefused(f"timestamp {now - sent:+.1f}s from this node's clock, outside the "
                              f"{self.window:g}s window (clock skew?)")
        if self.replay is not None and not self.replay.check_and_add(nonce, sent + self.window, now):
            raise AuthRefused("replayed nonce")
        return SignedRequest(args_length=int(args_match.group(1)), args_sha256=args_match.group(2), body=body)
