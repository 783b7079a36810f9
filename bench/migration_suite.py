"""Migration suite: user GET/PUT latency with and without a migration running.

A one-node URL cluster (``buckets server --address 127.0.0.1:PORT
http://127.0.0.1:PORT/.../n1/d{1...4}``) gets a data set of 1 MiB objects (what the
migration will move), then:

1. a second node is started with ``--join`` and placed (``cluster/add-node``, the admin API
   ``buckets-admin cluster add-node`` calls): half of every object's shards start moving at
   the default throttle (64 MiB/s, 4 objects at a time);
2. **with**: once objects are moving, 4 KiB PUTs and GETs of existing 4 KiB objects through
   node 1, 8 concurrent clients, p50/p99, while the job is polled (the share of the polls
   that saw it ``running`` is printed: a migration that ends before the load does makes the
   "with" figures look better than they are);
3. **without**: the same load on the same two nodes once the migration is done (so the
   difference is the migration, not the second node's disks).

Target (printed, never asserted): the p99 with a migration within +50% of the p99 without
(ratio <= 1.5). Nodes are stopped by pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.http_suite import ACCESS_KEY, BUCKET, REPO_ROOT, SECRET_KEY, ServerUnavailable, _add_run
from bench.measure import KiB, MiB, ScratchDir, payload, run_async, run_concurrently
from bench.report import SuiteResult, below

CONCURRENCY = 8
START_TIMEOUT = 180.0
CONTROL_PORT_OFFSET = 1000


def _free_port(hosts: list[str]) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + CONTROL_PORT_OFFSET >= 65536:
            continue
        try:
            for host in hosts:
                for p in (port, port + CONTROL_PORT_OFFSET):
                    with socket.socket() as s:
                        s.bind((host, p))
        except OSError:
            continue
        return port
    raise ServerUnavailable("no free port on 127.0.0.1 and 127.0.0.2")


class Node:
    def __init__(self, base: str, i: int, port: int, join: str | None) -> None:
        self.url = f"http://127.0.0.{i}:{port}"
        self.paths = [f"{base}/n{i}/d{j}" for j in range(1, 5)]
        bin_dir = Path(sys.executable).parent
        self.command = [str(bin_dir / "buckets"), "server", "--address", f"127.0.0.{i}:{port}",
                        *(["--join", join] if join else []), f"{self.url}{base}/n{i}/d{{1...4}}"]
        self.log_path = f"{base}/node{i}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUCKETS_")}
        env.update(BUCKETS_ROOT_USER=ACCESS_KEY, BUCKETS_ROOT_PASSWORD=SECRET_KEY, BUCKETS_SCANNER_RATE="0")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT))

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


async def _wait(what: str, node: Node, check) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if node.proc is not None and node.proc.poll() is not None:
            raise ServerUnavailable(f"{node.url} exited: {node.log()[-1500:]}")
        try:
            if await check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} not within {START_TIMEOUT:g}s: {node.log()[-1500:]}")
        await asyncio.sleep(0.3)


async def _suite(result: SuiteResult, base_dir: str | None, quick: bool) -> None:
    import aiohttp

    from bench.s3client import SignedS3Client
    from buckets.admin.client import AdminClient

    objects = 40 if quick else 300  # 1 MiB each: the data the migration moves
    ops = 200 if quick else 1500
    result.params.update(data_set_mib=objects, small_ops=ops, concurrency=CONCURRENCY, throttle="default")
    with ScratchDir(base_dir, "bench-migration-") as scratch:
        base = scratch.path
        port = _free_port(["127.0.0.1", "127.0.0.2"])
        seed = Node(base, 1, port, None)
        joiner = Node(base, 2, port, seed.url)
        try:
            seed.start()
            async with aiohttp.ClientSession() as session:
                async def ready() -> bool:
                    async with session.get(f"{seed.url}/health/ready") as r:
                        return r.status == 200
                await _wait("node 1 ready", seed, ready)
                s3 = SignedS3Client(session, seed.url, ACCESS_KEY, SECRET_KEY)
                await s3.create_bucket(BUCKET)
                big = payload(MiB)
                await run_concurrently(lambda i: s3.put(BUCKET, f"data/{i:05d}", big), objects, 4)
                small = payload(4 * KiB)
                await run_concurrently(lambda i: s3.put(BUCKET, f"small/{i:05d}", small), 200, CONCURRENCY)

                async def load(tag: str) -> tuple:
                    put = await run_concurrently(lambda i: s3.put(BUCKET, f"{tag}/{i:05d}", small), ops, CONCURRENCY)
                    get = await run_concurrently(lambda i: s3.get(BUCKET, f"small/{i % 200:05d}"), ops, CONCURRENCY)
                    return put, get

                api = AdminClient(seed.url, ACCESS_KEY, SECRET_KEY, timeout=60)
                loop = asyncio.get_running_loop()

                async def job() -> dict:
                    return await loop.run_in_executor(None, lambda: api.call("GET", "cluster/migration"))

                joiner.start()
                await _wait("node 2 waiting to be added", joiner, lambda: _true("waiting to be added" in joiner.log()))
                await loop.run_in_executor(None, lambda: api.call("POST", "cluster/add-node", {
                    "endpoint": joiner.url, "paths": joiner.paths}))
                # Measured once objects are moving (the plan and the index move come first).
                deadline = time.monotonic() + START_TIMEOUT
                while (status := await job()).get("moved_objects", 0) == 0 and status.get("state") == "running":
                    if time.monotonic() > deadline:
                        raise ServerUnavailable(f"the migration does not move anything: {status}")
                    await asyncio.sleep(0.3)
                states: list[str] = []
                stop = asyncio.Event()

                async def poll() -> None:
                    while not stop.is_set():
                        states.append((await job()).get("state"))
                        await asyncio.sleep(0.5)

                poller = asyncio.ensure_future(poll())
                t0 = time.monotonic()
                put1, get1 = await load("with")
                elapsed = time.monotonic() - t0
                stop.set()
                await poller
                running = sum(s == "running" for s in states) / max(1, len(states))
                moved_from, status = status, await job()
                note = (f"migration running in {running:.0%} of {len(states)} polls over the {elapsed:.0f}s of "
                        f"the load; it moved {status.get('moved_objects', 0) - moved_from.get('moved_objects', 0)} "
                        f"objects ({(status.get('moved_bytes', 0) - moved_from.get('moved_bytes', 0)) / MiB:.0f} "
                        f"MiB) meanwhile")
                # The baseline: the same two nodes once the migration is done.
                deadline = time.monotonic() + 900
                while status.get("state") != "done" and time.monotonic() < deadline:
                    await asyncio.sleep(1)
                    status = await job()
                put0, get0 = await load("without")
                _add_run(result, "4 KiB PUT, no migration", put0, "ops/s", put0.ops_per_second)
                _add_run(result, "4 KiB PUT, migration running", put1, "ops/s", put1.ops_per_second, note=note)
                _add_run(result, "4 KiB GET, no migration", get0, "ops/s", get0.ops_per_second)
                _add_run(result, "4 KiB GET, migration running", get1, "ops/s", get1.ops_per_second, note=note)
                for name, a, b in (("PUT", put0, put1), ("GET", get0, get1)):
                    if a.ops and b.ops:
                        result.add(f"{name} p99 with / without a migration", b.p99_ms() / a.p99_ms(), "x",
                                   below(1.5), f"p99 {a.p99_ms():.1f} -> {b.p99_ms():.1f} ms; p50 "
                                   f"{a.p50_ms():.1f} -> {b.p50_ms():.1f} ms")
                result.add("migration: shard bytes moved", (status.get("moved_bytes") or 0) / MiB, "MiB",
                           note=f"{status.get('moved_objects')} objects, state {status.get('state')}, "
                                f"{status.get('elapsed_seconds')}s")
        finally:
            joiner.stop()
            seed.stop()


async def _true(value: bool) -> bool:
    return value


def run(quick: bool = False, base_dir: str | None = None, **_: object) -> SuiteResult:
    result = SuiteResult("migration")
    try:
        run_async(_suite(result, base_dir, quick))
    except ServerUnavailable as exc:
        return SuiteResult("migration", status="skipped", reason=f"server unavailable: {exc}", params=result.params)
    return result
