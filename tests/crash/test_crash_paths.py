"""Power cut at every sync point of every write path (``crash_scenarios.SCENARIOS``).

- ``test_power_cut_exhaustive`` (marked ``crash``: ``make test-crash``): every cut before a
  sync point and after the last event; per disk every state the model allows (listed in
  full up to 64 per cut, sampled beyond, which the summary's "sampled cuts" counts), all
  their combinations across the four disks up to 256 per cut (beyond: each disk's every
  state against the others' extremes, plus 256 random combinations).
- ``test_power_cut_fast`` (in ``make test``): the same campaigns with a few cuts and a few
  states per cut, so that a regression in any path fails the default suite quickly.

Every state must pass ``crash_harness.check_state``: a violation fails the test with the
cut, what was lost, and what was wrong. The versioned paths (``Scenario.rebuild``) check each
state twice, the second time with the registry deleted and rebuilt from the disks. States
showing only the known engine bug ``crash_harness.KNOWN_TORN_REVIVAL`` (and nothing else)
make the test xfail, naming them, until the engine is fixed.
"""

from __future__ import annotations

import os

import pytest
from crash_harness import run_campaign
from crash_scenarios import SCENARIOS, VERSIONED

SEED = int(os.environ.get("BUCKETS_CRASH_SEED", "0"))


def _verdict(report) -> None:
    verdict(report)


def verdict(report) -> None:
    assert report.states > 0, "no crash state was checked"
    assert not report.violations, f"{report.line()}\n" + "\n".join(report.violations)
    if report.known:
        pytest.xfail(f"{report.line()}\n" + "\n".join(report.known[:3]))


# An exhaustive campaign checks thousands of states: 300-480 s each for the largest alone on the
# bench machine, more beside another campaign (make test-crash runs two at a time). The suite's
# 600 s timeout failed three of them on a loaded machine (session 38) with no violation found.
@pytest.mark.crash
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_power_cut_exhaustive(name, crash_dir, crash_summary) -> None:
    report = await run_campaign(SCENARIOS[name], crash_dir, limit=64, combos=256, seed=SEED)
    crash_summary.append(report)
    print(report.line())
    for label, count in sorted(report.sync_points.items()):
        print(f"  {count:3d} x {label}")
    _verdict(report)


# The multipart path streams a 5 MiB part (the smallest a non-last part may be), so its checks
# cost most: fewer of its cuts in the fast subset.
FAST_CUTS = {"multipart-complete": 2}
# The versioned paths check every state twice (as it is, and with the registry rebuilt): fewer
# cuts, fewer states per cut.
FAST_CUTS.update({name: 3 for name in VERSIONED})


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_power_cut_fast(name, crash_dir, crash_summary) -> None:
    few = 2 if name in VERSIONED else 3
    report = await run_campaign(SCENARIOS[name], crash_dir, limit=few, combos=few, seed=SEED,
                                cut_sample=FAST_CUTS.get(name, 5))
    report.name += " (fast)"
    crash_summary.append(report)
    _verdict(report)
