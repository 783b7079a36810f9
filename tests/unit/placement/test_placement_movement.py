"""Movement, balance and failure-domain tables for ``build_table`` at full size (P = 4096).

Movement is measured the way a migration pays for it: 100k random keys hashed with
``partition_of``, counting (key, shard) pairs whose disk changed between generations.
Run with ``-s`` to see the expected-vs-measured table.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from functools import cache

import pytest

from buckets.placement import (
    DEFAULT_PARTITIONS,
    DiskSpec,
    PartitionTable,
    Topology,
    build_table,
    default_set_size,
    moved_slots,
    moved_slots_per_partition,
    partition_of,
    target_loads,
)

KEYS = 100_000
P = DEFAULT_PARTITIONS


def one_node(n_disks: int, weights: list[float] | None = None, generation: int = 1) -> Topology:
    weights = weights or [1.0] * n_disks
    return Topology(generation, tuple(DiskSpec(f"d{i:02d}", "node0", weights[i]) for i in range(n_disks)))


def nodes(n_nodes: int, disks_per_node: int = 4, generation: int = 1) -> Topology:
    return Topology(
        generation,
        tuple(
            DiskSpec(f"n{j:02d}-d{i}", f"n{j:02d}")
            for j in range(n_nodes)
            for i in range(disks_per_node)
        ),
    )


def without(topology: Topology, *, disk: str | None = None, node: str | None = None) -> Topology:
    kept = tuple(d for d in topology.disks if d.disk_id != disk and d.node_id != node)
    return Topology(topology.generation + 1, kept)


@cache
def key_partitions() -> tuple[int, ...]:
    rng = random.Random(20240501)
    return tuple(
        partition_of(f"bucket-{rng.randrange(8)}", f"obj/{rng.getrandbits(64):016x}", P)
        for _ in range(KEYS)
    )


def moved_shard_fraction(old: PartitionTable, new: PartitionTable) -> float:
    per_partition = moved_slots_per_partition(old, new)
    moved = sum(per_partition[p] for p in key_partitions())
    return moved / (KEYS * old.set_size)


def weight_shares(topology: Topology, set_size: int) -> dict[str, float]:
    total_weight = sum(d.weight for d in topology.disks)
    return {d.disk_id: topology.partitions * set_size * d.weight / total_weight for d in topology.disks}


def assert_loads_near(table: PartitionTable, expected: dict[str, float], tolerance: float = 0.10) -> None:
    loads = table.load()
    assert set(loads) <= set(expected)
    for disk_id, share in expected.items():
        assert abs(loads.get(disk_id, 0) - share) <= tolerance * share, (
            f"{disk_id}: {loads.get(disk_id, 0)} slots, expected {share:.0f}"
        )


def assert_loads_match_weights(table: PartitionTable, topology: Topology) -> None:
    assert_loads_near(table, weight_shares(topology, table.set_size))


def assert_spread(table: PartitionTable, topology: Topology) -> None:
    node_of = {d.disk_id: d.node_id for d in topology.disks}
    distinct_disks = len(topology.disks) >= table.set_size
    distinct_nodes = len(set(node_of.values())) >= table.set_size
    for p in range(table.partitions):
        row = table.slots(p)
        assert all(disk in node_of for disk in row), (p, row)
        if distinct_disks:
            assert len(set(row)) == table.set_size, f"partition {p} repeats a disk: {row}"
        if distinct_nodes:
            assert len({node_of[d] for d in row}) == table.set_size, f"partition {p} repeats a node: {row}"


# --- growth: adding one disk or one node -------------------------------------------------------
@dataclass(frozen=True)
class Growth:
    name: str
    before: Topology
    after: Topology
    set_size: int
    units_before: int  # N, counted in what was added (disks or nodes)


GROWTH = [
    *(
        Growth(f"+1 disk to {n} disks", one_node(n), one_node(n + 1, generation=2), default_set_size(n), n)
        for n in (4, 8, 16, 32)
    ),
    *(
        Growth(f"+1 node to {n} nodes x4", nodes(n), nodes(n + 1, generation=2), default_set_size(4 * n), n)
        for n in (2, 4, 8)
    ),
]


@dataclass(frozen=True)
class GrowthResult:
    case: Growth
    old: PartitionTable
    new: PartitionTable
    measured: float

    @property
    def expected(self) -> float:
        return 1 / (self.case.units_before + 1)


@cache
def grow(case: Growth) -> GrowthResult:
    old = build_table(case.before, case.set_size)
    new = build_table(case.after, case.set_size, previous=old)
    return GrowthResult(case, old, new, moved_shard_fraction(old, new))


@pytest.mark.parametrize("case", GROWTH, ids=lambda c: c.name)
def test_growth_moves_close_to_the_minimum(case: Growth) -> None:
    result = grow(case)
    # Upper bound: at most 10% over the minimum. Lower bound: the newcomer got its share.
    assert result.measured <= 1.1 * result.expected, (result.measured, result.expected)
    assert result.measured >= 0.9 * result.expected, (result.measured, result.expected)


@pytest.mark.parametrize("case", GROWTH, ids=lambda c: c.name)
def test_growth_keeps_balance_and_spread(case: Growth) -> None:
    result = grow(case)
    for table, topology in ((result.old, case.before), (result.new, case.after)):
        assert_loads_match_weights(table, topology)
        assert_spread(table, topology)


# --- shrinking: removing one disk or one node --------------------------------------------------
@dataclass(frozen=True)
class Shrink:
    name: str
    before: Topology
    set_size: int
    disk: str | None = None
    node: str | None = None

    @property
    def after(self) -> Topology:
        return without(self.before, disk=self.disk, node=self.node)


SHRINK = [
    Shrink("-1 disk of 8 (set 4)", one_node(8), 4, disk="d03"),
    Shrink("-1 disk of 17 (set 16)", one_node(17), 16, disk="d05"),
    Shrink("-1 disk of 64 (set 16)", one_node(64), 16, disk="d40"),
    Shrink("-1 disk of 4 nodes x4 (set 8)", nodes(4), 8, disk="n01-d2"),
    Shrink("-1 node of 5 nodes x4 (set 16)", nodes(5), 16, node="n03"),
]


@dataclass(frozen=True)
class ShrinkResult:
    case: Shrink
    old: PartitionTable
    new: PartitionTable
    measured: float
    expected: float  # fraction of shards that lived on what was removed
    moved_elsewhere: int  # slots that moved although their disk stayed
    removed_slots: int


@cache
def shrink(case: Shrink) -> ShrinkResult:
    old = build_table(case.before, case.set_size)
    new = build_table(case.after, case.set_size, previous=old)
    gone = {d.disk_id for d in case.before.disks} - {d.disk_id for d in case.after.disks}
    on_gone = [sum(d in gone for d in old.slots(p)) for p in range(P)]
    expected = sum(on_gone[p] for p in key_partitions()) / (KEYS * case.set_size)
    removed_slots = sum(on_gone)
    elsewhere = sum(
        a != b and a not in gone
        for p in range(P)
        for a, b in zip(old.slots(p), new.slots(p))
    )
    return ShrinkResult(case, old, new, moved_shard_fraction(old, new), expected, elsewhere, removed_slots)


@pytest.mark.parametrize("case", SHRINK, ids=lambda c: c.name)
def test_shrink_moves_only_what_was_on_the_removed_disks(case: Shrink) -> None:
    result = shrink(case)
    assert moved_slots(result.old, result.new) >= result.removed_slots  # all of it moved
    assert result.moved_elsewhere <= 0.1 * result.removed_slots, result.moved_elsewhere
    assert result.measured <= 1.1 * result.expected
    # Not plain weight shares: once the node spread rule binds (e.g. 4 nodes, 8 slots:
    # two per node), a node that lost a disk spreads the same share over fewer disks.
    assert_loads_near(result.new, target_loads(case.after, case.set_size))
    assert_spread(result.new, case.after)


def test_target_loads_are_weight_shares_until_the_spread_rule_binds() -> None:
    topology = one_node(8, [1, 1, 2, 2] * 2)
    quotas = target_loads(topology, 4)
    assert sum(quotas.values()) == P * 4
    shares = weight_shares(topology, 4)
    assert all(abs(quotas[disk_id] - share) < 1 for disk_id, share in shares.items())
    # 4 nodes x 4 disks minus one disk, 8 slots: every node holds exactly 2 shards of each
    # partition, so the 3-disk node's disks hold 2P/3 each and the others P/2.
    quotas = target_loads(without(nodes(4), disk="n01-d2"), 8)
    assert sorted(q for d, q in quotas.items() if d.startswith("n01")) == [2730, 2731, 2731]
    assert {q for d, q in quotas.items() if not d.startswith("n01")} == {P // 2}


def test_print_movement_table() -> None:
    lines = [
        "",
        "moved = fraction of (key, shard) pairs whose disk changed, 100k keys; "
        "load = slots per disk / target_loads (= weight share unless the node spread caps it)",
        f"{'change':34} {'set':>3} {'expected':>9} {'measured':>9} {'ratio':>6} {'load min/max':>17}",
    ]

    def load_span(table: PartitionTable, topology: Topology) -> str:
        loads = table.load()
        targets = target_loads(topology, table.set_size)
        ratios = [loads.get(disk_id, 0) / target for disk_id, target in targets.items()]
        return f"{min(ratios):.4f} / {max(ratios):.4f}"

    for case in GROWTH:
        r = grow(case)
        lines.append(
            f"{case.name:34} {case.set_size:>3} {r.expected:>9.4f} {r.measured:>9.4f} "
            f"{r.measured / r.expected:>6.3f} {load_span(r.new, case.after):>17}"
        )
    for case in SHRINK:
        s = shrink(case)
        lines.append(
            f"{case.name:34} {case.set_size:>3} {s.expected:>9.4f} {s.measured:>9.4f} "
            f"{s.measured / s.expected:>6.3f} {load_span(s.new, case.after):>17}"
        )
    print("\n".join(lines))
    assert all(grow(c).measured <= 1.1 * grow(c).expected for c in GROWTH)


# --- balance by weight --------------------------------------------------------------------------
WEIGHTED = [
    pytest.param(one_node(64), 16, id="64 equal disks, set 16"),
    pytest.param(one_node(4, [1, 1, 2, 2]), 2, id="weights 1,1,2,2 set 2"),
    pytest.param(one_node(8, [1, 1, 2, 2] * 2), 4, id="weights (1,1,2,2)x2 set 4"),
    pytest.param(one_node(8, [1, 2, 3, 4, 5, 6, 7, 8]), 4, id="weights 1..8 set 4"),
    pytest.param(
        Topology(1, tuple(DiskSpec(f"n{j}-d{i}", f"n{j}", [1, 1, 2, 2][i]) for j in range(4) for i in range(4))),
        8,
        id="4 nodes of weights 1,1,2,2, set 8",
    ),
]


@pytest.mark.parametrize(("topology", "set_size"), WEIGHTED)
def test_load_follows_weight(topology: Topology, set_size: int) -> None:
    table = build_table(topology, set_size)
    assert_loads_match_weights(table, topology)
    assert_spread(table, topology)


def test_weight_share_above_one_slot_per_partition_is_capped() -> None:
    # Weight 2 of 6 with 4 slots per partition would want 1.33 slots per partition; a disk
    # holds at most one, so every disk is in every partition.
    table = build_table(one_node(4, [1, 1, 2, 2]), 4)
    assert table.load() == {"d00": P, "d01": P, "d02": P, "d03": P}


# --- failure domains ----------------------------------------------------------------------------
def test_enough_nodes_means_one_shard_per_node() -> None:
    topology = nodes(16, disks_per_node=2)
    table = build_table(topology, 16)
    assert_spread(table, topology)
    node_rows = [Counter(d.split("-")[0] for d in table.slots(p)) for p in range(P)]
    assert all(max(row.values()) == 1 for row in node_rows)


def test_fewer_nodes_than_slots_spread_evenly() -> None:
    table = build_table(nodes(3), 8)  # 3 nodes x 4 disks, 8 slots: 3 + 3 + 2
    for p in range(P):
        assert sorted(Counter(d.split("-")[0] for d in table.slots(p)).values()) == [2, 3, 3]


def test_growing_to_set_size_nodes_separates_every_partition() -> None:
    old = build_table(nodes(3, disks_per_node=2), 4)  # 3 nodes: some node holds 2 shards
    assert any(max(Counter(d.split("-")[0] for d in old.slots(p)).values()) == 2 for p in range(P))
    topology = nodes(4, disks_per_node=2, generation=2)
    new = build_table(topology, 4, previous=old)
    assert_spread(new, topology)  # 4 nodes >= 4 slots: distinct nodes everywhere


def test_fewer_disks_than_slots_fills_every_slot_evenly() -> None:
    topology = one_node(3)
    table = build_table(topology, 4)
    for p in range(P):
        row = table.slots(p)
        assert len(row) == 4 and set(row) == {"d00", "d01", "d02"}  # one disk twice, none thrice
    loads = table.load()
    assert max(loads.values()) - min(loads.values()) <= 1
