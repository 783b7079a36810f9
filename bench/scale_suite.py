"""Scale suite (issue 15): the cost per operation from 10k to 1,000,000 objects.

    python -m bench --suite scale [--quick] [--dir DIR]

One bucket on four fresh disk directories, filled through the engine's API in-process
(``Store.put_object``, many concurrent tasks; no HTTP, to save time) with
small objects of 1-4 KiB, up to 10k, 100k and 1M objects (``--quick``: 2k, 10k, 20k). The
Store is opened as ``buckets server`` opens it with its defaults (``--sync on``, the small
record log, the registry's small-object copy, the default ``--cache-size``) except that the
background scanner and log compaction are off (``--scanner-rate 0``, see ``SCANNER_RATE``);
every write is synced, and the process is tuned as the server tunes itself
(``buckets.runtime.tune_process``). At each size:

- PUT ops/s, p50, p99 and CPU per PUT over the last stretch of the population (the last 5k
  PUTs, 1k quick), from the same concurrent tasks as the rest of the population;
- ``Store.open`` on the filled disks (a fresh Store and registry: the LRU is empty);
- GET p50/p99 with the registry cache cold (the first read of each sampled key after that
  open) and warm (the same keys again): ``Store.get_object`` and the reader drained; one
  operation at a time, so a percentile is one operation's cost. The OS page cache is NOT
  dropped: "cold" is the registry's LRU, not the disks;
- HEAD (``Store.head_object``: the entry's lookup) p50/p99, cold and warm, on other keys;
- ListObjectsV2's engine path: ``Store.list_objects`` in pages of 1000 over the ``s/`` prefix
  from a random point, keys/s, median of 3;
- RSS from /proc/self/smaps_rollup split into heap (``Anonymous``) and mapped file pages
  (``Rss - Anonymous``: LMDB's map, the interpreter and libraries), once every key has been
  looked up (the LRU then holds min(objects, cache size) entries, as on a server that served
  them all); the heap's growth from just after ``Store.open`` to then, per LRU entry;
- bytes per object: st_blocks of everything under the four disks (record logs, metadata,
  the LMDB registry) divided by the objects, with the registry's share;
- how many CPUs other processes kept busy during the PUT stretch and during the reads (notes).

Every population and every measurement runs in its own child interpreter
(``python -m bench.scale_suite --child SPEC``), like a server restarted between them: the
RSS is that workload's alone, the registry cache starts empty, and the server's process
tuning does not leak into other suites.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import random
import statistics
import sys
import time

from bench.measure import (
    KiB, LatencyRun, OtherLoad, ScratchDir, percentile, run_async, run_child, run_concurrently,
)
from bench.report import SuiteResult, at_least, below

BUCKET = "scale"
PREFIX = "s/"
CONCURRENCY = 64  # population tasks: more than 16 lets more PUTs share a log append and fsync
FULL = dict(steps=(10_000, 100_000, 1_000_000), stretch=5_000, sample=2_000, list_keys=50_000)
QUICK = dict(steps=(2_000, 10_000, 20_000), stretch=1_000, sample=500, list_keys=5_000)
MIN_SIZE, MAX_SIZE = 1 * KiB, 4 * KiB
HEAP_TARGET_MB = 300
FLAT = 1.2  # per-op cost within 20%: latency ratio < 1.2, rate ratio >= 1/1.2
# The scanner is off, and with it the periodic log compaction (its interval is the scanner's
# cycle pause). Both work at a fixed pace per second, whatever the object count, and start
# only after that pause (60 s; compaction also leaves segments alone for 10 minutes): they ran
# during the long 1M population and not during the short 10k one, which made the sizes'
# PUT figures incomparable (bench/README.md, "scale": a compaction pass over clean segments
# costs ~0.3 CPUs, +~400 µs per PUT).
SCANNER_RATE = 0
MB = 1_000_000


def key_of(i: int) -> str:
    """Object i's key: hashed, so population inserts all over the key space (no append order)."""
    d = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=8).hexdigest()
    return f"{PREFIX}{d[:2]}/{d[2:]}-{i}"


