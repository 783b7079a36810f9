"""Narrow sets for small objects: ``narrow_layout`` and the window of slots a key gets
(``window``, ``PartitionTable.object_disks``): same parity, consecutive slots from a hashed
start, every slot position used alike, and only the slots whose disk changed move."""

from __future__ import annotations

from collections import Counter

import pytest
import xxhash

from buckets.placement import DiskSpec, Topology, build_table, erasure_layout, narrow_layout, window


@pytest.mark.parametrize(("k", "m", "expected"), [
    (12, 4, (4, 4)), (8, 4, (4, 4)), (4, 3, (3, 3)), (3, 2, (2, 2)), (2, 1, (2, 1)), (5, 1, (5, 1)),
    (2, 2, (2, 2)), (4, 4, (4, 4)), (1, 1, (1, 1)), (1, 0, (1, 0)), (2, 0, (2, 0)),
])
def test_narrow_layout_keeps_the_parity_and_never_widens(k: int, m: int, expected: tuple[int, int]) -> None:
    assert narrow_layout(k, m) == expected
    ks, ms = expected
    assert ms == m and ks + ms <= k + m


def test_every_default_layout_narrows_to_twice_its_parity() -> None:
    for set_size in range(1, 17):
        k, m = erasure_layout(set_size)
        ks, ms = narrow_layout(k, m)
        assert ms == m and (ks + ms == 2 * m if k > m >= 2 else (ks, ms) == (k, m)), set_size


def test_a_window_is_consecutive_slots_from_the_keys_hash() -> None:
    digest = xxhash.xxh3_64_intdigest(b"bkt\0some/key")
    start = (digest >> 32) % 16
    assert window("bkt", "some/key", 16, 8) == tuple((start + j) % 16 for j in range(8))
    assert window("bkt", "some/key", 16, 16) == tuple((start + j) % 16 for j in range(16))
    for bad in (0, 17):
        with pytest.raises(ValueError, match="does not fit"):
            window("bkt", "k", 16, bad)


def topology(nodes: int, disks: int = 4, generation: int = 1) -> Topology:
    return Topology(generation, tuple(DiskSpec(f"n{j}d{i}", f"n{j}") for j in range(nodes) for i in range(disks)), 1024)


def test_object_disks_is_the_row_when_the_set_is_whole_and_a_window_of_it_otherwise() -> None:
    table = build_table(topology(4), 16)
    for i in range(200):
        key = f"k{i}"
        _, row = table.locate("b", key)
        assert table.object_disks("b", key, 16) == row
        narrow = table.object_disks("b", key, 8)
        assert narrow == tuple(row[s] for s in window("b", key, 16, 8))
        assert len(set(narrow)) == 8


def test_windows_use_every_slot_position_alike_so_disks_share_narrow_objects_by_their_slots() -> None:
    table = build_table(topology(4), 16)
    starts = Counter(window("b", f"key-{i}", 16, 8)[0] for i in range(32_000))
    assert min(starts.values()) > 0.85 * 2000 and max(starts.values()) < 1.15 * 2000
    load = Counter(d for i in range(32_000) for d in table.object_disks("b", f"key-{i}", 8))
    assert len(load) == 16 and min(load.values()) > 0.85 * 16_000 and max(load.values()) < 1.15 * 16_000


def test_a_node_joining_moves_only_the_window_slots_whose_disk_changed() -> None:
    before = build_table(topology(4), 16)
    after = build_table(topology(5, generation=2), 16, before)
    moved = total = 0
    for i in range(4000):
        key = f"obj/{i}"
        old, new = before.object_disks("b", key, 8), after.object_disks("b", key, 8)
        _, old_row = before.locate("b", key)
        _, new_row = after.locate("b", key)
        changed = {s for s in range(16) if old_row[s] != new_row[s]}
        assert {j for j in range(8) if old[j] != new[j]} == {j for j, s in enumerate(window("b", key, 16, 8))
                                                              if s in changed}
        moved += sum(a != b for a, b in zip(old, new))
        total += 8
    # the new node's share is 1/5 of the slots: the windows move about that, not more
    assert 0.15 < moved / total < 0.25, moved / total
