"""Anti-entropy's range digests kept current by the registry's commits (``registry/digests.py``):
after any sequence of commits they equal a fresh scan of the bucket, and a bucket is scanned
once, not at every request."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from buckets.cluster.index import IndexReplica
from buckets.registry import Op, Registry
from buckets.registry.digests import DIGEST_RANGES, BucketDigests, range_digests

BUCKETS = ("b", "c")


@pytest.fixture
async def reg(tmp_path):
    r = Registry(str(tmp_path / "reg"), cache_size=100, sync=False)
    r.start()
    for name in BUCKETS:
        await r.commit([Op("put_bucket", name, value={"created": 1.0})])
    yield r
    await r.close()


def entry(wid: str, ts: list) -> dict:
    return {"wid": wid, "size": 1, "etag": "e", "mt": 1.0, "vid": "null", "ts": ts}


def scanned(reg: Registry, bucket: str) -> tuple[list[int], list[int]]:
    counts = [0] * DIGEST_RANGES
    return range_digests(reg.bucket_versions(bucket), DIGEST_RANGES, counts), counts


def random_op(rng: random.Random, reg: Registry, clock: list[int]) -> Op:
    """A merge (an entry, a tombstone, sometimes older than what the key holds, sometimes a
    moved version with a generation) or a retract of what a key holds, on a few keys."""
    bucket, key = rng.choice(BUCKETS), f"k{rng.randrange(12)}"
    clock[0] += 1
    hlc = clock[0] - (rng.randrange(5) if rng.random() < 0.2 else 0)  # some arrive late: not applied
    wid = f"w{clock[0]}"
    ts: list = [hlc, wid] + ([rng.randrange(1, 4)] if rng.random() < 0.15 else [])
    roll = rng.random()
    if roll < 0.15:
        held, version = reg.get_version(bucket, key)
        if version is not None:  # undo what the key holds: back to an older entry, a tombstone or nothing
            back = rng.random()
            if held is not None and back < 0.4:
                older = [version[0] - 1, f"o{clock[0]}"]
                return Op("retract_object", bucket, key, value=entry(older[1], older), ts=version)
            if back < 0.7:
                return Op("retract_object", bucket, key, value=None, ts=version, prior=(version[0] - 1, "t"))
            return Op("retract_object", bucket, key, value=None, ts=version)
    tomb = roll > 0.75
    return Op("merge_object", bucket, key, value=None if tomb else entry(wid, ts), ts=tuple(ts),
              judging=tomb and rng.random() < 0.3, judged=None)


@pytest.mark.parametrize("seed", range(4))
async def test_kept_digests_equal_a_fresh_scan_after_every_commit(reg, seed) -> None:
    rng = random.Random(seed)
    clock = [1000]
    for name in BUCKETS:
        assert reg.bucket_digest(name, DIGEST_RANGES) == scanned(reg, name)
    assert reg.digests.scans == 2
    applied = retracted = 0
    for step in range(400):
        ops = [random_op(rng, reg, clock) for _ in range(rng.randrange(1, 4))]
        try:
            await reg.commit(ops)
        except Exception:  # noqa: BLE001 - a commit refused as a whole (e.g. a key lock): nothing changed
            pass
        applied += sum(op.applied for op in ops if op.kind == "merge_object")
        retracted += sum(op.applied for op in ops if op.kind == "retract_object")
        name = rng.choice(BUCKETS)
        assert reg.bucket_digest(name, DIGEST_RANGES) == scanned(reg, name), f"step {step}"
    for name in BUCKETS:
        assert reg.bucket_digest(name, DIGEST_RANGES) == scanned(reg, name)
    assert applied > 100 and retracted > 5  # the sequence exercised what it is about
    assert reg.digests.scans == 2, "a kept digest was scanned again"


async def test_a_bucket_changed_in_another_way_is_scanned_again(reg) -> None:
    await reg.commit([Op("merge_object", "b", f"k{i}", value=entry(f"w{i}", [i + 1, f"w{i}"]), ts=(i + 1, f"w{i}"))
                      for i in range(50)])
    reg.bucket_digest("b", DIGEST_RANGES)
    reg.bucket_digest("c", DIGEST_RANGES)
    await reg.drop_entries("b", batch=20)  # a replica that no longer holds the bucket's index
    assert reg.bucket_digest("b", DIGEST_RANGES) == scanned(reg, "b") == ([0] * DIGEST_RANGES, [0] * DIGEST_RANGES)
    await reg.commit([Op("put_object", "c", "plain", value={"wid": "p", "size": 1, "etag": "e", "mt": 5.0})])
    assert reg.bucket_digest("c", DIGEST_RANGES) == scanned(reg, "c")
    assert reg.digests.scans == 4  # b and c once each, then each again after its other change
    # A tombstone forgotten (a cluster's ``forget_tombs``) is folded out, not scanned again.
    await reg.commit([Op("merge_object", "c", "gone", value=None, ts=(7, "t"))])
    assert reg.old_tombstones("c", 1 << 62, 10) == [("gone", (7, "t"))]
    forget = Op("forget_tombstone", "c", "gone", ts=(7, "t"))
    await reg.commit([forget])
    assert forget.applied and reg.old_tombstones("c", 1 << 62, 10) == []
    assert reg.bucket_digest("c", DIGEST_RANGES) == scanned(reg, "c")
    assert reg.digests.scans == 4


async def test_commits_during_the_first_scan_are_folded_in(reg, monkeypatch) -> None:
    """The scan reads one snapshot off the loop while commits go on: those after its snapshot
    reach the kept digests through the bucket's journal, those before it only once."""
    await reg.commit([Op("merge_object", "b", f"k{i}", value=entry(f"w{i}", [i + 1, f"w{i}"]), ts=(i + 1, f"w{i}"))
                      for i in range(100)])
    at_snapshot, go_on = threading.Event(), threading.Event()
    original = reg._txn_bucket_versions

    def held_scan(txn, bucket):
        at_snapshot.set()  # the read transaction (its snapshot) is open
        assert go_on.wait(10)
        yield from original(txn, bucket)

    monkeypatch.setattr(reg, "_txn_bucket_versions", held_scan)
    loop = asyncio.get_running_loop()
    first = loop.run_in_executor(None, reg.bucket_digest, "b", DIGEST_RANGES)
    assert await loop.run_in_executor(None, at_snapshot.wait, 10)
    # Overwrites, deletes and new keys while the scan is held
    await reg.commit([Op("merge_object", "b", f"k{i}", value=entry(f"x{i}", [500 + i, f"x{i}"]), ts=(500 + i, f"x{i}"))
                      for i in range(0, 100, 3)])
    await reg.commit([Op("merge_object", "b", f"k{i}", value=None, ts=(700 + i, f"d{i}")) for i in range(1, 100, 7)])
    await reg.commit([Op("merge_object", "b", f"new{i}", value=entry(f"n{i}", [900 + i, f"n{i}"]),
                         ts=(900 + i, f"n{i}")) for i in range(20)])
    go_on.set()
    monkeypatch.setattr(reg, "_txn_bucket_versions", original)
    expected = scanned(reg, "b")
    assert await first == expected
    await reg.commit([Op("merge_object", "b", "after", value=entry("a", [2000, "a"]), ts=(2000, "a"))])
    assert reg.bucket_digest("b", DIGEST_RANGES) == scanned(reg, "b")
    assert reg.digests.scans == 1


