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
import collections
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from buckets import errors
from buckets.storage import local

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
    now = time.monotonic()
    return now < store.short_of_space_until or now < local.last_refusal + SHORT_OF_SPACE


# On a cluster, a removed write's records are released (punched out of their segments) this
# long after its removal: a GET or a metadata change through another node that read the entry
# just before may still be reading them (this node only knows its own readers). At once while
# the node is short of space, when the space is what the deletion is for.
RELEASE_GRACE = 10.0


class DelayedReleases:
    """Removed writes' records waiting out ``RELEASE_GRACE`` (``Store._remove_write`` on a
    cluster); one task releases those due, all at once. Not kept across a restart: what is left
    is compaction's."""

    def __init__(self, store: "Store") -> None:
        self.store = store
        self.queue: collections.deque[tuple[float, str, list, list]] = collections.deque()
        self.task: asyncio.Task | None = None

    def add(self, wid: str, disks: list, locs: list) -> None:
        self.queue.append((time.monotonic() + RELEASE_GRACE, wid, disks, locs))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="record-releases")

    async def _run(self) -> None:
        from buckets.engine import smalllog

        while self.queue:
            wait = self.queue[0][0] - time.monotonic()
            if wait > 0 and not short_of_space(self.store):
                await asyncio.sleep(min(wait, 0.5))
                continue
            now, due = time.monotonic(), []
            while self.queue and (self.queue[0][0] <= now or short_of_space(self.store)):
                due.append(self.queue.popleft())
            await asyncio.gather(*(smalllog.release(self.store, wid, disks, locs) for _, wid, disks, locs in due))

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