def size_of(i: int) -> int:
    return MIN_SIZE + (i * 2654435761) % (MAX_SIZE - MIN_SIZE + 1)


def _smaps() -> dict[str, int]:
    out = {}
    with open("/proc/self/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("Rss:", "Anonymous:"):
                out[parts[0][:-1]] = int(parts[1]) * 1024
    return out


def _store_kwargs() -> dict:
    """What ``buckets server`` passes ``Store.open`` with every setting at its default but the
    scanner's rate (``SCANNER_RATE``)."""
    from buckets.admin import make_scanner_config
    from buckets.cli.config import Config

    cfg = Config()
    return dict(parity=cfg.parity, sync=cfg.sync, cache_size=cfg.cache_size, inline_threshold=cfg.inline_threshold,
                small_log=cfg.small_log, small_copy_limit=cfg.small_copy_limit,
                scanner_config=make_scanner_config(SCANNER_RATE, cfg.scanner_mb_rate))


class _Phase:
    """One child interpreter's work: populate a range of objects, or measure one size."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.p = QUICK if spec["quick"] else FULL
        self.disks: list[str] = spec["disks"]
        self.figures: list[dict] = []
        self.values: dict = {}  # what the parent needs for the ratios and params
        self.buf = os.urandom(MAX_SIZE * 2)
        self.t0 = time.perf_counter()

    def add(self, name: str, value: float | None, unit: str, note: str = "", **extra) -> None:
        self.figures.append(dict(name=name, value=value, unit=unit, note=note, extra=extra))

    def progress(self, text: str) -> None:
        print(f"scale [{self.spec['phase']} {time.perf_counter() - self.t0:6.0f}s] {text}", file=sys.stderr, flush=True)

    def body(self, i: int) -> bytes:
        off = (i * 131) % MAX_SIZE
        return self.buf[off:off + size_of(i)]

    async def run(self) -> None:
        await (self.populate() if self.spec["phase"] == "populate" else self.measure())

    async def open_store(self):
        """``Store.open`` as the server opens it, then the server's gc.freeze of start-up objects."""
        from buckets.engine.store import Store
        from buckets.runtime import freeze_startup_objects

        t0 = time.perf_counter()
        store = await Store.open(self.disks, **_store_kwargs())
        self.open_seconds = time.perf_counter() - t0
        freeze_startup_objects()
        return store

    # -- population -----------------------------------------------------------------------
    async def populate(self) -> None:
        start, first, stop = self.spec["start"], self.spec["first"], self.spec["stop"]
        store = await self.open_store()
        try:
            self.values["layout"] = f"{store.layout[0]}+{store.layout[1]}"
            if start == 0:
                await store.make_bucket(BUCKET)
            t0 = time.perf_counter()
            await self.fill(store, start, first)
            fill_rate = (first - start) / (time.perf_counter() - t0) if first > start else None
            self.progress(f"measured stretch {first:,} -> {stop:,}")
            cpu0, load = time.process_time(), OtherLoad()
            run = await self.stretch(store, first, stop - first)
            cpu_us = (time.process_time() - cpu0) / run.ops * 1e6
            others = load.cpus()
        finally:
            await store.close()
        label = f"{stop:,}"
        note = "" if fill_rate is None else f"population {start:,} -> {first:,} before it: {fill_rate:,.0f} PUT/s; "
        self.add(f"{label}: PUT, last {run.ops:,}", run.ops_per_second, "ops/s", wall_seconds=round(run.wall, 3),
                 other_processes_cpus=others, note=note + _busy(others))
        self.add(f"  {label}: PUT p50", run.p50_ms(), "ms")
        self.add(f"  {label}: PUT p99", run.p99_ms(), "ms")
        self.add(f"  {label}: PUT CPU per op", cpu_us, "µs", note="this process's CPU time, all threads")
        self.values["put"] = run.ops_per_second
        self.values["put cpu"] = cpu_us

    async def fill(self, store, start: int, stop: int) -> None:
        """PUT objects start..stop-1 from CONCURRENCY tasks, keeping no per-op record (memory)."""
        next_i = start
        failures: list[str] = []
        t0 = time.perf_counter()
        self.progress(f"populating {start:,} -> {stop:,}")

        async def worker() -> None:
            nonlocal next_i
            while next_i < stop and not failures:
                i = next_i
                next_i += 1
                body = self.body(i)
                try:
                    await store.put_object(BUCKET, key_of(i), body, len(body))
                except Exception as exc:  # fatal: scale figures over failed PUTs mean nothing
                    failures.append(f"PUT {key_of(i)}: {type(exc).__name__}: {exc}")
                    return
                if i % 50_000 == 0 and i > start:
                    self.progress(f"{i:,} objects, {(i - start) / (time.perf_counter() - t0):,.0f} PUT/s")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        if failures:
            raise RuntimeError(failures[0])

    async def stretch(self, store, start: int, count: int) -> LatencyRun:
        async def put(j: int) -> None:
            body = self.body(start + j)
            await store.put_object(BUCKET, key_of(start + j), body, len(body))

        run = await run_concurrently(put, count, CONCURRENCY)
        if run.failures:
            raise RuntimeError(f"{run.failures} PUTs of the measured stretch failed: {run.first_error}")
        return run

    # -- reads, listing, memory, space ------------------------------------------------------
    @staticmethod
    async def sequential(op, indices: list[int]) -> list[float]:
        clock = time.perf_counter
        out = []
        for i in indices:
            t0 = clock()
            await op(i)
            out.append(clock() - t0)
        return out

    @staticmethod
    async def get(store, i: int) -> None:
        reader = await store.get_object(BUCKET, key_of(i))
        n = 0
        try:
            async for chunk in reader:
                n += len(chunk)
        finally:
            await reader.aclose()
        if n != size_of(i):
            raise AssertionError(f"GET {key_of(i)}: {n} bytes, expected {size_of(i)}")

    @staticmethod
    async def head(store, i: int) -> None:
        info = await store.head_object(BUCKET, key_of(i))
        if info.size != size_of(i):
            raise AssertionError(f"HEAD {key_of(i)}: size {info.size}, expected {size_of(i)}")

    async def listing(self, store, n: int, rng: random.Random) -> tuple[float, list[float], int]:
        """keys/s of pages of 1000 over PREFIX from a random point; median of 3 runs."""
        want = min(n, self.p["list_keys"])
        rates, listed = [], 0
        for _ in range(3):
            # Start at a random 2-hex-digit sub-prefix ("s/xx" sorts before every "s/xx/..."),
            # leaving on average at least ``want`` keys after it.
            marker = f"{PREFIX}{rng.randint(0, int(256 * (1 - want / n))):02x}"
            got = 0
            t0 = time.perf_counter()
            while got < want:
                res = await store.list_objects(BUCKET, prefix=PREFIX, start_after=marker, limit=1000)
                got += len(res.objects)
                if not res.is_truncated:
                    break
                marker = res.next_marker
            rates.append(got / (time.perf_counter() - t0))
            listed = got
        return statistics.median(rates), rates, listed

    async def measure(self) -> None:
        from bench.smallwrites_suite import allocated

        n = self.spec["objects"]
        label = f"{n:,}"
        v = self.values
        store = await self.open_store()
        try:
            open_ms = self.open_seconds * 1000
            cached_at_open = len(store.registry.cache)
            self.add(f"{label}: Store.open (filled disks)", open_ms, "ms",
                     note=f"LRU held {cached_at_open} entries after the open" if cached_at_open else "")
            gc.collect()
            mem0 = _smaps()
            load, first_read = OtherLoad(), len(self.figures)

            rng = random.Random(1_000_003 + n)
            sample = min(self.p["sample"], n // 2)
            picked = rng.sample(range(n), 2 * sample)
            for name, op, keys in (("GET", self.get, picked[:sample]), ("HEAD", self.head, picked[sample:])):
                cold = await self.sequential(lambda i, op=op: op(store, i), keys)
                warm = await self.sequential(lambda i, op=op: op(store, i), keys)
                for state, lat in (("cold", cold), ("warm", warm)):
                    p50, p99 = percentile(lat, 50) * 1e6, percentile(lat, 99) * 1e6
                    self.add(f"{label}: {name} {state} p50", p50, "µs", ops=len(lat))
                    self.add(f"  {label}: {name} {state} p99", p99, "µs")
                    v[f"{name} {state} p50"] = p50

            rate, rates, listed = await self.listing(store, n, rng)
            self.add(f"{label}: list pages of 1000", rate, "keys/s", runs=[round(r) for r in rates],
                     keys_per_run=listed, note=f"{listed:,} keys per run from a random point in '{PREFIX}', median of 3")
            v["list"] = rate
            others = load.cpus()
            self.figures[first_read]["note"] = _busy(others) + " (GET, HEAD, list)"
            self.figures[first_read]["extra"]["other_processes_cpus"] = others

            # Every key looked up once: the LRU then holds what a server that served them all holds.
            self.progress(f"looking up all {n:,} keys")
            get_object = store.registry.get_object
            for i in range(n):
                if get_object(BUCKET, key_of(i)) is None:
                    raise AssertionError(f"{key_of(i)} missing from the registry")
            entries = len(store.registry.cache)
            gc.collect()
            mem = _smaps()
            heap, rss = mem["Anonymous"], mem["Rss"]
            lru = heap - mem0["Anonymous"]
            per_entry = lru / entries if entries else 0.0
            self.add(f"{label}: RSS", rss / MB, "MB")
            self.add(f"  {label}: heap (anonymous)", heap / MB, "MB", note=(
                f"{mem0['Anonymous'] / MB:,.0f} MB after Store.open (empty LRU); "
                f"+{lru / MB:,.0f} MB with {entries:,} entries in the LRU, {per_entry:,.0f} B per entry"),
                lru_entries=entries, heap_after_open=mem0["Anonymous"], lru_bytes_per_entry=round(per_entry))
            self.add(f"  {label}: mapped files (LMDB map, libraries)", (rss - heap) / MB, "MB")
            self.add(f"  {label}: heap per LRU entry", per_entry, "B")
            v["heap"] = heap / MB

            total = allocated(self.disks)
            registry = allocated([store.registry.path])
            body_mean = (MIN_SIZE + MAX_SIZE) / 2
            self.add(f"{label}: bytes per object", total / n, "B", note=(
                f"{total / n / body_mean:.2f}x the mean body ({body_mean:,.0f} B); registry {registry / n:,.0f} "
                f"B/object ({registry / MB:,.0f} MB), the disks' logs and metadata {(total - registry) / n:,.0f} B/object"),
                allocated_bytes=total, registry_bytes=registry)
            self.progress(f"{label} objects: GET warm p50 {v['GET warm p50']:.0f} µs, heap {heap / MB:,.0f} MB, "
                          f"{total / n:,.0f} B/object")
        finally:
            await store.close()


def _busy(cpus: float | None) -> str:
    return "" if cpus is None else f"other processes kept {cpus:.2f} CPUs busy meanwhile"


def _child(spec: dict) -> dict:
    return run_child("bench.scale_suite", spec)


def _ratios(result: SuiteResult, values: dict[int, dict]) -> None:
    sizes = sorted(values)
    lo, hi = sizes[0], sizes[-1]
    a, b = values[lo], values[hi]
    for key, name, is_rate, targeted in (("GET warm p50", "GET warm p50", False, True),
                                         ("HEAD warm p50", "HEAD warm p50", False, True),
                                         ("list", "list keys/s", True, True), ("put", "PUT ops/s", True, True),
                                         ("put cpu", "PUT CPU per op", False, False),
                                         ("GET cold p50", "GET cold p50", False, False),
                                         ("HEAD cold p50", "HEAD cold p50", False, False)):
        if a.get(key) and b.get(key) is not None:
            target = (at_least(round(1 / FLAT, 2)) if is_rate else below(FLAT)) if targeted else None
            result.add(f"ratio {hi:,} / {lo:,}: {name}", b[key] / a[key], "x", target)
    result.add(f"heap at {hi:,} objects", b["heap"], "MB", below(HEAP_TARGET_MB),
               note="the default --cache-size, every key looked up once; MB = 10^6 bytes")


def run(quick: bool = False, base_dir: str | None = None, **_: object) -> SuiteResult:
    p = QUICK if quick else FULL
    kwargs = _store_kwargs()
    result = SuiteResult("scale")
    result.params.update(steps=list(p["steps"]), put_stretch=p["stretch"], read_sample=p["sample"],
                         list_keys=p["list_keys"], concurrency=CONCURRENCY, disks=4, object_bytes=[MIN_SIZE, MAX_SIZE],
                         sync=kwargs["sync"], cache_size=kwargs["cache_size"], small_log=kwargs["small_log"],
                         small_copy_limit=kwargs["small_copy_limit"])
    values: dict[int, dict] = {}
    with ScratchDir(base_dir, "buckets-bench-scale-") as scratch:
        disks = scratch.sub("d1", "d2", "d3", "d4")
        count = 0
        for n in p["steps"]:
            first = max(count, n - p["stretch"])
            docs = [_child(dict(phase="populate", quick=quick, disks=disks, start=count, first=first, stop=n)),
                    _child(dict(phase="measure", quick=quick, disks=disks, objects=n))]
            values[n] = {}
            for doc in docs:
                for f in doc["figures"]:
                    result.add(f["name"], f["value"], f["unit"], note=f["note"], **f["extra"])
                values[n].update(doc["values"])
            result.params.setdefault("layout", values[n].get("layout"))
            count = n
    _ratios(result, values)
    result.notes += [
        f"data dirs under {base_dir or 'the system temp dir'}; layout {result.params.get('layout')}; the Store "
        f"opened as `buckets server` opens it with its defaults: sync on for every PUT (population included), the "
        f"small record log on, the registry's copy of objects up to {kwargs['small_copy_limit']:,} B, --cache-size "
        f"{kwargs['cache_size']:,} entries; the background scanner and log compaction off (--scanner-rate "
        f"{SCANNER_RATE}: both run at a fixed pace per second, whatever the object count); the process tuned as the server's "
        f"(buckets.runtime.tune_process); objects of {MIN_SIZE:,}-{MAX_SIZE:,} B under hashed keys '{PREFIX}xx/...'",
        f"population and the measured PUT stretch: {CONCURRENCY} concurrent tasks calling Store.put_object; each "
        "population and each measurement runs in its own fresh interpreter (a server restart)",
        "GET/HEAD: one operation at a time on a random sample of keys, first right after Store.open (the registry's "
        "LRU empty: 'cold'), then the same keys again ('warm'). The OS page cache is NOT dropped: 'cold' reads "
        "LMDB pages from memory, not from the disk",
        "RSS from /proc/self/smaps_rollup after every key was looked up once (the LRU holds min(objects, cache "
        "size) entries); heap = Anonymous, mapped files = Rss - Anonymous (LMDB's map, the interpreter, libraries)",
    ]
    return result


def _child_main(argv: list[str]) -> int:
    spec = json.loads(argv[argv.index("--child") + 1])
    out = argv[argv.index("--out") + 1]
    from buckets.runtime import tune_process

    tune_process()  # as `buckets server` does before its loop starts: malloc, gc thresholds, GIL switch
    phase = _Phase(spec)
    run_async(phase.run())
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"figures": phase.figures, "values": phase.values}, fh)
    return 0


__all__ = ["run", "key_of", "size_of"]

if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(_child_main(sys.argv))
    print("usage: python -m bench --suite scale [--quick] [--dir DIR]", file=sys.stderr)
    sys.exit(2)
