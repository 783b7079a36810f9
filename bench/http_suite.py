"""HTTP suite: the real server process, driven over S3 by a signing aiohttp client.

Starts ``python -m buckets server --address 127.0.0.1:PORT D1 D2 D3 D4`` (fresh temporary
disks, root credentials from the environment) and measures, with p50/p99 latency:

- 4 KiB PUT and GET ops/s from 16 concurrent clients, server with ``--sync on``;
- 64 MiB PUT and GET MB/s (bodies streamed in 1 MiB chunks, a few repetitions);
- ListObjectsV2 keys/s over 100k objects, pages of 1000, on a second server started
  with ``--sync off`` on its own disks. The objects are put over HTTP (16-byte bodies,
  32 clients; sync off because 100k fsynced PUTs take many minutes), or with
  ``--http-populate registry`` filed straight into that server's registry while it is
  stopped (seconds instead of minutes; listing reads only the registry, so it measures
  the same thing, but those keys have no data to GET).

Client and server share this machine's cores, so the suite also reports the CPU each
side used per operation (the server's from /proc via psutil) and how long botocore's
signer took per request: the client's own overhead, which the figures include.
If the server cannot start, the suite is reported as skipped, not failed. Every server
started is stopped by its pid (SIGTERM, then SIGKILL after 15 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from bench.measure import (MB, MiB, KiB, LatencyRun, ScratchDir, chunk_stream, payload, run_async, run_concurrently,
                           run_sequentially)
from bench.report import SuiteResult, at_least

BUCKET = "bench"
ACCESS_KEY = "benchadmin"
SECRET_KEY = "bench-secret-key-0123"
CONCURRENCY = 16
POPULATE_CONCURRENCY = 32
START_TIMEOUT = 45.0
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerUnavailable(Exception):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """One ``buckets server`` child process on a free loopback port."""

    disks: list[str]
    sync: bool
    log_path: str
    proc: subprocess.Popen | None = None
    port: int = 0
    log_file: BinaryIO | None = field(default=None, repr=False)
    extra_args: tuple[str, ...] = ()  # more server flags (an A/B)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUCKETS_")}
        env.update(BUCKETS_ROOT_USER=ACCESS_KEY, BUCKETS_ROOT_PASSWORD=SECRET_KEY)
        cmd = [sys.executable, "-m", "buckets", "server", "--address", f"127.0.0.1:{self.port}",
               "--sync", "on" if self.sync else "off", *self.extra_args, *self.disks]
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO_ROOT, stdin=subprocess.DEVNULL)

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def log_tail(self, lines: int = 3) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                text = fh.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def cpu_seconds(self) -> float | None:
        """User + system CPU the server process has used so far (None without psutil)."""
        if self.exited():
            return None
        try:
            import psutil

            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except Exception:  # psutil missing, or the process just went away
            return None

    def stop(self) -> None:
        """SIGTERM by pid, wait up to 15 s for a clean shutdown, then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        if self.log_file is not None:
            self.log_file.close()


async def _wait_ready(server: ServerProcess, client) -> None:
    """Until a signed ListBuckets answers 200, the process dies, or the timeout passes."""
    import aiohttp

    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if server.exited():
            raise ServerUnavailable(f"server exited with status {server.proc.returncode}: {server.log_tail()}")
        try:
            await client.list_buckets()
            return
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # an HTTP error status: the server runs but cannot serve S3 yet
            last = str(exc)
        await asyncio.sleep(0.2)
    raise ServerUnavailable(f"no successful ListBuckets within {START_TIMEOUT:.0f}s ({last})")


class _Phase:
    """Client CPU, server CPU and signing time over one measured phase."""

    def __init__(self, server: ServerProcess, client) -> None:
        self.server, self.client = server, client
        self.cpu0 = time.process_time()
        self.server0 = server.cpu_seconds()
        self.sign0 = client.sign_seconds
        self.signed0 = client.signed

    def note(self, ops: int, unit: str = "op") -> str:
        client_cpu = time.process_time() - self.cpu0
        server_now = self.server.cpu_seconds()
        signed = max(1, self.client.signed - self.signed0)
        sign_us = (self.client.sign_seconds - self.sign0) / signed * 1e6
        parts = [f"client CPU {client_cpu / max(ops, 1) * 1e6:,.0f} µs/{unit} (signing {sign_us:,.0f} µs/request)"]
        if server_now is not None and self.server0 is not None:
            parts.append(f"server CPU {(server_now - self.server0) / max(ops, 1) * 1e6:,.0f} µs/{unit}")
        return "; ".join(parts)


