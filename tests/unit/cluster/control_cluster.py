"""Test side of ``control_node.py``: control-plane nodes as real processes on loopback addresses.

Node i listens on 127.0.0.i (distinct loopback addresses, one port for all, as real hosts
would), keeps its journal in its own directory and logs to its own file. Requests are sent
without blocking (``send``) and answered later (``wait``), so a test can have several
nodes race; ``kill`` is SIGKILL, ``restart`` starts the same node over its directory.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import msgpack
from serverproc import PYTHON, REPO, free_port, no_new_tracebacks, server_env

NODE_SCRIPT = str(Path(__file__).with_name("control_node.py"))
SECRET = "control-plane-test-secret"
DEFAULT_LAYOUT = {"k": 2, "m": 1, "block_size": 1 << 20, "partitions": 256}


def free_port_on(hosts: list[str]) -> int:
    """A port that is free on every one of ``hosts`` (distinct loopback addresses)."""
    for _ in range(100):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


class Node:
    def __init__(self, index: int, address: str, members: list[str], directory: Path, **overrides: Any) -> None:
        self.index = index
        self.address = address
        self.members = list(members)
        self.directory = directory
        self.log_path = directory.parent / f"node{index}.log"
        self.overrides = {"secret": SECRET, "commit_timeout": 5.0, **overrides}
        self.proc: subprocess.Popen | None = None
        self._ids = count(1)
        self._answers: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> Node:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Spawn the process; ``wait_ready`` waits for its port (several nodes start in parallel)."""
        config = {"address": self.address, "members": self.members, "directory": str(self.directory),
                  **self.overrides}
        self.directory.mkdir(parents=True, exist_ok=True)
        self._answers = {0: queue.Queue()}
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [PYTHON, NODE_SCRIPT, json.dumps(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log_file, env=server_env({}), cwd=str(REPO))
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def wait_ready(self, timeout: float = 30.0) -> Node:
        ready = self._answers[0]
        try:
            frame = ready.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError(f"node {self.address} did not start:\n{self.log_text()}") from None
        if frame.get("event") != "ready":
            raise RuntimeError(f"node {self.address} did not start:\n{self.log_text()}")
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        while data := proc.stdout.read1(65536):
            unpacker.feed(data)
            for frame in unpacker:
                key = 0 if "event" in frame else frame["id"]
                with self._lock:
                    answers = self._answers.get(key)
                if answers is not None:
                    answers.put(frame)
        with self._lock:  # the process is gone: wake every waiter
            for answers in self._answers.values():
                answers.put({"event": "exited"})

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, whatever was in flight is lost."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        """Clean stop: EOF on stdin closes the control plane, then the process exits."""
        if not self.alive:
            return
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, **overrides: Any) -> Node:
        self.kill()
        self.overrides.update(overrides)
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- requests -------------------------------------------------------------------------------
    def send(self, call: str, **request: Any) -> int:
        assert self.proc is not None and self.proc.stdin is not None
        request_id = next(self._ids)
        with self._lock:
            self._answers[request_id] = queue.Queue()
        self.proc.stdin.write(msgpack.packb({"id": request_id, "call": call, **request}, use_bin_type=True))
        self.proc.stdin.flush()
        return request_id

    def wait(self, request_id: int, timeout: float = 60.0) -> dict:
        """The answer frame; fails the test if none comes (a hang is a bug, not a slow answer)."""
        with self._lock:
            answers = self._answers[request_id]
        try:
            frame = answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"node {self.address}: no answer to request {request_id} in {timeout}s") from None
        finally:
            with self._lock:
                self._answers.pop(request_id, None)
        assert frame.get("event") != "exited", f"node {self.address} exited:\n{self.log_text()[-3000:]}"
        return frame

    def call(self, call: str, **request: Any) -> dict:
        return self.wait(self.send(call, **request))

    def ok(self, call: str, **request: Any) -> Any:
        frame = self.call(call, **request)
        assert "ok" in frame, f"node {self.address}: {call} failed: {frame}"
        return frame["ok"]

    def apply(self, op: str, timeout: float | None = None, **args: Any) -> dict:
        return self.call("apply", op=op, args=args, timeout=timeout)

    def state(self, linearizable: bool = False) -> dict:
        return self.ok("read", linearizable=linearizable)

    def status(self) -> dict:
        return self.ok("status")


class ControlCluster:
    """n nodes on 127.0.0.1 ... 127.0.0.n, one port, each with its own journal directory."""

    def __init__(self, root: Path, n: int = 3, **overrides: Any) -> None:
        hosts = [f"127.0.0.{i}" for i in range(1, n + 1)]
        self.root = root
        self.port = free_port_on(hosts + ["127.0.0.4", "127.0.0.5"])  # room for nodes added later
        self.members = [f"{host}:{self.port}" for host in hosts]
        self.nodes = [Node(i + 1, address, self.members, root / f"n{i + 1}", **overrides)
                      for i, address in enumerate(self.members)]

    def start(self) -> ControlCluster:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()
        self.wait_leader()
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.kill()

    def node(self, address: str) -> Node:
        return next(n for n in self.nodes if n.address == address)

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def wait_leader(self, timeout: float = 30.0) -> Node:
        """The leader, once every live node agrees which node it is (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            leaders = {node.status()["leader"] for node in self.alive()}
            if len(leaders) == 1 and None not in leaders:
                leader = self.node(leaders.pop())
                if leader.alive:
                    return leader
            if time.monotonic() > deadline:
                raise AssertionError(f"no agreed leader among {[n.address for n in self.alive()]}: {leaders}")
            time.sleep(0.1)

    def followers(self) -> list[Node]:
        leader = self.wait_leader()
        return [n for n in self.alive() if n is not leader]

    def wait_applied(self, predicate, nodes: list[Node] | None = None, timeout: float = 30.0) -> None:
        """Wait until ``predicate(state)`` holds on every node's local state (bounded)."""
        deadline = time.monotonic() + timeout
        for node in nodes or self.alive():
            while not predicate(node.state()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{node.address} never reached the expected state: {node.state()}")
                time.sleep(0.05)

    @contextmanager
    def no_tracebacks(self) -> Iterator[None]:
        with ExitStack() as stack:
            for node in self.nodes:
                stack.enter_context(no_new_tracebacks(node.log_text))
            yield


def node_records(cluster: ControlCluster, disks_per_node: int = 2) -> list[dict]:
    """Topology records (wire form) for the cluster's nodes: S3 endpoint on port 9000."""
    return [{"id": f"node{node.index}", "endpoint": f"http://127.0.0.{node.index}:9000",
             "control": node.address, "state": "active",
             "disks": [{"id": f"n{node.index}-d{d}", "path": f"/srv/n{node.index}/d{d}", "weight": 1.0,
                        "capacity": 0} for d in range(1, disks_per_node + 1)]}
            for node in cluster.nodes]
