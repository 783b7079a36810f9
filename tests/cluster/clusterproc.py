"""A real cluster of ``buckets server`` processes on loopback, for tests.

Node i listens on 127.0.0.i with the same port on every node, and is started with the same
endpoint list, exactly as on real hosts (``buckets server --address 127.0.0.i:PORT
http://127.0.0.1:PORT/.../n1/d{1...4} ...``). Nodes are stopped by process id.

``first_host`` shifts the addresses (``first_host=2``: nodes on 127.0.0.2-5, leaving 127.0.0.1
for something else on the same port, such as the integration suite's load-balancing proxy),
``data_root`` and ``disk_prefix`` place the disks (default ``BASE/n{node}/d1..4``), and
``extra_args`` are passed to every node.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

from serverproc import BIN, free_port, server_env, spawn, stop

ROOT_USER = "clusteradmin"
ROOT_PASSWORD = "cluster-secret-pw"
CONTROL_OFFSET = 1000  # the control plane's port is the S3 port + 1000 (buckets.cluster.control)


def _free_on_all(port: int, hosts: list[str]) -> bool:
    for host in hosts:
        for p in (port, port + CONTROL_OFFSET):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, p))
                except OSError:
                    return False
    return True


def free_cluster_port(nodes: int, first_host: int = 1, also: tuple[str, ...] = ()) -> int:
    """A port free on every node's address (and on ``also``), with its control port."""
    hosts = [f"127.0.0.{i}" for i in range(first_host, first_host + nodes)] + list(also)
    for _ in range(200):
        port = free_port()
        if port + CONTROL_OFFSET < 65536 and _free_on_all(port, hosts):
            return port
    raise RuntimeError("no free port on every loopback address")


class Cluster:
    def __init__(self, base: Path, nodes: int = 4, disks: int | tuple[int, ...] = 4, extra_env: dict | None = None, *,
                 first_host: int = 1, also_free: tuple[str, ...] = (), data_root: Path | None = None,
                 disk_prefix: str = "n{node}/d", extra_args: tuple[str, ...] = (),
                 ca_file: str | None = None, node_env: dict[int, dict[str, str]] | None = None) -> None:
        self.base = base
        self.n = nodes
        self.disks = disks
        self.first_host = first_host
        self.data_root = data_root if data_root is not None else base
        self.disk_prefix = disk_prefix
        self.extra_args = tuple(extra_args)
        self.ca_file = ca_file  # set: the nodes serve https (extra_args carry --certs-dir), verified with it
        self.scheme = "https" if ca_file else "http"
        self.port = free_cluster_port(nodes, first_host, also_free)
        self.env = server_env({"BUCKETS_ROOT_USER": ROOT_USER, "BUCKETS_ROOT_PASSWORD": ROOT_PASSWORD,
                               "BUCKETS_SCANNER_RATE": "0"}, extra_env)
        self.node_env = node_env or {}  # node i's own variables on top of ``env`` (a shifted clock)
        self.procs: dict[int, subprocess.Popen] = {}
        self.logs = {i: base / f"node{i}.log" for i in range(1, nodes + 1)}

    def disk_roots(self) -> list[Path]:
        """Every node's disk directories, node by node."""
        return [self.data_root / f"{self.disk_prefix.format(node=n)}{d}" for n in range(1, self.n + 1)
                for d in range(1, self.disks_of(n) + 1)]

    def disks_of(self, i: int) -> int:
        """Node ``i``'s disk count (``disks`` is one count for every node, or one per node)."""
        return self.disks if isinstance(self.disks, int) else self.disks[i - 1]

    def host(self, i: int) -> str:
        return f"127.0.0.{i + self.first_host - 1}"

    def url(self, i: int) -> str:
        return f"{self.scheme}://{self.host(i)}:{self.port}"

    def endpoint_args(self) -> list[str]:
        return [f"{self.url(i)}{self.data_root}/{self.disk_prefix.format(node=i)}"
                + (f"{{1...{self.disks_of(i)}}}" if self.disks_of(i) > 1 else "1")
                for i in range(1, self.n + 1)]

    def command(self, i: int) -> list[str]:
        return [str(BIN / "buckets"), "server", "--address", f"{self.host(i)}:{self.port}", *self.extra_args,
                *self.endpoint_args()]

    def start(self, *which: int, wait: bool = True, timeout: float = 120.0) -> None:
        """Start nodes (all by default) and wait until each is ready. If one exits or is not
        ready in time, the nodes this call started are stopped before the error is raised:
        a fixture whose setup fails never runs its teardown, and they would outlive the test."""
        started = list(which or range(1, self.n + 1))
        for i in started:
            self.procs[i] = spawn(self.command(i), {**self.env, **self.node_env.get(i, {})}, self.logs[i], self.base)
        if wait:
            try:
                for i in started:
                    self.wait_ready(i, timeout)
            except BaseException:
                for i in started:
                    stop(self.procs[i])
                raise

    def wait_ready(self, i: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"node {i} exited:\n{self.log(i)[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url(i)}/health/ready", timeout=2, context=self._ssl()) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"node {i} not ready within {timeout}s:\n{self.log(i)[-4000:]}")

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Until every running node sees every node online with all its disks (``/health/cluster``).
        Ready nodes may still count a peer's disks offline for a few seconds after forming."""
        import json

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for i in self.procs:
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"node {i} exited:\n{self.log(i)[-4000:]}")
            try:
                views = []
                for i in self.procs:
                    with urllib.request.urlopen(f"{self.url(i)}/health/cluster", timeout=5, context=self._ssl()) as r:
                        views.append(json.loads(r.read()))
                last = "; ".join(f"{n['endpoint']} online={n['online']} disks {n['disks_online']}/{n['disks_total']}"
                                 for v in views for n in v["nodes"]
                                 if not (n["online"] and n["disks_online"] == n["disks_total"]))
                if not last:
                    return
            except OSError as exc:  # includes a 503 while the control plane has no majority
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"cluster not healthy within {timeout}s: {last}")

    def health(self, i: int) -> dict:
        """Node ``i``'s ``/health/cluster`` (its view of the nodes, its index counters)."""
        import json

        with urllib.request.urlopen(f"{self.url(i)}/health/cluster", timeout=5, context=self._ssl()) as r:
            return json.loads(r.read())

    def _ssl(self):
        import ssl

        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")

    def kill(self, i: int) -> None:
        """kill -9: no clean shutdown."""
        proc = self.procs[i]
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)

    def stop_and_check_logs(self) -> None:
        """Stop every node, then fail if one logged a traceback (a 500 in any node is a bug)."""
        self.stop_all()
        for i in range(1, self.n + 1):
            text = self.log(i)
            assert "Traceback" not in text and "unhandled error" not in text, f"node {i} logged a bug:\n{text[-6000:]}"

    def client(self, i: int, **config) -> "boto3.client":
        return boto3.client("s3", endpoint_url=self.url(i), aws_access_key_id=ROOT_USER,
                            aws_secret_access_key=ROOT_PASSWORD, region_name="us-east-1",
                            verify=self.ca_file if self.ca_file else None,
                            config=Config(**config) if config else None)
