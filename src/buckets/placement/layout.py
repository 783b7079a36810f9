"""Erasure layout policy: how many disks a partition spans and how they split into k + m.

Pure arithmetic on the design's defaults; the erasure codec itself lives in
``buckets.erasure``.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_SET_SIZE = 16

# (largest set size of the band, parity) by disks per partition, from the design brief.
_DEFAULT_PARITY_BANDS: tuple[tuple[int, int], ...] = (
    (1, 0),  # one disk: nothing to protect with
    (2, 1),  # 1+1 mirror
    (3, 1),  # 2+1
    (5, 2),
    (7, 3),
    (MAX_SET_SIZE, 4),
)


def default_set_size(n_disks: int) -> int:
    """Disks per partition for a deployment of ``n_disks`` disks: all of them, up to 16."""
    if n_disks < 1:
        raise ValueError(f"need at least one disk, got {n_disks}")
    return min(n_disks, MAX_SET_SIZE)


def default_parity(set_size: int) -> int:
    """The design's default parity count m for a set of ``set_size`` disks."""
    _check_set_size(set_size)
    for largest, parity in _DEFAULT_PARITY_BANDS:
        if set_size <= largest:
            return parity
    raise AssertionError("unreachable: bands cover 1..MAX_SET_SIZE")


def erasure_layout(set_size: int, parity: int | None = None) -> tuple[int, int]:
    """Return ``(k, m)``: data and parity shards for a set of ``set_size`` disks.

    ``parity`` overrides the default m (from ``--parity`` or a storage class). It must
    leave at least as many data shards as parity shards (``m <= set_size // 2``), which also
    guarantees ``k >= 1``.
    """
    _check_set_size(set_size)
    if parity is None:
        m = default_parity(set_size)
    else:
        if isinstance(parity, bool) or not isinstance(parity, int):
            raise ValueError(f"parity must be an integer, got {parity!r}")
        if parity < 0:
            raise ValueError(f"parity must be >= 0, got {parity}")
        if parity > set_size // 2:
            raise ValueError(
                f"parity {parity} is too high for a set of {set_size} disks: "
                f"at most {set_size // 2} (parity may not exceed the data shards)"
            )
        m = parity
    k = set_size - m
    if k < 1:  # unreachable given the checks above; kept as the contract's last line
        raise ValueError(f"a set of {set_size} disks with parity {m} leaves no data shard")
    return k, m


def write_spare(k: int, m: int) -> int:
    """Shards of an object that may be missing while it stays writable: ``m``, or ``m - 1`` when
    ``k == m`` (the write quorum is then ``k + 1``, so that two writes cannot both win)."""
    return m - (1 if k == m else 0)


def nodes_survived(k: int, m: int, shards_per_node: int) -> int:
    """Whole nodes an object of ``k + m`` shards survives, for reads and writes, when no node
    holds more than ``shards_per_node`` of its shards."""
    return write_spare(k, m) // max(1, shards_per_node)


def cluster_layout(disks_per_node: Sequence[int], parity: int | None = None) -> tuple[int, int]:
    """``(k, m)`` of a new cluster whose nodes have ``disks_per_node`` disks.

    The set takes every disk (up to 16), as on one node, when that survives the loss of any
    one node. On uneven nodes it may not: with 4 + 2 + 1 disks, 4+3 puts 4 shards of every
    object on the 4-disk node, one more than the parity covers. Then the set is the widest
    one, of the default (or the given) parity, in which no node holds more shards than an
    object can lose: 3+2 on 5 of the 7 disks, at most 2 on a node (the partition table
    spreads every set over the nodes as evenly as their disks allow, ``build_table``). With
    fewer than 3 nodes no layout survives a node (the control plane needs a majority of
    them), nor when no set does (one node holding most of the disks): every disk then.
    """
    from buckets.placement.builder import node_limit

    if not disks_per_node or min(disks_per_node) < 1:
        raise ValueError(f"every node needs at least one disk, got {list(disks_per_node)}")
    widest = default_set_size(sum(disks_per_node))
    if len(disks_per_node) >= 3:
        for set_size in range(widest, 0, -1):
            if parity is not None and parity > set_size // 2:
                break  # narrower sets cannot hold this parity either
            k, m = erasure_layout(set_size, parity)
            if nodes_survived(k, m, node_limit(disks_per_node, 1, set_size)) >= 1:
                return k, m
    return erasure_layout(widest, parity)


def narrow_layout(k: int, m: int) -> tuple[int, int]:
    """The layout of a small object: as many data shards as parity shards (``m + m``, m >= 2) when
    that is narrower than ``k + m``, else ``(k, m)`` itself.

    The parity count stays: any ``m`` disks of the object's set may fail, as for a wide
    object. A small object's shards are a few hundred bytes each, and each is a record
    carrying the object's metadata: 12+4 writes 16 records for a 4 KiB object and a GET
    reads 12; 4+4 writes 8 of 1 KiB each (less space in all) and a GET reads 4. Not with one parity shard: 1+1 would need
    both its disks for a write (a quorum of k + 1), where 2+1 goes on with one away.
    """
    if m >= 2 and k > m:
        return m, m
    return k, m


def _check_set_size(set_size: int) -> None:
    if isinstance(set_size, bool) or not isinstance(set_size, int):
        raise ValueError(f"set size must be an integer, got {set_size!r}")
    if not 1 <= set_size <= MAX_SET_SIZE:
        raise ValueError(f"set size must be between 1 and {MAX_SET_SIZE} disks, got {set_size}")
