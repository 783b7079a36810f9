"""Control levels: the cluster records the level every member runs, and refuses older nodes once it has.

The state machine's ``set_level`` and the level check of ``propose_generation`` (driven the way
Raft drives them: encoded commands in log order), and ``LevelWatch``'s decision of when to raise
the level, against a real ``ControlMachine``.
"""

from __future__ import annotations

import asyncio

import pytest
from test_control_state import LAYOUT, NODES, Driver, bootstrap, node

from buckets.cluster.control import plan_table
from buckets.cluster.control_records import BASE_LEVEL, CONTROL_LEVEL, ControlSnapshot
from buckets.cluster.control_state import ControlMachine
from buckets.cluster.levels import LevelTooNew, LevelWatch, check_level, level_of

EVERY = {n.node_id: CONTROL_LEVEL for n in NODES}


@pytest.fixture
def drive() -> Driver:
    return Driver()


def test_a_cluster_starts_at_the_base_level_and_rises_once_every_member_runs_more(drive: Driver) -> None:
    bootstrap(drive)
    assert drive.machine.snapshot.level == BASE_LEVEL
    msg = drive.refused("set_level", "LevelTooLow", level=2, nodes={**EVERY, "node3": 1})
    assert "node node3 runs control level 1, below 2" in msg
    msg = drive.refused("set_level", "LevelTooLow", level=2, nodes={k: v for k, v in EVERY.items() if k != "node4"})
    assert "node node4 runs control level unknown" in msg
    drive.refused("set_level", "LevelTooLow", level=2, nodes={**EVERY, "node2": True})
    drive.refused("set_level", "InvalidArgument", level=0, nodes=EVERY)
    drive.refused("set_level", "InvalidArgument", level=2, nodes=["node1"])
    assert drive.ok("set_level", level=2, nodes=EVERY) == {"level": 2, "raised": True}
    assert drive.machine.snapshot.level == 2
    # never lowered; the same raise again is a no-op
    assert drive.ok("set_level", level=1, nodes={k: 1 for k in EVERY}) == {"level": 2, "raised": False}
    assert drive.ok("set_level", level=2, nodes=EVERY) == {"level": 2, "raised": False}
    assert drive.machine.snapshot.level == 2


def test_set_level_needs_a_topology(drive: Driver) -> None:
    drive.refused("set_level", "ClusterNotInitialized", level=2, nodes={})


def test_a_removed_node_does_not_hold_the_level_down(drive: Driver) -> None:
    bootstrap(drive)
    table = drive.machine.snapshot.topology.partition_table()
    nodes = NODES[:3] + [node(4, state="removed")]
    drive.ok("propose_generation", expected_generation=1, nodes=[n.to_wire() for n in nodes],
             table=plan_table(LAYOUT, nodes, 2, table))
    assert drive.ok("set_level", level=2, nodes={"node1": 2, "node2": 2, "node3": 3}) == {"level": 2, "raised": True}


def test_a_node_joining_a_raised_cluster_must_run_its_level(drive: Driver) -> None:
    bootstrap(drive)
    first = drive.machine.snapshot.topology.partition_table()
    grown = NODES + [node(5)]
    table = plan_table(LAYOUT, grown, 2, first)
    wire = [n.to_wire() for n in grown]
    # at the base level (a cluster of releases before levels) nothing is asked
    probe = Driver(ControlMachine())
    bootstrap(probe)
    assert probe.ok("propose_generation", expected_generation=1, nodes=wire, table=table) == {"generation": 2}

    drive.ok("set_level", level=2, nodes=EVERY)
    msg = drive.refused("propose_generation", "LevelTooLow", expected_generation=1, nodes=wire, table=table)
    assert "node node5 runs control level unknown; the cluster runs level 2" in msg
    drive.refused("propose_generation", "LevelTooLow", expected_generation=1, nodes=wire, table=table,
                  levels={"node5": 1})
    drive.refused("propose_generation", "InvalidArgument", expected_generation=1, nodes=wire, table=table,
                  levels=["node5"])
    assert drive.ok("propose_generation", expected_generation=1, nodes=wire, table=table,
                    levels={"node5": 2}) == {"generation": 2}
    # members already in the cluster are not asked again (their level is on record)
    shrunk = NODES[:3] + [node(4, state="draining"), node(5)]
    assert drive.ok("propose_generation", expected_generation=2, nodes=[n.to_wire() for n in shrunk],
                    table=plan_table(LAYOUT, shrunk, 3, drive.machine.snapshot.topology.partition_table())) \
        == {"generation": 3}


