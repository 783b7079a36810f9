"""The migration engine: after a topology change, move every object to the current generation.

A generation change (add-node, remove-node, a disk reweight) commits a new partition table;
new writes use it at once, but existing objects stay where their registry entry says
(``entry["disks"]``) until this engine moves them. It runs as one job in the control plane,
``jobs["migration"]``, whose value is plain data:

    {from_gen, to_gen, state: running | paused | done,
     throttle: {bytes_per_s, objects}, cursor: [bucket, key] | None, pass, phase: plan | move,
     moved_objects, moved_bytes, skipped, errors, rebuilt, planned: {objects, bytes},
     pass_objects, pass_bytes, pass_errors, nodes: {node: {objects_in, bytes_in, objects_out, bytes_out}},
     rate: {bytes_per_s, objects_per_s}, owner: {node, token}, started, updated, finished, last_error}

Every node runs a ``MigrationCoordinator``; only the control plane's leader works. It claims
the job (``owner`` with a fresh token, written with a compare-and-set on the job's version),
and every checkpoint is a compare-and-set too: the checkpoint re-reads the job, keeps the
fields the operator owns (``state``, ``throttle``) and refuses to write if another
coordinator has claimed the job since, so two coordinators never both progress. A new
leader (after a restart or a kill -9) claims the job and resumes from its cursor.

A pass (``pass``) is a plan then a walk. The plan lists every bucket's index and counts the
objects whose disks differ from the new table's (``planned``: objects and shard bytes, the
remaining estimate and ETA). The walk goes through the buckets in name order and each
bucket's keys in order (the cursor is the last key below which everything is done; moves of
a page run concurrently, bounded by the throttle's ``objects``), and for each such object:

1. ``engine.move.copy_shards`` copies (or rebuilds from parity) the shard of each changed slot
   onto its new disk, streaming and verifying, through the throttle's token bucket;
2. the entry with the new disks is committed with the version ``[hlc, wid, to_gen]``: the old
   version plus the generation, which is newer than exactly the version it moved and older
   than any later overwrite or delete (``ReplicatedIndex.put_version``);
3. the entry is read back: if it is the moved one, the vacated shards are deleted after a
   grace delay (a reader that looked the entry up a moment before still finds them); if an
   overwrite or delete won, the copies are deleted; if the outcome is unknown (the index lost
   its quorum), both are kept and the object counts as an error, retried by the next pass.

A pass that finds nothing to move ends the job (``done``). Objects written under the old
table by a node that had not applied the new generation yet are caught by the next pass.

Pause, resume and throttle are changes of the job (``update_job``), seen by the
coordinator within ``POLL`` seconds: a pause cancels the moves in flight (their copies are
discarded; the cursor has not passed them, so they are redone on resume).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from buckets import errors
from buckets.registry.store import entry_version
from buckets.errors import define_error
from buckets.obs.metrics import NodeCollector
from buckets.runtime import cancel_and_wait, wait_for

log = logging.getLogger("buckets.migration")

JOB_KEY = "migration"
RUNNING, PAUSED, DONE = "running", "paused", "done"
ACTIVE_STATES = (RUNNING, PAUSED)
POLL = 0.25  # seconds between looks at the job (pause, resume, throttle, leadership)
CHECKPOINT_EVERY = 1.0  # seconds between progress checkpoints while moving
PAGE = 256  # index entries per listing page
DEFAULT_THROTTLE = {"bytes_per_s": 64 << 20, "objects": 4}
ADOPT_WAIT = 10.0  # seconds a run waits for this node to adopt the generation it migrates to
MAX_OBJECTS = 64
# How long vacated shards stay after their object moved, for readers that looked the entry
# up just before (a GET streaming from another node holds the old disk list while it reads).
DEFAULT_GRACE = float(os.environ.get("BUCKETS_MIGRATION_GRACE", "30"))
MAX_BACKOFF = 60.0

MigrationInProgress = define_error(
    "MigrationInProgress", "MigrationInProgress", 409,
    "A migration is in progress: run the next topology change once migration-status says done.")
NoMigration = define_error("NoMigration", "NoSuchMigration", 404, "No migration has been started in this cluster.")
MigrationFinished = define_error("MigrationFinished", "MigrationFinished", 409,
                                 "The migration is done: there is nothing to pause or resume.")


class Superseded(Exception):
    """Another coordinator claimed the job (or it was replaced): this one stops."""


# --- the job ---------------------------------------------------------------------------------
def check_throttle(doc: Any, current: dict | None = None) -> dict:
    """``{bytes_per_s, objects}``: bytes per second (0: unlimited) and objects moved at once."""
    if not isinstance(doc, dict):
        raise errors.InvalidArgument("throttle must be a JSON object {\"bytes_per_s\": ..., \"objects\": ...}")
    unknown = set(doc) - {"bytes_per_s", "objects"}
    if unknown:
        raise errors.InvalidArgument(f"unknown throttle field(s): {', '.join(sorted(unknown))}")
    out = dict(current or DEFAULT_THROTTLE)
    if "bytes_per_s" in doc:
        value = doc["bytes_per_s"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 1 << 40:
            raise errors.InvalidArgument("bytes_per_s must be an integer from 0 (unlimited) to 2^40")
        out["bytes_per_s"] = value
    if "objects" in doc:
        value = doc["objects"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OBJECTS:
            raise errors.InvalidArgument(f"objects must be an integer from 1 to {MAX_OBJECTS}")
        out["objects"] = value
    return out


def new_job(from_gen: int, to_gen: int, *, throttle: dict | None = None, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    return {"from_gen": from_gen, "to_gen": to_gen, "state": RUNNING,
            "throttle": check_throttle(throttle or {}), "cursor": None, "pass": 1, "phase": "plan",
            "moved_objects": 0, "moved_bytes": 0, "skipped": 0, "errors": 0, "rebuilt": 0,
            "planned": None, "pass_objects": 0, "pass_bytes": 0, "pass_errors": 0, "nodes": {},
            "rate": {"bytes_per_s": 0.0, "objects_per_s": 0.0}, "owner": None,
            "started": now, "updated": now, "finished": None, "last_error": None}


def migration_in_progress(snapshot: Any) -> bool:
    """Whether the control-plane snapshot has a migration that is not done (running or paused)."""
    record = snapshot.jobs.get(JOB_KEY)
    return record is not None and isinstance(record.value, dict) and record.value.get("state") in ACTIVE_STATES


async def start_migration(node: Any, from_gen: int, to_gen: int, *, throttle: dict | None = None) -> dict:
    """Put the job that moves objects from ``from_gen`` to ``to_gen`` (after the generation was
    committed). Refuses with ``MigrationInProgress`` while another one is not done; a finished
    job is replaced. Returns the job's value."""
    control = node.control
    for _ in range(5):
        record = control.snapshot.jobs.get(JOB_KEY)
        if record is not None and isinstance(record.value, dict) and record.value.get("state") in ACTIVE_STATES:
            if record.value.get("to_gen") == to_gen:
                return dict(record.value)  # a retry of this very start
            raise MigrationInProgress(f"the migration to generation {record.value.get('to_gen')} is "
                                      f"{record.value.get('state')}")
        keep = dict(record.value.get("throttle") or {}) if record is not None and isinstance(record.value, dict) else {}
        value = new_job(from_gen, to_gen, throttle=throttle if throttle is not None else keep)
        try:
            await control.apply("put_job", key=JOB_KEY, value=value,
                                expected_version=record.version if record is not None else 0)
        except errors.BucketsError as exc:
            if exc.code == "VersionConflict":
                await control.read(linearizable=True)
                continue
            raise
        log.info("migration from generation %d to %d started", from_gen, to_gen)
        return value
    raise MigrationInProgress("the migration job kept changing while it was being started")


