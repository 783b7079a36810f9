"""The refusals of add-node and remove-node, over a real single-node control plane (real
pysyncobj): nothing changes when a change is refused; and the membership file a restart
reads its peers from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from buckets import errors
from buckets.cluster import membership
from buckets.cluster.control import ControlConfig, ControlPlane, NoSuchNode
from buckets.cluster.control_records import DiskRecord, Layout, NodeRecord
from buckets.cluster.migration import MigrationInProgress
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


async def test_a_change_while_a_migration_runs_is_refused_and_changes_nothing(node) -> None:
    await node.control.apply("put_job", key="migration", value={"state": "running", "from_gen": 1, "to_gen": 2},
                             expected_version=0)
    with pytest.raises(MigrationInProgress) as caught:
        await membership.add_node(node, "http://127.0.0.9:9000", ["/d1"])
    assert caught.value.status == 409 and "migration-status" in caught.value.message
    with pytest.raises(MigrationInProgress):
        await membership.remove_node(node, node.spec.me.url)
    assert node.control.snapshot.generation == 1
    assert [n.state for n in node.control.snapshot.topology.nodes] == ["active"]


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
