"""``ClusterCatalog``: the engine's ``Catalog`` over the control plane and the replicated index.

- Buckets live in the Raft control plane: creating or deleting one is a committed command, so
  every node decides the same way (two nodes racing to create a name: exactly one wins), and
  reading one is a local snapshot lookup (no round trip on the request path).
- Object entries live in the bucket-partitioned, quorum-replicated index
  (``buckets.cluster.index``).
- Multipart uploads live in the same index, in a shadow "bucket" of each bucket
  (``<bucket>\\x01uploads``, which no S3 name can spell and no listing of the bucket reaches),
  replicated on the bucket's own replicas: the upload record under its id, and each part as its
  own record ``<upload id>/<part number>``, so parts uploaded through different nodes at the
  same time never overwrite each other's record (no read-modify-write across nodes).
- Users (``ClusterUserTable``) live in the control plane; ``buckets.engine.users.UserStore``
  seals and opens their secrets exactly as on one node.
- Where a bucket's index lives (``IndexPlacer``) follows the bucket's *index generation*
  (``settings["index_gen"]``, absent = 1): the first 3 distinct nodes of the row the bucket
  name hashes to in that generation's partition table, not the current table. Moving the
  index to a new generation (``ClusterCatalog.move_bucket_index``) goes through the phases
  ``index_next`` (write both sets, read the old), ``index_gen``/``index_prev`` (read the new,
  write both), then plain; ``architecture/consistency.md`` says why reads stay strongly
  consistent throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import xxhash

from buckets import errors
from buckets.cluster.control import ControlPlane, NoSuchJob, VersionConflict
from buckets.cluster.control_records import ControlSnapshot
from buckets.cluster.control_state import INDEX_DROP
from buckets.cluster.index import JUDGED, IndexPlacement, ReplicatedIndex
from buckets.placement import PartitionTable
from buckets.registry import Op
from buckets.registry.store import POLICY_PREFIX
from buckets.runtime import wait_for

log = logging.getLogger("buckets.cluster.catalog")

DELETING = "deleting"  # bucket setting: a DeleteBucket is under way until this time (writes refused)
DELETING_SECONDS = 60.0  # the mark of a deleting node that died expires after this
# A deletion is proposed only while at least this much of its mark is left (and the control
# plane applies it only if so by the proposal's time): no node, its clock within a second of
# the others' (``buckets.cluster.clocks``), has taken the mark as expired and let a write in.
DELETING_MARGIN = 10.0
DELETING_WAIT = 10.0  # how long a write waits for a DeleteBucket under way before 503 SlowDown
DELETING_POLL = 0.01  # how often a waiting write looks at the bucket's record again
DELETE_ATTEMPTS = 5  # a DeleteBucket that other deletions of the bucket kept preceding answers 409 after this
LEASE_PREFIX = "lease:"  # control-plane job records of conditional writes in progress
LEASE_SECONDS = 30.0  # a lease a dead node left expires after this
LEASE_WAIT = 20.0  # how long a conditional write waits for another one on the same key
UPLOADS = "\x01uploads"
VERSIONS = "\x01versions"
SHADOWS = (UPLOADS, VERSIONS)  # a bucket's shadow buckets in the index, on the bucket's replicas
_VS_MAX = (1 << 64) - 1
_T = TypeVar("_T")


def version_record(key: str, entry: dict) -> str:
    """A version's record key in the versions shadow bucket: the object key, NUL (no S3 key
    has one, so every record of ``a`` sorts before any of ``a/b``), then the inverted version
    order in hex (newest first) and the version id."""
    from buckets.registry.store import version_seq

    return f"{key}\0{_VS_MAX - version_seq(entry):016x}{entry.get('vid', 'null')}"


def _anything(current: dict | None) -> None:
    """A judge that refuses nothing (an unconditional write done as a checked one)."""


def _plain(entry: dict) -> dict:
    """An entry without the index's version stamps (the index stamps each record it writes:
    its version, and a conditional write's the version its check judged)."""
    return {f: v for f, v in entry.items() if f not in ("ts", JUDGED)}


def _merge_current(records: list[dict], current: dict | None) -> list[dict]:
    """A key's versions newest first: its records, plus the current entry if it has no record."""
    from buckets.registry.store import version_seq

    versions = list(records)
    if current is not None and not any(e.get("wid") == current.get("wid") for e in versions):
        versions.append(current)
        versions.sort(key=lambda e: (version_seq(e), e.get("vid", "null")), reverse=True)
    return versions
INDEX_REPLICAS = 3
# A bucket's index phase: (index_gen, index_next, index_prev).
Phase = tuple[int, "int | None", "int | None"]
# Waits until every live node's control plane has applied at least this many commands
# (``ControlSnapshot.applied``, the same count on every node for the same log position).
WaitApplied = Callable[[int], Awaitable[None]]


def index_bucket(name: str) -> str:
    """The bucket whose replicas hold ``name``'s entries (a shadow bucket maps to its owner)."""
    return name.split("\x01", 1)[0]


def _part_key(upload_id: str, number: int) -> str:
    return f"{upload_id}/{number:05d}"


def index_phase(settings: Mapping[str, Any]) -> Phase:
    """(index_gen, index_next, index_prev) from a bucket's settings (absent index_gen = 1)."""
    nxt, prev = settings.get("index_next"), settings.get("index_prev")
    return (int(settings.get("index_gen", 1)), None if nxt is None else int(nxt),
            None if prev is None else int(prev))


