"""Key hashing, erasure layout defaults and topology validation."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import xxhash

from buckets.placement import (
    DEFAULT_PARTITIONS,
    DiskSpec,
    Topology,
    default_set_size,
    erasure_layout,
    partition_of,
)


# --- partition_of -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bucket", "key"),
    [("photos", "2024/cat.jpg"), ("b", ""), ("bucket", "ключ/ü/😀"), ("a" * 63, "k" * 1024)],
)
def test_partition_is_xxh3_of_bucket_nul_key(bucket: str, key: str) -> None:
    expected = xxhash.xxh3_64_intdigest(bucket.encode() + b"\0" + key.encode()) % DEFAULT_PARTITIONS
    assert partition_of(bucket, key) == expected
    assert partition_of(bucket, key, 4096) == expected
    assert partition_of(bucket, key, 7) == xxhash.xxh3_64_intdigest(bucket.encode() + b"\0" + key.encode()) % 7


def test_separator_keeps_bucket_and_key_apart() -> None:
    # Without the NUL both would hash "abc".
    assert partition_of("ab", "c", 1 << 20) != partition_of("a", "bc", 1 << 20)


def test_partitions_are_evenly_used() -> None:
    rng = random.Random(7)
    counts = Counter(partition_of("bucket", f"key-{rng.random()}", 64) for _ in range(64_000))
    assert len(counts) == 64
    assert max(counts.values()) < 1.1 * 1000 and min(counts.values()) > 0.9 * 1000


@pytest.mark.parametrize("partitions", [0, -1])
def test_partition_count_must_be_positive(partitions: int) -> None:
    with pytest.raises(ValueError, match="partitions"):
        partition_of("b", "k", partitions)


# --- erasure layout ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("set_size", "k", "m"),
    [
        (1, 1, 0), (2, 1, 1), (3, 2, 1), (4, 2, 2), (5, 3, 2), (6, 3, 3), (7, 4, 3),
        (8, 4, 4), (9, 5, 4), (12, 8, 4), (16, 12, 4),
    ],
)
def test_default_layout(set_size: int, k: int, m: int) -> None:
    assert erasure_layout(set_size) == (k, m)


@pytest.mark.parametrize(
    ("set_size", "parity", "expected"),
    [(1, 0, (1, 0)), (4, 0, (4, 0)), (4, 1, (3, 1)), (16, 2, (14, 2)), (16, 8, (8, 8)), (3, 1, (2, 1))],
)
def test_parity_override(set_size: int, parity: int, expected: tuple[int, int]) -> None:
    assert erasure_layout(set_size, parity) == expected


@pytest.mark.parametrize(
    ("set_size", "parity", "message"),
    [
        (4, 3, "at most 2"),
        (1, 1, "at most 0"),
        (16, 9, "at most 8"),
        (8, -1, ">= 0"),
        (8, 1.5, "integer"),
        (8, True, "integer"),
        (0, None, "between 1 and 16"),
        (17, None, "between 1 and 16"),
    ],
)
def test_invalid_layout_is_rejected_clearly(set_size: int, parity: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        erasure_layout(set_size, parity)  # type: ignore[arg-type]


@pytest.mark.parametrize(("disks", "expected"), [(1, 1), (2, 2), (4, 4), (16, 16), (17, 16), (64, 16)])
def test_default_set_size(disks: int, expected: int) -> None:
    assert default_set_size(disks) == expected


def test_default_set_size_needs_a_disk() -> None:
    with pytest.raises(ValueError):
        default_set_size(0)


# --- topology values ----------------------------------------------------------------------------
def test_topology_is_an_immutable_value() -> None:
    disks = [DiskSpec("d1", "n1"), DiskSpec("d2", "n1", 2.0)]
    topology = Topology(3, disks)  # type: ignore[arg-type]  # any iterable is accepted
    assert topology.disks == tuple(disks) and topology.partitions == DEFAULT_PARTITIONS
    assert topology == Topology(3, tuple(disks))
    assert hash(topology) == hash(Topology(3, tuple(disks)))
    assert topology.node_ids == ("n1",)
    with pytest.raises(AttributeError):
        topology.generation = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "make",
    [
        lambda: DiskSpec("", "n"),
        lambda: DiskSpec("d", ""),
        lambda: DiskSpec("d", "n", 0.0),
        lambda: DiskSpec("d", "n", -1.0),
        lambda: DiskSpec("d", "n", float("nan")),
        lambda: DiskSpec("d", "n", float("inf")),
        lambda: Topology(1, ()),
        lambda: Topology(-1, (DiskSpec("d", "n"),)),
        lambda: Topology(1, (DiskSpec("d", "n"),), partitions=0),
        lambda: Topology(1, (DiskSpec("d", "n1"), DiskSpec("d", "n2"))),
    ],
    ids=["empty disk", "empty node", "zero weight", "negative weight", "nan weight", "inf weight",
         "no disks", "negative generation", "zero partitions", "duplicate disk"],
)
def test_invalid_topology_is_rejected(make) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        make()
