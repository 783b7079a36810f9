"""The control plane's state machine, in process: validation, determinism, idempotent retries,
snapshots, and the topology generations with their partition tables."""

from __future__ import annotations

import os
import zlib
from typing import Any

import msgpack
import pytest

from buckets.cluster.control import ControlConfig, ControlPlaneError, control_address, derive_password, plan_table
from buckets.cluster.control_records import DiskRecord, Layout, NodeRecord, compress_table, parse_table
from buckets.cluster.control_state import RECENT_RESULTS, ControlMachine, encode_command
from buckets.placement import PartitionTable, build_table

LAYOUT = Layout(k=2, m=2, block_size=1 << 20, partitions=64)


def node(i: int, disks: int = 2, state: str = "active") -> NodeRecord:
    return NodeRecord(f"node{i}", f"http://127.0.0.{i}:9000", f"127.0.0.{i}:10000", state,
                      tuple(DiskRecord(f"n{i}d{d}", f"/srv/n{i}/d{d}") for d in range(disks)))


NODES = [node(1), node(2), node(3), node(4)]


class Driver:
    """Feeds commands to a machine the way the Raft layer does (encoded bytes in log order)."""

    def __init__(self, machine: ControlMachine | None = None) -> None:
        self.machine = machine or ControlMachine()
        self.ts = 1_700_000_000.0

    def payload(self, op: str, rid: bytes | None = None, **args: Any) -> bytes:
        self.ts += 1
        return encode_command(op, args, rid or os.urandom(16), self.ts)

    def __call__(self, op: str, rid: bytes | None = None, **args: Any) -> tuple:
        return self.machine.apply(self.payload(op, rid, **args))

    def ok(self, op: str, **args: Any) -> Any:
        result = self(op, **args)
        assert result[0] == "ok", result
        return result[1]

    def refused(self, op: str, code: str, **args: Any) -> str:
        before = self.machine.snapshot
        result = self(op, **args)
        assert result[0] == "err" and result[1] == code, result
        after = self.machine.snapshot
        # A refused command changes nothing but the applied count.
        assert (after.topology, after.users, after.buckets, after.settings, after.jobs, after.level) == \
            (before.topology, before.users, before.buckets, before.settings, before.jobs, before.level)
        assert after.applied == before.applied + 1
        return result[2]


@pytest.fixture
def drive() -> Driver:
    return Driver()


def bootstrap(drive: Driver, nodes: list[NodeRecord] = NODES, deployment: str = "dep-1") -> dict:
    table = plan_table(LAYOUT, nodes, 1)
    return drive.ok("init_cluster", deployment_id=deployment, layout=LAYOUT.to_wire(),
                    nodes=[n.to_wire() for n in nodes], table=table)