class IndexPlacer:
    """Each bucket's index replicas, from the control plane's snapshot (local, no round trip):
    the replica set of generation g is the first ``replicas`` distinct nodes of the row that
    the bucket name hashes to in g's table (the nodes owning those disks in g). The phase of an
    index move decides which sets a read asks and a write must reach:

    =====================================  ===========  =================================
    bucket settings                        reads        writes (a write quorum in each)
    =====================================  ===========  =================================
    ``index_gen=g``                        S(g)         S(g)
    ``index_gen=g, index_next=n``          S(g)         S(g), S(n)
    ``index_gen=n, index_prev=g``          S(n)         S(n), S(g)
    =====================================  ===========  =================================

    The uploads shadow bucket ``<bucket>\x01uploads`` is placed with its bucket."""

    def __init__(self, snapshot: Callable[[], ControlSnapshot], replicas: int = INDEX_REPLICAS) -> None:
        self._snapshot = snapshot
        self.replicas_per_set = replicas
        self._sets: dict[tuple[str, int], tuple[str, ...]] = {}
        self._placements: dict[tuple[str, Phase], IndexPlacement] = {}
        # The last phase seen of each bucket: a deleted bucket's last index calls (its uploads
        # removed after the bucket record went) still reach the replicas it had.
        self._seen: dict[str, Phase] = {}

    def phase(self, bucket: str) -> Phase:
        name = index_bucket(bucket)
        snap = self._snapshot()
        rec = snap.buckets.get(name)
        if rec is not None:
            phase = index_phase(rec.settings)
            if self._seen.get(name) != phase:
                self._seen[name] = phase
            return phase
        seen = self._seen.get(name)
        if seen is not None:
            return seen
        topology = snap.topology
        first = topology.generation_record(1) if topology is not None else None
        gen = 1 if first is None or first.table is not None else topology.generation  # type: ignore[union-attr]
        return (gen, None, None)

    def replica_set(self, bucket: str, generation: int) -> tuple[str, ...]:
        """The bucket's replica set in ``generation`` (LookupError: no such table)."""
        name = index_bucket(bucket)
        nodes = self._sets.get((name, generation))
        if nodes is None:
            topology = self._snapshot().topology
            record = topology.generation_record(generation) if topology is not None else None
            if record is None:
                raise LookupError(f"no generation {generation} in the topology")
            owner = {disk_id: node_id for disk_id, node_id, _ in record.disks}
            _, row = record.partition_table().locate(name, "")
            found: list[str] = []
            for disk_id in row:
                node = owner[disk_id]
                if node not in found:
                    found.append(node)
                if len(found) == self.replicas_per_set:
                    break
            nodes = self._sets[(name, generation)] = tuple(found)
        return nodes

    def placement(self, bucket: str) -> IndexPlacement:
        """What ``ReplicatedIndex`` calls ``replicas_of``."""
        name = index_bucket(bucket)
        phase = self.phase(name)
        placement = self._placements.get((name, phase))
        if placement is None:
            gen, nxt, prev = phase
            current = self.replica_set(name, gen)
            other = nxt if nxt is not None else prev
            second = self.replica_set(name, other) if other is not None and other != gen else current
            if set(second) == set(current):
                placement = IndexPlacement.single(current)
            else:
                placement = IndexPlacement(current, (current, second))
            if len(self._placements) > 100_000:
                self._placements.clear()
            self._placements[(name, phase)] = placement
        return placement

    def replicas(self, bucket: str) -> list[str]:
        """Every node holding the bucket's index now (both sets during a move): the nodes whose
        anti-entropy covers the bucket."""
        return list(self.placement(bucket).nodes)


