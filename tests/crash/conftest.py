"""Power-loss suite fixtures: a work directory on tmpfs, and the run summary.

- ``crash_dir``: where a campaign records and materializes its crash states. On
  ``/dev/shm`` when there is one (thousands of small stores are written and opened: tmpfs
  makes each check a few tens of milliseconds instead of hundreds), else the test's
  ``tmp_path``; removed after the test.
- ``crash_summary``: one row per campaign (sync points, cut positions, cuts checked, crash
  states, violations), printed as a table at the end of the run by
  ``pytest_terminal_summary``.

The long campaigns are marked ``crash`` (``make test-crash``); the unmarked tests are the
fast subset that runs in ``make test``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SUMMARY_KEY = pytest.StashKey[list]()


@pytest.fixture
def crash_dir(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if shm.is_dir():
        base = Path(tempfile.mkdtemp(prefix="buckets-crash-", dir=shm))
    else:
        base = tmp_path / "crash"
        base.mkdir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def crash_summary(request: pytest.FixtureRequest) -> list:
    rows = request.config.stash.get(SUMMARY_KEY, None)
    if rows is None:
        rows = request.config.stash[SUMMARY_KEY] = []
    return rows


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = config.stash.get(SUMMARY_KEY, None)
    if not rows:
        return
    header = ("write path", "sync points", "cut positions", "cuts checked", "sampled cuts", "crash states",
              "violations", "known bug", "seconds")
    table = [header] + [(r.name, str(sum(r.sync_points.values())), str(r.events), str(r.cuts_checked),
                         str(r.sampled_cuts), str(r.states), str(len(r.violations)), str(len(r.known)),
                         f"{r.seconds:.0f}")
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    terminalreporter.section("power-loss campaigns")
    for n, row in enumerate(table):
        terminalreporter.write_line("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                              for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            terminalreporter.write_line("-" * (sum(widths) + 2 * (len(widths) - 1)))
