"""Cluster suite: the same S3 load on one node and on a 4-node loopback cluster, in one run.

Three deployments, each started fresh on temporary disks with ``--sync on`` and stopped by
pid when its phase is done:

- ``1 node x 4``: ``buckets server --address 127.0.0.1:PORT D1..D4`` (the default
  single-node layout, 2+2), as the http suite runs it;
- ``1 node x 16``: one node over 16 disks: the same erasure layout as the cluster (12+4),
  so the difference to the cluster is the network hops, not the layout;
- ``4 nodes x 4``: ``buckets server --address 127.0.0.i:PORT http://127.0.0.1:PORT/.../n1/d{1...4}
  ... http://127.0.0.4:PORT/.../n4/d{1...4}`` on every node i (the same list everywhere), every
  request sent to a node chosen at random;
- ``4 nodes x 1``: the same with one disk per node: the four disks and the 2+2 layout of
  ``1 node x 4``, spread over four nodes, so that the difference is the cluster alone (peer
  RPC, the replicated index), as ``4 nodes x 4`` against ``1 node x 16`` is.

On each: 4 KiB PUT and GET (16 concurrent clients) and 16 MiB PUT and GET (streamed in 1 MiB
chunks, one at a time), with p50/p99 latency and the servers' CPU per operation (all nodes).
A node's first 16 MiB GET is measured apart (one through each node: it grows the node's heap,
whose first touch is slow on this VM); the GET rate is that of GET_REPS GETs after those.

Then, on the cluster only, what a GET costs in peer RPC: each node counts every peer
request it serves in ``/metrics`` (``buckets_s3_requests_total{api="peer.<service>.<method>"}``),
so sequential GETs with a scrape of all four nodes around each one give the peer calls of
every GET, split into the registry lookup (``peer.index.*``) and shard reads (``peer.disk.*``).
What the nodes call on their own meanwhile (BACKGROUND_APIS: the disk monitor's probes,
anti-entropy, the disk usage a scrape asks for) is counted apart.

Targets (printed, never asserted): the cluster's 16 MiB GET within 2x of one node's
(ratio >= 0.5); the cluster's 4 KiB PUT at least half of one node's over the same disks and
layout (``4 nodes x 1`` against ``1 node x 4``, ``4 nodes x 4`` against ``1 node x 16``;
``4 nodes x 4`` against ``1 node x 4`` is reported too); and the registry lookup adding at most
one peer RPC to a GET.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO

from bench.http_suite import ACCESS_KEY, BUCKET, REPO_ROOT, SECRET_KEY, ServerUnavailable, _add_run
from bench.measure import (MB, KiB, LatencyRun, MiB, ScratchDir, chunk_stream, payload, run_async, run_concurrently,
                           run_sequentially)
from bench.report import SuiteResult, at_least, below

NODES = 4
DISKS_PER_NODE = 4
CLUSTER = f"{NODES} nodes x {DISKS_PER_NODE}"
NARROW_CLUSTER = f"{NODES} nodes x 1"  # the disks and layout of "1 node x 4", one disk per node
# (cluster, one node) pairs reported as ratios; the like-for-like ones (the same disks, the same
# erasure layout, so the difference is peer RPC and the replicated index) carry the 4 KiB PUT target.
LIKE_FOR_LIKE = ((NARROW_CLUSTER, "1 node x 4"), (CLUSTER, "1 node x 16"))
RATIOS = ((CLUSTER, "1 node x 4"), *LIKE_FOR_LIKE)
# The deployments, in the order they run: (label, nodes, disks per node).
PLANS = (("1 node x 4", 1, DISKS_PER_NODE), ("1 node x 16", 1, NODES * DISKS_PER_NODE),
         (CLUSTER, NODES, DISKS_PER_NODE), (NARROW_CLUSTER, NODES, 1))
CONCURRENCY = 16
START_TIMEOUT = 180.0  # a cluster forms in 10-60 s on a loaded 2-core machine
CONTROL_PORT_OFFSET = 1000  # buckets.cluster.control: the Raft port is the S3 port + 1000
GET_REPS = 20  # sequential 16 MiB GETs measured after each node's first (the large objects in turn)
RPC_SAMPLE_GETS = 40  # sequential GETs whose peer calls are counted one by one
_PEER_LINE = re.compile(r'^buckets_s3_requests_total\{api="(peer\.[^"]+)",status_class="([^"]+)"\} ([0-9.e+]+)$',
                        re.MULTILINE)


def _port_free_on_all(hosts: list[str]) -> int:
    """A port free on every host, with its control port (S3 port + 1000) free too."""
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
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        s.bind((host, p))
        except OSError:
            continue
        return port
    raise ServerUnavailable("no port free on every loopback address")


@dataclass
class Deployment:
    """One or more ``buckets server`` processes: a single node over local disks, or every
    node of a loopback cluster (node i on 127.0.0.i, all on one port)."""

    label: str
    base: str
    nodes: int
    disks_per_node: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[BinaryIO] = field(default_factory=list, repr=False)
    port: int = 0

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.{i}" for i in range(1, self.nodes + 1)]

    @property
    def endpoints(self) -> list[str]:
        return [f"http://{h}:{self.port}" for h in self.hosts]

    def commands(self) -> list[list[str]]:
        # BENCH_SERVER_ARGS: more flags for every server started (an A/B: "--read-leases off").
        base = [sys.executable, "-m", "buckets", "server", "--sync", "on",
                *shlex.split(os.environ.get("BENCH_SERVER_ARGS", ""))]
        if self.nodes == 1:
            disks = [os.path.join(self.base, f"d{j}") for j in range(1, self.disks_per_node + 1)]
            return [base + ["--address", f"127.0.0.1:{self.port}", *disks]]
        spec = [f"{url}{self.base}/n{i}/d{{1...{self.disks_per_node}}}" for i, url in enumerate(self.endpoints, 1)]
        return [base + ["--address", f"{host}:{self.port}", *spec] for host in self.hosts]

    def start(self) -> None:
        self.port = _port_free_on_all(self.hosts)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUCKETS_")}
        env.update(BUCKETS_ROOT_USER=ACCESS_KEY, BUCKETS_ROOT_PASSWORD=SECRET_KEY, BUCKETS_SCANNER_RATE="0")
        for n, cmd in enumerate(self.commands(), 1):
            log = open(os.path.join(self.base, f"node{n}.log"), "wb")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                               cwd=REPO_ROOT, stdin=subprocess.DEVNULL))

    def exited(self) -> str | None:
        """Which node exited, with its log's last lines; None while all run."""
        for n, proc in enumerate(self.procs, 1):
            if proc.poll() is not None:
                return f"node {n} exited with status {proc.returncode}: {self.log_tail(n)}"
        return None

    def log_tail(self, n: int, lines: int = 3) -> str:
        try:
            with open(os.path.join(self.base, f"node{n}.log"), "rb") as fh:
                text = fh.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def log_count(self, text: str) -> int:
        """Lines of all nodes' logs containing ``text``."""
        count = 0
        for n in range(1, len(self.procs) + 1):
            try:
                with open(os.path.join(self.base, f"node{n}.log"), "rb") as fh:
                    count += sum(1 for line in fh if text.encode() in line)
            except OSError:
                pass
        return count

    def cpu_seconds(self) -> float | None:
        """User + system CPU all nodes have used so far (None without psutil)."""
        try:
            import psutil

            total = 0.0
            for proc in self.procs:
                t = psutil.Process(proc.pid).cpu_times()
                total += t.user + t.system
            return total
        except Exception:  # psutil missing, or a process went away
            return None

    def stop(self) -> None:
        """SIGTERM every node by pid, wait up to 20 s each, then SIGKILL."""
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
        for log in self.logs:
            log.close()