def applied_waiter(snapshot: Callable[[], ControlSnapshot], ask: Callable[[str], Awaitable[int]], *,
                   poll: float = 0.2, timeout: float = 120.0, ask_timeout: float | None = None) -> WaitApplied:
    """A ``WaitApplied`` over the topology's nodes: ``ask(node_id)`` returns that node's
    ``ControlSnapshot.applied`` (a peer call; this node's own answer may be local). A node that
    does not answer (within ``ask_timeout``, if given) is not live and is not waited for (it
    must catch up before it serves again); a live node still behind after ``timeout`` is
    ``ServiceUnavailable``."""
    async def wait(applied: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        topology = snapshot().topology
        pending = [n.node_id for n in topology.nodes if n.state != "removed"] if topology is not None else []
        while pending:
            answers = await asyncio.gather(*(wait_for(ask(n), ask_timeout) if ask_timeout else ask(n)
                                             for n in pending), return_exceptions=True)
            behind = []
            for node, got in zip(pending, answers):
                if isinstance(got, (errors.BucketsError, asyncio.TimeoutError, OSError)):
                    log.info("control-plane change %d: %s does not answer (%s); not waited for",
                             applied, node, got or type(got).__name__)
                elif isinstance(got, BaseException):
                    raise got
                elif int(got) < applied:
                    behind.append(node)
            pending = behind
            if pending:
                if loop.time() >= deadline:
                    raise errors.ServiceUnavailable(f"nodes {', '.join(pending)} have not applied control-plane "
                                                    f"change {applied} within {timeout:g}s")
                await asyncio.sleep(poll)
    return wait


SETTLE_SECONDS = 2.0  # a bucket or user change waits at most this long for the live nodes
SETTLE_ASK = 0.5  # ... and this long for each node's answer


async def settle(control: ControlPlane, wait: WaitApplied | None) -> None:
    """After a bucket or user change committed: until every live node has applied it (at most
    ``SETTLE_SECONDS``), so that a request through any node sees it once the change is
    acknowledged (reads of bucket settings and users are local: without this, a node that
    applies the commit a few milliseconds later would answer from the state before it). A node
    still behind after that is left to catch up (logged); the change stands."""
    if wait is None:
        return
    try:
        await wait(control.snapshot.applied)
    except errors.ServiceUnavailable as exc:
        log.warning("a control-plane change is acknowledged before every live node applied it: %s", exc)


class _NothingThere(Exception):
    """A checked write found no entry, or not the version it may replace: nothing to write
    (the key's locks are released)."""


class ClusterCatalog:
    # Its writes are merged on replicas, and a write they replaced may be merged again by its
    # writer (the Store's removal of replaced data waits: engine/replaced.py).
    replicated = True

    def __init__(self, control: ControlPlane, index: ReplicatedIndex, placer: IndexPlacer | None = None, *,
                 wait_applied: WaitApplied | None = None, wait_settled: WaitApplied | None = None) -> None:
        self.control = control
        self.index = index
        self.placer = placer or IndexPlacer(lambda: control.snapshot)
        self.wait_applied = wait_applied  # what move_bucket_index waits with, unless given one
        # What a bucket change waits with before it is acknowledged (``settle``).
        self.wait_settled = wait_settled

    # -- buckets ------------------------------------------------------------------------------
    def get_bucket(self, name: str) -> dict | None:
        rec = self.control.snapshot.buckets.get(name)
        return None if rec is None else {"created": rec.created, "owner": rec.owner, **dict(rec.settings)}

    def list_buckets(self) -> list[tuple[str, dict]]:
        return sorted(((n, {"created": r.created, "owner": r.owner}) for n, r in self.control.snapshot.buckets.items()),
                      key=lambda kv: kv[0].encode())

    async def find_bucket(self, name: str) -> dict | None:
        found = self.get_bucket(name)
        if found is None:  # maybe created through another node a moment ago: catch up first
            await self.control.read(linearizable=True)
            found = self.get_bucket(name)
        return found

    async def fresh_buckets(self) -> list[tuple[str, dict]]:
        await self.control.read(linearizable=True)
        return self.list_buckets()

    async def create_bucket(self, name: str, rec: dict) -> None:
        # A new bucket's index lives on the current generation's nodes (absent means 1, so a
        # cluster that never grew keeps the records it always had).
        generation = self.control.snapshot.generation
        settings = {k: v for k, v in rec.items() if k not in ("created", "owner")}
        if generation > 1:
            settings["index_gen"] = generation
        await self.control.apply("create_bucket", name=name, owner=rec.get("owner", ""), settings=settings)
        await settle(self.control, self.wait_settled)

    async def update_bucket(self, name: str, set: dict, unset: list[str], expect: dict | None = None) -> None:
        await self.control.apply("update_bucket", name=name, set=set, unset=unset,
                                 **({"expect": expect} if expect else {}))
        await settle(self.control, self.wait_settled)

    async def delete_bucket(self, name: str) -> list[dict]:
        """Mark the bucket as being deleted (every live node then refuses new writes into it,
        ``_creating``), check it is empty, delete it, and drop what its index replicas hold.

        Without the mark, a PUT through another node racing the delete was acknowledged
        while the delete was too (its entry landed after the emptiness check), and the object
        came back when a bucket of that name was created again. With it, a write whose
        merge reached a quorum before its node applied the mark is seen by the check (which
        runs after every live node applied it: ``BucketNotEmpty``); a write that finds the
        mark before or after its merge waits for the deletion's outcome (``_creating``), and
        what such a write left is dropped with the bucket's index if the bucket goes. A live
        node that has not applied the mark within the settle bound fails the deletion (503).

        The mark is this deletion's own (its value, an expiry time, is unique to it): it is
        set only where no other deletion's mark stands, and the deletion and the mark's
        removal apply only while it still stands (``expect``). Two DeleteBuckets through two
        nodes at once: the second waits for the first's outcome (``NoSuchBucket`` if the
        bucket went, then its own turn if it stayed). Before, the second overwrote the first's
        mark and either one's failure removed it under the other: the other's check answered
        503 (its replicas no longer had a mark), or a write acknowledged in that unmarked
        window was deleted with the bucket."""
        for _ in range(DELETE_ATTEMPTS):
            rec = self.control.snapshot.buckets.get(name)
            if rec is None:
                raise errors.NoSuchBucket(resource=name, BucketName=name)
            standing = rec.settings.get(DELETING)
            if standing is not None and float(standing) > time.time():
                kept = await self._deletion_over(name, rec.created, DELETING_WAIT)
                if kept is None:
                    raise errors.OperationAborted("Another DeleteBucket of this bucket is under way; retry later.",
                                                  resource=name, BucketName=name)
                if not kept:
                    raise errors.NoSuchBucket(resource=name, BucketName=name)
                continue
            mine = time.time() + DELETING_SECONDS + int.from_bytes(os.urandom(4), "big") * 1e-12
            try:
                await self.control.apply("update_bucket", name=name, set={DELETING: mine}, unset=[],
                                         expect={DELETING: standing})
            except errors.BucketSettingsChanged:  # another deletion marked it first: its outcome, then ours
                await self.control.read(linearizable=True)
                continue
            return await self._delete_marked(name, mine)
        raise errors.OperationAborted("Other DeleteBuckets of this bucket kept going first; retry later.",
                                      resource=name, BucketName=name)

    async def _delete_marked(self, name: str, mine: float) -> list[dict]:
        """The rest of ``delete_bucket`` once its mark (``mine``) is applied."""
        try:
            # Every live node must have applied the mark before the emptiness check: one still
            # behind would acknowledge a write the check may miss, into a bucket then deleted.
            # Unlike other bucket changes (``settle``), the deletion does not go on without it:
            # 503, the mark removed, nothing deleted.
            if self.wait_settled is not None:
                await self.wait_settled(self.control.snapshot.applied)
            # (from replicas that applied the mark, each refusing new entries from then on)
            objects, prefixes, _ = await self.index.list(name, limit=1, markers=True, deleting=True)
            if not objects and not prefixes:
                objects, prefixes, _ = await self.index.list(name + VERSIONS, limit=1, markers=True, deleting=True)
            if objects or prefixes:
                raise errors.BucketNotEmpty(resource=name, BucketName=name)
            uploads = await self.list_uploads(name)
            nodes = self.placer.placement(name).nodes  # (placed by the bucket's settings: read them first)
            # A deletion that took so long that its mark is about to end (a stalled node, a slow
            # check) is not proposed: once the mark ends, every node lets writes in again, which
            # the check did not see. The control plane applies the same bound to the proposal's
            # time (``before``), as this node may stall between here and proposing.
            before = mine - DELETING_MARGIN
            if time.time() > before:
                raise errors.OperationAborted("The DeleteBucket took longer than its turn; retry the request.",
                                              resource=name, BucketName=name)
            # (the nodes to drop the index are recorded with the deletion: INDEX_DROP; and it
            # applies only under this deletion's mark)
            await self.control.apply("delete_bucket", name=name, drop=list(nodes), expect={DELETING: mine},
                                     before=before)
        except BaseException:
            try:
                await self.control.apply("update_bucket", name=name, set={}, unset=[DELETING],
                                         expect={DELETING: mine})
            except errors.BucketsError as exc:  # the mark expires by itself
                log.warning("bucket %s: its deletion mark was not removed: %s", name, exc)
            raise
        await settle(self.control, self.wait_settled)
        # (the uploads' records go with the index: replicas refuse writes into a deleted bucket)
        await self._forget_dropped(name, [n for n in nodes if await self._drop_index(n, name)])
        return uploads

    async def _drop_index(self, node: str, name: str) -> bool:
        """One node drops what it holds of a deleted bucket's index (and its shadows); False if
        it did not answer (it is left on the bucket's ``INDEX_DROP`` job)."""
        try:
            for space in (name, *(name + s for s in SHADOWS)):
                await self.index.drop_on(node, space, deleted=True)
            return True
        except (errors.BucketsError, asyncio.TimeoutError, OSError) as exc:
            log.warning("deleted bucket %s: %s did not drop its index (%s); the bucket cannot be created again "
                        "until it has", name, node, exc or type(exc).__name__)
            return False

    async def _forget_dropped(self, name: str, dropped: list[str]) -> None:
        """Take ``dropped`` off the deleted bucket's ``INDEX_DROP`` job; the job goes with the
        last node (and a bucket of that name can be created again)."""
        key = INDEX_DROP + name
        for _ in range(10):
            record = self.control.snapshot.jobs.get(key)
            if record is None or not dropped:
                return
            left = [n for n in record.value.get("nodes", []) if n not in dropped]
            try:
                if left:
                    await self.control.apply("put_job", key=key, value={"nodes": left},
                                             expected_version=record.version)
                else:
                    await self.control.apply("delete_job", key=key, expected_version=record.version)
                return
            except (VersionConflict, NoSuchJob):  # another node took itself off meanwhile
                await self.control.read(linearizable=True)

    async def finish_index_drops(self, me: str) -> int:
        """For each deleted bucket whose index this node (``me``) has not dropped yet (it was
        down during the DeleteBucket): drop it here and take this node off the job; and take
        off nodes that have left the cluster. Returns the buckets done (run by every node
        soon after it starts and then every few seconds: ``ClusterNode``)."""
        done = 0
        snapshot = self.control.snapshot
        members = {n.node_id for n in snapshot.topology.nodes if n.state != "removed"} \
            if snapshot.topology is not None else None
        for key, record in list(snapshot.jobs.items()):
            if not key.startswith(INDEX_DROP):
                continue
            name, nodes = key[len(INDEX_DROP):], record.value.get("nodes", [])
            gone = [n for n in nodes if members is not None and n not in members]
            if me in nodes:
                for space in (name, *(name + s for s in SHADOWS)):
                    await self.index.local.drop({"bucket": space, "deleted": True})
                gone.append(me)
                done += 1
            await self._forget_dropped(name, gone)
        return done

    def _writable(self, bucket: str) -> bool:
        return bucket in self.control.snapshot.buckets and not self.deleting(bucket)

    def deleting(self, bucket: str) -> bool:
        """Whether a DeleteBucket of ``bucket`` is under way, as this node's control plane has it
        (its mark applied and not expired): this node's index replica refuses new entries into
        it (``IndexReplica.bucket_deleting``)."""
        rec = self.control.snapshot.buckets.get(bucket)
        return rec is not None and float(rec.settings.get(DELETING) or 0) > time.time()

    async def _deletion_over(self, bucket: str, created: float, within: float) -> bool | None:
        """Wait (up to ``within`` seconds) for a DeleteBucket under way to end, as this node
        applies it: True, the bucket is still there (it was not empty, or the deleting node
        died and its mark expired); False, it went (or is another bucket of that name now);
        None, still under way."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            rec = self.control.snapshot.buckets.get(bucket)
            if rec is None or rec.created != created:
                return False
            if self._writable(bucket):
                return True
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(DELETING_POLL)

    async def _creating(self, bucket: str, write: Callable[[], Awaitable[_T]]) -> _T:
        """``write()``: a write that adds an entry to ``bucket``'s index (an object, a version or
        a marker, an upload or a part), run so that no write is acknowledged into a bucket that
        a DeleteBucket through another node deletes (``delete_bucket``).

        Before it: ``NoSuchBucket``; while a DeleteBucket is under way (its mark applied here),
        the write waits for its outcome: it goes on if the bucket stays (DeleteBucket of a
        bucket that is not empty changes nothing for the writes into it), ``NoSuchBucket`` if
        the bucket went, ``503 SlowDown`` after ``DELETING_WAIT``. Refused by index replicas that
        applied a mark this node had not (``BucketBeingDeleted``: nothing of it stands), it waits
        until this node has caught up, then as before it, and writes again. After it, if the mark
        arrived meanwhile, the write's outcome is the deletion's: acknowledged if the bucket
        stays (the write's entry is in it), ``NoSuchBucket`` if the bucket went (the entry went
        with its index: the write's data goes too), and, the deletion still under way at the
        mark's expiry, ``503`` as a lost write quorum (the data kept; the orphan sweep removes
        it if the entry went)."""
        rec = self.control.snapshot.buckets.get(bucket)
        if rec is None:
            raise errors.NoSuchBucket(resource=bucket, BucketName=bucket)
        created = rec.created
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELETING_WAIT
        while True:
            if not self._writable(bucket):
                kept = await self._deletion_over(bucket, created, max(0.0, deadline - loop.time()))
                if kept is None:
                    raise errors.SlowDown("The bucket is being deleted; retry the request.", resource=bucket)
                if not kept:
                    raise errors.NoSuchBucket(resource=bucket, BucketName=bucket)
            try:
                result = await write()
                break
            except errors.BucketBeingDeleted:
                # This node has not applied the mark (or its end) that those replicas have: catch up.
                if loop.time() >= deadline:
                    raise errors.SlowDown("The bucket is being deleted; retry the request.",
                                          resource=bucket) from None
                try:
                    await self.control.read(linearizable=True)
                except errors.BucketsError as exc:
                    raise errors.SlowDown(f"The bucket is being deleted, and this node cannot reach the control "
                                          f"plane ({exc}); retry the request.", resource=bucket) from None
                rec = self.control.snapshot.buckets.get(bucket)
                if rec is None or rec.created != created:
                    raise errors.NoSuchBucket(resource=bucket, BucketName=bucket) from None
            except errors.BucketsError:
                # Refused by replicas that applied the deletion already (``IndexReplica.merge``):
                # the bucket went, so the write is not kept.
                if self._writable(bucket) or await self._deletion_over(bucket, created, DELETING_SECONDS) is not False:
                    raise
                raise errors.NoSuchBucket(resource=bucket, BucketName=bucket) from None
        if not self._writable(bucket):
            kept = await self._deletion_over(bucket, created, DELETING_SECONDS)
            if kept is None:
                raise errors.WriteQuorumLost("The bucket was being deleted while this write was stored: it may "
                                             "not have been kept. Retry the request.", resource=bucket)
            if not kept:
                raise errors.NoSuchBucket(resource=bucket, BucketName=bucket)
        return result

    # -- objects ------------------------------------------------------------------------------
    async def get_object(self, bucket: str, key: str, *, read: bool = False) -> dict | None:
        return await self.index.get(bucket, key, records=read)

    def take_records(self, bucket: str, key: str, wid: str) -> dict[int, bytes]:
        return self.index.take_records(bucket, key, wid)

    def check_room(self, bucket: str) -> None:
        """``StorageFull`` when an index replica of ``bucket`` has its registry's disk at its
        reserve (``ReplicatedIndex.check_room``): asked before a new object or part is written."""
        self.index.check_room(bucket)

    async def put_object(self, bucket: str, key: str, entry: dict, *, small: bytes | None = None,
                         finished_upload: str | None = None, displaced: bool = False) -> list[dict] | None:
        async def write() -> list[dict] | None:
            if displaced:
                return await self.index.put_displacing(bucket, key, entry, small)
            await self.index.put(bucket, key, entry, small)
            return None

        replaced = await self._creating(bucket, write)
        if finished_upload is not None:
            await self.delete_upload(bucket, finished_upload)
        return replaced

    async def delete_object(self, bucket: str, key: str, entry: dict) -> None:
        await self.index.delete(bucket, key, entry["wid"])

    async def put_object_checked(self, bucket: str, key: str, entry: dict, judge: Callable[[dict | None], None], *,
                                 small: bytes | None = None, finished_upload: str | None = None) -> dict | None:
        current = await self._creating(bucket, lambda: self.index.write_checked(bucket, key, entry, judge, small))
        if finished_upload is not None:
            await self.delete_upload(bucket, finished_upload)
        return current

    async def delete_object_checked(self, bucket: str, key: str, judge: Callable[[dict | None], None]) -> dict | None:
        def judge_present(current: dict | None) -> None:
            judge(current)
            if current is None:
                raise _NothingThere()

        try:
            return await self.index.write_checked(bucket, key, None, judge_present)
        except _NothingThere:
            return None

    async def list_objects(self, bucket: str, prefix: str, delimiter: str, start_after: str,
                           limit: int) -> tuple[list[tuple[str, dict]], list[str], bool]:
        return await self.index.list(bucket, prefix, delimiter, start_after, limit)

    def get_small(self, bucket: str, key: str, wid: str) -> bytes | None:
        # Only a copy of the write the caller already resolved through a quorum read (``wid``),
        # so it can never be stale: this node's replica's, or the one a replica answered with.
        data = self.index.local.registry.get_small(bucket, key, wid)
        return data if data is not None else self.index.small_copy(bucket, key, wid)

    # -- versions (versioned buckets) ------------------------------------------------------------
    # Every version a versioned write makes (delete markers too) is its own record in the shadow
    # bucket ``<bucket>\x01versions`` under ``version_record(key, entry)``, newest first per key;
    # the key's current version is also its entry in the bucket itself, as for any object. Each
    # record is written once and only ever removed (a tombstone), so writes racing through two
    # nodes both stay versions (the main entry's last-writer-wins picks the latest). An object
    # written before versioning was enabled has no record: it is the ``null`` version, found as
    # the main entry, and gets its record once something replaces it.
    async def put_version(self, bucket: str, key: str, entry: dict, *, small: bytes | None = None,
                          finished_upload: str | None = None) -> list[dict]:
        """The key's read, its version records and its entry in one checked write that judges
        nothing: under the key's lock on its replicas, so a removal of the version read
        (``delete_version``) cannot run between the read and the records. A read then a put let
        a DeleteObject by version id through another node land in between; this write then
        found no record of the version it replaced, wrote one, and the removed version came
        back (``tests/unit/cluster/test_catalog_update.py``). Another writer of the key holding
        the lock for longer than the wait: 503 SlowDown, not a conditional write's 409."""
        try:
            return await self.put_version_checked(bucket, key, entry, _anything, small=small,
                                                  finished_upload=finished_upload)
        except errors.ConditionalRequestConflict:
            raise errors.SlowDown(f"{bucket}/{key}: other writes of this key hold it; retry") from None

    async def put_version_checked(self, bucket: str, key: str, entry: dict, judge: Callable[[dict | None], None], *,
                                  small: bytes | None = None, finished_upload: str | None = None) -> list[dict]:
        """``put_version`` of a conditional write: judged and committed under the key's lock on
        its index replicas (``ReplicatedIndex.write_checked``), the version records written
        in between."""
        replaced: list[dict] = []
        recorded: list[bool] = []

        async def records(current: dict | None) -> None:
            # (again if a DeleteBucket's mark refused the first try: what this try replaced)
            replaced[:] = await self._put_version_records(bucket, key, entry, current)
            recorded[:] = [True]

        try:
            await self._creating(bucket, lambda: self.index.write_checked(bucket, key, entry, judge, small,
                                                                          before_commit=records))
        except errors.WriteQuorumLost:
            raise  # the commit may still land: the version's record stays with it
        except BaseException:
            if recorded:
                # Refused after its record was written (the locks held too long, the bucket's
                # index moving): nothing committed, and the engine removes the write's data. Its
                # record went on naming that data: a version listed that no GET could read and
                # no migration could move (tests/cluster/test_growth_versions.py, session 53).
                await asyncio.shield(self._drop_version_record(bucket, key, entry))
            raise
        if finished_upload is not None:
            await self.delete_upload(bucket, finished_upload)
        return replaced

    async def _put_version_records(self, bucket: str, key: str, entry: dict, current: dict | None) -> list[dict]:
        """The version records a write of ``entry`` makes over ``current`` (the key's entry):
        the current one's record if it had none, the new one's; replaces those of the same
        version id. Returns the entries it replaced."""
        records = await self._version_records(bucket, key)
        replaced: list[dict] = []
        if current is not None and current.get("vid", "null") != entry["vid"] \
                and not any(e.get("wid") == current["wid"] for _, e in records):
            await self.index.put(bucket + VERSIONS, version_record(key, current), _plain(current))
        for rkey, old in records:
            if old.get("vid") == entry["vid"] and old.get("wid") != entry["wid"]:
                await self.index.delete(bucket + VERSIONS, rkey, old["wid"])
                replaced.append(old)
        if current is not None and current.get("vid", "null") == entry["vid"] and current["wid"] != entry["wid"] \
                and not any(r["wid"] == current["wid"] for r in replaced):
            replaced.append(_plain(current))
        await self.index.put(bucket + VERSIONS, version_record(key, entry), entry)
        return replaced

    async def _drop_version_record(self, bucket: str, key: str, entry: dict) -> None:
        try:
            await self.index.delete(bucket + VERSIONS, version_record(key, entry), entry["wid"])
        except (errors.BucketsError, asyncio.TimeoutError) as exc:
            log.warning("%s/%s: the record of the failed write %s could not be removed (%s): a version is "
                        "listed that does not read", bucket, key, entry["wid"], exc)

    async def delete_version(self, bucket: str, key: str, vid: str) -> dict | None:
        current = await self.index.get(bucket, key)
        records = await self._version_records(bucket, key)
        target = next((e for _, e in records if e.get("vid") == vid), None)
        for rkey, e in records:
            if e.get("vid") == vid:
                await self.index.delete(bucket + VERSIONS, rkey, e["wid"])
        if current is not None and current.get("vid", "null") == vid:
            target = target or _plain(current)
            rest = [e for _, e in records if e.get("vid") != vid]
            wid = current["wid"]

            def still_current(seen: dict | None) -> None:
                if seen is None or seen.get("vid", "null") != vid or seen.get("wid") != wid:
                    raise _NothingThere()  # a write through another node replaced it: it stays current

            # The next newest becomes current (or the key has none left), only over the version
            # removed: a put here made an object acknowledged meanwhile through another node
            # (current, with no version record yet) disappear.
            try:
                await self._creating(bucket, lambda: self.index.write_checked(
                    bucket, key, _plain(rest[0]) if rest else None, still_current))
            except _NothingThere:
                pass
            # A write of the key meanwhile kept the removed version as a version record first
            # (it was current when that write read the key): that record goes too.
            for rkey, e in await self._version_records(bucket, key):
                if e.get("vid") == vid:
                    await self.index.delete(bucket + VERSIONS, rkey, e["wid"])
        return target

    async def update_version(self, bucket: str, key: str, entry: dict) -> bool:
        """The key's current entry and its version record, where they are ``entry``'s version,
        replaced by ``entry``; each a checked write on the key's replicas, so it lands only
        while that version is there. A read then a put put the object back: a PUT acknowledged
        through another node between the two was replaced by the older version it had replaced
        (``tests/unit/cluster/test_catalog_update.py``). Each write waits out a DeleteBucket under
        way (``_creating``): its replicas refuse changed entries while its mark stands, and a
        change of an object is a write into a bucket that is not empty, which the deletion
        leaves (the cluster HTTP fuzzer found a tag removal answering 503 there)."""
        entry = _plain(entry)
        vid, wid = entry.get("vid", "null"), entry["wid"]

        def same_version(seen: dict | None) -> None:
            if seen is None or seen.get("vid", "null") != vid or seen.get("wid") != wid:
                raise _NothingThere()

        found = False
        small = self.get_small(bucket, key, wid)
        try:
            await self._creating(bucket, lambda: self.index.write_checked(bucket, key, entry, same_version, small))
            found = True
        except _NothingThere:
            pass
        if self.versioned(bucket):
            for rkey, e in await self._version_records(bucket, key):
                if e.get("vid", "null") == vid and e["wid"] == wid:
                    try:
                        await self._creating(bucket, lambda rkey=rkey: self.index.write_checked(
                            bucket + VERSIONS, rkey, entry, same_version))
                        found = True
                    except _NothingThere:
                        pass
        return found

    async def get_version(self, bucket: str, key: str, vid: str) -> dict | None:
        current = await self.index.get(bucket, key)
        if current is not None and current.get("vid", "null") == vid:
            return current
        if not self.versioned(bucket):
            return None
        return next((_plain(e) for _, e in await self._version_records(bucket, key) if e.get("vid") == vid), None)

    async def noncurrent_versions(self, bucket: str, key: str) -> list[dict]:
        """A key's versions other than the current one, newest first (heal, sweep)."""
        if not self.versioned(bucket):
            return []
        current = await self.index.get(bucket, key)
        wid = current["wid"] if current is not None else None
        return [_plain(e) for _, e in await self._version_records(bucket, key) if e["wid"] != wid]

    async def live_entries(self, bucket: str, key: str) -> list[dict]:
        """Every entry that names a write of ``key``: its current one and its version records
        (a noncurrent version keeps the files its write has, wherever they were when it was
        replaced). A migration removes no file that one of them names (``StoreMover``)."""
        current = await self.index.get(bucket, key)
        out = [current] if current is not None else []
        return out + [e for _, e in await self._version_records(bucket, key)]

    def versioned(self, bucket: str) -> bool:
        """Whether ``bucket`` has had versioning (enabled or suspended): it may have version records."""
        record = self.get_bucket(bucket)
        return record is not None and record.get("versioning") is not None

    async def _version_records(self, bucket: str, key: str) -> list[tuple[str, dict]]:
        """Every version record of one key, newest first."""
        out: list[tuple[str, dict]] = []
        after = ""
        while True:
            objects, _, truncated = await self.index.list(bucket + VERSIONS, key + "\0", "", after, 1000,
                                                          full=True, markers=True)
            out.extend(objects)
            if not truncated or not objects:
                return out
            after = objects[-1][0]

    async def list_versions(self, bucket: str, prefix: str, delimiter: str, key_marker: str,
                            version_marker: str, limit: int):
        """One ListObjectVersions page: the bucket's current entries (delete markers included)
        say which keys exist, in order; each key's versions come from its records, merged with
        the current entry when that has none (an object older than versioning)."""
        items: list[tuple[str, dict, bool]] = []
        prefixes: list[str] = []

        def full() -> bool:
            return len(items) + len(prefixes) >= limit

        def cursor() -> tuple[str, str]:
            last_item = items[-1] if items else None
            last_prefix = prefixes[-1] if prefixes else None
            if last_prefix is not None and (last_item is None or last_prefix.encode() > last_item[0].encode()):
                return last_prefix, ""
            assert last_item is not None
            return last_item[0], last_item[1].get("vid", "null")

        async def expand(key: str, current: dict | None, after_vid: str | None) -> bool:
            records = [e for _, e in await self._version_records(bucket, key)] if self.versioned(bucket) else []
            versions = _merge_current(records, current)
            if after_vid is not None:
                ids = [e.get("vid", "null") for e in versions]
                if after_vid not in ids:
                    return True
                versions = versions[ids.index(after_vid) + 1:]
            latest = current.get("vid", "null") if current is not None else None
            for e in versions:
                if full():
                    return False
                items.append((key, _plain(e), e.get("vid", "null") == latest))
            return True

        after = key_marker
        if key_marker and version_marker and key_marker.startswith(prefix):
            if not await expand(key_marker, await self.index.get(bucket, key_marker), version_marker):
                return items, prefixes, True, cursor()
        while True:
            room = limit - len(items) - len(prefixes)
            if room <= 0:
                more, more_cps, _ = await self.index.list(bucket, prefix, delimiter, after, 1, markers=True)
                return items, prefixes, bool(more or more_cps), (cursor() if more or more_cps else None)
            objects, cps, truncated = await self.index.list(bucket, prefix, delimiter, after, min(room, 256),
                                                            full=True, markers=True)
            merged = sorted([(k.encode(), k, e) for k, e in objects] + [(p.encode(), p, None) for p in cps],
                            key=lambda i: i[0])
            for _, name, entry in merged:
                if entry is None:
                    if full():
                        return items, prefixes, True, cursor()
                    prefixes.append(name)
                elif not await expand(name, entry, None):
                    return items, prefixes, True, cursor()
                after = name
            if not truncated:
                return items, prefixes, False, None

    # -- conditional writes ------------------------------------------------------------------------
    def key_lease(self, bucket: str, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold a short cluster-wide lease on one key while a conditional write checks its
        condition and commits (``If-None-Match: *``, ``If-Match``): two nodes' conditional writes
        to one key then take turns, so the second sees the first's object and fails its
        condition (``409 ConditionalRequestConflict``) instead of both being acknowledged. The
        lease is a control-plane record taken with a compare-and-set and removed after; one left
        by a node that died expires after ``LEASE_SECONDS``. Unconditional writes take none: one
        that lands before the check is seen by the check's quorum read, one that lands after
        simply comes later."""
        return self._lease(
            LEASE_PREFIX + xxhash.xxh3_128_hexdigest(f"{bucket}\0{key}".encode()), f"{bucket}/{key}",
            lambda: errors.ConditionalRequestConflict(
                "Another conditional write to this key is in progress; retry the request.",
                resource=f"/{bucket}/{key}"))

    def upload_lease(self, bucket: str, upload_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold a cluster-wide lease on one multipart upload while a node completes or aborts it,
        or records a part of it: such requests through different nodes take turns, as the
        upload lock makes them take turns on one node. Without it, two Completes through two
        nodes each moved the parts' files into their own object and both were acknowledged,
        with one object's entry and the other's files (the object unreadable); an UploadPart
        replacing a part removed the files a Complete was moving. Waited for at most
        ``LEASE_WAIT``: then ``409 OperationAborted``, as S3 answers a conflicting operation in
        progress."""
        return self._lease(
            LEASE_PREFIX + "upload:" + xxhash.xxh3_128_hexdigest(f"{bucket}\0{upload_id}".encode()),
            f"upload {upload_id} of {bucket}",
            lambda: errors.OperationAborted(resource=f"/{bucket}?uploadId={upload_id}"))

    @contextlib.asynccontextmanager
    async def _lease(self, name: str, what: str, busy: Callable[[], errors.BucketsError]) -> AsyncIterator[None]:
        """The control-plane record ``name`` held (compare-and-set from absent or expired),
        waiting up to ``LEASE_WAIT`` for its holder (then ``busy()`` is raised); removed after."""
        token = os.urandom(8).hex()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEASE_WAIT
        version = None
        pause = 0.01
        while version is None:
            record = self.control.snapshot.jobs.get(name)
            now = time.time()
            if record is None or float((record.value or {}).get("until", 0)) < now:
                try:
                    answer = await self.control.apply("put_job", key=name, value={"owner": token, "until": now + LEASE_SECONDS},
                                                      expected_version=record.version if record is not None else 0)
                    version = int(answer["version"])
                    break
                except errors.BucketsError as exc:
                    if exc.code != "VersionConflict":
                        raise
                    await self.control.read(linearizable=True)
            if loop.time() > deadline:
                raise busy()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)
        try:
            yield
        finally:
            try:
                await self.control.apply("delete_job", key=name, expected_version=version)
            except errors.BucketsError as exc:  # taken over after expiry, or the plane is away: it expires
                log.info("lease on %s not released: %s", what, exc)

    # -- multipart uploads ------------------------------------------------------------------------
    async def create_upload(self, bucket: str, upload_id: str, rec: dict) -> None:
        await self._creating(bucket, lambda: self.index.put(
            bucket + UPLOADS, upload_id, dict(rec, wid=upload_id, mt=rec.get("init", time.time()), parts={})))

    async def _records(self, bucket: str, prefix: str, delimiter: str) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        after = ""
        while True:
            objects, _, truncated = await self.index.list(bucket + UPLOADS, prefix, delimiter, after, 1000,
                                                          full=True)
            out.extend(objects)
            if not truncated or not objects:
                return out
            after = objects[-1][0]

    async def get_upload(self, bucket: str, upload_id: str) -> dict | None:
        rec = await self.index.get(bucket + UPLOADS, upload_id)
        if rec is None:
            return None
        parts = {}
        for _, part in await self._records(bucket, upload_id + "/", ""):
            parts[str(part["n"])] = part["part"]
        return dict(rec, parts=parts)

    async def put_part(self, bucket: str, upload_id: str, number: int, part: list) -> list | None:
        """Record ``part`` as the upload's part ``number``; the part it replaced (whose files the
        caller removes), or None."""
        replaced: list[dict | None] = []

        async def write() -> dict | None:
            old = await self.index.get(bucket + UPLOADS, _part_key(upload_id, number))
            # Written again (``_creating``: replicas refused it during a DeleteBucket's check) after
            # an attempt that some replica took: the read finds this very part. It replaced what
            # the first attempt found, not itself (its files went, under a record naming them).
            if old is None or old.get("wid") != part[0]:
                replaced[:] = [old]
            await self.index.put(bucket + UPLOADS, _part_key(upload_id, number),
                                 {"wid": part[0], "mt": part[4], "n": number, "part": part, "size": part[1],
                                  "etag": part[2]})
            return replaced[0] if replaced else None

        old = await self._creating(bucket, write)
        return old["part"] if old is not None else None

    async def delete_upload(self, bucket: str, upload_id: str) -> None:
        await self.index.delete(bucket + UPLOADS, upload_id, upload_id)
        for key, part in await self._records(bucket, upload_id + "/", ""):
            await self.index.delete(bucket + UPLOADS, key, part.get("wid", ""))

    async def list_uploads(self, bucket: str) -> list[dict]:
        return [dict(rec, parts={}) for _, rec in await self._records(bucket, "", "/")]


    # -- index generations and moves ------------------------------------------------------------
    def tables_by_generation(self) -> dict[int, PartitionTable]:
        """The partition table of every generation not retired (an index placed on an old
        generation needs it for as long as a bucket's ``index_gen`` points at it)."""
        topology = self.control.snapshot.topology
        if topology is None:
            return {}
        return {g.generation: g.partition_table() for g in topology.history if g.table is not None}

    def index_generations_in_use(self) -> set[int]:
        """Generations some bucket's index is placed by (index_gen, index_next, index_prev):
        none of them may be retired."""
        used: set[int] = set()
        for rec in self.control.snapshot.buckets.values():
            used.update(g for g in index_phase(rec.settings) if g is not None)
            if rec.settings.get("index_drop") is not None:
                used.add(int(rec.settings["index_drop"]))
        return used

    def buckets_to_move(self, to_gen: int) -> list[str]:
        """Buckets (name order) whose index is not plainly on ``to_gen``: what a migration to
        ``to_gen`` must still move (a bucket created during the migration under the previous
        generation included)."""
        return sorted((n for n, r in self.control.snapshot.buckets.items()
                       if index_phase(r.settings) != (to_gen, None, None) or "index_drop" in r.settings),
                      key=str.encode)

    async def _set_phase(self, bucket: str, wait_applied: WaitApplied, *, values: dict | None = None,
                         unset: list[str] | None = None) -> None:
        """One control-plane step of an index move, then wait until every live node applied it."""
        await self.control.apply("update_bucket", name=bucket, set=values or {}, unset=unset or [])
        await wait_applied(self.control.snapshot.applied)

    async def move_bucket_index(self, bucket: str, to_gen: int, *, wait_applied: WaitApplied | None = None) -> dict:
        """Move ``bucket``'s index (and its uploads shadow bucket) to the replica set of
        generation ``to_gen``; resumable from any phase (a new coordinator calls it again):

        (a) ``index_next = to_gen``: every node writes both sets (a quorum in each), reads the
            old; (b) once every live node applied (a), every new replica pulls the entries and
            tombstones from a read quorum of the old set (the anti-entropy exchange); (c)
            ``index_gen = to_gen, index_prev = old``: reads the new set, writes still both;
            (d) once every live node applied (c), ``index_prev`` is unset (``index_drop = old``
            recorded) and, once that is applied everywhere, the old-only replicas drop the
            bucket's entries and ``index_drop`` goes.

        ``wait_applied(n)`` returns once every live node's control snapshot has ``applied >=
        n`` (default: the one the catalog was built with; ``applied_waiter`` makes one from a
        peer call). Raises ``NoSuchBucket`` if the bucket is gone, ``WriteQuorumLost`` if the
        copy could not reach enough replicas (call again later)."""
        wait_applied = wait_applied or self.wait_applied
        if wait_applied is None:
            raise errors.ServiceUnavailable("an index move needs to know when every node applied a "
                                            "control-plane change (no wait_applied was given)")
        snap = await self.control.read(linearizable=True)
        rec = snap.buckets.get(bucket)
        if rec is None:
            raise errors.NoSuchBucket(resource=bucket, BucketName=bucket)
        if snap.topology is None or snap.topology.generation_record(to_gen) is None:
            raise errors.InvalidArgument(f"no generation {to_gen} to move the index of {bucket!r} to")
        gen, nxt, prev = index_phase(rec.settings)
        pending_drop = rec.settings.get("index_drop")
        shadow = (bucket, *(bucket + s for s in SHADOWS))
        result = {"bucket": bucket, "from_gen": gen, "to_gen": to_gen, "copied": 0, "dropped": 0}
        if pending_drop is not None and prev is None:  # an earlier move stopped between (d) and its drop
            result["dropped"] += await self._finish(bucket, int(pending_drop), gen, wait_applied, unset_prev=False)
        if gen != to_gen and prev is not None:
            # An earlier move (to gen) stopped after (c): finish it before starting this one.
            result["dropped"] += await self._finish(bucket, prev, gen, wait_applied, unset_prev=True)
            prev = None
        if gen != to_gen:
            old = gen
            if nxt != to_gen:
                # (a). The new-only replicas start empty: nothing is written there yet, and an
                # entry left by an earlier stay of the index cannot come back through the copy
                # (its delete's tombstone may have been forgotten since: ``forget_tombstones``),
                # so one that does not empty its replica stops the move (retried later).
                fresh = set(self.placer.replica_set(bucket, to_gen)) - set(self.placer.replica_set(bucket, old))
                for name in shadow:
                    await self.index.drop_replicas(name, sorted(fresh), strict=True)
                await self._set_phase(bucket, wait_applied, values={"index_next": to_gen})
            else:
                await wait_applied(self.control.snapshot.applied)  # resumed after (a): make sure
            # (b)
            sources, targets = self.placer.replica_set(bucket, old), self.placer.replica_set(bucket, to_gen)
            if set(sources) != set(targets):
                for name in shadow:
                    result["copied"] += await self.index.copy_replicas(name, sources, targets)
            # (c)
            await self._set_phase(bucket, wait_applied, values={"index_gen": to_gen, "index_prev": old},
                                  unset=["index_next"])
            prev = old
        elif nxt is not None:  # already on to_gen with a stray index_next (an abandoned move)
            await self._set_phase(bucket, wait_applied, unset=["index_next"])
        if prev is not None:  # (d)
            result["dropped"] += await self._finish(bucket, prev, to_gen, wait_applied, unset_prev=True)
        if result["copied"] or result["dropped"] or gen != to_gen:
            log.info("index of %s moved from generation %d to %d (%d entries copied, %d dropped)",
                     bucket, result["from_gen"], to_gen, result["copied"], result["dropped"])
        return result

    async def _finish(self, bucket: str, old: int, new: int, wait_applied: WaitApplied, *, unset_prev: bool) -> int:
        """Step (d): once every node reads the new set, stop writing the old one (the pending
        drop is recorded as ``index_drop``, so a coordinator that dies here still drops), then
        the old-only replicas forget the bucket."""
        if unset_prev:
            await wait_applied(self.control.snapshot.applied)
            await self._set_phase(bucket, wait_applied, values={"index_drop": old}, unset=["index_prev"])
        dropped = await self._drop_old(bucket, old, new)
        await self.control.apply("update_bucket", name=bucket, set={}, unset=["index_drop"])
        return dropped

    async def _drop_old(self, bucket: str, old: int, new: int) -> int:
        try:
            gone = set(self.placer.replica_set(bucket, old)) - set(self.placer.replica_set(bucket, new))
        except LookupError:  # the old generation's table was retired: nothing to name
            return 0
        dropped = 0
        for name in (bucket, *(bucket + s for s in SHADOWS)):
            dropped += await self.index.drop_replicas(name, sorted(gone))
        return dropped


