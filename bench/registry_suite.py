"""Registry suite: ``buckets.registry.Registry`` directly, no disks, no engine.

Phase 1, on a registry with ``cache_size=0`` (so every lookup is an LMDB read transaction
plus msgpack decode):

- Populate: N objects (100k; 10k with --quick) written through ``commit()`` in group
  commits of 1000 ops, each entry shaped like the one ``Store.put_object`` files (copied
  field for field: a 2+2 single-part object with a content type and one user header).
- Cache miss: ``get_object`` of existing keys in random order, and of an absent key.
- Listing: every key of the bucket through ``scan_objects`` pages of 1000, resuming with
  ``start_after`` as the S3 layer does (median of three full listings); the same plus the
  ``ObjectInfo`` conversion ``Store.list_objects`` adds; and a delimiter listing that
  folds the keys into 100 common prefixes.

Phase 2, reopened with the default cache and every entry looked up once (a warm server):

- Cache hit: ``get_object`` of a cached key; timeit, best of 5 repeats.
- Listing again: the cached dicts are GC-tracked, so each full collection that the
  listing's allocations trigger walks all of them; this shows what that costs.

Every figure is measured in this thread's CPU time (wall-clock rates go to the JSON):
the work is single-threaded, and CPU time does not count other processes on the machine.
Phase 1 runs first on purpose: a closed ``Registry`` is not freed at once (its frames
stay referenced), and a full cache left alive would slow every later figure.
"""

from __future__ import annotations

import gc
import itertools
import random
import statistics
import time
import timeit
import uuid

from bench.measure import KiB, ScratchDir, run_async
from bench.report import SuiteResult, at_least, below

BUCKET = "bench"
PAGE = 1000
HIT_TARGET_US = 2.0
LIST_TARGET_KEYS = 200_000.0


def object_name(i: int) -> str:
    # 100 "directories" of the kind real buckets have, keys sorted within each.
    return f"logs/host-{i % 100:02d}/2024-11-21/event-{i:08d}.json"


def realistic_entry(i: int, now: float) -> dict:
    """A registry entry as ``Store.put_object`` builds it (engine/store.py), for a 2+2 object."""
    size = 4 * KiB + i % 997
    etag = uuid.uuid4().hex
    return {
        "vid": "null", "wid": uuid.uuid4().hex, "mt": now, "size": size, "etag": etag,
        "h": {"content-type": "application/json"}, "um": {"source": "bench"}, "ck": {},
        "ckt": None, "ch": uuid.uuid4().hex + uuid.uuid4().hex, "sc": "STANDARD", "k": 2, "m": 2,
        "bs": 1 << 20, "disks": [uuid.uuid4().hex[:16] for _ in range(4)], "gen": 1, "inline": True,
        "parts": [[1, size, etag, {}, now]],
    }


def _timeit_us(stmt, number: int) -> float:
    """CPU µs per call of this thread, best of 5 repeats (timeit's advice: the minimum is the signal).

    Thread CPU time rather than wall time, so other processes on a shared machine do not
    inflate the figure.
    """
    return min(timeit.repeat(stmt, number=number, repeat=5, timer=time.thread_time)) / number * 1e6


async def _populate(registry, count: int) -> float:
    from buckets.registry import Op

    now = time.time()
    await registry.commit([Op("put_bucket", BUCKET, value={"created": now})])
    start = time.perf_counter()
    for base in range(0, count, PAGE):
        ops = [Op("put_object", BUCKET, object_name(i), realistic_entry(i, now))
               for i in range(base, min(count, base + PAGE))]
        await registry.commit(ops)
    return time.perf_counter() - start


def _list_all(registry, prefix: str = "", delimiter: str = "", to_info: bool = False
              ) -> tuple[int, int, list[float]]:
    """(keys, prefixes, per-page seconds) for one full listing of the bucket."""
    from buckets.engine.meta import entry_to_info

    keys = prefixes = 0
    pages: list[float] = []
    after = ""
    while True:
        t0 = time.perf_counter()
        objects, cps, truncated = registry.scan_objects(BUCKET, prefix, delimiter, after, PAGE)
        if to_info:
            infos = [entry_to_info(BUCKET, k, e) for k, e in objects]
            del infos
        pages.append(time.perf_counter() - t0)
        keys += len(objects)
        prefixes += len(cps)
        if not truncated:
            return keys, prefixes, pages
        after = max(objects[-1][0] if objects else "", cps[-1] if cps else "")


