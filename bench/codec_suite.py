"""Codec suite: ``ErasureCodec`` encode and reconstruct throughput on 1 MiB blocks.

Encode is ``encode_block`` (split into k pieces, zfec parity, xxh3 framing of all n
pieces): what a PUT spends per block besides hashing. Decode is ``decode_block`` with the
first m data pieces missing, the worst case a GET can hit (every parity piece in use).
The 4+2 layout also gets a breakdown (parity alone, framing alone, the healthy-read path)
and a two-thread figure, to show where encode time goes and whether it scales past a core.

Why child processes: every encode allocates about 3 MiB of short-lived 256 KiB-1 MiB
buffers, and glibc's malloc may return them to the kernel after each call (mmap and
heap-trim thresholds that adapt to what the process freed earlier), costing ~700 page
faults per block. So a figure depends on what ran before it in the same process. Each
measurement set therefore runs in a fresh interpreter: once with the malloc settings
``buckets server`` runs with (``buckets.runtime.tune_malloc()``) and once with glibc's
defaults (what an untuned process gets), and page faults per block are reported.

Every single-thread rate is the median of several timed runs, each at least
``min_seconds`` of the thread's CPU time, and counts MB per CPU-second: the target is per
core, and CPU time does not count the time other processes held the core (wall-clock
rates go to the JSON). The two-thread figure is wall-clock, since it is about using two
cores at once. MB/s counts block (object) bytes, not shard bytes.
Each layout (and the breakdown) gets its own process, so none warms the allocator for another.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench.measure import MB, MiB, payload
from bench.report import SuiteResult, at_least

LAYOUTS = ((2, 2), (4, 2), (8, 4))
ENCODE_TARGET_MBPS = 1000.0  # 4+2, per core
TIMING = {"quick": (0.1, 3), "full": (0.5, 5)}  # (seconds per timed run, runs)
# glibc's malloc environment knobs: cleared for the children, so neither variant inherits them
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _rate(fn: Callable[[], object], nbytes: int, min_seconds: float, runs: int) -> tuple[float, dict]:
    """Median MB per CPU-second of this thread over ``runs`` timed loops, and extras for the JSON.

    CPU time, not wall time: this is a per-core figure, and on a shared machine wall time
    also counts the time other processes held the core. The wall-clock rate is kept too.
    """
    fn()  # warm: first call allocates zfec tables and pages in the buffers
    rates, wall_rates = [], []
    calls_total = 0
    faults0 = _faults()
    for _ in range(runs):
        calls = 0
        cpu0, start = time.thread_time(), time.perf_counter()
        while True:
            fn()
            calls += 1
            cpu = time.thread_time() - cpu0
            if cpu >= min_seconds:
                break
        calls_total += calls
        rates.append(calls * nbytes / cpu / MB)
        wall_rates.append(calls * nbytes / (time.perf_counter() - start) / MB)
    extra = {"runs": [round(r, 1) for r in rates], "wall_runs": [round(r, 1) for r in wall_rates],
             "faults_per_block": round((_faults() - faults0) / calls_total)}
    return statistics.median(rates), extra


def _threaded_rate(fn: Callable[[], object], nbytes: int, threads: int, seconds: float) -> float:
    """Aggregate MB/s of ``threads`` threads each calling ``fn`` in a loop for ``seconds``."""
    def loop(duration: float) -> int:
        calls = 0
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            fn()
            calls += 1
        return calls

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, [0.05] * threads))  # warm every thread's malloc arena
        start = time.perf_counter()
        futures = [pool.submit(loop, seconds) for _ in range(threads)]
        calls = sum(f.result() for f in futures)
        elapsed = time.perf_counter() - start
    return calls * nbytes / elapsed / MB


def measure(group: str, min_seconds: float, runs: int) -> list[dict]:
    """One child's figures (as Figure keyword dicts): a layout "K+M", or "breakdown" (4+2 parts)."""
    from buckets.erasure import ErasureCodec
    from buckets.erasure.codec import frame_piece, unframe_piece

    out: list[dict] = []
    block = payload(MiB)
    if group == "breakdown":  # where 4+2 encode time goes, and the read side's per-block CPU
        codec = ErasureCodec(4, 2, MiB)
        data = codec.split(block)
        encoder = codec._encoder  # the zfec object itself: parity cost without our wrapping
        all_pieces = data + encoder.encode(data, [4, 5])
        framed = codec.encode_block(block)
        plen = len(framed[0]) - 8

        def healthy_read() -> bytes:
            return codec.decode_block({i: unframe_piece(f, plen) for i, f in enumerate(framed[:4])}, MiB)

        for name, fn in (("4+2 part: zfec parity only", lambda: encoder.encode(data, [4, 5])),
                         ("4+2 part: split into 4 pieces", lambda: codec.split(block)),
                         ("4+2 part: xxh3 framing of 6 pieces", lambda: [frame_piece(p) for p in all_pieces]),
                         ("4+2 healthy read (verify 4 pieces, join)", healthy_read)):
            rate, extra = _rate(fn, MiB, min_seconds, runs)
            out.append(dict(name=name, value=rate, unit="MB/s", **extra))
        return out
    k, m = (int(x) for x in group.split("+"))
    codec = ErasureCodec(k, m, MiB)
    framed = codec.encode_block(block)
    pieces = {i: unframe_piece(f, len(f) - 8) for i, f in enumerate(framed)}
    degraded = {i: p for i, p in pieces.items() if i >= m}  # data pieces 0..m-1 lost
    if codec.decode_block(degraded, MiB) != block:
        raise AssertionError(f"{k}+{m}: decode returned wrong bytes")
    rate, extra = _rate(lambda: codec.encode_block(block), MiB, min_seconds, runs)
    out.append(dict(name=f"encode {k}+{m} (1 thread)", value=rate, unit="MB/s", **extra))
    rate, extra = _rate(lambda: codec.decode_block(degraded, MiB), MiB, min_seconds, runs)
    out.append(dict(name=f"decode {k}+{m}, {m} data missing", value=rate, unit="MB/s", **extra))
    if (k, m) == (4, 2):
        out.append(dict(name="encode 4+2 (2 threads, aggregate)", unit="MB/s",
                        value=_threaded_rate(lambda: codec.encode_block(block), MiB, 2, min_seconds * 2)))
        out.append(dict(name="page faults per 4+2 encode", unit="faults", value=out[0]["faults_per_block"]))
    return out


