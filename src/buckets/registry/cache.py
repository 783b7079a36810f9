"""A plain LRU over a dict: O(1) get/put, hit path is two dict operations.

Reads admit entries (``put`` after a miss); writes only refresh what is already cached
(``replace``). A write that admitted its entry made every PUT of a new key evict one once the
LRU was full: a backup writing a million objects pushed out every entry clients were reading,
and each PUT paid for the eviction and for a heap of cached entries that nothing read (measured
in session 56: 10-12% more CPU per small PUT with a full 50k-entry LRU than with write-around,
and rising with the process's age; flat without).
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from typing import Any

# Set (``background_lookups()``) in a background worker's task: the compactor, the scanner,
# a refill, the heal worker. Their lookups walk every key once; they neither enter the LRU
# nor refresh what is in it, so a pass over a million records does not push out the entries
# that clients are reading.
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("buckets_background_lookups", default=False)


def background_lookups() -> None:
    """From here on, in this task (and the tasks it starts), registry lookups leave the cache
    as it is."""
    _BACKGROUND.set(True)


def in_background() -> bool:
    return _BACKGROUND.get()


class LRUCache:
    __slots__ = ("_data", "capacity", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self.capacity = capacity
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> Any:
        try:
            value = self._data[key]
        except KeyError:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def peek(self, key: Any) -> Any:
        """The value if cached, without refreshing it or counting a hit or a miss."""
        return self._data.get(key)

    def put(self, key: Any, value: Any) -> None:
        if self.capacity <= 0:
            return
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.capacity:
            data.popitem(last=False)

    def replace(self, key: Any, value: Any) -> None:
        """A write's new value: stored if the key is cached (its recency unchanged), otherwise
        nothing (a write does not admit; the next read does, from LMDB)."""
        data = self._data
        if key in data:
            data[key] = value

    def discard(self, key: Any) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
