"""How many node failures a cluster tolerates (``membership.tolerates``), as a membership
change's answer reports it before and after: by the node limit its partition table keeps,
the control plane's majority and the index quorum; checked against real tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from buckets.cluster import membership
from buckets.cluster.control_records import ACTIVE, DRAINING, REMOVED, DiskRecord, Layout, NodeRecord
from buckets.placement import DiskSpec, Topology, build_table


def _nodes(*disks: int) -> list[NodeRecord]:
    return [NodeRecord(f"n{i}", f"http://127.0.0.{i}:9000", f"127.0.0.{i}:10000", ACTIVE,
                       tuple(DiskRecord(f"n{i}-d{d}", f"/d{d}") for d in range(1, count + 1)))
            for i, count in enumerate(disks, start=1)]


def _layout(k: int, m: int) -> Layout:
    return Layout(k, m, 1 << 20, 64)


@pytest.mark.parametrize(("disks", "k", "m", "expected"), [
    ((4, 4, 4, 4), 12, 4, 1),
    ((4, 4, 4), 8, 4, 1),  # 4 shards on each node: m
    ((4, 4, 4, 4), 2, 2, 1),  # a cluster grown from one 4-disk node: one shard per node at 4 nodes
    ((4, 4, 4), 2, 2, 0),  # ... two on some node at 3: a write quorum of 3 is gone with it
    ((8, 4, 4, 4), 12, 4, 1),
    ((8, 4, 4), 12, 4, 0),  # the 8-disk node takes 8 of every object's 16 shards
    ((4, 2, 1), 3, 2, 1),
    ((4, 2, 1), 4, 3, 0),
    ((4, 4), 4, 4, 0),  # two nodes: no majority without either
    ((4,), 2, 2, 0),
])
def test_tolerates(disks: tuple[int, ...], k: int, m: int, expected: int) -> None:
    assert membership.tolerates(_nodes(*disks), _layout(k, m)) == expected


def test_removed_and_draining_nodes_and_disks_do_not_count() -> None:
    nodes = _nodes(8, 4, 4, 4)
    assert membership.tolerates(nodes, _layout(12, 4)) == 1
    for state in (REMOVED, DRAINING):
        gone = [replace(nodes[3], state=state) if n is nodes[3] else n for n in nodes]
        assert membership.tolerates(gone, _layout(12, 4)) == 0
    drained = replace(nodes[1], disks=tuple(replace(d, draining=True) if d.path == "/d4" else d
                                            for d in nodes[1].disks))
    assert membership.tolerates([nodes[0], drained, *nodes[2:]], _layout(12, 4)) == 0


@pytest.mark.parametrize(("disks", "k", "m"), [
    ((4, 4, 4, 4), 12, 4), ((8, 4, 4), 12, 4), ((4, 2, 1), 3, 2), ((4, 2, 1), 4, 3), ((4, 4, 4), 2, 2),
    ((5, 3, 2, 2), 6, 4), ((6, 6, 6), 8, 4), ((6, 6, 6), 12, 4),
])
def test_the_arithmetic_matches_the_tables_the_builder_makes(disks: tuple[int, ...], k: int, m: int) -> None:
    nodes = _nodes(*disks)
    specs = tuple(DiskSpec(d.disk_id, n.node_id) for n in nodes for d in n.disks)
    table = build_table(Topology(generation=1, disks=specs, partitions=128), k + m)
    worst = max(max(Counter(disk_id.split("-")[0] for disk_id in row).values()) for row in table.rows)
    assert membership.tolerates(nodes, _layout(k, m)) == membership.tolerated_failures(worst, k, m, len(nodes))


def test_a_change_that_lowers_it_is_refused_unless_accepted() -> None:
    from types import SimpleNamespace

    from buckets import errors

    nodes = _nodes(4, 4, 4, 4)  # grown from one 4-disk node: 2+2
    topology = SimpleNamespace(nodes=tuple(nodes), layout=_layout(2, 2))
    fourth_gone = [replace(n, state=REMOVED) if n is nodes[3] else n for n in nodes]
    with pytest.raises(membership.ToleranceWouldFall) as refused:
        membership._tolerance(topology, fourth_gone, "removing n4", False)
    assert refused.value.status == 409 and "tolerates 0 node failure(s), not 1" in str(refused.value)
    assert membership._tolerance(topology, fourth_gone, "removing n4", True) == {"before": 1, "after": 0}
    with pytest.raises(errors.InvalidArgument):
        membership._tolerance(topology, fourth_gone, "removing n4", "true")
    # what keeps or raises it needs no say-so
    assert membership._tolerance(topology, nodes, "a no-op", False) == {"before": 1, "after": 1}
    three = SimpleNamespace(nodes=tuple(nodes[:3]), layout=_layout(2, 2))
    assert membership._tolerance(three, nodes, "adding n4", False) == {"before": 0, "after": 1}
