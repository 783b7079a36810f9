"""Load drivers for profiling and A/B comparisons (not a suite: no table, no targets).

    python -m bench.drivers put [--disks 4] [--n 3000] [--spy OUT [--gil]]     4 KiB PUTs, one node x 4 (or --disks) disks
    python -m bench.drivers get [--disks 16] [--n 40]              16 MiB GETs, one node
    python -m bench.drivers put-large [--disks 4] [--concurrency 1] [--n 20] [--checksum CRC32]   16 MiB PUTs, one node
    python -m bench.drivers cluster-put [--n 2000] [--versioned] [--spy OUT] [--perf OUT]   4 KiB PUTs, 4 nodes x 4 disks
    python -m bench.drivers cluster-get [--via 2] [--n 30]         16 MiB GETs, 4 nodes x 4 disks
    python -m bench.drivers cluster-idle [--n 40000] [--seconds 130]   CPU of an idle cluster holding n keys
    python -m bench.drivers profile OUT [OUT...]                   sum py-spy raw files by function

Each starts its own servers on fresh temporary disks (``--sync on``), drives them with the
bench's signing client (16 concurrent clients for small objects, one at a time for large),
prints rates and the servers' CPU per operation (user and system apart, context switches for
``put``), and stops them by pid. ``--spy OUT`` records the servers with py-spy
(``pip install py-spy``; ``--gil``: only the thread holding the GIL) into ``OUT`` (``OUT.<node>``
on a cluster), which ``profile`` sums into inclusive and self shares. ``--perf OUT`` (``get``,
``put-large``, ``cluster-get``, ``cluster-put``) records them with ``perf record -g`` instead:
C extensions and the kernel, which py-spy does not see. Frame-pointer call graphs stop at
libc; ``BENCH_PERF_CALLGRAPH="--call-graph dwarf,16384"`` names the callers of ``memmove``
and the like (larger files: use a smaller ``--n``).

The figures drift with this machine's speed (by up to 30% within an hour): compare two
versions by alternating them, each run started from its own tree, e.g. the old one with
``git worktree add /tmp/old <rev>`` and ``PYTHONPATH=/tmp/old/src python -m bench.drivers put``
(the servers inherit ``PYTHONPATH``). To compare two settings of one version, give the
servers flags with ``BENCH_SERVER_ARGS`` (e.g. ``BENCH_SERVER_ARGS="--small-set-limit 0"``), as
for the cluster suite. This machine changed speed by up to 2x within minutes on 2026-12-02:
alternate several times and compare pairs.
"""

from __future__ import annotations

import argparse
import atexit
import asyncio
import collections
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from bench.measure import KiB, MiB, payload, run_concurrently


