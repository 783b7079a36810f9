"""How far each peer's wall clock is from this node's, measured the way NTP does it.

Some of the replicated index's guarantees rest on the nodes' wall clocks agreeing within
about a second (architecture/consistency.md: what a conditional write's expired lock leaves
is safe to read around while they do). Nothing in Buckets can make clocks agree; NTP
(chrony, systemd-timesyncd) does. This watch makes a disagreement visible before it
matters: in ``/health/cluster`` and ``buckets-admin info``, as Prometheus gauges, and as a
warning in the log.

The estimate: a ``node/ping`` sent at this node's wall time ``t0`` and answered at ``t1``
carries the peer's wall time ``tp``, read somewhere within the round trip, so the peer's
clock is ``tp - (t0 + t1) / 2`` ahead of this one, give or take half the round trip (the
round trip itself is measured on the monotonic clock, which a clock step does not move).
Of a peer's last ``WINDOW`` samples the one with the shortest round trip counts: queueing
under load only widens the bound, never moves the truth. A peer is *skewed* when even the
nearest edge of that bound is more than ``WARN_SECONDS`` away: ``|offset| - rtt / 2``. A
skewed peer is logged once as a warning (as an error beyond ``LIMIT_SECONDS``, where the
guarantees above no longer hold), and once more when it is back within bounds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from buckets.obs.metrics import NodeCollector

log = logging.getLogger("buckets.cluster.clocks")

INTERVAL = 10.0  # seconds between two pings of each peer
WINDOW = 6  # samples per peer the estimate picks from (the last minute)
STALE_SECONDS = 120.0  # an estimate no newer than this is not reported (the peer stopped answering)
WARN_SECONDS = 0.5  # a peer's clock this far off (at least) is reported and logged: half the limit
LIMIT_SECONDS = 1.0  # how far apart the guarantees that lean on wall clocks allow them to be

Ping = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Sample:
    offset: float  # the peer's clock minus this node's, seconds
    rtt: float  # the ping's round trip, seconds (monotonic)
    at: float  # this node's monotonic time when the answer came

    @property
    def uncertainty(self) -> float:
        return self.rtt / 2

    @property
    def at_least(self) -> float:
        """How far off the peer's clock is for certain (0 when the bound includes 0)."""
        return max(0.0, abs(self.offset) - self.uncertainty)


def sample_of(sent_wall: float, received_wall: float, rtt: float, peer_time: float, at: float) -> Sample:
    """One ping's estimate: ``sent_wall``/``received_wall`` are this node's wall clock around the
    call, ``rtt`` the same interval on the monotonic clock."""
    return Sample(offset=peer_time - (sent_wall + received_wall) / 2, rtt=max(0.0, rtt), at=at)