# --- buckets --------------------------------------------------------------------------------------
def test_bucket_lifecycle_and_refusals(drive: Driver) -> None:
    created = drive.ok("create_bucket", name="photos", owner="alice", settings={"versioning": "Enabled"})
    assert created["name"] == "photos" and created["owner"] == "alice" and created["created"] == drive.ts
    record = drive.machine.snapshot.buckets["photos"]
    assert record.settings == {"versioning": "Enabled"} and record.created == drive.ts

    drive.refused("create_bucket", "BucketAlreadyOwnedByYou", name="photos", owner="alice")
    drive.refused("create_bucket", "BucketAlreadyExists", name="photos", owner="bob")
    drive.refused("create_bucket", "InvalidBucketName", name="Not_A_Bucket")
    drive.refused("create_bucket", "InvalidBucketName", name="ab")
    drive.refused("create_bucket", "InvalidArgument", name="other", settings={"bad": {1: "integer key"}})
    drive.refused("create_bucket", "InvalidArgument", name="other", settings=["not", "a", "map"])

    updated = drive.ok("update_bucket", name="photos", set={"policy": {"Version": "2012-10-17"}}, unset=["versioning"])
    assert updated["settings"] == {"policy": {"Version": "2012-10-17"}}
    assert record.settings == {"versioning": "Enabled"}, "records read earlier are values: never changed in place"
    drive.refused("update_bucket", "NoSuchBucket", name="missing", set={})
    # ``expect``: a compare-and-set on the settings a check read (None: absent)
    drive.ok("update_bucket", name="photos", set={"lock": {"enabled": True}}, unset=[],
             expect={"versioning": None, "policy": {"Version": "2012-10-17"}})
    drive.refused("update_bucket", "BucketChanged", name="photos", set={"versioning": "Suspended"},
                  expect={"lock": None})
    assert drive.machine.snapshot.buckets["photos"].settings.get("versioning") is None
    drive.refused("update_bucket", "InvalidArgument", name="photos", set={}, expect=["lock"])

    drive.ok("delete_bucket", name="photos")
    assert "photos" not in drive.machine.snapshot.buckets
    drive.refused("delete_bucket", "NoSuchBucket", name="photos")

    # ``drop``: the index replicas that must drop the bucket's index before a bucket of that
    # name can be created again (one down during the deletion kept the old entries)
    drive.ok("create_bucket", name="photos")
    drive.refused("delete_bucket", "InvalidArgument", name="photos", drop="n1")
    drive.ok("delete_bucket", name="photos", drop=["n2", "n1"])
    job = drive.machine.snapshot.jobs["index-drop/photos"]
    assert job.value == {"nodes": ["n1", "n2"]}
    drive.refused("create_bucket", "OperationAborted", name="photos")
    drive.ok("put_job", key="index-drop/photos", value={"nodes": ["n2"]}, expected_version=job.version)
    drive.refused("create_bucket", "OperationAborted", name="photos")
    drive.ok("delete_job", key="index-drop/photos")
    drive.ok("create_bucket", name="photos")
    # ``before``: the deletion applies only if it was proposed by then (its mark's end, less a
    # margin); the command's own time decides, the same on every node
    drive.refused("delete_bucket", "InvalidArgument", name="photos", before="soon")
    drive.refused("delete_bucket", "InvalidArgument", name="photos", before=True)
    drive.refused("delete_bucket", "OperationAborted", name="photos", before=drive.ts)  # proposed at ts + 1
    assert "photos" in drive.machine.snapshot.buckets
    drive.ok("delete_bucket", name="photos", before=drive.ts + 1)
    assert "photos" not in drive.machine.snapshot.buckets
    drive.ok("create_bucket", name="photos")


def test_snapshots_are_immutable_values(drive: Driver) -> None:
    drive.ok("create_bucket", name="first")
    before = drive.machine.snapshot
    drive.ok("create_bucket", name="second")
    assert set(before.buckets) == {"first"}
    assert set(drive.machine.snapshot.buckets) == {"first", "second"}
    with pytest.raises(TypeError):
        before.buckets["x"] = None  # type: ignore[index]


# --- users ----------------------------------------------------------------------------------------
def test_users(drive: Driver) -> None:
    sealed = os.urandom(44)
    assert drive.ok("put_user", access_key="alice", secret=sealed) == {"created": True}
    first = drive.machine.snapshot.users["alice"]
    assert first.secret == sealed and first.enabled and first.policy == "readwrite"
    drive.refused("put_user", "UserAlreadyExists", access_key="alice", secret=sealed, create_only=True)
    assert drive.ok("put_user", access_key="alice", secret=b"resealed", policy="readonly") == {"created": False}
    again = drive.machine.snapshot.users["alice"]
    assert again.secret == b"resealed" and again.policy == "readonly" and again.created == first.created

    drive.ok("set_user_status", access_key="alice", status="disabled")
    assert not drive.machine.snapshot.users["alice"].enabled
    drive.ok("set_user_policy", access_key="alice", policy="readwrite")
    drive.refused("set_user_status", "InvalidArgument", access_key="alice", status="maybe")
    drive.refused("set_user_status", "NoSuchUser", access_key="nobody", status="enabled")
    drive.refused("put_user", "InvalidArgument", access_key="a", secret=sealed)
    drive.refused("put_user", "InvalidArgument", access_key="has space", secret=sealed)
    drive.refused("put_user", "InvalidArgument", access_key="bob", secret="clear text is not sealed")
    drive.refused("put_user", "InvalidArgument", access_key="bob", secret=b"x" * 2000)
    drive.ok("delete_user", access_key="alice")
    drive.refused("delete_user", "NoSuchUser", access_key="alice")


