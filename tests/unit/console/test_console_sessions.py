"""Console sessions (buckets.console.sessions): cookies that cannot be forged, extended or
replayed once the session has ended, with a fake clock; the failed-login limiter."""

from __future__ import annotations

import pytest

from buckets.console.sessions import LoginLimiter, SessionError, SessionTable


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(clock: Clock) -> SessionTable:
    return SessionTable(600, clock=clock)


def code_of(table: SessionTable, cookie: str | None) -> str:
    with pytest.raises(SessionError) as caught:
        table.lookup(cookie)
    return caught.value.code


def flip(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


def test_a_new_session_is_found_by_its_cookie(table: SessionTable, clock: Clock) -> None:
    session, cookie = table.create("alice", False, "alice-secret")
    found = table.lookup(cookie)
    assert found is session
    assert (found.user, found.root) == ("alice", False)
    assert found.expires == clock.now + 600
    assert len(found.csrf) >= 32 and found.csrf not in cookie  # the CSRF token is not in the cookie
    assert "alice" not in cookie and "secret" not in cookie


def test_missing_and_malformed_cookies(table: SessionTable) -> None:
    assert code_of(table, None) == "LoginRequired"
    assert code_of(table, "") == "LoginRequired"
    for bad in ("x", "a.b", "a.b.c.d", "abc.notanumber.sig", "a" * 300):
        assert code_of(table, bad) == "InvalidSession"


def test_a_forged_or_altered_cookie_is_refused(table: SessionTable, clock: Clock) -> None:
    session, cookie = table.create("alice", False, "s3cret-key")
    sid, expires, mac = cookie.split(".")
    assert code_of(table, f"{sid}.{expires}.{flip(mac)}") == "InvalidSession"  # another MAC
    assert code_of(table, f"{sid}.{int(expires) + 3600}.{mac}") == "InvalidSession"  # a later expiry
    assert code_of(table, f"{flip(sid)}.{expires}.{mac}") == "InvalidSession"  # another id
    other = SessionTable(600, clock=clock)  # another process: another key
    assert code_of(other, cookie) == "InvalidSession"
    assert table.lookup(cookie) is session  # the real one still works


def test_a_cookie_minted_with_the_key_but_no_session_is_refused(clock: Clock) -> None:
    key = b"k" * 32
    issuer = SessionTable(600, clock=clock, key=key)
    _, cookie = issuer.create("alice", False, "s3cret-key")
    same_key_other_table = SessionTable(600, clock=clock, key=key)  # a restart with the same key
    assert code_of(same_key_other_table, cookie) == "SessionEnded"


def test_expiry_ends_the_session(table: SessionTable, clock: Clock) -> None:
    _, cookie = table.create("alice", False, "s3cret-key")
    clock.now += 599
    table.lookup(cookie)
    clock.now += 1
    assert code_of(table, cookie) == "SessionExpired"
    assert len(table) == 0  # dropped on sight
    clock.now -= 10  # even a clock that goes back does not bring it back
    assert code_of(table, cookie) == "SessionEnded"


def test_logout_revokes_server_side(table: SessionTable) -> None:
    session, cookie = table.create("alice", False, "s3cret-key")
    _, other = table.create("alice", False, "s3cret-key")
    assert table.revoke(session.sid)
    assert code_of(table, cookie) == "SessionEnded"
    table.lookup(other)  # another login of the same user is its own session
    assert not table.revoke(session.sid)


def test_revoke_user_ends_every_session_of_that_user(table: SessionTable) -> None:
    _, a1 = table.create("alice", False, "s3cret-key")
    _, a2 = table.create("alice", False, "s3cret-key")
    _, b = table.create("bob", False, "bob-secret")
    assert table.revoke_user("alice") == 2
    assert code_of(table, a1) == code_of(table, a2) == "SessionEnded"
    table.lookup(b)


def test_the_secret_fingerprint(table: SessionTable) -> None:
    session, _ = table.create("alice", False, "s3cret-key")
    assert table.secret_matches(session, "s3cret-key")
    assert not table.secret_matches(session, "new-secret")
    assert not table.secret_matches(session, None)  # disabled or removed
    assert session.secret_mac != b"s3cret-key"


def test_csrf_token_comparison(table: SessionTable) -> None:
    session, _ = table.create("alice", False, "s3cret-key")
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")
    assert not session.csrf_matches(session.csrf + "x")
    assert not session.csrf_matches("\udcff")  # a header that was not UTF-8


def test_the_table_is_bounded_and_sweeps_expired_sessions(clock: Clock) -> None:
    table = SessionTable(100, clock=clock, max_sessions=3)
    cookies = [table.create(f"u{i}", False, "s3cret-key")[1] for i in range(4)]
    assert len(table) == 3
    assert code_of(table, cookies[0]) == "SessionEnded"  # the oldest made room
    clock.now += 101
    table.create("late", False, "s3cret-key")
    assert len(table) == 1


def test_a_session_must_last_some_time() -> None:
    with pytest.raises(ValueError):
        SessionTable(0)


def test_login_limiter_blocks_an_address_after_repeated_failures() -> None:
    clock = Clock(0.0)
    limiter = LoginLimiter(max_failures=3, window=60, clock=clock)
    for _ in range(2):
        limiter.failed("10.0.0.1")
    assert limiter.blocked_for("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    assert limiter.blocked_for("10.0.0.1") == 60
    assert limiter.blocked_for("10.0.0.2") == 0  # other addresses are not affected
    clock.now = 30
    assert limiter.blocked_for("10.0.0.1") == 30
    clock.now = 60.5  # the failures aged out
    assert limiter.blocked_for("10.0.0.1") == 0


def test_login_limiter_forgets_an_address_on_success_and_is_bounded() -> None:
    clock = Clock(0.0)
    limiter = LoginLimiter(max_failures=2, window=60, clock=clock, max_addresses=2)
    limiter.failed("a")
    limiter.succeeded("a")
    limiter.failed("a")
    assert limiter.blocked_for("a") == 0
    limiter.failed("b")
    limiter.failed("c")  # a third address pushes out the oldest
    assert set(limiter._failures) == {"b", "c"}
