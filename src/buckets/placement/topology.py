"""The topology value placement works on: which disks exist, on which node, at what weight.

Only the facts placement needs. Membership states (Active/Draining/Removed), addresses
and the persisted topology document belong to ``buckets.cluster``, which derives one of
these values for each generation it wants a partition table for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from buckets.placement.partition import DEFAULT_PARTITIONS


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """One disk. ``weight`` is relative capacity (1.0 = a typical disk), must be > 0.

    A disk that should hold nothing is not given weight 0: it is left out of the topology.
    """

    disk_id: str
    node_id: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.disk_id, str) or not self.disk_id:
            raise ValueError(f"disk_id must be a non-empty string, got {self.disk_id!r}")
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ValueError(f"node_id must be a non-empty string, got {self.node_id!r}")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"weight of disk {self.disk_id!r} must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight of disk {self.disk_id!r} must be finite and > 0, got {weight!r}")


@dataclass(frozen=True, slots=True)
class Topology:
    """The disks of one placement generation. ``partitions`` is fixed at format time."""

    generation: int
    disks: tuple[DiskSpec, ...]
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        # Accept any iterable but store a tuple, so the value stays hashable and immutable.
        object.__setattr__(self, "disks", tuple(self.disks))
        if isinstance(self.generation, bool) or not isinstance(self.generation, int) or self.generation < 0:
            raise ValueError(f"generation must be an integer >= 0, got {self.generation!r}")
        if isinstance(self.partitions, bool) or not isinstance(self.partitions, int) or self.partitions < 1:
            raise ValueError(f"partitions must be an integer >= 1, got {self.partitions!r}")
        if not self.disks:
            raise ValueError("a topology needs at least one disk")
        seen: set[str] = set()
        for disk in self.disks:
            if not isinstance(disk, DiskSpec):
                raise ValueError(f"disks must be DiskSpec values, got {disk!r}")
            if disk.disk_id in seen:
                raise ValueError(f"disk id {disk.disk_id!r} appears twice")
            seen.add(disk.disk_id)

    @property
    def node_ids(self) -> tuple[str, ...]:
        """Distinct node ids, sorted."""
        return tuple(sorted({disk.node_id for disk in self.disks}))