async def test_an_index_replica_answers_digests_without_scanning_again(reg) -> None:
    replica = IndexReplica(reg)
    await reg.commit([Op("merge_object", "b", f"k{i}", value=entry(f"w{i}", [i + 1, f"w{i}"]), ts=(i + 1, f"w{i}"))
                      for i in range(2000)])
    for round_ in range(5):
        await replica.merge({"bucket": "b", "key": f"k{round_}", "entry": entry(f"r{round_}", [5000 + round_, "r"]),
                             "data": None, "ts": [5000 + round_, f"r{round_}"]})
        answer = await replica.digest({"bucket": "b", "ranges": DIGEST_RANGES})
        assert (answer["digest"], answer["counts"]) == scanned(reg, "b")
    assert reg.digests.scans == 1
    # Another number of ranges is scanned as asked (an older peer's request)
    answer = await replica.digest({"bucket": "b", "ranges": 8})
    assert answer["digest"] == range_digests(reg.bucket_versions("b"), 8)


def test_a_report_the_scans_snapshot_holds_is_not_folded_again() -> None:
    """Reports arrive after their commit: one whose transaction the scan's snapshot already
    holds (id 5 here) must not count twice; one after it (6) must count."""
    digests = BucketDigests()

    def scan() -> tuple[int, list[int], list[int]]:
        digests.committed(5, [("b", "x", None, ((1, "w"), False))])
        digests.committed(6, [("b", "y", None, ((2, "v"), False)), ("other", "z", None, ((3, "u"), False))])
        counts = [0] * DIGEST_RANGES
        return 5, range_digests([("x", (1, "w"), False)], DIGEST_RANGES, counts), counts

    counts = [0] * DIGEST_RANGES
    both = range_digests([("x", (1, "w"), False), ("y", (2, "v"), False)], DIGEST_RANGES, counts)
    assert digests.get("b", scan) == (both, counts)
    assert digests.get("b", scan) == (both, counts) and digests.scans == 1
    digests.committed(7, [("b", "y", ((2, "v"), False), ((4, "t"), True))])
    assert digests.get("b", scan)[0] == range_digests([("x", (1, "w"), False), ("y", (4, "t"), True)], DIGEST_RANGES)
    digests.committed(8, [("b", None, None, None)])  # changed in another way: scanned again
    digests.get("b", scan)
    assert digests.scans == 2


