"""Range digests of a bucket's index versions, kept current by the registry's commits.

Anti-entropy (``cluster/index.py``) compares two replicas of a bucket's index by 64 digests:
each the xor of a hash of every (key, version, tombstone) whose key hashes into that range.
Computed by a scan, a digest costs about 3 µs of CPU per key (the LMDB walk and msgpack
decoding of every entry, then the hashing), and a pass computed each replica's digests four
times a minute per bucket (twice as the target of its own exchanges, once for each peer's),
holding the GIL: an idle cluster's replica nodes spent ~1.4 s of CPU a minute on it for
40,000 keys (bench/README.md, session 57), half a core at a million.

An xor is its own inverse, so a digest is kept current instead: the first request for a
bucket's digests scans it once (from one LMDB snapshot, off the event loop; requests meanwhile
wait for that scan), and every commit after that snapshot folds each changed key's old state
out and its new state in. The writers
report their changes right after their transaction commits (``committed``), whether or not
the bucket is tracked yet, so a scan that begins after a commit sees it in its snapshot and a
commit whose report arrives while a scan runs is kept in the bucket's journal and folded in
if its transaction id is above the scan's snapshot. Xor and counts commute: reports may
arrive in any order.

What changes keys some other way than one at a time (a whole bucket's entries dropped, a
single node's ``put_object``, versions) makes the bucket's digests stale:
they are scanned again at the next request. So are digests older than ``REFRESH``, a bound on
any drift a missed path could cause (at most one more scan an hour, not four a minute).
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Iterable

import xxhash

DIGEST_RANGES = 64
REFRESH = 3600.0  # seconds a bucket's incremental digests are trusted before a new scan
SCAN_WAIT = 60.0  # seconds a request waits for the bucket's scan under way before it scans too


def range_of(key: str, n: int) -> int:
    return xxhash.xxh3_64_intdigest(key.encode()) % n


def version_hash(key: str, version: tuple, tomb: bool) -> int:
    # A moved entry's generation is part of its version: replicas holding (h, w) and
    # (h, w, g) of one key must differ, so anti-entropy spreads the moved one.
    gen = f"\0g{version[2]}" if len(version) > 2 else ""
    return xxhash.xxh3_64_intdigest(f"{key}\0{version[0]}\0{version[1]}\0{int(tomb)}{gen}".encode())


def range_digests(versions: Iterable[tuple[str, tuple, bool]], n: int, counts: list[int] | None = None) -> list[int]:
    """An order-independent digest per key-hash range: the xor of each (key, version)'s hash.
    ``counts``, if given, gets the number of keys and tombstones of each range."""
    out = [0] * n
    for key, version, tomb in versions:
        r = range_of(key, n)
        if counts is not None:
            counts[r] += 1
        out[r] ^= version_hash(key, version, tomb)
    return out


class _Tracked:
    """One bucket's kept digests. Machine-word arrays: about 1.2 KB a bucket (a cluster node
    tracks each bucket it replicates and its two shadows), against 5 KB as lists of ints."""
    __slots__ = ("digest", "counts", "journal", "made", "scanned")

    def __init__(self) -> None:
        self.digest: array | None = None  # None while the first scan runs
        self.counts = array("q", bytes(8 * DIGEST_RANGES))
        self.journal: list[tuple[int, list]] = []  # (transaction id, changes) reported during the scan
        self.made = 0.0  # monotonic time of the scan
        self.scanned = threading.Event()  # set when its scan ended (kept, failed or made stale)


class BucketDigests:
    """Every tracked bucket's ``DIGEST_RANGES`` digests and key counts (any thread)."""

    def __init__(self, refresh: float = REFRESH) -> None:
        self.refresh = refresh
        self.ranges = DIGEST_RANGES
        self._lock = threading.Lock()
        self._buckets: dict[str, _Tracked] = {}
        self.scans = 0  # full scans made (the figure anti-entropy's cost follows)

    def committed(self, txn_id: int, changes: list[tuple[str, str | None, object, object]]) -> None:
        """A writer's report, after its transaction ``txn_id`` committed: (bucket, key, old
        state, new state) per changed key, a state being (version, is tombstone) or None
        (nothing held); a key of None makes the bucket stale."""
        if not changes or not self._buckets:  # (checked after the commit: a scan begun later sees it)
            return
        with self._lock:
            for bucket, key, old, new in changes:
                tracked = self._buckets.get(bucket)
                if tracked is None:
                    continue
                if key is None:
                    del self._buckets[bucket]
                elif tracked.digest is None:
                    tracked.journal.append((txn_id, [(key, old, new)]))
                else:
                    _fold(tracked, key, old, new)

    def stale_all(self) -> None:
        with self._lock:
            self._buckets.clear()

    def get(self, bucket: str, scan: Callable[[], tuple[int, list[int], list[int]]]) -> tuple[list[int], list[int]]:
        """(digests, counts) of ``bucket``: kept ones, or ``scan()``'s (snapshot transaction id,
        digests, counts), which then start being kept. A request that finds the bucket's scan
        under way waits for it (up to ``SCAN_WAIT``) rather than scan too: the first requests
        after a start, a replica's own pass and its peers' exchanges, came together, and each
        scanned. Blocking: call it off the event loop."""
        waited = False
        while True:
            with self._lock:
                tracked = self._buckets.get(bucket)
                if tracked is not None and tracked.digest is not None:
                    if time.monotonic() - tracked.made < self.refresh:
                        return list(tracked.digest), list(tracked.counts)
                    tracked = None
                if tracked is None:
                    tracked = self._buckets[bucket] = _Tracked()
                elif not waited:  # another thread's scan runs: wait for it, then look again
                    waited = True
                    running = tracked
                    tracked = None
            if tracked is not None:
                break
            running.scanned.wait(SCAN_WAIT)
        try:
            snapshot, digest, counts = scan()  # (registered first: every commit after it is journaled)
        except BaseException:
            with self._lock:
                if self._buckets.get(bucket) is tracked and tracked.digest is None:
                    del self._buckets[bucket]  # (the next request scans again)
            tracked.scanned.set()
            raise
        with self._lock:
            self.scans += 1
            tracked.scanned.set()
            if self._buckets.get(bucket) is tracked and tracked.digest is None:
                tracked.digest, tracked.counts, tracked.made = array("Q", digest), array("q", counts), time.monotonic()
                for txn_id, changes in tracked.journal:
                    if txn_id > snapshot:
                        for key, old, new in changes:
                            _fold(tracked, key, old, new)
                tracked.journal = []
                return list(tracked.digest), list(tracked.counts)
        return digest, counts  # made stale meanwhile, or another scan finished first: this one's own


def _fold(tracked: _Tracked, key: str, old, new) -> None:
    assert tracked.digest is not None
    r = range_of(key, DIGEST_RANGES)
    if old is not None:
        tracked.digest[r] ^= version_hash(key, old[0], old[1])
        tracked.counts[r] -= 1
    if new is not None:
        tracked.digest[r] ^= version_hash(key, new[0], new[1])
        tracked.counts[r] += 1
