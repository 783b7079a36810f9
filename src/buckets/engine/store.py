"""``Store``: the object layer the S3 handlers and embedded users call.

Commit order for every write (PUT, CompleteMultipartUpload, DeleteObject):

1. data is erasure-coded into the staging area of each disk and fsynced;
2. it is renamed into place (data first, then the metadata file) and the directories
   are fsynced; a write quorum of disks must succeed or everything is rolled back;
3. the registry commits the new entry (group commit, synced);
4. the caller is answered; only then are the replaced write's files removed.

A crash before 3 leaves the old entry pointing at untouched old files (the new files
are orphans, swept by the scanner); a crash after 3 leaves extra old files. Either way a
reader sees the old object or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from buckets import checksums, errors
from buckets.engine import crypto, hedge, paths, smalllog, space, versions
from buckets.engine.ids import new_id
from buckets.engine.catalog import Catalog, LocalCatalog
from buckets.engine.bootstrap import bootstrap, choose_registry, registry_unreadable
from buckets.engine.locks import KeyLocks
from buckets.engine.meta import bucket_meta_file, encode_meta_file, entry_to_info, entry_to_listing
from buckets.engine.names import check_bucket_name, check_object_key
from buckets.engine.heal import HealStats
from buckets.engine.reader import ObjectReader
from buckets.engine.replaced import DeferredRemovals
from buckets.engine.scanner import Scanner, ScannerConfig
from buckets.engine.types import (
    BucketInfo, ByteRange, ListResult, ObjectInfo, PutOptions,
)
from buckets.engine.users import UserStore
from buckets.engine.writer import ErasureWriter, WriteResult
from buckets.erasure import ErasureCodec
from buckets.placement import DiskSpec, PartitionTable, Topology, build_table, narrow_layout
from buckets.registry import Op, Registry
from buckets.storage import Disk, LocalDisk
from buckets.storage.disk import DiskInfo
from buckets.storage.format import DATA_DIR, REGISTRY_DIR, TMP_DIR, USERS_FILE
from buckets.runtime import Workers, wait_for

log = logging.getLogger("buckets.engine")

DEFAULT_BLOCK_SIZE = 1 << 20
SETTINGS_ATTEMPTS = 5  # a bucket settings change judged again when another one won (update_bucket)
READ_ATTEMPTS = 3  # lookups of a GET whose write was replaced under it (get_object(begin=True))


@dataclass(slots=True)
class ClusterParts:
    """What a cluster node gives its store (see ``buckets.cluster.node``)."""

    disk_nodes: list[str]  # the node (URL) of each disk, in slot order
    may_format: bool  # only the first node creates a new deployment's format
    table: Callable[["Store", Any], Awaitable[PartitionTable]]  # after bootstrap: the agreed table
    catalog: Callable[["Store"], Catalog]  # built once the registry is open
    users: Callable[["Store"], Any]  # the user table (get_user, list_users, commit)
    known_ids: bool = False  # the disks' ids are set from the control plane (a member restarting)


DEFAULT_PARTITIONS = 4096


def _now() -> float:
    return time.time()


class Store:
    """One node's object layer over its disks. Create with ``await Store.open(paths)``."""

    def __init__(self) -> None:
        self.disks: list[Disk] = []
        self.by_id: dict[str, Disk] = {}
        self.registry: Registry  # this node's own LMDB (single node: the whole catalog)
        self.catalog: Catalog
        self.cpu = Workers(max_workers=4, thread_name_prefix="cpu")
        self.locks = KeyLocks()
        self.heal_queue: asyncio.Queue = asyncio.Queue(maxsize=10_000)
        self._heal_pending: set[tuple[str, str, str]] = set()
        self.heal_stats = HealStats()
        self.slow_sources = hedge.SlowSources()  # peers and disks reads hedge around (engine/hedge.py)
        self._codecs: dict[tuple[int, int, int], ErasureCodec] = {}
        self._background: set[asyncio.Task] = set()
        # A cluster's replaced writes that may still be merged again: removed once they cannot
        # (engine/replaced.py).
        self.replaced = DeferredRemovals(self)
        # Until when deletions wait for their space (engine/space.py): a write refused for want
        # of space (507) sets it.
        self.short_of_space_until = 0.0
        # (bucket, key, wid) -> [readers streaming that write, event set when none are left]
        self._active_reads: dict[tuple[str, str, str], list] = {}
        self.sync = True
        self.started = _now()
        # The node's key manager (``buckets.kms``), set by the server once the store is open;
        # None: SSE-S3 and SSE-KMS are refused (SSE-C needs no server key).
        self.kms: Any = None

    # -- lifecycle ------------------------------------------------------------------------
    @classmethod
    async def open(cls, paths_: list[str], **kwargs) -> "Store":
        """A store over local directories (one ``LocalDisk`` each); see ``open_disks``."""
        return await cls.open_disks([LocalDisk(p) for p in paths_], **kwargs)

    @classmethod
    async def open_disks(cls, disks: list[Disk], *, parity: int | None = None, sync: bool = True,
                         cache_size: int = 50_000, inline_threshold: int = 128 * 1024,
                         block_size: int = DEFAULT_BLOCK_SIZE, partitions: int = DEFAULT_PARTITIONS,
                         registry_dir: str | None = None, background: bool = True,
                         small_copy_limit: int = 16 * 1024, small_log: bool = False,
                         small_set_limit: int = 16 * 1024,
                         scanner_config: "ScannerConfig | None" = None,
                         cluster: "ClusterParts | None" = None,
                         registry_avoid: frozenset[str] = frozenset()) -> "Store":
        """The composition root: a store over ``disks`` (any ``Disk``: local, remote, wrapped),
        in slot order. The store owns them from here on and closes them, also when opening
        fails. ``cluster`` (given by ``buckets.cluster.node``) names the node of each disk and
        supplies the catalog and user table that replace this node's own registry."""
        self = cls()
        self.disks = list(disks)
        self.cluster = cluster
        try:
            await self._open(parity=parity, sync=sync, cache_size=cache_size, inline_threshold=inline_threshold,
                             block_size=block_size, partitions=partitions, registry_dir=registry_dir,
                             background=background, small_copy_limit=small_copy_limit,
                             scanner_config=scanner_config, small_log=small_log,
                             small_set_limit=small_set_limit, registry_avoid=registry_avoid)
        except BaseException:
            await self._abandon()
            raise
        return self

    async def _open(self, *, parity, sync, cache_size, inline_threshold, block_size, partitions, registry_dir,
                    background, small_copy_limit, scanner_config, small_log=False,
                    small_set_limit=16 * 1024, registry_avoid: frozenset[str] = frozenset()) -> None:
        self.sync = sync
        # Inline writes and delete markers go to the disks' record logs (engine/smalllog.py),
        # on a cluster too (over peer RPC; a write's record locations never change there, see
        # smalllog.relocate).
        self.small_log = bool(small_log)
        self.inline_threshold = inline_threshold
        self.small_copy_limit = min(small_copy_limit, inline_threshold)
        # Objects up to this size are written to a narrower set (placement.narrow_layout).
        self.small_set_limit = min(small_set_limit, inline_threshold)
        loop = asyncio.get_running_loop()
        boot = await bootstrap(self.disks, parity=parity, block_size=block_size, partitions=partitions, sync=sync,
                               may_create=self.cluster is None or self.cluster.may_format,
                               known_ids=self.cluster is not None and self.cluster.known_ids,
                               disks_per_node=(list(Counter(self.cluster.disk_nodes).values())
                                               if self.cluster is not None else None))
        self.boot = boot
        self.deployment_id = boot.deployment_id
        self.k, self.m, self.block_size = boot.k, boot.m, boot.block_size
        self.by_id = {d.disk_id: d for d in self.disks}
        online = [d for d in self.disks if d.online]
        # A cluster node reads through its peers' disks too, and a node joining a cluster
        # opens with its own disks alone (fewer than k, if it has fewer disks than the layout
        # has data shards): only a single node needs k disks of its own.
        if len(online) < (self.k if self.cluster is None else 1):
            raise errors.FormatError(f"only {len(online)} of {len(self.disks)} disks are usable; "
                                     f"at least {self.k if self.cluster is None else 1} are needed to read "
                                     f"this deployment")
        if self.cluster is not None:
            self.table = await self.cluster.table(self, boot)  # the control plane's, same on every node
        else:
            topo = Topology(generation=1, disks=tuple(DiskSpec(d, "local") for d in boot.disk_ids),
                            partitions=boot.partitions)
            self.table = await loop.run_in_executor(None, build_table, topo, self.k + self.m)
        await asyncio.gather(*(self._clean_staging(d) for d in online))
        self.registry_disk_id: str | None = None  # the disk the registry lives on (None: registry_dir)
        if registry_dir:
            reg_dir, rebuild = registry_dir, False
        else:
            home, rebuild = await choose_registry(online, sync, registry_avoid)
            problem = None if rebuild else await registry_unreadable(home.local_path(REGISTRY_DIR))
            if problem is not None:
                if self.cluster is not None:  # its index replica: refilled only by a new join
                    from buckets.cluster.control import first_disk_failing

                    raise errors.FormatError(first_disk_failing(
                        home.endpoint, f"its registry, this node's replica of the index, cannot be read: {problem}"))
                log.error("the registry on %s cannot be read (%s): its disk is failing", home.endpoint, problem)
                home, rebuild = await choose_registry(online, sync, registry_avoid | {home.disk_id})
            reg_dir, self.registry_disk_id = home.local_path(REGISTRY_DIR), home.disk_id
            assert reg_dir is not None
        self.registry = Registry(reg_dir, cache_size=cache_size, sync=sync)
        self.registry.start()
        # In a cluster this registry is only this node's replica of the index: a lost one is
        # refilled from the other replicas by anti-entropy, not rebuilt from the disks.
        # A registry without the deployment id (committed last, below) was being created or
        # rebuilt when the node stopped: a crash there leaves it empty or partial, so it is
        # rebuilt again rather than trusted.
        incomplete = self.registry.get_sys("deployment") is None
        if (self.registry.created or rebuild or incomplete) and not boot.new_deployment and self.cluster is None:
            from buckets.engine.rebuild import rebuild_registry

            stats = await rebuild_registry(self)
            log.warning("registry was missing: rebuilt from disk metadata (%s)", stats)
        await self.registry.commit([Op("put_sys", "deployment", value=self.deployment_id)])
        if self.cluster is not None:
            self.catalog = self.cluster.catalog(self)
            self.users = UserStore(self.cluster.users(self), mirror=None)
        else:
            self.catalog = LocalCatalog(self.registry)
            self.users = UserStore(self.registry, mirror=self._mirror_users)
        if self.cluster is None:
            await smalllog.adopt_at_start(self)
        self.scanner = Scanner(self, scanner_config)
        from buckets.engine.compaction import Compactor

        self.compactor = Compactor(self, self.scanner.cfg)
        if background:
            self.scanner.start()
            # With the log off too: the segments written while it was on still hold dead
            # records to reclaim (a pass over disks without segments finds nothing to do).
            self.compactor.start()

    async def _abandon(self) -> None:
        """Undo a failed open: stop what started, close the registry and the disks."""
        scanner = getattr(self, "scanner", None)
        if scanner is not None:
            await scanner.stop()
        compactor = getattr(self, "compactor", None)
        if compactor is not None:
            await compactor.stop()
        registry = getattr(self, "registry", None)
        if registry is not None:
            try:
                await registry.close()
            except Exception:  # noqa: BLE001 - the open's own error is the one to report
                log.exception("closing the registry of a failed open")
        await asyncio.gather(*(d.close() for d in self.disks), return_exceptions=True)
        self.cpu.shutdown(wait=False)

    async def _mirror_users(self, snapshot: bytes) -> None:
        ok = await self._on_disks(lambda d: d.write_file(USERS_FILE, snapshot, sync=self.sync))
        if ok < self._write_quorum(self.k, self.m):
            log.warning("the user table reached only %d disks; a registry rebuild may not restore it", ok)

    async def close(self) -> None:
        await self.replaced.close()
        await self.scanner.stop()
        await self.compactor.stop()
        for _count, done in self._active_reads.values():
            done.set()  # readers left open do not hold up shutdown; their write's removal proceeds
        for task in list(self._background):
            try:
                await wait_for(task, 10)
            except (asyncio.TimeoutError, Exception):
                pass
        await self.registry.close()
        await asyncio.gather(*(d.close() for d in self.disks))
        self.cpu.shutdown(wait=True)

    async def _clean_staging(self, disk: Disk) -> None:
        try:
            for name in await disk.list_dir(TMP_DIR):
                await disk.delete(f"{TMP_DIR}/{name}", recursive=True)
        except errors.DiskError:
            pass

    # -- helpers used by readers/writers ------------------------------------------------------
    @property
    def layout(self) -> tuple[int, int]:
        return self.k, self.m

    @property
    def small_layout(self) -> tuple[int, int] | None:
        """The (k, m) of objects up to ``small_set_limit`` bytes, when narrower than the
        deployment's (``placement_for``), else None."""
        ks, ms = narrow_layout(self.k, self.m)
        return (ks, ms) if self.small_set_limit > 0 and ks + ms < self.k + self.m else None

    @property
    def disk_count(self) -> int:
        return len(self.disks)

    def codec_for(self, k: int, m: int, bs: int) -> ErasureCodec:
        codec = self._codecs.get((k, m, bs))
        if codec is None:
            codec = self._codecs[(k, m, bs)] = ErasureCodec(k, m, bs)
        return codec

    def disks_for(self, disk_ids: list[str]) -> list[Disk | None]:
        out: list[Disk | None] = []
        for i in disk_ids:
            d = self.by_id.get(i)
            out.append(d if d is not None and d.online else None)
        return out

    def disks_for_read(self, disk_ids: list[str], need: int) -> list[Disk | None]:
        """Like :meth:`disks_for`, but when fewer than ``need`` of them are online, the disks
        marked offline are tried as well: the mark may be stale (a peer that was slow to
        answer a probe under load, a node that just came back), and a read that cannot be
        served otherwise loses nothing by asking. A disk that is really gone fails its call
        and counts as missing, as before."""
        out = self.disks_for(disk_ids)
        if sum(d is not None for d in out) >= need:
            return out
        return [d if d is not None else self.by_id.get(i) for d, i in zip(out, disk_ids)]

    def layout_for(self, storage_class: str) -> tuple[int, int]:
        if storage_class == "REDUCED_REDUNDANCY" and self.m > 1:
            n = self.k + self.m
            m = max(1, self.m // 2)
            return n - m, m
        return self.k, self.m

    def placement_for(self, bucket: str, key: str, storage_class: str,
                      size: int | None) -> tuple[int, int, list[str]]:
        """``(k, m, disk ids)`` of a new write of ``size`` bytes (None: not known yet).

        A write of at most ``small_set_limit`` bytes whose set is wider than twice its parity
        goes to ``m + m`` disks of its partition's row (a window: ``PartitionTable.object_disks``),
        with the same parity, so it survives the loss of as many disks as a wide write. It
        goes to the whole row instead when the window could not take the write: fewer of its
        disks online than a write quorum, or, on a cluster, one node holding so many of its
        slots that the loss of that node would leave less than a quorum (a wide write of
        this deployment survives a node's loss). The entry records what was chosen (``k``,
        ``m``, ``disks``); readers, heal, refill and migration go by the entry."""
        k, m = self.layout_for(storage_class)
        if size is not None and size <= self.small_set_limit:
            ks, ms = narrow_layout(k, m)
            if ks + ms < k + m:
                ids = list(self.table.object_disks(bucket, key, ks + ms))
                if self._narrow_fits(ids, self._write_quorum(ks, ms)):
                    return ks, ms, ids
        return k, m, list(self.table.object_disks(bucket, key, k + m))

    def _narrow_fits(self, disk_ids: list[str], quorum: int) -> bool:
        if sum(d is not None for d in self.disks_for(disk_ids)) < quorum:
            return False
        node = getattr(self, "cluster_node", None)
        if node is None:
            return True
        per_node = Counter(node.node_of_disk(i) for i in disk_ids)
        return max(per_node.values()) <= len(disk_ids) - quorum

    def report_damage(self, bucket: str, key: str, wid: str, reason: str, *, quiet: bool = False) -> None:
        """Queue a heal of this write (``quiet``: logged at debug level, not as a warning)."""
        item = (bucket, key, wid)
        if item in self._heal_pending:
            return
        log.log(logging.DEBUG if quiet else logging.WARNING, "damaged object %s/%s (write %s): %s; queued for heal",
                bucket, key, wid, reason)
        try:
            self.heal_queue.put_nowait((bucket, key, wid, reason))
            self._heal_pending.add(item)
        except asyncio.QueueFull:
            pass

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.keep(task)
        return task

    def keep(self, task: asyncio.Future) -> None:
        """Hold ``task`` until it ends (the store's close cancels what is still running)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def known_slow(self, disk: Disk | None) -> bool:
        """``disk``'s source lagged lately (``engine/hedge.py``: ``SlowSources.lately``)."""
        return disk is not None and self.slow_sources.lately(disk)

    def kept_up(self, disks: Iterable[Disk | None]) -> None:
        """A write's slots on ``disks`` kept up (``SlowSources.kept_up``)."""
        self.slow_sources.kept_up(d for d in disks if d is not None)

    def writable(self, disks: list, quorum: int) -> list:
        """``disks`` for a new write: those whose source is surely slow (a write waited for it
        past its budget, or it keeps lagging: ``SlowSources.surely_slow``) left out (``None``)
        when the others make the write quorum. The write would leave their shards out after
        0.1 s anyway (``hedge.grace``), having queued them on the slow link for nothing, where
        they crowd out the calls that must cross it (its index replica, its probes), and a heal
        of them waits until it keeps up (``heal.py``). Counted as left out. (One read's hedge
        is not enough: a peer's GC pause can make one, and every write for 10 s would then be
        degraded.)"""
        if self.slow_sources.none_surely_slow():
            return disks
        slow = [i for i, d in enumerate(disks) if d is not None and self.slow_sources.surely(d)]
        if not slow or sum(d is not None for d in disks) - len(slow) < quorum:
            return disks
        self.slow_sources.left_out += len(slow)
        return [None if i in slow else d for i, d in enumerate(disks)]

    def lagging_call(self, call: asyncio.Future, disk: Disk, lag: float, kept: list | None = None) -> None:
        """A write's call to ``disk`` left to finish on its own (see ``lagging_disk``)."""
        self.keep(call)
        self.lagging_disk(disk, lag, kept)

    def lagging_disk(self, disk: Disk, lag: float, kept: list | None = None) -> None:
        """A write went on without ``disk``'s shard (it lagged ``lag`` seconds behind the write
        quorum's): its source counts as slow (``engine/hedge.py``), or the disk alone when
        another disk of the same peer in ``kept`` (those the write did not leave out) kept up,
        or its node says it lags its siblings (``SlowSources.blame``): one hung or slow disk is
        not a slow link, and its peer's other disks stay in use."""
        slow = self.slow_sources
        slow.left_out += 1
        if hedge.lags_alone(disk, kept) or slow.blame(disk):
            slow.mark(disk, hedge.disk_name(disk), lag, "writes to")
        elif not slow.blame(disk, self.disks):
            slow.mark(hedge.source_of(disk), hedge.source_name(disk), lag, "writes to")
        # (else its node says another of its disks lags its siblings: the write's call to this
        # one lagged with it, as a peer's records for all its disks go in one call)

    # -- buckets --------------------------------------------------------------------------
    async def make_bucket(self, name: str, owner: str = "", settings: dict | None = None) -> BucketInfo:
        """Create ``name`` owned by ``owner`` (an access key; "" is the root user) with its first
        ``settings`` (ACL, object ownership, ...). ``BucketAlreadyOwnedByYou`` when ``owner``
        has it already, ``BucketAlreadyExists`` when someone else does."""
        check_bucket_name(name)
        async with self.locks.hold(("bucket", name)):
            existing = await self.catalog.find_bucket(name)
            if existing is not None:
                if existing.get("owner", "") == owner:
                    raise errors.BucketAlreadyOwnedByYou(resource=name, BucketName=name)
                raise errors.BucketAlreadyExists(resource=name, BucketName=name)
            created = _now()
            record = {**(settings or {}), "created": created, "owner": owner}
            data = bucket_meta_file(name, record)
            ok = await self._on_disks(lambda d: d.write_file(paths.bucket_meta(name), data, sync=self.sync))
            if ok < self._write_quorum(self.k, self.m):
                raise errors.WriteQuorumLost()
            await self.catalog.create_bucket(name, record)
        return BucketInfo(name, created, owner)

    async def bucket_record(self, name: str) -> dict:
        """The bucket's whole record: ``created``, ``owner`` and its settings (``NoSuchBucket``)."""
        return await self._require_bucket(name)

    async def update_bucket(self, name: str, set: dict | None = None, unset: list[str] | None = None, *,
                            check: Callable[[dict], None] | None = None, reads: Sequence[str] = ()) -> dict:
        """Change a bucket's settings (policy, ACL, CORS, encryption, ...): ``set`` replaces the
        named values, ``unset`` removes them. Durable in the catalog and in the bucket's
        metadata file on every disk (so a registry rebuild keeps it). Returns the new record.

        ``check(record)`` raises to refuse the change; it reads only the settings named in
        ``reads``, and the change applies only while they hold the values it judged (under the
        bucket's lock here; on a cluster a compare-and-set in the control plane, since a change
        through another node takes no lock of this one). Changed meanwhile: judged again on
        the fresh record, up to ``SETTINGS_ATTEMPTS`` times, then ``409 OperationAborted``."""
        values, drop = dict(set or {}), list(unset or [])
        reserved = {"created", "owner", "bucket", "version"} & (values.keys() | drop)
        if reserved or any(k.startswith("index_") for k in (*values, *drop)):
            raise ValueError(f"not a bucket setting: {sorted(reserved) or drop}")
        async with self.locks.hold(("bucket", name)):
            for attempt in range(SETTINGS_ATTEMPTS):
                record = await self._require_bucket(name)
                if check is not None:
                    check(record)
                try:
                    await self.catalog.update_bucket(name, values, drop, {k: record.get(k) for k in reads} or None)
                    break
                except errors.BucketSettingsChanged:
                    if attempt == SETTINGS_ATTEMPTS - 1:
                        raise
                    await self.catalog.fresh_buckets()  # (on a cluster: this node applied the change that won)
            record = await self._require_bucket(name)
            data = bucket_meta_file(name, record)
            ok = await self._on_disks(lambda d: d.write_file(paths.bucket_meta(name), data, sync=self.sync))
            if ok < self._write_quorum(self.k, self.m):
                log.warning("bucket %s: its settings reached only %d disks; the scanner rewrites them", name, ok)
        return record

    async def delete_bucket(self, name: str) -> None:
        async with self.locks.hold(("bucket", name)):
            await self._require_bucket(name)
            uploads = await self.catalog.delete_bucket(name)
            await self._on_disks(lambda d: d.delete(paths.bucket_dir(name), recursive=True))
            if self.sync:
                # Durable before the answer: a registry rebuilt from the disks makes a bucket of
                # every ``.bucket.meta`` it finds, and a power cut could otherwise keep the
                # directory on a disk and bring the deleted bucket back.
                await self._on_disks(lambda d: d.fsync_dir(DATA_DIR))
            for u in uploads:
                await self._on_disks(lambda d, u=u: d.delete(paths.upload_dir(u["uid"]), recursive=True))

    async def list_buckets(self) -> list[BucketInfo]:
        return [BucketInfo(name, rec["created"], rec.get("owner", "")) for name, rec in await self.catalog.fresh_buckets()]

    async def get_bucket(self, name: str) -> BucketInfo:
        rec = await self._require_bucket(name)
        return BucketInfo(name, rec["created"], rec.get("owner", ""))

    async def bucket_exists(self, name: str) -> bool:
        return await self.catalog.find_bucket(name) is not None

    async def _require_bucket(self, name: str) -> dict:
        rec = await self.catalog.find_bucket(name)
        if rec is None:
            raise errors.NoSuchBucket(resource=name, BucketName=name)
        return rec

    async def _on_disks(self, fn, disks: list[Disk | None] | None = None) -> int:
        targets = [d for d in (disks if disks is not None else self.disks) if d is not None and d.online]

        async def one(d) -> bool:
            try:
                await fn(d)
                return True
            except errors.DiskError as exc:
                log.warning("disk %s: %s", d.endpoint, exc)
                return False

        return sum(await asyncio.gather(*(one(d) for d in targets)))

    @staticmethod
    def _write_quorum(k: int, m: int) -> int:
        return k + 1 if k == m else k

    # -- objects --------------------------------------------------------------------------
    async def _check_conditions(self, bucket: str, key: str, opts: PutOptions, *,
                                at_commit: bool = False) -> dict | None:
        """Check a conditional write (or delete) against the current version (a delete marker
        counts as no object; ``If-Match: *`` asks only that there be one) and return the
        current entry. At commit, under the key's lock, a condition that
        held when the write started but no longer does means another write won the race:
        ``409 ConditionalRequestConflict``, as S3 answers it (the client retries)."""
        current = await self.catalog.get_object(bucket, key)
        self._judge(bucket, key, opts, current, at_commit=at_commit)
        return current

    @staticmethod
    def _judge(bucket: str, key: str, opts: PutOptions, current: dict | None, *, at_commit: bool) -> None:
        """Raise if the conditions of ``opts`` do not hold for ``current`` (the key's entry)."""
        visible = current if current is not None and not current.get("dm") else None
        failed: errors.BucketsError | None = None
        if opts.if_none_match and visible is not None:
            failed = errors.PreconditionFailed(resource=f"/{bucket}/{key}", Condition="If-None-Match")
        elif opts.if_match is not None and (visible is None or (
                opts.if_match.strip() != "*" and visible["etag"] != opts.if_match.strip('"'))):
            if visible is None:
                failed = errors.NoSuchKey(resource=f"/{bucket}/{key}", Key=key)
            else:
                failed = errors.PreconditionFailed(resource=f"/{bucket}/{key}", Condition="If-Match")
        elif opts.if_current is not None and (visible is None or not opts.if_current(visible)):
            failed = errors.PreconditionFailed(resource=f"/{bucket}/{key}", Condition="the version judged")
        if failed is not None:
            if at_commit:
                raise errors.ConditionalRequestConflict(resource=f"/{bucket}/{key}")
            raise failed

    @space.notes_full
    async def put_object(self, bucket: str, key: str, stream: AsyncIterator[bytes] | bytes,
                         size: int | None, opts: PutOptions | None = None) -> ObjectInfo:
        opts = opts or PutOptions()
        check_object_key(key)
        bucket_rec = await self._require_bucket(bucket)
        self.catalog.check_room(bucket)  # its entry would grow a registry into a full disk's reserve
        if opts.if_none_match or opts.if_match is not None:
            await self._check_conditions(bucket, key, opts)  # fail fast; re-checked at commit
        sse = opts.sse if opts.sse is not None else crypto.bucket_default(bucket_rec)
        data_key, sse_rec = await crypto.begin_write(self, sse, bucket, key) if sse is not None else (None, None)
        k, m, disk_ids = self.placement_for(bucket, key, opts.storage_class, size)
        codec = self.codec_for(k, m, self.block_size)
        disks = self.writable(self.disks_for(disk_ids), self._write_quorum(k, m))
        wid = new_id()
        txid = new_id()
        stage = paths.staging(txid)
        writer = ErasureWriter(codec, disks, [f"{stage}/{wid}/part.1"] * codec.n, self.cpu,
                               algorithms=opts.checksum_algorithms or (checksums.DEFAULT_ALGORITHM,),
                               inline_limit=self.inline_threshold,
                               cipher=crypto.PartCipher(data_key, crypto.write_iv(wid), 1)
                               if data_key is not None else None, on_lag=self.lagging_disk, keep=self.keep,
                               known_slow=self.known_slow, kept_up=self.kept_up)
        try:
            result = await writer.run(stream, size)
            if opts.verify is not None:
                await opts.verify(self._computed(result))
            mtime = _now()
            etag = crypto.etag_for(sse_rec, data_key, result.md5)
            entry = {
                **versions.version_fields(bucket_rec, opts, mtime), "wid": wid, "mt": mtime,
                "size": result.size, "etag": etag,
                "h": dict(opts.headers), "um": dict(opts.user_meta), "ck": result.checksums,
                "ckt": "FULL_OBJECT" if result.checksums else None, "ch": result.content_hash,
                "sc": opts.storage_class, "k": k, "m": m, "bs": self.block_size, "disks": disk_ids,
                "gen": self.table.generation, "inline": result.inline is not None,
                "parts": [[1, result.stored_size, etag, result.checksums, mtime]],
            }
            if sse_rec is not None:
                entry["sse"] = dict(sse_rec, iv=[crypto.write_iv(wid)])
            entry.update(opts.access)
            full: set[int] = set()  # slots whose disk refused the inline record for want of space
            if result.inline is not None:
                ok = await self._store_inline(bucket, key, entry, disks, result.inline or [], full=full)
            else:
                ok_slots = await writer.finish(self.sync)
                ok = await self._commit_streamed(bucket, key, entry, stage, disks, ok_slots,
                                                 [(f"{stage}/{wid}", paths.data_dir(bucket, key, wid))])
        except BaseException:
            await writer.abort()
            await self._on_disks(lambda d: d.delete(stage, recursive=True), disks)
            raise
        small = result.body if result.body is not None and len(result.body) <= self.small_copy_limit else None
        await self._publish(bucket, key, entry, opts, disks, ok, small=small, full=len(full))
        return entry_to_info(bucket, key, entry)

    @staticmethod
    def _computed(result: WriteResult) -> dict:
        return {"md5": result.md5, "size": result.size, **result.checksums}

    def _disk_meta(self, bucket: str, key: str, entry: dict, shard: int, data: bytes | None = None) -> bytes:
        payload = dict(entry, bucket=bucket, key=key, shard=shard)
        payload.pop(smalllog.LOG_FIELD, None)  # where records are is the registry's to say
        if data is not None:
            payload["data"] = data
        return encode_meta_file(payload)

    async def _store_inline(self, bucket: str, key: str, entry: dict, disks: list, inline: list,
                            full: set[int] | None = None) -> list[int]:
        """Write an inline write's (or a delete marker's) metadata with each slot's framed
        data to its disk: one record per disk in the disks' logs (``entry["lg"]`` gets their
        locations), or, with the log off, one metadata file per disk. The slots that took it
        (``full`` gets those whose disk refused new data at its free-space reserve)."""
        if self.small_log:
            n = len(disks)
            got = await smalllog.append_slots(self, bucket, key, entry, disks,
                                              {i: inline[i] if i < len(inline) else b"" for i in range(n)}, full=full,
                                              quorum=self._write_quorum(entry["k"], entry["m"]))
            entry[smalllog.LOG_FIELD] = [got.get(i) for i in range(n)]
            return sorted(got)
        mp = paths.meta_path(bucket, key, entry["wid"])
        new_data = not entry.get("dm")  # a delete marker may use the reserve, as its record does

        async def one(i: int) -> int | None:
            d = disks[i]
            if d is None:
                return None
            try:
                await d.write_file(mp, self._disk_meta(bucket, key, entry, i, inline[i]), sync=self.sync,
                                   new_data=new_data)
                return i
            except errors.DiskFull as exc:
                log.info("disk %s: %s", d.endpoint, exc)
                if full is not None:
                    full.add(i)
                return None
            except errors.DiskError as exc:
                log.warning("disk %s: %s", d.endpoint, exc)
                return None

        calls = {asyncio.ensure_future(one(i)): i for i in range(len(disks))}
        await hedge.until_quorum(calls, self._write_quorum(entry["k"], entry["m"]),
                                 lambda f: f.result() is not None,
                                 lambda f, i, lag: self.lagging_call(f, disks[i], lag, [
                                     disks[j] for g, j in calls.items()
                                     if g.done() and not g.cancelled() and g.result() is not None]),
                                 lambda i: self.known_slow(disks[i]),
                                 lambda slots: self.kept_up(disks[i] for i in slots))
        return sorted(i for f, i in calls.items() if f.done() and f.result() is not None)

    async def _commit_streamed(self, bucket, key, entry, stage, disks, slots: list[int],
                               moves: list[tuple[str, str]]) -> list[int]:
        """One call per disk: move the data into place, then write that disk's metadata."""
        mp = paths.meta_path(bucket, key, entry["wid"])

        async def one(i: int) -> int | None:
            d = disks[i]
            try:
                await d.rename_data(moves, (mp, self._disk_meta(bucket, key, entry, i)), sync=self.sync,
                                    cleanup=stage)
                return i
            except errors.DiskError as exc:
                log.warning("disk %s: %s", d.endpoint, exc)
                return None

        return [i for i in await asyncio.gather(*(one(i) for i in slots)) if i is not None]

    async def _publish(self, bucket: str, key: str, entry: dict, opts: PutOptions,
                       disks: list, ok: list[int], finished_upload: str | None = None,
                       small: bytes | None = None, full: int = 0) -> None:
        """Quorum check, then the registry commit under the key lock, then old-data cleanup.
        ``full``: slots refused for want of space (a quorum without them: ``StorageFull``)."""
        k, m = entry["k"], entry["m"]
        if len(ok) < self._write_quorum(k, m):
            await self._remove_write(bucket, key, entry["wid"], disks, in_log=smalllog.uses_log(entry),
                                     locs=entry.get(smalllog.LOG_FIELD))
            if len(ok) + full >= self._write_quorum(k, m):
                raise errors.StorageFull()
            raise errors.WriteQuorumLost(
                f"Write quorum lost: {len(ok)} of {k + m} disks stored the object, "
                f"{self._write_quorum(k, m)} needed")
        conditional = opts.if_none_match or opts.if_match is not None
        lease = self.catalog.key_lease(bucket, key) if conditional else contextlib.nullcontext()
        async with self.locks.hold((bucket, key)), lease:  # a cluster: across nodes too
            try:
                bucket_rec = await self._require_bucket(bucket)
                versioned = versions.versioning_of(bucket_rec) is not None
                # An unconditional write to an unversioned bucket needs no read of the key first:
                # its commit says which write it replaced (one node: read in the same LMDB write
                # transaction; a cluster: the replicas say so as they merge it, which saves a
                # quorum read, one or two peer calls).
                blind = not conditional and not versioned
                if conditional and versioned:
                    # The check and the commit in one step (a cluster: under the key's lock on
                    # its replicas, so no write lands between them).
                    replaced = await self.catalog.put_version_checked(
                        bucket, key, entry, lambda cur: self._judge(bucket, key, opts, cur, at_commit=True),
                        small=small, finished_upload=finished_upload)
                elif conditional:
                    old = await self.catalog.put_object_checked(
                        bucket, key, entry, lambda cur: self._judge(bucket, key, opts, cur, at_commit=True),
                        small=small, finished_upload=finished_upload)
                    replaced = [old] if old is not None and old["wid"] != entry["wid"] else []
                elif versioned:
                    replaced = await self.catalog.put_version(bucket, key, entry, small=small,
                                                              finished_upload=finished_upload)
                elif blind:
                    displaced = await self.catalog.put_object(bucket, key, entry, small=small,
                                                              finished_upload=finished_upload, displaced=True)
                    if displaced is None:
                        log.info("%s/%s: a replica did not say which write this one replaced; "
                                 "its data is left to the orphan sweep", bucket, key)
                    replaced = displaced or []
            except errors.BucketsError as exc:  # precondition failed, or the bucket was deleted under us
                if self.cluster is not None and isinstance(exc, errors.WriteQuorumLost) \
                        and not getattr(exc, "undone", False):
                    # The index entry may have reached some replicas and can still win: keep the
                    # data it points to (the orphan sweep removes it if no entry ever does).
                    # ``undone``: it was taken back wherever it landed, so the data goes now.
                    raise
                if self.cluster is not None and isinstance(exc, errors.WriteQuorumLost):
                    log.info("%s/%s: the failed write %s was undone on every index replica that took it: "
                             "its data is removed", bucket, key, entry["wid"])
                # Its records are released only where the entry is known to be nowhere: on one
                # node, or undone on every replica (another refusal may have left a copy of the
                # entry on a replica, which a kill record leaves readable and a release would not).
                certain = self.cluster is None or getattr(exc, "undone", False)
                await self._remove_write(bucket, key, entry["wid"], disks, in_log=smalllog.uses_log(entry),
                                         locs=entry.get(smalllog.LOG_FIELD) if certain else None)
                if self.catalog.get_bucket(bucket) is None:  # our rename re-created its directory
                    await self._on_disks(lambda d: d.delete(paths.bucket_dir(bucket), recursive=True), disks)
                raise
        if len(ok) < k + m:
            # Only once committed: a heal started before would read the key while the write's
            # fate is open (on a cluster that read makes a failed write's index merge one that
            # can no longer be undone: ``IndexReplica.retract``; on one node it found the old
            # entry and healed nothing).
            # Quiet when every slot left out is on a disk known offline (its going offline was
            # logged, and each write meanwhile is degraded alike: a line per write said nothing).
            taken = set(ok)
            offline = all(disks[i] is None or not disks[i].online or self.known_slow(disks[i])
                          for i in range(k + m) if i not in taken)
            self.report_damage(bucket, key, entry["wid"], f"written to {len(ok)} of {k + m} disks", quiet=offline)
        for old in replaced:
            if old["wid"] != entry["wid"]:
                removal = self.remove_replaced(bucket, key, old, smalllog.uses_log(old))
                if removal is not None:
                    self._spawn(removal)
        if self.cluster is not None:
            await self._follow_table(bucket, key, entry)

    async def _follow_table(self, bucket: str, key: str, entry: dict) -> None:
        """A cluster's write placed under a partition table that changed before it committed
        (a membership change ran meanwhile; a multipart upload's disks are chosen when it is
        created, maybe days before) moves itself to the current table now, before it is
        acknowledged, as the migration would (``StoreMover.move``): the migration may have
        finished before this entry existed, and the object would then name a disk that left
        the cluster. One table lookup per write when nothing changed."""
        if list(self.table.object_disks(bucket, key, entry["k"] + entry["m"])) == list(entry["disks"]):
            return
        from buckets.cluster.migration import ensure_coordinator

        coordinator = ensure_coordinator(self)
        if coordinator is None:
            return
        generation = self.table.generation
        target = coordinator.mover.target(bucket, key, entry, generation)
        if target is None:
            return

        async def unpaced(_: int) -> None:
            return None

        try:
            outcome = await coordinator.mover.move(bucket, key, entry, target, generation, unpaced)
            if outcome.status == "moved":  # a versioned write: its version record follows it
                record = await coordinator.mover.move_record(bucket, key, entry, generation, unpaced)
                if record is not None and record.status == "failed":
                    log.warning("%s/%s: moving the version record of the write to generation %d failed: %s",
                                bucket, key, generation, record.error)
        except Exception as exc:  # noqa: BLE001 - committed: the next migration pass moves it
            outcome = None
            log.warning("%s/%s: moving the write to generation %d failed: %s", bucket, key, generation, exc)
        if outcome is not None and outcome.status == "failed":
            log.warning("%s/%s: moving the write to generation %d failed: %s", bucket, key, generation, outcome.error)
        elif outcome is not None:
            log.info("%s/%s: written under an older table, %s to generation %d", bucket, key, outcome.status,
                     generation)

    def read_started(self, ident: tuple[str, str, str]) -> None:
        slot = self._active_reads.get(ident)
        if slot is None:
            self._active_reads[ident] = [1, asyncio.Event()]
        else:
            slot[0] += 1

    def read_finished(self, ident: tuple[str, str, str]) -> None:
        slot = self._active_reads.get(ident)
        if slot is None:
            return
        slot[0] -= 1
        if slot[0] <= 0:
            del self._active_reads[ident]
            slot[1].set()

    def remove_replaced(self, bucket: str, key: str, old: dict,
                        in_log: bool | None = None) -> Coroutine[Any, Any, None] | None:
        """The removal of the data of ``old``, a write that a write or a delete just replaced: a
        coroutine to run now, or None when it waits (on a cluster, a write made moments ago may
        still be merged again by its writer, and be the key's state: engine/replaced.py). Not
        while the node is short of space or a disk is near full: the space is wanted now."""
        if getattr(self.catalog, "replicated", False) and self.replaced.may_come_back(old) \
                and not (space.short_of_space(self) or space.releases_space(self)):
            self.replaced.add(bucket, key, old, in_log)
            return None
        return self._remove_write(bucket, key, old["wid"], self.disks_for(old["disks"]), in_log=in_log,
                                  locs=old.get(smalllog.LOG_FIELD))

    async def _remove_write(self, bucket: str, key: str, wid: str, disks: list,
                            *, wait_readers: float = 3600.0, in_log: bool | None = None,
                            locs: list | None = None, kill: bool = True) -> None:
        """Delete one write's files once no GET is streaming them; metadata first, so no
        metadata outlives its data. A write in the disks' logs (``in_log``; None: not known, so
        both when the log is on, or when ``locs`` says it is one) gets a kill record on each
        disk instead (engine/smalllog.py), and its records at ``locs`` (the entry's ``lg``) give
        their space back at once. ``kill``: False when the kill records were written already (a
        version removed by id). (A write made with the log on and removed after a restart with
        it off got no kill record: a registry rebuild then found its records and brought it
        back.)"""
        slot = self._active_reads.get((bucket, key, wid))
        if slot is not None:
            try:
                await wait_for(slot[1].wait(), wait_readers)
            except asyncio.TimeoutError:
                log.warning("removing %s/%s write %s with a reader still attached", bucket, key, wid)

        if kill and (in_log or (in_log is None and (self.small_log or bool(locs)))):
            await smalllog.kill(self, bucket, key, wid, disks)
        if locs and space.releases_space(self):
            await smalllog.release(self, wid, disks, locs)
        if in_log and self.cluster is None:
            return  # a log write has no files (on a cluster, compaction and heal may make some)

        async def one(d) -> None:
            meta = paths.meta_path(bucket, key, wid)
            await d.delete(meta)
            # fan-out directories are kept: pruning one could race another key's rename into it
            await d.delete(paths.data_dir(bucket, key, wid), recursive=True)

        await self._on_disks(one, disks)

    async def head_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        entry = await versions.lookup_version(self, bucket, key, version_id)
        return entry_to_info(bucket, key, entry)

    async def object_access(self, bucket: str, key: str, version_id: str | None = None) -> dict | None:
        """The object's owner and ACL (``{"own": ..., "acl": ...}``), None if no object (or the
        current version is a delete marker)."""
        if version_id is None:
            entry = await self.catalog.get_object(bucket, key)
        else:
            versions.check_version_id(version_id)
            entry = await self.catalog.get_version(bucket, key, version_id)
        if entry is None or entry.get("dm"):
            return None
        return {"own": entry.get("own"), "acl": entry.get("acl")}

    async def set_object_access(self, bucket: str, key: str, access: dict, version_id: str | None = None) -> None:
        """Replace an object version's ACL (PutObjectAcl): in the catalog, and in its metadata
        file on each of its disks, so that a registry rebuild keeps it."""
        await self.update_object(bucket, key, version_id, access=access)

    def _check_delete_quorum(self, entry: dict) -> None:
        # Like a write: the disks that would keep the shards must not be a majority
        # (a registry rebuild would bring the key back from them).
        online = sum(1 for d in self.disks_for(entry["disks"]) if d is not None)
        if online < self._write_quorum(entry["k"], entry["m"]):
            raise errors.WriteQuorumLost(
                f"Write quorum lost: {online} of {entry['k'] + entry['m']} disks of this object are "
                f"online, {self._write_quorum(entry['k'], entry['m'])} needed to delete it")

    async def _lookup(self, bucket: str, key: str, *, read: bool = False) -> dict:
        entry = await self.catalog.get_object(bucket, key, read=read)
        if entry is None:
            await self._require_bucket(bucket)
            raise errors.NoSuchKey(resource=f"/{bucket}/{key}", Key=key)
        return entry

    async def get_object(self, bucket: str, key: str, range: tuple[int | None, int | None] | None = None,
                         part_number: int | None = None, customer_key: bytes | None = None,
                         version_id: str | None = None, *, begin: bool = False,
                         check: Callable[[ObjectInfo], None] | None = None) -> ObjectReader:
        """A reader of the object (or a range, or a part; the current version or
        ``version_id``'s). An encrypted object's data key is opened first: an SSE-C object
        needs ``customer_key`` (missing: 400, wrong: 403).

        ``begin``: its first chunk is read before it is returned (``ObjectReader.begin``), so
        what would fail the read fails here. A write replaced or deleted between the lookup and
        that read (on a cluster, through another node: its data is removed without waiting for
        this node's GETs) is not an error: the key is looked up again and that read is returned,
        up to ``READ_ATTEMPTS`` lookups. ``check``: called with each lookup's object before
        its bytes are read (a GET's conditions), and may raise."""
        attempt = 0
        while True:  # (``range`` is the byte range asked for here)
            attempt += 1
            reader = await self._open_reader(bucket, key, range, part_number, customer_key, version_id)
            if not begin:
                return reader
            try:
                if check is not None:
                    check(reader.info)
                await reader.begin()
                return reader
            except errors.WriteReplaced as exc:
                await reader.aclose()
                if attempt == READ_ATTEMPTS:
                    raise
                log.info("%s/%s: %s; reading it again", bucket, key, exc)
            except BaseException:
                await reader.aclose()
                raise

    async def _open_reader(self, bucket: str, key: str, range: tuple[int | None, int | None] | None,
                           part_number: int | None, customer_key: bytes | None,
                           version_id: str | None) -> ObjectReader:
        entry = await versions.lookup_version(self, bucket, key, version_id, read=True)
        info = entry_to_info(bucket, key, entry)
        data_key = crypto.open_data_key(self, entry.get("sse"), bucket, key, customer_key)
        rng = None
        if part_number is not None:
            rng = _part_range(entry, part_number)
        elif range is not None:
            rng = resolve_range(range, info.size)
        return ObjectReader(self, bucket, key, entry, info, rng, data_key=data_key, version_id=version_id)

    async def list_objects(self, bucket: str, prefix: str = "", delimiter: str = "",
                           start_after: str = "", limit: int = 1000) -> ListResult:
        await self._require_bucket(bucket)
        if limit <= 0:
            return ListResult([], [], False, None)
        items, prefixes, truncated = await self.catalog.list_objects(
            bucket, prefix, delimiter, start_after, limit)
        objects = [entry_to_listing(bucket, k, e) for k, e in items]
        next_marker = None
        if truncated:
            last_obj = objects[-1].key if objects else ""
            last_cp = prefixes[-1] if prefixes else ""
            next_marker = max(last_obj.encode(), last_cp.encode()).decode()
        return ListResult(objects, prefixes, truncated, next_marker)

    # -- versions, delete markers, tags, object lock (see versions.py) -----------------------
    from buckets.engine.versions import (  # noqa: E402  (methods defined in their own module)
        delete_object, list_object_versions, set_versioning, update_object,
    )

    # -- multipart (see multipart.py) ------------------------------------------------------
    from buckets.engine.multipart import (  # noqa: E402  (methods defined in their own module)
        abort_multipart_upload, complete_multipart_upload, create_multipart_upload,
        list_multipart_uploads, list_parts, put_part,
    )

    # -- status ---------------------------------------------------------------------------
    async def disk_infos(self) -> list[DiskInfo]:
        return list(await asyncio.gather(*(d.info() for d in self.disks)))


def resolve_range(rng: tuple[int | None, int | None], size: int) -> ByteRange:
    first, last = rng
    if first is None:
        if last is None or last <= 0:
            raise errors.InvalidRange(ActualObjectSize=str(size))
        return ByteRange(max(0, size - last), size)
    if first >= size:
        raise errors.InvalidRange(ActualObjectSize=str(size))
    end = size if last is None else min(last + 1, size)
    if end <= first:
        raise errors.InvalidRange(ActualObjectSize=str(size))
    return ByteRange(first, end)


def _part_range(entry: dict, number: int) -> ByteRange:
    offset = 0
    for p in entry["parts"]:
        size = crypto.part_plain_size(entry, p[1])
        if p[0] == number:
            return ByteRange(offset, offset + size)
        offset += size
    if number == 1 and entry["size"] == 0:
        return ByteRange(0, 0)
    raise errors.InvalidPartNumber()
