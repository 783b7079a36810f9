"""Rebuild suite: a single node's registry rebuilt from its disks, at two object counts.

A node whose registry disk is lost rebuilds the registry from the other disks at its next
start (``buckets.engine.rebuild``): it is down until that is done, and the rebuild must fit
in the node's memory whatever the object count.

For each size (20,000 and 100,000 objects; 5,000 and 20,000 with --quick), in a fresh child
interpreter each time (a server restart):

1. populate: ``Store.put_object`` of small objects (1-8 KiB: records of the disks' logs)
   from 32 tasks, sync off (the population is not what is measured);
2. rebuild: remove the registry from every disk, then ``Store.open`` (which rebuilds it),
   timed; a thread samples the process's anonymous memory (``RssAnon``, the heap) every
   0.1 s. The registry's cache is 1,000 entries, so that its fill does not hide what the
   rebuild holds.

Figures: rebuild seconds and objects/s per size, the heap's peak per size, and the heap's
growth per object between the two sizes (target: under 1 KB per object; before 2026-12-05
the rebuild held every write's metadata of every disk, ~10 KB per object).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import threading
import time

from bench.measure import KiB, ScratchDir, run_async, run_child
from bench.report import SuiteResult, below

BUCKET = "rebuild"
FULL = (20_000, 100_000)
QUICK = (5_000, 20_000)
CONCURRENCY = 32
CACHE_SIZE = 1_000
PER_OBJECT_TARGET_KB = 1.0
MB = 1_000_000


def _heap_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


async def _populate(disks: list[str], start: int, stop: int) -> None:
    from buckets.engine.store import Store

    store = await Store.open(disks, sync=False, small_log=True, background=False, cache_size=CACHE_SIZE)
    try:
        if start == 0:
            await store.make_bucket(BUCKET)
        body = os.urandom(8 * KiB)
        nxt = start

        async def worker() -> None:
            nonlocal nxt
            while nxt < stop:
                i, nxt = nxt, nxt + 1
                size = 1 * KiB + (i * 2654435761) % (7 * KiB)
                await store.put_object(BUCKET, f"r/{i % 97:02d}/{i:09d}", body[:size], size)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        await store.close()


async def _rebuild(disks: list[str]) -> dict:
    from buckets.engine.store import Store
    from buckets.storage.format import REGISTRY_DIR

    for disk in disks:
        shutil.rmtree(os.path.join(disk, REGISTRY_DIR), ignore_errors=True)
    before = _heap_kb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _heap_kb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    store = await Store.open(disks, sync=False, small_log=True, background=False, cache_size=CACHE_SIZE)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _heap_kb())
    try:
        objects = store.registry.usage.get(BUCKET, [0, 0])[0]
    finally:
        await store.close()
    return {"seconds": seconds, "objects": objects, "heap_before_kb": before, "heap_peak_kb": peak[0]}


def _child(spec: dict) -> dict:
    return run_child("bench.rebuild_suite", spec)


def run(quick: bool = False, base_dir: str | None = None, **_: object) -> SuiteResult:
    sizes = QUICK if quick else FULL
    result = SuiteResult("rebuild")
    result.params.update(sizes=list(sizes), disks=4, concurrency=CONCURRENCY, cache_size=CACHE_SIZE,
                         object_bytes=[1 * KiB, 8 * KiB])
    runs: dict[int, dict] = {}
    with ScratchDir(base_dir, "buckets-bench-rebuild-") as scratch:
        disks = scratch.sub("d1", "d2", "d3", "d4")
        count = 0
        for n in sizes:
            _child(dict(phase="populate", disks=disks, start=count, stop=n))
            count = n
            got = runs[n] = _child(dict(phase="rebuild", disks=disks))
            if got["objects"] != n:
                raise RuntimeError(f"the rebuilt registry counts {got['objects']} objects, {n} were written")
            result.add(f"{n:,} objects: rebuild", got["seconds"], "s")
            result.add(f"  {n:,} objects: rebuild rate", n / got["seconds"], "objects/s")
            result.add(f"  {n:,} objects: heap peak", got["heap_peak_kb"] * 1024 / MB, "MB",
                       note=f"{got['heap_before_kb'] * 1024 / MB:,.0f} MB before Store.open")
    lo, hi = sizes[0], sizes[-1]
    growth = (runs[hi]["heap_peak_kb"] - runs[lo]["heap_peak_kb"]) * 1024 / (hi - lo) / 1000
    # (--quick's sizes sit in the climb of the helper threads' malloc arenas to ~150 MB: no target there)
    result.add(f"heap growth per object, {lo:,} -> {hi:,}", growth, "KB",
               None if quick else below(PER_OBJECT_TARGET_KB), note="KB = 1,000 bytes")
    result.notes.append(f"data dirs under {base_dir or 'the system temp dir'}; 4 disks (2+2), objects of 1-8 KiB "
                        "(records of the disks' logs); population sync off, not measured; each population and "
                        "rebuild in a fresh interpreter; heap = RssAnon, sampled every 0.1 s")
    return result


def _child_main(argv: list[str]) -> int:
    spec = json.loads(argv[argv.index("--child") + 1])
    out = argv[argv.index("--out") + 1]
    if spec["phase"] == "populate":
        run_async(_populate(spec["disks"], spec["start"], spec["stop"]))
        doc: dict = {}
    else:
        doc = run_async(_rebuild(spec["disks"]))
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    return 0


__all__ = ["run"]

if __name__ == "__main__":
    sys.exit(_child_main(sys.argv))
