"""Figures, suite results, the printed table and the JSON document.

A ``Figure`` is one measured number with its unit and, optionally, the ``Target`` it is
judged against; a ``SuiteResult`` is one suite's figures (or why it was skipped or
failed). This module only formats: it never measures.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Target:
    """A bound a figure should meet: ``value op threshold`` (op is ">=" or "<")."""

    op: str
    threshold: float

    def met_by(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<":
            return value < self.threshold
        raise ValueError(f"unknown target operator {self.op!r}")

    def text(self) -> str:
        return f"{self.op} {_number(self.threshold)}"


def at_least(threshold: float) -> Target:
    return Target(">=", threshold)


def below(threshold: float) -> Target:
    return Target("<", threshold)


@dataclass(slots=True)
class Figure:
    name: str
    value: float | None  # None: could not be measured (see note)
    unit: str
    target: Target | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # JSON only: samples, counts

    @property
    def status(self) -> str:
        if self.target is None or self.value is None:
            return ""
        return "pass" if self.target.met_by(self.value) else "miss"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": self.value, "unit": self.unit}
        if self.target is not None:
            out["target"] = {"op": self.target.op, "value": self.target.threshold}
            out["status"] = self.status
        if self.note:
            out["note"] = self.note
        out.update(self.extra)
        return out


@dataclass(slots=True)
class SuiteResult:
    name: str
    figures: list[Figure] = field(default_factory=list)
    status: str = "ok"  # ok | skipped | error
    reason: str = ""  # why skipped or failed
    params: dict[str, Any] = field(default_factory=dict)  # sizes, counts, repetitions used
    notes: list[str] = field(default_factory=list)  # printed under the table
    seconds: float = 0.0  # wall time the suite took
    other_cpus: float | None = None  # CPUs other processes kept busy meanwhile (noise)

    def add(self, name: str, value: float | None, unit: str, target: Target | None = None,
            note: str = "", **extra: Any) -> Figure:
        fig = Figure(name, value, unit, target, note, dict(extra))
        self.figures.append(fig)
        return fig

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "seconds": round(self.seconds, 2),
                "other_processes_cpus": None if self.other_cpus is None else round(self.other_cpus, 2),
                "params": self.params, "notes": self.notes,
                "figures": [f.to_json() for f in self.figures]}


def _number(value: float) -> str:
    """Three significant figures at least, no exponent, thousands separated."""
    if value == 0:
        return "0"
    mag = abs(value)
    if mag >= 100:
        return f"{value:,.0f}"
    if mag >= 10:
        return f"{value:,.1f}"
    if mag >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def format_table(result: SuiteResult) -> str:
    """The suite as a fixed-width text table (plain text: it must survive logs and CI)."""
    title = f"== {result.name} "
    if result.status != "ok":
        return f"{title}({result.seconds:.1f}s) ==\n{result.status}: {result.reason}"
    header = ("name", "figure", "unit", "target", "result")
    rows = [header]
    for f in result.figures:
        rows.append((f.name, "n/a" if f.value is None else _number(f.value), f.unit,
                     f.target.text() if f.target else "", f.status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    noise = "" if result.other_cpus is None else f", other processes busy {result.other_cpus:.2f} CPUs"
    lines = [f"{title}({result.seconds:.1f}s{noise}) =="]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]),
                 row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for f in result.figures:
        if f.note:
            lines.append(f"  * {f.name}: {f.note}")
    for note in result.notes:
        lines.append(f"  * {note}")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    commit = _git_commit()
    if commit:
        info["git_commit"] = commit
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_commit() -> str:
    """The checked-out commit (read-only ``git rev-parse``), plus "+dirty" if the tree differs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if head and dirty else "")


def write_json(path: str, document: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)


__all__ = ["Target", "Figure", "SuiteResult", "at_least", "below", "format_table", "machine_info",
           "write_json"]
