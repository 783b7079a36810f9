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


def tune_malloc(threshold: int = 64 << 20) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, min(threshold, 32 << 20)) == 1
    return mallopt(_M_TRIM_THRESHOLD, threshold) == 1 and ok


def tune_process() -> None:
    tune_malloc()
    gc.set_threshold(50_000, 50, 100)
    sys.setswitchinterval(0.001)


def freeze_startup_objects() -> None:
    """Call once the server is initialised: start-up objects are never collected anyway."""
    gc.collect()
    gc.freeze()