def test_the_level_survives_a_snapshot_and_an_older_snapshot_loads_at_the_base_level(drive: Driver) -> None:
    bootstrap(drive)
    drive.ok("set_level", level=2, nodes=EVERY)
    copy = ControlMachine()
    copy.load(drive.machine.dump())
    assert copy.snapshot.level == 2
    older = drive.machine.dump()
    del older["state"]["level"]  # what a release before levels writes
    copy.load(older)
    assert copy.snapshot.level == BASE_LEVEL
    assert ControlSnapshot.from_wire({"level": 3}).level == 3
    with pytest.raises(ValueError):
        ControlSnapshot.from_wire({"level": 0})


def test_what_a_hello_names() -> None:
    assert level_of({"url": "http://a:1"}) == BASE_LEVEL  # a release before levels
    assert level_of({"level": 2}) == 2
    assert level_of({"level": True}) == BASE_LEVEL
    assert level_of({"level": "2"}) == BASE_LEVEL
    assert level_of(None) == BASE_LEVEL


def test_a_node_refuses_a_cluster_above_its_release() -> None:
    check_level(ControlSnapshot(level=CONTROL_LEVEL))
    with pytest.raises(LevelTooNew, match=f"runs control level {CONTROL_LEVEL + 1}; this release knows levels up to"):
        check_level(ControlSnapshot(level=CONTROL_LEVEL + 1))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class MachineControl:
    """The one method ``LevelWatch`` calls, committed to a real state machine."""

    def __init__(self, drive: Driver) -> None:
        self.drive = drive

    @property
    def snapshot(self) -> ControlSnapshot:
        return self.drive.machine.snapshot

    async def set_level(self, level: int, nodes: dict, *, timeout: float | None = None) -> dict:
        return self.drive.ok("set_level", level=level, nodes=nodes)


def test_the_watch_raises_the_level_on_the_leader_once_every_member_answered_a_higher_one(drive: Driver) -> None:
    bootstrap(drive)
    clock = Clock()
    watch = LevelWatch("node1", monotonic=clock)
    control = MachineControl(drive)

    def raise_level(leading: bool = True) -> bool:
        return asyncio.run(watch.raise_level(control, lambda: leading))

    assert watch.level("node1") == CONTROL_LEVEL  # its own
    watch.record("node2", 2)
    watch.record("node3", BASE_LEVEL)  # still the old release
    status = watch.status(control.snapshot)
    assert status == {"cluster": 1, "this_node": CONTROL_LEVEL, "highest": 2, "behind": ["node3"],
                      "unknown": ["node4"], "upgrading": True}
    assert watch.ready(control.snapshot) is None and not raise_level()
    watch.record("node3", 2)
    assert watch.ready(control.snapshot) is None  # node4 has not answered
    watch.record("node4", 3)
    assert watch.ready(control.snapshot) == (2, {"node1": 2, "node2": 2, "node3": 2, "node4": 3})
    assert not raise_level(leading=False) and drive.machine.snapshot.level == 1  # only the leader proposes
    clock.now += 16  # a member that missed the latest round (restarted, perhaps on an older release)
    watch.record("node2", 2)
    watch.record("node3", 2)
    assert watch.ready(control.snapshot) is None and watch.level("node4") == 3  # (still shown)
    clock.now += 61  # answers that old are no longer shown
    assert watch.level("node2") is None and watch.ready(control.snapshot) is None
    for peer in ("node2", "node3", "node4"):
        watch.record(peer, 2)
    assert raise_level() and drive.machine.snapshot.level == 2
    assert watch.ready(control.snapshot) is None and not raise_level()  # nothing more to raise
    assert watch.status(control.snapshot)["upgrading"] is False


def test_the_watch_asks_the_peers_and_keeps_the_last_answer_of_one_that_went_quiet() -> None:
    watch = LevelWatch("node1")

    async def answers(level):
        return {"url": "x", "level": level} if level else {"url": "x"}

    async def silent():
        raise ConnectionError("down")

    async def run() -> None:
        assert await watch.ask("node2", lambda: answers(2)) == 2
        assert await watch.ask("node3", lambda: answers(None)) == BASE_LEVEL
        assert await watch.ask("node2", silent) is None
    asyncio.run(run())
    assert watch.level("node2") == 2 and watch.level("node3") == BASE_LEVEL