class RandomNodeClient:
    """``SignedS3Client``'s calls, each sent to a node chosen at random (signed for that node)."""

    def __init__(self, clients: list, rng: random.Random) -> None:
        self.clients = clients
        self.rng = rng

    def pick(self):
        return self.rng.choice(self.clients)

    @property
    def sign_seconds(self) -> float:
        return sum(c.sign_seconds for c in self.clients)

    @property
    def signed(self) -> int:
        return sum(c.signed for c in self.clients)

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        await self.pick().put(bucket, key, body)

    async def put_stream(self, bucket: str, key: str, size: int, stream) -> None:
        await self.pick().put_stream(bucket, key, size, stream)

    async def get(self, bucket: str, key: str) -> int:
        return await self.pick().get(bucket, key)


async def _wait_ready(dep: Deployment, clients: list) -> None:
    """Until every node answers a signed ListBuckets, a node dies, or the timeout passes."""
    import aiohttp

    deadline = time.monotonic() + START_TIMEOUT
    pending = list(clients)
    last = "no answer"
    while pending and time.monotonic() < deadline:
        if (why := dep.exited()) is not None:
            raise ServerUnavailable(why)
        try:
            await pending[0].list_buckets()
            pending.pop(0)
            continue
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # an HTTP error status: not serving S3 yet
            last = str(exc)
        await asyncio.sleep(0.3)
    if pending:
        raise ServerUnavailable(f"{dep.label}: no ListBuckets within {START_TIMEOUT:.0f}s from "
                                f"{pending[0].endpoint} ({last})")
    if dep.nodes == 1:
        return
    # Ready nodes may still count a peer's disks offline for a few seconds after forming; a
    # write meanwhile lands on fewer disks and is healed later, which is not what we measure.
    session = clients[0].session
    while time.monotonic() < deadline:
        if (why := dep.exited()) is not None:
            raise ServerUnavailable(why)
        try:
            views = []
            for url in dep.endpoints:
                async with session.get(f"{url}/health/cluster") as resp:
                    views.append(await resp.json(content_type=None))
            last = "; ".join(f"{n['endpoint']} online={n['online']} disks {n['disks_online']}/{n['disks_total']}"
                             for v in views for n in v.get("nodes", [])
                             if not (n["online"] and n["disks_online"] == n["disks_total"]))
            if not last and all(v.get("nodes") for v in views):
                return
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.3)
    raise ServerUnavailable(f"{dep.label}: not every node and disk online within {START_TIMEOUT:.0f}s ({last})")


