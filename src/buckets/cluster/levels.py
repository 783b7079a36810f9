"""Control levels: nodes of two releases in one cluster, so a cluster upgrades one node at a time.

The control plane's state machine must decide every command the same way on every node, or
the nodes' states drift apart. A release that changes what a command decides (a new check, a
new refusal) would break that while nodes of the old and the new release share one log. So
each rule has a *level*, and the cluster records the level every member runs
(``ControlSnapshot.level``): a new rule applies only once the recorded level has reached the
one that introduced it, and then on every node at the same point of the log.

- Each release has one level (``CONTROL_LEVEL``) and names it in its ``node/hello``. A node
  of a release before levels names none: it counts as ``BASE_LEVEL``.
- ``LevelWatch`` (every node) asks every member for its ``node/hello`` every ``INTERVAL``
  seconds and remembers the level each named. On the control plane's leader, once every member
  that is not removed has answered with a level above the recorded one, it commits
  ``set_level`` with the lowest of them; the state machine checks those answers against the
  members again and never lowers the level.
- From then on a node of an older release is refused: ``cluster add-node`` checks the new
  node's level (``propose_generation`` carries it, and the state machine checks it too), a node
  started with ``--join`` stops before formatting its disks, and a member restarted with an
  older release stops once it has caught up with the log (``check_level``). A release before
  levels cannot check that for itself: do not start one in a cluster that has reached level 2.

The data path can use the same record: a new peer call may be made once the cluster's level
says every member serves it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from buckets.runtime import wait_for
from buckets.cluster.control_records import BASE_LEVEL, CONTROL_LEVEL, REMOVED, ControlSnapshot

log = logging.getLogger("buckets.cluster.levels")

INTERVAL = 10.0  # seconds between two rounds of hellos
HELLO_TIMEOUT = 3.0
STALE_SECONDS = 60.0  # an answer older than this is no longer shown (the node may have been replaced)
# Raising the level takes every member's answer to the latest round (a node restarted on an
# older release a minute ago must not count with the level it named before).
FRESH_SECONDS = INTERVAL + HELLO_TIMEOUT + 2.0

Hello = Callable[[], Awaitable[dict[str, Any]]]


class LevelTooNew(Exception):
    """The cluster runs a control level this release does not know (one line for the operator)."""


def level_of(answer: Any) -> int:
    """The control level a ``node/hello`` answer names (``BASE_LEVEL`` if none: an older release)."""
    level = answer.get("level") if isinstance(answer, dict) else None
    return level if isinstance(level, int) and not isinstance(level, bool) and level >= BASE_LEVEL else BASE_LEVEL


def check_level(snapshot: ControlSnapshot) -> None:
    """Raise ``LevelTooNew`` if the cluster's level is above this release's."""
    if snapshot.level > CONTROL_LEVEL:
        raise LevelTooNew(f"the cluster runs control level {snapshot.level}; this release knows levels up to "
                          f"{CONTROL_LEVEL}: start this node with a release of level {snapshot.level} or later "
                          f"(a node cannot go back to an older release once every node has been upgraded)")


def _members(snapshot: ControlSnapshot) -> list[str]:
    topology = snapshot.topology
    return [n.node_id for n in topology.nodes if n.state != REMOVED] if topology is not None else []


class LevelWatch:
    """The control level each member named in its last ``node/hello`` (``watch`` asks them)."""

    def __init__(self, me: str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.me = me
        self._monotonic = monotonic
        self._seen: dict[str, tuple[int, float]] = {}  # node -> (level, when it answered)

    def record(self, node: str, level: int) -> None:
        self._seen[node] = (level, self._monotonic())

    def level(self, node: str, within: float = STALE_SECONDS) -> int | None:
        """The level ``node`` runs (this node's own for ``me``), None if it has not answered
        within the last ``within`` seconds."""
        if node == self.me:
            return CONTROL_LEVEL
        seen = self._seen.get(node)
        if seen is None or self._monotonic() - seen[1] > within:
            return None
        return seen[0]

    def ready(self, snapshot: ControlSnapshot) -> tuple[int, dict[str, int]] | None:
        """``(level, every member's level)`` when every member answered the latest round and the
        lowest level they run is above the cluster's: what ``set_level`` is given."""
        levels = {node: self.level(node, FRESH_SECONDS) for node in _members(snapshot)}
        if not levels or any(v is None for v in levels.values()):
            return None
        lowest = min(v for v in levels.values() if v is not None)
        return (lowest, {k: v for k, v in levels.items() if v is not None}) if lowest > snapshot.level else None

    def status(self, snapshot: ControlSnapshot) -> dict[str, Any]:
        """For ``/health/cluster``: the cluster's level, this release's, and who is behind."""
        levels = {node: self.level(node) for node in _members(snapshot)}
        known = [v for v in levels.values() if v is not None]
        highest = max(known, default=CONTROL_LEVEL)
        return {"cluster": snapshot.level, "this_node": CONTROL_LEVEL, "highest": highest,
                "behind": sorted(n for n, v in levels.items() if v is not None and v < highest),
                "unknown": sorted(n for n, v in levels.items() if v is None),
                "upgrading": snapshot.level < highest}

    async def ask(self, node: str, hello: Hello) -> int | None:
        try:
            answer = await wait_for(hello(), HELLO_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a node that does not answer keeps its last level
            log.debug("control level of %s: no answer (%s)", node, exc)
            return None
        level = level_of(answer)
        self.record(node, level)
        return level

    async def watch(self, peers: Callable[[], dict[str, Hello]], control: Any, leading: Callable[[], bool],
                    interval: float = INTERVAL, first: float = 1.0) -> None:
        """Every ``interval``: ask every peer ``peers()`` names for its level; on the leader,
        raise the cluster's level once every member runs a higher one."""
        await asyncio.sleep(first)
        while True:
            try:
                current = peers()
                for gone in [p for p in self._seen if p not in current]:
                    del self._seen[gone]
                await asyncio.gather(*(self.ask(p, hello) for p, hello in current.items()))
                await self.raise_level(control, leading)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - no majority, a refusal, a bug in one round
                log.info("control level: %s", exc)
            await asyncio.sleep(interval)

    async def raise_level(self, control: Any, leading: Callable[[], bool]) -> bool:
        """On the leader: commit ``set_level`` if every member runs a level above the cluster's."""
        ready = self.ready(control.snapshot)
        if ready is None or not leading():
            return False
        level, nodes = ready
        result = await control.set_level(level, nodes, timeout=10.0)
        if result.get("raised"):
            log.info("every node runs control level %d or later: the cluster's control level is now %d "
                        "(a node of an older release can no longer join or restart into it)", level, level)
        return bool(result.get("raised"))
