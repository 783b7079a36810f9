"""Small-writes suite (issue 15): 4 KiB PUTs against the reference, in one run.

    python -m bench --suite smallwrites        (or: python -m bench.smallwrites_suite)

Three servers, one after the other, each on fresh directories, each driven by the same signing
client (``bench.s3client``: 16 concurrent clients, 4 KiB bodies, ``--sync on``):

1. the reference, ``bench.refserver``: bare aiohttp, one file written and fsynced per PUT;
2. Buckets on 4 disks with ``--small-log off``: one metadata file per disk per PUT (before);
3. Buckets on 4 disks with its defaults: one record per disk in each disk's log,
   group-committed, and no registry copy of a 4 KiB object (the copy limit is 1 KiB): GETs
   read k records;
4. the same with ``--small-copy-limit 16384`` (the default before): a copy of the object's
   bytes in the registry, so GETs read no disk, at about 8 KB of registry per object.

Figures: PUT ops/s, p50, p99 and server CPU per PUT for each, GET ops/s for Buckets, the
ratio of Buckets (defaults) to the reference (**target >= 1.5**), its PUT p99 (**target < 30 ms**),
and the space per 4 KiB object: every byte allocated on the four disks (shards, metadata files
or log segments, the LMDB registry with its copy of small objects) grown by the PUTs, divided by
the bodies' bytes (**target <= 2.5**), split into disks and registry.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from bench.http_suite import (
    ACCESS_KEY, BUCKET, CONCURRENCY, REPO_ROOT, SECRET_KEY, ServerProcess, _add_run, _Phase, _free_port, _wait_ready,
)
from bench.measure import KiB, ScratchDir, payload, run_async, run_concurrently
from bench.report import SuiteResult, at_least, below

SIZE = 4 * KiB
# name, --small-log, --small-copy-limit (None: the server's default, 1 KiB: a 4 KiB object has no copy)
CONFIGS = [("files", False, None), ("log", True, None), ("copy", True, 16384)]
LABELS = {"files": "Buckets --small-log off", "log": "Buckets (defaults: log on, copy limit 1 KiB)",
          "copy": "Buckets --small-copy-limit 16384"}


@dataclass
class RefServer:
    """``python -m bench.refserver`` on a free port (the same interface as ServerProcess)."""

    directory: str
    log_path: str
    proc: subprocess.Popen | None = None
    port: int = 0
    log_file: BinaryIO | None = field(default=None, repr=False)

    endpoint = ServerProcess.endpoint
    exited = ServerProcess.exited
    log_tail = ServerProcess.log_tail
    cpu_seconds = ServerProcess.cpu_seconds
    stop = ServerProcess.stop

    def start(self) -> None:
        self.port = _free_port()
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.refserver", "--port", str(self.port),
                                      "--dir", self.directory], stdout=self.log_file, stderr=subprocess.STDOUT,
                                     cwd=REPO_ROOT, stdin=subprocess.DEVNULL)


class BucketsServer(ServerProcess):
    """``buckets server --sync on`` with ``--small-log on|off``."""

    small_log: bool = True
    copy_limit: int | None = None  # None: the server's default

    def start(self) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUCKETS_")}
        env.update(BUCKETS_ROOT_USER=ACCESS_KEY, BUCKETS_ROOT_PASSWORD=SECRET_KEY)
        cmd = [sys.executable, "-m", "buckets", "server", "--address", f"127.0.0.1:{self.port}", "--sync", "on",
               "--small-log", "on" if self.small_log else "off",
               *(["--small-copy-limit", str(self.copy_limit)] if self.copy_limit is not None else []),
               *self.disks]
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO_ROOT, stdin=subprocess.DEVNULL)


def allocated(paths: list[str], *, only: str | None = None, skip: str | None = None) -> int:
    """Bytes allocated (st_blocks) by every file and directory under ``paths``; ``only``/``skip``
    a path fragment (the registry)."""
    total = 0
    for base in paths:
        for dirpath, dirs, files in os.walk(base):
            for name in files + dirs:
                full = os.path.join(dirpath, name)
                if only is not None and only not in full:
                    continue
                if skip is not None and skip in full:
                    continue
                try:
                    total += os.lstat(full).st_blocks * 512
                except FileNotFoundError:
                    pass
    return total


async def _drive(server, label: str, result: SuiteResult, count: int, *, get: bool) -> dict:
    import aiohttp

    from bench.s3client import SignedS3Client

    body = payload(SIZE)
    out: dict = {}
    server.start()
    try:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY + 4)
        timeout = aiohttp.ClientTimeout(total=600, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
            client = SignedS3Client(session, server.endpoint, ACCESS_KEY, SECRET_KEY)
            await _wait_ready(server, client)
            await client.create_bucket(BUCKET)
            await asyncio.sleep(0.5)  # the start-up's own writes settle
            out["before"] = time.time()
            out["space0"] = getattr(server, "space", lambda: 0)()

            async def put(i: int) -> None:
                await client.put(BUCKET, f"small/{i:07d}", body)

            phase = _Phase(server, client)
            cpu0 = server.cpu_seconds()
            run = await run_concurrently(put, count, CONCURRENCY)
            cpu1 = server.cpu_seconds()
            out["put"] = run
            out["server_cpu_us"] = (cpu1 - cpu0) / max(run.ops, 1) * 1e6 if cpu0 is not None and cpu1 is not None else None
            _add_run(result, f"{label}: 4 KiB PUT", run, "ops/s", run.ops_per_second, note=phase.note(run.ops))
            if get:
                async def read(i: int) -> None:
                    if await client.get(BUCKET, f"small/{i:07d}") != SIZE:
                        raise AssertionError(f"GET small/{i:07d}: wrong length")

                phase = _Phase(server, client)
                run = await run_concurrently(read, count, CONCURRENCY)
                _add_run(result, f"{label}: 4 KiB GET", run, "ops/s", run.ops_per_second, note=phase.note(run.ops))
    finally:
        server.stop()
    return out


def run(quick: bool = False, base_dir: str | None = None, **_: object) -> SuiteResult:
    result = SuiteResult("smallwrites")
    count = 300 if quick else 3000
    result.params = {"objects": count, "size": SIZE, "concurrency": CONCURRENCY, "disks": 4, "sync": True}

    async def main() -> None:
        with ScratchDir(base_dir, "bench-small-") as scratch:
            ref = RefServer(scratch.sub("ref")[0], os.path.join(scratch.path, "ref.log"))
            ref_out = await _drive(ref, "reference (aiohttp, fsync per file)", result, count, get=False)
            figures = {}
            for name, small_log, copy_limit in CONFIGS:
                disks = scratch.sub(*(f"{name}{i}" for i in range(1, 5)))
                server = BucketsServer(disks, True, os.path.join(scratch.path, f"{name}.log"))
                server.small_log, server.copy_limit = small_log, copy_limit
                server.space = lambda disks=disks: allocated(disks)
                label = LABELS[name]
                out = await _drive(server, label, result, count, get=True)
                total = allocated(disks) - out["space0"]
                registry = allocated(disks, only=os.path.join(".buckets.sys", "registry"))
                ops = max(out["put"].ops, 1)
                out["space"] = (total / ops / SIZE, registry)
                figures[name] = out
            ref_rate = ref_out["put"].ops_per_second if ref_out["put"].ops else None
            for name, out in figures.items():
                label = LABELS[name]
                rate = out["put"].ops_per_second if out["put"].ops else None
                final = name == "log"
                result.add(f"{label}: PUT / reference", rate / ref_rate if rate and ref_rate else None, "x",
                           at_least(1.5) if final else None)
                result.add(f"{label}: PUT p99", out["put"].p99_ms() if out["put"].ops else None, "ms",
                           below(30) if final else None)
                result.add(f"{label}: server CPU per PUT", out["server_cpu_us"], "µs")
                ratio, registry = out["space"]
                result.add(f"{label}: space per 4 KiB object / body", ratio, "x", below(2.5) if final else None,
                           note=f"registry {registry / max(out['put'].ops, 1):,.0f} B/object of it (LMDB"
                                + (", with its copy of objects up to 16 KiB)" if name == "copy" else ")"))
            result.add("reference: server CPU per PUT", ref_out["server_cpu_us"], "µs")

    run_async(main())
    return result


if __name__ == "__main__":
    from bench.report import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
