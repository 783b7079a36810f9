"""Hedged shard reads: a read whose slot lags far behind the others asks a spare slot instead.

An object can be read from any k of its n slots. A read asks k of them (data slots first: no
decoding). When some are still out long after the others answered (a peer behind a degraded
link, a disk retrying a sector, a node swapping), waiting for them makes every GET as slow as
the slowest source. :func:`read_k` waits ``HEDGE_MIN`` and ``HEDGE_FACTOR`` times what the
answered slots took (``HEDGE_NONE`` when none answered yet), then asks as many spare slots
(parity, on other sources) as are still out, takes the first k answers, and cancels the rest.
Spares on the lagging slots' own sources come last (before a source is known slow, its parity
slots are spares like any other), and a spare that lags in turn, as long again after it was
asked, gets a spare of its own. A slot whose read failed is replaced by a spare at once.

The sources hedged around (marked as soon as a spare answers before the slot it stands in
for, so the reads running beside it go around them too) are remembered for ``SLOW_FOR``
seconds (:class:`SlowSources`; doubled, up to ``SLOW_MAX``, for a source that lags again soon
after): reads started meanwhile choose their slots on other sources first and do not wait for
the hedge again; after that, one read tries the source again. A source is a peer for a remote
disk (one link carries all its disks) and the disk itself for a local one; a write that left
out one disk of a peer whose other disks kept up marks that disk alone (``lags_alone``), and so
does a lag on a peer whose node says that disk lags its siblings (``storage/pace.py``:
``SlowSources.blame``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger("buckets.engine")

HEDGE_MIN = 0.1  # s: never hedge a slot sooner than this after the last answer
HEDGE_FACTOR = 3.0  # ... nor sooner than this many times what the answered slots took
HEDGE_NONE = 1.0  # s: no slot answered at all: ask spares after this long
SLOW_FOR = 10.0  # s: a source hedged around is avoided this long by later reads ...
SLOW_MAX = 80.0  # ... doubled each time it lags again soon after, up to this
# Writes: a shard file or record that lags (a peer behind a slow link, a disk retrying) is
# waited for until the write has spent LAG_MIN seconds, and LAG_SHARE of its time, waiting for
# slots beyond its write quorum; the slots still out are then dropped and the write goes on
# without them, degraded, as with a disk that failed (healed after its commit). Never below
# the write quorum.
LAG_MIN = 1.0
LAG_SHARE = 0.5
WARN_EVERY = 60.0  # s: at most one warning per source in this long


def source_of(disk: Any) -> Any:
    """What a slot's read waits on: the peer of a remote disk, else the disk."""
    client = getattr(disk, "client", None)
    return client if client is not None else disk


def lags_alone(disk: Any, kept: Iterable[Any] | None) -> bool:
    """``disk`` (of a peer) lagged while another disk of the same peer in ``kept`` (those a
    write did not leave out) kept up: the disk lags (hung, retrying), not the peer's link."""
    source = source_of(disk)
    return source is not disk and any(d is not disk and d is not None and source_of(d) is source
                                      for d in kept or ())


def source_name(disk: Any) -> str:
    client = getattr(disk, "client", None)
    return str(getattr(client, "endpoint", None) or getattr(disk, "endpoint", None) or disk)


def disk_name(disk: Any) -> str:
    return str(getattr(disk, "endpoint", disk))


