"""How long each of a node's disks takes per call lately, and which one lags its siblings.

A disk that still answers, but far more slowly than the node's other disks (one retrying a
sector, a dying SSD, a device throttled by its controller), makes every caller wait. Callers
on other nodes cannot tell it from a slow link: a GET's shards on one peer come in one stream
(``disk/read_streams``, a round of each range's chunk at a time), and a write's records on one
peer in one call (``disk/append_batch``), so the whole peer lags. They would read and write
around the peer as a whole, and name it slow to the others (``cluster/slowlink.py``), which
takes it out of the load balancers' rotation and off the control plane's lead: for one disk.

The node itself can tell. Each disk keeps track of how its calls that move data went lately
(``Pace``, fed by ``LocalDisk._run``: the disk's queue and its service time, which is what a
caller waits for): the share of them that took over ``SLOW_CALL`` (what makes a caller's hedge
fire: ``engine/hedge.py``'s ``HEDGE_MIN``), a moving average over the last ~50. A disk that is
slow only now and then (a sector retried, a device that stalls in bursts) is what holds a
stream back, and its mean can look fine between the stalls; the share does not swing with
them. The shards and records a node's disks hold are the same mix of sizes on each (an
object's shards are equal), so its disks compare. ``lagging`` names the disks whose share is
over ``RATIO`` times the median of the others' (and at least ``FLOOR``): outliers among
siblings, never most of them (a node whose disks are all slow is slow as a whole, and its
peers are right to go around it). Its peers ask (``node/slow_view``'s ``slow_disks``) and put
the blame for a lag on that disk alone (``engine/hedge.py``, ``SlowSources.blame``), for
``LINGER`` seconds after the node last said so: while they go around the disk its calls are
few and quick, and the node stops naming it, but the lag the next trial meets is the disk's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

SLOW_CALL = 0.1  # s: a call this long counts as slow
ALPHA = 0.02  # the weight of each new call in the share of slow ones (about the last 50 calls)
STALE = 30.0  # s: a share this old no longer counts (the disk had no call since)
MIN_CALLS = 20  # calls since the share went stale before it counts
RATIO = 5.0  # a disk lags when its share of slow calls is over this many times its siblings' median ...
FLOOR = 0.05  # ... and over this share
LINGER = 60.0  # s: a peer's word that its disk lags is taken this long after it last said so


class Pace:
    """One disk's share of slow calls lately, and their mean duration (shared by its handles:
    ``LocalDisk.peer_handle``)."""

    __slots__ = ("share", "average", "calls", "at", "_clock")

    def __init__(self, clock=time.monotonic) -> None:
        self.share = 0.0  # moving average of 1 for a slow call, 0 for another
        self.average = 0.0  # moving average of the calls' durations (for the log)
        self.calls = 0  # since the share last went stale
        self.at = float("-inf")  # when the last call ended
        self._clock = clock

    def note(self, seconds: float) -> None:
        now = self._clock()
        slow = 1.0 if seconds > SLOW_CALL else 0.0
        if now - self.at > STALE:
            self.share, self.average, self.calls = slow, seconds, 0
        else:
            self.share += ALPHA * (slow - self.share)
            self.average += 0.1 * (seconds - self.average)
        self.calls += 1
        self.at = now

    def current(self) -> float | None:
        """The share of slow calls, if recent and based on enough calls; else None."""
        if self.calls < MIN_CALLS or self._clock() - self.at > STALE:
            return None
        return self.share


def lagging(disks: Iterable[Any], held: Iterable[Any] = ()) -> list[Any]:
    """The disks (each with a ``pace`` and ``online``) that lag far behind their siblings: at
    least three with a current share, and fewer than half of them lagging. Those in ``held``
    (found lagging before) stay so down to half the thresholds, so that a share hovering at
    the line does not flap the verdict."""
    held = list(held)
    known = [(d, d.pace.current()) for d in disks if getattr(d, "online", True) and getattr(d, "pace", None)]
    known = [(d, share) for d, share in known if share is not None]
    if len(known) < 3:
        return []
    slow = []
    for disk, share in known:
        others = sorted(s for d, s in known if d is not disk)
        typical = others[len(others) // 2]
        relax = 0.5 if any(disk is h for h in held) else 1.0
        if share > relax * max(FLOOR, RATIO * typical):
            slow.append(disk)
    return slow if 2 * len(slow) < len(known) else []
