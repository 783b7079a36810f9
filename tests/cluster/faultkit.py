"""Fault injection for the cluster suite: restarts that keep the logs, network partitions and
slow links.

``FaultCluster`` is ``clusterproc.Cluster`` plus:

* every run of a node logs to its own file (``node{i}.run{n}.log``) and ``log(i)`` is all of
  them, so a restart never hides what the previous run logged (the traceback check at the end
  covers every run);
* ``restart(i)``, ``alive(i)``, ``leader()`` (the control-plane leader as a node number, from
  ``/health/cluster``), ``replica_versions`` (signed peer RPCs, as another node would make
  them, to look at one node's own replica of the index);
* with ``partitionable=True`` each node runs in its own cgroup (cgroup v2), so its sockets can
  be told apart from the other nodes' although they all share the loopback interface and
  connect from 127.0.0.1.

Partitions (``Partition``): nodes address each other by URL (``http://127.0.0.N:PORT``) and
the control plane by ``127.0.0.N:PORT+1000``, and the test's own S3 clients use the same
addresses and ports, so neither a TCP proxy nor an address-based rule can cut peer traffic
alone. The kernel can: an nftables ``output`` rule matches a packet by the cgroup of the
socket that sends it (``socket cgroupv2``). Isolating node P adds one table with two kinds of
rules, both dropping packets (a real partition: no reset, the peer just never answers):

* sent by P's sockets to another node's S3 or control port (P -> peers; this also stalls
  connections P had open before the cut);
* sent by another node's sockets to P's S3 or control port (peers -> P).

The test process's sockets are in neither cgroup, so clients still reach every node. The
table is named after the cluster's port and removed on heal (and at teardown), so it touches
nothing else on the machine. It needs root, nftables with the ``socket`` expression, and a
writable cgroup v2 hierarchy: ``partition_support()`` says why not when one is missing.

Slow links (``SlowLink``): node P's traffic with the other nodes, both directions, goes through
a token bucket of a few Mbit/s instead of loopback's speed (a degraded NIC, a link renegotiated
at a fraction of its rate, a congested switch port). The same cgroup rules find P's connections
(nftables marks each one, ``ct mark``, whichever side opened it) and set the DSCP field of their
packets; an HTB queue at the root of ``lo`` sends the packets with that DSCP value through one
class of the chosen rate and every other packet straight on, unshaped (HTB's default of no
class). ``lo`` has one root queue for the whole machine, so slow links take a file lock: one at
a time. ``slow_link_support()`` says why not when ``tc`` or the kernel's HTB is missing.

The class queues what waits for its turn in a byte FIFO holding one second at its rate (what
a device's buffer holds; beyond it packets are dropped and TCP backs off). HTB's default
queue there counts packets (``lo``'s 1,000, each up to a 64 KiB segment): 64 MB, two minutes
at 4 Mbit/s, in which the stale bytes of streams cut long ago (a hedged read's, a dropped
shard's) held every later call to the node for more than the 10 s peer call timeout, and the
other nodes rightly took it offline. No device buffers minutes; this kernel has no fair
queueing (``fq_codel``, ``sfq``) to model a host's default queue with.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from clusterproc import CONTROL_OFFSET, ROOT_PASSWORD, ROOT_USER, Cluster
from serverproc import spawn, stop


NFT_CGROUP_BASE = Path("/sys/fs/cgroup")  # nft resolves ``socket cgroupv2`` paths below this directory


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        pass
    return None


def partition_support() -> str | None:
    """None if partitions work here, else the reason they do not."""
    if os.geteuid() != 0:
        return "partitions need root (nftables rules)"
    if shutil.which("nft") is None:
        return "nft is not installed (apt-get install nftables)"
    root = _cgroup2_mount()
    if root is None or not os.access(root, os.W_OK):
        return "no writable cgroup v2 hierarchy to tell the nodes' sockets apart"
    if not root.is_relative_to(NFT_CGROUP_BASE):
        return f"cgroup v2 is mounted at {root}, outside {NFT_CGROUP_BASE} where nft looks for it"
    probe = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"nft does not work here: {probe.stderr.strip()}"
    return None


class FaultCluster(Cluster):
    def __init__(self, base: Path, *, partitionable: bool = False, **kwargs) -> None:
        super().__init__(base, **kwargs)
        self.runs: dict[int, list[Path]] = {i: [] for i in range(1, self.n + 1)}
        self.cgroup_root = _cgroup2_mount() if partitionable else None
        self.cgroups: dict[int, Path] = {}
        if self.cgroup_root is not None:
            for i in range(1, self.n + 1):
                cg = self.cgroup_root / f"buckets-test-{self.port}-n{i}"
                cg.mkdir(exist_ok=True)
                self.cgroups[i] = cg

    # -- processes ------------------------------------------------------------------------
    def start(self, *which: int, wait: bool = True, timeout: float = 180.0) -> None:
        nodes = which or tuple(range(1, self.n + 1))
        for i in nodes:
            if self.alive(i):
                raise RuntimeError(f"node {i} is already running")
            log_path = self.base / f"node{i}.run{len(self.runs[i]) + 1}.log"
            self.runs[i].append(log_path)
            self.logs[i] = log_path
            command = self.command(i)
            if i in self.cgroups:  # join the node's cgroup before exec, so every socket it opens is in it
                command = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.cgroups[i]), *command]
            self.procs[i] = spawn(command, self.env, log_path, self.base)
        if wait:
            for i in nodes:
                self.wait_ready(i, timeout)

    def restart(self, i: int, timeout: float = 180.0) -> None:
        self.start(i, timeout=timeout)

    def alive(self, i: int) -> bool:
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None

    def log(self, i: int) -> str:
        return "".join(p.read_text(errors="replace") for p in self.runs[i] if p.exists())

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)

    def close(self) -> None:
        """Stop every node and remove the cgroups (after their processes are gone)."""
        self.stop_all()
        for cg in self.cgroups.values():
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # a process is still leaving it
                    time.sleep(0.1)

    def bug_lines(self) -> dict[int, str]:
        """Per node, the tail of its logs if any run logged a traceback or an unhandled error."""
        out = {}
        for i in range(1, self.n + 1):
            text = self.log(i)
            if "Traceback" in text or "unhandled error" in text:
                at = max(text.find("Traceback"), text.find("unhandled error"))
                out[i] = text[max(0, at - 3000): at + 3000]
        return out

    # -- what the nodes say ---------------------------------------------------------------
    def health(self, i: int, timeout: float = 5.0) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.url(i)}/health/cluster", timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 503 while the control plane has no majority
            try:
                return json.loads(exc.read())
            except ValueError:
                return None
        except (OSError, ValueError):
            return None

    def leader(self) -> int | None:
        """The control-plane leader as a node number, if a live node names one."""
        for i in range(1, self.n + 1):
            if not self.alive(i):
                continue
            control = (self.health(i) or {}).get("control") or {}
            address = control.get("leader")
            if address:
                for j in range(1, self.n + 1):
                    if address == f"{self.host(j)}:{self.port + CONTROL_OFFSET}":
                        return j
        return None

    def peer_calls(self, i: int, service: str, method: str, many: list[dict], timeout: float = 10.0) -> list:
        """Signed peer RPCs to node ``i`` (what another node would send), one per argument dict."""
        from buckets.cluster.rpcauth import cluster_secret
        from buckets.cluster.rpcclient import PeerClient, close_shared_session

        async def go():
            client = PeerClient(self.url(i), cluster_secret(None, ROOT_USER, ROOT_PASSWORD))
            try:
                return [await client.call(service, method, args, timeout=timeout) for args in many]
            finally:
                await client.close()
                await close_shared_session()

        return asyncio.run(go())

    def replica_versions(self, i: int, items: list[tuple[str, str]]) -> list[tuple | None]:
        """The version of each ``(bucket, key)`` in node ``i``'s own replica of the index (None:
        no entry there: not a replica of that bucket, or it missed the write)."""
        answers = self.peer_calls(i, "index", "get", [{"bucket": b, "key": k} for b, k in items])
        return [tuple(a["ts"]) if a.get("ts") is not None else None for a in answers]


class Partition:
    """Cut one node's peer traffic (both directions, S3 port and control port) and heal it."""

    def __init__(self, cluster: FaultCluster) -> None:
        if not cluster.cgroups:
            raise RuntimeError("start the cluster with partitionable=True")
        self.cluster = cluster
        self.table = f"buckets_test_{cluster.port}"
        self.isolated: int | None = None

    def _rel(self, i: int) -> str:
        return str(self.cluster.cgroups[i].relative_to(NFT_CGROUP_BASE))

    def isolate(self, p: int) -> None:
        c = self.cluster
        ports = f"{{ {c.port}, {c.port + CONTROL_OFFSET} }}"
        rules = [
            f"add table inet {self.table}",
            f"add chain inet {self.table} out {{ type filter hook output priority 0; policy accept; }}",
            # P -> any other node
            f'add rule inet {self.table} out socket cgroupv2 level 1 "{self._rel(p)}" '
            f"ip daddr 127.0.0.0/8 ip daddr != {c.host(p)} tcp dport {ports} drop",
        ]
        for j in range(1, c.n + 1):  # any other node -> P
            if j != p:
                rules.append(f'add rule inet {self.table} out socket cgroupv2 level 1 "{self._rel(j)}" '
                             f"ip daddr {c.host(p)} tcp dport {ports} drop")
        done = subprocess.run(["nft", "-f", "-"], input="\n".join(rules) + "\n", capture_output=True, text=True)
        if done.returncode != 0:
            self.heal()
            raise RuntimeError(f"nft refused the partition rules: {done.stderr}")
        self.isolated = p

    def heal(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)
        self.isolated = None

    def __enter__(self) -> Partition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()


