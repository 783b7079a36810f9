"""Big-writes suite (issue 15): 16 MiB PUT against the disks' own fdatasync bandwidth, in one run.

    python -m bench --suite bigwrites          (or: python -m bench.bigwrites_suite [--quick])

1. **Disk bandwidth.** On the four directories the server will use, one thread per directory
   writes fresh 16 MiB files in 1 MiB ``write`` calls and ``fdatasync``s each file at its end,
   all four at once (as the server writes one shard file per disk), for a few seconds: MB/s
   aggregate over the four. Measured before the server starts and again after it stopped; the
   bound below uses the mean of the two, both are reported (their spread is the noise floor).
2. **Buckets.** ``buckets server --sync on`` on those four directories (the default layout,
   2+2: the erasure amplification (k+m)/k is read from the admin API's ``info``, not assumed),
   then PUTs of 16 MiB objects, streamed in 1 MiB chunks by the http suite's signing client
   (``UNSIGNED-PAYLOAD`` with a Content-Length; the client holds a fixed pool of four 1 MiB
   chunks, never a body), one at a time and four at a time: MB/s of object bytes.
3. **Figures.** PUT MB/s; the bound = fdatasync MB/s / amplification (what the disks could
   take if the server wrote nothing but shard bytes); PUT / bound (**target >= 0.8**); the
   server's CPU seconds per 16 MiB PUT (psutil, every thread); the bytes the server process
   sent to storage per object byte (``/proc/PID/io`` ``write_bytes``: the amplification it
   really caused, metadata and registry included).

The directories may all be on one device (they are under one scratch directory): the table's
notes say which device and file system they are on. ``--dir`` puts them elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from bench.http_suite import (
    ACCESS_KEY, BUCKET, SECRET_KEY, ServerProcess, ServerUnavailable, _add_run, _Phase, _wait_ready,
)
from bench.measure import MB, MiB, OtherLoad, ScratchDir, _busy_cpu_seconds, _own_cpu_seconds, chunk_stream, \
    payload, percentile, run_async, run_concurrently
from bench.report import SuiteResult, at_least

SIZE = 16 * MiB
FILE_SIZE = 16 * MiB  # the disk measurement's files
WRITE_SIZE = 1 * MiB  # ... and its write calls
DISKS = 4
CONCURRENCIES = (1, 4)
TARGET = 0.8


# -- 1. the disks' fdatasync bandwidth ---------------------------------------------------------
@dataclass
class _DirStats:
    directory: str
    bytes: int = 0
    file_seconds: list[float] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class DiskRun:
    """One fdatasync bandwidth measurement over the directories."""

    wall: float
    dirs: list[_DirStats]
    cpu: float  # CPU seconds this process spent (write copies into the page cache, mostly)
    others: float | None = None  # CPUs other processes kept busy meanwhile
    device: str = ""  # DeviceStats.note()

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.dirs)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.wall / MB if self.wall > 0 else 0.0

    def note(self) -> str:
        files = [s for d in self.dirs for s in d.file_seconds]
        per_dir = ", ".join(f"{d.bytes / self.wall / MB:,.0f}" for d in self.dirs)
        return (f"{len(files)} files of {FILE_SIZE // MiB} MiB in {self.wall:.1f} s; per directory {per_dir} MB/s; "
                f"one file (write + fdatasync) p50 {percentile(files, 50) * 1000:,.0f} ms, "
                f"max {max(files, default=0) * 1000:,.0f} ms; CPU {self.cpu / max(self.bytes / MiB, 1) * 1000:.2f} "
                f"ms/MiB" + ("" if self.others is None else f"; other processes busy {self.others:.2f} CPUs meanwhile")
                + (f"; {self.device}" if self.device else ""))


def _fill(stats: _DirStats, start: threading.Barrier, deadline: list[float], buf: memoryview) -> None:
    """Write fresh FILE_SIZE files in WRITE_SIZE calls, fdatasync each at its end, until the deadline."""
    try:
        start.wait()
        n = 0
        while time.perf_counter() < deadline[0]:
            path = os.path.join(stats.directory, f"bigwrites-bw-{n:05d}")
            n += 1
            stats.paths.append(path)
            t0 = time.perf_counter()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                left = FILE_SIZE
                while left:
                    left -= os.write(fd, buf[: min(WRITE_SIZE, left)])
                os.fdatasync(fd)
            finally:
                os.close(fd)
            stats.file_seconds.append(time.perf_counter() - t0)
            stats.bytes += FILE_SIZE
    except Exception as exc:  # reported with the figure, not hidden
        stats.error = f"{type(exc).__name__}: {exc}"


def disk_bandwidth(dirs: list[str], seconds: float) -> DiskRun:
    """fdatasync write bandwidth of ``dirs``, one writer thread per directory, all at once.

    Files are whole when counted (a file still being written at the deadline is finished and
    counted, and the wall time runs until the last thread is done). They are removed afterwards.
    """
    buf = memoryview(payload(WRITE_SIZE))
    stats = [_DirStats(d) for d in dirs]
    start = threading.Barrier(len(dirs) + 1)
    deadline = [0.0]
    threads = [threading.Thread(target=_fill, args=(s, start, deadline, buf), name=f"bw-{i}", daemon=True)
               for i, s in enumerate(stats)]
    for t in threads:
        t.start()
    others = OtherLoad()
    device = DeviceStats(dirs[0])
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    device_note = device.note()
    for s in stats:
        for path in s.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    errors = [f"{s.directory}: {s.error}" for s in stats if s.error]
    if errors:
        raise RuntimeError("disk bandwidth measurement failed: " + "; ".join(errors))
    return DiskRun(wall, stats, cpu, others.cpus(), device_note)


def describe_devices(dirs: list[str]) -> str:
    """Which device(s) and file system(s) the directories are on."""
    mounts = []
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3:
                    mounts.append((parts[1], parts[0], parts[2]))
    except OSError:
        pass

    def mount_of(path: str) -> tuple[str, str, str]:
        path = os.path.realpath(path)
        best = ("", "?", "?")
        for point, dev, fstype in mounts:
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best[0]):
                best = (point, dev, fstype)
        return best

    devs: dict[int, tuple[str, str, str]] = {}
    for d in dirs:
        devs.setdefault(os.stat(d).st_dev, mount_of(d))
    described = [f"{dev} ({fstype} on {point or '?'}, st_dev {os.major(k)}:{os.minor(k)})"
                 for k, (point, dev, fstype) in devs.items()]
    if len(devs) == 1:
        return f"all {len(dirs)} directories share one device: {described[0]}"
    return f"{len(devs)} devices: " + "; ".join(described)


class DeviceStats:
    """The block device under a directory, from /proc/diskstats: how busy it was (io_ticks) and
    what it wrote over one phase. Machine-wide: other processes' I/O to that device counts too."""

    def __init__(self, directory: str) -> None:
        st_dev = os.stat(directory).st_dev
        self.name = None
        try:
            with open(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}/uevent", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("DEVNAME="):
                        self.name = line.strip().split("=", 1)[1]
        except OSError:
            pass
        self._t0, self._s0 = time.perf_counter(), self._read()

    def _read(self) -> tuple[int, int] | None:
        if self.name is None:
            return None
        try:
            with open("/proc/diskstats", encoding="ascii") as fh:
                for line in fh:
                    f = line.split()
                    if len(f) > 12 and f[2] == self.name:
                        return int(f[9]) * 512, int(f[12])  # sectors written, ms spent doing I/O
        except (OSError, ValueError):
            pass
        return None

    def note(self) -> str:
        now, wall = self._read(), time.perf_counter() - self._t0
        if now is None or self._s0 is None or wall <= 0:
            return ""
        return (f"device {self.name}: wrote {(now[0] - self._s0[0]) / wall / MB:,.0f} MB/s, busy "
                f"{(now[1] - self._s0[1]) / 10 / wall:.0f}% of the time")