class SlowSources:
    """The sources reads hedged around lately, and the counters behind the metrics.

    A source that lags again soon after its time avoided ended is avoided twice as long, up to
    ``SLOW_MAX`` (a link that stays slow costs one trial read per period, not one per 10 s);
    one that kept up for a while starts again from ``SLOW_FOR``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[Any, tuple[float, str, float]] = {}  # source -> (avoided until, name, period)
        self._sure: dict[Any, float] = {}  # source -> until when it is ``surely_slow``
        self._sure_until = 0.0  # the latest of those: before it, none is (a write's fast path)
        # source -> until when writes still wait for it only the reads' hedge time (``lately``):
        # its time avoided, then as long again, unless a write found it keeping up meanwhile
        self._probe: dict[Any, float] = {}
        self._warned: dict[Any, float] = {}
        # Set by a cluster node: ``says_lagging(disk)`` is True when that remote disk's own
        # node says it lags its sibling disks (``storage/pace.py``): a lag on that peer is then
        # put on the disk, not on the peer's link (``blame``).
        self.says_lagging: Callable[[Any], bool] | None = None
        self.hedges = 0  # slots a read asked a spare for because they lagged
        self.hedges_won = 0  # of those, spares that answered before the slot they stood in for
        self.left_out = 0  # shards (or records) writes went on without because they lagged

    def slow(self, source: Any) -> bool:
        held = self._until.get(source)
        return held is not None and held[0] > self._clock()

    def avoided(self, disk: Any) -> Any:
        """What makes ``disk`` avoided now: its source (a peer, for all its disks), or the disk
        itself (marked alone: it lagged while its peer's other disks kept up); None if neither."""
        source = source_of(disk)
        if self.slow(source):
            return source
        return disk if source is not disk and self.slow(disk) else None

    def avoids(self, disk: Any) -> bool:
        return self.avoided(disk) is not None

    def surely(self, disk: Any) -> bool:
        """``surely_slow`` for ``disk``'s source, or for the disk marked alone."""
        source = source_of(disk)
        return self.surely_slow(source) or (source is not disk and self.surely_slow(disk))

    def none_surely_slow(self) -> bool:
        """No source is ``surely_slow`` now (one clock read: what every write asks first)."""
        return self._sure_until <= self._clock()

    def surely_slow(self, source: Any) -> bool:
        """Avoided on stronger evidence than one read's hedge (a GC pause on a peer can make
        that): a write waited for it past its budget, or it lagged again soon after its period
        ended. What new writes leave out from the start (``Store.writable``)."""
        return self._sure.get(source, 0.0) > self._clock()

    def lately(self, disk: Any) -> bool:
        """``disk``'s source (or the disk marked alone) is avoided now, or was until lately and no
        write has seen it keep up since. A write waits for such a slot beyond its quorum only
        ``grace(..., True)``, not the full ``LAG_MIN``: when a slow link's period ends, the writes
        that try it again drop its shards after 0.1 s rather than 1 s each."""
        if not self._probe:
            return False
        now = self._clock()
        source = source_of(disk)
        return self._probe.get(source, 0.0) > now or (source is not disk and self._probe.get(disk, 0.0) > now)

    def kept_up(self, disks: Iterable[Any]) -> None:
        """A write's slots on ``disks`` kept up with its quorum: their sources, no longer avoided,
        are no longer ``lately`` slow either (it recovered: a slot that lags now gets the full
        budget again)."""
        if not self._probe:
            return
        now = self._clock()
        for disk in disks:
            for key in (source_of(disk), disk):
                if key in self._probe and not self.slow(key):
                    del self._probe[key]
        for key in [key for key, until in self._probe.items() if until <= now]:
            del self._probe[key]

    def blame(self, disk: Any, beside: Iterable[Any] = ()) -> list[Any]:
        """The disks to mark for ``disk``'s lag instead of its peer: ``disk`` itself if its node
        says it lags its siblings, else those of ``beside`` (the same call's other disks) on the
        same peer that their node says so (a peer's disks share one stream or call, so one slow
        disk holds back the others); [] when none: the peer is to blame (its link)."""
        says = self.says_lagging
        source = source_of(disk)
        if says is None or source is disk:
            return []
        if says(disk):
            return [disk]
        return [d for d in beside if d is not None and d is not disk and source_of(d) is source and says(d)]

    def mark_lag(self, disk: Any, lag: float, what: str = "reads from", beside: Iterable[Any] = ()) -> None:
        """``disk``'s call lagged: mark the disks ``blame`` names, else its source."""
        blamed = self.blame(disk, beside)
        for d in blamed:
            self.mark(d, disk_name(d), lag, what)
        if not blamed:
            self.mark(source_of(disk), source_name(disk), lag, what)

    def forgive(self, source: Any) -> None:
        """Forget that ``source`` lagged (its node says one of its disks lags its siblings: that
        disk is to blame for what was put on the whole peer)."""
        if self._until.pop(source, None) is not None:
            self._sure.pop(source, None)
            self._probe.pop(source, None)

    def mark(self, source: Any, name: str, lag: float, what: str = "reads from") -> None:
        """``source`` lagged ``lag`` seconds behind the others (``what``: in reads or writes)."""
        now = self._clock()
        held = self._until.get(source)
        fresh = held is None or held[0] <= now
        period = SLOW_FOR
        if held is not None:
            until, _, last = held
            if until > now:
                period = last  # still avoided (a write that lagged meanwhile): the same period
            elif now - until < 2 * last:
                period = min(2 * last, SLOW_MAX)  # lagged again soon after its period ended
        self._until[source] = (now + period, name, period)
        self._probe[source] = now + 2 * period
        if what != "reads from" or period > SLOW_FOR:
            self._sure[source] = now + period
            self._sure_until = max(self._sure_until, now + period)
        if fresh and now - self._warned.get(source, -WARN_EVERY) >= WARN_EVERY:
            self._warned[source] = now
            log.warning("%s %s lag %.0f ms behind the other shards: reads go around it for %.0f s, writes leave "
                        "out a shard that lags %g s (a slow link or disk: see docs/operations.md)",
                        what, name, lag * 1000, period, LAG_MIN)

    def surely_names(self) -> list[str]:
        """The sources ``surely_slow`` now (what a peer's ``node/slow_view`` answers:
        ``cluster/slowlink.py``)."""
        now = self._clock()
        if self._sure_until <= now:
            return []
        return sorted(self._until[source][1] for source, until in self._sure.items()
                      if until > now and source in self._until)

    def names(self) -> list[str]:
        """The sources avoided now."""
        now = self._clock()
        return sorted(name for until, name, _ in self._until.values() if until > now)


def choose(disks: list[Any], k: int, slow: SlowSources, avoid: Iterable[int] = ()) -> tuple[list[int], list[int]]:
    """The k slots to read first and the spares, in order: slots with a disk, sources not slow
    before slow ones, slots in ``avoid`` last, data slots (below k) before parity."""
    avoid = set(avoid)
    order = sorted((i for i, d in enumerate(disks) if d is not None),
                   key=lambda i: (i in avoid, slow.avoids(disks[i]), i >= k, i))
    return order[:k], order[k:]


async def read_k(k: int, first: list[int], spares: list[int], read: Callable[[int], Awaitable[Any]],
                 disks: list[Any], slow: SlowSources) -> tuple[dict[int, Any], list[int]]:
    """Read ``first`` (then ``spares`` as needed) until k reads answered something other than
    None. Returns the answers by slot (None: that read failed) and the slots given up because
    they lagged (their reads cancelled: neither answered nor failed)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: dict[asyncio.Future, int] = {}
    answers: dict[int, Any] = {}
    spares = list(spares)
    stand_in: dict[int, int] = {}  # spare slot -> the lagging slot it was asked for
    launched: dict[int, float] = {}  # a spare slot -> when it was asked
    state = {"good": 0, "last": None}  # answers other than None; when the latest came
    failures: list[BaseException] = []
    wake: list[asyncio.Future] = [loop.create_future()]

    # (``landed`` never calls ``launch``: two closures calling each other would be a reference
    # cycle holding ``answers``, the span's bytes, until the garbage collector ran: measured, a
    # 16 MiB GET's pages were then new memory each time, 4x the page faults, 40% slower.)
    def landed(t: asyncio.Future) -> None:
        i = tasks.pop(t, None)
        if i is None or t.cancelled():
            return
        if t.exception() is not None:
            failures.append(t.exception())
        else:
            answers[i] = t.result()
            state["last"] = loop.time()
            if answers[i] is not None:
                state["good"] += 1
                lagging = stand_in.get(i)
                if lagging is not None and lagging in tasks.values():
                    slow.hedges_won += 1
                    # Said now, not when this read is done: the reads running beside it (the
                    # first GETs after a link went slow) choose their spares around it at once.
                    # (on a peer whose node says a disk of this read lags its siblings: that disk)
                    slow.mark_lag(disks[lagging], state["last"] - start,
                                  beside=[disks[j] for j in (*first, *launched)])
        if not wake[0].done():
            wake[0].set_result(None)

    def launch(i: int) -> None:
        t = asyncio.ensure_future(read(i))
        tasks[t] = i
        t.add_done_callback(landed)

    def due(i: int) -> float:
        """When slot ``i``, still out, counts as lagging: a first read by the rule above; a spare
        after as long again from when it was asked (it may stand on a slow source too)."""
        last = state["last"]
        took = HEDGE_NONE if last is None else max(HEDGE_MIN, HEDGE_FACTOR * (last - start))
        if i in launched:
            return launched[i] + took
        return start + HEDGE_NONE if last is None else last + took

    for i in first:
        launch(i)
    try:
        while state["good"] < k and not failures:
            while spares and state["good"] + len(tasks) < k:  # a read failed: its spare now, not after the others
                launch(spares.pop(0))
            if not tasks:
                break
            out = [i for i in tasks.values() if i not in stand_in.values()]  # no spare asked for it yet
            timer = None
            if spares and out:
                timer = loop.call_at(min(due(i) for i in out), lambda w=wake[0]: w.done() or w.set_result("due"))
            try:
                why = await wake[0]
            finally:
                if timer is not None:
                    timer.cancel()
            wake[0] = loop.create_future()
            if why == "due":  # lagging: a spare for each slot still out (as many as there are)
                now = loop.time()
                late = [i for i in out if i in tasks.values() and due(i) <= now + 0.001]  # (timers fire a tick early)
                # Spares on the sources of the lagging slots last: the same slow link or disk
                # would keep a spare behind it too (a peer not known slow yet holds parity too).
                suspects = {source_of(disks[i]) for i in late}
                spares.sort(key=lambda j: source_of(disks[j]) in suspects)
                for i in late[:len(spares)]:
                    s = spares.pop(0)
                    stand_in[s] = i
                    launched[s] = now
                    slow.hedges += 1
                    launch(s)
    finally:
        leftovers = dict(tasks)
        for f in leftovers:
            f.cancel()
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)
    if failures:
        raise failures[0]  # not a disk's error (reads answer None for those): a bug
    given_up = [i for i in leftovers.values() if i not in answers]
    if given_up and state["good"] >= k:
        lag = loop.time() - start
        asked = [disks[j] for j in (*first, *launched)]
        for i in given_up:
            if i in stand_in.values():
                slow.mark_lag(disks[i], lag, beside=asked)
    return answers, given_up


def grace(quorum_took: float, slow: bool) -> float:
    """How long a write waits for its slots beyond the write quorum: ``LAG_MIN``, or when every
    one of them is on a source known to be slow, the reads' hedge rule (it lagged lately: one
    write paid the full wait, the writes after it need not)."""
    return max(HEDGE_MIN, HEDGE_FACTOR * quorum_took) if slow else LAG_MIN


async def until_quorum(calls: dict[asyncio.Future, int], quorum: int, ok: Callable[[asyncio.Future], bool],
                       lagged: Callable[[asyncio.Future, int, float], None],
                       known_slow: Callable[[int], bool],
                       kept: Callable[[Iterable[int]], None] | None = None) -> None:
    """Wait for the calls (one per slot) until ``quorum`` of them are ``ok``, then for the
    rest ``grace`` more at most. Those still out are left to finish on their own:
    ``lagged(call, slot, seconds)`` is told of each (it keeps the call); ``kept`` is told of
    the slots whose calls were done and ``ok``. Cancelled, it cancels the calls (as a gather
    would)."""
    if not calls:
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    reached = loop.create_future()
    tally = [len(calls), 0]  # calls still out, calls ok

    def done(f: asyncio.Future) -> None:
        tally[0] -= 1
        if not f.cancelled() and f.exception() is None and ok(f):
            tally[1] += 1
        if (tally[1] >= quorum or not tally[0]) and not reached.done():
            reached.set_result(None)

    for f in calls:
        f.add_done_callback(done)
    try:
        await reached
        waiting = [f for f in calls if not f.done()]  # (a call done may not have told the tally yet)
        if waiting:
            began = loop.time()
            budget = grace(began - start, all(known_slow(calls[f]) for f in waiting))
            _, out = await asyncio.wait(waiting, timeout=budget)
            for f in out:
                lagged(f, calls[f], loop.time() - began)
        if kept is not None:
            kept(i for f, i in calls.items() if f.done() and not f.cancelled() and f.exception() is None and ok(f))
    except asyncio.CancelledError:
        for f in calls:
            f.cancel()
        raise
