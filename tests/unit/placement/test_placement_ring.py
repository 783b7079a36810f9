"""The vnode ring: weighted first choices, and orders that change only locally."""

from __future__ import annotations

from collections import Counter

from buckets.placement.ring import MAX_VNODES_PER_DISK, preference_orders, vnode_count

P = 4096


def test_every_order_lists_every_disk_once() -> None:
    orders = preference_orders(["a", "b", "c", "d", "e"], [1.0] * 5, P)
    assert len(orders) == P
    assert all(sorted(order) == [0, 1, 2, 3, 4] for order in orders)
    assert preference_orders(["a", "b", "c", "d", "e"], [1.0] * 5, P) == orders  # deterministic


def test_first_choices_follow_weight() -> None:
    weights = [1.0, 1.0, 2.0, 4.0]
    firsts = Counter(order[0] for order in preference_orders(["w", "x", "y", "z"], weights, P))
    for disk, weight in enumerate(weights):
        share = P * weight / sum(weights)
        assert abs(firsts[disk] - share) <= 0.25 * share, (disk, firsts[disk], share)


def test_adding_a_disk_only_inserts_it_into_orders() -> None:
    # Consistent hashing: the old disks keep their relative order in every partition, so
    # preferences (and choices guided by them) survive a topology change.
    old_ids = [f"disk{i}" for i in range(10)]
    old = preference_orders(old_ids, [1.0] * 10, P)
    new = preference_orders([*old_ids, "disk10"], [1.0] * 11, P)
    for before, after in zip(old, new):
        assert tuple(d for d in after if d != 10) == before
    assert sum(order[0] == 10 for order in new) > 0.5 * P / 11


def test_vnode_count_is_proportional_and_bounded() -> None:
    assert vnode_count(1.0) == 2 * vnode_count(0.5)
    assert vnode_count(2.0) == 2 * vnode_count(1.0)
    assert vnode_count(1e-9) == 1
    assert vnode_count(1e12) == MAX_VNODES_PER_DISK
