"""Power cut at every sync point of the record-log write paths
(``crash_smalllog_scenarios.SCENARIOS``), checked exactly as ``test_crash_paths`` checks the
others: exhaustive under ``make test-crash`` (marked ``crash``), a few cuts in ``make test``."""

from __future__ import annotations

import os

import pytest
from crash_harness import run_campaign
from crash_smalllog_scenarios import SCENARIOS

SEED = int(os.environ.get("BUCKETS_CRASH_SEED", "0"))
FEWER_STATES = {"log-release-delete", "log-release-compaction"}


def verdict(report) -> None:
    assert report.states > 0, "no crash state was checked"
    assert not report.violations, f"{report.line()}\n" + "\n".join(report.violations)
    assert not report.known, f"{report.line()}\n" + "\n".join(report.known[:3])


@pytest.mark.crash
@pytest.mark.timeout(1800)  # as test_crash_paths.py's exhaustive campaigns: the 10-disk one takes ~7 min alone
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_log_power_cut_exhaustive(name, crash_dir, crash_summary) -> None:
    scenario = SCENARIOS[name]
    # 10 disks: far more combinations per cut than 4; every cut, fewer states per cut (~7 min).
    # The same for the release campaigns: dozens of holes at a cut, each durable or not
    # (log-release-delete ~12 min, log-release-compaction ~5)
    wide = scenario.disks > 4 or name in FEWER_STATES
    report = await run_campaign(scenario, crash_dir, limit=16 if wide else 64, combos=48 if wide else 256, seed=SEED)
    crash_summary.append(report)
    print(report.line())
    for label, count in sorted(report.sync_points.items()):
        print(f"  {count:3d} x {label}")
    verdict(report)


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_log_power_cut_fast(name, crash_dir, crash_summary) -> None:
    rebuild = SCENARIOS[name].rebuild
    few = 2 if rebuild else 3
    report = await run_campaign(SCENARIOS[name], crash_dir, limit=few, combos=few, seed=SEED,
                                cut_sample=3 if rebuild else 4)
    report.name += " (fast)"
    crash_summary.append(report)
    verdict(report)