def _cpu_note(dep: Deployment, cpu0: float | None, client0: float, ops: int, unit: str) -> str:
    client = (time.process_time() - client0) / max(ops, 1) * 1e6
    parts = [f"client CPU {client:,.0f} µs/{unit}"]
    cpu = dep.cpu_seconds()
    if cpu is not None and cpu0 is not None:
        parts.append(f"server CPU {(cpu - cpu0) / max(ops, 1) * 1e6:,.0f} µs/{unit} "
                     f"({'all ' + str(dep.nodes) + ' nodes' if dep.nodes > 1 else 'one process'})")
    return "; ".join(parts)


async def _load(result: SuiteResult, dep: Deployment, client, small: int, size: int, reps: int) -> dict[str, float]:
    """4 KiB PUT/GET from 16 clients and 16 MiB PUT/GET one at a time; returns the rates."""
    rates: dict[str, float] = {}
    body = payload(4 * KiB)

    async def put(i: int) -> None:
        await client.put(BUCKET, f"small/{i:07d}", body)

    async def get(i: int) -> None:
        if await client.get(BUCKET, f"small/{i:07d}") != len(body):
            raise AssertionError(f"GET small/{i:07d}: wrong length")

    for op, fn in (("PUT", put), ("GET", get)):
        cpu0, client0 = dep.cpu_seconds(), time.process_time()
        run = await run_concurrently(fn, small, CONCURRENCY)
        name = f"{dep.label}: 4 KiB {op}"
        _add_run(result, name, run, "ops/s", run.ops_per_second, note=_cpu_note(dep, cpu0, client0, run.ops, "op"))
        rates[f"4k {op}"] = run.ops_per_second if run.ops and not run.failures else 0.0

    chunks = [payload(MiB) for _ in range(8)]
    cpu0, client0 = dep.cpu_seconds(), time.process_time()
    run = await run_sequentially(reps, lambda i: client.put_stream(BUCKET, f"large-{i}", size, chunk_stream(size, chunks)))
    _add_large(result, dep, f"{dep.label}: {size // MiB} MiB PUT", run, size, cpu0, client0)
    rates["large PUT"] = _rate(run, size)

    # A node's first large GET grows its heap by a span's buffers (~20 MiB): page faults,
    # which on this VM cost a first touch of the guest's memory (~100 ms more than a later
    # GET, measured). With GETs through random nodes most of a few GETs would be some node's
    # first, so those are measured apart (one per node) and the steady rate from GET_REPS more.
    nodes = getattr(client, "clients", [client])

    async def get(i: int, via=None) -> None:
        if (got := await (via or client).get(BUCKET, f"large-{i % reps}")) != size:
            raise AssertionError(f"GET large-{i % reps}: {got} bytes, expected {size}")

    cpu0, client0 = dep.cpu_seconds(), time.process_time()
    run = await run_sequentially(len(nodes), lambda i: get(i, nodes[i]))
    _add_large(result, dep, f"{dep.label}: {size // MiB} MiB GET, the first through each node", run, size, cpu0, client0)
    cpu0, client0 = dep.cpu_seconds(), time.process_time()
    run = await run_sequentially(GET_REPS if reps > 2 else 2 * reps, get)
    _add_large(result, dep, f"{dep.label}: {size // MiB} MiB GET", run, size, cpu0, client0)
    rates["large GET"] = _rate(run, size)
    return rates


