"""The refill of a returning disk when not everything can be rebuilt at once.

A disk comes back (it was away while objects were written) and the refill walks every
object whose set holds it. An object it cannot refill now (too few other shards readable,
its own disk refusing a write, the disk going away again) is logged in one warning line,
without a traceback, and retried later with backoff; the disk stays ``healing`` and the
refill is not ``finished`` until every object is back on it. The disks are real
(``LocalDisk``) under ``FaultyDisk``; nothing else is replaced."""

from __future__ import annotations

import logging
import os

import pytest
from engine_testkit import BLOCK, INLINE, content, eventually, get_bytes

from buckets import Store
from buckets.engine import paths
from buckets.engine.heal import heal_object
from buckets.engine.scanner import ScannerConfig
from buckets.errors import DiskFaulty, DiskFull, DiskOffline
from buckets.storage import LocalDisk
from buckets.storage.faulty import FaultyDisk

SIZES = {"empty": 0, "tiny": 10, "inline": INLINE - 7, "blocks": 3 * BLOCK + 7}
READS = ("read_file", "file_size", "read_range")
# Short waits between retry rounds, so the test takes no longer than the work.
FAST_RETRY = ScannerConfig(refill_retry=0.02, refill_retry_max=0.1)


@pytest.fixture
async def store(disk_paths):
    disks = [FaultyDisk(LocalDisk(p)) for p in disk_paths]
    s = await Store.open_disks(disks, sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64,
                               small_copy_limit=0, background=False, scanner_config=FAST_RETRY)
    await s.make_bucket("bkt")
    yield s
    await s.close()


@pytest.fixture
def heal_log(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="buckets.heal")
    return caplog


async def written_while_away(store, slot: int, tag: str) -> dict[str, bytes]:
    """Objects PUT while disk ``slot`` fails every call (it is marked offline)."""
    store.disks[slot].fail("*", error=DiskFaulty)
    objects = {}
    for name, size in SIZES.items():
        data = content(f"{tag}-{name}", size)
        await store.put_object("bkt", f"{tag}/{name}", data, size)
        objects[f"{tag}/{name}"] = data
    assert not store.disks[slot].online
    store.disks[slot].clear()
    return objects


def refill_state(store, slot: int) -> dict:
    return store.scanner.status()["refill"].get(store.disks[slot].disk_id, {})


async def assert_refilled(store, slot: int, objects: dict[str, bytes]) -> None:
    """Every object has a complete shard on disk ``slot`` (nothing left to heal) and reads back."""
    disk = store.disks[slot]
    assert os.path.exists(disk.local_path(paths.bucket_meta("bkt")))
    for key, data in objects.items():
        entry = store.registry.get_object("bkt", key)
        assert os.path.exists(disk.local_path(paths.meta_path("bkt", key, entry["wid"]))), key
        assert (await heal_object(store, "bkt", key, deep=True)).bad == [], key
        assert await get_bytes(store, "bkt", key) == data, key


def assert_no_traceback(log: pytest.LogCaptureFixture) -> None:
    bugs = [r.getMessage() for r in log.records if r.exc_info]
    assert bugs == [], f"logged with a traceback: {bugs}"


async def test_objects_with_too_few_readable_shards_are_retried_until_they_are_refilled(store, heal_log) -> None:
    objects = await written_while_away(store, 2, "away")
    # Disks 0 and 1 cannot be read, their format file neither (so the probe below finds them
    # offline, whatever the order in which it and the refill's first reads run): of the other
    # shards only disk 3's is readable (k = 2).
    for i in (0, 1):
        store.disks[i].fail("read_format", *READS, error=DiskOffline)
    await store.scanner.check_disks()  # disk 2 answers again: back, and its refill starts
    assert store.disks[2].online and store.disks[2].healing

    state = await eventually(lambda: (s := refill_state(store, 2)).get("state") == "retrying" and s, timeout=30)
    assert state["pending"] == len(objects) and state["finished"] is None
    assert store.disks[2].healing, "a disk with objects still missing is not healed"
    assert not store.disks[0].online and not store.disks[1].online
    warnings = [r.getMessage() for r in heal_log.records if r.levelno == logging.WARNING and "refill of" in r.getMessage()]
    assert any("left to refill" in w and "retrying in" in w for w in warnings), warnings
    assert any("could not refill" in w for w in warnings), warnings
    assert "finished" not in " ".join(warnings)

    for i in (0, 1):  # the other disks come back: the retries now succeed
        store.disks[i].clear()
    await store.scanner.check_disks()
    await eventually(lambda: refill_state(store, 2).get("finished"), timeout=30)
    state = refill_state(store, 2)
    assert state["state"] == "finished" and state["pending"] == 0 and state["retries"] >= 1
    assert not store.disks[2].healing
    await assert_refilled(store, 2, objects)
    assert_no_traceback(heal_log)


async def test_writes_the_returning_disk_refuses_are_retried(store, heal_log) -> None:
    objects = await written_while_away(store, 1, "full")
    # The refill's first three writes fail (the bucket's metadata file and two objects'
    # shards); the monitor's probe write before them passes.
    store.disks[1].fail("write_file", "rename_data", error=DiskFull, times=3, after=1)
    await store.scanner.check_disks()
    await eventually(lambda: refill_state(store, 1).get("finished"), timeout=30)
    state = refill_state(store, 1)
    assert state["retries"] >= 1 and state["failed"] >= 2 and state["pending"] == 0
    assert store.disks[1].online and not store.disks[1].healing
    await assert_refilled(store, 1, objects)
    assert_no_traceback(heal_log)


async def test_a_refill_pauses_while_its_disk_is_offline_and_starts_over_when_it_is_back(store, heal_log) -> None:
    objects = await written_while_away(store, 3, "first")
    # Gone again at once: the monitor's probe write passes, the refill's first write does not.
    store.disks[3].fail("write_file", "rename_data", "create_file", error=DiskOffline, after=1)
    await store.scanner.check_disks()
    state = await eventually(lambda: (s := refill_state(store, 3)).get("state") == "paused" and s, timeout=30)
    assert state["finished"] is None
    assert not store.disks[3].online and store.disks[3].healing
    assert any("paused" in r.getMessage() for r in heal_log.records if r.levelno == logging.WARNING)

    more = {}  # written while it is away again: the next refill must cover these too
    for name, size in SIZES.items():
        data = content(f"second-{name}", size)
        await store.put_object("bkt", f"second/{name}", data, size)
        more[f"second/{name}"] = data
    store.disks[3].clear()
    await store.scanner.check_disks()  # back: a new refill, from the start
    await eventually(lambda: refill_state(store, 3).get("finished"), timeout=30)
    assert store.disks[3].online and not store.disks[3].healing
    await assert_refilled(store, 3, objects | more)
    assert_no_traceback(heal_log)
