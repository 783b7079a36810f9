"""The location registry: where every object lives and what HEAD/listing need.

Owns: the node's LMDB environment (buckets, objects, multipart uploads, users, per-bucket
usage, system records), the LRU cache in front of object lookups, and group commit
(concurrent writers share one transaction and one sync). It is an index: the disks'
metadata files are the source it can be rebuilt from. Must not touch object data.
"""

from buckets.registry.cache import LRUCache
from buckets.registry.store import Registry, Op

__all__ = ["Registry", "Op", "LRUCache"]
