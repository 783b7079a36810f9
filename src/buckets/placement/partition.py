"""Key → partition hashing: the only place that decides which partition a key lives in.

The partition count P is fixed when a deployment is formatted; changing it would move every
object, so nothing here ever derives P from the topology.
"""

from __future__ import annotations

import xxhash

DEFAULT_PARTITIONS = 4096


def partition_of(bucket: str, key: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Return the partition (0 <= p < partitions) that object ``bucket/key`` belongs to.

    xxh3-64 over ``bucket + NUL + key`` (UTF-8). The NUL separator keeps ("ab", "c") and
    ("a", "bc") apart; S3 names cannot contain NUL, so it cannot be forged.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return key_digest(bucket, key) % partitions


def key_digest(bucket: str, key: str) -> int:
    """xxh3-64 of ``bucket \0 key``: its low bits pick the partition, its high half the start
    of a narrow object's window (``table.window``)."""
    return xxhash.xxh3_64_intdigest(bucket.encode() + b"\0" + key.encode())
