"""Console sessions: who is logged in, until when, and what proves it.

A session is a row in this process's :class:`SessionTable` (a random id, the user, an
absolute expiry, a CSRF token and a fingerprint of the secret the user logged in with).
The browser holds a cookie ``<id>.<expires>.<mac>``: the MAC is HMAC-SHA256 over the id
and the expiry under a key drawn at random when the process starts.

Why a random per-process key and not one derived from the root credentials: a session must
end everywhere the moment it is ended (logout, expiry, the user disabled or removed, its
secret changed). A derived key would make a cookie valid on every node of a deployment and
after a restart, while the table that says "logged out" lives in one process's memory: a
logged-out cookie could be replayed against another node, or against this one after a
restart. With a per-process key, a cookie is worth something only to the process that
issued it and only while its row exists; a restart ends every session (fail closed). The
cost: behind a load balancer, a console user needs sticky sessions (or one node's address).

Every check fails closed: a malformed or forged cookie, a cookie past its expiry (the signed
one, so it cannot be extended), an id no longer in the table (logged out, swept, another
process), or a user whose secret no longer matches all end in :class:`SessionError`, which
the console answers 401. State-changing calls must also repeat the session's CSRF token in
a header (:meth:`Session.csrf_matches`); the cookie is ``SameSite=Strict`` besides.

Failed logins are counted per client address (:class:`LoginLimiter`): after
``max_failures`` within ``window`` seconds that address is refused until the oldest
failure ages out, so a password cannot be guessed at network speed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_TTL = 12 * 3600.0
MAX_SESSIONS = 10_000  # rows in the table at most; the oldest goes first when full
COOKIE_NAME = "buckets_console"
CSRF_COOKIE_NAME = "buckets_csrf"
CSRF_HEADER = "X-Buckets-CSRF"


class SessionError(Exception):
    """No valid session; ``code`` says why (the console answers 401 with it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(slots=True)
class Session:
    sid: str
    user: str
    root: bool
    csrf: str
    created: float
    expires: float
    secret_mac: bytes = field(repr=False)  # HMAC of the secret logged in with (never the secret)

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode("utf-8", "surrogateescape"),
                                                         self.csrf.encode())


class SessionTable:
    """The sessions of this process. ``clock`` is injectable for tests (seconds, epoch)."""

    def __init__(self, ttl: float = DEFAULT_TTL, *, clock: Callable[[], float] = time.time,
                 max_sessions: int = MAX_SESSIONS, key: bytes | None = None) -> None:
        if ttl <= 0:
            raise ValueError("a session must last more than 0 seconds")
        self.ttl = float(ttl)
        self.clock = clock
        self.max_sessions = max_sessions
        self._key = key if key is not None else secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._sessions)

    # -- issuing ----------------------------------------------------------------------------
    def create(self, user: str, root: bool, secret: str) -> tuple[Session, str]:
        """A new session for ``user``; returns it and the cookie value that names it."""
        self.sweep()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.pop(next(iter(self._sessions)))
        now = self.clock()
        session = Session(sid=secrets.token_urlsafe(24), user=user, root=root, csrf=secrets.token_urlsafe(24),
                          created=now, expires=int(now + self.ttl), secret_mac=self._secret_mac(secret))
        self._sessions[session.sid] = session
        return session, self.cookie_value(session)

    def cookie_value(self, session: Session) -> str:
        payload = f"{session.sid}.{int(session.expires)}"
        return f"{payload}.{self._mac(payload)}"

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def _secret_mac(self, secret: str) -> bytes:
        return hmac.new(self._key, b"secret\0" + secret.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    # -- checking ---------------------------------------------------------------------------
    def lookup(self, cookie: str | None) -> Session:
        """The live session a cookie names, or :class:`SessionError`."""
        if not cookie:
            raise SessionError("LoginRequired", "Log in to use the console.")
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or len(cookie) > 256:
            raise SessionError("InvalidSession", "The session cookie is not valid: log in again.")
        sid, expires_text, mac = parts
        payload = f"{sid}.{expires_text}"
        try:
            good = hmac.compare_digest(mac.encode("ascii"), self._mac(payload).encode("ascii"))
        except (UnicodeEncodeError, ValueError):
            good = False
        if not good:
            raise SessionError("InvalidSession", "The session cookie is not valid: log in again.")
        now = self.clock()
        if int(expires_text) <= now:
            self._sessions.pop(sid, None)
            raise SessionError("SessionExpired", "The session has expired: log in again.")
        session = self._sessions.get(sid)
        if session is None or int(session.expires) != int(expires_text):
            raise SessionError("SessionEnded", "The session has ended (logged out or the server restarted): "
                                               "log in again.")
        return session

    def secret_matches(self, session: Session, secret: str | None) -> bool:
        """Whether the user's current secret is the one the session was opened with (a user
        disabled or removed has none)."""
        return secret is not None and hmac.compare_digest(session.secret_mac, self._secret_mac(secret))

    # -- ending -----------------------------------------------------------------------------
    def revoke(self, sid: str) -> bool:
        return self._sessions.pop(sid, None) is not None

    def revoke_user(self, user: str) -> int:
        """End every session of ``user`` (removed, disabled, new secret); returns how many."""
        ended = [sid for sid, session in self._sessions.items() if session.user == user]
        for sid in ended:
            del self._sessions[sid]
        return len(ended)

    def sweep(self) -> int:
        now = self.clock()
        ended = [sid for sid, session in self._sessions.items() if session.expires <= now]
        for sid in ended:
            del self._sessions[sid]
        return len(ended)


class LoginLimiter:
    """Failed logins per client address: at most ``max_failures`` in ``window`` seconds."""

    def __init__(self, max_failures: int = 10, window: float = 300.0, *,
                 clock: Callable[[], float] = time.monotonic, max_addresses: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        cutoff = self.clock() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may now)."""
        failures = self._recent(address)
        if failures is None or len(failures) < self.max_failures:
            return 0.0
        return max(0.0, failures[0] + self.window - self.clock())

    def failed(self, address: str) -> None:
        if address not in self._failures and len(self._failures) >= self.max_addresses:
            self._failures.pop(next(iter(self._failures)))  # forget the oldest address
        self._failures.setdefault(address, deque()).append(self.clock())

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