def test_imported_records_keep_their_creation_time(drive: Driver) -> None:
    """A single node becoming a cluster imports its buckets and users with their own times;
    a time in the future or not a number is refused (the commit time is the bound)."""
    drive.ok("create_bucket", name="imported", owner="", settings={}, created=1_600_000_000.5)
    assert drive.machine.snapshot.buckets["imported"].created == 1_600_000_000.5
    drive.ok("put_user", access_key="carol", secret=b"sealed", created=1_600_000_001)
    assert drive.machine.snapshot.users["carol"].created == 1_600_000_001
    for bad in (drive.ts + 10 * 86400, -1, "yesterday", True, float("nan")):
        drive.refused("create_bucket", "InvalidArgument", name="other", created=bad)
        drive.refused("put_user", "InvalidArgument", access_key="dave", secret=b"sealed", created=bad)
    drive.ok("create_bucket", name="plain")
    assert drive.machine.snapshot.buckets["plain"].created == drive.ts  # the commit time


# --- settings and jobs ----------------------------------------------------------------------------
def test_settings_and_jobs(drive: Driver) -> None:
    drive.ok("set_settings", set={"migration.throttle_bytes": 50 << 20, "heal.interval": "1h"})
    drive.ok("set_settings", unset=["heal.interval"])
    assert dict(drive.machine.snapshot.settings) == {"migration.throttle_bytes": 50 << 20}
    drive.refused("set_settings", "InvalidArgument", set={"": 1})
    drive.refused("set_settings", "InvalidArgument", unset="heal.interval")

    assert drive.ok("put_job", key="migrate/g2/p17", value={"cursor": "a"}, expected_version=0) == {"version": 1}
    assert drive.ok("put_job", key="migrate/g2/p17", value={"cursor": "b"}, expected_version=1) == {"version": 2}
    drive.refused("put_job", "VersionConflict", key="migrate/g2/p17", value={"cursor": "c"}, expected_version=1)
    drive.refused("put_job", "VersionConflict", key="migrate/g2/p18", value={}, expected_version=3)
    assert drive.machine.snapshot.jobs["migrate/g2/p17"].value == {"cursor": "b"}
    drive.refused("delete_job", "VersionConflict", key="migrate/g2/p17", expected_version=1)
    drive.ok("delete_job", key="migrate/g2/p17", expected_version=2)
    drive.refused("delete_job", "NoSuchJob", key="migrate/g2/p17")


# --- idempotent retries ---------------------------------------------------------------------------
def test_a_retried_request_applies_once_and_answers_the_first_result(drive: Driver) -> None:
    payload = drive.payload("put_job", key="j", value=1)
    first = drive.machine.apply(payload)
    assert first == ("ok", {"version": 1})
    assert drive.machine.apply(payload) == first  # the same entry appended twice (leader change)
    assert drive.machine.snapshot.jobs["j"].version == 1

    create = drive.payload("create_bucket", name="once")
    assert drive.machine.apply(create)[0] == "ok"
    assert drive.machine.apply(create)[0] == "ok", "a retry of a successful create is not 'already exists'"


