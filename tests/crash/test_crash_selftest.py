"""The harness catches a real bug: with one fsync of the write path left out on purpose
(``buckets.storage.local.OMIT_FSYNC_FOR_TESTS``, a test-only switch, empty otherwise), the
campaign over a streamed PUT reports violations. With every fsync in place the same
campaign passes (``test_crash_paths.py``, ``put-multiblock``). And a small write's records
punched out before the commit that removes them (a release done too early) are reported: the
model sees the holes ``Disk.release_records`` punches."""

from __future__ import annotations

import pytest
from crash_harness import BUCKET, Run, Scenario, body, run_campaign
from crash_scenarios import SCENARIOS
from crash_smalllog_scenarios import SCENARIOS as LOG_SCENARIOS
from crash_smalllog_scenarios import SMALL, _overwrite_setup, _sealed

from buckets.engine import smalllog

from buckets.storage import local

# A few cuts (the one after the last event, where the PUT is acknowledged, always among them)
BOUNDS = dict(limit=8, combos=16, max_violations=3, cut_sample=3)


@pytest.mark.parametrize("omitted, symptom", [
    # the shard's data is renamed into place and committed while still in the page cache
    ("shard", "GET fails"),
    # the renamed data directory's entry in its parent is never made durable
    ("rename-dir", "GET fails"),
])
async def test_a_missing_fsync_is_reported(crash_dir, crash_summary, omitted, symptom) -> None:
    report = await run_campaign(SCENARIOS["put-multiblock"], crash_dir, omit_fsync=frozenset({omitted}), **BOUNDS)
    report.name = f"self-test: no {omitted} fsync"
    crash_summary.append(report)
    assert report.violations, f"leaving out the {omitted} fsync went unnoticed ({report.states} states checked)"
    assert any(symptom in v and "crash/large" in v for v in report.violations), "\n".join(report.violations)
    assert local.OMIT_FSYNC_FOR_TESTS == frozenset()  # the switch is off again


@pytest.mark.parametrize("scenario", ["log-put", "log-narrow"])
async def test_a_missing_record_fsync_is_reported(crash_dir, crash_summary, scenario) -> None:
    """The record log's fsync left out (on the event loop's AIO path and the thread's): an
    acknowledged small object's records may all be lost while the registry names them."""
    report = await run_campaign(LOG_SCENARIOS[scenario], crash_dir, omit_fsync=frozenset({"record"}), **BOUNDS)
    report.name = f"self-test: {scenario}, no record fsync"
    crash_summary.append(report)
    assert report.violations, f"leaving out the record fsync went unnoticed ({report.states} states checked)"
    small = "crash/small" if scenario == "log-put" else "crash/n"
    assert any(small in v for v in report.violations), "\n".join(report.violations)
    assert local.OMIT_FSYNC_FOR_TESTS == frozenset()


async def _release_before_commit(run: Run) -> None:
    """An overwrite whose old write's records are punched out *before* its registry commit (the
    engine releases them only after it, ``smalllog.release``): until that commit is durable, the
    registry may still name records that a power cut has kept zeroed."""
    store = run.store
    entry = store.registry.get_object(BUCKET, "tiny")

    async def release() -> None:
        for slot, disk_id in enumerate(entry["disks"]):
            await store.by_id[disk_id].release_records(entry["wid"], [entry[smalllog.LOG_FIELD][slot]])

    await run.maintenance("release tiny's records too early", release)
    await run.put("tiny", body("tiny-v2", SMALL + 10))


async def test_a_release_before_the_commit_is_reported(crash_dir, crash_summary) -> None:
    scenario = Scenario("self-test: release before the commit", _sealed(_overwrite_setup), _release_before_commit)
    # the cuts before the registry commit: the overwrite may be lost there, the holes kept
    report = await run_campaign(scenario, crash_dir, limit=8, combos=16, max_violations=3,
                                cut_filter=lambda ev: ev.kind == "lmdb_commit")
    crash_summary.append(report)
    assert report.violations, f"records punched before the commit went unnoticed ({report.states} states checked)"
    # (a GET may still answer from the registry's copy of a small object; the heal cannot)
    assert any("crash/tiny" in v and "zeros at" in v for v in report.violations), "\n".join(report.violations)
