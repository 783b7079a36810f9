"""A cluster that grows and shrinks, for tests: node 1 is a one-node URL cluster, the others join.

Node ``i`` listens on ``127.0.0.i`` (same port on every address) with its disks in
``BASE/n{i}/d1..4``. Node 1 is started as a cluster of one (``buckets server --address
127.0.0.1:P http://127.0.0.1:P/BASE/n1/d{1...4}``); every other node with ``--join
http://127.0.0.1:P`` and its own disks only, and is placed with the real ``buckets-admin
cluster add-node``. Each node is always restarted with the command line it was first
started with. Every run of a node logs to its own file and ``log(i)`` is all of them (the
traceback check covers every run). Processes are stopped by process id.

Also here: a load of PUT/GET/DELETE/LIST clients through random live nodes that counts
every failure (503s apart), and a census of the shard files on every disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
import diskview
from clusterproc import CONTROL_OFFSET, ROOT_PASSWORD, ROOT_USER, free_cluster_port
from urllib3.exceptions import ProtocolError

from buckets.admin.client import AdminClient
from serverproc import BIN, server_env, spawn, stop

HOSTS = 8  # 127.0.0.1-8: every address a test may use gets the same free port
TRANSPORT_ERRORS = (BotoCoreError, ProtocolError, OSError)


class GrowCluster:
    def __init__(self, base: Path, extra_env: dict | None = None, *, plain_first: bool = False) -> None:
        self.base = base
        # Node 1 started as a plain single node (``buckets server BASE/n1/d{1...4}``), which
        # the first add-node turns into a cluster of one, instead of a one-node URL cluster.
        self.plain_first = plain_first
        self.port = free_cluster_port(HOSTS, 1)
        self.env = server_env({"BUCKETS_ROOT_USER": ROOT_USER, "BUCKETS_ROOT_PASSWORD": ROOT_PASSWORD,
                               "BUCKETS_SCANNER_RATE": "0", "BUCKETS_MIGRATION_GRACE": "1"}, extra_env)
        self.admin_env = dict(self.env, BUCKETS_CLIENT_CONFIG=str(base / "client.json"))
        self.procs: dict[int, subprocess.Popen] = {}
        self.runs: dict[int, list[Path]] = {}
        self.first_lines: dict[int, list[str]] = {}
        self._aliases: set[int] = set()

    # -- addresses and command lines ----------------------------------------------------------
    def host(self, i: int) -> str:
        return f"127.0.0.{i}"

    def url(self, i: int) -> str:
        return f"http://{self.host(i)}:{self.port}"

    def disks(self, i: int) -> str:
        return f"{self.url(i)}{self.base}/n{i}/d{{1...4}}"

    def command(self, i: int) -> list[str]:
        """Node 1: a cluster of one; any other: joins through node 1. A node keeps its first
        command line for every later start."""
        if i not in self.first_lines:
            line = [str(BIN / "buckets"), "server", "--address", f"{self.host(i)}:{self.port}"]
            if i != 1:
                line += ["--join", self.url(1)]
            disks = f"{self.base}/n1/d{{1...4}}" if i == 1 and self.plain_first else self.disks(i)
            self.first_lines[i] = line + [disks]
        return self.first_lines[i]

    # -- processes ------------------------------------------------------------------------------
    def start(self, i: int) -> None:
        if self.alive(i):
            raise RuntimeError(f"node {i} is already running")
        runs = self.runs.setdefault(i, [])
        log_path = self.base / f"node{i}.run{len(runs) + 1}.log"
        runs.append(log_path)
        self.procs[i] = spawn(self.command(i), self.env, log_path, self.base)

    def alive(self, i: int) -> bool:
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None

    def kill(self, i: int) -> None:
        """kill -9: no clean shutdown."""
        self.procs[i].kill()
        self.procs[i].wait(timeout=10)

    def stop(self, i: int) -> int:
        return stop(self.procs[i])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc)

    def log(self, i: int) -> str:
        return "".join(p.read_text(errors="replace") for p in self.runs.get(i, []) if p.exists())

    def bugs(self) -> dict[int, str]:
        out = {}
        for i in self.runs:
            text = self.log(i)
            if "Traceback" in text or "unhandled error" in text:
                at = max(text.find("Traceback"), text.find("unhandled error"))
                out[i] = text[max(0, at - 2000): at + 4000]
        return out

    def status(self, i: int, path: str = "/health/ready") -> int:
        try:
            with urllib.request.urlopen(f"{self.url(i)}{path}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def wait_ready(self, i: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while self.status(i) != 200:
            if not self.alive(i):
                raise AssertionError(f"node {i} exited:\n{self.log(i)[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"node {i} not ready within {timeout}s:\n{self.log(i)[-4000:]}")
            time.sleep(0.2)

    def wait_log(self, i: int, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(i):
            if not self.alive(i) or time.monotonic() > deadline:
                raise AssertionError(f"node {i} never logged {text!r}:\n{self.log(i)[-4000:]}")
            time.sleep(0.2)

    def leader(self) -> int | None:
        """The control-plane leader as a node number, if a live node names one."""
        for i in sorted(self.procs):
            if not self.alive(i):
                continue
            try:
                with urllib.request.urlopen(f"{self.url(i)}/health/cluster", timeout=5) as r:
                    doc = json.loads(r.read())
            except urllib.error.HTTPError as exc:
                try:
                    doc = json.loads(exc.read())
                except ValueError:
                    continue
            except (OSError, ValueError):
                continue
            address = ((doc or {}).get("control") or {}).get("leader")
            for j in self.procs:
                if address == f"{self.host(j)}:{self.port + CONTROL_OFFSET}":
                    return j
        return None

    def node_of_url(self, url: str | None) -> int | None:
        for j in self.procs:
            if url == self.url(j):
                return j
        return None

    def begin(self, bucket: str):
        """Start node 1, wait until it serves, create ``bucket``: its S3 client (3 attempts)."""
        self.start(1)
        self.wait_ready(1)
        s3 = self.s3(1, retries={"total_max_attempts": 3})
        s3.create_bucket(Bucket=bucket)
        return s3

    # -- clients ----------------------------------------------------------------------------------
    def s3(self, i: int, **config):
        config.setdefault("retries", {"total_max_attempts": 1})
        config.setdefault("connect_timeout", 10)
        config.setdefault("read_timeout", 90)
        return boto3.client("s3", endpoint_url=self.url(i), aws_access_key_id=ROOT_USER,
                            aws_secret_access_key=ROOT_PASSWORD, region_name="us-east-1", config=Config(**config))

    def api(self, i: int) -> AdminClient:
        return AdminClient(self.url(i), ROOT_USER, ROOT_PASSWORD, timeout=60)

    def admin(self, i: int, *args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess:
        """``buckets-admin GROUP VERB n{i} ARGS...`` (the real CLI, alias n{i} for node i)."""
        def run(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run([str(BIN / "buckets-admin"), *argv], env=self.admin_env, capture_output=True,
                                  text=True, timeout=timeout)

        if i not in self._aliases:
            done = run("alias", "set", f"n{i}", self.url(i), ROOT_USER, ROOT_PASSWORD)
            assert done.returncode == 0, done.stderr
            self._aliases.add(i)
        group, verb, *rest = args
        result = run(group, verb, f"n{i}", *rest)
        if check:
            assert result.returncode == 0, f"buckets-admin {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def migration(self, i: int) -> dict:
        return self.api(i).call("GET", "cluster/migration")

    def nodes(self, i: int) -> dict:
        return self.api(i).call("GET", "cluster/nodes")

    def wait_migration_done(self, i: int, to_gen: int, timeout: float = 400.0) -> dict:
        """Until node ``i`` says the migration to generation ``to_gen`` is done."""
        deadline = time.monotonic() + timeout
        status: dict = {}
        while True:
            try:
                status = self.migration(i)
            except Exception as exc:  # noqa: BLE001 - a node restarting, a lost majority: asked again
                status = {"state": f"unknown ({exc})"}
            if status.get("state") == "done" and status.get("to_gen") == to_gen:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"the migration is not done within {timeout}s: {status}")
            time.sleep(0.5)

    def join(self, i: int, through: int = 1, before_add=None) -> dict:
        """Start node ``i`` with --join, wait until it waits to be placed, call ``before_add()``,
        then add-node (the CLI, through node ``through``) without waiting for the migration.
        Returns the CLI's answer."""
        self.start(i)
        self.wait_log(i, "waiting to be added")
        assert self.status(i, "/") == 503  # S3 waits until the node is placed
        if before_add is not None:
            before_add()
        added = json.loads(self.admin(through, "cluster", "add-node", self.disks(i), "--no-wait", "--json").stdout)
        assert added["added"] is True, added
        return added

    # -- what is on the disks ---------------------------------------------------------------------
    def census(self, nodes: list[int]) -> dict[tuple[str, str], dict[str, int]]:
        """Every write's shards on the disks of ``nodes``: ``{(bucket, "<keyhash>.<wid>"):
        {disk path: shard bytes}}``. A shard's bytes are its part files' sizes (a streamed
        object), or its metadata file's or log record's size (an inline object: the shard is
        in it); see ``tests/diskview.py``."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        for i in nodes:
            for disk in sorted((self.base / f"n{i}").glob("d*")):
                for shard in diskview.shards(disk):
                    sizes = out.setdefault((shard.bucket, shard.write), {})
                    sizes[str(disk)] = sizes.get(str(disk), 0) + shard.size
        return out


def shard_totals(census: dict) -> tuple[int, int]:
    """(total shard bytes, the largest write's shard bytes, all its shards together)."""
    total = largest = 0
    for shards in census.values():
        s = sum(shards.values())
        total += s
        largest = max(largest, s)
    return total, largest


def movement_bound(total: int, largest: int, nodes_before: int) -> tuple[float, float, float]:
    """(optimum, slack, bound) for the shard bytes a migration may move when one node joins
    ``nodes_before`` equal nodes: the optimum is ``total / (N+1)`` (the new node's share),
    the bound ``1.1 x optimum + slack``.

    The slack is twice the largest object's shard bytes. The table moves whole slots of
    partition rows, and which objects sit in the rows that move depends on where their keys
    hash (and on the disk ids, random per deployment); when a disk keeps a slot of an object
    at another index, the object is copied whole (every slot: ``engine.move``, about 1% of the
    rows when a fourth node joins). On a data set of a few dozen objects, one multi-MiB object
    falling on the wrong side of either is a visible fraction of the total; two of the
    largest cover it. (It also absorbs what the test's load writes under the old table in the
    second or two between the census and the moment the nodes adopt the new generation.) The
    slack does not grow with the data, so on a real data set only the 1.1 x remains."""
    optimum = total / (nodes_before + 1)
    slack = 2.0 * largest
    return optimum, slack, 1.1 * optimum + slack


# --- objects of mixed sizes ------------------------------------------------------------------------
SEED_SIZES = [0, 10, 4000, 100_000, 200_000, 1_500_000, 3_500_000]  # inline ... multi-block (1 MiB blocks)


def body_of(tag: str, size: int) -> bytes:
    seed = hashlib.sha256(tag.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def write_seed(s3, bucket: str, count: int, multipart: int = 1) -> dict[str, str]:
    """``count`` objects cycling through SEED_SIZES and ``multipart`` multipart objects (a 5 MiB
    part and a short one); returns key -> sha256."""
    out = {}
    for n in range(count):
        key = f"seed/{n:04d}"
        body = body_of(key, SEED_SIZES[n % len(SEED_SIZES)])
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        out[key] = hashlib.sha256(body).hexdigest()
    for n in range(multipart):
        key = f"multi/{n:03d}"
        parts = [body_of(f"{key}/1", 5 << 20), body_of(f"{key}/2", 1234)]
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        etags = [s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=p + 1, Body=b)["ETag"]
                 for p, b in enumerate(parts)]
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": p + 1, "ETag": e} for p, e in enumerate(etags)]})
        out[key] = hashlib.sha256(b"".join(parts)).hexdigest()
    return out


# --- a load that counts everything ---------------------------------------------------------------------
LOAD_SIZES = [0, 1, 700, 4096, 60_000, 200_000, 1_100_000]
LOAD_WEIGHTS = [1, 3, 3, 3, 2, 2, 1]


@dataclass
class Load:
    """Client threads doing PUT/GET/DELETE/LIST through random live nodes of ``nodes`` (the
    test changes the list as nodes come and go). Each worker owns the prefix ``load/w<n>/``,
    so it knows exactly which of its keys exist: a LIST of its prefix must contain every key
    it had acknowledged and not deleted before the LIST began (a PUT or DELETE that failed is
    "maybe" until overwritten: the listing may or may not show it)."""

    cluster: GrowCluster
    bucket: str
    nodes: list[int]
    workers: int = 3
    seed: int = 1
    attempts: int = 1  # boto3's total_max_attempts: 1 counts every failure; 3 is its default
    acked: dict[str, str] = field(default_factory=dict)  # key -> sha256 of the acknowledged body
    maybe: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)  # "PUT ok", "GET 503", ...
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for w in range(self.workers):
            t = threading.Thread(target=self._work, args=(w,), daemon=True, name=f"load-{w}")
            self.threads.append(t)
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in self.threads), "a load client hung"

    def _record(self, op: str, node: int, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.counts[f"{op} {outcome.split(' ')[0] if outcome[:3].isdigit() else outcome}"] += 1
            if outcome != "ok" and not outcome.startswith("503"):
                self.failures.append(f"{op} via node {node}: {outcome} {detail}".strip())

    def summary(self) -> str:
        ops = Counter()
        for name, n in self.counts.items():
            ops[name.split(" ")[0]] += n
        retryable = sum(n for name, n in self.counts.items() if name.endswith(" 503"))
        return (f"{sum(ops.values())} requests ({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))}): "
                f"{len(self.failures)} failed, {retryable} retryable 503s")

    def _work(self, w: int) -> None:
        rng = random.Random(self.seed * 1000 + w)
        clients: dict[int, object] = {}
        mine: dict[str, str] = {}  # this worker's acknowledged, undeleted keys
        maybe: set[str] = set()
        n = 0
        while not self.stopping.is_set():
            nodes = list(self.nodes)
            node = rng.choice(nodes)
            s3 = clients.get(node) or clients.setdefault(
                node, self.cluster.s3(node, retries={"total_max_attempts": self.attempts}))
            op = rng.choices(["PUT", "GET", "DELETE", "LIST"], [40, 35, 10, 15])[0]
            if op != "PUT" and not mine:
                op = "PUT"
            try:
                if op == "PUT":
                    n += 1
                    key = f"load/w{w}/{n:05d}" if rng.random() < 0.8 or not mine else rng.choice(sorted(mine))
                    body = os.urandom(rng.choices(LOAD_SIZES, LOAD_WEIGHTS)[0])
                    digest = hashlib.sha256(body).hexdigest()
                    try:
                        s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                    except Exception:
                        mine.pop(key, None)
                        maybe.add(key)
                        raise
                    mine[key] = digest
                    maybe.discard(key)
                    self._record(op, node, "ok")
                elif op == "GET":
                    key = rng.choice(sorted(mine))
                    got = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                    if hashlib.sha256(got).hexdigest() != mine[key]:
                        self._record(op, node, "WRONG BYTES", key)
                    else:
                        self._record(op, node, "ok")
                elif op == "DELETE":
                    key = rng.choice(sorted(mine))
                    try:
                        s3.delete_object(Bucket=self.bucket, Key=key)
                    except Exception:
                        mine.pop(key, None)
                        maybe.add(key)
                        raise
                    del mine[key]
                    self._record(op, node, "ok")
                else:
                    expected = set(mine)
                    listed = set()
                    for page in s3.get_paginator("list_objects_v2").paginate(
                            Bucket=self.bucket, Prefix=f"load/w{w}/", PaginationConfig={"PageSize": 200}):
                        listed.update(o["Key"] for o in page.get("Contents", []))
                    missing = expected - listed
                    extra = listed - expected - maybe
                    if missing or extra:
                        self._record(op, node, "INCOMPLETE LISTING",
                                     f"missing {sorted(missing)[:5]} extra {sorted(extra)[:5]}")
                    else:
                        self._record(op, node, "ok")
            except ClientError as exc:
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                self._record(op, node, f"{status} {exc.response['Error']['Code']}",
                             exc.response["Error"].get("Message", ""))
            except TRANSPORT_ERRORS as exc:
                self._record(op, node, type(exc).__name__, str(exc)[:200])
        with self.lock:
            self.acked.update(mine)
            self.maybe.update(maybe)


def read_all(cluster: GrowCluster, nodes: list[int], bucket: str, expected: dict[str, str],
             maybe: set[str] = frozenset()) -> None:
    """Every expected object reads back byte-identical through every node, and a listing through
    every node shows exactly the expected keys (plus keys whose last change had an unknown outcome)."""
    for i in nodes:
        s3 = cluster.s3(i, retries={"total_max_attempts": 3})
        wrong = []
        for key, digest in sorted(expected.items()):
            try:
                got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as exc:
                wrong.append(f"{key}: {exc.response['Error']['Code']}")
                continue
            if hashlib.sha256(got).hexdigest() != digest:
                wrong.append(f"{key}: wrong bytes ({len(got)})")
        assert not wrong, f"through node {i}: {len(wrong)} of {len(expected)} objects lost or wrong: {wrong[:10]}"
        listed = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for o in page.get("Contents", [])}
        assert set(expected) <= listed, f"through node {i}: missing from the listing: {sorted(set(expected) - listed)[:10]}"
        assert listed - set(expected) <= set(maybe), f"through node {i}: unexpected keys {sorted(listed - set(expected) - set(maybe))[:10]}"