def test_remembered_results_are_bounded(drive: Driver) -> None:
    first = drive.payload("put_job", key="j", value=0)
    drive.machine.apply(first)
    for i in range(RECENT_RESULTS):
        drive("noop")
    # Forgotten: applying the old entry again is a new command (version 2).
    assert drive.machine.apply(first) == ("ok", {"version": 2})


# --- malformed commands ---------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [
    b"\xc1 not msgpack",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"v": 1, "op": "no_such_op", "args": {}, "rid": b"r", "ts": 1.0}),
    msgpack.packb({"v": 99, "op": "noop", "args": {}, "rid": b"r", "ts": 1.0}),
    msgpack.packb({"v": 1, "op": "noop", "args": [], "rid": b"r", "ts": 1.0}),
    msgpack.packb({"v": 1, "op": "noop", "args": {}, "rid": b"r", "ts": "yesterday"}),
    msgpack.packb({"v": 1, "op": "create_bucket", "args": {"name": 7}, "rid": b"r", "ts": 1.0}),
])
def test_malformed_commands_are_refused_the_same_way_everywhere(payload: bytes) -> None:
    results = []
    for _ in range(2):
        machine = ControlMachine()
        results.append(machine.apply(payload))
        assert machine.snapshot.applied == 1 and not machine.snapshot.buckets
    assert results[0] == results[1] and results[0][0] == "err" and results[0][1] in ("InvalidArgument",
                                                                                      "InvalidBucketName")


def test_oversized_commands_are_refused_before_they_are_proposed() -> None:
    from buckets.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        encode_command("set_settings", {"set": {"big": b"x" * (9 << 20)}}, b"r", 1.0)
    with pytest.raises(InvalidArgument):
        encode_command("set_settings", {"set": {"not plain": {1, 2}}}, b"r", 1.0)


# --- determinism and snapshots --------------------------------------------------------------------
def _history(drive: Driver) -> list[bytes]:
    return [
        drive.payload("put_user", access_key="alice", secret=b"sealed"),
        drive.payload("create_bucket", name="photos", owner="alice"),
        drive.payload("create_bucket", name="photos", owner="bob"),  # refused identically
        drive.payload("init_cluster", deployment_id="dep", layout=LAYOUT.to_wire(),
                      nodes=[n.to_wire() for n in NODES], table=plan_table(LAYOUT, NODES, 1)),
        drive.payload("put_job", key="k", value={"x": [1, 2.5, "s", None, True]}),
        drive.payload("set_settings", set={"a": 1}),
        drive.payload("delete_user", access_key="nobody"),
    ]


def test_same_log_same_state_same_results() -> None:
    log = _history(Driver())
    machines = [ControlMachine(), ControlMachine()]
    results = [[m.apply(entry) for entry in log] for m in machines]
    assert results[0] == results[1]
    dumps = [msgpack.packb(m.dump(), use_bin_type=True) for m in machines]
    assert dumps[0] == dumps[1]


def test_dump_and_load_round_trip_including_remembered_results() -> None:
    drive = Driver()
    log = _history(drive)
    for entry in log:
        drive.machine.apply(entry)
    restored = ControlMachine()
    restored.load(msgpack.unpackb(msgpack.packb(drive.machine.dump(), use_bin_type=True), raw=False,
                                  strict_map_key=False))
    assert restored.snapshot == drive.machine.snapshot
    assert restored.dump() == drive.machine.dump()
    # After a restore from a snapshot, a retried entry still answers its first result.
    assert restored.apply(log[1]) == drive.machine.apply(log[1]) == ("ok", restored.snapshot.buckets["photos"].to_wire())
    with pytest.raises(ValueError):
        ControlMachine().load({"format": 99})