def _add_run(result: SuiteResult, name: str, run: LatencyRun, unit: str, value: float | None,
             target=None, note: str = "") -> None:
    if run.failures:
        note = (note + "; " if note else "") + f"{run.failures} of {run.failures + run.ops} failed: {run.first_error}"
    result.add(name, value if run.ops else None, unit, target, note, ops=run.ops, failures=run.failures,
               wall_seconds=round(run.wall, 3))
    result.add(f"  {name} p50", run.p50_ms() if run.ops else None, "ms")
    result.add(f"  {name} p99", run.p99_ms() if run.ops else None, "ms")


async def _with_server(server: ServerProcess, body) -> None:
    """Start ``server``, run ``body(client)`` against it, always stop it by pid."""
    import aiohttp

    from bench.s3client import SignedS3Client

    server.start()
    try:
        connector = aiohttp.TCPConnector(limit=POPULATE_CONCURRENCY + 4)
        timeout = aiohttp.ClientTimeout(total=600, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
            client = SignedS3Client(session, server.endpoint, ACCESS_KEY, SECRET_KEY)
            await _wait_ready(server, client)
            await client.create_bucket(BUCKET)
            await body(client)
    finally:
        server.stop()


async def _small_and_large(result: SuiteResult, server: ServerProcess, client, small: int, size: int,
                           reps: int) -> None:
    body = payload(4 * KiB)

    async def put(i: int) -> None:
        await client.put(BUCKET, f"small/{i:07d}", body)

    async def get(i: int) -> None:
        if await client.get(BUCKET, f"small/{i:07d}") != len(body):
            raise AssertionError(f"GET small/{i:07d}: wrong length")

    for op, fn, target in (("PUT", put, at_least(800)), ("GET", get, at_least(2000))):
        phase = _Phase(server, client)
        run = await run_concurrently(fn, small, CONCURRENCY)
        _add_run(result, f"4 KiB {op} sync=on", run, "ops/s", run.ops_per_second, target, phase.note(run.ops))

    chunks = [payload(MiB) for _ in range(8)]
    for op in ("PUT", "GET"):
        phase = _Phase(server, client)

        async def one(i: int, op=op) -> None:
            if op == "PUT":
                await client.put_stream(BUCKET, f"large-{i}", size, chunk_stream(size, chunks))
            elif (got := await client.get(BUCKET, f"large-{i}")) != size:
                raise AssertionError(f"GET large-{i}: {got} bytes, expected {size}")

        run = await run_sequentially(reps, one)
        rate = size * run.ops / sum(run.latencies) / MB if run.ops else None
        _add_run(result, f"{size // MiB} MiB {op} sync=on", run, "MB/s", rate,
                 note=phase.note(max(1, run.ops) * size // MiB, "MiB"))


def _listing_key(i: int) -> str:
    return f"logs/host-{i % 100:02d}/event-{i:08d}.json"


async def _populate_http(result: SuiteResult, server: ServerProcess, client, count: int) -> bool:
    body = b"0123456789abcdef"

    async def put(i: int) -> None:
        await client.put(BUCKET, _listing_key(i), body)

    phase = _Phase(server, client)
    run = await run_concurrently(put, count, POPULATE_CONCURRENCY)
    _add_run(result, "populate: 16 B PUT sync=off, 32 clients", run, "ops/s", run.ops_per_second,
             note=phase.note(run.ops))
    return not run.failures


async def _populate_registry(result: SuiteResult, disks: list[str], count: int) -> None:
    """File ``count`` entries straight into the stopped server's registry (no object data).

    Listing reads only the registry, so this lists exactly like real objects; a GET of one
    of these keys would fail (no shards), which this suite never does.
    """
    from bench.registry_suite import realistic_entry
    from buckets.registry import Op, Registry
    from buckets.storage.format import REGISTRY_DIR

    paths = [os.path.join(d, REGISTRY_DIR) for d in disks if os.path.exists(os.path.join(d, REGISTRY_DIR, "data.mdb"))]
    if len(paths) != 1:
        raise RuntimeError(f"expected one registry under the server's disks, found {len(paths)}")
    registry = Registry(paths[0], cache_size=0, sync=False)  # no cache: nothing left for our GC to walk
    registry.start()
    start = time.perf_counter()
    try:
        now = time.time()
        for base in range(0, count, 1000):
            await registry.commit([Op("put_object", BUCKET, _listing_key(i), realistic_entry(i, now))
                                   for i in range(base, min(count, base + 1000))])
    finally:
        await registry.close()
    result.add("populate: registry entries filed directly", count / (time.perf_counter() - start), "keys/s",
               note="server stopped meanwhile; entries only, no object data (--http-populate registry)")


async def _list_everything(result: SuiteResult, server: ServerProcess, client, count: int) -> None:
    rates, pages, parse = [], [], 0.0
    phase = _Phase(server, client)
    for _ in range(3):  # median of three full listings
        token, keys = None, 0
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            page = await client.list_page(BUCKET, token)
            pages.append(time.perf_counter() - t0)
            parse += page.parse_seconds
            keys += len(page.keys)
            token = page.next_token
            if token is None:
                break
        rates.append(keys / (time.perf_counter() - start))
        if keys != count:
            raise AssertionError(f"ListObjectsV2 returned {keys} keys, expected {count}")
    lrun = LatencyRun(latencies=pages)
    result.add("ListObjectsV2 pages of 1000", statistics.median(rates), "keys/s", at_least(50_000),
               phase.note(3 * count, "key") + f"; client XML parse {parse / (3 * count) * 1e6:.1f} µs/key",
               runs=[round(r) for r in rates])
    result.add("  ListObjectsV2 page p50", lrun.p50_ms(), "ms")
    result.add("  ListObjectsV2 page p99", lrun.p99_ms(), "ms")


async def _listing(result: SuiteResult, scratch: ScratchDir, count: int, populate: str) -> None:
    disks = scratch.sub("off1", "off2", "off3", "off4")
    server = ServerProcess(disks, False, os.path.join(scratch.path, "off.log"))
    if populate == "http":
        async def body(client) -> None:
            if await _populate_http(result, server, client, count):
                await _list_everything(result, server, client, count)
            else:
                result.notes.append("listing skipped: populating over HTTP failed")

        await _with_server(server, body)
        return

    async def create_only(client) -> None:
        pass

    await _with_server(server, create_only)  # formats the disks and creates the bucket
    await _populate_registry(result, disks, count)
    server = ServerProcess(disks, False, os.path.join(scratch.path, "off2.log"))
    await _with_server(server, lambda client: _list_everything(result, server, client, count))


async def _suite(result: SuiteResult, base_dir: str | None, quick: bool, populate: str) -> None:
    small = 300 if quick else 3000
    size = (16 if quick else 64) * MiB
    reps = 1 if quick else 3
    listed = 2000 if quick else 100_000
    result.params.update(small_ops=small, small_object_bytes=4 * KiB, concurrency=CONCURRENCY,
                         large_object_bytes=size, large_repetitions=reps, listing_objects=listed,
                         populate_concurrency=POPULATE_CONCURRENCY, populate=populate,
                         client="aiohttp + botocore S3SigV4Auth")
    with ScratchDir(base_dir, "buckets-bench-http-") as scratch:
        synced = ServerProcess(scratch.sub("on1", "on2", "on3", "on4"), True, os.path.join(scratch.path, "on.log"))
        await _with_server(synced, lambda c: _small_and_large(result, synced, c, small, size, reps))
        await _listing(result, scratch, listed, populate)
    result.notes.append("client and server share the machine: the notes give each side's CPU per op; "
                        "4 KiB bodies are SHA-256 signed, large bodies UNSIGNED-PAYLOAD")


def run(quick: bool = False, base_dir: str | None = None, http_populate: str = "http", **_: object) -> SuiteResult:
    result = SuiteResult("http")
    try:
        run_async(_suite(result, base_dir, quick, http_populate))
    except ServerUnavailable as exc:
        return SuiteResult("http", status="skipped", reason=f"server unavailable: {exc}", params=result.params)
    return result
