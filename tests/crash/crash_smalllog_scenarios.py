"""The record log as a write path (issue 15): the power cut in small writes, overwrites,
deletes, delete markers, tag changes, heals, refills and compaction of stores whose inline
objects and delete markers are records of each disk's log (``Store(small_log=True)``), with
small and streamed objects in every campaign. The versioned ones, and the plain ones that
delete, are checked with the registry rebuilt from the disks as well (``Scenario.rebuild``).
``log-release-delete`` and ``log-release-compaction`` run on disks short of space, where dead
records are punched out of their segments (``Disk.release_records``: holes the model follows).

(Its own module while the versioned campaigns of ``crash_scenarios.py`` are being written; the
checks are ``crash_harness``'s, unchanged.)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time

from crash_harness import BUCKET, Run, Scenario, body
from crash_scenarios import drop_bucket, emptied_bucket

from buckets.engine import space
from buckets.engine.heal import heal_object
from buckets.engine.scanner import ScannerConfig
from buckets.storage import records as rlog
from buckets.storage.format import LOG_DIR

SMALL = 1000  # inline: a record per disk
LARGE = 40_000  # streamed: shard files and metadata files, as before
LOG = {"small_log": True}


async def _open(run: Run, **extra) -> None:
    await run.open_store(**LOG, **extra)


def _sealed(setup):
    """The setup, then each disk's next append starts a new segment. The recorder follows only
    files opened while it records (a segment opened before the checkpoint would be appended to
    unseen); a new segment is what a restart or a disk coming back gives anyway."""
    async def run_setup(run: Run) -> None:
        await setup(run)
        await run.drain()  # the background removals append too
        if run.store is not None:
            for d in run.store.disks:
                d.inner._seg_stale = True
    run_setup.__name__ = setup.__name__
    return run_setup


async def _open_with_bucket(run: Run) -> None:
    await _open(run)
    await run.make_bucket()


async def _put(run: Run) -> None:
    await run.put("small", body("small", SMALL))
    await run.put("large", body("large", LARGE))


async def _group_commit(run: Run) -> None:
    puts = [run.put(f"g{i}", body(f"g{i}", SMALL + i)) for i in range(8)]
    puts.append(run.put("G", body("G", LARGE)))
    await asyncio.gather(*puts)


async def _overwrite_setup(run: Run) -> None:
    await _open_with_bucket(run)
    await run.put("tiny", body("tiny-v1", SMALL))
    await run.put("other", body("other-v1", SMALL + 1))
    await run.put("obj", body("obj-v1", LARGE))


async def _overwrite_delete(run: Run) -> None:
    await run.put("tiny", body("tiny-v2", SMALL + 10))  # a record replaces a record
    await run.put("obj", body("obj-v2", SMALL + 20))  # a record replaces files
    await run.delete("other")  # a marker record, then kill records


async def _drop_setup(run: Run) -> None:
    await _open_with_bucket(run)
    await emptied_bucket(run)  # its objects' kill records in the log


async def _acl(run: Run) -> None:
    await run.set_acl("tiny", body("tiny-v1", SMALL), {"grants": [["CanonicalUser", "reader", "READ"]]})


def _damage_record(run: Run, key: str, slot: int) -> None:
    """Bit rot inside one record of ``key`` (done before the checkpoint, as the others' setups
    damage files): its checksum fails, so a heal rewrites it as a new record."""
    store = run.store
    entry = store.registry.get_object(BUCKET, key)
    loc = entry["lg"][slot]
    disk = store.by_id[entry["disks"][slot]]
    with open(disk.local_path(f"{LOG_DIR}/{rlog.segment_name(loc[0])}"), "r+b") as f:
        f.seek(loc[1] + rlog.HEADER_SIZE + 3)
        f.write(b"\xff\x00\xff")


async def _heal_setup(run: Run) -> None:
    await _overwrite_setup(run)
    _damage_record(run, "tiny", 1)


async def _heal(run: Run) -> None:
    res = await run.maintenance("heal tiny", lambda: heal_object(run.store, BUCKET, "tiny", deep=True))
    assert res.repaired and not res.failed, f"heal repaired nothing: {res}"


REFILL_SCANNER = ScannerConfig(cycle_pause=3600.0, monitor_interval=3600.0, refill_retry=0.05)


async def _refill_setup(run: Run) -> None:
    await _overwrite_setup(run)
    await run.close_store()
    wiped = run.roots[3]
    for name in os.listdir(wiped):
        shutil.rmtree(os.path.join(wiped, name))


async def _refill(run: Run) -> None:
    async def start_and_refill():
        store = await run.open_store(background=True, scanner_config=REFILL_SCANNER, **LOG)
        disk = store.disks[3]
        for _ in range(2000):
            st = store.scanner.refill.get(disk.disk_id)
            if st is not None and st["state"] == "finished":
                return st
            await asyncio.sleep(0.01)
        raise AssertionError(f"refill did not finish: {store.scanner.refill}")

    st = await run.maintenance("start and refill", start_and_refill)
    assert st["repaired"] >= 2, st


async def _compaction_setup(run: Run) -> None:
    await _open_with_bucket(run)
    for i in range(6):
        await run.put(f"c{i}", body(f"c{i}-v1", SMALL + i))
    await run.close_store()
    await _open(run)  # a new process: the first segments are sealed
    for i in range(1, 5):
        await run.put(f"c{i}", body(f"c{i}-v2", SMALL + 50 + i))
    await run.delete("c5")


async def _compaction(run: Run) -> None:
    done = await run.maintenance("compaction", lambda: run.store.compactor.run_pass(paced=False, settle=0))
    assert done["segments_compacted"] >= 1 and done["records_moved"] >= 1, done
    await run.put("c0", body("c0-v2", SMALL + 99))  # and a write after it


async def _versioned_setup(run: Run) -> None:
    await _open(run)
    await run.make_bucket(settings={"versioning": "Enabled"})
    await run.vput("tiny", body("tiny-v1", SMALL), tags={"k": "v1"})
    await run.vput("obj", body("obj-v1", LARGE))


async def _versioned(run: Run) -> None:
    await run.vput("tiny", body("tiny-v2", SMALL + 10), tags={"k": "v2"})
    await run.vdelete("obj")  # a delete marker: a record on each disk
    await run.vupdate("tiny", run.vid("tiny", 1), tags={"after": "x"})  # a noncurrent version's records rewritten
    await run.vput("obj", body("obj-v3", SMALL + 30))


async def _narrow_setup(run: Run) -> None:
    await _open_with_bucket(run)
    await run.put("n-old", body("n-old-v1", SMALL))
    await run.put("n-gone", body("n-gone-v1", SMALL + 1))
    await run.put("n-big", body("n-big-v1", LARGE))
    entries = [run.store.registry.get_object(BUCKET, k) for k in ("n-old", "n-gone", "n-big")]
    layouts = [(e["k"], e["m"]) for e in entries]
    assert layouts == [(4, 4), (4, 4), (6, 4)], layouts  # the small ones narrow, the streamed one 6+4


async def _narrow(run: Run) -> None:
    """On 10 disks: small writes 4+4 on their windows (concurrent, sharing batches), a narrow
    record replacing a narrow one and a 6+4 object, a delete's marker and kill records."""
    puts = [run.put(f"n{i}", body(f"n{i}", SMALL + i)) for i in range(6)]
    puts.append(run.put("n-old", body("n-old-v2", SMALL + 50)))
    await asyncio.gather(*puts)
    await run.put("n-big", body("n-big-v2", SMALL + 60))
    await run.delete("n-gone")


