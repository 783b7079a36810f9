"""Object contents the test can regenerate, a ledger of what the server acknowledged, and a
bounded threaded S3 load (PUT, overwrite, GET, ranged GET, DELETE) that checks every read.

Every key belongs to one worker, and a worker runs one request at a time, so for every key
the ledger knows exactly what a read may return: the last acknowledged version, or one
of the writes sent after it whose outcome the client never learned (a request cut by a
crash may or may not have committed). Anything else read back is a lost object (an
older version or nothing at all) or wrong bytes (content the key never had).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

KiB, MiB = 1024, 1024 * 1024


def content(key: str, version: int, size: int) -> bytes:
    """The bytes of version ``version`` of ``key``: deterministic, incompressible."""
    return random.Random(f"{key}#{version}").randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def content_digest(key: str, version: int, size: int) -> str:
    with _DIGESTS_LOCK:
        found = _DIGESTS.get((key, version, size))
    if found is None:
        found = digest(content(key, version, size))
        with _DIGESTS_LOCK:
            _DIGESTS[(key, version, size)] = found
    return found


def pick_size(rnd: random.Random, profile: str = "mixed") -> int:
    """Object sizes that cover inline (<= 128 KiB), single-block and multi-block objects."""
    r = rnd.random()
    if profile == "small" or r < 0.6:
        return rnd.randrange(1, 120 * KiB)
    if r < 0.9:
        return rnd.randrange(130 * KiB, MiB)
    return rnd.randrange(MiB + 1, 2 * MiB + 300 * KiB)


def error_name(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode')} {err.get('Code')}"
    return type(exc).__name__


Version = tuple[int, int] | None  # (version, size), or None for "absent"


@dataclass
class KeyState:
    acked: Version = None
    acked_ever: bool = False
    pending: list[Version] = field(default_factory=list)  # sent after the last ack, outcome unknown
    history: list[tuple[int, int]] = field(default_factory=list)  # every version ever sent

    def acceptable(self) -> list[Version]:
        return [self.acked, *self.pending]


@dataclass
class ReadVerdict:
    outcome: str  # ok, lost, wrong, error
    detail: str = ""


class Ledger:
    """What every key may hold. Keys are owned by one worker each; the lock guards the dict."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyState] = {}
        self._lock = threading.Lock()

    def state(self, key: str) -> KeyState:
        with self._lock:
            return self.keys.setdefault(key, KeyState())

    def sent_put(self, key: str, size: int) -> int:
        st = self.state(key)
        version = len(st.history) + 1
        st.history.append((version, size))
        st.pending.append((version, size))
        return version

    def acked_put(self, key: str, version: int, size: int) -> None:
        st = self.state(key)
        st.acked, st.acked_ever, st.pending = (version, size), True, []

    def sent_delete(self, key: str) -> None:
        self.state(key).pending.append(None)

    def acked_delete(self, key: str) -> None:
        st = self.state(key)
        st.acked, st.pending = None, []

    def acked_objects(self) -> int:
        return sum(1 for st in self.keys.values() if st.acked is not None)

    def judge(self, key: str, body: bytes | None, rng: tuple[int, int] | None = None) -> ReadVerdict:
        """Judge what a read returned (``None``: the key does not exist)."""
        if body is None:
            return self.judge_digest(key, None)
        if rng is None:
            return self.judge_digest(key, digest(body), len(body))
        st = self.state(key)
        d = digest(body)
        if any(v is not None and digest(content(key, *v)[rng[0]:rng[1]]) == d for v in st.acceptable()):
            return ReadVerdict("ok")
        if any(digest(content(key, *v)[rng[0]:rng[1]]) == d for v in st.history):
            return ReadVerdict("lost", f"{key}: range {rng} of an older version was served, expected {st.acceptable()}")
        return ReadVerdict("wrong", f"{key}: {len(body)} bytes that range {rng} of this key never held")

    def judge_digest(self, key: str, found: str | None, size: int = -1) -> ReadVerdict:
        """Judge a whole object by its sha256 (``None``: the key does not exist)."""
        st = self.state(key)
        ok = st.acceptable()
        if found is None:
            if None in ok:
                return ReadVerdict("ok")
            return ReadVerdict("lost", f"{key}: not found, expected version {ok}")
        if any(v is not None and content_digest(key, *v) == found for v in ok):
            return ReadVerdict("ok")
        if any(content_digest(key, *v) == found for v in st.history):
            return ReadVerdict("lost", f"{key}: an older version was served, expected {ok}")
        return ReadVerdict("wrong", f"{key}: {size} bytes that this key never held")


@dataclass
class LoadStats:
    puts_acked: int = 0
    deletes_acked: int = 0
    reads_ok: int = 0
    wrong: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    write_errors: Counter = field(default_factory=Counter)
    read_errors: Counter = field(default_factory=Counter)

    def merge(self, other: "LoadStats") -> None:
        self.puts_acked += other.puts_acked
        self.deletes_acked += other.deletes_acked
        self.reads_ok += other.reads_ok
        self.wrong += other.wrong
        self.lost += other.lost
        self.write_errors.update(other.write_errors)
        self.read_errors.update(other.read_errors)

    def summary(self) -> str:
        parts = [f"puts acked {self.puts_acked}" if self.puts_acked else "",
                 f"deletes acked {self.deletes_acked}" if self.deletes_acked else "",
                 f"reads ok {self.reads_ok}", f"wrong {len(self.wrong)}", f"lost {len(self.lost)}",
                 f"write errors {dict(self.write_errors)}" if self.write_errors else "",
                 f"read errors {dict(self.read_errors)}" if self.read_errors else ""]
        return ", ".join(p for p in parts if p)