# --- topology -------------------------------------------------------------------------------------
def test_bootstrap_first_wins_others_adopt(drive: Driver) -> None:
    assert bootstrap(drive, deployment="dep-a") == {"created": True, "deployment_id": "dep-a", "generation": 1}
    # Another node proposed the same cluster with its own fresh id: it adopts the winner's.
    assert bootstrap(drive, deployment="dep-b") == {"created": False, "deployment_id": "dep-a", "generation": 1}
    topology = drive.machine.snapshot.topology
    assert topology.deployment_id == "dep-a" and topology.generation == 1 and topology.layout == LAYOUT
    table = topology.partition_table()
    assert table.partitions == LAYOUT.partitions and table.set_size == LAYOUT.set_size
    # The stored inputs recompute the stored table exactly.
    assert build_table(topology.current.topology(LAYOUT.partitions), LAYOUT.set_size) == table
    # One shard per node: 4 nodes, set size 4.
    owner = {d.disk_id: n.node_id for n in NODES for d in n.disks}
    assert all(len({owner[d] for d in row}) == 4 for row in table.rows)

    msg = drive.refused("init_cluster", "ClusterMismatch", deployment_id="dep-a", layout=LAYOUT.to_wire(),
                        nodes=[n.to_wire() for n in NODES[:3]], table=plan_table(LAYOUT, NODES[:3], 1))
    assert "dep-a" in msg


def _init_args(table: Any, nodes: list[NodeRecord] = NODES, layout: Layout = LAYOUT) -> dict:
    return {"deployment_id": "dep", "layout": layout.to_wire(), "nodes": [n.to_wire() for n in nodes],
            "table": table}


def test_bootstrap_refuses_bad_tables_and_nodes(drive: Driver) -> None:
    good = plan_table(LAYOUT, NODES, 1)
    bad_tables = {
        "wrong generation": plan_table(LAYOUT, NODES, 2),
        "unknown disks": plan_table(LAYOUT, NODES + [node(5)], 1),
        "wrong shape": plan_table(Layout(2, 1, 1 << 20, 64), NODES, 1),
        "not zlib": b"garbage",
        "not a table": zlib.compress(b"garbage"),
        "zip bomb": zlib.compress(b"\0" * (17 << 20)),
        "truncated": good[:-10],
        "not bytes": "table",
    }
    for why, table in bad_tables.items():
        result = drive("init_cluster", **_init_args(table))
        assert result[:2] == ("err", "InvalidArgument"), (why, result)
    dup_disk = NodeRecord("node5", "http://127.0.0.5:9000", "127.0.0.5:10000", "active",
                          (DiskRecord("n1d0", "/srv/x"),))
    drive.refused("init_cluster", "InvalidArgument", **_init_args(good, NODES + [dup_disk]))
    drive.refused("init_cluster", "InvalidArgument", **_init_args(good, [NODES[0], NODES[0]]))
    drive.refused("init_cluster", "InvalidArgument", **_init_args(good, [node(1, state="draining")]))
    drive.refused("init_cluster", "InvalidArgument", **_init_args(good, []))
    bad_node = NODES[0].to_wire() | {"endpoint": "ftp://x"}
    drive.refused("init_cluster", "InvalidArgument", **(_init_args(good) | {"nodes": [bad_node]}))
    bad_layout = LAYOUT.to_wire() | {"m": 3, "k": 1}
    drive.refused("init_cluster", "InvalidArgument", **(_init_args(good) | {"layout": bad_layout}))
    assert drive.machine.snapshot.topology is None