def _short_of_space(run: Run) -> None:
    """Every disk refused new data just now (``LocalDisk.refused_at``): for a minute a removed
    small write's records are punched out at once, after the registry commit that removed it
    (``smalllog.release``), and a compaction pass frees dead records in place first
    (``Compactor._reclaim_disk``); see engine/space.py."""
    now = time.monotonic()
    for d in run.store.disks:
        d.refused_at = now
    assert space.releases_space(run.store)


def _punched(run: Run, at_least: int) -> None:
    """The window punched holes on every disk (at least ``at_least`` each), still short of space."""
    assert space.releases_space(run.store), "the window outlasted the shortness of space"
    per_disk = [sum(1 for e in run.rec.events if e.kind == "punch" and e.root == rid)
                for rid in range(len(run.roots))]
    assert min(per_disk) >= at_least, f"holes punched per disk: {per_disk}"


async def _release_setup(run: Run) -> None:
    await _open_with_bucket(run)
    # records that stay beside records that go, in the same blocks of the first segment
    for i, key in enumerate(["k0", "d1", "k1", "o1", "k2", "d2", "k3", "o2"]):
        await run.put(key, body(f"{key}-v1", SMALL + i))
    for i in range(8):  # a run of records that all go: whole blocks of them (freed, not zeroed)
        await run.put(f"x{i}", body(f"x{i}-v1", SMALL + 10 + i))
    await run.put("k4", body("k4-v1", SMALL + 20))
    await run.put("big", body("big-v1", LARGE))