# -- 2. Buckets ---------------------------------------------------------------------------------
def _proc_write_bytes(pid: int) -> int | None:
    """``write_bytes`` of /proc/PID/io: bytes the process caused to be sent to storage."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class _Others:
    """CPUs other processes kept busy over one phase: machine-wide busy time minus this process
    (and its reaped children) and the running server."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.busy0, self.own0 = _busy_cpu_seconds(), _own_cpu_seconds()
        self.server0 = server.cpu_seconds()
        self.t0 = time.perf_counter()

    def cpus(self) -> float | None:
        busy, server = _busy_cpu_seconds(), self.server.cpu_seconds()
        wall = time.perf_counter() - self.t0
        if None in (busy, self.busy0, server, self.server0) or wall <= 0:
            return None
        other = (busy - self.busy0) - (_own_cpu_seconds() - self.own0) - (server - self.server0)
        return max(0.0, other / wall)


async def _layout(client) -> tuple[int, int, str]:
    """(k, m) from the admin API's info, and where they came from."""
    data = await client._request("GET", "/_buckets/admin/v1/info")
    erasure = json.loads(data)["erasure"]
    return int(erasure["data"]), int(erasure["parity"]), "admin info"


async def _puts(result: SuiteResult, server: ServerProcess, client, chunks: list[bytes], count: int,
                concurrency: int, prefix: str) -> dict:
    async def put(i: int) -> None:
        await client.put_stream(BUCKET, f"{prefix}/{i:05d}", SIZE, chunk_stream(SIZE, chunks))

    phase = _Phase(server, client)
    others = _Others(server)
    device = DeviceStats(server.disks[0])
    cpu0 = server.cpu_seconds()
    io0 = _proc_write_bytes(server.proc.pid)
    run = await run_concurrently(put, count, concurrency)
    cpu1 = server.cpu_seconds()
    io1 = _proc_write_bytes(server.proc.pid)
    busy = others.cpus()
    device_note = device.note()
    rate = SIZE * run.ops / run.wall / MB if run.ops and run.wall > 0 else None
    note = phase.note(run.ops, "PUT")
    if busy is not None:
        note += f"; other processes busy {busy:.2f} CPUs meanwhile"
    if device_note:
        note += f"; {device_note}"
    _add_run(result, f"16 MiB PUT, {concurrency} at a time", run, "MB/s", rate, note=note)
    return {
        "run": run, "rate": rate,
        "cpu": (cpu1 - cpu0) / run.ops if run.ops and cpu0 is not None and cpu1 is not None else None,
        "written": (io1 - io0) / (SIZE * run.ops) if run.ops and io0 is not None and io1 is not None else None,
        "others": busy,
    }


