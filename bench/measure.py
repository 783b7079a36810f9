"""Measuring helpers shared by the suites: latency samples, rates, CPU time, scratch space.

Rates use decimal units: 1 MB/s = 10**6 bytes per second (sizes are still powers of two:
a "1 MiB block" is 1,048,576 bytes). Latency percentiles are nearest-rank over every
sample, not estimates.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

MB = 1_000_000
MiB = 1 << 20
KiB = 1 << 10


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of ``samples``; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass(slots=True)
class LatencyRun:
    """Per-operation latencies (seconds) and the wall time of a batch of operations."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    failures: int = 0
    first_error: str = ""

    @property
    def ops(self) -> int:
        return len(self.latencies)

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.wall if self.wall > 0 else 0.0

    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


async def run_concurrently(op: Callable[[int], Awaitable[None]], total: int, concurrency: int) -> LatencyRun:
    """Run ``op(i)`` for i in range(total) from ``concurrency`` tasks; time each call.

    Each task takes the next index from a shared counter, so a slow operation does not
    leave its task's share behind. A failing op is counted, not retried; the first error
    is kept so a report can say what went wrong instead of printing a fast wrong number.
    """
    run = LatencyRun()
    next_index = 0
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal next_index
        while next_index < total:
            i = next_index
            next_index += 1
            t0 = clock()
            try:
                await op(i)
            except Exception as exc:  # measured, reported, not hidden
                run.failures += 1
                if not run.first_error:
                    run.first_error = f"{type(exc).__name__}: {exc}"[:300]
                continue
            run.latencies.append(clock() - t0)

    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.wall = clock() - start
    return run


def payload(size: int) -> bytes:
    """Incompressible bytes (the codec and hashes do not care, but disks with compression do)."""
    return os.urandom(size)


async def chunk_stream(size: int, chunks: list[bytes]) -> AsyncIterator[bytes]:
    """``size`` bytes as an async generator of the given chunks, cycled (like a socket body)."""
    sent = 0
    i = 0
    while sent < size:
        chunk = chunks[i % len(chunks)]
        if sent + len(chunk) > size:
            chunk = chunk[: size - sent]
        sent += len(chunk)
        i += 1
        yield chunk


class ScratchDir:
    """A temporary directory under ``base`` (default: the system temp dir), removed on exit."""

    def __init__(self, base: str | None, prefix: str) -> None:
        if base:
            os.makedirs(base, exist_ok=True)
        self.path = tempfile.mkdtemp(prefix=prefix, dir=base or None)

    def sub(self, *names: str) -> list[str]:
        out = []
        for name in names:
            p = os.path.join(self.path, name)
            os.makedirs(p, exist_ok=True)
            out.append(p)
        return out

    def cleanup(self) -> None:
        if os.environ.get("BENCH_KEEP"):  # keep the disks and the servers' logs for a look
            print(f"bench: kept {self.path} (BENCH_KEEP)", file=sys.stderr)
            return
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "ScratchDir":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def run_async(coro):
    """Run a suite's coroutine on uvloop when installed (as the server does), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _busy_cpu_seconds() -> float | None:
    """Seconds of CPU every process on the machine has used (from /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """How many CPUs other processes kept busy while a suite ran (noise on a shared machine).

    Machine-wide busy CPU time minus this process's and its reaped children's. A server
    started by a suite counts as ours once it has been waited for.
    """

    def __init__(self) -> None:
        self._busy0 = _busy_cpu_seconds()
        self._own0 = _own_cpu_seconds()
        self._t0 = time.perf_counter()

    def cpus(self) -> float | None:
        busy = _busy_cpu_seconds()
        wall = time.perf_counter() - self._t0
        if busy is None or self._busy0 is None or wall <= 0:
            return None
        other = (busy - self._busy0) - (_own_cpu_seconds() - self._own0)
        return max(0.0, other / wall)


async def run_sequentially(count: int, op) -> LatencyRun:
    """``await op(i)`` for i in range(count), one at a time: latencies, failures (the first
    error kept), wall time."""
    run = LatencyRun()
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        try:
            await op(i)
        except Exception as exc:
            run.failures += 1
            run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"[:300]
            continue
        run.latencies.append(time.perf_counter() - t0)
    run.wall = time.perf_counter() - start
    return run


def run_child(module: str, spec: dict) -> dict:
    """Run ``python -m MODULE --child SPEC --out FILE`` in a fresh interpreter (a server restart:
    its own heap, an empty registry cache) and return the JSON it wrote; its progress goes to
    our stderr. A child that fails raises, its traceback above."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fd, out = tempfile.mkstemp(prefix="buckets-bench-child-", suffix=".json")
    os.close(fd)
    try:
        env = dict(os.environ)
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", module, "--child", json.dumps(spec), "--out", out]
        proc = subprocess.run(cmd, env=env, cwd=repo, stdout=sys.stderr, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"{module} {spec.get('phase')} child exited with status {proc.returncode} "
                               "(its traceback is above)")
        with open(out, encoding="utf-8") as fh:
            return json.load(fh)
    finally:
        os.unlink(out)
