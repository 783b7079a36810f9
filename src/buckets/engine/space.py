"""A store short of space: deletions that wait for their space.

A deleted write's files are removed just after the deletion's answer (in the background: a
GET may still be streaming them, and a deletion should not wait for that). On a store that is
refusing writes for want of space (``507 StorageFull``), a client that deletes to make room and
writes at once would find the space not yet free, and SDKs do not retry a 507. So while this
node has refused a write for space lately (``SHORT_OF_SPACE`` seconds), or one of its disks
refused new data (a write through another node of a cluster, whose client may delete through
this one next), a deletion waits for its files to go, up to ``FREE_WAIT`` seconds, before it
answers."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from buckets import errors

if TYPE_CHECKING:
    from buckets.engine.store import Store

SHORT_OF_SPACE = 60.0
FREE_WAIT = 2.0


def notes_full(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A write method of ``Store`` whose ``StorageFull`` marks the store short of space."""
    @functools.wraps(fn)
    async def write(self: "Store", *args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(self, *args, **kwargs)
        except errors.StorageFull:
            self.short_of_space_until = time.monotonic() + SHORT_OF_SPACE
            raise
    return write


def start(store: "Store", removal: Awaitable[None], started: list[asyncio.Future]) -> None:
    """Run a deleted write's ``removal`` in the background, noted in ``started`` for ``settle``."""
    started.append(store._spawn(removal))


async def settle(store: "Store", started: list[asyncio.Future]) -> None:
    """While the store is short of space, wait up to ``FREE_WAIT`` seconds for the removals in
    ``started`` (they go on after that, as they would have). Called once the deletion let go of
    the key's lock: a write of the key does not wait for it."""
    if started and short_of_space(store):
        await asyncio.wait(started, timeout=FREE_WAIT)


def short_of_space(store: "Store") -> bool:
    """This node refused a write for space in the last ``SHORT_OF_SPACE`` seconds, or one of its
    disks refused new data (its own writes' or another node's)."""
    return time.monotonic() < store.short_of_space_until or any(disk_refused(d) for d in store.disks)


def disk_refused(disk) -> bool:
    """The disk refused new data in the last ``SHORT_OF_SPACE`` seconds (``LocalDisk.refused_at``)."""
    return disk is not None and time.monotonic() < getattr(disk, "refused_at", _NEVER) + SHORT_OF_SPACE


def disk_short(disk) -> bool:
    """The disk refused new data lately, or is near full (``storage.local.NEAR_FULL``): its dead
    records are freed in place (``Compactor._reclaim_disk``)."""
    return disk_refused(disk) or bool(getattr(disk, "near_full", False))


_NEVER = float("-inf")


def releases_space(store: "Store") -> bool:
    """Whether a removed small write's records are punched out of their segments at once
    (``smalllog.release``): while the node is short of space, or one of its disks is near full
    (``storage.local.NEAR_FULL``). Otherwise compaction reclaims them later, as it reclaims
    every other garbage record: a release costs the file system ~50-100 us of CPU per record
    that frees a block (a third more CPU per small DELETE, measured), and on a cluster another
    node's GET or metadata change that read the entry just before may still be reading them
    (this node only knows its own readers)."""
    return time.monotonic() < store.short_of_space_until or any(disk_short(d) for d in store.disks)