SLOW_DSCP = "cs1"  # DSCP class 8: the TOS byte 0x20, what the tc filter matches
SLOW_LOCK = Path("/tmp/buckets-test-slow-link.lock")


def slow_link_support() -> str | None:
    """None if slow links work here, else the reason they do not."""
    reason = partition_support()
    if reason is not None:
        return reason
    if shutil.which("tc") is None:
        return "tc is not installed (apt-get install iproute2)"
    return None


def queue_bytes(rate: str, seconds: float = 1.0) -> int:
    """What a link of tc ``rate`` (``"4mbit"``, ``"512kbit"``) sends in ``seconds``, at least one
    of ``lo``'s 64 KiB segments."""
    units = {"gbit": 1e9, "mbit": 1e6, "kbit": 1e3, "bit": 1.0}
    for unit, bits in units.items():
        if rate.endswith(unit):
            return max(int(float(rate[:-len(unit)]) * bits / 8 * seconds), 64 << 10)
    raise ValueError(f"a tc rate in bit/s units, not {rate!r}")


class SlowLink:
    """Throttle one node's peer traffic (both directions, S3 and control ports) to ``rate``
    (a tc rate: ``"2mbit"``), and restore it. ``sent_bytes()`` counts what went through the
    throttled class since ``slow``: the bytes that crossed the slow link."""

    def __init__(self, cluster: FaultCluster) -> None:
        if not cluster.cgroups:
            raise RuntimeError("start the cluster with partitionable=True")
        self.cluster = cluster
        self.table = f"buckets_slow_{cluster.port}"
        self.node: int | None = None
        self._lock = None

    def slow(self, p: int, rate: str) -> None:
        c = self.cluster
        SLOW_LOCK.touch()
        self._lock = open(SLOW_LOCK)
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # lo's root queue is the machine's: one slow link at a time
        ports = f"{{ {c.port}, {c.port + CONTROL_OFFSET} }}"
        rel = str(c.cgroups[p].relative_to(NFT_CGROUP_BASE))
        rules = [
            f"add table inet {self.table}",
            f"add chain inet {self.table} out {{ type filter hook output priority -150; policy accept; }}",
            # every connection P opens or answers, and every one another node opens to P ...
            f'add rule inet {self.table} out socket cgroupv2 level 1 "{rel}" ip daddr 127.0.0.0/8 ct mark set 0x5107',
            f"add rule inet {self.table} out ip daddr {c.host(p)} tcp dport {ports} ct mark set 0x5107",
            # ... has its packets, both ways, sent through the slow class
            f"add rule inet {self.table} out ct mark 0x5107 ip dscp set {SLOW_DSCP}",
        ]
        commands = [
            "tc qdisc add dev lo root handle 1: htb",
            f"tc class add dev lo parent 1: classid 1:1 htb rate {rate} ceil {rate}",
            f"tc qdisc add dev lo parent 1:1 bfifo limit {queue_bytes(rate)}",
            "tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip tos 0x20 0xfc flowid 1:1",
        ]
        try:
            done = subprocess.run(["nft", "-f", "-"], input="\n".join(rules) + "\n", capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"nft refused the slow link's rules: {done.stderr}")
            for command in commands:
                done = subprocess.run(command.split(), capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{command}: {done.stderr.strip()}")
        except BaseException:
            self.restore()
            raise
        self.node = p

    def sent_bytes(self) -> int:
        """Bytes the slow class has sent since ``slow`` (0 when no link is slow)."""
        out = subprocess.run(["tc", "-s", "class", "show", "dev", "lo", "classid", "1:1"],
                             capture_output=True, text=True).stdout
        words = out.split()
        return int(words[words.index("Sent") + 1]) if "Sent" in words else 0

    def restore(self) -> None:
        if self._lock is None:
            return
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)
        self.node = None
        lock, self._lock = self._lock, None
        lock.close()  # releases the flock

    def __enter__(self) -> SlowLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


