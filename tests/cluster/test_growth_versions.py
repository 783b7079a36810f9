"""A versioned bucket grown and shrunk under overwrites of a few hot keys (real processes,
growkit.py): node 1 alone, then nodes 2 and 3 join and node 3 leaves, while client threads
overwrite a handful of keys through every live node and read versions back by id.

Every overwrite makes the key's previous write a noncurrent version. A migration moves each
key's entry and, after the bucket, each version record; an overwrite that lands between a
move's commit and its read-back wins, and the entry it replaced (the one before the move, or
the moved one) lives on as a version (``StoreMover.move``; the in-process cases are in
``tests/unit/engine/test_engine_move_race.py``). What must hold at the end:

- every acknowledged version reads back byte-identical by its id through every live node;
- ListObjectVersions lists each of them, and at most one extra per PUT that failed;
- the removed node holds nothing once the grace delay passed;
- the live nodes hold no write that no version names, but for failed PUTs (kept for the
  orphan sweep): before, a version's record and its key's entry could part into two write
  ids, and the next overwrite left one named by nothing.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from growkit import GrowCluster

pytestmark = pytest.mark.cluster

BUCKET = "vers"
SIZES = [700, 3000, 90_000, 1_300_000]  # inline, inline, one block, several blocks
WEIGHTS = [4, 4, 2, 1]
PAUSE = 0.05  # between one worker's PUTs: a few thousand versions over the run, not tens
PER_WORKER = 800  # versions each worker writes at most (every one is read back through every node)


def code_of(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__


class Overwrites:
    """Threads overwriting their hot keys through random live nodes, reading acknowledged
    versions back by id now and then. No retries by boto3: every failed attempt is counted
    (a failed PUT's data may be kept for the orphan sweep, its outcome being open)."""

    def __init__(self, cluster: GrowCluster, nodes: list[int], workers: int = 3, keys: int = 4) -> None:
        self.cluster = cluster
        self.nodes = nodes
        self.workers = workers
        self.keys = keys
        self.acked: dict[tuple[str, str], str] = {}  # (key, version id) -> sha256
        self.failed_puts = 0
        self.counts: Counter = Counter()
        self.wrong: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(w,), daemon=True) for w in range(workers)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"

    def _work(self, w: int) -> None:
        rng = random.Random(1000 + w)
        clients: dict[int, object] = {}
        mine: list[tuple[str, str]] = []
        while not self.stopping.is_set():
            node = rng.choice(list(self.nodes))
            s3 = clients.get(node) or clients.setdefault(
                node, self.cluster.s3(node, retries={"total_max_attempts": 1}))
            if mine and (rng.random() < 0.25 or len(mine) >= PER_WORKER):  # (enough written: reads only)
                time.sleep(PAUSE)
                key, vid = rng.choice(mine)
                try:
                    got = s3.get_object(Bucket=BUCKET, Key=key, VersionId=vid)["Body"].read()
                except Exception as exc:  # noqa: BLE001 - counted; the final check reads every version
                    with self.lock:
                        self.counts[f"GET {code_of(exc)}"] += 1
                    continue
                with self.lock:
                    self.counts["GET ok"] += 1
                    if hashlib.sha256(got).hexdigest() != self.acked[(key, vid)]:
                        self.wrong.append(f"{key} {vid} through node {node}")
                continue
            time.sleep(PAUSE)
            key = f"hot/w{w}/{rng.randrange(self.keys)}"
            body = os.urandom(rng.choices(SIZES, WEIGHTS)[0])
            try:
                vid = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["VersionId"]
            except Exception as exc:  # noqa: BLE001 - a failed PUT may or may not stand
                with self.lock:
                    self.failed_puts += 1
                    self.counts[f"PUT {code_of(exc)}"] += 1
                continue
            with self.lock:
                self.acked[(key, vid)] = hashlib.sha256(body).hexdigest()
                self.counts["PUT ok"] += 1
            mine.append((key, vid))


def versions_listed(s3) -> list[tuple[str, str]]:
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        out += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
    return out


def writes_held(cluster: GrowCluster, nodes: list[int]) -> set[str]:
    """The write ids with files of the bucket on the disks of ``nodes``."""
    return {write.split(".", 1)[1] for (bucket, write) in cluster.census(nodes) if bucket == BUCKET}


@pytest.mark.timeout(1200)
def test_versions_under_overwrites_while_a_node_joins_and_one_leaves(tmp_path: Path) -> None:
    cluster = GrowCluster(tmp_path)
    try:
        s3 = cluster.begin(BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        live = [1]
        load = Overwrites(cluster, live)
        load.start()
        try:
            time.sleep(3)  # versions to move before the first node joins
            for new in (2, 3):
                added = cluster.join(new, through=live[0])
                cluster.wait_migration_done(live[0], added["generation"])
                cluster.wait_ready(new)
                live.append(new)
            removed = cluster.admin(1, "cluster", "remove-node", cluster.url(3), "--accept-lower-tolerance",
                                    "--no-progress", "--wait-timeout", "400", timeout=450)
            assert f"{cluster.url(3)} is removed" in removed.stdout, removed.stdout
            live.remove(3)
        finally:
            load.stop()
        print(f"load: {dict(load.counts)}; {len(load.acked)} versions acknowledged, {load.failed_puts} PUTs failed")
        assert load.wrong == [], load.wrong[:5]
        lost = {name: n for name, n in load.counts.items() if name in ("GET NoSuchVersion", "GET NoSuchKey")}
        assert not lost, f"an acknowledged version was not found: {lost}"
        assert load.counts["PUT ok"] >= 30, "too few overwrites to show anything"

        for i in live:
            client = cluster.s3(i, retries={"total_max_attempts": 3})
            wrong = [(key, vid) for (key, vid), digest in sorted(load.acked.items())
                     if hashlib.sha256(client.get_object(Bucket=BUCKET, Key=key, VersionId=vid)["Body"].read())
                     .hexdigest() != digest]
            assert wrong == [], f"through node {i}: {wrong[:5]}"
            listed = versions_listed(client)
            assert len(listed) == len(set(listed)), "a version is listed twice"
            missing = set(load.acked) - set(listed)
            assert not missing, f"through node {i}: acknowledged versions not listed: {sorted(missing)[:5]}"
            assert len(listed) - len(load.acked) <= load.failed_puts, (len(listed), len(load.acked))

        # The removed node's files and the vacated shards go once the grace delay (1 s) passed.
        deadline = time.monotonic() + 60
        while True:
            on_removed = writes_held(cluster, [3])
            unnamed = len(writes_held(cluster, live)) - len(versions_listed(cluster.s3(1)))
            if not on_removed and unnamed <= load.failed_puts:
                break
            assert time.monotonic() < deadline, (
                f"the removed node holds {len(on_removed)} writes; the live nodes {unnamed} more writes than versions "
                f"({load.failed_puts} PUTs failed)")
            time.sleep(1)
        bugs = cluster.bugs()
        assert not bugs, bugs
    finally:
        cluster.stop_all()
