"""Process-wide tuning for a storage server: malloc, garbage collector, GIL switching.

Called once by ``buckets server`` before the event loop starts (embedded users may call
``tune_process()`` themselves). Each setting is a measured fix (bench/README.md):

- glibc returns the few MiB of per-block temporary buffers (pieces, parity, frames) to
  the kernel after every block and faults them back in for the next one: ~740 page faults
  per 1 MiB encode, halving codec throughput. Raising the mmap and trim thresholds keeps
  those buffers in the heap.
- The registry cache holds up to a million small dicts; every full collection walks all
  of them. Larger generation thresholds make full collections rare, and ``gc.freeze()``
  moves everything allocated at start-up out of the collector's way.
- Worker threads (disk I/O, hashing) hold the GIL between system calls; a shorter switch
  interval lets the event loop get it back sooner after each of its own system calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 4 << 20, trim_threshold: int = 16 << 20, arenas: int = 4) -> bool:
    """Keep block-sized buffers (1-3 MiB) in the heap, but bound what the heap may hoard:
    a 16 MiB trim threshold and 4 arenas keep RSS flat under many concurrent transfers
    (measured: tests/slow/test_rss_large_upload.py)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    results = [mallopt(_M_MMAP_THRESHOLD, mmap_threshold), mallopt(_M_TRIM_THRESHOLD, trim_threshold),
               mallopt(_M_ARENA_MAX, arenas)]
    return all(r == 1 for r in results)


def tune_process() -> None:
    tune_malloc()
    gc.set_threshold(50_000, 50, 100)
    sys.setswitchinterval(0.001)


def freeze_startup_objects() -> None:
    """Call once the server is initialised: start-up objects are never collected anyway."""
    gc.collect()
    gc.freeze()
