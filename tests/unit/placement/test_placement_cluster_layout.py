"""A new cluster's layout (``cluster_layout``): every disk in the set while that survives the
loss of any one node, else the widest set that does, so that a cluster of uneven nodes keeps
the cluster's promise (a node may fail) instead of putting more shards on one node than an
object can lose."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from buckets.placement import (
    DiskSpec,
    Topology,
    build_table,
    cluster_layout,
    erasure_layout,
    nodes_survived,
    write_spare,
)
from buckets.placement.builder import node_limit


def _worst_node_share(disks_per_node: tuple[int, ...], k: int, m: int, partitions: int = 64) -> int:
    """Most shards of one partition any node holds in the table built for these nodes."""
    disks = tuple(DiskSpec(f"n{node}-d{i}", f"n{node}") for node, count in enumerate(disks_per_node)
                  for i in range(count))
    table = build_table(Topology(generation=1, disks=disks, partitions=partitions), k + m)
    return max(max(Counter(disk_id.split("-")[0] for disk_id in row).values()) for row in table.rows)


@pytest.mark.parametrize(("nodes", "expected"), [
    ((4, 4, 4, 4), (12, 4)), ((4, 4, 4), (8, 4)), ((3, 3, 3), (5, 4)), ((2, 2, 2), (3, 3)),
    ((1, 1, 1), (2, 1)), ((4, 4, 2), (6, 4)), ((4, 4, 4, 2), (10, 4)), ((8, 8, 8, 8), (12, 4)),
])
def test_even_enough_nodes_keep_every_disk_in_the_set(nodes: tuple[int, ...], expected: tuple[int, int]) -> None:
    assert cluster_layout(nodes) == expected == erasure_layout(min(sum(nodes), 16))


@pytest.mark.parametrize(("nodes", "expected"), [
    ((4, 2, 1), (3, 2)),  # 4+3 would put 4 shards on the first node; 3+2 puts at most 2
    ((4, 2, 2), (4, 3)),  # 4+4 would put 4 on the first node with 3 to spare; 4+3 puts 3
    ((3, 1, 1, 1), (3, 2)),
    ((8, 1, 1), (2, 1)),  # only one shard per node survives a node: the small nodes bound the set
    # Even nodes too: three nodes of 5 or more disks would hold 6 of 12+4's shards each.
    ((8, 8, 8), (8, 4)), ((6, 6, 6), (8, 4)), ((5, 5, 5), (8, 4)),
])
def test_uneven_nodes_get_the_widest_set_that_survives_a_node(nodes: tuple[int, ...],
                                                              expected: tuple[int, int]) -> None:
    k, m = cluster_layout(nodes)
    assert (k, m) == expected
    worst = _worst_node_share(nodes, k, m)
    assert nodes_survived(k, m, worst) == 1
    # every disk in the set would not have survived a node
    wide_k, wide_m = erasure_layout(min(sum(nodes), 16))
    assert nodes_survived(wide_k, wide_m, _worst_node_share(nodes, wide_k, wide_m)) == 0


@pytest.mark.parametrize("nodes", [(4,), (4, 4), (4, 2), (1, 1)])
def test_fewer_than_three_nodes_take_every_disk(nodes: tuple[int, ...]) -> None:
    # No layout survives a node there: the control plane needs a majority of the nodes.
    assert cluster_layout(nodes) == erasure_layout(sum(nodes))


def test_a_given_parity_is_kept_and_the_set_narrowed_around_it() -> None:
    assert cluster_layout((4, 4, 4, 4), parity=2) == (6, 2)  # two shards per node at most
    assert cluster_layout((4, 4, 4, 4), parity=1) == (3, 1)  # one per node: 15+1 would lose data with a node
    assert cluster_layout((4, 2, 1), parity=3) == (4, 3)  # no 3-parity set survives a node: every disk
    with pytest.raises(ValueError, match="too high"):
        cluster_layout((1, 1, 1), parity=2)


def test_every_node_needs_a_disk() -> None:
    for bad in ((), (4, 0, 4)):
        with pytest.raises(ValueError, match="at least one disk"):
            cluster_layout(bad)


def test_the_layout_is_the_widest_that_survives_a_node_for_every_small_cluster() -> None:
    """3 to 5 nodes of 1 to 5 disks: the chosen set survives a node when any set of that
    parity does, and no wider set of the default parity would."""
    for n_nodes in (3, 4, 5):
        for nodes in itertools.combinations_with_replacement(range(5, 0, -1), n_nodes):
            k, m = cluster_layout(nodes)
            total = sum(nodes)
            survives = [s for s in range(1, min(total, 16) + 1)
                        if nodes_survived(*erasure_layout(s), node_limit(nodes, 1, s)) >= 1]
            if survives:
                assert k + m == max(survives), nodes
                assert write_spare(k, m) >= node_limit(nodes, 1, k + m), nodes
            else:
                assert (k, m) == erasure_layout(min(total, 16)), nodes


@pytest.mark.parametrize("nodes", [(4, 2, 1), (4, 2, 2), (3, 1, 1, 1), (5, 3, 1, 1), (6, 2, 2)])
def test_the_table_keeps_every_node_within_what_an_object_can_lose(nodes: tuple[int, ...]) -> None:
    k, m = cluster_layout(nodes)
    assert _worst_node_share(nodes, k, m, partitions=256) <= write_spare(k, m)