def test_generations_move_little_and_keep_history(drive: Driver) -> None:
    bootstrap(drive)
    topology = drive.machine.snapshot.topology
    first = topology.partition_table()
    grown = NODES + [node(5, state="joining")]
    table2 = plan_table(LAYOUT, grown, 2, first)
    msg = drive.refused("propose_generation", "GenerationConflict", expected_generation=2,
                        nodes=[n.to_wire() for n in grown], table=table2)
    assert "current generation is 1" in msg
    assert drive.ok("propose_generation", expected_generation=1, nodes=[n.to_wire() for n in grown],
                    table=table2) == {"generation": 2}
    # A second proposal made against generation 1 loses: exactly one g+1.
    drive.refused("propose_generation", "GenerationConflict", expected_generation=1,
                  nodes=[n.to_wire() for n in grown], table=table2)

    topology = drive.machine.snapshot.topology
    assert [g.generation for g in topology.history] == [1, 2]
    second = topology.partition_table()
    assert topology.partition_table(1) == first  # older generations stay readable
    assert build_table(topology.current.topology(LAYOUT.partitions), LAYOUT.set_size, first) == second
    assert any("n5d0" in row or "n5d1" in row for row in second.rows)

    drive.ok("set_node_state", node_id="node5", state="active")
    assert topology.node("node5").state == "joining"  # the old snapshot is unchanged
    assert drive.machine.snapshot.topology.node("node5").state == "active"
    msg = drive.refused("set_node_state", "InvalidArgument", node_id="node5", state="draining")
    assert "propose a new generation" in msg
    drive.refused("set_node_state", "NoSuchNode", node_id="node9", state="active")

    # A disk cannot change owner between generations.
    moved = [NODES[0], NODES[1], NODES[2],
             NodeRecord("node4", "http://127.0.0.4:9000", "127.0.0.4:10000", "active",
                        (DiskRecord("n1d0", "/srv/n4/stolen"), DiskRecord("n4d1", "/srv/n4/d1")))]
    drive.refused("propose_generation", "InvalidArgument", expected_generation=2,
                  nodes=[n.to_wire() for n in moved], table=b"")

    drive.refused("retire_generation", "InvalidArgument", generation=2)
    drive.refused("retire_generation", "NoSuchGeneration", generation=7)
    drive.ok("retire_generation", generation=1)
    with pytest.raises(LookupError):
        drive.machine.snapshot.topology.partition_table(1)


def test_generation_changes_need_a_topology(drive: Driver) -> None:
    drive.refused("propose_generation", "ClusterNotInitialized", expected_generation=1, nodes=[], table=b"")
    drive.refused("set_node_state", "ClusterNotInitialized", node_id="node1", state="active")


def test_table_compression_round_trip() -> None:
    table = parse_table(plan_table(LAYOUT, NODES, 1))
    assert isinstance(table, PartitionTable)
    assert parse_table(compress_table(table)) == table
    assert len(compress_table(table)) < len(table.to_bytes())


# --- configuration helpers ------------------------------------------------------------------------
def test_control_address() -> None:
    assert control_address("http://127.0.0.2:9000") == "127.0.0.2:10000"
    assert control_address("https://node3.example:9000", 7000) == "node3.example:7000"
    for bad in (("http://h:65000", None), ("http://h:9000", 0), ("http://h:9000", 70000), ("http://[::1]:9000", None),
                ("h:9000", None)):
        with pytest.raises(ValueError):
            control_address(*bad)


def test_password_is_derived_from_the_secret() -> None:
    assert derive_password("s") == derive_password(b"s") != derive_password("t")
    assert "s" not in {derive_password("s")} and len(derive_password("s")) == 64
    with pytest.raises(ValueError):
        derive_password("")


def test_config_needs_this_node_among_the_members(tmp_path) -> None:
    with pytest.raises(ControlPlaneError, match="not among the members"):
        ControlConfig("127.0.0.1:1000", ("127.0.0.2:1000",), "s", str(tmp_path))
    with pytest.raises(ControlPlaneError, match="host:port"):
        ControlConfig("127.0.0.1", ("127.0.0.1",), "s", str(tmp_path))
    config = ControlConfig("127.0.0.1:1000", ("127.0.0.1:1000", "127.0.0.2:1000", "127.0.0.1:1000"), "s",
                           str(tmp_path))
    assert config.members == ("127.0.0.1:1000", "127.0.0.2:1000")
    assert "s'" not in repr(config), "the secret is not in the repr"