def _spy(pid: int, out: str, gil: bool, rate: int) -> subprocess.Popen:
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    cmd = [exe, "record", "-r", str(rate), "-p", str(pid), "-f", "raw", "-o", out] + (["--gil"] if gil else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _perf(pid: int, out: str) -> subprocess.Popen:
    """``perf record`` of one process (C extensions and the kernel, which py-spy does not see)."""
    return subprocess.Popen(["perf", "record", *os.environ.get("BENCH_PERF_CALLGRAPH", "-g").split(), "-F", "1999", "-p", str(pid), "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _stop_spies(spies: list[subprocess.Popen]) -> None:
    for s in spies:
        s.send_signal(2)
        s.wait()


def _switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of every thread of ``pid`` so far."""
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                text = fh.read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol += int(line.split()[1])
    return vol, invol


def _cpu(pids: list[int]) -> list[tuple[float, float, int]]:
    """User and system CPU seconds and minor page faults of each process so far."""
    import psutil

    out = []
    for p in pids:
        proc = psutil.Process(p)
        t = proc.cpu_times()
        with open(f"/proc/{p}/stat") as fh:
            minflt = int(fh.read().rsplit(")", 1)[1].split()[7])
        out.append((t.user, t.system, minflt))
    return out


def _per_op(before: list, after: list, ops: int) -> str:
    parts = [f"user {(b[0] - a[0]) / ops * 1e6:,.0f} sys {(b[1] - a[1]) / ops * 1e6:,.0f} faults {(b[2] - a[2]) / ops:,.0f}"
             for a, b in zip(before, after)]
    return "; ".join(parts) + " µs/op"


def _scratch(prefix: str) -> str:
    """A temporary directory for a driver's disks and logs, removed when the driver exits
    (``BENCH_KEEP=1`` keeps it, to look at the servers' logs)."""
    d = tempfile.mkdtemp(prefix=prefix)
    if os.environ.get("BENCH_KEEP"):
        print(f"bench: keeping {d} (BENCH_KEEP)", file=sys.stderr)
    else:
        atexit.register(shutil.rmtree, d, True)
    return d


def _single(disks: int) -> "object":
    from bench.http_suite import ServerProcess

    d = _scratch("buckets-drive-")
    # BENCH_SERVER_ARGS: more server flags, as for the cluster suite (an A/B: "--small-set-limit 0")
    return ServerProcess(disks=[f"{d}/d{i}" for i in range(disks)], sync=True, log_path=f"{d}/server.log",
                         extra_args=tuple(shlex.split(os.environ.get("BENCH_SERVER_ARGS", ""))))


async def _measured(pid: int, args: argparse.Namespace, op, total: int, concurrency: int):
    """``op(i)`` ``total`` times from ``concurrency`` tasks, under the recorders asked for
    (``--spy``, ``--perf``): the run, its wall time, ``pid``'s CPU per op (printable) and its
    voluntary and involuntary context switches per op."""
    spies = [_spy(pid, args.spy, args.gil, args.rate)] if args.spy else []
    spies += [_perf(pid, args.perf)] if getattr(args, "perf", None) else []
    if spies:
        await asyncio.sleep(1)
    cpu0, sw0, t0 = _cpu([pid]), _switches(pid), time.perf_counter()
    run = await run_concurrently(op, total, concurrency)
    wall = time.perf_counter() - t0
    cpu1, sw1 = _cpu([pid]), _switches(pid)
    await _stop_spies(spies)
    return run, wall, _per_op(cpu0, cpu1, total), ((sw1[0] - sw0[0]) / total, (sw1[1] - sw0[1]) / total)


def cmd_put(args: argparse.Namespace) -> None:
    from bench.http_suite import BUCKET, _with_server

    srv = _single(args.disks)

    async def body(client) -> None:
        data = payload(4 * KiB)
        await run_concurrently(lambda i: client.put(BUCKET, f"warm/{i}", data), 200, 16)
        run, wall, cpu, (vol, invol) = await _measured(
            srv.proc.pid, args, lambda i: client.put(BUCKET, f"small/{i:07d}", data), args.n, 16)
        lat = sorted(run.latencies)
        print(f"4 KiB PUT over {args.disks} disks: {args.n / wall:,.0f} ops/s, p50 {lat[len(lat) // 2] * 1e3:.1f} ms, "
              f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.1f} ms, failed {run.failures}")
        print(f"server CPU: {cpu}; context switches per PUT: {vol:.1f} voluntary, {invol:.1f} involuntary")

    asyncio.run(_with_server(srv, body))


def cmd_get(args: argparse.Namespace) -> None:
    from bench.http_suite import BUCKET, _with_server

    srv = _single(args.disks)

    async def body(client) -> None:
        await _put_large(client.put_stream, 4)
        for i in range(4):
            await client.get(BUCKET, f"big{i}")
        pid = srv.proc.pid
        spies = [_spy(pid, args.spy, args.gil, args.rate)] if args.spy else []
        spies += [_perf(pid, args.perf)] if args.perf else []
        if spies:
            await asyncio.sleep(1)
        cpu0, t0 = _cpu([pid]), time.perf_counter()
        for i in range(args.n):
            assert await client.get(BUCKET, f"big{i % 4}") == 16 * MiB
        wall = time.perf_counter() - t0
        cpu1 = _cpu([pid])
        await _stop_spies(spies)
        print(f"16 MiB GET over {args.disks} disks: {args.n * 16 * MiB / wall / 1e6:,.0f} MB/s; "
              f"server CPU {_per_op(cpu0, cpu1, args.n)} (per GET)")

    asyncio.run(_with_server(srv, body))


def cmd_put_large(args: argparse.Namespace) -> None:
    from bench.http_suite import BUCKET, _with_server

    srv = _single(args.disks)

    async def body(client) -> None:
        chunks = [payload(MiB) for _ in range(16)]
        extra = None
        if args.checksum:  # as boto3 sends by default (CRC32): the server computes and checks it
            from buckets.checksums import header_name, new_checksum

            digest = new_checksum(args.checksum)
            for c in chunks:
                digest.update(c)
            extra = {header_name(args.checksum): digest.b64()}

        async def gen():
            for c in chunks:
                yield c

        for i in range(2):  # warm: the server's heap grows to its working size
            await client.put_stream(BUCKET, f"warm{i}", 16 * MiB, gen(), extra)
        run, wall, cpu, (vol, invol) = await _measured(
            srv.proc.pid, args, lambda i: client.put_stream(BUCKET, f"big{i}", 16 * MiB, gen(), extra),
            args.n, args.concurrency)
        lat = sorted(run.latencies)
        print(f"16 MiB PUT over {args.disks} disks, {args.concurrency} at a time: "
              f"{args.n * 16 * MiB / wall / 1e6:,.0f} MB/s, p50 {lat[len(lat) // 2] * 1e3:.0f} ms, failed {run.failures}")
        print(f"server CPU {cpu} (per PUT); context switches per PUT: {vol:.0f} voluntary, {invol:.0f} involuntary")

    asyncio.run(_with_server(srv, body))


async def _put_large(put_stream, count: int) -> None:
    from bench.http_suite import BUCKET

    chunks = [payload(MiB) for _ in range(16)]

    async def gen():
        for c in chunks:
            yield c

    for i in range(count):
        await put_stream(BUCKET, f"big{i}", 16 * MiB, gen())


def _cluster(disks_per_node: int = 4):
    from bench.cluster_suite import Deployment

    return Deployment("drivers", _scratch("buckets-drive-cluster-"), 4, disks_per_node)


def cmd_cluster_put(args: argparse.Namespace) -> None:
    from bench.cluster_suite import RandomNodeClient, _peer_counts, _with
    from bench.http_suite import BUCKET

    dep = _cluster(args.disks)

    async def body(session, clients) -> None:
        client = RandomNodeClient(clients, random.Random(1))
        data = payload(4 * KiB)
        if args.versioned:
            await clients[0].put_bucket_versioning(BUCKET, "Enabled")
        await run_concurrently(lambda i: client.put(BUCKET, f"warm/{i}", data), 200, 16)
        pids = [p.pid for p in dep.procs]
        calls0 = await _peer_counts(session, dep.endpoints)
        time0 = await _served_times(session, dep.endpoints)
        spies = [_spy(p, f"{args.spy}.{n}", args.gil, args.rate) for n, p in enumerate(pids, 1)] if args.spy else []
        spies += [_perf(p, f"{args.perf}.{n}") for n, p in enumerate(pids, 1)] if args.perf else []
        if spies:
            await asyncio.sleep(1)
        cpu0, t0 = _cpu(pids), time.perf_counter()
        run = await run_concurrently(lambda i: client.put(BUCKET, f"small/{i:07d}", data), args.n, 16)
        wall = time.perf_counter() - t0
        cpu1 = _cpu(pids)
        await _stop_spies(spies)
        calls1 = await _peer_counts(session, dep.endpoints)
        print(f"4 KiB PUT through random nodes{' (versioned bucket)' if args.versioned else ''}: "
              f"{args.n / wall:,.0f} ops/s, failed {run.failures}")
        print(f"CPU per PUT, node by node: {_per_op(cpu0, cpu1, args.n)}")
        per = {k: (calls1[k] - calls0[k]) / args.n for k in calls1 if calls1[k] - calls0[k] > 0}
        print("peer calls per PUT: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda x: -x[1])))
        time1 = await _served_times(session, dep.endpoints)
        print("mean time served, all nodes (ms): " + ", ".join(
            f"{api} {1000 * (s1 - time0[api][0]) / (n1 - time0[api][1]):.1f}"
            for api, (s1, n1) in sorted(time1.items()) if api in time0 and n1 - time0[api][1] >= args.n / 10))

    asyncio.run(_with(dep, body))


_TIME_LINE = re.compile(r'^buckets_s3_request_duration_seconds_(sum|count)\{api="([^"]+)"\} ([0-9.e+]+)$', re.M)


async def _served_times(session, endpoints: list[str]) -> dict[str, tuple[float, float]]:
    """(seconds, requests) served so far by API over every node, from their ``/metrics``."""
    out: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for url in endpoints:
        async with session.get(f"{url}/metrics") as resp:
            text = await resp.text()
        for kind, api, value in _TIME_LINE.findall(text):
            out[api][0 if kind == "sum" else 1] += float(value)
    return {api: (v[0], v[1]) for api, v in out.items()}


def cmd_cluster_idle(args: argparse.Namespace) -> None:
    """A 4-node cluster (one disk each) given ``--n`` small objects in one bucket, then left
    alone for ``--seconds``: each node's CPU while only its background work runs (anti-entropy
    passes every minute, the scanner, the control plane's ticks), and the full scans anti-entropy
    made of the bucket's index (``buckets_registry_digest_scans_total``, when the nodes have it)."""
    from bench.cluster_suite import RandomNodeClient, _with
    from bench.http_suite import BUCKET

    dep = _cluster(1)

    async def scans(session) -> list[float | None]:
        out: list[float | None] = []
        for url in dep.endpoints:
            async with session.get(f"{url}/metrics") as resp:
                found = re.search(r"^buckets_registry_digest_scans_total ([0-9.e+]+)$", await resp.text(), re.M)
            out.append(float(found.group(1)) if found else None)
        return out

    async def body(session, clients) -> None:
        client = RandomNodeClient(clients, random.Random(1))
        t0 = time.perf_counter()
        run = await run_concurrently(lambda i: client.put(BUCKET, f"idle/{i:08d}", b"x"), args.n, 16)
        print(f"populated {args.n:,} keys in {time.perf_counter() - t0:.0f} s (failed {run.failures}); "
              f"waiting {args.settle:g} s for the writes' own background work")
        await asyncio.sleep(args.settle)
        pids = [p.pid for p in dep.procs]
        cpu0, scans0 = _cpu(pids), await scans(session)
        await asyncio.sleep(args.seconds)
        cpu1, scans1 = _cpu(pids), await scans(session)
        per_min = [((b[0] + b[1]) - (a[0] + a[1])) * 60 / args.seconds for a, b in zip(cpu0, cpu1)]
        print(f"idle CPU over {args.seconds:g} s, s per minute, node by node: "
              + ", ".join(f"{v:.2f}" for v in per_min) + f" (mean {sum(per_min) / len(per_min):.2f})")
        print("anti-entropy's full scans of an index meanwhile, node by node: "
              + ", ".join("n/a" if a is None or b is None else f"{b - a:.0f}" for a, b in zip(scans0, scans1)))

    asyncio.run(_with(dep, body))


def cmd_cluster_get(args: argparse.Namespace) -> None:
    from bench.cluster_suite import _with
    from bench.http_suite import BUCKET

    dep = _cluster()

    async def body(session, clients) -> None:
        await _put_large(clients[0].put_stream, 4)
        for i in range(4):
            await clients[i].get(BUCKET, f"big{i}")
        pids = [p.pid for p in dep.procs]
        spies = [_spy(p, f"{args.spy}.{n}", args.gil, args.rate) for n, p in enumerate(pids, 1)] if args.spy else []
        spies += [_perf(p, f"{args.perf}.{n}") for n, p in enumerate(pids, 1)] if args.perf else []
        if spies:
            await asyncio.sleep(1)
        cpu0, t0 = _cpu(pids), time.perf_counter()
        for i in range(args.n):
            via = clients[args.via - 1] if args.via else clients[i % 4]
            assert await via.get(BUCKET, f"big{i % 4}") == 16 * MiB
        wall = time.perf_counter() - t0
        cpu1 = _cpu(pids)
        await _stop_spies(spies)
        print(f"16 MiB GET through {'node ' + str(args.via) if args.via else 'each node in turn'}: "
              f"{args.n * 16 * MiB / wall / 1e6:,.0f} MB/s")
        print(f"CPU per GET, node by node: {_per_op(cpu0, cpu1, args.n)}")

    asyncio.run(_with(dep, body))


def cmd_profile(args: argparse.Namespace) -> None:
    """Sum py-spy raw files (``stack;frames count`` lines) into inclusive and self shares."""
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0

    def name(frame: str) -> str:
        func, _, where = frame.partition(" (")
        return f"{func} {where.split(':')[0].rsplit('/', 1)[-1]}" if where else func

    for path in args.files:
        with open(path) as fh:
            for line in fh:
                stack, _, count = line.rstrip().rpartition(" ")
                if not stack:
                    continue
                n = int(count)
                total += n
                frames = [name(f) for f in stack.split(";")]
                for f in set(frames):
                    inclusive[f] += n
                own[frames[-1]] += n
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"-- {title}")
        for f, n in counter.most_common(args.top):
            print(f"{n / total * 100:5.1f}% {f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.drivers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, n in (("put", cmd_put, 3000), ("get", cmd_get, 40), ("put-large", cmd_put_large, 20),
                        ("cluster-put", cmd_cluster_put, 2000), ("cluster-get", cmd_cluster_get, 30)):
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--n", type=int, default=n, help="operations measured")
        p.add_argument("--spy", help="record the server(s) with py-spy into this raw file (.<node> on a cluster)")
        p.add_argument("--gil", action="store_true", help="py-spy: only the thread holding the GIL")
        p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
        if name in ("get", "put-large", "cluster-get", "cluster-put"):
            p.add_argument("--perf", help="record the server(s) with perf record -g into this file (.<node> on a cluster)")
        if name == "get":
            p.add_argument("--disks", type=int, default=16)
        if name in ("put", "put-large"):
            p.add_argument("--disks", type=int, default=4)
            p.add_argument("--concurrency", type=int, default=1, help="PUTs at a time")
            p.add_argument("--checksum", choices=["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"],
                           help="send this checksum of the body (boto3 sends CRC32 by default)")
        if name == "cluster-put":
            p.add_argument("--versioned", action="store_true", help="into a bucket with versioning enabled")
            p.add_argument("--disks", type=int, default=4, help="disks per node")
        if name == "cluster-get":
            p.add_argument("--via", type=int, choices=[1, 2, 3, 4], help="every GET through this node")
    p = sub.add_parser("cluster-idle")
    p.set_defaults(fn=cmd_cluster_idle)
    p.add_argument("--n", type=int, default=40_000, help="keys put in the bucket first")
    p.add_argument("--settle", type=float, default=20.0, help="seconds left alone before measuring")
    p.add_argument("--seconds", type=float, default=130.0, help="seconds measured (anti-entropy: a pass a minute)")
    p = sub.add_parser("profile")
    p.set_defaults(fn=cmd_profile)
    p.add_argument("files", nargs="+")
    p.add_argument("--top", type=int, default=60)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
