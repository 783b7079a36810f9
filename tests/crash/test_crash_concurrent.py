"""Power cut while everything happens at once (``crash_scenarios.CONCURRENT``): new small
and large PUTs, two overwrites, a DELETE, a CopyObject, a PutObjectAcl and an upload's part,
all in flight together. The cuts and the states are sampled (their number is the product of
every disk's pending changes); ``BUCKETS_CRASH_SEED`` picks another sample."""

from __future__ import annotations

import os

import pytest
from crash_harness import run_campaign
from crash_scenarios import CONCURRENT, VERSIONED_CONCURRENT
from test_crash_paths import verdict

SEED = int(os.environ.get("BUCKETS_CRASH_SEED", "0"))


@pytest.mark.crash
async def test_power_cut_concurrent_sampled(crash_dir, crash_summary) -> None:
    report = await run_campaign(CONCURRENT, crash_dir, limit=8, combos=16, cut_sample=40, seed=SEED)
    crash_summary.append(report)
    print(report.line())
    assert report.states > 0
    assert not report.violations, "\n".join(report.violations)


async def test_power_cut_concurrent_fast(crash_dir, crash_summary) -> None:
    report = await run_campaign(CONCURRENT, crash_dir, limit=3, combos=3, cut_sample=4, seed=SEED)
    report.name += " (fast)"
    crash_summary.append(report)
    assert report.states > 0
    assert not report.violations, "\n".join(report.violations)


# Versioned: a PUT, a delete marker, a delete by version id, a tag change and a new key at once,
# each state checked as it is and with the registry rebuilt.
@pytest.mark.crash
async def test_power_cut_versioned_concurrent_sampled(crash_dir, crash_summary) -> None:
    report = await run_campaign(VERSIONED_CONCURRENT, crash_dir, limit=8, combos=16, cut_sample=30, seed=SEED)
    crash_summary.append(report)
    print(report.line())
    verdict(report)


@pytest.mark.crash  # the versioned paths' fast campaigns run in make test; this one in make test-crash
async def test_power_cut_versioned_concurrent_fast(crash_dir, crash_summary) -> None:
    report = await run_campaign(VERSIONED_CONCURRENT, crash_dir, limit=3, combos=3, cut_sample=2, seed=SEED)
    report.name += " (fast)"
    crash_summary.append(report)
    verdict(report)
