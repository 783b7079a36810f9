"""How ``buckets-admin`` and ``buckets-client`` show things to people and scripts.

Plain aligned tables (readable in a terminal, easy to ``grep``/``awk``), human sizes and
durations, ``--json`` output, progress bars (rich, on stderr, only when it is a terminal
or asked for), and the one-line error convention: ``PROG: error: message``, exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(size: int | float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], stream: TextIO | None = None) -> None:
    """Columns padded to their widest cell; numbers and sizes right-aligned."""
    stream = stream or sys.stdout
    cells = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    right = [all(_numeric(row[index]) for row in cells) and bool(cells) for index in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [cell.rjust(widths[i]) if right[i] else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        return "  ".join(parts).rstrip()

    print(line(list(headers)), file=stream)
    for row in cells:
        print(line(row), file=stream)


def _numeric(cell: str) -> bool:
    head = cell.split(" ", 1)[0].rstrip("%")
    try:
        float(head)
    except ValueError:
        return cell == "-"
    return True


def print_json(document: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str), file=stream or sys.stdout)


def fail(prog: str, message: str, code: int = 1) -> int:
    """Print the one-line error and return the exit status (callers ``sys.exit`` it)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def show_progress(forced: bool | None) -> bool:
    """Progress bars go to stderr when it is a terminal, unless forced on or off."""
    if forced is not None:
        return forced
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: float | None, *, enabled: bool, unit_bytes: bool) -> Iterator[Any]:
    """A rich progress bar on stderr, or a no-op with the same ``update``/``advance`` methods."""
    if not enabled:
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
    if unit_bytes:
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn()]
    columns.append(TimeRemainingColumn())
    console = Console(file=sys.stderr, force_terminal=sys.stderr.isatty() or None)
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield _RichTask(progress, task)


class _NoProgress:
    def advance(self, amount: float) -> None:
        pass

    def update(self, *, completed: float | None = None, total: float | None = None) -> None:
        pass


class _RichTask:
    def __init__(self, progress: Any, task: Any) -> None:
        self.progress = progress
        self.task = task

    def advance(self, amount: float) -> None:
        self.progress.advance(self.task, amount)

    def update(self, *, completed: float | None = None, total: float | None = None) -> None:
        kwargs: dict[str, float] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self.progress.update(self.task, **kwargs)
