"""GETs through one node while the same keys are overwritten and deleted through another.

An overwrite or a delete removes the data of the write it replaced. On one node that removal
waits for the node's own GETs of that write; a GET through another node that looked the key up
a moment before the overwrite did not get that wait: it found none of the write's shards and
answered 503 (session 53, the growth chain's linearizability phase), and a GET streaming a
large object was cut mid-way. Now such a read looks the key up again and serves what the key
holds by then (the new object, or 404 after a delete), and a range already open (a local
descriptor, a peer's stream) reads the removed file to its end.

Every answer here is checked: 200 with exactly the bytes of one of the key's writes, or 404
(the key deleted). No 503, no cut stream, and no "damaged object" in any node's log: nothing
was damaged. boto3 runs without retries, so an error is seen, not hidden.
"""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.cluster

# a small record, an inline write, a write with part files, one whose GET reads several spans
SIZES = (50_000, 300_000, 1_500_000, 40_000_000)
DURATION = 12.0  # seconds of load


def body(key: str, n: int, size: int) -> bytes:
    """Write ``n`` of ``key``: its first line names it, so a wrong body says whose it is."""
    head = f"{key}#{n}\n".encode()
    return (head + hashlib.sha256(head).digest() * (size // 32 + 1))[:size]


def test_gets_racing_overwrites_and_deletes_through_other_nodes(cluster4) -> None:
    c = cluster4
    writer = c.client(1, retries={"total_max_attempts": 3})
    writer.create_bucket(Bucket="races")
    keys = [f"k{i}-{size}" for size in SIZES for i in range(1 if size > 10_000_000 else 2)]
    sizes = {k: int(k.split("-")[1]) for k in keys}
    written: dict[str, set[str]] = {k: set() for k in keys}  # sha256 of every body a key had
    for k in keys:
        data = body(k, 0, sizes[k])
        written[k].add(hashlib.sha256(data).hexdigest())
        writer.put_object(Bucket="races", Key=k, Body=data)
    stop = threading.Event()
    failures: list[str] = []
    counts = {"get": 0, "404": 0, "put": 0, "delete": 0}
    lock = threading.Lock()

    def write_loop() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            for k in keys:
                data = body(k, n, sizes[k])
                with lock:
                    written[k].add(hashlib.sha256(data).hexdigest())
                try:
                    if n % 3 == 2:
                        writer.delete_object(Bucket="races", Key=k)
                        counts["delete"] += 1
                    else:
                        writer.put_object(Bucket="races", Key=k, Body=data)
                        counts["put"] += 1
                except ClientError as exc:
                    failures.append(f"write {k}#{n}: {exc}")

    def read_loop(node: int) -> None:
        s3 = c.client(node, retries={"total_max_attempts": 1})
        while not stop.is_set():
            for k in keys:
                try:
                    got = s3.get_object(Bucket="races", Key=k)["Body"].read()
                except ClientError as exc:
                    code = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                    if code == 404:
                        with lock:
                            counts["404"] += 1
                        continue
                    failures.append(f"GET {k} through node {node}: {code} {exc.response['Error'].get('Code')}")
                    continue
                except Exception as exc:  # noqa: BLE001 - a cut stream is a failure to report
                    failures.append(f"GET {k} through node {node}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    counts["get"] += 1
                digest = hashlib.sha256(got).hexdigest()
                with lock:
                    known = digest in written[k]
                if not known:
                    failures.append(f"GET {k} through node {node}: {len(got)} bytes that no write made "
                                    f"({got[:20]!r})")

    threads = [threading.Thread(target=write_loop)] + [
        threading.Thread(target=read_loop, args=(node,)) for node in (2, 3, 4)]
    for t in threads:
        t.start()
    time.sleep(DURATION)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    print(f"read races: {counts}")
    assert not failures, f"{len(failures)} failures ({counts}): {failures[:8]}"
    assert counts["get"] > 50 and counts["put"] > 20, counts
    damaged = [line for i in range(1, 5) for line in c.log(i).splitlines() if "damaged object" in line]
    assert not damaged, damaged[:5]
