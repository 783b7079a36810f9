"""Signing and verifying peer requests: what is covered, the window, the replay cache."""

from __future__ import annotations

import pytest

from buckets.cluster.rpcauth import (
    ARGS_HEADER, BODY_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIME_HEADER, AuthRefused, PeerSigner,
    PeerVerifier, ReplayCache, body_declaration, cluster_secret,
)

SECRET = b"a-cluster-secret-of-some-length"
PATH = "/_buckets/peer/v1/disk/create_file"
ARGS = b"\x81\xa4path\xa3a/b"


class Clock:
    def __init__(self, now: float = 1_764_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(clock: Clock | None = None, secret: bytes = SECRET, body: str = "length:10",
           args: bytes = ARGS) -> dict[str, str]:
    signer = PeerSigner(secret, clock=clock or Clock())
    return signer.headers("POST", PATH, "", args, body)


def test_a_signed_request_verifies_and_reports_what_was_signed() -> None:
    clock = Clock()
    request = PeerVerifier(SECRET, clock=clock).verify("POST", PATH, "", signed(clock))
    assert request.args_length == len(ARGS)
    assert request.body == "length:10" and request.body_length == 10 and request.streamed
    assert not PeerVerifier(SECRET, clock=clock).verify("POST", PATH, "", signed(clock, body="none")).streamed


@pytest.mark.parametrize(("what", "method", "path", "query"), [
    ("method", "PUT", PATH, ""),
    ("path", "POST", "/_buckets/peer/v1/disk/delete", ""),
    ("query", "POST", PATH, "x=1"),
])
def test_the_signature_covers_method_path_and_query(what: str, method: str, path: str, query: str) -> None:
    clock = Clock()
    with pytest.raises(AuthRefused, match="bad signature"):
        PeerVerifier(SECRET, clock=clock).verify(method, path, query, signed(clock))


@pytest.mark.parametrize(("header", "value"), [
    (TIME_HEADER, "1764000000001"),
    (NONCE_HEADER, "AAAAAAAAAAAAAAAAAAAAAA"),
    (ARGS_HEADER, f"{len(ARGS)}:" + "0" * 64),
    (BODY_HEADER, "stream"),
    (BODY_HEADER, "length:11"),
    (SIGNATURE_HEADER, "0" * 64),
])
def test_changing_any_signed_header_breaks_the_signature(header: str, value: str) -> None:
    clock = Clock()
    headers = signed(clock)
    assert headers[header] != value
    headers[header] = value
    with pytest.raises(AuthRefused, match="bad signature"):
        PeerVerifier(SECRET, clock=clock).verify("POST", PATH, "", headers)


def test_another_secret_is_refused() -> None:
    clock = Clock()
    with pytest.raises(AuthRefused, match="bad signature"):
        PeerVerifier(b"another-secret-entirely", clock=clock).verify("POST", PATH, "", signed(clock))


@pytest.mark.parametrize("missing", [TIME_HEADER, NONCE_HEADER, ARGS_HEADER, BODY_HEADER, SIGNATURE_HEADER])
def test_missing_headers_are_refused(missing: str) -> None:
    clock = Clock()
    headers = signed(clock)
    del headers[missing]
    with pytest.raises(AuthRefused):
        PeerVerifier(SECRET, clock=clock).verify("POST", PATH, "", headers)


@pytest.mark.parametrize(("header", "value"), [
    (TIME_HEADER, "-5"), (TIME_HEADER, "12.5"), (NONCE_HEADER, "short"), (NONCE_HEADER, "A" * 21 + "/"),
    (ARGS_HEADER, "12"), (BODY_HEADER, "length:-1"), (BODY_HEADER, "chunked"), (SIGNATURE_HEADER, "ZZ" * 32),
])
def test_malformed_headers_are_refused_before_any_hmac(header: str, value: str) -> None:
    clock = Clock()
    headers = signed(clock)
    headers[header] = value
    with pytest.raises(AuthRefused, match="malformed"):
        PeerVerifier(SECRET, clock=clock).verify("POST", PATH, "", headers)


@pytest.mark.parametrize("offset", [-61.0, 61.0, -3600.0, 86400.0])
def test_requests_outside_the_window_are_refused(offset: float) -> None:
    sender, receiver = Clock(), Clock()
    headers = signed(sender)
    receiver.now = sender.now - offset  # the sender's clock is `offset` seconds ahead
    with pytest.raises(AuthRefused, match="outside the 60s window"):
        PeerVerifier(SECRET, clock=receiver).verify("POST", PATH, "", headers)


@pytest.mark.parametrize("offset", [-59.0, 0.0, 59.0])
def test_requests_inside_the_window_pass(offset: float) -> None:
    sender, receiver = Clock(), Clock()
    headers = signed(sender)
    receiver.now = sender.now - offset
    PeerVerifier(SECRET, clock=receiver).verify("POST", PATH, "", headers)


def test_the_window_is_configurable() -> None:
    sender, receiver = Clock(), Clock()
    headers = signed(sender)
    receiver.now = sender.now + 10
    PeerVerifier(SECRET, clock=receiver, window=60).verify("POST", PATH, "", headers)
    with pytest.raises(AuthRefused, match="outside the 5s window"):
        PeerVerifier(SECRET, clock=receiver, window=5).verify("POST", PATH, "", headers)


def test_a_replayed_request_is_refused_and_a_fresh_one_is_not() -> None:
    clock = Clock()
    verifier = PeerVerifier(SECRET, clock=clock, replay=ReplayCache())
    headers = signed(clock)
    verifier.verify("POST", PATH, "", headers)
    with pytest.raises(AuthRefused, match="replayed"):
        verifier.verify("POST", PATH, "", headers)
    verifier.verify("POST", PATH, "", signed(clock))  # same content, new nonce


def test_a_forged_request_never_enters_the_replay_cache() -> None:
    clock = Clock()
    cache = ReplayCache()
    verifier = PeerVerifier(SECRET, clock=clock, replay=cache)
    forged = signed(clock, secret=b"not-the-cluster-secret")
    with pytest.raises(AuthRefused, match="bad signature"):
        verifier.verify("POST", PATH, "", forged)
    assert len(cache) == 0


def test_the_replay_cache_forgets_nonces_once_their_window_has_passed() -> None:
    clock = Clock()
    cache = ReplayCache()
    verifier = PeerVerifier(SECRET, clock=clock, replay=cache, window=60)
    for _ in range(100):
        verifier.verify("POST", PATH, "", signed(clock))
    assert len(cache) == 100
    clock.now += 61
    verifier.verify("POST", PATH, "", signed(clock))
    assert len(cache) == 1


def test_the_replay_cache_is_bounded() -> None:
    cache = ReplayCache(capacity=10)
    for i in range(25):
        assert cache.check_and_add(f"nonce-{i}", expires=100.0, now=0.0)
    assert len(cache) == 10 and cache.evicted == 15
    assert not cache.check_and_add("nonce-24", expires=100.0, now=0.0)


def test_cluster_secret_explicit_or_derived_from_root_credentials() -> None:
    assert cluster_secret("an-explicit-secret-value", "root", "password1") == b"an-explicit-secret-value"
    derived = cluster_secret(None, "root", "password1")
    assert len(derived) == 32
    assert derived == cluster_secret(None, "root", "password1")  # every node derives the same
    assert derived != cluster_secret(None, "root", "password2")
    assert derived != cluster_secret(None, "root2", "password1")
    assert cluster_secret(None, "ro", "otpassword1") != cluster_secret(None, "roo", "tpassword1")


def test_body_declarations() -> None:
    assert body_declaration(None, streamed=False) == "none"
    assert body_declaration(None, streamed=True) == "stream"
    assert body_declaration(0, streamed=True) == "length:0"
    assert body_declaration(5, streamed=True) == "length:5"
