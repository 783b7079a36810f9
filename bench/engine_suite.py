"""Engine suite: ``Store`` on four temporary disk directories, in this process.

Figures, each with ``sync=True`` (fsync before acknowledging, the default) and
``sync=False``:

- ``Store.open`` of four fresh directories (format, placement table, registry).
- Large objects: PUT and GET MB/s of 64 MiB objects streamed from an async generator of
  1 MiB chunks (what the S3 layer hands the engine), a few repetitions. MB/s is object
  bytes over the summed per-object times; GET reads every byte through the reader.
- Small objects: 4 KiB PUT and GET ops/s from 16 concurrent asyncio tasks, with p50 and
  p99 latency of single operations.

The loop is uvloop, as in the server. Process CPU time (all threads) and page faults
are recorded with the large-object figures, since on a 2-core machine CPU per byte is
what limits throughput once the disks keep up.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import resource
import time

from bench.measure import MB, MiB, KiB, LatencyRun, ScratchDir, chunk_stream, payload, run_async, run_concurrently
from bench.report import SuiteResult

BUCKET = "bench"
CONCURRENCY = 16


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


async def _drain(store, key: str) -> int:
    reader = await store.get_object(BUCKET, key)
    n = 0
    try:
        async for chunk in reader:
            n += len(chunk)
    finally:
        await reader.aclose()
    return n


async def _large(store, result: SuiteResult, label: str, size: int, reps: int, chunks: list[bytes]) -> None:
    for op in ("PUT", "GET"):
        times = []
        cpu0, faults0 = time.process_time(), _faults()
        for i in range(reps):
            start = time.perf_counter()
            if op == "PUT":
                info = await store.put_object(BUCKET, f"large-{i}", chunk_stream(size, chunks), size)
                got = info.size
            else:
                got = await _drain(store, f"large-{i}")
            times.append(time.perf_counter() - start)
            if got != size:
                raise AssertionError(f"{op} large-{i}: {got} bytes, expected {size}")
        total = sum(times)
        cpu = time.process_time() - cpu0
        mib = size * reps / MiB
        fig = result.add(f"{size // MiB} MiB {op} {label}", size * reps / total / MB, "MB/s",
                         seconds_per_object=[round(t, 3) for t in times], cpu_seconds=round(cpu, 3),
                         faults_per_mib=round((_faults() - faults0) / mib))
        fig.note = (f"{cpu / total:.2f} CPUs busy, {cpu * 1000 / mib:.2f} ms CPU/MiB, "
                    f"{fig.extra['faults_per_mib']} page faults/MiB")


async def _small(store, result: SuiteResult, label: str, count: int) -> None:
    body = payload(4 * KiB)

    async def put(i: int) -> None:
        await store.put_object(BUCKET, f"small/{i:07d}", body, len(body))

    async def get(i: int) -> None:
        if await _drain(store, f"small/{i:07d}") != len(body):
            raise AssertionError(f"GET small/{i:07d}: wrong length")

    for op, fn in (("PUT", put), ("GET", get)):
        run: LatencyRun = await run_concurrently(fn, count, CONCURRENCY)
        _add_latency_figures(result, f"4 KiB {op} {label}", run)


def _add_latency_figures(result: SuiteResult, name: str, run: LatencyRun) -> None:
    note = ""
    if run.failures:
        note = f"{run.failures} failed: {run.first_error}"
    result.add(name, run.ops_per_second, "ops/s", note=note, ops=run.ops, failures=run.failures,
               wall_seconds=round(run.wall, 3))
    result.add(f"  {name} p50", run.p50_ms(), "ms")
    result.add(f"  {name} p99", run.p99_ms(), "ms")


async def _suite(result: SuiteResult, base_dir: str | None, quick: bool, profile: bool) -> None:
    from buckets.engine.store import Store

    size = (16 if quick else 64) * MiB
    reps = 1 if quick else 3
    small = 300 if quick else 3000
    result.params.update(large_object_bytes=size, large_repetitions=reps, small_object_bytes=4 * KiB,
                         small_ops=small, concurrency=CONCURRENCY, chunk_bytes=MiB)
    chunks = [payload(MiB) for _ in range(8)]
    for sync in (True, False):
        label = "sync=on" if sync else "sync=off"
        with ScratchDir(base_dir, f"buckets-bench-engine-{'sync' if sync else 'nosync'}-") as scratch:
            disks = scratch.sub("d1", "d2", "d3", "d4")
            start = time.perf_counter()
            store = await Store.open(disks, sync=sync)
            result.add(f"Store.open, 4 fresh disks, {label}", (time.perf_counter() - start) * 1000, "ms")
            try:
                result.params["layout"] = f"{store.layout[0]}+{store.layout[1]}"
                await store.make_bucket(BUCKET)
                await _large(store, result, label, size, reps, chunks)
                await _small(store, result, label, small)
                if profile and sync:
                    result.notes.append(await _profile(store, size, chunks))
            finally:
                await store.close()
    result.notes.append(f"data dirs under {base_dir or 'the system temp dir'}; layout "
                        f"{result.params.get('layout')}; {CONCURRENCY} tasks for 4 KiB ops; "
                        "MB/s = 10^6 bytes/s; event loop: uvloop")


async def _profile(store, size: int, chunks: list[bytes]) -> str:
    """cProfile of the event-loop thread for one large PUT+GET and 200 small PUTs (sync on).

    Worker threads (codec, hashing, disk I/O) are not in this profile: what it shows is
    the loop's own cost, which caps small-object throughput.
    """
    body = payload(4 * KiB)
    prof = cProfile.Profile()
    prof.enable()
    await store.put_object(BUCKET, "profile-large", chunk_stream(size, chunks), size)
    await _drain(store, "profile-large")
    await run_concurrently(lambda i: store.put_object(BUCKET, f"profile/{i}", body, len(body)), 200, CONCURRENCY)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    return "cProfile (event-loop thread, by tottime):\n" + out.getvalue()


def run(quick: bool = False, base_dir: str | None = None, profile: bool = False, **_: object) -> SuiteResult:
    result = SuiteResult("engine")
    run_async(_suite(result, base_dir, quick, profile))
    return result
