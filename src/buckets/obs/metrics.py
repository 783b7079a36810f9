"""Prometheus metrics of one server app: request metrics plus the engine's own counters.

``ServerMetrics`` owns a dedicated ``CollectorRegistry`` (never the global default: tests
and embedders run several apps in one process). Request metrics are observed per
request by the access logger; everything about the store is read at scrape time by
``StoreCollector`` from counters the engine already keeps up to date (per-bucket usage in
``registry.usage``, cache hits and misses, group-commit counters, heal stats, disk
states), so a scrape costs a few dict reads plus one ``statvfs`` per disk, never a scan.

Names follow Prometheus conventions: ``buckets_`` prefix, base units (bytes, seconds),
``_total`` on counters. Labels have bounded values: the S3 API name (a fixed set), the
status class (``2xx``..``5xx``), bucket names and disk endpoints.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.platform_collector import PlatformCollector

from buckets import __version__
from buckets.storage.local import reserve_bytes

# Latency buckets from a cached HEAD (sub-millisecond) to a large streamed PUT (minutes).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 300.0, float("inf"))


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def write_quorum(data: int, parity: int) -> int:
    """Disks that must accept a write: k, or k+1 when k == m (as the engine requires)."""
    return data + 1 if data == parity and parity > 0 else data


class StoreCollector:
    """Reads the store's counters at scrape time; ``disks`` is refreshed by the scrape."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.disks: list[Any] = []  # DiskInfo snapshot taken (off the loop) just before a scrape

    def describe(self) -> list[Metric]:
        return []  # collected lazily: nothing to check at registration time

    def collect(self) -> Iterator[Metric]:
        store = self.store
        yield from self._usage(store.registry.usage)
        yield from self._disks(store)
        yield from self._heal(store)
        yield from self._hedges(store)
        yield from self._registry(store.registry)
        yield from self._tombstones(store)

    @staticmethod
    def _usage(usage: dict[str, list[int]]) -> Iterable[Metric]:
        objects = GaugeMetricFamily("buckets_bucket_objects", "Objects stored in a bucket.", labels=["bucket"])
        size = GaugeMetricFamily("buckets_bucket_bytes", "Bytes of object data stored in a bucket "
                                 "(logical size, before erasure coding).", labels=["bucket"])
        total_objects = total_bytes = 0
        for bucket, (count, nbytes) in sorted(usage.items()):
            if "\x01" in bucket:  # a cluster's upload records, kept beside the bucket's objects
                continue
            objects.add_metric([bucket], count)
            size.add_metric([bucket], nbytes)
            total_objects += count
            total_bytes += nbytes
        yield objects
        yield size
        yield GaugeMetricFamily("buckets_buckets", "Buckets on this node.",
                                value=sum(1 for b in usage if "\x01" not in b))
        yield GaugeMetricFamily("buckets_objects", "Objects stored, all buckets.", value=total_objects)
        yield GaugeMetricFamily("buckets_stored_bytes", "Bytes of object data stored, all buckets "
                                "(logical size, before erasure coding).", value=total_bytes)

    def _disks(self, store: Any) -> Iterable[Metric]:
        labels = ["disk", "endpoint"]
        total = GaugeMetricFamily("buckets_disk_total_bytes", "Capacity of the disk's filesystem.", labels=labels)
        free = GaugeMetricFamily("buckets_disk_free_bytes", "Free bytes on the disk's filesystem.", labels=labels)
        used = GaugeMetricFamily("buckets_disk_used_bytes", "Used bytes on the disk's filesystem.", labels=labels)
        reserve = GaugeMetricFamily("buckets_disk_reserve_bytes", "Free bytes the disk keeps for deletions "
                                    "(--disk-reserve): below it, new data is refused (507 StorageFull).",
                                    labels=labels)
        online = GaugeMetricFamily("buckets_disk_online", "1 if the disk is online, else 0.", labels=labels)
        healing = GaugeMetricFamily("buckets_disk_healing", "1 while the disk is being refilled.", labels=labels)
        infos = {info.disk_id: info for info in self.disks}
        for disk in store.disks:
            info = infos.get(disk.disk_id)
            key = [disk.disk_id, disk.endpoint]
            is_online = bool(disk.online and (info is None or info.online))
            online.add_metric(key, 1 if is_online else 0)
            healing.add_metric(key, 1 if getattr(disk, "healing", False) else 0)
            if info is not None and info.online:
                total.add_metric(key, info.total)
                free.add_metric(key, info.free)
                used.add_metric(key, info.used)
                reserve.add_metric(key, reserve_bytes(info.total))
        yield from (total, free, used, reserve, online, healing)
        data, parity = store.layout
        count_online = sum(1 for disk in store.disks if disk.online)
        yield GaugeMetricFamily("buckets_disks", "Disks configured on this node.", value=len(store.disks))
        yield GaugeMetricFamily("buckets_disks_online", "Disks online on this node.", value=count_online)
        yield GaugeMetricFamily("buckets_erasure_data_shards", "Data shards per object (k).", value=data)
        yield GaugeMetricFamily("buckets_erasure_parity_shards", "Parity shards per object (m).", value=parity)
        yield GaugeMetricFamily("buckets_write_quorum_disks", "Disks that must be online to accept writes.",
                                value=write_quorum(data, parity))

    @staticmethod
    def _hedges(store: Any) -> Iterable[Metric]:
        slow = getattr(store, "slow_sources", None)
        if slow is None:
            return
        yield CounterMetricFamily("buckets_read_hedges", "Shard reads that lagged far behind the object's other "
                                  "shards, for which a read asked another shard (engine/hedge.py).", value=slow.hedges)
        yield CounterMetricFamily("buckets_read_hedges_won", "Of those, the other shard answered first.",
                                  value=slow.hedges_won)
        yield CounterMetricFamily("buckets_write_shards_left_out", "Shards (or small objects' records) writes went "
                                  "on without because their disk lagged far behind the others (healed after).",
                                  value=slow.left_out)
        avoided = GaugeMetricFamily("buckets_read_slow_source", "1 for a peer or disk whose shards reads avoid "
                                    "because they lagged lately.", labels=["source"])
        for name in slow.names():
            avoided.add_metric([name], 1)
        yield avoided

    @staticmethod
    def _heal(store: Any) -> Iterable[Metric]:
        stats = store.heal_stats
        counters = (
            ("buckets_heal_objects_checked", "Objects whose shards were verified.", stats.objects_checked),
            ("buckets_heal_shards_bad", "Shards found missing, short or corrupt.", stats.shards_bad),
            ("buckets_heal_shards_repaired", "Shards rebuilt.", stats.shards_repaired),
            ("buckets_heal_shards_failed", "Shards that could not be rebuilt.", stats.shards_failed),
            ("buckets_heal_shards_deferred", "Shards a heal left for later: on a peer or disk that lags "
             "(reads go around it).", stats.shards_deferred),
            ("buckets_heal_objects_unrecoverable", "Objects with fewer than k good shards.",
             stats.objects_unrecoverable),
            ("buckets_heal_orphans_removed", "Orphaned write files removed by the sweep.", stats.orphans_removed),
            ("buckets_heal_uploads_expired", "Abandoned multipart uploads expired.", stats.uploads_expired),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        yield GaugeMetricFamily("buckets_heal_queue_length", "Objects queued for repair.",
                                value=store.heal_queue.qsize())
        replaced = getattr(store, "replaced", None)
        if replaced is not None:
            yield GaugeMetricFamily("buckets_replaced_removals_pending", "Replaced writes whose data waits before "
                                    "its removal: on a cluster, one made moments ago through another node may "
                                    "still be merged again (engine/replaced.py).", value=len(replaced))
            yield CounterMetricFamily("buckets_replaced_writes_kept", "Of those, writes found to be their key's "
                                      "state again when their removal was due: kept.", value=replaced.kept)
        scanner = getattr(store, "scanner", None)
        if scanner is not None:
            yield GaugeMetricFamily("buckets_heal_deferred", "Objects whose repair waits for a slow peer or disk "
                                    "to keep up.", value=len(scanner.deferred))
            yield CounterMetricFamily("buckets_scanner_cycles", "Full scanner passes completed.",
                                      value=scanner.cycle)
            yield GaugeMetricFamily("buckets_scanner_running", "1 while a scanner pass is running.",
                                    value=1 if scanner.running_cycle else 0)
            done = GaugeMetricFamily("buckets_disk_refill_objects_done",
                                     "Objects the refill of a replaced, wiped or returning disk has visited.",
                                     labels=["disk", "endpoint"])
            total = GaugeMetricFamily("buckets_disk_refill_objects_total",
                                      "Objects the refill of that disk has to visit.", labels=["disk", "endpoint"])
            rebuilt = CounterMetricFamily("buckets_disk_refill_shards_rebuilt",
                                          "Shards the refill of that disk rebuilt.", labels=["disk", "endpoint"])
            for disk_id, state in scanner.refill.items():
                key = [disk_id, state.get("endpoint", "")]
                done.add_metric(key, state.get("done", 0))
                total.add_metric(key, state.get("total", 0))
                rebuilt.add_metric(key, state.get("repaired", 0))
            yield from (done, total, rebuilt)

    @staticmethod
    def _registry(registry: Any) -> Iterable[Metric]:
        cache = registry.cache
        yield CounterMetricFamily("buckets_registry_cache_hits", "Registry lookups served by the cache.",
                                  value=cache.hits)
        yield CounterMetricFamily("buckets_registry_cache_misses", "Registry lookups that went to LMDB.",
                                  value=cache.misses)
        yield GaugeMetricFamily("buckets_registry_cache_entries", "Entries in the registry cache.",
                                value=len(cache))
        yield CounterMetricFamily("buckets_registry_commits", "Group commits (one LMDB transaction each).",
                                  value=registry.commits)
        yield CounterMetricFamily("buckets_registry_committed_ops",
                                  "Registry operations committed; divided by commits it is the mean "
                                  "group-commit size.", value=registry.committed_ops)
        yield CounterMetricFamily("buckets_registry_digest_scans",
                                  "Full scans of a bucket's index for anti-entropy's range digests (a cluster "
                                  "node's first digest of a bucket, then only once it went stale: "
                                  "registry/digests.py).", value=registry.digests.scans)
        yield GaugeMetricFamily("buckets_registry_last_commit_writers",
                                "Writers coalesced into the most recent group commit.", value=registry.last_batch)
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, registry.batch_bounds), "+Inf"], registry.batch_counts):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("buckets_registry_group_commit_writers",
                                    "Writers coalesced per group commit (one LMDB transaction and sync).",
                                    buckets=buckets, sum_value=registry.batch_sum)
        yield GaugeMetricFamily("buckets_registry_size_bytes", "Size of the LMDB registry file.",
                                value=registry.size_bytes())

    @staticmethod
    def _tombstones(store: Any) -> Iterable[Metric]:
        node = getattr(store, "cluster_node", None)
        replica = getattr(getattr(node, "index", None), "local", None)
        if replica is None:
            return  # a single node deletes entries outright: no tombstones
        yield GaugeMetricFamily("buckets_index_tombstones",
                                "Deletes this node's index replicas remember (a tombstone per deleted key), "
                                "until they are older than the tombstone retention and every replica "
                                "holds them.", value=store.registry.count_tombstones())
        yield CounterMetricFamily("buckets_index_tombstones_forgotten",
                                  "Tombstones this node's index replicas forgot (older than the retention, "
                                  "held by every replica).", value=replica.tombstones_forgotten)


