"""The refusals of add-node and remove-node, over a real single-node control plane (real
pysyncobj): nothing changes when a change is refused; a change asked for while a migration
runs is queued and applied once it is done; and the membership file a restart reads its
peers from."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from buckets import errors
from buckets.cluster import membership
from buckets.cluster.control import ControlConfig, ControlPlane, NoSuchNode
from buckets.cluster.control_records import DiskRecord, Layout, NodeRecord
from buckets.cluster.rpcclient import close_shared_session
from serverproc import free_port

LAYOUT = Layout(2, 2, 1 << 20, 64)


def node_record(host: str, port: int, disks: int = 4) -> NodeRecord:
    url = f"http://{host}:{port}"
    return NodeRecord(url, url, f"{host}:{port + 1000}", "active",
                      tuple(DiskRecord(f"{host}-d{i}", f"/srv/{host}/d{i}") for i in range(disks)))


@pytest.fixture
async def node(tmp_path: Path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    plane = ControlPlane(ControlConfig(address=address, members=(address,), secret="membership-rules-secret",
                                       directory=str(tmp_path / "control"), election_timeout=(0.35, 0.5)))
    await plane.start()
    await plane.wait_leader(timeout=30)
    me = node_record("127.0.0.1", 9000)
    await plane.bootstrap("deployment-1", LAYOUT, [me])
    try:
        yield SimpleNamespace(control=plane, clients={}, secret=b"membership-rules-secret",
                              spec=SimpleNamespace(me=SimpleNamespace(url=me.endpoint)))
    finally:
        await plane.close()
        await close_shared_session()


async def test_a_change_while_a_migration_runs_is_queued_then_applied_in_order(node) -> None:
    control = node.control
    other, third = node_record("127.0.0.8", 9000), node_record("127.0.0.9", 9000)
    await control.propose_generation([*control.snapshot.topology.nodes, other, third], timeout=10)
    assert control.snapshot.generation == 2
    await control.apply("put_job", key="migration", value={"state": "running", "from_gen": 1, "to_gen": 2},
                        expected_version=0)
    # Checked at once (a bad change is refused, not queued), then queued: nothing changes yet.
    with pytest.raises(NoSuchNode):
        await membership.remove_node(node, "http://127.0.0.7:9000")
    first = await membership.remove_node(node, other.endpoint)
    assert first["queued"] is True and first["position"] == 1 and "queued" in first["message"]
    again = await membership.remove_node(node, other.endpoint)  # asked twice: queued once
    assert again["position"] == 1
    second = await membership.remove_node(node, third.endpoint, True)
    assert second["position"] == 2
    assert [(c["op"], c["endpoint"], c["force"]) for c in membership.queued_changes(control.snapshot)] == [
        ("remove-node", other.endpoint, False), ("remove-node", third.endpoint, True)]
    await membership.run_queued(node)  # the migration still runs: nothing is applied
    assert control.snapshot.generation == 2 and len(membership.queued_changes(control.snapshot)) == 2
    assert [n.state for n in control.snapshot.topology.nodes] == ["active"] * 3

    # The migration is done: the first change is applied (its own generation and migration).
    record = control.snapshot.jobs["migration"]
    await control.apply("put_job", key="migration", value=dict(record.value, state="done"),
                        expected_version=record.version)
    await membership.run_queued(node)
    snapshot = control.snapshot
    assert snapshot.generation == 3
    assert [n.state for n in snapshot.topology.nodes] == ["active", "draining", "active"]
    assert snapshot.jobs["migration"].value["to_gen"] == 3 and snapshot.jobs["migration"].value["state"] == "running"
    assert [c["endpoint"] for c in membership.queued_changes(snapshot)] == [third.endpoint]
    await membership.run_queued(node)  # the second waits for the first's migration
    assert control.snapshot.generation == 3


async def test_a_generation_committed_without_its_migration_gets_one(node) -> None:
    """An add-node whose proposer stopped between its two commits (the generation, then its
    migration's job) left the new generation without a job: the leader starts it once the
    generation has gone the grace period without one, from the last job's generation."""
    control = node.control
    other = node_record("127.0.0.8", 9000)
    await control.propose_generation([*control.snapshot.topology.nodes, other], timeout=10)
    assert control.snapshot.generation == 2 and "migration" not in control.snapshot.jobs  # the proposer stopped here
    assert await membership.start_missed_migration(node, grace=2.0) is None  # just committed: its proposer may start it
    assert "migration" not in control.snapshot.jobs
    await asyncio.sleep(0.3)
    started = await membership.start_missed_migration(node, grace=0.2)
    assert started is not None and (started["from_gen"], started["to_gen"], started["state"]) == (1, 2, "running")
    job = control.snapshot.jobs["migration"]
    assert job.value["to_gen"] == 2
    assert await membership.start_missed_migration(node, grace=0.0) is None  # it runs: nothing more
    # Done, then a generation committed and its job lost again: started from the done job's generation.
    await control.apply("put_job", key="migration", value=dict(job.value, state="done"), expected_version=job.version)
    third = node_record("127.0.0.9", 9000)
    await control.propose_generation([*control.snapshot.topology.nodes, third], timeout=10)
    assert control.snapshot.generation == 3
    started = await membership.start_missed_migration(node, grace=0.0)
    assert (started["from_gen"], started["to_gen"]) == (2, 3)
    # A generation whose proposer started its job (the normal case) is left alone.
    assert await membership.start_missed_migration(node, grace=0.0) is None
    assert control.snapshot.jobs["migration"].value["to_gen"] == 3


async def test_bad_changes_are_refused_with_typed_errors(node) -> None:
    with pytest.raises(NoSuchNode):
        await membership.remove_node(node, "http://127.0.0.7:9000")
    with pytest.raises(errors.InvalidArgument):  # the last node: too few disks would remain
        await membership.remove_node(node, node.spec.me.url)
    with pytest.raises(errors.InvalidArgument):
        await membership.add_node(node, "ftp://127.0.0.9:9000")
    with pytest.raises(errors.InvalidArgument):
        await membership.add_node(node, "http://127.0.0.9:9000", "not a list")
    # A node that is not running: a retryable 503 naming what to do.
    with pytest.raises(membership.NodeUnreachable) as caught:
        await membership.add_node(node, f"http://127.0.0.9:{free_port()}")
    assert caught.value.status == 503 and "--join" in caught.value.message
    assert node.control.snapshot.generation == 1
    assert len(node.control.status().members) == 1
    # add-node of a node that is active already: nothing to do.
    again = await membership.add_node(node, node.spec.me.url)
    assert again["added"] is False and again["generation"] == 1


async def test_the_membership_file_round_trips(node, tmp_path: Path) -> None:
    disk = tmp_path / "disk1"
    assert membership.read_members(str(disk)) is None
    membership.write_members(str(disk), node.control.snapshot.topology)
    known = membership.read_members(str(disk))
    assert known["deployment_id"] == "deployment-1" and known["generation"] == 1
    assert known["nodes"] == node.control.snapshot.topology.nodes
    Path(membership.members_path(str(disk))).write_text("{not json")
    with pytest.raises(errors.FormatError):
        membership.read_members(str(disk))