async def update_job(control: Any, change: Callable[[dict], dict]) -> dict:
    """Apply an operator's change (pause, resume, throttle) with a compare-and-set, retried
    while the coordinator's checkpoints move the version on. ``change`` gets a copy of the
    value and returns the new one (or raises a typed error)."""
    for _ in range(20):
        record = control.snapshot.jobs.get(JOB_KEY)
        if record is None or not isinstance(record.value, dict):
            raise NoMigration()
        value = change(dict(record.value))
        value["updated"] = time.time()
        try:
            await control.apply("put_job", key=JOB_KEY, value=value, expected_version=record.version)
            return value
        except errors.BucketsError as exc:
            if exc.code != "VersionConflict":
                raise
            await control.read(linearizable=True)
    raise errors.ServiceUnavailable("the migration job kept changing; try again")


def pause(value: dict) -> dict:
    if value.get("state") == DONE:
        raise MigrationFinished()
    return dict(value, state=PAUSED)


def resume(value: dict) -> dict:
    if value.get("state") == DONE:
        raise MigrationFinished()
    return dict(value, state=RUNNING)


def status_of(value: dict | None, now: float | None = None) -> dict:
    """The operator's view of a job value: progress, remaining estimate, rate and ETA."""
    if value is None:
        return {"state": "none"}
    now = time.time() if now is None else now
    planned = value.get("planned") or {}
    rate = value.get("rate") or {}
    remaining_objects = remaining_bytes = None
    if value.get("state") == DONE:
        remaining_objects = remaining_bytes = 0
    elif planned:
        done_objects = value.get("pass_objects", 0) + value.get("pass_errors", 0)
        remaining_objects = max(0, planned.get("objects", 0) - done_objects)
        remaining_bytes = max(0, planned.get("bytes", 0) - value.get("pass_bytes", 0))
    eta = None
    if remaining_bytes is not None and value.get("state") == RUNNING and rate.get("bytes_per_s"):
        eta = round(remaining_bytes / rate["bytes_per_s"], 1)
    elif remaining_bytes == 0:
        eta = 0.0
    keys = ("from_gen", "to_gen", "state", "throttle", "pass", "phase", "cursor", "moved_objects", "moved_bytes",
            "skipped", "errors", "rebuilt", "planned", "nodes", "started", "updated", "finished", "last_error")
    out = {k: value.get(k) for k in keys}
    out.update(remaining_objects=remaining_objects, remaining_bytes=remaining_bytes, rate=rate, eta_seconds=eta,
               coordinator=(value.get("owner") or {}).get("node"),
               elapsed_seconds=round((value.get("finished") or now) - value.get("started", now), 1))
    return out


# --- throttle ----------------------------------------------------------------------------------
class TokenBucket:
    """Bytes per second, with a one-second burst; the rate changes at run time (0: unlimited).
    ``take(n)`` waits until ``n`` bytes may pass; a wait is cut in steps of at most
    ``max_wait`` so a rate change (or a pause, which cancels the taker) is seen quickly."""

    def __init__(self, rate: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, max_wait: float = 0.2) -> None:
        self._clock = clock
        self._sleep = sleep
        self.max_wait = max_wait
        self.rate = 0
        self.tokens = 0.0
        self._stamp = clock()
        self.set_rate(rate)

    def set_rate(self, rate: int) -> None:
        self._refill()
        self.rate = max(0, int(rate))
        self.tokens = min(self.tokens, float(self.rate))

    def _refill(self) -> None:
        now = self._clock()
        if self.rate:
            self.tokens = min(float(self.rate), self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, n: int) -> None:
        while True:
            self._refill()
            if not self.rate:
                return
            # A request bigger than the burst passes once the bucket is full, leaving a debt.
            if self.tokens >= min(n, self.rate) - 1e-6:  # (a float sum may land a hair below)
                self.tokens -= n
                return
            need = min(n, self.rate) - self.tokens
            await self._sleep(min(self.max_wait, max(need / self.rate, 0.001)))


_WAKERS: set[asyncio.Task] = set()  # Limiter.release_soon's tasks, kept until they ran


