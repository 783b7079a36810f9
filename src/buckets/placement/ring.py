"""Virtual-node consistent-hash ring: a preference order of disks for every partition.

Each disk owns points on a 64-bit ring (count proportional to its weight). A partition sits
at a fixed point; its preference order is the distinct disks met walking clockwise from
there. Adding or removing a disk only changes orders locally, so choices guided by the
ring stay put across topology changes. The ring is advice: ``builder`` enforces
balance and failure domains on top of it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import xxhash

VNODES_PER_WEIGHT = 64
MAX_VNODES_PER_DISK = 1024  # bounds ring size if someone passes raw byte capacities as weights

_RING_BITS = 64


def vnode_count(weight: float) -> int:
    """Ring points a disk of ``weight`` owns (at least one)."""
    return max(1, min(MAX_VNODES_PER_DISK, round(weight * VNODES_PER_WEIGHT)))


def partition_position(partition: int, partitions: int) -> int:
    """Ring point of a partition: the middle of its 1/P share of the ring."""
    return ((2 * partition + 1) << (_RING_BITS - 1)) // partitions


def preference_orders(
    disk_ids: Sequence[str], weights: Sequence[float], partitions: int
) -> list[tuple[int, ...]]:
    """For each partition, every disk (as an index into ``disk_ids``), most preferred first."""
    points: list[tuple[int, int]] = []
    for index, (disk_id, weight) in enumerate(zip(disk_ids, weights, strict=True)):
        prefix = disk_id.encode() + b"\0"
        for vnode in range(vnode_count(weight)):
            points.append((xxhash.xxh3_64_intdigest(prefix + vnode.to_bytes(4, "big")), index))
    points.sort()
    hashes = [h for h, _ in points]
    owners = [d for _, d in points]

    starts: dict[int, list[int]] = {}
    for partition in range(partitions):
        start = bisect_left(hashes, partition_position(partition, partitions))
        starts.setdefault(start % len(points), []).append(partition)

    # Walk the ring backwards twice, moving each point's disk to the front: after a point
    # is processed, ``order`` is the first-appearance order from that point onwards. The
    # first lap only primes the wrap-around; orders are read on the second lap.
    order = list(range(len(disk_ids)))
    orders: list[tuple[int, ...]] = [()] * partitions
    for lap in (0, 1):
        for j in range(len(points) - 1, -1, -1):
            disk = owners[j]
            if order[0] != disk:
                order.remove(disk)
                order.insert(0, disk)
            if lap and j in starts:
                snapshot = tuple(order)
                for partition in starts[j]:
                    orders[partition] = snapshot
    return orders