class ClusterUserTable:
    """The user table ``UserStore`` works on, kept in the control plane (secrets stay sealed)."""

    def __init__(self, control: ControlPlane, wait_settled: WaitApplied | None = None) -> None:
        self.control = control
        self.wait_settled = wait_settled  # (``settle``)

    def get_user(self, access_key: str) -> dict | None:
        rec = self.control.snapshot.users.get(access_key)
        if rec is None:
            return None
        return {"secret": rec.secret, "enabled": rec.enabled, "created": rec.created, "policy": rec.policy}

    def list_users(self) -> list[tuple[str, dict]]:
        return [(ak, self.get_user(ak)) for ak in sorted(self.control.snapshot.users)]  # type: ignore[misc]

    # Named policies are cluster settings ``policy:<name>``: one key each, so two admins
    # changing different policies never overwrite each other.
    def get_policy(self, name: str) -> dict | None:
        value = self.control.snapshot.settings.get(POLICY_PREFIX + name)
        return dict(value) if value is not None else None

    def list_policies(self) -> list[tuple[str, dict]]:
        settings = self.control.snapshot.settings
        return [(k[len(POLICY_PREFIX):], dict(settings[k])) for k in sorted(settings) if k.startswith(POLICY_PREFIX)]

    async def commit(self, ops: list[Op]) -> None:
        for op in ops:
            if op.kind == "put_user":
                value: dict[str, Any] = op.value
                await self.control.apply("put_user", access_key=op.name, secret=value["secret"],
                                         status="enabled" if value.get("enabled", True) else "disabled",
                                         policy=value.get("policy", "readwrite"))
            elif op.kind == "delete_user":
                await self.control.apply("delete_user", access_key=op.name)
            elif op.kind == "put_policy":
                await self.control.apply("set_settings", set={POLICY_PREFIX + op.name: op.value})
            elif op.kind == "delete_policy":
                await self.control.apply("set_settings", unset=[POLICY_PREFIX + op.name])
            else:
                raise ValueError(f"not a user change: {op.kind}")
        await settle(self.control, self.wait_settled)