class ClockWatch:
    """The offsets of every peer's clock, from the pings ``watch`` sends (or ``record``)."""

    def __init__(self, *, warn: float = WARN_SECONDS, limit: float = LIMIT_SECONDS, window: int = WINDOW,
                 stale: float = STALE_SECONDS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.warn = warn
        self.limit = limit
        self.stale = stale
        self._window = window
        self._monotonic = monotonic
        self._samples: dict[str, deque[Sample]] = {}
        self._skewed: dict[str, bool] = {}  # what was last logged per peer

    def record(self, peer: str, sample: Sample) -> None:
        samples = self._samples.get(peer)
        if samples is None:
            samples = self._samples[peer] = deque(maxlen=self._window)
        samples.append(sample)
        self._judge(peer)

    def forget(self, peer: str) -> None:
        self._samples.pop(peer, None)
        self._skewed.pop(peer, None)

    def estimate(self, peer: str) -> Sample | None:
        """The recent sample with the shortest round trip, or None (none, or all stale)."""
        samples = self._samples.get(peer)
        if not samples:
            return None
        fresh = [s for s in samples if self._monotonic() - s.at <= self.stale]
        return min(fresh, key=lambda s: s.rtt) if fresh else None

    def peer_status(self, peer: str) -> dict[str, Any]:
        """For ``/health/cluster``: the offset and its uncertainty (None when not measured)."""
        s = self.estimate(peer)
        if s is None:
            return {"clock_offset": None, "clock_uncertainty": None}
        return {"clock_offset": round(s.offset, 6), "clock_uncertainty": round(s.uncertainty, 6)}

    def status(self) -> dict[str, Any]:
        """The verdict over every peer measured: ``skewed`` names those off by more than ``warn``."""
        estimates = dict(self.items())
        skewed = sorted((p for p, s in estimates.items() if s.at_least > self.warn),
                        key=lambda p: -estimates[p].at_least)
        return {"status": "skewed" if skewed else "ok", "warn_above": self.warn, "limit": self.limit,
                "max_offset": round(max((abs(s.offset) for s in estimates.values()), default=0.0), 6),
                "measured": len(estimates), "skewed": skewed}

    def items(self) -> Iterator[tuple[str, Sample]]:
        for peer in list(self._samples):
            s = self.estimate(peer)
            if s is not None:
                yield peer, s

    def _judge(self, peer: str) -> None:
        s = self.estimate(peer)
        if s is None:
            return
        skewed = s.at_least > self.warn
        if skewed == self._skewed.get(peer, False):
            return
        self._skewed[peer] = skewed
        if not skewed:
            log.info("the clock of %s is within %.1f s of this node's again (%+.3f s, ±%.3f s)",
                     peer, self.warn, s.offset, s.uncertainty)
            return
        beyond = s.at_least > self.limit
        log.log(logging.ERROR if beyond else logging.WARNING,
                "the clock of %s is %+.3f s (±%.3f s) off this node's: keep the nodes' clocks within %.1f s of "
                "each other (NTP: chrony or systemd-timesyncd on every node)%s", peer, s.offset, s.uncertainty,
                self.warn, "; beyond %.1f s, reads around a conditional write whose lock expired are no longer "
                "guaranteed to be linearizable" % self.limit if beyond else "")

    async def measure(self, peer: str, ping: Ping) -> Sample | None:
        """Ping ``peer`` once and record what it says; None if it did not answer a time."""
        t0, m0 = time.time(), time.monotonic()
        try:
            answer = await ping()
        except Exception as exc:  # noqa: BLE001 - an unreachable peer is the health probes' business
            log.debug("clock of %s: no answer (%s)", peer, exc)
            return None
        m1, t1 = time.monotonic(), time.time()
        peer_time = answer.get("time") if isinstance(answer, dict) else None
        if not isinstance(peer_time, (int, float)) or isinstance(peer_time, bool):
            return None
        sample = sample_of(t0, t1, m1 - m0, float(peer_time), m1)
        self.record(peer, sample)
        return sample

    async def watch(self, peers: Callable[[], dict[str, Ping]], interval: float = INTERVAL,
                    first: float = 1.0) -> None:
        """Ping every peer ``peers()`` names every ``interval`` seconds (the first round after
        ``first``), until cancelled; peers no longer named are forgotten."""
        await asyncio.sleep(first)
        while True:
            try:
                current = peers()
                for gone in [p for p in self._samples if p not in current]:
                    self.forget(gone)
                await asyncio.gather(*(self.measure(p, ping) for p, ping in current.items()))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the watch must outlive a bug in one round
                log.exception("measuring the peers' clocks failed")
            await asyncio.sleep(interval)


class ClockCollector(NodeCollector):
    """Prometheus gauges of the peers' clock offsets (registered by ``buckets.obs.metrics``)."""

    def collect_node(self, node: Any):
        from prometheus_client.core import GaugeMetricFamily

        offset = GaugeMetricFamily("buckets_peer_clock_offset_seconds",
                                   "The peer's wall clock minus this node's, estimated from pings.", labels=["peer"])
        spread = GaugeMetricFamily("buckets_peer_clock_uncertainty_seconds",
                                   "Half the round trip of the ping the offset comes from.", labels=["peer"])
        for peer, s in node.clocks.items():
            offset.add_metric([peer], s.offset)
            spread.add_metric([peer], s.uncertainty)
        yield offset
        yield spread
