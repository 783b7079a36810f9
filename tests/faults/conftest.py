"""Fault-suite fixtures: real servers over the test's own disks, and the run summary.

- ``servers`` starts ``buckets server`` processes (see ``fault_server.py``) and kills, by
  pid, any a test left running.
- ``tally`` is the test's row of the run summary; ``tests/runreport.py`` prints the whole
  table at the end of the run, also under pytest-xdist (objects written, faults injected,
  detected, repaired, objects lost, wrong bytes served), and the session fails if any
  object was lost or any wrong byte served.

The long tests are marked ``faults`` (``make test-faults``); the unmarked ones are the
fast subset that runs in ``make test``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import runreport
from fault_ledger import FaultTally, RunSummary
from fault_server import ServerProcess, make_disks, start_server


@pytest.fixture(scope="session")
def run_summary(request: pytest.FixtureRequest) -> Iterator[RunSummary]:
    summary = RunSummary(runreport.rows(request.config, "faults"))
    yield summary
    total = summary.totals()
    assert total.objects_lost == 0 and total.wrong_bytes == 0, (
        f"fault suite: {total.objects_lost} objects lost, {total.wrong_bytes} wrong responses served")


@pytest.fixture
def tally(request: pytest.FixtureRequest, run_summary: RunSummary) -> Iterator[FaultTally]:
    t = run_summary.new(request.node.name)
    yield t
    print(t.line())


class Servers:
    """Starts servers for one test; whatever is still running at teardown is killed by pid."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[ServerProcess] = []

    def disks(self, n: int = 4, name: str = "disks") -> list[Path]:
        return make_disks(self.base / name, n)

    def start(self, disks: list[Path], **kw) -> ServerProcess:
        server = start_server(disks, self.base, log_name=f"server-{len(self.started)}.log", **kw)
        self.started.append(server)
        return server

    def restart(self, server: ServerProcess, **kw) -> ServerProcess:
        new = server.restart(**kw)
        self.started.append(new)
        return new

    def cleanup(self) -> None:
        for s in self.started:
            if s.alive():
                s.kill()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()