def read_key(client, bucket: str, key: str, rng: tuple[int, int] | None = None) -> bytes | None:
    """The object's bytes (or a range ``[start, end)``); None on NoSuchKey. Other errors raise."""
    kw = {"Range": f"bytes={rng[0]}-{rng[1] - 1}"} if rng else {}
    try:
        return client.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def check_read(client, ledger: Ledger, stats: LoadStats, bucket: str, key: str,
               rng: tuple[int, int] | None = None) -> None:
    """Read ``key`` and file the outcome. A response that fails boto3's own checksum check
    counts as wrong bytes: the server sent them."""
    try:
        body = read_key(client, bucket, key, rng)
    except (BotoCoreError, ClientError) as exc:
        if "Checksum" in type(exc).__name__:
            stats.wrong.append(f"{key}: {exc}")
        else:
            stats.read_errors[error_name(exc)] += 1
        return
    verdict = ledger.judge(key, body, rng)
    if verdict.outcome == "ok":
        stats.reads_ok += 1
    elif verdict.outcome == "lost":
        stats.lost.append(verdict.detail)
    else:
        stats.wrong.append(verdict.detail)


@dataclass
class LoadMix:
    put_new: float = 0.45
    overwrite: float = 0.15
    get: float = 0.25
    range_get: float = 0.10
    delete: float = 0.05
    profile: str = "mixed"


class LoadWorker(threading.Thread):
    """One client doing one request at a time on its own keys until stopped or out of ops."""

    def __init__(self, index: int, make_client, bucket: str, ledger: Ledger, stop: threading.Event,
                 *, mix: LoadMix, max_ops: int, seed: int) -> None:
        super().__init__(name=f"load-{index}", daemon=True)
        self.index, self.make_client, self.bucket, self.ledger = index, make_client, bucket, ledger
        self.stop_event, self.mix, self.max_ops = stop, mix, max_ops
        self.rnd = random.Random(seed * 1000 + index)
        self.stats = LoadStats()
        self.my_keys: list[str] = []
        self.ops = 0
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            client = self.make_client()
            while not self.stop_event.is_set() and self.ops < self.max_ops:
                self.ops += 1
                self.step(client)
        except BaseException as exc:  # noqa: BLE001 - reported by the test, never swallowed
            self.crash = exc

    def step(self, client) -> None:
        m = self.mix
        live = [k for k in self.my_keys if self.ledger.state(k).acked is not None]
        r = self.rnd.random() * (m.put_new + m.overwrite + m.get + m.range_get + m.delete)
        if r < m.put_new or not live:
            key = f"w{self.index}/{len(self.my_keys):05d}"
            self.my_keys.append(key)
            self.put(client, key)
            return
        key = self.rnd.choice(live)
        r -= m.put_new
        if r < m.overwrite:
            self.put(client, key)
        elif r < m.overwrite + m.get:
            check_read(client, self.ledger, self.stats, self.bucket, key)
        elif r < m.overwrite + m.get + m.range_get:
            _, size = self.ledger.state(key).acked
            start = self.rnd.randrange(size)
            end = min(size, start + 1 + self.rnd.randrange(300 * KiB))
            check_read(client, self.ledger, self.stats, self.bucket, key, (start, end))
        else:
            self.ledger.sent_delete(key)
            try:
                client.delete_object(Bucket=self.bucket, Key=key)
            except (BotoCoreError, ClientError) as exc:
                self.stats.write_errors["DELETE " + error_name(exc)] += 1
                return
            self.ledger.acked_delete(key)
            self.stats.deletes_acked += 1

    def put(self, client, key: str) -> None:
        size = pick_size(self.rnd, self.mix.profile)
        version = self.ledger.sent_put(key, size)
        try:
            client.put_object(Bucket=self.bucket, Key=key, Body=content(key, version, size))
        except (BotoCoreError, ClientError) as exc:
            self.stats.write_errors["PUT " + error_name(exc)] += 1
            return
        self.ledger.acked_put(key, version, size)
        self.stats.puts_acked += 1


@dataclass
class Load:
    """A running load; ``finish()`` stops it and returns the merged stats."""

    workers: list[LoadWorker]
    stop: threading.Event
    started: float

    def finish(self, timeout: float = 120.0) -> LoadStats:
        self.stop.set()
        total = LoadStats()
        for w in self.workers:
            w.join(timeout)
            assert not w.is_alive(), f"{w.name} did not stop within {timeout}s"
            if w.crash is not None:
                raise AssertionError(f"{w.name} crashed") from w.crash
            total.merge(w.stats)
        return total


def start_load(make_client, bucket: str, ledger: Ledger, *, workers: int = 3, mix: LoadMix | None = None,
               max_ops: int = 10_000, seed: int = 1) -> Load:
    stop = threading.Event()
    ws = [LoadWorker(i, make_client, bucket, ledger, stop, mix=mix or LoadMix(), max_ops=max_ops, seed=seed)
          for i in range(workers)]
    for w in ws:
        w.start()
    return Load(ws, stop, time.monotonic())


def judge_digests(ledger: Ledger, digests: dict[tuple[str, str], str], bucket: str) -> LoadStats:
    """Judge every key of the ledger against what an offline read-back found."""
    stats = LoadStats()
    for key in sorted(ledger.keys):
        verdict = ledger.judge_digest(key, digests.get((bucket, key)))
        if verdict.outcome == "ok":
            stats.reads_ok += 1
        else:
            (stats.lost if verdict.outcome == "lost" else stats.wrong).append(verdict.detail)
    return stats


def verify_ledger(client, ledger: Ledger, bucket: str) -> LoadStats:
    """Read every key the ledger knows through S3 and judge each."""
    stats = LoadStats()
    for key in sorted(ledger.keys):
        check_read(client, ledger, stats, bucket, key)
    return stats
