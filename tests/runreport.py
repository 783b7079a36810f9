"""The tables printed at the end of a run (the fault suite's and the power-loss campaigns'),
under one pytest process or under pytest-xdist's workers.

The suites' fixtures add their rows to :func:`rows` (``"faults"``: ``FaultTally``,
``"crash"``: crash_harness ``Report``). Each xdist worker turns its rows into plain data at
its end and hands them to the controller (``workeroutput``), which prints them all: the
suites' own conftest files are not loaded by the controller, so the printing lives here and
``tests/conftest.py`` calls it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

_ROWS = pytest.StashKey[dict]()  # this process's rows (objects the tests still fill in)
_FROM_WORKERS = pytest.StashKey[dict]()  # plain rows handed over by xdist workers
HERE = Path(__file__).resolve().parent


def rows(config: pytest.Config, table: str) -> list:
    """The list this process's ``table`` rows go in."""
    return config.stash.setdefault(_ROWS, {"faults": [], "crash": []})[table]


def _plain(config: pytest.Config) -> dict[str, list]:
    own = config.stash.get(_ROWS, None) or {"faults": [], "crash": []}
    return {
        "faults": [dataclasses.asdict(t) for t in own["faults"]],
        "crash": [[r.name, str(sum(r.sync_points.values())), str(r.events), str(r.cuts_checked),
                   str(r.sampled_cuts), str(r.states), str(len(r.violations)), str(len(r.known)),
                   f"{r.seconds:.0f}"] for r in own["crash"]],
    }


def worker_finished(session: pytest.Session) -> None:
    """On an xdist worker: hand this worker's rows to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["run_tables"] = _plain(session.config)


def worker_down(node) -> None:
    """On the xdist controller: keep a finished worker's rows."""
    handed = getattr(node, "workeroutput", {}).get("run_tables")
    if handed:
        merged = node.config.stash.setdefault(_FROM_WORKERS, {"faults": [], "crash": []})
        for table, plain in handed.items():
            merged[table].extend(plain)


def write(terminalreporter, config: pytest.Config) -> None:
    """Print the tables (this process's rows and every worker's)."""
    if hasattr(config, "workeroutput"):
        return  # a worker: the controller prints
    tables = _plain(config)
    for table, plain in (config.stash.get(_FROM_WORKERS, None) or {}).items():
        tables[table].extend(plain)
    if tables["faults"]:
        _write_faults(terminalreporter, tables["faults"])
    if tables["crash"]:
        _write_crash(terminalreporter, tables["crash"])


def _write_faults(tr, plain: list[dict]) -> None:
    if str(HERE / "faults") not in sys.path:
        sys.path.insert(0, str(HERE / "faults"))
    from fault_ledger import FaultTally, RunSummary

    summary = RunSummary([FaultTally(**t) for t in plain])
    tr.section("fault-injection run summary")
    for line in summary.table():
        tr.write_line(line)
    total = summary.totals()
    verdict = "OK" if total.objects_lost == 0 and total.wrong_bytes == 0 else "FAILED"
    tr.write_line(f"objects lost: {total.objects_lost} (must be 0), wrong bytes served: "
                  f"{total.wrong_bytes} (must be 0): {verdict}")
    for t in summary.tallies:
        for note in t.notes:
            tr.write_line(f"  {t.test}: {note}")


def _write_crash(tr, plain: list[list[str]]) -> None:
    header = ["write path", "sync points", "cut positions", "cuts checked", "sampled cuts", "crash states",
              "violations", "known bug", "seconds"]
    table = [header] + plain
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    tr.section("power-loss campaigns")
    for n, row in enumerate(table):
        tr.write_line("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            tr.write_line("-" * (sum(widths) + 2 * (len(widths) - 1)))