async def _release_delete(run: Run) -> None:
    """Deletes and overwrites of small objects on disks short of space: each removed write's
    records are punched right after the registry commit, beside records that stay."""
    _short_of_space(run)
    await run.delete("d1")
    await run.put("o1", body("o1-v2", SMALL + 30))  # a record replaces a record
    await asyncio.gather(run.delete("d2"), run.put("o2", body("o2-v2", LARGE)),  # files replace a record
                         *(run.delete(f"x{i}") for i in range(8)))
    await run.put("w1", body("w1-v1", SMALL + 40))  # a record of the segment being appended to...
    await run.put("w1", body("w1-v2", SMALL + 42))  # ... punched there, beside the window's others
    _punched(run, 12)


async def _reclaim_setup(run: Run) -> None:
    await _compaction_setup(run)  # c1-c4 overwritten and c5 deleted: dead records in the first segment
    await run.put("r1", body("r1-v1", SMALL + 60))
    await run.put("r1", body("r1-v2", SMALL + 61))  # r1-v1 dead in the newest segment, its kill after it


async def _reclaim(run: Run) -> None:
    """A compaction pass on disks short of space: the dead records freed in place (nothing
    moved), then a write and a delete, then a pass that compacts the first segment away."""
    _short_of_space(run)
    compactor = run.store.compactor
    done = await run.maintenance("reclaim", lambda: compactor.run_pass(paced=False, settle=0, threshold=2.0))
    assert done["segments_compacted"] == 0 and done["records_moved"] == 0, done
    _punched(run, 6)  # c1-c5 and r1-v1's records at least
    await run.put("c0", body("c0-v2", SMALL + 99))
    await run.delete("c2")
    done = await run.maintenance("compaction", lambda: compactor.run_pass(paced=False, settle=0, recheck=0))
    assert done["segments_compacted"] >= 1, done
    _punched(run, 7)


SCENARIOS = {
    s.name: s for s in [
        Scenario("log-put", _sealed(_open_with_bucket), _put),
        Scenario("log-group-commit", _sealed(_open_with_bucket), _group_commit),
        Scenario("log-overwrite-delete", _sealed(_overwrite_setup), _overwrite_delete, rebuild=True),
        Scenario("log-delete-bucket", _sealed(_drop_setup), drop_bucket, rebuild=True),
        Scenario("log-acl", _sealed(_overwrite_setup), _acl),
        Scenario("log-heal", _sealed(_heal_setup), _heal),
        Scenario("log-refill", _sealed(_refill_setup), _refill),
        Scenario("log-compaction", _sealed(_compaction_setup), _compaction, rebuild=True),
        Scenario("log-versioned", _sealed(_versioned_setup), _versioned, rebuild=True),
        Scenario("log-narrow", _sealed(_narrow_setup), _narrow, rebuild=True, disks=10),
        Scenario("log-release-delete", _sealed(_release_setup), _release_delete, rebuild=True),
        Scenario("log-release-compaction", _sealed(_reclaim_setup), _reclaim, rebuild=True),
    ]
}