async def _buckets(result: SuiteResult, disks: list[str], log_path: str, counts: dict[int, int]) -> dict:
    import aiohttp

    from bench.s3client import SignedS3Client

    chunks = [payload(MiB) for _ in range(4)]
    server = ServerProcess(disks, True, log_path)
    out: dict = {"puts": {}}
    server.start()
    try:
        connector = aiohttp.TCPConnector(limit=max(CONCURRENCIES) + 4)
        timeout = aiohttp.ClientTimeout(total=600, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
            client = SignedS3Client(session, server.endpoint, ACCESS_KEY, SECRET_KEY)
            await _wait_ready(server, client)
            try:
                out["k"], out["m"], out["layout_from"] = await _layout(client)
            except Exception as exc:  # an older server: say so, use the documented default for 4 disks
                out["k"], out["m"], out["layout_from"] = 2, 2, f"assumed (admin info failed: {exc})"[:200]
            await client.create_bucket(BUCKET)
            # One PUT not measured: the first shard directories, the CPU pool's threads, malloc's arenas.
            await client.put_stream(BUCKET, "warmup", SIZE, chunk_stream(SIZE, chunks))
            for concurrency in CONCURRENCIES:
                out["puts"][concurrency] = await _puts(result, server, client, chunks, counts[concurrency],
                                                       concurrency, f"c{concurrency}")
    finally:
        server.stop()
    return out


# -- 3. the suite -------------------------------------------------------------------------------
def run(quick: bool = False, base_dir: str | None = None, **_: object) -> SuiteResult:
    result = SuiteResult("bigwrites")
    seconds = 2.0 if quick else 6.0
    counts = {1: 2, 4: 4} if quick else {1: 12, 4: 24}
    result.params = {"object_bytes": SIZE, "chunk_bytes": MiB, "puts": counts, "disks": DISKS, "sync": True,
                     "disk_file_bytes": FILE_SIZE, "disk_write_bytes": WRITE_SIZE, "disk_seconds": seconds,
                     "client": "aiohttp + botocore S3SigV4Auth, UNSIGNED-PAYLOAD, streamed"}

    async def main() -> None:
        with ScratchDir(base_dir, "bench-big-") as scratch:
            disks = scratch.sub(*(f"d{i}" for i in range(1, DISKS + 1)))
            devices = describe_devices(disks)
            before = disk_bandwidth(disks, seconds)
            result.add("disks: fdatasync write, before the server", before.mb_per_s, "MB/s", note=before.note(),
                       runs=[round(d.bytes / before.wall / MB, 1) for d in before.dirs])
            try:
                out = await _buckets(result, disks, os.path.join(scratch.path, "server.log"), counts)
            except ServerUnavailable as exc:
                result.status, result.reason = "skipped", f"server unavailable: {exc}"
                return
            after = disk_bandwidth(disks, seconds)
            result.add("disks: fdatasync write, after the server", after.mb_per_s, "MB/s", note=after.note(),
                       runs=[round(d.bytes / after.wall / MB, 1) for d in after.dirs])
            bandwidth = (before.mb_per_s + after.mb_per_s) / 2
            k, m = out["k"], out["m"]
            amplification = (k + m) / k
            result.add("erasure amplification (k+m)/k", amplification, "x",
                       note=f"{k}+{m}, from the server's {out['layout_from']}")
            bound = bandwidth / amplification
            result.add("bound = fdatasync MB/s / amplification", bound, "MB/s",
                       note=f"mean of the two disk measurements ({bandwidth:,.0f} MB/s) / {amplification:g}")
            for concurrency, put in out["puts"].items():
                label = f"16 MiB PUT, {concurrency} at a time"
                rate = put["rate"]
                result.add(f"{label}: PUT / bound", rate / bound if rate and bound else None, "x", at_least(TARGET))
                cores = os.cpu_count() or 1
                result.add(f"{label}: server CPU per PUT", put["cpu"], "CPU s",
                           note="" if put["cpu"] is None else
                           f"{put['cpu'] * 1000 / (SIZE / MiB):.1f} ms per MiB of object: at this cost the server "
                           f"alone, given all {cores} cores, could take at most {cores * SIZE / put['cpu'] / MB:,.0f} "
                           "MB/s")
                result.add(f"{label}: bytes the server wrote / object bytes", put["written"], "x",
                           note="/proc/PID/io write_bytes: shards, metadata files, registry")
            result.notes.append(devices)
            result.notes.append("the disk figures are 16 MiB files in 1 MiB writes, fdatasync per file, one writer "
                                "per directory; the server writes one shard file per disk per PUT "
                                f"({SIZE // MiB // k} MiB at {k}+{m}, in {MiB // k // 1024} KiB pieces, fsync at "
                                "its end) plus metadata and its registry")
            result.notes.append("client and server share the machine's cores; the PUT notes give each side's CPU")

    run_async(main())
    return result


if __name__ == "__main__":
    from bench.report import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
