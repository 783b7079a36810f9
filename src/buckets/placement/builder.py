"""Build a partition table from a topology: ring preferences plus quota-based assignment.

In the spirit of OpenStack Swift's ring builder, and deterministic (same inputs, same
table; the order disks are listed in does not matter). Two limits come first, for
durability: a disk holds at most one shard of a partition while there are >= set_size
disks, and a node at most ``node_limit`` shards (the level of an even spread: 1 once there
are >= set_size nodes). Within them every disk gets a quota (``target_loads``): its
weight share of the P x set_size slots, split per node then per disk, clamped to what
the limits let it hold, rounded by largest remainder. Starting from the previous table:

1. keep every slot whose disk still exists;
2. release what breaks a limit: slots of departed disks, a disk repeated in a partition,
   a node over the node limit (its most over-quota, least preferred disks first);
3. fill empty slots from the partition's ring preference order: a disk not yet in the
   partition, on the node with fewest shards of it, under quota, most preferred; if
   quotas leave no such disk, the least loaded eligible one;
4. balance: each under-quota disk (least filled first) walks the partitions in its own
   ring preference order and takes one slot from an over-quota disk there, preferring a
   victim whose node holds the most shards of that partition, then the victim the
   partition likes least. A first lap takes only moves that even out the partition's
   node spread; a second any move that keeps the receiver's node within the node limit.
   A receiver with nothing left to take may relay: a disk at quota hands it a slot and
   refills from an over-quota disk elsewhere (two moves; needed when limits bind).

Step 4 is Swift's "release from over-quota disks, then fill" fused into one move: a slot
is only released when a specific under-quota disk can take it, so no slot is released
that nobody eligible could fill, and every move gives an under-quota disk its fair share.
The data that moves when a disk or node joins is therefore what the newcomer is owed
(about 1/(N+1)), and nothing else; rebuilding an unchanged topology moves nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from fractions import Fraction

import xxhash

from buckets.placement.ring import preference_orders
from buckets.placement.table import PartitionTable, rows_from_indices
from buckets.placement.topology import DiskSpec, Topology

_EMPTY = -1


def build_table(
    topology: Topology, set_size: int, previous: PartitionTable | None = None
) -> PartitionTable:
    """Assign ``set_size`` disks to each of ``topology.partitions`` partitions.

    With ``previous``, slots keep their disk unless that disk left, a hard rule (distinct
    disks, node spread) requires a move, or the move gives an under-quota disk its share.
    """
    if isinstance(set_size, bool) or not isinstance(set_size, int) or set_size < 1:
        raise ValueError(f"set_size must be an integer >= 1, got {set_size!r}")
    if previous is not None:
        if previous.partitions != topology.partitions:
            raise ValueError(
                f"previous table has {previous.partitions} partitions, topology has "
                f"{topology.partitions}: the partition count is fixed at format time"
            )
        if previous.set_size != set_size:
            raise ValueError(
                f"previous table has set size {previous.set_size}, asked for {set_size}: "
                "changing the set size is a re-format, not a rebalance"
            )
    return _Assignment(topology, set_size, previous).run()


class _Assignment:
    """Mutable working state of one build. Disks, nodes and slots are small ints."""

    def __init__(self, topology: Topology, set_size: int, previous: PartitionTable | None) -> None:
        disks = _sorted_disks(topology)
        self.generation = topology.generation
        self.partitions = topology.partitions
        self.set_size = set_size
        self.disk_ids = [disk.disk_id for disk in disks]
        self.node_of = _node_indices(disks)
        n_nodes = max(self.node_of) + 1
        n_disks = len(disks)
        self.max_per_disk, self.node_limit = _spread_limits(self.node_of, set_size)

        self.prefs = preference_orders(self.disk_ids, [disk.weight for disk in disks], self.partitions)
        self.rows = [[_EMPTY] * set_size for _ in range(self.partitions)]
        self.disk_count = [[0] * n_disks for _ in range(self.partitions)]
        self.node_count = [[0] * n_nodes for _ in range(self.partitions)]
        self.load = [0] * n_disks
        self._walks: dict[int, list[int]] = {}  # step 4: each receiver's partitions, preferred first
        self._cursors: dict[int, tuple[int, int]] = {}
        self._exhausted: set[int] = set()  # disks whose walk found nothing more to take
        self._relay_cursors: dict[int, int] = {}
        if previous is not None:
            self._adopt(previous)
        self.quota = _quotas(disks, self.node_of, set_size, self.partitions)

    def run(self) -> PartitionTable:
        self._release_rule_breakers()
        self._fill_empty_slots()
        self._balance()
        return PartitionTable(
            generation=self.generation,
            set_size=self.set_size,
            rows=rows_from_indices(self.disk_ids, self.rows),
        )

    # --- slot bookkeeping -----------------------------------------------------------------
    def _place(self, partition: int, slot: int, disk: int) -> None:
        self.rows[partition][slot] = disk
        self.disk_count[partition][disk] += 1
        self.node_count[partition][self.node_of[disk]] += 1
        self.load[disk] += 1

    def _release(self, partition: int, slot: int) -> None:
        disk = self.rows[partition][slot]
        self.rows[partition][slot] = _EMPTY
        self.disk_count[partition][disk] -= 1
        self.node_count[partition][self.node_of[disk]] -= 1
        self.load[disk] -= 1

    def _adopt(self, previous: PartitionTable) -> None:
        index = {disk_id: i for i, disk_id in enumerate(self.disk_ids)}
        for partition, row in enumerate(previous.rows):
            for slot, disk_id in enumerate(row):
                disk = index.get(disk_id)
                if disk is not None:  # a departed disk leaves its slot empty
                    self._place(partition, slot, disk)

    # --- step 2: hard rules -----------------------------------------------------------------
    def _release_rule_breakers(self) -> None:
        for partition in range(self.partitions):
            row = self.rows[partition]
            disk_count = self.disk_count[partition]
            for slot in range(self.set_size - 1, -1, -1):
                disk = row[slot]
                if disk != _EMPTY and disk_count[disk] > self.max_per_disk:
                    self._release(partition, slot)
            node_count = self.node_count[partition]
            if max(node_count) <= self.node_limit:
                continue
            for node, count in enumerate(node_count):
                excess = count - self.node_limit
                if excess <= 0:
                    continue
                order = self.prefs[partition]
                on_node = [slot for slot, disk in enumerate(row) if disk != _EMPTY and self.node_of[disk] == node]
                # Release the most over-quota disks first, then the least preferred.
                on_node.sort(
                    key=lambda slot: (
                        self.quota[row[slot]] - self.load[row[slot]],
                        -order.index(row[slot]),
                        -slot,
                    )
                )
                for slot in on_node[:excess]:
                    self._release(partition, slot)

    # --- step 3: fill -------------------------------------------------------------------------
    def _fill_empty_slots(self) -> None:
        # Slot-major, so low slots (the data shards, which serve healthy reads) of every
        # partition are placed while their first ring choices are still under quota.
        for slot in range(self.set_size):
            for partition in range(self.partitions):
                if self.rows[partition][slot] == _EMPTY:
                    self._place(partition, slot, self._choose_for_empty_slot(partition))

    def _choose_for_empty_slot(self, partition: int) -> int:
        disk_count = self.disk_count[partition]
        node_count = self.node_count[partition]
        node_of, load, quota = self.node_of, self.load, self.quota
        order = self.prefs[partition]
        lowest = min(node_count)
        for disk in order:  # fast path: the ideal candidate, first in preference order
            if disk_count[disk] == 0 and node_count[node_of[disk]] == lowest and load[disk] < quota[disk]:
                return disk

        limit = self.node_limit

        def rank_key(position: int) -> tuple[bool, int, int, bool, float, int]:
            disk = order[position]
            if load[disk] < quota[disk]:
                fullness = 0.0
            else:  # no eligible disk under quota: least loaded relative to its quota
                fullness = load[disk] / quota[disk] if quota[disk] else float("inf")
            return (
                # Never past the node limit. With >= set_size disks a disk outside the
                # partition is always available below it; with fewer disks (repeats are
                # unavoidable) this keeps repeats off an already full node.
                node_count[node_of[disk]] >= limit,
                disk_count[disk],
                node_count[node_of[disk]],
                load[disk] >= quota[disk],
                fullness,
                position,
            )

        return order[min(range(len(order)), key=rank_key)]

    # --- step 4: balance --------------------------------------------------------------------
    def _balance(self) -> None:
        load, quota = self.load, self.quota
        tiebreak = [_tiebreak(disk_id) for disk_id in self.disk_ids]
        wanting = [
            (load[disk] / quota[disk], tiebreak[disk], disk)
            for disk in range(len(load))
            if load[disk] < quota[disk]
        ]
        heapq.heapify(wanting)
        while wanting:  # least filled disk first, one slot at a time: newcomers share fairly
            _, _, disk = heapq.heappop(wanting)
            steal = self._find_steal(disk)
            if steal is not None:
                partition, slot = steal
                self._move(partition, slot, disk)
            elif not self._relay(disk):
                continue  # nothing this disk may take: it stays under quota
            if load[disk] < quota[disk]:
                heapq.heappush(wanting, (load[disk] / quota[disk], tiebreak[disk], disk))

    def _find_steal(self, receiver: int) -> tuple[int, int] | None:
        """Next (partition, slot) in the receiver's preference walk it may take, if any.

        The walk has two laps: the first takes only moves that even out a partition's node
        spread, the second any move that keeps the receiver's node within the node limit
        (so weights win over an even spread only where durability does not suffer: no
        node ever holds more shards of a partition than the limit). Skipping is final
        within a lap (victims only lose load, partitions only gain receivers), so each
        receiver's cursor only moves forward.
        """
        if receiver in self._exhausted:
            return None
        if receiver not in self._walks:
            ranks = [order.index(receiver) for order in self.prefs]
            self._walks[receiver] = sorted(range(self.partitions), key=ranks.__getitem__)
            # With one shard per node there is no uneven spread to even out: skip lap 0.
            self._cursors[receiver] = (1 if self.node_limit == 1 else 0, 0)
        partitions = self._walks[receiver]
        lap, position = self._cursors[receiver]
        while True:
            if position >= len(partitions):
                if lap == 1:
                    self._cursors[receiver] = (lap, position)
                    self._exhausted.add(receiver)
                    return None
                lap, position = 1, 0
            partition = partitions[position]
            slot = self._victim_slot(partition, receiver, even_out_only=lap == 0)
            if slot >= 0:
                self._cursors[receiver] = (lap, position)
                return partition, slot
            position += 1

    def _victim_slot(self, partition: int, receiver: int, *, even_out_only: bool) -> int:
        """Slot of ``partition`` the receiver may take from an over-quota disk, or -1."""
        if self.disk_count[partition][receiver] >= self.max_per_disk:
            return -1
        node_count = self.node_count[partition]
        node_of, load, quota = self.node_of, self.load, self.quota
        receiver_node = node_of[receiver]
        receiver_shards = node_count[receiver_node]
        node_full = receiver_shards >= self.node_limit
        order = self.prefs[partition]
        best_slot, best_key = -1, (-1, -1)
        for slot, victim in enumerate(self.rows[partition]):
            if load[victim] <= quota[victim]:
                continue
            victim_node = node_of[victim]
            if victim_node == receiver_node:
                if even_out_only:
                    continue  # a move within one node does not change the spread
            elif node_full:
                continue  # would put the receiver's node past the node limit
            elif even_out_only and node_count[victim_node] < receiver_shards + 2:
                continue  # would not make the partition's node spread more even
            # Release where the victim's node holds most shards, then the least preferred.
            key = (node_count[victim_node], order.index(victim))
            if key > best_key:
                best_slot, best_key = slot, key
        return best_slot

    def _relay(self, receiver: int) -> bool:
        """Two moves for a receiver with no direct steal left: a disk at quota hands it a
        slot and refills itself from an over-quota disk elsewhere.

        Needed when the node limit binds: the over-quota disks sit only in partitions the
        receiver may not enter (it is there already, or its node is full), while some
        other disk could go there in its place.
        """
        node_of, load, quota = self.node_of, self.load, self.quota
        if all(load[disk] <= quota[disk] for disk in range(len(load))):
            return False  # nobody to refill from
        exhausted = self._exhausted
        receiver_node = node_of[receiver]
        walk = self._walks[receiver]
        # Resume where the last relay succeeded: the partitions before it rarely open up.
        start = self._relay_cursors.get(receiver, 0)
        for position in range(start, start + len(walk)):
            partition = walk[position % len(walk)]
            if self.disk_count[partition][receiver] >= self.max_per_disk:
                continue
            node_full = self.node_count[partition][receiver_node] >= self.node_limit
            for slot, middle in enumerate(self.rows[partition]):
                if middle == receiver or middle in exhausted or load[middle] > quota[middle]:
                    continue  # (an over-quota disk here would have been a direct steal)
                if node_full and node_of[middle] != receiver_node:
                    continue
                refill = self._find_steal(middle)
                if refill is None or refill[0] == partition:
                    continue
                self._move(partition, slot, receiver)
                self._move(refill[0], refill[1], middle)
                self._relay_cursors[receiver] = position % len(walk)
                return True
        return False

    def _move(self, partition: int, slot: int, disk: int) -> None:
        self._release(partition, slot)
        self._place(partition, slot, disk)


def target_loads(topology: Topology, set_size: int) -> dict[str, int]:
    """Slots each disk should hold in a table built for ``topology``: its quota.

    The weight share of P x set_size, within what a disk (one shard per partition while
    there are enough disks) and its node (the even node spread) can hold.
    """
    disks = _sorted_disks(topology)
    node_of = _node_indices(disks)
    quotas = _quotas(disks, node_of, set_size, topology.partitions)
    return {disk.disk_id: quota for disk, quota in zip(disks, quotas)}


def _sorted_disks(topology: Topology) -> list[DiskSpec]:
    # Sorted so the result does not depend on the order the caller listed disks in.
    return sorted(topology.disks, key=lambda disk: disk.disk_id)


def _node_indices(disks: Sequence[DiskSpec]) -> list[int]:
    node_ids = sorted({disk.node_id for disk in disks})
    index = {node_id: i for i, node_id in enumerate(node_ids)}
    return [index[disk.node_id] for disk in disks]


def _spread_limits(node_of: Sequence[int], set_size: int) -> tuple[int, int]:
    """(most shards of a partition per disk, per node)."""
    # With fewer disks than slots, a disk must hold several shards of a partition.
    max_per_disk = -(-set_size // len(node_of))
    return max_per_disk, node_limit(_disks_per_node(node_of), max_per_disk, set_size)


def _disks_per_node(node_of: Sequence[int]) -> list[int]:
    counts = [0] * (max(node_of) + 1)
    for node in node_of:
        counts[node] += 1
    return counts


def _quotas(disks: Sequence[DiskSpec], node_of: Sequence[int], set_size: int, partitions: int) -> list[int]:
    max_per_disk, limit = _spread_limits(node_of, set_size)
    return slot_quotas(
        [disk.weight for disk in disks],
        node_of,
        total=partitions * set_size,
        disk_cap=partitions * max_per_disk,
        node_caps=[partitions * min(count * max_per_disk, limit) for count in _disks_per_node(node_of)],
        disk_ids=[disk.disk_id for disk in disks],
    )


def node_limit(disks_per_node: Sequence[int], max_per_disk: int, set_size: int) -> int:
    """Most shards of one partition any node must hold: the level of an even spread.

    The smallest L with sum(min(capacity, L)) >= set_size, where a node's capacity is its
    disk count times the shards one disk may hold. With >= set_size nodes, L is 1.
    """
    capacities = [count * max_per_disk for count in disks_per_node]
    level = 1
    while sum(min(capacity, level) for capacity in capacities) < set_size:
        level += 1
    return level


def slot_quotas(
    weights: Sequence[float],
    node_of: Sequence[int],
    *,
    total: int,
    disk_cap: int,
    node_caps: Sequence[int],
    disk_ids: Sequence[str],
) -> list[int]:
    """Slots each disk should hold: its weight share of ``total``, within what it can hold.

    Two levels, so the quotas are reachable: first each node gets its weight share, at most
    ``node_caps[node]`` (the node spread rule bounds how many shards of a partition one node
    may take), then each node's quota is split over its disks by weight, at most
    ``disk_cap`` each. Shares above a cap are clamped and the excess re-spread over the
    others (water filling); rounding is by largest remainder.
    """
    exact = [Fraction(weight) for weight in weights]
    members: list[list[int]] = [[] for _ in node_caps]
    for disk, node in enumerate(node_of):
        members[node].append(disk)
    node_quota = _largest_remainder(
        _water_fill([sum(exact[d] for d in disks) for disks in members], total, node_caps),
        total,
        tiebreak=[min(_tiebreak(disk_ids[d]) for d in disks) for disks in members],
    )
    quotas = [0] * len(weights)
    for node, disks in enumerate(members):
        shares = _water_fill([exact[d] for d in disks], node_quota[node], [disk_cap] * len(disks))
        rounded = _largest_remainder(
            shares,
            node_quota[node],
            tiebreak=[_tiebreak(disk_ids[d]) for d in disks],
        )
        for disk, quota in zip(disks, rounded):
            quotas[disk] = quota
    return quotas


def _water_fill(weights: Sequence[Fraction], total: int, caps: Sequence[int]) -> list[Fraction]:
    """Split ``total`` by weight, clamping at ``caps`` and re-spreading the excess."""
    if total > sum(caps):
        raise ValueError(f"capacity {sum(caps)} cannot hold {total} slots")
    share = [Fraction(0)] * len(weights)
    active = set(range(len(weights)))
    remaining = Fraction(total)
    while active and remaining:
        total_weight = sum(weights[i] for i in active)
        clamped = {i for i in active if remaining * weights[i] > caps[i] * total_weight}
        if not clamped:
            for i in active:
                share[i] = remaining * weights[i] / total_weight
            break
        for i in clamped:
            share[i] = Fraction(caps[i])
            remaining -= caps[i]
        active -= clamped
    return share


def _largest_remainder(shares: Sequence[Fraction], total: int, *, tiebreak: Sequence[int]) -> list[int]:
    """Round shares summing to ``total`` to integers summing to ``total``.

    Ties go by a hash of the disk id: no fixed favourite, and no dependence on the previous
    table, so rebuilding an unchanged topology from its own table moves nothing.
    """
    rounded = [int(share) for share in shares]  # floor: shares are non-negative
    leftover = total - sum(rounded)
    by_remainder = sorted(
        range(len(shares)), key=lambda i: (-(shares[i] - rounded[i]), tiebreak[i])
    )
    for i in by_remainder[:leftover]:
        rounded[i] += 1
    return rounded


def _tiebreak(disk_id: str) -> int:
    return xxhash.xxh3_64_intdigest(disk_id.encode())
