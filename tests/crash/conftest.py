"""Power-loss suite fixtures: a work directory on tmpfs, and the run summary.

- ``crash_dir``: where a campaign records and materializes its crash states. On
  ``/dev/shm`` when there is one (thousands of small stores are written and opened: tmpfs
  makes each check a few tens of milliseconds instead of hundreds), else the test's
  ``tmp_path``; removed after the test.
- no ballast: ``tests/conftest.py``'s autouse ``no_ballast`` covers these campaigns too (each
  of the thousands of crash states opens a store whose disks would allocate 16 MiB each on
  tmpfs: a campaign took 45% longer, 526 s against 358 for versioned-delete-version).
- ``crash_summary``: one row per campaign (sync points, cut positions, cuts checked, crash
  states, violations), printed as a table at the end of the run (``tests/runreport.py``,
  also under pytest-xdist).

The long campaigns are marked ``crash`` (``make test-crash``); the unmarked tests are the
fast subset that runs in ``make test``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import runreport


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
    return runreport.rows(request.config, "crash")