BLKIO = Path("/sys/fs/cgroup/blkio")  # cgroup v1's block I/O controller, where this host has it


def slow_disk_support() -> str | None:
    """None if one disk of a node can be made slow here (a loop device throttled for that
    node's process by cgroup v1 ``blkio``), else the reason it cannot."""
    if os.geteuid() != 0:
        return "throttling a disk needs root"
    if not (BLKIO / "blkio.throttle.read_bps_device").exists():
        return "no cgroup v1 blkio controller with throttling on this host"
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class SlowDisk:
    """Throttle node ``i``'s I/O on one block ``device`` (a loop device under one of its disks)
    to ``rate`` bytes per second each way, and restore it. The throttle applies to direct I/O
    and to reads that miss the page cache (the kernel writes buffered pages back unthrottled):
    ``drop_caches`` sends the node's reads to the device again. A device that answers most
    calls at once and some only after seconds, as a disk retrying sectors does."""

    def __init__(self, cluster: Cluster, i: int, device: str) -> None:
        self.cluster, self.i, self.device = cluster, i, device
        self.group = BLKIO / f"buckets-test-{cluster.port}-n{i}"

    def slow(self, rate: int) -> None:
        dev = os.stat(self.device).st_rdev
        numbers = f"{os.major(dev)}:{os.minor(dev)}"
        self.group.mkdir(exist_ok=True)
        (self.group / "blkio.throttle.read_bps_device").write_text(f"{numbers} {rate}")
        (self.group / "blkio.throttle.write_bps_device").write_text(f"{numbers} {rate}")
        (self.group / "cgroup.procs").write_text(str(self.cluster.procs[self.i].pid))

    @staticmethod
    def drop_caches() -> None:
        subprocess.run(["sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches"], capture_output=True)

    def restore(self) -> None:
        if not self.group.exists():
            return
        for pid in (self.group / "cgroup.procs").read_text().split():
            try:
                (BLKIO / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # (gone meanwhile)
        try:
            self.group.rmdir()
        except OSError:
            pass

    def __enter__(self) -> SlowDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


class MixedLoad:
    """Readers of fixed objects and writers of their own keys through some nodes of a cluster,
    with no retries (every failure is reported) and every request timed: the load of the slow
    link and slow disk tests. Readers GET random keys of ``digests`` and check their bytes;
    each writer PUTs ``w<via>-<n % 15>``, ``big_share`` of them 1 MiB, the rest 4 KiB."""

    def __init__(self, c: Cluster, bucket: str, digests: dict[str, str], *, readers=(1, 2, 4), writers=(1, 4),
                 writer_seed: int = 100, big_share: float = 0.1) -> None:
        self.c = c
        self.bucket = bucket
        self.digests = digests
        self.fixed = sorted(digests)
        self.big_share = big_share
        self.written: dict[str, str] = {}  # key -> sha256 of its last acknowledged body
        self.failures: list[str] = []
        self.timings: list[tuple[float, str]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._reader, args=(via, via), daemon=True) for via in readers]
        self.threads += [threading.Thread(target=self._writer, args=(via, writer_seed + via), daemon=True)
                         for via in writers]

    def start(self) -> MixedLoad:
        for t in self.threads:
            t.start()
        return self

    def __enter__(self) -> MixedLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=600)

    def _client(self, via: int):
        return self.c.client(via, retries={"max_attempts": 1, "mode": "standard"}, read_timeout=300)

    def _reader(self, via: int, seed: int) -> None:
        client = self._client(via)
        pick = random.Random(seed)
        while not self.stopping.is_set():
            key = pick.choice(self.fixed)
            started = time.monotonic()
            try:
                got = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                if hashlib.sha256(got).hexdigest() != self.digests[key]:
                    self.failures.append(f"GET {key} via {via}: wrong bytes")
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                self.failures.append(f"GET {key} via {via}: {exc!r}"[:300])
            self.timings.append((time.monotonic() - started, f"GET {key} via {via}"))

    def _writer(self, via: int, seed: int) -> None:
        client = self._client(via)
        make = random.Random(seed)
        n = 0
        while not self.stopping.is_set():
            key = f"w{via}-{n % 15}"
            body = make.randbytes(4096 if make.random() < 1 - self.big_share else 1 << 20)
            started = time.monotonic()
            try:
                client.put_object(Bucket=self.bucket, Key=key, Body=body)
                self.written[key] = hashlib.sha256(body).hexdigest()
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                self.failures.append(f"PUT {key} via {via}: {exc!r}"[:300])
            self.timings.append((time.monotonic() - started, f"PUT {key} ({len(body)} B) via {via}"))
            n += 1

    def summary(self) -> str:
        durations = sorted(self.timings)
        if not durations:
            return "no requests"
        return (f"{len(durations)} requests: median {durations[len(durations) // 2][0] * 1000:.0f} ms, "
                f"p99 {durations[int(len(durations) * 0.99)][0] * 1000:.0f} ms, slowest "
                + ", ".join(f"{d:.2f} s ({what})" for d, what in durations[-3:]))
