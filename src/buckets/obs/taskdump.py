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
import inspect
import logging
import sys
import threading
import traceback
from collections import Counter
from typing import Any

log = logging.getLogger("buckets.taskdump")

MAX_DEPTH = 40  # awaits followed per task (a chain this deep is a loop, or recursion)
MAX_GROUPS = 200  # distinct chains written per dump; the rest are counted
MAX_FOLLOWED = 8  # tasks a waiting task's chain goes on into (an asyncio.wait over many)
MAX_NESTED = 4  # ... and how deep


def _locals(frame: Any) -> dict[str, Any]:
    """A suspended coroutine frame's locals, without leaving them pinned: reading
    ``f_locals`` of a function's frame stores a snapshot on it that would keep each value
    alive after the coroutine moved on (a span's bytes, say) until the frame ends. The
    snapshot is a copy (the frame's own variables are elsewhere), so it is emptied again."""
    snapshot = frame.f_locals
    values = dict(snapshot)
    if frame.f_code.co_flags & inspect.CO_OPTIMIZED:  # (a module's or class's are its namespace)
        snapshot.clear()
    return values


def _where(frame: Any) -> str:
    """``file:line function``, and the peer or disk the frame's object stands for, if it names
    one (an ``endpoint``: which of a node's peers a call waits on)."""
    code = frame.f_code
    where = f"{code.co_filename}:{frame.f_lineno} {code.co_name}"
    endpoint = getattr(_locals(frame).get("self"), "endpoint", None) if "self" in code.co_varnames else None
    return f"{where} [{endpoint}]" if isinstance(endpoint, str) else where


def _awaited_tasks(waiter: Any, frame: Any) -> list[asyncio.Future]:
    """The tasks a suspended task waits for: the one it awaits, a gather's children, or the
    pending tasks held by its innermost frame (``asyncio.wait``'s set, ``wait_for``'s task)."""
    if isinstance(waiter, asyncio.Task):
        return [waiter]
    found: list[asyncio.Future] = list(getattr(waiter, "_children", None) or ())  # gather's
    if not found and frame is not None:
        for value in _locals(frame).values():
            items = value if isinstance(value, set | frozenset | list | tuple | dict) else (value,)
            found.extend(f for f in items if isinstance(f, asyncio.Task))
    return [f for f in dict.fromkeys(found) if not f.done()][:MAX_FOLLOWED]


def await_chain(task: asyncio.Task, depth: int = 0, seen: set[int] | None = None) -> tuple[str, ...]:
    """The frames a task is suspended in, outermost first, then what the innermost awaits:
    the chains of the tasks it waits for follow, indented (``MAX_NESTED`` deep)."""
    seen = {id(task)} if seen is None else seen
    chain: list[str] = []
    current: Any = task.get_coro()
    innermost = None
    for _ in range(MAX_DEPTH):
        frame = getattr(current, "cr_frame", None) or getattr(current, "ag_frame", None) \
            or getattr(current, "gi_frame", None)
        if frame is None:
            break
        chain.append(_where(frame))
        innermost = frame
        current = (getattr(current, "cr_await", None) or getattr(current, "ag_await", None)
                   or getattr(current, "gi_yieldfrom", None))
        if current is None:
            break
        if type(current).__name__ in ("async_generator_asend", "async_generator_athrow"):
            # An ``async with`` of an @asynccontextmanager: the generator it steps is its ``gen``.
            gen = getattr(_locals(frame).get("self"), "gen", None)
            if not inspect.isasyncgen(gen):
                break
            current = gen
    waiter = getattr(task, "_fut_waiter", None)  # what the task is blocked on (CPython's tasks, C or not)
    awaited = _awaited_tasks(waiter, innermost) if waiter is not None else []
    for other in awaited:
        name = other.get_name()
        if id(other) in seen or depth >= MAX_NESTED:
            chain.append(f"-> awaits task {name} (its chain: elsewhere in this dump)")
            continue
        seen.add(id(other))
        chain.append(f"-> awaits task {name}:")
        chain.extend(f"    {line}" for line in await_chain(other, depth + 1, seen))
    if waiter is not None and not awaited:
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
