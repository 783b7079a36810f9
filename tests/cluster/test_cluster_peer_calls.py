"""What a GET, a metrics scrape and the disk monitor cost in peer calls, in a real 4 x 4 cluster.

Every node counts the peer requests it serves in ``/metrics``
(``buckets_s3_requests_total{api="peer.<service>.<method>"}``), so the calls a request made are
the difference of all four nodes' counts before and after it. Scraping a node's ``/metrics``
is itself a request that asks its peers about their disks (``peer.disk.status``); the counts
below allow for that.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import urllib.request
from collections import Counter

import pytest

# Long multi-node run: make test-cluster (make test keeps test_cluster_basic and test_growth_under_load[fast]).
pytestmark = pytest.mark.cluster

MiB = 1 << 20
_PEER_LINE = re.compile(r'^buckets_s3_requests_total\{api="(peer\.[^"]+)",status_class="[^"]+"\} ([0-9.e+]+)$',
                        re.MULTILINE)
MONITOR_INTERVAL = 5.0  # buckets.engine.scanner.ScannerConfig.monitor_interval


def metrics(c, i: int) -> str:
    with urllib.request.urlopen(f"{c.url(i)}/metrics", timeout=30) as r:
        return r.read().decode()


def served(c) -> Counter:
    """Peer requests every node has served so far, by API (four scrapes: see the module doc)."""
    total: Counter = Counter()
    for i in range(1, c.n + 1):
        for api, value in _PEER_LINE.findall(metrics(c, i)):
            total[api] += int(float(value))
    return total


@pytest.fixture(scope="module")
def big(cluster4):
    c = cluster4
    c.wait_healthy()
    s3 = c.client(1)
    s3.create_bucket(Bucket="calls")
    body = os.urandom(MiB) * 15 + os.urandom(MiB + 12345)  # 16 MiB + a bit: 9 spans, the last one short
    s3.put_object(Bucket="calls", Key="big", Body=body)
    return body


def test_a_large_get_reads_each_peers_shards_with_one_streamed_call(cluster4, big) -> None:
    c = cluster4
    digest = hashlib.sha256(big).hexdigest()
    for i in range(1, c.n + 1):
        before = served(c)
        got = c.client(i).get_object(Bucket="calls", Key="big")["Body"].read()
        delta = served(c) - before
        assert hashlib.sha256(got).hexdigest() == digest, f"GET through node {i}: wrong bytes"
        # 12 data shards, at most 4 of them on the node asked: 8 to 12 on its 3 peers (4 shards
        # each at most, so 2 or 3 peers hold some, one of them at least 3), one stream per
        # peer (read_streams for a peer's several shards, read_stream for a lone one), and no
        # span-by-span reads.
        streams = delta["peer.disk.read_streams"] + delta["peer.disk.read_stream"]
        assert 2 <= streams <= 3 and delta["peer.disk.read_streams"] >= 1, (i, delta)
        assert delta["peer.disk.read_range"] == 0, (i, delta)


def test_a_small_gets_lookup_brings_the_records_it_reads(cluster4, big) -> None:
    """A 4 KiB object is 8 records, 4+4 on a window of 8 of its 16 slots (--small-set-limit),
    2-3 per node, and its index entry is on 3 of the 4 nodes; a GET reads its 4 data records.
    The GET's lookup answers with the records on the answering replicas' disks. Without a
    read lease it asks a read quorum of 2 replicas, whose records with the node's own cover
    the data records or leave one peer to read. With a lease, the holder answers alone,
    with its records; the rest (if any) come in one read of one more node. At most one
    lookup call and two peer calls in all per GET through any node (it was 1-2 lookups plus
    2-3 reads before the lookup brought records)."""
    c = cluster4
    body = os.urandom(4096)
    c.client(1).put_object(Bucket="calls", Key="small", Body=body)
    gets = 3
    for i in range(1, c.n + 1):
        s3 = c.client(i)
        before = served(c)
        for _ in range(gets):
            assert s3.get_object(Bucket="calls", Key="small")["Body"].read() == body, f"node {i}: wrong bytes"
        delta = served(c) - before
        lookups = delta["peer.index.get"] + delta["peer.index.read"]
        reads = delta["peer.disk.read_records"]
        assert lookups <= 2 * gets and lookups + reads <= 2 * gets, (i, delta)
        assert delta["peer.disk.read_file"] == 0 and delta["peer.disk.read_record"] == 0, (i, delta)


def test_range_gets_through_every_node(cluster4, big) -> None:
    c = cluster4
    ranges = [(0, 0), (5, 1000), (MiB - 3, 3 * MiB + 7), (2 * MiB, 11 * MiB), (len(big) - 100, len(big) - 1)]
    for i in range(1, c.n + 1):
        s3 = c.client(i)
        for first, last in ranges:
            got = s3.get_object(Bucket="calls", Key="big", Range=f"bytes={first}-{last}")["Body"].read()
            assert got == big[first:last + 1], (i, first, last)


def test_scrapes_and_probe_rounds_ask_each_peer_once_for_all_its_disks(cluster4, big) -> None:
    from buckets.cluster.remotedisk import STATUS_TTL

    c = cluster4
    scrapes = 6
    start = time.monotonic()
    before = served(c)
    for _ in range(scrapes):
        time.sleep(STATUS_TTL * 1.2)  # past the last answer's time to live: this scrape asks again
        text = metrics(c, 1)
        assert text.count("buckets_disk_online{") == 16
    after = served(c)
    rounds = (time.monotonic() - start) / MONITOR_INTERVAL + 1  # probe rounds per node, at most
    delta = after - before
    # No disk is asked on its own any more: usage and format come in one call per peer...
    assert delta["peer.disk.info"] == 0 and delta["peer.disk.read_format"] == 0, delta
    # ... one disk/status to each of 3 peers per scrape of node 1 (a probe round just before
    # may have answered it), plus the four scrapes of `served` after, plus each node's probe
    # rounds. Disk by disk it was 12 calls per scrape and 48 per probe round of the cluster.
    limit = 3 * (scrapes + c.n) + c.n * 3 * rounds
    assert 3 <= delta["peer.disk.status"] <= limit, (delta, limit)


def test_a_disk_that_goes_offline_shows_in_the_next_scrapes(cluster4, big) -> None:
    c = cluster4
    root = next(p for p in (c.base / "n4").iterdir() if p.name == "d2")
    label = re.compile(r'^buckets_disk_online\{disk="[^"]+",endpoint="[^"]*/n4/d2"\} ([01])', re.MULTILINE)

    def online_seen_by(i: int) -> str:
        found = label.findall(metrics(c, i))
        assert len(found) == 1
        return found[0]

    assert online_seen_by(1) == "1"
    shutil.move(str(root), str(root) + ".away")
    root.write_bytes(b"not a directory any more")
    try:
        deadline = time.monotonic() + 6 * MONITOR_INTERVAL  # a generous deadline, not a timing assertion
        while online_seen_by(1) != "0":
            assert time.monotonic() < deadline, "node 1 still reports n4/d2 online"
            time.sleep(0.5)
    finally:
        root.unlink()
        shutil.move(str(root) + ".away", str(root))
    deadline = time.monotonic() + 6 * MONITOR_INTERVAL
    while online_seen_by(1) != "1":
        assert time.monotonic() < deadline, "node 1 does not see n4/d2 back"
        time.sleep(0.5)
    c.wait_healthy()