class Limiter:
    """A semaphore whose size changes at run time (objects moved at once)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0
        self._cond = asyncio.Condition()

    async def set_limit(self, limit: int) -> None:
        async with self._cond:
            self.limit = max(1, limit)
            self._cond.notify_all()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def release(self) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def release_soon(self) -> None:
        """``release`` from a done callback (no await there): the count at once, the waiters
        woken by a task."""
        self.active -= 1
        task = asyncio.get_running_loop().create_task(self._wake())
        _WAKERS.add(task)
        task.add_done_callback(_WAKERS.discard)

    async def _wake(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def idle(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active == 0)


class Window:
    """The keys of one bucket being moved, in walk order: the cursor is the last key below
    which every key is finished."""

    def __init__(self, start: str | None) -> None:
        self.cursor = start
        self._order: list[str] = []
        self._done: set[str] = set()

    def add(self, key: str) -> None:
        self._order.append(key)

    def finish(self, key: str) -> None:
        self._done.add(key)
        while self._order and self._order[0] in self._done:
            first = self._order.pop(0)
            self._done.discard(first)
            self.cursor = first


# --- what the coordinator moves (the data plane) ------------------------------------------------
@dataclass(slots=True)
class MoveOutcome:
    status: str  # moved | skipped (overwritten, deleted, nothing to do) | failed
    bytes: int = 0
    rebuilt: int = 0
    into: dict[str, int] = field(default_factory=dict)  # node -> shard bytes written there
    out_of: dict[str, int] = field(default_factory=dict)  # node -> shard bytes vacated there
    error: str | None = None


class Mover(Protocol):
    """The data plane as the coordinator sees it (``StoreMover`` in a cluster)."""

    def buckets(self) -> list[str]: ...
    async def page(self, bucket: str, after: str, limit: int) -> tuple[list[tuple[str, dict]], bool]: ...
    def target(self, bucket: str, key: str, entry: dict, to_gen: int) -> list[str] | None: ...
    def shard_bytes(self, entry: dict, target: list[str]) -> int: ...
    def pending_indexes(self, to_gen: int) -> list[str]: ...
    async def prepare_bucket(self, bucket: str, to_gen: int) -> None: ...
    async def move(self, bucket: str, key: str, entry: dict, target: list[str], to_gen: int,
                   pace: Callable[[int], Awaitable[None]]) -> MoveOutcome: ...
    async def sweep(self, bucket: str, key: str, entry: dict) -> None: ...
    async def drain(self) -> None: ...
    async def close(self) -> None: ...


class StoreMover:
    """Moves objects of one cluster node's store: index listing and quorum reads through the
    catalog, shard copies through ``engine.move``, the commit through the replicated index."""

    def __init__(self, node: Any, store: Any, *, grace: float = DEFAULT_GRACE) -> None:
        self.node = node
        self.store = store
        self.grace = grace
        self._tables: dict[int, Any] = {}
        self._vacate: list[tuple[float, str, str, str, list[str], list | None, bool]] = []
        self._vacate_wakeup = asyncio.Event()
        self._vacate_task: asyncio.Task | None = None

    # -- listing ----------------------------------------------------------------------------------
    def buckets(self) -> list[str]:
        """Every bucket, and after each versioned one its versions (a shadow bucket of the index
        whose records are the noncurrent versions' entries: their shards move too)."""
        from buckets.cluster.catalog import VERSIONS

        out = []
        for name, rec in sorted(self.node.control.snapshot.buckets.items(), key=lambda kv: kv[0].encode()):
            out.append(name)
            if rec.settings.get("versioning") is not None:
                out.append(name + VERSIONS)
        return out

    async def page(self, bucket: str, after: str, limit: int) -> tuple[list[tuple[str, dict]], bool]:
        objects, _prefixes, truncated = await self.store.catalog.index.list(
            bucket, "", "", after, limit, full=True, markers=True)
        return objects, truncated

    @staticmethod
    def _real(bucket: str, key: str) -> tuple[str, str]:
        """The S3 bucket and key an index record names (a version record: its object's)."""
        if "\x01" in bucket:
            return bucket.split("\x01", 1)[0], key.split("\0", 1)[0]
        return bucket, key

    def _table(self, generation: int):
        table = self._tables.get(generation)
        if table is None:
            table = self._tables[generation] = self.node.control.snapshot.topology.partition_table(generation)
        return table

    def target(self, bucket: str, key: str, entry: dict, to_gen: int) -> list[str] | None:
        n = entry["k"] + entry["m"]
        row = list(self._table(to_gen).object_disks(*self._real(bucket, key), n))
        return None if row == list(entry["disks"]) else row

    def shard_bytes(self, entry: dict, target: list[str]) -> int:
        from buckets.engine.move import changed_slots, needs_rewrite

        slots = len(target) if needs_rewrite(entry, target) else len(changed_slots(entry, target))
        k = entry["k"]
        per_slot = sum((p[1] + k - 1) // k for p in entry.get("parts", ())) or (entry.get("size", 0) + k - 1) // k
        return per_slot * slots

    def node_of(self, disk_id: str) -> str:
        topology = self.node.control.snapshot.topology
        for n in topology.nodes:
            if any(d.disk_id == disk_id for d in n.disks):
                return n.node_id
        return "?"

    async def ready(self, to_gen: int) -> None:
        """Until this node adopted generation ``to_gen`` (a client and RemoteDisks for each new
        node): the job and the topology come through the same control-plane log, but the node
        adopts the topology on its own, and a run that began first failed on the new node's
        missing client (then started again, from its checkpoint)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ADOPT_WAIT
        while (getattr(getattr(self.node, "topology", None), "generation", to_gen) or 0) < to_gen:
            if loop.time() > deadline:
                raise errors.ServiceUnavailable(f"generation {to_gen} is not adopted on this node yet")
            await asyncio.sleep(0.02)

    def pending_indexes(self, to_gen: int) -> list[str]:
        """Buckets whose index replicas are not on ``to_gen``'s replica set yet."""
        pending = getattr(self.store.catalog, "buckets_to_move", None)
        return list(pending(to_gen)) if pending is not None else []

    async def prepare_bucket(self, bucket: str, to_gen: int) -> None:
        """Move the bucket's index replicas first, so the entries' commits land on the new
        replica set (``ClusterCatalog.move_bucket_index``; resumable, a no-op once moved)."""
        catalog = self.store.catalog
        move_index = getattr(catalog, "move_bucket_index", None)
        if move_index is None:
            return
        kwargs = {}
        if getattr(catalog, "wait_applied", None) is None:
            kwargs["wait_applied"] = self._wait_applied()
        try:
            await move_index(bucket, to_gen, **kwargs)
        except errors.NoSuchBucket:
            pass  # deleted meanwhile: nothing to move

    def _wait_applied(self):
        """Until every live node applied a control-plane change (the index move's barrier),
        asking each node's ``migration/applied`` (registered by ``ensure_coordinator``); used
        when the node did not give its catalog one of its own."""
        from buckets.cluster.catalog import applied_waiter

        node = self.node
        me = getattr(node, "node_id", None) or node.spec.me.url

        async def ask(node_id: str) -> int:
            if node_id == me:
                return node.control.snapshot.applied
            client = node.clients.get(node_id)
            if client is None:
                raise errors.ServiceUnavailable(f"no peer client for {node_id}")
            return int((await client.call("migration", "applied", {}, timeout=5.0))["applied"])

        return applied_waiter(lambda: node.control.snapshot, ask)

    # -- one object -------------------------------------------------------------------------------
    async def move(self, bucket: str, key: str, entry: dict, target: list[str], to_gen: int,
                   pace: Callable[[int], Awaitable[None]]) -> MoveOutcome:
        from buckets.engine.move import copy_shards, remove_shards

        store = self.store
        # The bucket read from: a deleted one's entry is not moved into a bucket created again
        # under its name meanwhile (its replicas refuse it: ``IndexReplica._refuse_other``).
        created_of = getattr(store.catalog.index, "created_of", None)
        created = created_of(bucket) if created_of is not None else None
        fresh = await store.catalog.index.get(bucket, key)  # a quorum read: the version to move
        if fresh is None or fresh.get("wid") != entry.get("wid"):
            return MoveOutcome("skipped")
        entry = fresh
        target = self.target(bucket, key, entry, to_gen)
        if target is None:
            return MoveOutcome("skipped")
        # An entry a single node wrote before it became a cluster has no index version: its
        # version is the one derived from its mtime, as every replica compares it.
        ts = entry.get("ts") or list(entry_version(entry))
        if not isinstance(ts, (list, tuple)) or len(ts) < 2:
            return MoveOutcome("failed", error=f"{bucket}/{key}: the entry has no version to move")
        real_bucket, real_key = self._real(bucket, key)
        copy = await self._follow_key(real_bucket, real_key, entry, target) if bucket != real_bucket else None
        if copy is None:
            copy = await copy_shards(store, real_bucket, real_key, entry, target, to_gen, pace=pace)
        version = [ts[0], ts[1], to_gen]
        old, new = list(entry["disks"]), list(target)
        left = range(len(old)) if copy.wid != entry["wid"] else [i for i in range(len(old)) if old[i] not in new]
        vacated = [old[i] for i in left]
        records = entry.get("lg")  # a log write's records on the vacated disks: released with them
        vacated_locs = [records[i] if i < len(records) else None for i in left] if isinstance(records, list) else None
        # What the move leaves behind, so a coordinator that takes over after a crash can
        # remove it (the delayed removal below lives in this process only).
        committed = dict(copy.entry, ts=version, moved_from={"wid": entry["wid"], "disks": vacated})
        uncertain: str | None = None
        try:
            await self._put_version(bucket, key, committed, version, created)
        except (errors.BucketsError, asyncio.TimeoutError) as exc:
            uncertain = f"{bucket}/{key}: committing the moved entry: {exc or type(exc).__name__}"
        try:
            current = await store.catalog.index.get(bucket, key)
        except (errors.BucketsError, asyncio.TimeoutError) as exc:
            return MoveOutcome("failed", error=uncertain or f"{bucket}/{key}: reading the moved entry back: {exc}")
        if current is not None and current.get("wid") == copy.wid and list(current.get("disks", ())) == new:
            self._schedule_vacate(real_bucket, real_key, entry["wid"], vacated, vacated_locs)
            per = copy.bytes // max(1, len(copy.slots))
            into: dict[str, int] = {}
            out_of: dict[str, int] = {}
            for i in copy.slots:
                into[self.node_of(new[i])] = into.get(self.node_of(new[i]), 0) + per
                if old[i] not in new or copy.rewritten:
                    out_of[self.node_of(old[i])] = out_of.get(self.node_of(old[i]), 0) + per
            return MoveOutcome("moved", copy.bytes, len(copy.rebuilt), into, out_of)
        if current is None or current.get("wid") not in (entry["wid"], copy.wid):
            # An overwrite or a delete won (a newer hlc: it stays the winner). Its writer removed
            # the files of the entry it replaced: the one before the move, or the moved one (it
            # landed between the commit and this read), which the move cannot tell apart. Remove
            # the rest, the copies and the vacated shards, but not what an entry still names: in
            # a versioned bucket the replaced entry lives on as a noncurrent version, and when
            # that is the moved one its files are the copies.
            try:
                named = await self._named(real_bucket, real_key)
            except (errors.BucketsError, asyncio.TimeoutError) as exc:
                log.info("migration: %s/%s was overwritten during its move, and its versions could not be read "
                         "(%s): its copies are left to the orphan sweep", bucket, key, exc)
                return MoveOutcome("skipped")
            copies = [new[i] for i in copy.slots if (copy.wid, new[i]) not in named]
            await remove_shards(store, real_bucket, real_key, copy.wid, store.disks_for(copies))
            self._schedule_vacate(real_bucket, real_key, entry["wid"], vacated, vacated_locs, check=True)
            return MoveOutcome("skipped")
        # The same write, but not our version (yet): the commit may still land, keep every file.
        return MoveOutcome("failed", error=uncertain or f"{bucket}/{key}: the moved entry is not the one read back")

    async def move_record(self, bucket: str, key: str, entry: dict, to_gen: int,
                          pace: Callable[[int], Awaitable[None]]) -> MoveOutcome | None:
        """After a versioned write ``entry`` of ``bucket``/``key`` moved itself to generation
        ``to_gen`` (``Store._follow_table``): move its version record too, which takes the moved
        files (``_follow_key``). The migration that would have moved the record may be over:
        the record then named the old disks for good, a node removed since among them. None
        when the bucket has no versioning or the record is not that write's."""
        from buckets.cluster.catalog import VERSIONS, version_record

        if not self._versioned(bucket):
            return None
        shadow, rkey = bucket + VERSIONS, version_record(key, entry)
        record = await self.store.catalog.index.get(shadow, rkey)
        if record is None or record.get("wid") != entry["wid"]:
            return None
        target = self.target(shadow, rkey, record, to_gen)
        if target is None:
            return None
        return await self.move(shadow, rkey, record, target, to_gen, pace)

    async def _follow_key(self, bucket: str, key: str, record: dict, target: list[str]) -> Any:
        """A version record's move when its write is the key's current one and the key's entry
        was moved to ``target`` already (the migration moves a bucket before its versions): the
        record takes the moved entry's files (``ShardCopy`` with no slot copied), rather than a
        second copy of the same shards (under a second write id when the key's move rewrote
        them: the two then parted, and the next overwrite left one of them named by nothing).
        None when that is not so (the record's shards are copied as any object's)."""
        from buckets.engine import smalllog
        from buckets.engine.move import ShardCopy

        current = await self.store.catalog.index.get(bucket, key)
        if current is None or current.get("vid", "null") != record.get("vid", "null") \
                or list(current.get("disks", ())) != list(target):
            return None
        if current["wid"] != record["wid"] and (current.get("moved_from") or {}).get("wid") != record["wid"]:
            return None
        moved = {f: v for f, v in record.items() if f not in ("ts", smalllog.LOG_FIELD)}
        moved.update(wid=current["wid"], disks=list(current["disks"]), gen=current.get("gen"))
        if current.get(smalllog.LOG_FIELD) is not None:
            moved[smalllog.LOG_FIELD] = current[smalllog.LOG_FIELD]
        return ShardCopy(moved, [])

    async def _put_version(self, bucket: str, key: str, entry: dict, ts: list, created: float | None = None) -> Any:
        index = self.store.catalog.index
        put_version = getattr(index, "put_version", None)
        if put_version is not None:
            return await put_version(bucket, key, entry, ts, created=created)
        # Until the index has put_version: the same last-writer-wins merge on a write quorum.
        await index._write(bucket, key, entry, None, ts)
        return None

    async def sweep(self, bucket: str, key: str, entry: dict) -> None:
        from buckets.engine.move import remove_shards

        moved_from = entry["moved_from"]
        real_bucket, real_key = self._real(bucket, key)
        named = await self._named(real_bucket, real_key) if self._versioned(real_bucket) else set()
        wid = moved_from["wid"]
        disks = [d for d in moved_from.get("disks", ())
                 if (d not in entry["disks"] or wid != entry["wid"]) and (wid, d) not in named]
        await remove_shards(self.store, real_bucket, real_key, wid, self.store.disks_for(disks))

    def _versioned(self, bucket: str) -> bool:
        """(A record made before a move names the disks its write was on then.)"""
        return self.store.catalog.versioned(bucket)

    async def _named(self, bucket: str, key: str) -> set[tuple[str, str]]:
        """The (write id, disk id) pairs the object's entries name: its current one and its
        version records (``ClusterCatalog.live_entries``)."""
        entries = await self.store.catalog.live_entries(bucket, key)
        return {(e["wid"], d) for e in entries if e.get("wid") for d in e.get("disks", ())}

    # -- vacated shards, after the grace delay ------------------------------------------------------
    def _schedule_vacate(self, bucket: str, key: str, wid: str, disk_ids: list[str],
                         locs: list | None = None, *, check: bool = False) -> None:
        """Remove ``wid``'s files from ``disk_ids`` after the grace delay, but not those an entry
        of the object names by then: checked when ``check`` or when the bucket has had
        versioning. (After a move of a version's entry, its record, made before the move, still
        names the old disks until the record is moved in its turn, after its bucket.)"""
        if not disk_ids:
            return
        self._vacate.append((time.monotonic() + self.grace, bucket, key, wid, disk_ids, locs, check))
        self._vacate_wakeup.set()
        if self._vacate_task is None or self._vacate_task.done():
            self._vacate_task = asyncio.get_running_loop().create_task(self._vacate_loop(), name="migration-vacate")

    async def _vacate_loop(self) -> None:
        from buckets.engine.move import remove_shards

        while self._vacate:
            due, bucket, key, wid, disk_ids, locs, check = self._vacate[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            self._vacate.pop(0)
            slot = self.store._active_reads.get((bucket, key, wid))
            if slot is not None:  # a GET on this node still streams this write: let it finish
                try:
                    await wait_for(slot[1].wait(), self.grace)
                except asyncio.TimeoutError:
                    pass
            try:
                if check or self._versioned(bucket):
                    named = await self._named(bucket, key)
                    gone = [i for i, d in enumerate(disk_ids) if (wid, d) not in named]
                    disk_ids = [disk_ids[i] for i in gone]
                    locs = [locs[i] for i in gone] if locs else locs
                await remove_shards(self.store, bucket, key, wid, self.store.disks_for(disk_ids), locs)
            except Exception as exc:  # noqa: BLE001 - a stale copy is the orphan sweep's, not fatal
                log.warning("migration: removing the vacated shards of %s/%s failed: %s", bucket, key, exc)

    async def drain(self) -> None:
        """Until every vacated shard scheduled so far is removed."""
        while self._vacate or (self._vacate_task is not None and not self._vacate_task.done()):
            if self._vacate_task is None or self._vacate_task.done():
                self._vacate_task = asyncio.get_running_loop().create_task(self._vacate_loop())
            await asyncio.shield(self._vacate_task)

    async def close(self) -> None:
        task, self._vacate_task = self._vacate_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()
        if self._vacate:
            log.info("migration: %d objects' vacated shards left for the orphan sweep", len(self._vacate))
            self._vacate.clear()


# --- the coordinator ---------------------------------------------------------------------------
@dataclass
class Progress:
    """The coordinator's part of the job value (the operator owns state and throttle)."""

    cursor: list | None = None
    pass_no: int = 1
    phase: str = "plan"
    moved_objects: int = 0
    moved_bytes: int = 0
    skipped: int = 0
    errors: int = 0
    rebuilt: int = 0
    planned: dict | None = None
    pass_objects: int = 0
    pass_bytes: int = 0
    pass_errors: int = 0
    nodes: dict = field(default_factory=dict)
    rate: dict = field(default_factory=lambda: {"bytes_per_s": 0.0, "objects_per_s": 0.0})
    last_error: str | None = None
    sweep: bool = False  # a coordinator died with vacated shards pending: sweep them before done

    @classmethod
    def from_job(cls, value: dict) -> "Progress":
        return cls(cursor=list(value["cursor"]) if value.get("cursor") else None, pass_no=value.get("pass", 1),
                   phase=value.get("phase", "plan"), moved_objects=value.get("moved_objects", 0),
                   moved_bytes=value.get("moved_bytes", 0), skipped=value.get("skipped", 0),
                   errors=value.get("errors", 0), rebuilt=value.get("rebuilt", 0), planned=value.get("planned"),
                   pass_objects=value.get("pass_objects", 0), pass_bytes=value.get("pass_bytes", 0),
                   pass_errors=value.get("pass_errors", 0),
                   nodes={k: dict(v) for k, v in (value.get("nodes") or {}).items()},
                   rate=dict(value.get("rate") or {"bytes_per_s": 0.0, "objects_per_s": 0.0}),
                   last_error=value.get("last_error"), sweep=bool(value.get("sweep")))

    def to_wire(self) -> dict:
        return {"cursor": self.cursor, "pass": self.pass_no, "phase": self.phase,
                "moved_objects": self.moved_objects, "moved_bytes": self.moved_bytes, "skipped": self.skipped,
                "errors": self.errors, "rebuilt": self.rebuilt, "planned": self.planned,
                "pass_objects": self.pass_objects, "pass_bytes": self.pass_bytes, "pass_errors": self.pass_errors,
                "nodes": {k: dict(v) for k, v in self.nodes.items()}, "rate": dict(self.rate),
                "last_error": self.last_error, "sweep": self.sweep}

    def record(self, outcome: MoveOutcome) -> None:
        if outcome.status == "moved":
            self.moved_objects += 1
            self.moved_bytes += outcome.bytes
            self.rebuilt += outcome.rebuilt
            self.pass_objects += 1
            self.pass_bytes += outcome.bytes
            for node, n in outcome.into.items():
                stats = self.nodes.setdefault(node, {"objects_in": 0, "bytes_in": 0, "objects_out": 0, "bytes_out": 0})
                stats["objects_in"] += 1
                stats["bytes_in"] += n
            for node, n in outcome.out_of.items():
                stats = self.nodes.setdefault(node, {"objects_in": 0, "bytes_in": 0, "objects_out": 0, "bytes_out": 0})
                stats["objects_out"] += 1
                stats["bytes_out"] += n
        elif outcome.status == "skipped":
            self.skipped += 1
            self.pass_objects += 1
        else:
            self.errors += 1
            self.pass_errors += 1
            self.last_error = (outcome.error or "unknown error")[:500]


@dataclass
class Counters:
    """This process's own totals, for Prometheus (counters never go back)."""

    objects_moved: int = 0
    bytes_moved: int = 0
    errors: int = 0


class MigrationCoordinator:
    """Runs the job while this node leads the control plane; see the module docstring."""

    def __init__(self, control: Any, mover: Mover, node_id: str, *, poll: float = POLL,
                 checkpoint_every: float = CHECKPOINT_EVERY, page: int = PAGE,
                 is_leader: Callable[[], bool] | None = None, stopping: Callable[[], bool] | None = None) -> None:
        self.control = control
        self.mover = mover
        self.node_id = node_id
        self.poll = poll
        self.checkpoint_every = checkpoint_every
        self.page = page
        self._is_leader = is_leader or (lambda: control.status().role == "leader")
        self._stopping = stopping or (lambda: False)
        self.counters = Counters()
        self.bucket = TokenBucket(DEFAULT_THROTTLE["bytes_per_s"])
        self.limiter = Limiter(DEFAULT_THROTTLE["objects"])
        self.progress: Progress | None = None
        self.token: str | None = None
        self._supervisor: asyncio.Task | None = None
        self._run: asyncio.Task | None = None
        self._last_rate = (time.monotonic(), 0, 0)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="migration")

    async def stop(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            await cancel_and_wait(supervisor)
        await self._cancel_run()
        await self.mover.close()

    @property
    def running(self) -> bool:
        return self._run is not None and not self._run.done()

    def _job(self) -> Any:
        record = self.control.snapshot.jobs.get(JOB_KEY)
        return record if record is not None and isinstance(record.value, dict) else None

    async def _supervise(self) -> None:
        while not self._stopping():
            try:
                await self._look()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the supervisor must outlive any one failure
                log.exception("migration supervisor")
            await asyncio.sleep(self.poll)
        await self._cancel_run()
        await self.mover.close()

    async def _look(self) -> None:
        """One look at the job: start, keep or stop this node's run; apply the throttle."""
        record = self._job()
        value = record.value if record is not None else None
        if value is not None:
            throttle = value.get("throttle") or DEFAULT_THROTTLE
            if self.bucket.rate != throttle.get("bytes_per_s", 0):
                self.bucket.set_rate(throttle.get("bytes_per_s", 0))
            if self.limiter.limit != throttle.get("objects", 1):
                await self.limiter.set_limit(throttle.get("objects", 1))
        leader = self._is_leader()
        active = value is not None and value.get("state") == RUNNING and leader
        if self.running:
            owner = (value or {}).get("owner") or {}
            if active and (self.token is None or owner.get("token") in (None, self.token)):
                return  # claiming (no token yet), or still the owner
            if value is not None and value.get("state") == DONE and leader:
                return  # the run wrote "done" and is finishing
            why = ("paused" if value is not None and value.get("state") == PAUSED else
                   "no longer the control-plane leader" if not leader else
                   "another coordinator claimed it" if active else "the job changed")
            log.info("migration: stopping here (%s)", why)
            await self._cancel_run(checkpoint=leader, release=why == "paused")
        elif active:
            self.token = None
            self._run = asyncio.get_running_loop().create_task(self._execute(), name="migration-run")

    async def _cancel_run(self, *, checkpoint: bool = False, release: bool = False) -> None:
        """Stop this node's run; with ``checkpoint``, write its last progress (and with
        ``release``, give the job up: a paused job has no coordinator until it resumes)."""
        run, self._run = self._run, None
        if run is None:
            return
        # (not ``await run``: a cancellation of this task must not be swallowed with the run's)
        if not run.done():
            await cancel_and_wait(run)
        elif not run.cancelled():
            run.exception()  # retrieved (the run logs its own failures)
        if checkpoint and self.progress is not None and self.token is not None:
            try:
                await self._checkpoint(release=release)
            except (Superseded, errors.BucketsError) as exc:
                log.info("migration: last checkpoint not written (%s)", exc)

    # -- checkpoints ------------------------------------------------------------------------------
    async def _claim(self) -> tuple[Progress, int]:
        for _ in range(10):
            record = self._job()
            if record is None or record.value.get("state") != RUNNING:
                raise Superseded("the job is gone or not running")
            token = secrets.token_hex(8)
            value = dict(record.value, owner={"node": self.node_id, "token": token, "since": time.time()},
                         updated=time.time())
            try:
                await self.control.apply("put_job", key=JOB_KEY, value=value, expected_version=record.version)
            except errors.BucketsError as exc:
                if exc.code != "VersionConflict":
                    raise
                await asyncio.sleep(0.05)
                continue
            self.token = token
            progress = Progress.from_job(record.value)
            if record.value.get("owner"):
                # The previous coordinator died or was cut off without letting go: the vacated
                # shards it meant to remove after the grace delay may still be there.
                progress.sweep = True
            log.info("migration %d -> %d: coordinated by %s from %s", record.value.get("from_gen"),
                     record.value.get("to_gen"), self.node_id,
                     f"{progress.cursor[0]}/{progress.cursor[1]}" if progress.cursor else f"pass {progress.pass_no} start")
            return progress, record.value["to_gen"]
        raise Superseded("could not claim the job (it kept changing)")

    async def _checkpoint(self, *, done: bool = False, release: bool = False) -> None:
        """Write the progress with a compare-and-set; keep the operator's fields; refuse if
        another coordinator claimed the job since (``Superseded``)."""
        assert self.progress is not None
        for _ in range(20):
            record = self._job()
            if record is None or self.token is None or (record.value.get("owner") or {}).get("token") != self.token:
                raise Superseded("another coordinator claimed the migration")
            value = dict(record.value)
            value.update(self.progress.to_wire())
            now = time.time()
            value["updated"] = now
            if done:
                value["state"] = DONE
                value["finished"] = now
            if done or release:
                value["owner"] = None
            try:
                await self.control.apply("put_job", key=JOB_KEY, value=value, expected_version=record.version)
                return
            except errors.BucketsError as exc:
                if exc.code != "VersionConflict":
                    raise
                await asyncio.sleep(0.02)  # the conflicting change is applied here: read it again
        raise Superseded("the job kept changing under the checkpoint")

    def _update_rate(self) -> None:
        assert self.progress is not None
        now = time.monotonic()
        then, objects, moved = self._last_rate
        span = now - then
        if span <= 0:
            return
        b = (self.progress.moved_bytes - moved) / span
        o = (self.progress.moved_objects - objects) / span
        old = self.progress.rate
        alpha = 0.3 if old.get("bytes_per_s") or old.get("objects_per_s") else 1.0
        self.progress.rate = {"bytes_per_s": round(alpha * b + (1 - alpha) * old.get("bytes_per_s", 0.0), 1),
                              "objects_per_s": round(alpha * o + (1 - alpha) * old.get("objects_per_s", 0.0), 2)}
        self._last_rate = (now, self.progress.moved_objects, self.progress.moved_bytes)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_every)
            self._update_rate()
            await self._checkpoint()

    # -- the run ----------------------------------------------------------------------------------
    async def _execute(self) -> None:
        try:
            self.progress, to_gen = await self._claim()
        except Superseded as exc:
            log.info("migration: not claimed (%s)", exc)
            return
        self._last_rate = (time.monotonic(), self.progress.moved_objects, self.progress.moved_bytes)
        ticker = asyncio.get_running_loop().create_task(self._ticker(), name="migration-checkpoint")
        try:
            ready = getattr(self.mover, "ready", None)
            if ready is not None:
                await ready(to_gen)
            backoff = 1.0
            while True:
                if self.progress.phase == "plan":
                    await self._plan(to_gen)
                    if not self.progress.planned["objects"] and not self.progress.pass_errors \
                            and not self.mover.pending_indexes(to_gen):
                        break
                    self.progress.phase = "move"
                    self.progress.pass_errors = 0
                    self.progress.pass_objects = self.progress.pass_bytes = 0
                    await self._checkpoint()
                await self._walk(to_gen)
                await self.mover.drain()
                clean = not self.progress.pass_errors
                self.progress.pass_no += 1
                self.progress.phase = "plan"
                self.progress.cursor = None
                await self._checkpoint()
                if not clean:
                    log.warning("migration: pass %d left %d objects unmoved (last: %s); retrying in %gs",
                                self.progress.pass_no - 1, self.progress.pass_errors, self.progress.last_error,
                                backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(MAX_BACKOFF, backoff * 2)
            if self.progress.sweep:
                await self._sweep(to_gen)
                self.progress.sweep = False
            # (cancelled until it ends: one cancel that lands as its checkpoint's commit returns
            # is swallowed on Python 3.11, and the run then waited for it forever, "running")
            await cancel_and_wait(ticker)
            self._update_rate()
            await self._checkpoint(done=True)
            self.token = None
            log.info("migration to generation %d done: %d objects (%d bytes) moved, %d skipped, %d errors retried",
                     to_gen, self.progress.moved_objects, self.progress.moved_bytes, self.progress.skipped,
                     self.progress.errors)
        except Superseded as exc:
            log.info("migration: this coordinator stops (%s)", exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged as one line; the supervisor starts a new run
            log.warning("migration run stopped: %s: %s; it resumes from its checkpoint", type(exc).__name__, exc)
            await asyncio.sleep(1.0)
        finally:
            if not ticker.done():
                await cancel_and_wait(ticker)

    async def _plan(self, to_gen: int) -> None:
        objects = shard_bytes = 0
        for bucket in self.mover.buckets():
            after = ""
            while True:
                page, truncated = await self.mover.page(bucket, after, self.page)
                for key, entry in page:
                    target = self.mover.target(bucket, key, entry, to_gen)
                    if target is not None:
                        objects += 1
                        shard_bytes += self.mover.shard_bytes(entry, target)
                if not truncated or not page:
                    break
                after = page[-1][0]
        self.progress.planned = {"objects": objects, "bytes": shard_bytes}
        log.info("migration to generation %d, pass %d: %d objects (%d shard bytes) to move", to_gen,
                 self.progress.pass_no, objects, shard_bytes)

    async def _sweep(self, to_gen: int) -> None:
        """Remove what earlier coordinators vacated but did not get to remove: every entry
        moved to ``to_gen`` names the disks it left (``moved_from``)."""
        swept = 0
        for bucket in self.mover.buckets():
            after = ""
            while True:
                page, truncated = await self.mover.page(bucket, after, self.page)
                for key, entry in page:
                    if entry.get("gen") == to_gen and entry.get("moved_from"):
                        await self.mover.sweep(bucket, key, entry)
                        swept += 1
                if not truncated or not page:
                    break
                after = page[-1][0]
        log.info("migration to generation %d: swept the vacated shards of %d moved objects", to_gen, swept)

    async def _walk(self, to_gen: int) -> None:
        progress = self.progress
        start_bucket, start_key = (progress.cursor or [None, ""])
        for bucket in self.mover.buckets():
            if start_bucket is not None and bucket.encode() < start_bucket.encode():
                continue
            after = start_key if bucket == start_bucket else ""
            await self.mover.prepare_bucket(bucket, to_gen)
            window = Window(after)
            progress.cursor = [bucket, after]
            tasks: set[asyncio.Task] = set()
            try:
                while True:
                    page, truncated = await self.mover.page(bucket, after, self.page)
                    for key, entry in page:
                        target = self.mover.target(bucket, key, entry, to_gen)
                        window.add(key)
                        if target is None:
                            window.finish(key)
                            progress.cursor = [bucket, window.cursor]
                            continue
                        await self.limiter.acquire()
                        ran = [False]
                        task = asyncio.get_running_loop().create_task(
                            self._move_one(bucket, key, entry, target, to_gen, window, ran))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        # A move gives its permit back when it ends; one cancelled before it ever
                        # ran never enters its ``finally``: its permit goes back here (it leaked
                        # before: fewer moves at once from then on, none once the leaks reached
                        # the throttle's count).
                        task.add_done_callback(lambda _t, ran=ran: None if ran[0] else self.limiter.release_soon())
                    if not truncated or not page:
                        break
                    after = page[-1][0]
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                for task in list(tasks):
                    task.cancel()
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
            start_bucket, start_key = None, ""

    async def _move_one(self, bucket: str, key: str, entry: dict, target: list[str], to_gen: int,
                        window: Window, ran: list[bool]) -> None:
        ran[0] = True
        try:
            try:
                outcome = await self.mover.move(bucket, key, entry, target, to_gen, self.bucket.take)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one object's failure is counted, retried next pass
                outcome = MoveOutcome("failed", error=f"{bucket}/{key}: {type(exc).__name__}: {exc}")
            if outcome.status == "failed":
                self.counters.errors += 1
                log.warning("migration of %s/%s failed: %s", bucket, key, outcome.error)
            elif outcome.status == "moved":
                self.counters.objects_moved += 1
                self.counters.bytes_moved += outcome.bytes
            assert self.progress is not None
            self.progress.record(outcome)
            window.finish(key)
            self.progress.cursor = [bucket, window.cursor]
        finally:
            await self.limiter.release()

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict:
        record = self._job()
        out = status_of(record.value if record is not None else None)
        out["this_node_coordinates"] = self.running
        return out


# --- wiring into a cluster node ----------------------------------------------------------------
def ensure_coordinator(store: Any) -> MigrationCoordinator | None:
    """The node's coordinator, created and started on first use (a single-node store has none).
    ``ClusterNode`` may start it itself; this is idempotent."""
    node = getattr(store, "cluster_node", None)
    if node is None or getattr(node, "control", None) is None:
        return None
    coordinator = getattr(node, "migration", None)
    if coordinator is None:
        mover = StoreMover(node, store)
        node_id = getattr(node, "node_id", None) or node.spec.me.url
        coordinator = MigrationCoordinator(
            node.control, mover, node_id,
            stopping=lambda: bool(getattr(node, "_stopping", False)))
        node.migration = coordinator
        rpc = getattr(node, "rpc", None)
        if rpc is not None and "migration/applied" not in rpc.methods():
            # How far this node applied the control plane (the index move waits for every node).
            rpc.register("migration", "applied", lambda args: {"applied": node.control.snapshot.applied})
        coordinator.start()
    return coordinator


# --- metrics ------------------------------------------------------------------------------------
class MigrationCollector(NodeCollector):
    """Prometheus metrics of the migration (registered by ``buckets.obs.metrics``). The totals
    count what this node's coordinator moved (summed over nodes they give the cluster's);
    the gauges describe the cluster's job, the same on every node."""

    STATES = ("none", RUNNING, PAUSED, DONE)

    def collect_node(self, node: Any):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        control = getattr(node, "control", None)
        if control is None:
            return
        coordinator = getattr(node, "migration", None)
        counters = coordinator.counters if coordinator is not None else Counters()
        yield CounterMetricFamily("buckets_migration_objects_moved", "Objects this node's coordinator moved.",
                                  value=counters.objects_moved)
        yield CounterMetricFamily("buckets_migration_bytes_moved",
                                  "Shard bytes this node's coordinator copied to new disks.",
                                  value=counters.bytes_moved)
        yield CounterMetricFamily("buckets_migration_errors", "Object moves that failed here (retried later).",
                                  value=counters.errors)
        record = control.snapshot.jobs.get(JOB_KEY)
        value = record.value if record is not None and isinstance(record.value, dict) else None
        status = status_of(value)
        remaining = GaugeMetricFamily("buckets_migration_remaining_objects",
                                      "Objects the current migration pass still has to move (estimate).")
        remaining.add_metric([], status.get("remaining_objects") or 0)
        yield remaining
        rate = GaugeMetricFamily("buckets_migration_rate_bytes", "Shard bytes moved per second, recently.")
        rate.add_metric([], float((status.get("rate") or {}).get("bytes_per_s") or 0.0))
        yield rate
        state = GaugeMetricFamily("buckets_migration_state", "1 for the migration's state.", labels=["state"])
        for name in self.STATES:
            state.add_metric([name], 1 if status["state"] == name else 0)
        yield state
