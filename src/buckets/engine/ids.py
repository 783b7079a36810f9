"""Unique ids for writes, transactions and uploads without a syscall per id.

``uuid4()`` reads the OS random source on every call; on the event loop that syscall
drops the GIL and must win it back from busy worker threads (milliseconds under load).
A random per-process prefix plus a nanosecond clock and a counter is as unique and costs
no syscall.
"""

from __future__ import annotations

import itertools
import os
import time

_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count()


def new_id() -> str:
    """32 hex chars, time-ordered within a process, unique across processes and restarts."""
    return f"{time.time_ns():016x}{next(_COUNTER) & 0xFFFF:04x}{_PREFIX}"


def made_here(wid: str) -> bool:
    """Whether ``wid`` was made by this process (its per-process suffix)."""
    return isinstance(wid, str) and len(wid) == 32 and wid.endswith(_PREFIX)
