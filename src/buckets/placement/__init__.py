"""Placement: which disks hold each object's shards. Pure functions over a topology value.

Owns: hashing a key to one of P partitions (``partition_of``), the erasure layout policy
(``erasure_layout``, ``default_set_size``, ``cluster_layout`` for a new cluster's uneven nodes, and
``narrow_layout`` for small objects), the virtual-node consistent-hash ring and the
partition table built from it (``build_table``, ``PartitionTable``): for each partition,
an ordered tuple of disk ids, slot i holding shard i: never two shards on one disk while
there are enough disks, spread over nodes as evenly as the node count allows (one shard
per node once there are >= set_size nodes), balanced by weight within that
(``target_loads``), and moving as little as possible when the topology changes.

Everything here is a value or a pure function: a ``Topology`` in, a ``PartitionTable``
out, same inputs, same bytes. Bad arguments raise ``ValueError``; callers at the API edge
turn them into the typed errors of ``buckets.errors``.

Must not: do I/O, keep global state, know about HTTP, files, peers or clocks. Persisting
the table, deciding when the topology changes and migrating data belong to
``buckets.cluster``; reading and writing shards to ``buckets.engine``/``buckets.storage``.
"""

from buckets.placement.builder import build_table, target_loads
from buckets.placement.layout import (
    MAX_SET_SIZE,
    cluster_layout,
    default_parity,
    default_set_size,
    erasure_layout,
    narrow_layout,
    nodes_survived,
    write_spare,
)
from buckets.placement.partition import DEFAULT_PARTITIONS, partition_of
from buckets.placement.table import PartitionTable, moved_slots, moved_slots_per_partition, window
from buckets.placement.topology import DiskSpec, Topology

__all__ = [
    "DEFAULT_PARTITIONS",
    "MAX_SET_SIZE",
    "DiskSpec",
    "PartitionTable",
    "Topology",
    "build_table",
    "cluster_layout",
    "default_parity",
    "default_set_size",
    "erasure_layout",
    "moved_slots",
    "moved_slots_per_partition",
    "narrow_layout",
    "nodes_survived",
    "partition_of",
    "target_loads",
    "window",
    "write_spare",
]
