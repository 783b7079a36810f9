"""Whether this node's own link is the slow one, so that load balancers send clients elsewhere.

A node behind a slow link (a NIC renegotiated at a fraction of its speed, a congested port)
still answers. The other nodes read and write around it (``engine/hedge.py``), but a client
that sends its requests to it waits for the link on every one: each of them crosses the link
to the peers. Its ``/health/ready`` answers 503 while that lasts, and load balancers send
clients to the other nodes. It still serves what reaches it, and its disks still serve the
peers.

Who decides: the peers. Each node knows which sources it goes around now, and which of them
are "surely" slow (a write left it out, or it lagged again soon after its period:
``SlowSources.surely_slow``; one read's hedge, which a peer's GC pause can cause, is not
enough). Every ``INTERVAL`` a node asks its peers (``node/slow_view``) which nodes they find
surely slow. It is *out* when every peer that answered names it, at least two answered, and
they are more than half of the other members: one node's view is not enough, and a node that
is itself behind a slow link finds every peer slow, so its view of another proves nothing
while the others disagree.

It goes out after ``ROUNDS_OUT`` rounds in a row that say so, and comes back after
``ROUNDS_IN`` rounds in a row that do not. A peer's verdict lapses at the end of each period
until a read tries the node again; the rounds keep one such gap from flapping the answer.

The same answer names the disks of the answering node that lag its other disks
(``slow_disks``, ``storage/pace.py``): the asking node puts lags on that peer on those disks
alone (``SlowSources.says_lagging``), so one slow disk does not make its node look slow.

While out, the node does not lead the control plane (it hands leadership over, and starts no
election: ``control_raft.py``): every control change would wait for its link.

At most one node is out at a time: ``node/slow_view`` also says whether the answering node is
out. A node does not go out while a peer that answered is; if two went out in the same round,
the one with the smaller URL stays out and the other comes back at the next round. When most
nodes are slow the healthy ones look like the outliers: the cap keeps the cluster from sending
every client away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from buckets.obs.metrics import NodeCollector

log = logging.getLogger("buckets.cluster.slowlink")

INTERVAL = 5.0  # seconds between two rounds of asking the peers
ROUNDS_OUT = 2  # rounds in a row in which the peers name this node before it goes out
ROUNDS_IN = 3  # rounds in a row in which they do not before it comes back
ASK_TIMEOUT = 2.0  # a peer that does not answer within this long is left out of the round

View = Callable[[], Awaitable[dict[str, Any]]]


def named_slow(me: str, views: dict[str, dict[str, Any]], members: int) -> bool:
    """Do the peers' ``views`` (peer URL -> its ``node/slow_view`` answer) find ``me`` slow?
    ``members``: how many other members there are (answered or not)."""
    if len(views) < 2 or 2 * len(views) <= members:
        return False
    return all(me in (view.get("slow") or ()) for view in views.values())


def first_out(me: str, views: dict[str, dict[str, Any]]) -> bool:
    """Of the nodes out (``me`` and the peers that say they are), ``me`` has the smallest URL."""
    return all(me < peer for peer, view in views.items() if view.get("out"))


class SlowLinkWatch:
    """The verdict for this node (``out``), asked of its peers every ``INTERVAL``."""

    def __init__(self, me: str, on_change: Callable[[bool], None] | None = None,
                 on_views: Callable[[dict[str, dict[str, Any]]], None] | None = None) -> None:
        self.me = me
        self.out = False
        self.on_change = on_change  # called with ``out`` each time it changes (the control plane's leader)
        self.on_views = on_views  # called with each round's views (the disks the peers say lag: ``storage/pace.py``)
        self._says = 0  # rounds in a row that said "out" (or, while out, that said "in")
        self.named_by: list[str] = []  # the peers that named this node in the last round

    def round(self, views: dict[str, dict[str, Any]], members: int) -> bool:
        """One round's views; True if ``out`` changed."""
        slow = named_slow(self.me, views, members)
        self.named_by = sorted(p for p, v in views.items() if self.me in (v.get("slow") or ()))
        if self.out:  # stays out while named, unless a peer with a smaller URL is out too
            wants_out = slow and first_out(self.me, views)
        else:  # goes out only while no peer that answered is
            wants_out = slow and not any(view.get("out") for view in views.values())
        if wants_out == self.out:
            self._says = 0
            return False
        self._says += 1
        # (out and still named, it gives way to a peer that went out in the same round: at once)
        if self._says < (ROUNDS_OUT if wants_out else 1 if slow else ROUNDS_IN):
            return False
        self.out, self._says = wants_out, 0
        if self.out:
            log.warning("the other nodes find this node's link slow (%s name it): /health/ready answers 503 so that "
                        "load balancers send clients to the other nodes; it still serves what reaches it "
                        "(see docs/operations.md)", ", ".join(self.named_by))
        else:
            log.warning("the other nodes no longer find this node's link slow: /health/ready answers 200 again")
        if self.on_change is not None:
            self.on_change(self.out)
        return True

    async def ask(self, peers: dict[str, View]) -> dict[str, dict[str, Any]]:
        """Every peer's view; those that failed or did not answer in time are left out."""
        async def one(view: View) -> dict[str, Any] | None:
            try:
                async with asyncio.timeout(ASK_TIMEOUT):
                    answer = await view()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - offline, slow, an older release: not counted
                return None
            return answer if isinstance(answer, dict) else None

        urls = list(peers)
        answers = await asyncio.gather(*(one(peers[u]) for u in urls))
        return {u: a for u, a in zip(urls, answers) if a is not None}

    async def watch(self, peers: Callable[[], dict[str, View]], interval: float = INTERVAL) -> None:
        """Every ``interval``: ask every member ``peers()`` names (every member but this one)."""
        while True:
            await asyncio.sleep(interval)
            try:
                current = peers()
                views = await self.ask(current)
                self.round(views, len(current))
                if self.on_views is not None:
                    self.on_views(views)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the watch must outlive a bug in one round
                log.exception("asking the peers about this node's link failed")


class SlowLinkCollector(NodeCollector):
    """``buckets_node_slow_link``: 1 while the other nodes find this node's link slow;
    ``buckets_disk_lagging{disk}``: 1 for each of its disks it last told them lags its others
    (``storage/pace.py``)."""

    def collect_node(self, node: Any):
        from prometheus_client.core import GaugeMetricFamily

        gauge = GaugeMetricFamily("buckets_node_slow_link",
                                  "1 while the other nodes find this node's link slow (its /health/ready answers 503).")
        gauge.add_metric([], 1.0 if node.slow_link.out else 0.0)
        yield gauge
        lagging = GaugeMetricFamily("buckets_disk_lagging",
                                    "1 while this disk lags the node's other disks (the other nodes read and write "
                                    "around it alone).", labels=["disk"])
        served = node.disk_service.disks if node.disk_service is not None else {}
        for path in sorted(served):
            lagging.add_metric([path], 1.0 if path in node._lagging_said else 0.0)
        yield lagging
