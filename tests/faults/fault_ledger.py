"""The numbers a fault test reports, and the run summary table built from them.

Each test fills one :class:`FaultTally` (objects written, faults injected, detected,
repaired, objects lost, wrong bytes served) and prints it; the session's
:class:`RunSummary` collects them all and ``tests/faults/conftest.py`` prints the table
at the end of the run and fails the session if anything was lost or served wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COLUMNS = ("written", "injected", "detected", "repaired", "lost", "wrong")


@dataclass
class FaultTally:
    test: str
    objects_written: int = 0
    faults_injected: int = 0
    faults_detected: int = 0
    repaired: int = 0
    objects_lost: int = 0
    wrong_bytes: int = 0  # responses whose bytes were not what the key held
    notes: list[str] = field(default_factory=list)

    def values(self) -> tuple[int, ...]:
        return (self.objects_written, self.faults_injected, self.faults_detected, self.repaired,
                self.objects_lost, self.wrong_bytes)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[{self.test}] {text}")

    def line(self) -> str:
        return f"{self.test}: " + ", ".join(f"{c} {v}" for c, v in zip(COLUMNS, self.values()))


@dataclass
class RunSummary:
    tallies: list[FaultTally] = field(default_factory=list)

    def new(self, test: str) -> FaultTally:
        tally = FaultTally(test)
        self.tallies.append(tally)
        return tally

    def totals(self) -> FaultTally:
        total = FaultTally("TOTAL")
        for t in self.tallies:
            total.objects_written += t.objects_written
            total.faults_injected += t.faults_injected
            total.faults_detected += t.faults_detected
            total.repaired += t.repaired
            total.objects_lost += t.objects_lost
            total.wrong_bytes += t.wrong_bytes
        return total

    def table(self) -> list[str]:
        header = ("test",) + ("objects written", "faults injected", "faults detected", "repaired",
                              "objects lost", "wrong bytes served")
        rows = [(t.test,) + tuple(str(v) for v in t.values()) for t in self.tallies]
        rows.append(("TOTAL",) + tuple(str(v) for v in self.totals().values()))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def fmt(r: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

        rule = "-" * len(fmt(header))
        return [fmt(header), rule, *(fmt(r) for r in rows[:-1]), rule, fmt(rows[-1])]