class NodeCollector(abc.ABC):
    """Base of the collectors of a cluster node's own figures (``collect_node``), registered on
    every server: on a single node (no ``store.cluster_node``) they yield nothing."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        node = getattr(self.store, "cluster_node", None)
        if node is not None:
            yield from self.collect_node(node)

    @abc.abstractmethod
    def collect_node(self, node: Any) -> Iterator[Metric]:
        """The metrics of ``node`` (a ``ClusterNode``)."""


class ServerMetrics:
    """Every metric of one app, in its own registry."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str], tuple] = {}
        self.requests = Counter("buckets_s3_requests", "Requests by API and status class.",
                                ["api", "status_class"], registry=self.registry)
        self.latency = Histogram("buckets_s3_request_duration_seconds",
                                 "Time from request start until the response was sent.",
                                 ["api"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.received = Counter("buckets_s3_received_bytes", "Request body bytes received.",
                                ["api"], registry=self.registry)
        self.sent = Counter("buckets_s3_sent_bytes", "Response bytes sent (headers and body).",
                            ["api"], registry=self.registry)
        self.store_collector = StoreCollector(store)
        self.registry.register(self.store_collector)
        self.registry.register(_InfoCollector(store))
        from buckets.cluster.migration import MigrationCollector  # cluster nodes only; nothing on one node

        self.registry.register(MigrationCollector(store))
        from buckets.cluster.clocks import ClockCollector  # cluster nodes only

        self.registry.register(ClockCollector(store))
        from buckets.cluster.slowlink import SlowLinkCollector  # cluster nodes only

        self.registry.register(SlowLinkCollector(store))
        # Process memory, CPU and open file descriptors (Linux /proc), Python version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def observe(self, api: str, status: int, seconds: float, received: int, sent: int) -> None:
        # The labelled children are looked up once per (API, status class): prometheus_client's
        # labels() validates and locks on every call, which showed in a small PUT's profile.
        group = status_class(status)
        children = self._children.get((api, group))
        if children is None:
            children = (self.requests.labels(api, group), self.latency.labels(api),
                        self.received.labels(api), self.sent.labels(api))
            if len(self._children) < 4096:  # API names and status classes are few; stay bounded
                self._children[(api, group)] = children
        children[0].inc()
        children[1].observe(seconds)
        if received:
            children[2].inc(received)
        if sent:
            children[3].inc(sent)

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, in the format the scraper asked for."""
        self.store_collector.disks = list(await self.store.disk_infos())
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _InfoCollector:
    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("buckets_build_info", "Always 1; labels name the build and deployment.",
                                 labels=["version", "deployment_id"])
        info.add_metric([__version__, str(getattr(self.store, "deployment_id", ""))], 1)
        yield info
        started = getattr(self.store, "started", None)
        if started is not None:
            yield GaugeMetricFamily("buckets_uptime_seconds", "Seconds since the store was opened.",
                                    value=max(0.0, time.time() - started))
