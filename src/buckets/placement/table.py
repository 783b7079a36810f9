"""The partition table: for each partition, the ordered disks that hold its shards.

Slot i of a partition holds shard i of every object in it. The table is a plain value:
lookups are a tuple index, it serialises to deterministic msgpack so every node can store
and compare the same bytes, and ``moved_slots`` measures what a migration must move.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from buckets.placement.partition import key_digest

TABLE_FORMAT = 1


@dataclass(frozen=True, repr=False)
class PartitionTable:
    """``rows[p]`` is the tuple of ``set_size`` disk ids of partition p, slot order."""

    generation: int
    set_size: int
    rows: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        rows = tuple(tuple(row) for row in self.rows)
        object.__setattr__(self, "rows", rows)
        if isinstance(self.generation, bool) or not isinstance(self.generation, int) or self.generation < 0:
            raise ValueError(f"generation must be an integer >= 0, got {self.generation!r}")
        if isinstance(self.set_size, bool) or not isinstance(self.set_size, int) or self.set_size < 1:
            raise ValueError(f"set_size must be an integer >= 1, got {self.set_size!r}")
        if not rows:
            raise ValueError("a partition table needs at least one partition")
        for partition, row in enumerate(rows):
            if len(row) != self.set_size:
                raise ValueError(
                    f"partition {partition} has {len(row)} slots, expected {self.set_size}"
                )
            for disk_id in row:
                if not isinstance(disk_id, str) or not disk_id:
                    raise ValueError(f"partition {partition} holds an invalid disk id {disk_id!r}")

    # --- lookup ---------------------------------------------------------------------------
    @property
    def partitions(self) -> int:
        return len(self.rows)

    def slots(self, partition: int) -> tuple[str, ...]:
        """Disk ids of ``partition``; index i holds shard i."""
        return self.rows[partition]

    def locate(self, bucket: str, key: str) -> tuple[int, tuple[str, ...]]:
        """Partition and slot disks of object ``bucket/key``."""
        partition = key_digest(bucket, key) % len(self.rows)  # partition_of's rule
        return partition, self.rows[partition]

    def object_disks(self, bucket: str, key: str, n: int) -> tuple[str, ...]:
        """The ``n`` disks of object ``bucket/key``, slot order: its partition's whole row when
        ``n`` is the set size, else a window of ``n`` consecutive slots (wrapping around) that
        starts at a slot the key's hash picks (``window``). A window is bound to slot
        positions, not to disks: when a topology change gives a slot another disk, only the
        shards in that slot move, as for a whole row; and every slot position starts as many
        windows, so each disk takes a share of narrow objects in proportion to its slots."""
        digest = key_digest(bucket, key)  # one hash for the partition and the window
        row = self.rows[digest % len(self.rows)]
        if n >= len(row):
            return row
        return tuple(row[i] for i in _window(digest, len(row), n))

    def disk_ids(self) -> tuple[str, ...]:
        """Every disk that holds at least one slot, sorted."""
        return tuple(sorted({disk_id for row in self.rows for disk_id in row}))

    def load(self) -> dict[str, int]:
        """Slots held per disk."""
        return dict(Counter(disk_id for row in self.rows for disk_id in row))

    # --- serialisation --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Deterministic msgpack: same table, same bytes (disk ids sorted, fixed key order)."""
        disk_ids = self.disk_ids()
        index = {disk_id: i for i, disk_id in enumerate(disk_ids)}
        document = {
            "format": TABLE_FORMAT,
            "generation": self.generation,
            "partitions": len(self.rows),
            "set_size": self.set_size,
            "disks": list(disk_ids),
            "slots": [index[disk_id] for row in self.rows for disk_id in row],
        }
        return msgpack.packb(document, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> PartitionTable:
        """Parse ``to_bytes`` output; raise ValueError on anything else."""
        try:
            document = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise ValueError(f"not a partition table: {exc}") from exc
        if not isinstance(document, dict):
            raise ValueError("not a partition table: top level is not a map")
        if document.get("format") != TABLE_FORMAT:
            raise ValueError(f"unsupported partition table format {document.get('format')!r}")
        generation = document.get("generation")
        partitions = document.get("partitions")
        set_size = document.get("set_size")
        disk_ids = document.get("disks")
        flat = document.get("slots")
        if not all(_is_int(v) for v in (generation, partitions, set_size)):
            raise ValueError("partition table: generation, partitions and set_size must be integers")
        if not isinstance(disk_ids, list) or not all(isinstance(d, str) for d in disk_ids):
            raise ValueError("partition table: disks must be a list of strings")
        if not isinstance(flat, list) or partitions < 1 or set_size < 1:
            raise ValueError("partition table: malformed slots")
        if len(flat) != partitions * set_size:
            raise ValueError(
                f"partition table: {len(flat)} slots, expected {partitions} x {set_size}"
            )
        if not all(_is_int(i) and 0 <= i < len(disk_ids) for i in flat):
            raise ValueError("partition table: slot refers to an unknown disk")
        rows = tuple(
            tuple(disk_ids[i] for i in flat[start : start + set_size])
            for start in range(0, len(flat), set_size)
        )
        return cls(generation=generation, set_size=set_size, rows=rows)

    def __repr__(self) -> str:
        return (
            f"PartitionTable(generation={self.generation}, partitions={len(self.rows)}, "
            f"set_size={self.set_size}, disks={len(self.disk_ids())})"
        )


def window(bucket: str, key: str, set_size: int, n: int) -> tuple[int, ...]:
    """Slot positions of a narrow object (``n`` < ``set_size``): ``n`` consecutive ones,
    wrapping around, from an offset taken from the high half of the key's xxh3-64 (the
    partition comes from the low bits, so the two are independent)."""
    return _window(key_digest(bucket, key), set_size, n)


def _window(digest: int, set_size: int, n: int) -> tuple[int, ...]:
    if not 1 <= n <= set_size:
        raise ValueError(f"a window of {n} slots does not fit a set of {set_size}")
    start = (digest >> 32) % set_size
    return tuple((start + j) % set_size for j in range(n))


def moved_slots(old: PartitionTable, new: PartitionTable) -> int:
    """Count (partition, slot) pairs whose disk differs between two tables of one shape."""
    _check_same_shape(old, new)
    return sum(
        a != b for old_row, new_row in zip(old.rows, new.rows) for a, b in zip(old_row, new_row)
    )


def moved_slots_per_partition(old: PartitionTable, new: PartitionTable) -> list[int]:
    """Per partition, how many of its slots changed disk."""
    _check_same_shape(old, new)
    return [sum(a != b for a, b in zip(o, n)) for o, n in zip(old.rows, new.rows)]


def _check_same_shape(old: PartitionTable, new: PartitionTable) -> None:
    if old.partitions != new.partitions or old.set_size != new.set_size:
        raise ValueError(
            f"tables differ in shape: {old.partitions}x{old.set_size} vs "
            f"{new.partitions}x{new.set_size}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def rows_from_indices(disk_ids: Sequence[str], rows: Sequence[Sequence[int]]) -> tuple[tuple[str, ...], ...]:
    """Turn index rows into id rows sharing one string object per disk."""
    return tuple(tuple(disk_ids[i] for i in row) for row in rows)