def _child(variant: str, group: str, quick: bool) -> list[dict]:
    env = dict(os.environ)
    for name in MALLOC_ENV:
        env.pop(name, None)
    if variant == "server":
        env["BENCH_SERVER_MALLOC"] = "1"  # the child applies buckets.runtime.tune_malloc(), as the server does
    else:
        env.pop("BENCH_SERVER_MALLOC", None)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "bench.codec_suite", "--child", group] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"codec child ({group}, {variant} malloc) failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False, **_: object) -> SuiteResult:
    min_seconds, runs = TIMING["quick" if quick else "full"]
    result = SuiteResult("codec", params={"block_bytes": MiB, "min_seconds_per_run": min_seconds, "runs": runs,
                                          "statistic": "median"})
    groups = [f"{k}+{m}" for k, m in LAYOUTS]
    for variant, group in [("server", g) for g in groups + ["breakdown"]] + [("default", g) for g in groups]:
        for fig in _child(variant, group, quick):
            name, value, unit = fig.pop("name"), fig.pop("value"), fig.pop("unit")
            target = None
            if variant == "server" and name == "encode 4+2 (1 thread)":
                target = at_least(ENCODE_TARGET_MBPS)
            if variant == "default":
                name += " [glibc defaults]"
            result.add(name, value, unit, target, **fig)
    result.notes.append("MB/s = 10^6 bytes of object data per CPU-second of the measuring thread (per core; "
                        "wall-clock rates in the JSON as wall_runs); 2-thread rows are wall-clock; "
                        f"median of {runs} runs of >= {min_seconds} CPU-s; each layout in a fresh process")
    result.notes.append("rows without a tag run with the server's malloc settings (buckets.runtime.tune_malloc: "
                        "mmap threshold 4 MiB, trim threshold 16 MiB, 4 arenas), so block buffers stay in the heap; "
                        "[glibc defaults] rows show what an untuned process gets (~740 page faults per block)")
    return result


if __name__ == "__main__":
    if "--child" in sys.argv:
        if os.environ.get("BENCH_SERVER_MALLOC") == "1":
            from buckets.runtime import tune_malloc

            tune_malloc()
        group = sys.argv[sys.argv.index("--child") + 1]
        is_quick = "--quick" in sys.argv
        figures = measure(group, *TIMING["quick" if is_quick else "full"])
        print(json.dumps(figures))