def test_requests_that_come_together_share_one_scan() -> None:
    """A bucket's first requests (a replica's own pass, its peers' exchanges) arrive together
    after a start: those that find its scan under way wait for it instead of scanning too."""
    digests = BucketDigests()
    started, release, calls = threading.Event(), threading.Event(), []
    counts = [0] * DIGEST_RANGES
    want = range_digests([("x", (1, "w"), False)], DIGEST_RANGES, counts)

    def scan() -> tuple[int, list[int], list[int]]:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return 5, list(want), list(counts)

    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(digests.get("b", scan))) for _ in range(4)]
    threads[0].start()
    assert started.wait(10)
    for t in threads[1:]:
        t.start()
    time.sleep(0.2)  # (the three others now wait on the scan)
    release.set()
    for t in threads:
        t.join(10)
    assert answers == [(want, counts)] * 4
    assert len(calls) == 1 and digests.scans == 1


def test_a_scan_that_fails_leaves_the_next_request_to_scan() -> None:
    digests = BucketDigests()
    started, release, calls = threading.Event(), threading.Event(), []
    counts = [0] * DIGEST_RANGES

    def failing() -> tuple[int, list[int], list[int]]:
        calls.append("failing")
        started.set()
        assert release.wait(10)
        raise OSError("LMDB read failed")

    def scan() -> tuple[int, list[int], list[int]]:
        calls.append("scan")
        return 5, [7] * DIGEST_RANGES, list(counts)

    errors: list = []
    answers: list = []

    def first() -> None:
        try:
            digests.get("b", failing)
        except OSError as exc:
            errors.append(exc)

    t1 = threading.Thread(target=first)
    t1.start()
    assert started.wait(10)
    t2 = threading.Thread(target=lambda: answers.append(digests.get("b", scan)))
    t2.start()
    time.sleep(0.2)  # (it waits on the failing scan)
    release.set()
    t1.join(10)
    t2.join(10)
    assert len(errors) == 1 and answers == [([7] * DIGEST_RANGES, counts)]
    assert calls == ["failing", "scan"] and digests.scans == 1
    assert digests.get("b", scan) == ([7] * DIGEST_RANGES, counts) and calls == ["failing", "scan"]  # kept


async def test_a_failure_to_keep_the_digests_never_fails_the_commit(reg, monkeypatch) -> None:
    reg.bucket_digest("b", DIGEST_RANGES)

    def broken(txn_id, changes):
        raise RuntimeError("a bug in the digests")

    monkeypatch.setattr(reg.digests, "committed", broken)
    await reg.commit([Op("merge_object", "b", "k", value=entry("w", [5, "w"]), ts=(5, "w"))])
    assert reg.get_version("b", "k")[1] == (5, "w")
    monkeypatch.undo()
    assert reg.bucket_digest("b", DIGEST_RANGES) == scanned(reg, "b")
    assert reg.digests.scans == 2  # the kept ones were dropped, not trusted


async def test_the_versions_of_some_ranges_are_those_of_the_whole_bucket_in_them(reg) -> None:
    """An exchange asks for the versions of a few ranges: the others are not decoded, and long
    keys (records filed by a hash, several keys sharing one) are judged by their real key."""
    from buckets.registry.digests import range_of

    long = "x" * 600
    keys = [f"k{i}" for i in range(300)] + [f"{long}{i}" for i in range(20)]
    await reg.commit([Op("merge_object", "b", k, value=entry(f"w{i}", [i + 1, f"w{i}"]), ts=(i + 1, f"w{i}"))
                      for i, k in enumerate(keys)])
    await reg.commit([Op("merge_object", "b", k, value=None, ts=(1000 + i, f"d{i}")) for i, k in enumerate(keys[::7])])
    everything = reg.bucket_versions("b")
    assert len(everything) == len(keys)
    for wanted in ({0}, {3, 17, 40}, set(range(0, 64, 2))):
        some = list(reg.iter_bucket_versions("b", wanted, DIGEST_RANGES))
        assert some == [v for v in everything if range_of(v[0], DIGEST_RANGES) in wanted]
    # (the last set covered both kinds of records)
    assert any(t for _, _, t in some) and any(k.startswith(long) for k, _, _ in some)
    assert any(t and k.startswith(long) for k, _, t in some)
