"""Property tests: ``build_table`` invariants on random small topologies and random changes.

Small P keeps each example fast; the invariants do not depend on P.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buckets.placement import DiskSpec, PartitionTable, Topology, build_table, moved_slots, target_loads

WEIGHTS = st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0])


@st.composite
def topologies(draw: st.DrawFn) -> tuple[Topology, int]:
    disks = []
    for node in range(draw(st.integers(1, 5))):
        for disk in range(draw(st.integers(1, 4))):
            disks.append(DiskSpec(f"n{node}-d{disk}", f"n{node}", draw(WEIGHTS)))
    partitions = draw(st.sampled_from([64, 128, 256]))
    # Up to one more slot than disks: the too-few-disks case must work too.
    set_size = draw(st.integers(1, min(8, len(disks) + 1)))
    return Topology(1, tuple(disks), partitions), set_size


@st.composite
def changes(draw: st.DrawFn, topology: Topology) -> Topology:
    disks = list(topology.disks)
    nodes = sorted({d.node_id for d in disks})
    kind = draw(st.sampled_from(["add disk", "add node", "remove disk", "remove node", "reweight"]))
    if kind == "add disk":
        node = draw(st.sampled_from(nodes))
        disks.append(DiskSpec(f"{node}-new", node, draw(WEIGHTS)))
    elif kind == "add node":
        disks += [DiskSpec(f"new-d{i}", "new", draw(WEIGHTS)) for i in range(draw(st.integers(1, 4)))]
    elif kind == "remove disk" and len(disks) > 1:
        disks.pop(draw(st.integers(0, len(disks) - 1)))
    elif kind == "remove node" and len(nodes) > 1:
        gone = draw(st.sampled_from(nodes))
        disks = [d for d in disks if d.node_id != gone]
    else:
        i = draw(st.integers(0, len(disks) - 1))
        disks[i] = DiskSpec(disks[i].disk_id, disks[i].node_id, draw(WEIGHTS))
    return Topology(topology.generation + 1, tuple(disks), topology.partitions)


def node_limit(topology: Topology, set_size: int) -> int:
    """Smallest per-node count that can still fill a partition (independent of builder)."""
    per_disk = -(-set_size // len(topology.disks))
    capacity = [n * per_disk for n in Counter(d.node_id for d in topology.disks).values()]
    return next(level for level in range(1, set_size + 1) if sum(min(c, level) for c in capacity) >= set_size)


def check_invariants(table: PartitionTable, topology: Topology, set_size: int) -> None:
    node_of = {d.disk_id: d.node_id for d in topology.disks}
    per_disk = -(-set_size // len(node_of))
    limit = node_limit(topology, set_size)
    assert table.partitions == topology.partitions and table.set_size == set_size
    for p in range(table.partitions):
        row = table.slots(p)
        assert len(row) == set_size and all(disk in node_of for disk in row), row  # every slot filled
        assert max(Counter(row).values()) <= per_disk, row  # distinct disks when there are enough
        assert max(Counter(node_of[d] for d in row).values()) <= limit, row  # distinct nodes first

    targets = target_loads(topology, set_size)
    slots = table.partitions * set_size
    assert sum(targets.values()) == slots
    assert all(t <= table.partitions * per_disk for t in targets.values())
    loads = table.load()
    if all(t < table.partitions * per_disk for t in targets.values()):
        for disk, target in targets.items():
            assert abs(loads.get(disk, 0) - target) <= 0.1 * target + 1, (disk, loads.get(disk), target)
    else:
        # A disk that must sit in every partition makes the assignment rigid; greedy
        # placement may then miss a few slots.
        assert sum(abs(loads.get(d, 0) - t) for d, t in targets.items()) <= 0.05 * slots


def uniform_nodes(topology: Topology) -> bool:
    by_node: dict[str, list[float]] = {}
    for d in topology.disks:
        by_node.setdefault(d.node_id, []).append(d.weight)
    return len({tuple(sorted(w)) for w in by_node.values()}) == 1


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(topologies())
def test_fresh_table_invariants(case: tuple[Topology, int]) -> None:
    topology, set_size = case
    table = build_table(topology, set_size)
    check_invariants(table, topology, set_size)
    assert build_table(topology, set_size).to_bytes() == table.to_bytes()
    assert PartitionTable.from_bytes(table.to_bytes()) == table
    # Rebuilding an unchanged topology from its own table moves nothing.
    assert moved_slots(table, build_table(topology, set_size, previous=table)) == 0


@PROPERTY_SETTINGS
@given(topologies())
def test_targets_are_weight_shares_when_nodes_are_alike(case: tuple[Topology, int]) -> None:
    topology, set_size = case
    total_weight = sum(d.weight for d in topology.disks)
    shares = {d.disk_id: topology.partitions * set_size * d.weight / total_weight for d in topology.disks}
    per_disk = -(-set_size // len(topology.disks))
    if uniform_nodes(topology) and max(shares.values()) <= topology.partitions * per_disk:
        targets = target_loads(topology, set_size)
        # Rounded twice (per node, then per disk of the node): under 2 slots off.
        assert all(abs(targets[d] - s) < 2 for d, s in shares.items()), (targets, shares)


@PROPERTY_SETTINGS
@given(st.data())
def test_changed_topology_invariants_and_movement(data: st.DataObject) -> None:
    topology, set_size = data.draw(topologies())
    old = build_table(topology, set_size)
    changed = data.draw(changes(topology))
    new = build_table(changed, set_size, previous=old)
    check_invariants(new, changed, set_size)
    # Every move must be paid for by some disk gaining slots; at worst a move takes two
    # steps (a disk at quota hands over a slot and refills from an over-quota disk).
    old_loads, new_loads = old.load(), new.load()
    gained = sum(max(0, n - old_loads.get(d, 0)) for d, n in new_loads.items())
    assert moved_slots(old, new) <= 2 * gained
    assert moved_slots(new, build_table(changed, set_size, previous=new)) == 0
