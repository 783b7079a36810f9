"""Fixtures shared by every test directory. Keep this file small and side-effect free
(the one effect: choosing the hypothesis profile, before any test module is imported), and
the hooks that print the fault and power-loss tables at the end of a run, also when
pytest-xdist's workers ran the tests (``runreport.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import hypothesis_profiles
import pytest
import runreport

hypothesis_profiles.load()  # ci unless HYPOTHESIS_PROFILE says otherwise (pytest -v shows it)


@pytest.fixture(autouse=True)
def no_ballast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disks of stores opened in a test process keep no ballast (``storage.local.BALLAST_MAX``),
    except in tests marked ``ballast``: on a large file system each disk allocates 16 MiB, and
    the hundreds of stores of one run, kept in pytest's last three base directories, took 20 GB
    a run and filled this machine's disk (session 39: a fresh-clone run failed with 507s
    everywhere). Servers started as processes keep theirs."""
    if request.node.get_closest_marker("ballast") is None:
        from buckets.storage import local

        monkeypatch.setattr(local, "BALLAST_MAX", 0)


@pytest.fixture
def tmp_disks(tmp_path: Path) -> Callable[..., list[str]]:
    """Factory: ``tmp_disks(4)`` -> four fresh disk directory paths (not yet created).

    Each call returns a new set under the test's tmp_path, so one test can build several
    deployments (e.g. to swap a disk from one into another).
    """
    counter = 0

    def make(n: int = 4) -> list[str]:
        nonlocal counter
        counter += 1
        base = tmp_path / f"disks{counter}"
        base.mkdir()
        return [str(base / f"d{i + 1}") for i in range(n)]

    return make


def pytest_sessionfinish(session: pytest.Session) -> None:
    runreport.worker_finished(session)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    runreport.worker_down(node)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    runreport.write(terminalreporter, config)