def _add_listing(result: SuiteResult, name: str, registry, count: int, target, note: str = "",
                 **kwargs) -> None:
    """Median of three full listings (the first also warms the LMDB map) as one figure."""
    rates, wall_rates, pages = [], [], []
    full_gcs = gc.get_stats()[2]["collections"]
    for _ in range(3):
        cpu0, start = time.thread_time(), time.perf_counter()
        n, _, pages = _list_all(registry, **kwargs)
        rates.append(n / (time.thread_time() - cpu0))
        wall_rates.append(n / (time.perf_counter() - start))
        if n != count:
            raise AssertionError(f"{name}: listed {n} keys, expected {count}")
    pages.sort()
    result.add(name, statistics.median(rates), "keys/s", target, note, runs=[round(r) for r in rates],
               wall_runs=[round(r) for r in wall_rates],
               page_p50_ms=round(pages[len(pages) // 2] * 1000, 3), page_max_ms=round(pages[-1] * 1000, 3),
               full_gc_passes=gc.get_stats()[2]["collections"] - full_gcs)


async def _suite(result: SuiteResult, base_dir: str | None, quick: bool) -> None:
    from buckets.registry import Registry

    count = 10_000 if quick else 100_000
    lookups = 2_000 if quick else 10_000
    result.params.update(objects=count, page=PAGE, group_commit_ops=PAGE)
    keys = [object_name(i) for i in range(count)]
    with ScratchDir(base_dir, "buckets-bench-registry-") as scratch:
        path = scratch.sub("registry")[0]
        # Phase 1, no cache: populate (so no entry is cached), then LMDB lookups and listing.
        registry = Registry(path, cache_size=0, sync=True)
        registry.start()
        try:
            seconds = await _populate(registry, count)
            result.add("populate (group commits of 1000, sync on)", count / seconds, "keys/s",
                       note="wall clock: the commits run in the registry's thread")
            get = registry.get_object
            shuffled = random.Random(1).sample(keys, min(len(keys), 20_000))
            it = itertools.cycle(shuffled)
            result.add("get_object, cache miss (LMDB read)", _timeit_us(lambda: get(BUCKET, next(it)), lookups), "µs")
            result.add("get_object, absent key", _timeit_us(lambda: get(BUCKET, "no/such/key"), lookups), "µs")
            for name, kwargs in (("listing, scan_objects pages of 1000", {}),
                                 ("listing + ObjectInfo per key", {"to_info": True})):
                target = at_least(LIST_TARGET_KEYS) if not kwargs else None
                _add_listing(result, name, registry, count, target, **kwargs)
            cpu0 = time.thread_time()
            n, cps, _ = _list_all(registry, prefix="logs/", delimiter="/")
            result.add("listing 'logs/' with delimiter '/'", (time.thread_time() - cpu0) * 1000, "ms",
                       note=f"{n} keys and {cps} common prefixes returned (seeks past each prefix)")
            result.add("registry size on disk", registry.size_bytes() / count, "bytes/key")
        finally:
            await registry.close()
        get = registry = None
        gc.collect()

        # Phase 2, default cache warmed with every entry (as on a server that has served them).
        registry = Registry(path, sync=True)
        try:
            for key in keys:
                registry.get_object(BUCKET, key)
            hot = keys[count // 2]
            get = registry.get_object
            result.add("get_object, cache hit", _timeit_us(lambda: get(BUCKET, hot), 200_000 if not quick else 50_000),
                       "µs", below(HIT_TARGET_US))
            _add_listing(result, f"listing, LRU cache holding all {count:,} entries", registry, count, None,
                         note="as on a warm server: the cached dicts make every full GC pass longer")
        finally:
            await registry.close()
    result.notes.append("all figures use this thread's CPU time, not wall time (wall-clock listing rates "
                        "are in the JSON as wall_runs); lookups: timeit best of 5, lambda call overhead "
                        "(~0.05 µs) included; listings: median of 3, msgpack decode of every entry included")


def run(quick: bool = False, base_dir: str | None = None, **_: object) -> SuiteResult:
    result = SuiteResult("registry")
    run_async(_suite(result, base_dir, quick))
    return result
