"""The integration suite's "cluster4" server: four `buckets server` nodes behind one address.

How a request reaches a node chosen at random:

* **boto3 (per request).** The nodes listen on 127.0.0.2-5, all on the same port. A
  ``before-sign.s3`` hook, registered last, rewrites the host of each request's URL from
  the suite's address (127.0.0.1:PORT) to a node picked at random, *before* botocore signs
  it: SigV4 signs the Host header, which botocore derives from the URL at signing time, so
  every request is signed for the node that receives it. A retry is a new request, signed
  again, for a new random node. Connections to each node are pooled as usual.
* **Everything else (per connection).** Raw sockets, http.client, curl, the aws cli, s3cmd,
  and presigned URLs (which name the address the client was given, as behind a real load
  balancer) connect to 127.0.0.1:PORT: a TCP proxy there forwards each connection to a node
  chosen at random and relays bytes both ways untouched (the Host header the client signed
  arrives unchanged; a half-close or a reset is passed on).

Rewriting the Host header after signing would break the signature, and an HTTP-aware proxy
that routes each request would have to parse (and could repair) the malformed requests this
suite sends on purpose; that is why the two paths differ. The choices come from one seeded
``random.Random`` (``CLUSTER_SEED``, printed in the pytest header) so a failing run repeats.

What the suite inspects works unchanged: ``data_dir`` holds all 16 disks side by side
(``n1-d1`` .. ``n4-d4``: node i serves ``DATA/ni-d{1...4}``), so a walk of it covers every
node's disks; ``log_text()`` is every node's log merged into one append-only text (each
line prefixed with its node), so ``len(log_text())`` taken before a request and sliced
after it shows exactly what every node logged meanwhile.

One write trails the requests: pysyncobj persists a node's Raft commit index
(``.buckets.sys/control/raft.journal.meta``) on its one-second timer, so up to a second or
two after a bucket was created or deleted the followers rewrite that file. Reading
``data_dir`` therefore first waits until every node has persisted the highest commit index
any node holds (``quiesce()``: the nodes' ``/health/cluster`` against the files, no fixed
sleep), and until no node holds back the removal of a write replaced moments ago (its
``buckets_replaced_removals_pending``: a DELETE through one node of a write made through
another removes it up to 30 s later), so a test that snapshots the disks before and after a request compares what the
request did, not what the previous test's bucket change left pending. A change the request
itself makes (a commit, a file) is still there to see.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import socket
import struct
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
from clusterproc import Cluster  # noqa: E402  (tests/cluster is not a package)
from s3server import ServerProcess  # noqa: E402

PROXY_HOST = "127.0.0.1"
NODES = 4
DISKS_PER_NODE = 4
SEED = int(os.environ.get("CLUSTER_SEED") or random.SystemRandom().randrange(1 << 32))


def _reset(sock: socket.socket) -> None:
    """Make the coming close() send a RST, and wake the thread reading this socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class RandomNodeProxy:
    """A TCP proxy on ``host:port``: each accepted connection goes to one of ``nodes``, chosen
    at random, and bytes are relayed both ways untouched (two threads per connection)."""

    def __init__(self, host: str, port: int, nodes: list[tuple[str, int]], rng: random.Random) -> None:
        self.nodes = nodes
        self.rng = rng
        self.connections: Counter[str] = Counter()  # node host -> connections forwarded
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(256)
        self._thread = threading.Thread(target=self._accept, name="cluster-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            node = self.rng.choice(self.nodes)
            self.connections[node[0]] += 1
            threading.Thread(target=self._serve, args=(client, node), daemon=True).start()

    def _serve(self, client: socket.socket, node: tuple[str, int]) -> None:
        try:
            upstream = socket.create_connection(node, timeout=10)
        except OSError:  # the node is down: the client sees a refused connection, as without us
            _reset(client)
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open.update((client, upstream))
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._open.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(262144):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # a half-close travels on
        except OSError:  # a reset (or a send into a closed peer): reset both sides
            _reset(src)
            _reset(dst)

    def stop(self) -> None:
        try:  # wakes the thread blocked in accept() (closing the socket alone does not, on Linux)
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                _reset(sock)
        self._thread.join(timeout=10)


class MergedLog:
    """Several growing log files read as one append-only text: each call appends the complete
    lines every file gained since the previous call, prefixed with the file's label."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self._paths = paths
        self._offsets = {label: 0 for label in paths}
        self._text = ""

    def text(self) -> str:
        for label, path in self._paths.items():
            try:
                with open(path, "rb") as f:
                    f.seek(self._offsets[label])
                    new = f.read()
            except FileNotFoundError:
                continue
            end = new.rfind(b"\n") + 1  # only complete lines: a line is never split in two
            if end:
                self._offsets[label] += end
                lines = new[:end].decode(errors="replace").splitlines(keepends=True)
                self._text += "".join(f"{label}| {line}" for line in lines)
        return self._text


class ClusterServer:
    """Stands in for ``s3server.ServerProcess``: the same attributes and methods the suite
    uses (``port``, ``endpoint``, ``scheme``, ``data_dir``, ``log_text()``, ``client()``),
    over a 4-node cluster."""

    scheme = "http"

    def __init__(self, base: Path, *, settings: dict[str, str], domain: str, root_user: str,
                 root_password: str, region: str) -> None:
        self._data_dir = base / "data"
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self.root_user, self.root_password, self.region = root_user, root_password, region
        self.cluster = Cluster(base, nodes=NODES, disks=DISKS_PER_NODE, extra_env=settings, first_host=2,
                               also_free=(PROXY_HOST,), data_root=self._data_dir, disk_prefix="n{node}-d",
                               extra_args=("--domain", domain))
        self.port = self.cluster.port
        self.node_hosts = [self.cluster.host(i) for i in range(1, NODES + 1)]
        self.rng = random.Random(SEED)
        self.requests: Counter[str] = Counter()  # node host -> boto3 requests sent there
        self._log = MergedLog({f"n{i}": self.cluster.logs[i] for i in range(1, NODES + 1)})
        self.proxy: RandomNodeProxy | None = None

    def start(self) -> None:
        self.cluster.start()
        self.cluster.wait_healthy()
        self.proxy = RandomNodeProxy(PROXY_HOST, self.port, [(h, self.port) for h in self.node_hosts], self.rng)

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        self.cluster.stop_all()

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{PROXY_HOST}:{self.port}"

    def log_text(self) -> str:
        return self._log.text()

    # Every node's log once one of them contains the text: the same wait, over the merged log.
    wait_log = ServerProcess.wait_log

    @property
    def data_dir(self) -> Path:
        """Every node's disks, side by side; read once the control plane's writes have landed."""
        if self.proxy is not None:
            self.quiesce()
        return self._data_dir

    def disk_dirs(self) -> list[Path]:
        """Every node's disks."""
        return sorted(p for p in self.data_dir.iterdir() if p.is_dir())

    def _control_status(self, i: int) -> dict:
        with urllib.request.urlopen(f"{self.cluster.url(i)}/health/cluster", timeout=10) as resp:
            return json.loads(resp.read())["control"]

    def _persisted_commit(self, i: int) -> int:
        path = self._data_dir / f"n{i}-d1" / ".buckets.sys" / "control" / "raft.journal.meta"
        with open(path, "rb") as f:
            return int(pickle.load(f).get("raftCommitIndex", 0))  # pysyncobj's own file, in our tmp dir

    def _pending_removals(self, i: int) -> float:
        with urllib.request.urlopen(f"{self.cluster.url(i)}/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("buckets_replaced_removals_pending "):
                    return float(line.split()[1])
        return 0.0

    def quiesce(self, timeout: float = 60.0) -> None:
        """Wait until every node has persisted the highest Raft commit index any node holds (then
        no control-plane write is pending until the next change), and has removed the data of
        the writes replaced moments ago that it held back (engine/replaced.py: a DELETE through
        one node of a write made through another removes it up to 30 s later, and a disk's log
        gets its kill records then)."""
        nodes = range(1, NODES + 1)
        deadline = time.monotonic() + timeout
        while True:
            committed = max(self._control_status(i)["commit_index"] for i in nodes)
            persisted = {i: self._persisted_commit(i) for i in nodes}
            pending: dict[int, float] = {}
            if min(persisted.values()) >= committed:
                pending = {i: self._pending_removals(i) for i in nodes}
                if not any(pending.values()):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes did not persist commit index {committed} within {timeout:g}s "
                                     f"({persisted}), or removals still wait ({pending})")
            time.sleep(0.05)

    def _route(self, request, signature_version=None, **_) -> None:
        """before-sign: send this request to a random node (and so sign it for that node).
        Presigned URLs keep the suite's address: the proxy picks a node when they are used."""
        if isinstance(signature_version, str) and (signature_version.endswith("-query")
                                                    or "presign" in signature_version):
            return
        parts = urlsplit(request.url)
        if parts.hostname != PROXY_HOST or parts.port != self.port:
            return
        host = self.rng.choice(self.node_hosts)
        self.requests[host] += 1
        request.url = urlunsplit(parts._replace(netloc=f"{host}:{self.port}"))

    def client(self, **config: object):
        kwargs = dict(config)
        s3 = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=kwargs.pop("region", self.region),
            aws_access_key_id=kwargs.pop("access_key", self.root_user),
            aws_secret_access_key=kwargs.pop("secret_key", self.root_password),
            verify=False, config=Config(**kwargs) if kwargs else None)
        s3.meta.events.register_last("before-sign.s3", self._route)
        return s3
