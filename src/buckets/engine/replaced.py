"""Removing the data of a write that another write or a delete replaced, on a cluster, when
that write may still come back.

A PUT without a read first (``ReplicatedIndex.put_displacing``) learns from the replicas what
it replaced, and its writer removes that write's data; a DELETE removes the data of the entry
it read. On a cluster the replaced write W may still be in flight through another node: its
writer, refused by the newer version on the other replicas, merges it again above that
version (the blind PUT's ordering rule), and W is the key's state once more, acknowledged to
its client. Removed by then, its data was gone: a read found no shard on any disk
(``tests/unit/cluster/test_index_replication.py::test_a_write_reported_replaced_can_still_be_merged_again``;
seen in ``tests/cluster/test_growth.py``'s linearizability phase, two keys written through
three nodes at once, session 53).

So a replaced write made through another node whose version is recent is not removed at
once. A write id's per-process suffix tells which node made it: this node's own writes of a
key hold the key's lock through their whole commit, as does the write or delete that
replaces one here, so one made here has finished. Recent is younger than
``COME_BACK_WINDOW``, 30 s: a writer merges again right after the refusals, at most one call
timeout (5 s) for the merges and one for hearing the silent replicas later, and each new
attempt is a new version with its own window. After that window, the key is read (a quorum
read) and the data removed only if the key's entry is another write by then. If W came back,
it stays: the write that replaces it next removes it. A write replaced long after it was
made is removed at once, as before (the common case: a key overwritten minutes or days later).

What is queued lives in this process only: a node that stops leaves the pending removals to
the orphan sweep (files older than its grace that no entry names). A writer stalled for longer
than the window between two of its merges (a process paused that long mid-PUT) does not merge
again: past ``MERGE_AGAIN_WITHIN`` after its first version its PUT fails instead (503), so a
write merged again is never older than the wait for it; and the replicas refuse a round that
arrives later than that on their own clocks (a merge held up after the writer's check:
``IndexReplica._refuse_late``).
While the node is short of space (a write refused for space lately) or one of its disks is
near full, replaced data goes at once, as before: the space is wanted now, and the race stays
open then. Otherwise a DELETE of a write made moments ago frees its space only
after the window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from buckets import errors
from buckets.engine import smalllog
from buckets.engine.ids import made_here

if TYPE_CHECKING:
    from buckets.engine.store import Store

log = logging.getLogger("buckets.engine")

COME_BACK_WINDOW = 30.0  # seconds: a write whose version is younger may still be merged again
# A blind PUT's writer merges a write again only this soon after its first version (which
# every later one follows; ``ReplicatedIndex.put_displacing``); later, the PUT fails instead
# (503, its outcome unknown), and a replica refuses a round that arrives later than that on its
# own clock (``IndexReplica._refuse_late``). The rest of the window covers that last merge's
# round (one call timeout, 5 s, and one more for the replicas that did not answer) and clocks a
# few seconds apart: its replicas have applied it before any node's wait for a version of it is
# over, so the removal's read finds it. Without it, a writer stalled longer than the window
# between two rounds (a process paused mid-PUT) merged its write again after another node had
# removed its data.
MERGE_AGAIN_WITHIN = 15.0
CHECK_ATTEMPTS = 3  # reads of the key that may fail (no quorum) before the removal is left to the sweep


def version_age(entry: dict, now: float | None = None) -> float | None:
    """Seconds since ``entry``'s version was stamped (its hybrid clock's milliseconds), or
    None when it has no version (a single node's entry)."""
    ts = entry.get("ts")
    if not isinstance(ts, (list, tuple)) or not ts or not isinstance(ts[0], int):
        return None
    return (time.time() if now is None else now) - (ts[0] >> 16) / 1000.0


class DeferredRemovals:
    """The replaced writes of one store whose removal waits out ``COME_BACK_WINDOW``."""

    def __init__(self, store: "Store", window: float = COME_BACK_WINDOW) -> None:
        self.store = store
        self.window = window
        self._queue: deque[tuple[float, str, str, dict, bool | None, int]] = deque()
        self._task: asyncio.Task | None = None
        self.kept = 0  # replaced writes found to be the key's state again: not removed

    def __len__(self) -> int:
        return len(self._queue)

    def may_come_back(self, entry: dict) -> bool:
        """Whether ``entry``'s writer may still merge it again: its version is recent, and it
        was written through another node. This node's writes of a key hold its key lock for
        their whole commit (merges again included), and a write replacing or deleting the key
        here takes that lock too: one made here has finished (a single-node cluster never
        waits)."""
        age = version_age(entry)
        return age is not None and age < self.window and not made_here(entry.get("wid"))

    def add(self, bucket: str, key: str, entry: dict, in_log: bool | None = None) -> None:
        """Remove ``entry``'s data once its version is ``window`` old, unless it is the key's
        state then. ``in_log``: as ``Store._remove_write``'s."""
        age = version_age(entry) or 0.0
        self._queue.append((time.monotonic() + max(0.0, self.window - age), bucket, key, entry, in_log, 0))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="replaced-removals")

    async def _run(self) -> None:
        while self._queue:
            due, bucket, key, entry, in_log, tries = self._queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            self._queue.popleft()
            try:
                current = await self.store.catalog.get_object(bucket, key)
            except (errors.BucketsError, asyncio.TimeoutError) as exc:
                if tries + 1 < CHECK_ATTEMPTS:
                    self._queue.append((time.monotonic() + self.window, bucket, key, entry, in_log, tries + 1))
                else:
                    log.info("%s/%s: the replaced write %s is left to the orphan sweep (the key could not be "
                             "read: %s)", bucket, key, entry["wid"], exc)
                continue
            if current is not None and current.get("wid") == entry["wid"]:
                self.kept += 1
                log.info("%s/%s: the replaced write %s was merged again and is the key's state: kept", bucket, key,
                         entry["wid"])
                continue
            try:
                await self.store._remove_write(bucket, key, entry["wid"], self.store.disks_for(entry["disks"]),
                                               in_log=in_log, locs=entry.get(smalllog.LOG_FIELD))
            except Exception as exc:  # noqa: BLE001 - a stale copy is the orphan sweep's, not fatal
                log.warning("%s/%s: removing the replaced write %s failed: %s", bucket, key, entry["wid"], exc)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if self._queue:
            log.info("%d replaced writes' data left for the orphan sweep", len(self._queue))
            self._queue.clear()