def _rate(run: LatencyRun, size: int) -> float:
    return size * run.ops / sum(run.latencies) / MB if run.ops and not run.failures else 0.0


def _add_large(result: SuiteResult, dep: Deployment, name: str, run: LatencyRun, size: int,
               cpu0: float | None, client0: float) -> None:
    rate = size * run.ops / sum(run.latencies) / MB if run.ops else None
    _add_run(result, name, run, "MB/s", rate, note=_cpu_note(dep, cpu0, client0, max(1, run.ops) * size // MiB, "MiB"))


async def _peer_counts(session, endpoints: list[str]) -> Counter:
    """Every peer request every node has served so far, by API (``peer.index.get``, ...)."""
    async def one(url: str) -> Counter:
        async with session.get(f"{url}/metrics") as resp:
            text = await resp.text()
        out: Counter = Counter()
        for api, _status, value in _PEER_LINE.findall(text):
            out[api] += float(value)
        return out

    total: Counter = Counter()
    for c in await asyncio.gather(*(one(u) for u in endpoints)):
        total.update(c)
    return total


async def _hedges(session, endpoints: list[str]) -> tuple[float, float, float]:
    """Hedged shard reads, those the spare won, and shards writes left out for lagging,
    summed over the nodes' /metrics."""
    names = ("buckets_read_hedges_total ", "buckets_read_hedges_won_total ", "buckets_write_shards_left_out_total ")
    sums = [0.0, 0.0, 0.0]
    for url in endpoints:
        async with session.get(f"{url}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                for n, name in enumerate(names):
                    if line.startswith(name):
                        sums[n] += float(line.split()[1])
    return sums[0], sums[1], sums[2]


# Peer calls the nodes make on their own, whatever the clients do: the disk monitor's probe
# (every disk's format, every 5 s), the anti-entropy pass, health probes, and the disk usage
# a /metrics scrape asks every peer for, a read lease's renewals (every 0.5 s while a bucket is
# read) and its holder's confirmations of its recent merges (``buckets.cluster.leases``), the
# clock watch's pings and the level watch's hellos (every 10 s to each peer).
# Counted apart, never charged to a GET.
BACKGROUND_APIS = frozenset({"peer.disk.read_format", "peer.disk.info", "peer.disk.status", "peer.index.digest",
                             "peer.index.versions", "peer.node.ping", "peer.node.hello", "peer.index.grant",
                             "peer.index.holds"})


async def _rpc_per_get(result: SuiteResult, dep: Deployment, session, clients: list, rng: random.Random,
                       keys: list[str], gets: int, label: str) -> None:
    """Sequential GETs of existing objects through random nodes, the peer calls of each one
    counted from every node's /metrics before and after it."""
    endpoints = dep.endpoints
    index: list[float] = []
    disk: list[float] = []
    index_by_node: dict[str, list[float]] = {url: [] for url in endpoints}
    disk_by_node: dict[str, list[float]] = {url: [] for url in endpoints}
    by_api: Counter = Counter()
    background: Counter = Counter()
    for _ in range(gets):
        key = rng.choice(keys)
        client = rng.choice(clients)
        before = await _peer_counts(session, endpoints)
        await client.get(BUCKET, key)
        delta = await _peer_counts(session, endpoints) - before
        counted = {api: n for api, n in delta.items() if api not in BACKGROUND_APIS}
        background.update({api: n for api, n in delta.items() if api in BACKGROUND_APIS})
        by_api.update(counted)
        index.append(sum(n for api, n in counted.items() if api.startswith("peer.index.")))
        disk.append(sum(n for api, n in counted.items() if api.startswith("peer.disk.")))
        index_by_node[client.endpoint].append(index[-1])
        disk_by_node[client.endpoint].append(disk[-1])
    per_node = ", ".join(f"via {url.split('//')[1].split(':')[0]}: {max(v):g}" for url, v in index_by_node.items() if v)
    # With a read lease, the bucket's first index replica answers the lookup alone: one call
    # from any other node, none from it (without a lease: two from a node holding no replica,
    # one from a replica).
    round_trips = ", ".join(
        f"via {url.split('//')[1].split(':')[0]}: {sum(index_by_node[url]) / len(v):.2f} index + "
        f"{sum(v) / len(v):.2f} disk" for url, v in disk_by_node.items() if v)
    result.add(f"cluster: peer RPC per {label} GET, registry lookup (peer.index.*), max", max(index), "calls",
               below(1.5), f"target: at most 1; mean {sum(index) / len(index):.2f} over {len(index)} sequential "
               f"GETs through random nodes; max by the node asked: {per_node}", samples=index)
    result.add(f"cluster: peer RPC per {label} GET, shard reads (peer.disk.*), mean", sum(disk) / len(disk), "calls",
               note=f"max {max(disk):g}; per GET by API: "
                    + ", ".join(f"{a} {n / gets:.2f}" for a, n in sorted(by_api.items()))
                    + f"; mean peer calls per GET by the node asked: {round_trips}"
                    + "; meanwhile in the background (not counted): "
                    + (", ".join(f"{a} {n:g}" for a, n in sorted(background.items())) or "nothing"),
               samples=disk)


async def _with(dep: Deployment, body) -> None:
    import aiohttp

    from bench.s3client import SignedS3Client

    dep.start()
    try:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2 + 8)
        timeout = aiohttp.ClientTimeout(total=600, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
            clients = [SignedS3Client(session, url, ACCESS_KEY, SECRET_KEY) for url in dep.endpoints]
            await _wait_ready(dep, clients)
            await clients[0].create_bucket(BUCKET)
            await body(session, clients)
    finally:
        dep.stop()


async def _suite(result: SuiteResult, base_dir: str | None, quick: bool) -> None:
    small = 300 if quick else 2000
    size = 16 * MiB
    reps = 2 if quick else 5
    rpc_gets = 10 if quick else RPC_SAMPLE_GETS
    seed = int(os.environ.get("BENCH_SEED") or 1)
    result.params.update(small_ops=small, small_object_bytes=4 * KiB, concurrency=CONCURRENCY, large_object_bytes=size,
                         large_repetitions=reps, large_get_repetitions=GET_REPS if reps > 2 else 2 * reps, nodes=NODES, disks_per_node=DISKS_PER_NODE, sync="on",
                         deployments=[label for label, _, _ in PLANS],
                         rpc_sample_gets=rpc_gets, seed=seed, client="aiohttp + botocore S3SigV4Auth")
    rates: dict[str, dict[str, float]] = {}
    with ScratchDir(base_dir, "buckets-bench-cluster-") as scratch:
        for label, nodes, disks in PLANS:
            dep = Deployment(label, scratch.sub(label.replace(" ", ""))[0], nodes, disks)
            rng = random.Random(seed)

            async def body(session, clients, dep=dep, rng=rng, label=label) -> None:
                client = RandomNodeClient(clients, rng)
                rates[label] = await _load(result, dep, client, small, size, reps)
                if label == CLUSTER:  # the peer calls of a GET: on the 4 x 4 cluster only
                    small_keys = [f"small/{i:07d}" for i in range(small)]
                    large_keys = [f"large-{i}" for i in range(reps)]
                    await _rpc_per_get(result, dep, session, clients, rng, small_keys, rpc_gets, "4 KiB")
                    await _rpc_per_get(result, dep, session, clients, rng, large_keys, min(rpc_gets, 10),
                                       f"{size // MiB} MiB")
                hedged, won, left_out = await _hedges(session, dep.endpoints)
                result.notes.append(f"{label}: {hedged:g} shard reads lagged far enough behind the others to be "
                                    f"hedged ({won:g} of them won by the spare), and writes left {left_out:g} "
                                    "lagging shards out, over the whole run (engine/hedge.py: healthy disks and "
                                    "links should do either rarely)")

            await _with(dep, body)
            damaged = dep.log_count("damaged object")
            if damaged:
                result.notes.append(f"{label}: the servers logged {damaged} 'damaged object' lines (writes that "
                                    f"missed disks, healed later): its figures include that work")
    for cluster_label, label in RATIOS:
        cluster, one = rates.get(cluster_label, {}), rates.get(label, {})
        name = "cluster" if cluster_label == CLUSTER else cluster_label
        for op, what in (("large GET", f"{size // MiB} MiB GET"), ("large PUT", f"{size // MiB} MiB PUT"),
                         ("4k GET", "4 KiB GET"), ("4k PUT", "4 KiB PUT")):
            if one.get(op) and cluster.get(op):
                target, why = None, ""
                if op == "large GET" and (cluster_label, label) == (CLUSTER, "1 node x 4"):
                    target, why = at_least(0.5), "target: within 2x of one node (>= 0.5)"
                elif op == "4k PUT" and (cluster_label, label) in LIKE_FOR_LIKE:
                    target, why = at_least(0.5), ("target: at least half of one node over the same disks and "
                                                  "erasure layout (>= 0.5)")
                result.add(f"ratio {name} / {label}: {what}", cluster[op] / one[op], "x", target, why)
    result.notes.append("client and every node share this machine's cores: a node's CPU is the others' loss, "
                        "so the cluster pays for 4 processes (and their peer RPC) on 2 cores")
    result.notes.append("each request goes to a node chosen at random (seeded: BENCH_SEED); sync on everywhere")


def run(quick: bool = False, base_dir: str | None = None, **_: object) -> SuiteResult:
    result = SuiteResult("cluster")
    try:
        run_async(_suite(result, base_dir, quick))
    except ServerUnavailable as exc:
        return SuiteResult("cluster", status="skipped", reason=f"server unavailable: {exc}", params=result.params)
    return result
