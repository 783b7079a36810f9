"""What a running node is waiting on: a dump of its asyncio tasks, on SIGUSR1.

``kill -USR1 <pid>`` logs, at warning level, every pending task of the event loop with the
chain of awaits it is suspended in (innermost last), identical chains grouped with a count,
and the helper threads' stacks. It is the answer to "this request has hung for ten seconds:
on what?" that a thread dump (``py-spy dump``) cannot give for coroutines, whose suspended
frames hang off each other through ``cr_await`` rather than a thread's stack. Reading the
frames changes nothing; the dump runs on the event loop between two callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback
from collections import Counter
from typing import Any

log = logging.getLogger("buckets.taskdump")

MAX_DEPTH = 40  # awaits followed per task (a chain this deep is a loop, or recursion)
MAX_GROUPS = 200  # distinct chains written per dump; the rest are counted


def _where(frame: Any) -> str:
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} {code.co_name}"


def await_chain(task: asyncio.Task) -> tuple[str, ...]:
    """The frames a task is suspended in, outermost first, then what the innermost awaits."""
    chain: list[str] = []
    current: Any = task.get_coro()
    for _ in range(MAX_DEPTH):
        frame = getattr(current, "cr_frame", None) or getattr(current, "ag_frame", None) \
            or getattr(current, "gi_frame", None)
        if frame is None:
            break
        chain.append(_where(frame))
        current = (getattr(current, "cr_await", None) or getattr(current, "ag_await", None)
                   or getattr(current, "gi_yieldfrom", None))
        if current is None:
            break
    waiter = getattr(task, "_fut_waiter", None)  # what the task is blocked on (CPython's tasks, C or not)
    if isinstance(waiter, asyncio.Task):
        chain.append(f"-> awaits task {waiter.get_name()}")
    elif waiter is not None:
        chain.append(f"-> awaits {type(waiter).__name__}")
    return tuple(chain)


def format_dump(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every pending task's await chain, grouped, and every other thread's stack."""
    tasks = asyncio.all_tasks(loop)
    groups: Counter[tuple[str, ...]] = Counter()
    names: dict[tuple[str, ...], str] = {}
    for task in tasks:
        chain = await_chain(task)
        groups[chain] += 1
        names.setdefault(chain, task.get_name())
    lines = [f"{len(tasks)} pending tasks in {len(groups)} distinct await chains (most common first):"]
    for chain, count in groups.most_common(MAX_GROUPS):
        lines.append(f"- {count} x (e.g. {names[chain]})")
        lines.extend(f"    {where}" for where in chain)
    if len(groups) > MAX_GROUPS:
        rest = sum(count for _, count in groups.most_common()[MAX_GROUPS:])
        lines.append(f"- ... {len(groups) - MAX_GROUPS} more chains ({rest} tasks)")
    current = threading.get_ident()
    frames = sys._current_frames()
    stacks: Counter[tuple[str, ...]] = Counter()
    for ident, frame in frames.items():
        if ident != current:
            stacks[tuple(line.rstrip() for line in traceback.format_stack(frame, limit=12))] += 1
    lines.append(f"{len(frames) - 1} other threads ({len(stacks)} distinct stacks):")
    for stack, count in stacks.most_common():
        lines.append(f"- {count} x")
        lines.extend(f"    {line}" for line in stack)
    del frames
    return "\n".join(lines)


def install(loop: asyncio.AbstractEventLoop, signum: int) -> None:
    """Log a task dump each time ``signum`` arrives."""
    def dump() -> None:
        try:
            log.warning("task dump on signal %d:\n%s", signum, format_dump(loop))
        except Exception:  # noqa: BLE001 - a diagnostic must never stop the node
            log.exception("task dump failed")
    loop.add_signal_handler(signum, dump)
