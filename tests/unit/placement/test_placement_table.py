"""PartitionTable: lookup, deterministic serialisation, movement counting, input checks."""

from __future__ import annotations

import random

import msgpack
import pytest

from buckets.placement import (
    DiskSpec,
    PartitionTable,
    Topology,
    build_table,
    moved_slots,
    moved_slots_per_partition,
    partition_of,
)


def topology(n_nodes: int = 4, disks_per_node: int = 4, generation: int = 7, partitions: int = 4096) -> Topology:
    return Topology(
        generation,
        tuple(DiskSpec(f"n{j}-d{i}", f"n{j}", 1.0 + (i % 2)) for j in range(n_nodes) for i in range(disks_per_node)),
        partitions,
    )


@pytest.fixture(scope="module")
def table() -> PartitionTable:
    return build_table(topology(), 8)


def test_lookup(table: PartitionTable) -> None:
    assert table.generation == 7 and table.set_size == 8 and table.partitions == 4096
    row = table.slots(123)
    assert isinstance(row, tuple) and len(row) == 8
    partition, disks = table.locate("photos", "cat.jpg")
    assert partition == partition_of("photos", "cat.jpg", 4096) and disks == table.slots(partition)
    assert set(table.disk_ids()) == {d.disk_id for d in topology().disks}
    assert sum(table.load().values()) == 4096 * 8


def test_same_inputs_give_identical_bytes(table: PartitionTable) -> None:
    again = build_table(topology(), 8)
    assert again.to_bytes() == table.to_bytes()
    shuffled_disks = list(topology().disks)
    random.Random(1).shuffle(shuffled_disks)
    shuffled = Topology(7, tuple(shuffled_disks))
    assert build_table(shuffled, 8).to_bytes() == table.to_bytes()  # listing order is irrelevant


def test_incremental_builds_are_deterministic_too(table: PartitionTable) -> None:
    grown = topology(n_nodes=5, generation=8)
    first = build_table(grown, 8, previous=table)
    assert build_table(grown, 8, previous=table).to_bytes() == first.to_bytes()
    assert first.generation == 8


def test_round_trip(table: PartitionTable) -> None:
    data = table.to_bytes()
    restored = PartitionTable.from_bytes(data)
    assert restored == table
    assert restored.to_bytes() == data
    assert restored.slots(4095) == table.slots(4095)
    assert len(data) < 4096 * 8 * 2  # compact: disk ids are stored once


def test_different_tables_serialise_differently(table: PartitionTable) -> None:
    rows = [list(row) for row in table.rows]
    rows[0][0], rows[0][1] = rows[0][1], rows[0][0]
    swapped = PartitionTable(table.generation, table.set_size, tuple(tuple(r) for r in rows))
    assert swapped != table and swapped.to_bytes() != table.to_bytes()
    assert moved_slots(table, swapped) == 2


def test_moved_slots_counts_changed_positions() -> None:
    old = PartitionTable(1, 3, (("a", "b", "c"), ("a", "b", "c")))
    new = PartitionTable(2, 3, (("a", "b", "d"), ("c", "b", "a")))
    assert moved_slots(old, new) == 3
    assert moved_slots_per_partition(old, new) == [1, 2]
    assert moved_slots(old, old) == 0
    with pytest.raises(ValueError, match="shape"):
        moved_slots(old, PartitionTable(1, 2, (("a", "b"), ("a", "b"))))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"format": 99}),
        msgpack.packb({"format": 1, "generation": 1, "partitions": 2, "set_size": 1, "disks": ["a"], "slots": [0]}),
        msgpack.packb({"format": 1, "generation": 1, "partitions": 1, "set_size": 1, "disks": ["a"], "slots": [1]}),
        msgpack.packb({"format": 1, "generation": 1, "partitions": 1, "set_size": 1, "disks": ["a"], "slots": [-1]}),
        msgpack.packb({"format": 1, "generation": "1", "partitions": 1, "set_size": 1, "disks": ["a"], "slots": [0]}),
        msgpack.packb({"format": 1, "generation": 1, "partitions": 1, "set_size": 1, "disks": [""], "slots": [0]}),
        msgpack.packb({"format": 1, "generation": 1, "partitions": 0, "set_size": 1, "disks": [], "slots": []}),
    ],
    ids=["empty", "reserved byte", "list", "future format", "too few slots", "unknown disk",
         "negative index", "string generation", "empty disk id", "no partitions"],
)
def test_from_bytes_rejects_malformed_input(data: bytes) -> None:
    with pytest.raises(ValueError):
        PartitionTable.from_bytes(data)


def test_truncated_bytes_are_rejected(table: PartitionTable) -> None:
    with pytest.raises(ValueError):
        PartitionTable.from_bytes(table.to_bytes()[:-3])


def test_table_shape_is_validated() -> None:
    with pytest.raises(ValueError, match="slots"):
        PartitionTable(1, 2, (("a", "b"), ("a",)))
    with pytest.raises(ValueError):
        PartitionTable(1, 1, ())


def test_build_rejects_mismatched_previous(table: PartitionTable) -> None:
    with pytest.raises(ValueError, match="set size"):
        build_table(topology(), 4, previous=table)
    with pytest.raises(ValueError, match="partition count"):
        build_table(topology(partitions=1024), 8, previous=table)
    with pytest.raises(ValueError, match="set_size"):
        build_table(topology(), 0)
