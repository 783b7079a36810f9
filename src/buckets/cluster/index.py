"""The cluster's object index: the location registry, partitioned by bucket and replicated.

Each bucket's entries live on ``N = min(3, nodes)`` replica nodes (the first distinct nodes of
the partition table row that the bucket name hashes to), in each replica's own LMDB
``Registry``. Writes carry a version ``(hlc, wid)`` from a hybrid logical clock and are merged
last-writer-wins (``merge_object``); deletes are tombstones. A write is acknowledged once
``W = N // 2 + 1`` replicas have it; a read asks ``R = N - W + 1`` replicas and takes the newest
version, so every read quorum overlaps every write quorum: once a PUT or DELETE is
acknowledged anywhere, a GET, HEAD or listing anywhere sees it (or something newer).

Replicas that missed a write are repaired on read: a read that met replicas disagreeing puts
the newest version on a write quorum before it returns it (ABD's write-back, so no later read
can return an older one), and by a periodic anti-entropy pass (digests of each
bucket's versions, hashed into a fixed number of ranges; differing ranges are exchanged).

The per-node LRU cache in front of each LMDB stays correct by construction: it caches that
replica's own state, which moves forward through ``merge_object`` (and back only through
``retract_object``, the undo of a failed write's merge, updated in the same commit); freshness
comes from the read quorum, never from the cache alone.

Must not: know about disks, shards or HTTP. Transport is a callable per node
(``IndexTransport``); the peer RPC layer provides it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from buckets.runtime import cancel_and_wait, wait_for
from buckets import errors
from buckets.cluster.leases import HOLDER_WAIT, LEASE_SECONDS, LeaseKeeper, Promises, promise_answer
from buckets.cluster.leases import holders as lease_holders
from buckets.cluster.rpcerrors import BadPeerRequest
from buckets.engine import hedge
from buckets.engine.replaced import MERGE_AGAIN_WITHIN
from buckets.registry import Op, Registry
from buckets.registry.store import JUDGED, LISTING_FIELDS, NOT_JUDGED, UNSEEN, version_tuple
from buckets.registry.digests import DIGEST_RANGES

log = logging.getLogger("buckets.cluster.index")

# Anti-entropy's passes compare a bucket's differing ranges this many times more, this far apart,
# before exchanging them (``ReplicatedIndex.exchange``).
SETTLE_CHECKS = 2
SETTLE_SECONDS = 1.0
VERSIONS_BATCH = 100_000  # keys per anti-entropy "versions" exchange (about 5 MB of answer)
SMALL_COPIES = 1024  # small objects' bytes kept from replicas' answers (each at most 16 KiB)
RECORD_SETS = 256  # small objects' shard records kept from replicas' answers until their GET reads them
DROPPED_REMEMBERED = 4096  # deleted buckets a replica dropped while its node still had them (by name)
# A delete's tombstone older than this (by its version's clock) is forgotten once every replica
# of its bucket's index holds exactly it (``ReplicatedIndex.forget_tombstones``, from each
# bucket's first replica, every TOMBSTONE_SWEEP seconds: cluster/node.py). Until then a replica
# that missed the delete could still hold the entry it deleted, and would spread it back; a
# replica that is down holds the forgetting back. Far longer than any write can be in flight
# (a blind PUT merged again is refused past MERGE_AGAIN_WITHIN) or an anti-entropy pass takes.
TOMBSTONE_TTL = 7 * 24 * 3600.0  # (the default of the setting ``tombstone_retention``)
TOMBSTONE_SWEEP = 3600.0
TOMBSTONE_BATCH = 1000  # tombstones judged per round of calls


def tombstone_sweep_interval(retention: float) -> float:
    """How often a node sweeps its buckets' old tombstones: hourly, or twice per retention when
    that is shorter (a test's), never more than once a second."""
    return min(TOMBSTONE_SWEEP, max(1.0, retention / 2))


# A PUT merged without a read first is merged again under a later version when a replica holds
# a newer one (ReplicatedIndex.put_displacing); beyond this many rounds the newer ones are
# concurrent writes.
DISPLACE_ATTEMPTS = 4

# Keys an index replica remembers its latest versions of, and how many (IndexReplica._recent).
RECENT_MERGES = 16384
RECENT_PAST = 8

# A blind PUT's merge can be undone (``retract``) while it is this fresh and no read was
# answered with it (IndexReplica._fresh); at most this many per bucket are remembered.
FRESH_SECONDS = 30.0
FRESH_MAX = 4096

# A read whose write-back meets a newer version (on a replica that never held the version
# read) reads again, at most this many times in all; then it fails with a 503.
READ_ROUNDS = 3
# A listing page read again because failed writes of its bucket were undone meanwhile: at
# most this many reads, then a 503.
SCAN_ROUNDS = 10
_AGAIN = object()

# A conditional write's key lock (``write_checked``): held on a quorum of the key's replicas
# from the condition's check to the commit (milliseconds); one whose writer died expires after
# KEY_LOCK_SECONDS, and the writer gives up rather than commit after KEY_LOCK_SECONDS / 2. A
# write that finds the key locked on a replica waits there up to KEY_LOCK_WAIT for it to end.
KEY_LOCK_SECONDS = 10.0
KEY_LOCK_WAIT = 3.0
# A key whose lock ended here without its commit (unlocked, or expired) is "unsettled" for
# this long: the conditional write may have committed on the replicas whose commit did reach,
# with a version newer than later blind writes, and a blind write merged here says so, so its
# writer hears every replica before it is acknowledged (``_gather_sets``). When the writer's
# unlock names the commit's version (``committing``), the key is unsettled only while this
# replica holds an older one, and lookups and conditional writes' checks through it hear every
# replica too (``IndexReplica.unsettled``). Long enough for two anti-entropy passes
# (cluster/node.py), which carry such a commit to every replica that is up.
UNSETTLED_SECONDS = 150.0
UNSETTLED_MAX = 4096
# How long a writer keeps a replica's answer that its registry's disk is at its reserve
# (``ReplicatedIndex.check_room``) without a newer answer: then one write goes in and asks again.
FULL_MEMORY = 1.0


class HybridClock:
    """Hybrid logical clock (Kulkarni et al.): milliseconds << 16 | a counter. Monotonic on
    this node, and never behind any version this node has seen from another, so a write
    that follows another in real time, through any nodes, gets a larger version even when
    the clocks of those nodes disagree by less than the gap."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._last = 0

    def now(self) -> int:
        physical = int(self._wall() * 1000) << 16
        self._last = max(self._last + 1, physical)
        return self._last

    def observe(self, remote: int) -> None:
        if remote > self._last:
            self._last = remote

    def age(self, version: int) -> float:
        """Seconds on this node's wall clock since ``version``'s milliseconds (negative when it
        is ahead of this clock)."""
        return self._wall() - (version >> 16) / 1000.0


# (node id, method, args) -> result. Raises errors.BucketsError subclasses on failure.
IndexTransport = Callable[[str, str, dict], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Quorum:
    n: int
    w: int
    r: int

    @classmethod
    def for_replicas(cls, n: int) -> "Quorum":
        w = n // 2 + 1
        return cls(n, w, n - w + 1)


def _ts(value: Sequence) -> tuple:
    """A version off the wire: ``(hlc, wid)`` or, for an entry the migration moved,
    ``(hlc, wid, gen)`` (greater than ``(hlc, wid)``, less than any newer write)."""
    return version_tuple(value)


@dataclass(frozen=True, slots=True)
class IndexPlacement:
    """Where one bucket's index lives right now: the replicas a read asks (``read``) and the
    replica sets a write must reach, each with its own write quorum (``write``). Outside an
    index move both are the same single set; during a move a write needs a quorum in the old
    set and in the new one (``buckets.cluster.catalog.IndexPlacer`` computes the phases)."""

    read: tuple[str, ...]
    write: tuple[tuple[str, ...], ...]

    @classmethod
    def single(cls, nodes: Sequence[str]) -> "IndexPlacement":
        nodes = tuple(nodes)
        return cls(nodes, (nodes,))

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node that holds the bucket's index in this phase (read set first)."""
        out = list(self.read)
        for s in self.write:
            out.extend(n for n in s if n not in out)
        return tuple(out)


@dataclass(slots=True)
class _Fresh:
    """A blind PUT's version merged on this replica lately (``IndexReplica._fresh``)."""

    version: tuple
    since: float  # time.monotonic() of the merge
    served: bool = False  # a read was answered with it: it can no longer be undone
    undoing: asyncio.Event | None = None  # set once a ``retract`` of it has committed (or not)


class IndexReplica:
    """What one node serves to its peers for the buckets it replicates (the RPC handlers)."""

    def __init__(self, registry: Registry,
                 records: Callable[[str, str, dict], Awaitable[list]] | None = None) -> None:
        self.registry = registry
        # The keys this replica merged lately, hash((bucket, key)) -> (hash of the version held;
        # the versions it held before, oldest first, at most RECENT_PAST; the conditional
        # writes' commits among the versions held since, oldest first, at most RECENT_PAST:
        # (version, the version its check judged the key at); whether those versions go back
        # to the key's first (it held nothing before)), so a refusal can say whether the
        # refused version was held here before (``put_displacing``) and whether every
        # conditional write committed above it saw it, and ``holds`` can tell a version never
        # held here from one older than it remembers. At most RECENT_MERGES keys, up to a few
        # kilobytes each; it matters for the seconds a write is in flight.
        self._recent: OrderedDict[int, tuple[int, tuple[tuple, ...], tuple[tuple[tuple, tuple | None], ...], bool]] \
            = OrderedDict()
        # The records of a small write's slots on this node's disks, [[slot, bytes], ...]
        # (``smalllog.local_records``): a ``get`` for a GET answers them with the entry.
        self.records = records
        self.tombstones_forgotten = 0  # (``forget_tombs``; the metric buckets_index_tombstones_forgotten)
        # Read leases (``buckets.cluster.leases``, set up by its ``LeaseKeeper``): the promises
        # this replica keeps, which node holds each bucket's lease, the lookups sent to this
        # node as a holder, and the hook that tracks the merges on a bucket it holds.
        self.promises: Promises | None = None
        self.holder_of: Callable[[str], str | None] | None = None
        self.serve_read: Callable[[dict], Awaitable[dict]] | None = None
        self.on_merge: Callable[[str, str], Callable[[tuple | None], None] | None] | None = None
        self.on_get: Callable[[str], bool] | None = None  # True: this node holds the bucket's lease
        # True for a node whose calls lag far behind the other nodes' here (``engine/hedge.py``):
        # it gets no promise (a lease on a slow holder would make every read wait for it).
        self.holder_slow: Callable[[str], bool] | None = None
        # The node's hybrid clock passes every version merged here (``ReplicatedIndex`` sets it):
        # a write through this node after one that reached its replica gets a newer version
        # at once, instead of being refused and merged again (or worse, see ``put_displacing``).
        self.observe: Callable[[int], None] | None = None
        # Seconds on this node's clock since a version (``HybridClock.age``; ``ReplicatedIndex``
        # sets it): a blind PUT merged again too long after its first version is refused.
        self.age: Callable[[int], float] | None = None
        # Whether a bucket exists as this node's control plane has it (None: every bucket does).
        self.bucket_known: Callable[[str], bool] | None = None
        # Whether a DeleteBucket of a bucket is under way as this node's control plane has it
        # (its mark applied here): writers' new entries into it are refused (``_refuse_new``).
        self.bucket_deleting: Callable[[str], bool] | None = None
        # When the bucket of a name was created, as this node's control plane has it (None: no
        # such bucket): a read's write-back or an anti-entropy copy names the bucket it read
        # (``created``) and is refused into another one of that name (``_refuse_other``).
        self.bucket_created: Callable[[str], float | None] | None = None
        # The buckets deleted whose index this replica dropped while its node still had them
        # (behind the deletion on the control plane), name -> their ``created``.
        self._dropped: OrderedDict[str, float] = OrderedDict()
        # A blind PUT's merges applied here lately, bucket -> key -> _Fresh: a ``retract`` of
        # one undoes it only if no lookup, listing or lock was answered with that version
        # and no write-back of it arrived since (a read that returned it wrote it back to a
        # quorum that includes this replica: undone here, a later read of the others could
        # go back in time).
        self._fresh: dict[str, OrderedDict[str, _Fresh]] = {}
        self.undos: dict[str, int] = {}  # retracts begun, counted by bucket
        # Conditional writes' key locks taken here whose commit has not arrived, (bucket, key)
        # -> lock id; and the keys whose lock ended without its commit lately (the writer's
        # unlock, or the lock's expiry), (bucket, key) -> (lock id, time.monotonic(), the
        # commit's version if the writer's unlock named it).
        self._locked: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._unsettled: OrderedDict[tuple[str, str], tuple[str, float, tuple | None]] = OrderedDict()
        self.seq = 0  # merges begun, counted
        self._merging: dict[str, dict[int, None]] = {}  # bucket -> merges committing now (their seq)

    def merging_since(self, bucket: str, seq: int) -> bool:
        """Whether a merge of ``bucket`` begun before the ``seq``-th is still committing."""
        running = self._merging.get(bucket)
        return bool(running) and min(running) < seq  # type: ignore[arg-type]

    async def merge(self, args: dict) -> dict:
        bucket = args["bucket"]
        if self.bucket_known is not None and not self.bucket_known(name := bucket.split("\x01", 1)[0]):
            # A bucket deleted (or created so lately that this node has not applied it yet): a
            # replica that missed the deletion (down then) can still hold the old bucket's
            # entries, and its reads' write-backs (its scanner's heal, anti-entropy) would put
            # them into the replicas that dropped them, then into a bucket created again under
            # that name (``INDEX_DROP``). Refused: not an answer toward the writer's quorum.
            raise errors.NoSuchBucket(f"{name!r} is not a bucket on this node's control plane", resource=name)
        if args.get("created") is not None:
            self._refuse_other(bucket, args["created"])
        if args.get("entry") is not None and (args.get("new") or args.get("displaced") or args.get("lock")):
            self._refuse_new(bucket)
        if self.observe is not None and args.get("ts") is not None:
            self.observe(_ts(args["ts"])[0])
        seq = self.seq
        self.seq += 1
        running = self._merging.setdefault(bucket, {})
        running[seq] = None
        # Before the version can be read here: a lease holder marks the key as merging.
        done = self.on_merge(bucket, args["key"]) if self.on_merge is not None else None
        applied: tuple | None = None
        try:
            answer = await self._merge(args)
            if answer.get("applied"):
                applied = _ts(args["ts"])
        finally:
            running.pop(seq, None)
            if not running and self._merging.get(bucket) is running:
                del self._merging[bucket]
            if done is not None:
                done(applied)
        if not self.registry.has_room():
            # This node's registry disk is at its free-space reserve: writers stop sending new
            # objects to the buckets it replicates (``ReplicatedIndex.check_room``), as a single
            # node does (``Registry.check_room``), so deletions still fit.
            answer["room"] = False
        return promise_answer(answer, self.promises, bucket)

    def _refuse_late(self, args: dict) -> None:
        """A blind PUT merged again (``put_displacing``: ``again`` is its first version) more
        than ``MERGE_AGAIN_WITHIN`` after that version, on this node's clock, is refused
        (``MergedTooLate``). Its writer checks the same before it sends, but the merge can be
        held up after that check (a paused process, a stalled link); landing after another
        node removed the write's data (engine/replaced.py: once one of its versions is
        ``COME_BACK_WINDOW`` old), it made the key's state a write with no data. Checked before
        each try of the commit, so a wait for a conditional write's key lock counts too."""
        again = args.get("again")
        if again is None or self.age is None:
            return
        if not isinstance(again, int) or isinstance(again, bool):
            raise errors.InvalidArgument(f"a merge's first version is not a clock value: {again!r}")
        if (age := self.age(again)) > MERGE_AGAIN_WITHIN:
            raise errors.MergedTooLate(
                f"Index of {args['bucket']!r}: {args['key']!r} merged again {age:.1f} s after its first version, "
                f"too late (at most {MERGE_AGAIN_WITHIN:.0f} s)")

    def _refuse_new(self, bucket: str) -> None:
        """A writer's new entry (its own merge, or its key lock; not a read's write-back, an
        anti-entropy copy or an index move) into a bucket being deleted, as this node's control
        plane has it, is refused (``BucketBeingDeleted``, 503), and its node writes again once
        the deletion's outcome is known (``ClusterCatalog._creating``).

        The DeleteBucket's emptiness check lists a read quorum of replicas that each applied its
        mark (``scan`` with ``deleting``). A node the DeleteBucket did not wait for (it did not
        answer: partitioned from the deleting node, or too slow) may not have applied the mark
        and still take writes into the bucket. Without this, such a write's entry could reach a
        write quorum after the check and be acknowledged, then be deleted with the bucket. With
        it, the write needs a quorum, which shares a replica with the check's: there the entry
        was merged before the mark (the check saw it: ``BucketNotEmpty``) or is refused."""
        if self.bucket_deleting is not None and self.bucket_deleting(name := bucket.split("\x01", 1)[0]):
            raise errors.BucketBeingDeleted(f"a DeleteBucket of {name!r} is under way on this replica's node",
                                            resource=name)

    def _refuse_other(self, bucket: str, created: Any) -> None:
        """A read's write-back (or an anti-entropy copy) of a version read from the bucket
        created at ``created``, arriving after that bucket was deleted, its index dropped and a
        bucket of that name created again (held up in the network, or by a slow peer): without
        this it brought a deleted object into the new bucket. Refused (``NoSuchBucket``) where
        the name now names another bucket, or where this replica dropped that one as deleted
        while its node had not applied the deletion yet."""
        name = bucket.split("\x01", 1)[0]
        now = self.bucket_created(name) if self.bucket_created is not None else created
        if (now is not None and now != created) or self._dropped.get(name) == created:
            raise errors.NoSuchBucket(f"{name!r} is not the bucket that was read (deleted, or created again since)",
                                      resource=name)

    async def _merge(self, args: dict) -> dict:
        if not args.get("displaced") and not args.get("lock"):
            # Not a blind PUT's own merge: a read's write-back (or anti-entropy, or a move)
            # of a version that may be a blind PUT's fresh one here. The read returns it once
            # a quorum holds it, this replica included, so it can no longer be undone here,
            # also when this replica holds it already (the merge then changes nothing). An
            # undo committing meanwhile goes first; this merge then puts the version back.
            while not await self._seen(args["bucket"], args["key"], _ts(args["ts"])):
                pass
        pending: _Fresh | None = None
        previous: _Fresh | None = None
        if args.get("displaced"):
            # A blind PUT's version is noted before its commit: a lookup can be answered with
            # it as soon as the commit is done, before this coroutine runs again, and must
            # find it to mark it seen (noted after, it stayed unseen and was undone once it
            # had been read: traced in a lossy history, session 22).
            previous = self._fresh.get(args["bucket"], {}).get(args["key"])
            pending = self._note_fresh(args["bucket"], args["key"], _ts(args["ts"]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KEY_LOCK_WAIT
        pause = 0.002
        try:
            while True:
                op = Op("merge_object", args["bucket"], args["key"], value=args.get("entry"),
                        data=args.get("data"), ts=_ts(args["ts"]), lock=args.get("lock"))
                if args.get("lock") and "judged" in args:  # a conditional write's commit
                    op.judging = True
                    op.judged = _ts(args["judged"]) if args["judged"] is not None else None
                elif not args.get("displaced") and not args.get("lock"):
                    # That commit again, from a read's write-back (or anti-entropy): refused, as
                    # the commit itself is, where the key holds a write its check did not see.
                    judged = _judged_of(args.get("entry"), args)
                    if judged is not NOT_JUDGED:
                        op.judging = True
                        op.judged = judged
                self._refuse_late(args)
                try:
                    await self.registry.commit([op])
                    break
                except errors.KeyLocked:
                    # A conditional write of this key is between its check and its commit
                    # here: this write waits for it (refused as older than its commit, the
                    # answer says whether its check saw this write: ``cond`` and ``judged``).
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.05)
        except BaseException:
            if pending is not None:
                self._unnote_fresh(args["bucket"], args["key"], pending, previous)
            raise
        if pending is not None and not op.applied:
            self._unnote_fresh(args["bucket"], args["key"], pending, previous)
        where = hash((args["bucket"], args["key"]))
        unsettled = self._settle((args["bucket"], args["key"]), args.get("lock"),
                                 op.ts if op.applied else op.prior)
        if op.applied:
            judged = _ts(args["judged"]) if args.get("judged") is not None else None
            before = self._recent.get(where)
            past: tuple[tuple, ...] = ()
            conds: tuple[tuple[tuple, tuple | None], ...] = ()
            whole = op.prior is None  # the key held nothing here before this version
            if op.prior is not None:
                if before is not None and before[0] == hash(op.prior):
                    past, conds, whole = before[1], before[2], before[3]
                grown = past + (op.prior,)
                past, whole = grown[-RECENT_PAST:], whole and len(grown) <= RECENT_PAST
            if args.get("lock"):
                conds = (conds + ((op.ts, judged),))[-RECENT_PAST:]
            self._recent[where] = (hash(op.ts), past, conds, whole)
            if pending is None:  # (a blind PUT's version was noted before the commit)
                self._note_fresh(args["bucket"], args["key"], None)
            self._recent.move_to_end(where)
            while len(self._recent) > RECENT_MERGES:
                self._recent.popitem(last=False)
            # ``displaced``: a PUT that needs to know which write it replaced (to remove that
            # write's data) learns it here instead of from a quorum read before the merge.
            # ``prior``: that write's version (also a tombstone's), for a ``retract`` of this
            # merge if the write fails.
            answer = {"applied": True, "was": op.result, "prior": list(op.prior) if op.prior is not None else None} \
                if args.get("displaced") else {"applied": True}
            if unsettled:
                answer["unsettled"] = True
            return answer
        # What this replica holds instead (equal: a retry of this very write; newer: it lost),
        # and, if this replica merged it recently, the version it replaced here.
        held = op.prior
        answer: dict[str, Any] = {"applied": False, "ts": list(held) if held is not None else None}
        if op.result == UNSEEN:
            # A conditional write's commit over a write its check did not see (``write_checked``):
            # not applied, not an answer toward its quorum. With the entry held: a reader whose
            # write-back of that commit is refused so puts that write above it (``_get_round``).
            answer["unseen"] = True
            entry, version, judged = self.registry.held_judged(args["bucket"], args["key"])
            if version == held:
                answer["entry"] = entry
                if judged is not NOT_JUDGED:
                    answer[JUDGED] = list(judged) if judged is not None else None
        fresh = self._fresh.get(args["bucket"], {}).get(args["key"])
        if held is not None and fresh is not None and fresh.version == held and not fresh.served:
            # What refused this merge is a blind PUT's version that its writer may still undo
            # here (no read returned it): a write merged again after a conditional write cannot
            # count it as a write that came after it and stands (``put_displacing``).
            answer["undoable"] = True
        recent = self._recent.get(where)
        above: list[tuple | None] = []
        if recent is not None and held is not None and recent[0] == hash(held):
            if op.ts in recent[1]:
                answer["had"] = True  # this very version was held here, then replaced
            # Conditional writes committed here above the refused version, each check judging
            # the key at some version: one that judged it older than the refused write did not
            # see that write, which then comes after it (``_write_new``, ``put_displacing``).
            # The oldest judged of them is answered: each must have seen it, not only the
            # last (a lossy history, session 23: a blind PUT refused by a conditional write that
            # judged the key at another conditional write's commit, newer than the PUT, whose
            # own check had judged it older: the PUT counted itself seen, and was lost).
            above = [judged for version, judged in recent[2] if version > op.ts]
        if held is not None and held > op.ts:
            # The version held, if a conditional write's commit, also when it came by a read's
            # write-back or anti-entropy rather than its own commit (which ``_recent`` records):
            # a DELETE refused by such a commit on the one replica its writer heard stood older
            # than it and was acknowledged, and reads then returned the commit (a lossy
            # history, session 28).
            entry, version, judged = self.registry.held_judged(args["bucket"], args["key"])
            judged = _judged_of(entry, {JUDGED: judged} if judged is not NOT_JUDGED else {})
            if version == held and judged is not NOT_JUDGED:
                above.append(judged)
        if above:
            answer["cond"] = True
            answer["judged"] = None if any(j is None for j in above) else list(min(above))  # type: ignore[type-var]
        return answer

    async def retract(self, args: dict) -> dict:
        """Undo this replica's merge of version ``ts`` of a write that failed (it reached fewer
        replicas than a quorum): if the key still holds exactly that version, put back what the
        merge replaced (``was``: the entry it answered; else the tombstone of version ``prior``,
        or nothing). Answers whether it did. A write that is not undone here may still become
        the key's state (anti-entropy spreads it), as a failed write may."""
        bucket, key, ts = args.get("bucket"), args.get("key"), args.get("ts")
        was, prior = args.get("was"), args.get("prior")
        if not isinstance(bucket, str) or not isinstance(key, str) or not _is_version(ts) \
                or not (was is None or (isinstance(was, dict) and _is_version(was.get("ts")))) \
                or not (prior is None or _is_version(prior)):
            raise BadPeerRequest("index/retract takes a bucket, a key, the version to undo and what it replaced")
        fresh = self._fresh.get(bucket, {}).get(key)
        if fresh is None or fresh.version != _ts(ts) or fresh.served or fresh.undoing is not None \
                or time.monotonic() - fresh.since > FRESH_SECONDS:
            # A read was answered with it (or this replica cannot tell: restarted, forgotten):
            # it stays.
            return {"retracted": False}
        fresh.undoing = asyncio.Event()
        self.undos[bucket] = self.undos.get(bucket, 0) + 1
        done = self.on_merge(bucket, key) if self.on_merge is not None else None
        restored: tuple | None = None
        op = None
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + KEY_LOCK_WAIT
            pause = 0.002
            while True:
                op = Op("retract_object", bucket, key, value=was, ts=_ts(ts),
                        prior=_ts(prior) if was is None and prior is not None else None)
                try:
                    await self.registry.commit([op])
                    break
                except errors.KeyLocked:
                    # A conditional write is between its check and its commit: its commit
                    # replaces this version anyway (and then there is nothing to undo).
                    if loop.time() > deadline:
                        return {"retracted": False}
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.05)
            if op.applied:
                where = hash((bucket, key))
                recent = self._recent.get(where)
                if recent is not None and recent[0] == hash(op.ts) and recent[1]:
                    # Held now: the version the undone one replaced, the last of those before.
                    self._recent[where] = (hash(recent[1][-1]), recent[1][:-1], recent[2], recent[3])
                else:
                    self._recent.pop(where, None)
                # A lease holder must not answer the key alone until a granter holds what it
                # holds now (a write acknowledged while this replica refused it as older than
                # the version undone may be newer than what was put back).
                restored = _ts(was["ts"]) if was is not None else (_ts(prior) if prior is not None else (0, ""))
        finally:
            fresh.undoing.set()
            if self._fresh.get(bucket, {}).get(key) is fresh:  # (not a newer write's, merged meanwhile)
                self._note_fresh(bucket, key, None)
            if done is not None:
                done(restored, retracted=restored is not None)
        return {"retracted": bool(op is not None and op.applied)}

    def _settle(self, where: tuple[str, str], lock: str | None, held: tuple | None) -> bool:
        """A merge of the key committed here (``lock``: the conditional write's lock id it
        carries; ``held``: the version the key holds here after it). Its own lock's commit
        settles the key; any other merge found the key's lock ended (the registry took it),
        without that commit here if one was taken: the key is unsettled. True: it is
        unsettled now."""
        taken = self._locked.pop(where, None)
        if lock is not None:
            gone = self._unsettled.get(where)
            if gone is not None and gone[0] == lock:  # the late commit itself: settled here
                del self._unsettled[where]
            return False
        if taken is not None:
            self._note_unsettled(where, taken)
        return self._unsettled_at(where, held) is not None

    def _unsettled_at(self, where: tuple[str, str], held: tuple | None) -> bool | None:
        """Whether the key is unsettled here while it holds version ``held``: None (settled),
        False (a lock expired here: the version of a commit it may have had is unknown) or
        True (the writer's unlock named its commit's version, newer than ``held``). Not
        forgotten when this replica holds that version or a newer one: a failed write's undo
        (``retract``) can take the key back below it."""
        gone = self._unsettled.get(where)
        if gone is None:
            return None
        if time.monotonic() - gone[1] > UNSETTLED_SECONDS:
            del self._unsettled[where]
            return None
        if gone[2] is None:
            return False
        return True if held is None or held < gone[2] else None

    def unsettled(self, bucket: str, key: str, held: tuple | None) -> bool:
        """Whether a lookup or a conditional write's check answered ``held`` here must hear
        every replica: a conditional write's commit, whose lock here ended without it, is newer
        than ``held`` and may be on replicas a quorum without this one's help would miss. (Its
        check judged the key older than writes merged here since, so those come after it; a
        read answering one of them around the commit, and another read answering the commit,
        cannot both be right: a lossy history, session 23.)"""
        return bool(self._unsettled) and self._unsettled_at((bucket, key), held) is True

    def _note_unsettled(self, where: tuple[str, str], lock: str, version: tuple | None = None) -> None:
        self._unsettled[where] = (lock, time.monotonic(), version)
        self._unsettled.move_to_end(where)
        while len(self._unsettled) > UNSETTLED_MAX:
            self._unsettled.popitem(last=False)

    def _note_fresh(self, bucket: str, key: str, version: tuple | None) -> "_Fresh | None":
        """A merge applied here: remember a blind PUT's version (``version``; the record is
        returned), or forget the key's (another write replaced it; or it was undone)."""
        fresh = self._fresh.get(bucket)
        if version is None:
            if fresh is not None and fresh.pop(key, None) is not None and not fresh:
                del self._fresh[bucket]
            return None
        if fresh is None:
            fresh = self._fresh[bucket] = OrderedDict()
        now = time.monotonic()
        record = fresh[key] = _Fresh(version, now)
        fresh.move_to_end(key)
        while fresh:
            oldest = next(iter(fresh.values()))
            if len(fresh) <= FRESH_MAX and now - oldest.since <= FRESH_SECONDS:
                break
            fresh.popitem(last=False)
        return record

    def _unnote_fresh(self, bucket: str, key: str, pending: _Fresh, previous: "_Fresh | None") -> None:
        """A blind PUT's merge noted before its commit was not applied: the key's record goes
        back to what it was (unless another merge replaced it meanwhile)."""
        fresh = self._fresh.get(bucket)
        if fresh is None or fresh.get(key) is not pending:
            return
        if previous is not None and previous.undoing is None:  # (one whose undo began is done with)
            if pending.served and previous.version == pending.version:
                previous.served = True  # (a retry of the same version, read meanwhile)
            fresh[key] = previous
        else:
            del fresh[key]
            if not fresh:
                del self._fresh[bucket]

    async def _page_seen(self, bucket: str, prefix: str, delimiter: str, objects: list, prefixes: list) -> bool:
        """``_seen`` for a listing page: each fresh key it lists, and each fresh key under a
        common prefix it lists (a prefix shows that some key exists). False: read the page
        again."""
        fresh = self._fresh.get(bucket)
        if not fresh:
            return True
        again = False
        for key, _entry in objects:
            rec = fresh.get(key)
            if rec is not None:  # (whichever version the page shows: marking more only keeps more)
                again |= not await self._seen(bucket, key, rec.version)
        if prefixes and delimiter:
            shown = set(prefixes)
            for key, rec in list(fresh.items()):
                cut = key.find(delimiter, len(prefix)) if key.startswith(prefix) else -1
                if cut >= 0 and key[:cut + len(delimiter)] in shown:
                    again |= not await self._seen(bucket, key, rec.version)
        return not again

    async def _seen(self, bucket: str, key: str, version: tuple | None) -> bool:
        """A read is about to answer ``version`` of the key: mark a fresh blind PUT's version
        as seen (it can no longer be undone). False: an undo of it is committing; the caller
        reads the key again once it has."""
        fresh = self._fresh.get(bucket)
        rec = fresh.get(key) if fresh else None
        if rec is None or version is None or rec.version != version:
            return True
        if rec.undoing is not None:
            if rec.undoing.is_set():  # undone (or not) already: nothing left to mark
                if fresh.get(key) is rec:  # type: ignore[union-attr]
                    self._note_fresh(bucket, key, None)
                return True
            await rec.undoing.wait()
            return False
        rec.served = True
        return True

    async def lock(self, args: dict) -> dict:
        """Take the key's lock for a conditional write (``write_checked``) and answer what this
        replica holds for the key, as ``get`` does; ``{"locked": True}`` if another write holds
        it. Until the write's commit (a ``merge`` carrying the lock's id), an ``unlock`` or
        the lock's expiry, no other write of the key merges here."""
        if args.get("new"):  # (the lock of a write with an entry: ``write_checked``)
            self._refuse_new(args["bucket"])
        ttl = min(float(args.get("ttl", KEY_LOCK_SECONDS)), KEY_LOCK_SECONDS)
        op = Op("lock_key", args["bucket"], args["key"], value={"id": str(args["id"]), "until": time.time() + ttl})
        try:
            await self.registry.commit([op])
        except errors.KeyLocked:
            return {"locked": True}
        where = (args["bucket"], args["key"])
        taken = self._locked.pop(where, None)
        if taken is not None and taken != str(args["id"]):
            self._note_unsettled(where, taken)  # that lock expired: its commit never came here
        self._locked[where] = str(args["id"])
        while len(self._locked) > UNSETTLED_MAX:
            self._locked.popitem(last=False)
        entry, version, judged = op.result
        if self._fresh and not await self._seen(args["bucket"], args["key"], version):
            # An undo of that version was committing: the key is locked now, read it again.
            entry, version, judged = self.registry.held_judged(args["bucket"], args["key"])
            await self._seen(args["bucket"], args["key"], version)
        answer = {"entry": entry, "ts": list(version) if version is not None else None}
        if judged is not NOT_JUDGED:  # (a conditional delete's tombstone)
            answer[JUDGED] = list(judged) if judged is not None else None
        if self.unsettled(args["bucket"], args["key"], version):
            answer["unsettled"] = True  # (the writer hears every replica: ``_gather_sets``)
        return answer

    async def unlock(self, args: dict) -> dict:
        """End a conditional write's lock without its commit: the write was refused, or
        (``committing``) its commit did not reach this replica, and the key is unsettled here
        (``_settle``) until it holds that commit's version (``ts``) or a newer one."""
        await self.registry.commit([Op("unlock_key", args["bucket"], args["key"], value={"id": str(args["id"])})])
        where = (args["bucket"], args["key"])
        version = _ts(args["ts"]) if args.get("committing") and _is_version(args.get("ts")) else None
        if self._locked.get(where) == str(args["id"]):
            del self._locked[where]
            if args.get("committing"):  # (not after a refusal: nothing was committed anywhere)
                self._note_unsettled(where, str(args["id"]), version)
        elif version is not None and (gone := self._unsettled.get(where)) is not None and gone[0] == str(args["id"]):
            self._unsettled[where] = (gone[0], gone[1], version)  # (a merge found the lock expired first)
        return {}

    async def get(self, args: dict) -> dict:
        entry, version, judged = self.registry.held_judged(args["bucket"], args["key"])
        while self._fresh and not await self._seen(args["bucket"], args["key"], version):
            entry, version, judged = self.registry.held_judged(args["bucket"], args["key"])
        answer = promise_answer({"entry": entry, "ts": list(version) if version is not None else None},
                                self.promises, args["bucket"])
        if judged is not NOT_JUDGED:  # (a conditional delete's tombstone)
            answer[JUDGED] = list(judged) if judged is not None else None
        if self.unsettled(args["bucket"], args["key"], version):
            answer["unsettled"] = True  # (the reader hears every replica: ``_get_round``)
        if args.get("small") and self.on_get is not None and self.on_get(args["bucket"]):
            answer["lease"] = True  # (a client's lookup, not anti-entropy's: only those start leases)
        if args.get("small") and entry is not None and entry.get("inline"):
            # The registry's copy of a small object's bytes (at most ``small_copy_limit``): the
            # asking node then serves the GET without reading a disk.
            data = self.registry.get_small(args["bucket"], args["key"], entry.get("wid", ""))
            if data is not None:
                answer["data"] = data
        if args.get("records") and "data" not in answer and entry is not None and self.records is not None:
            # A GET's lookup: the write's records on this node's disks come with the entry,
            # so the GET reads no more of them than the lookup already brought (the lookup
            # adds no call of its own to a small GET on a cluster).
            recs = await self.records(args["bucket"], args["key"], entry)
            if recs:
                answer["recs"] = recs
        return answer

    async def scan(self, args: dict) -> dict:
        bucket = args["bucket"]
        if args.get("deleting") and self.bucket_deleting is not None and not self.bucket_deleting(
                name := bucket.split("\x01", 1)[0]):
            # A DeleteBucket's emptiness check counts only replicas that refuse new entries.
            raise errors.ServiceUnavailable(f"this node has not applied the deletion mark of {name!r} yet")
        prefix, delimiter = args.get("prefix", ""), args.get("delimiter", "")
        for _ in range(SCAN_ROUNDS):
            undos = self.undos.get(bucket, 0)  # the page is read in a thread: an undo begun meanwhile reads it again
            objects, prefixes, truncated = await self.registry.list_objects(
                bucket, prefix, delimiter, args.get("start_after", ""), int(args.get("limit", 1000)),
                include_markers=bool(args.get("markers")))
            if self.undos.get(bucket, 0) == undos and (
                    not self._fresh.get(bucket) or await self._page_seen(bucket, prefix, delimiter, objects, prefixes)) \
                    and self.undos.get(bucket, 0) == undos:
                break
        else:
            raise errors.SlowDown(f"Index of {bucket!r}: failed writes kept being undone under a listing page")
        if args.get("full"):  # whole entries, not only listing fields (small internal listings)
            objects = [(k, self.registry.get_object(bucket, k) or e) for k, e in objects]
        answer = promise_answer({"objects": [[k, e] for k, e in objects], "prefixes": prefixes,
                                 "truncated": truncated}, self.promises, bucket)
        if self._unsettled:
            start_after = str(args.get("start_after", "")).encode()
            keys = [k for (b, k) in list(self._unsettled) if b == bucket and k.startswith(prefix)
                    and k.encode() > start_after and self.unsettled(b, k, self.registry.get_version(b, k)[1])]
            if keys:
                answer["unsettled"] = sorted(keys, key=str.encode)  # (the reader reads each of them: ``_list_page``)
        if self.on_get is not None and self.on_get(bucket):
            answer["lease"] = True
        return answer

    async def digest(self, args: dict) -> dict:
        """The bucket's range digests and key counts: kept current by the registry's commits
        once scanned (``registry/digests.py``), so a pass costs a scan of the bucket only the
        first time, or once the digests went stale."""
        n = int(args.get("ranges", DIGEST_RANGES))
        digest, counts = await asyncio.get_running_loop().run_in_executor(
            None, self.registry.bucket_digest, args["bucket"], n)
        return {"digest": digest, "counts": counts}

    async def versions(self, args: dict) -> dict:
        """(key, version, tombstone) of the given digest ranges of one bucket."""
        wanted = set(args["ranges"])
        n = int(args.get("ranges_total", DIGEST_RANGES))
        versions = await asyncio.get_running_loop().run_in_executor(
            None, lambda: [[k, list(v), t]
                           for k, v, t in self.registry.iter_bucket_versions(args["bucket"], wanted, n)])
        return {"versions": versions}

    async def tombs_held(self, args: dict) -> dict:
        """Which of ``items`` ([key, version] of ``bucket``'s tombstones) this replica holds as
        its key's state, exactly that version and no entry, with no conditional write's lock
        or unsettled commit on the key (``ReplicatedIndex.forget_tombstones``)."""
        bucket, items = _tomb_items(args, "index/tombs_held")
        held = await asyncio.get_running_loop().run_in_executor(None, self.registry.tombstones_held, bucket, items)
        return {"held": [h and (bucket, key) not in self._locked and not self.unsettled(bucket, key, version)
                         for h, (key, version) in zip(held, items)]}

    async def forget_tombs(self, args: dict) -> dict:
        """Forget ``items`` ([key, version] of ``bucket``'s tombstones), each only where the key
        still holds exactly that tombstone (``Op`` ``forget_tombstone``): every replica said it
        held them (``tombs_held``), so no replica keeps an entry the delete removed."""
        bucket, items = _tomb_items(args, "index/forget_tombs")
        ops = [Op("forget_tombstone", bucket, key, ts=version) for key, version in items]
        if ops:
            await self.registry.commit(ops)
        forgot = sum(1 for op in ops if op.applied)
        self.tombstones_forgotten += forgot
        return {"forgot": forgot}

    async def drop(self, args: dict) -> dict:
        """Forget one bucket's entries and tombstones: this node no longer replicates its index
        (the last step of an index move), or is about to start replicating it afresh.
        ``deleted``: the bucket was deleted; while this node still has it (behind on the control
        plane), what was read from it is not merged here again (``_refuse_other``)."""
        if args.get("deleted") and self.bucket_created is not None:
            name = args["bucket"].split("\x01", 1)[0]
            created = self.bucket_created(name)
            if created is not None:
                self._dropped[name] = created
                self._dropped.move_to_end(name)
                while len(self._dropped) > DROPPED_REMEMBERED:
                    self._dropped.popitem(last=False)
        return {"dropped": await self.registry.drop_entries(args["bucket"])}

    # -- read leases (``buckets.cluster.leases``) ------------------------------------------
    async def grant(self, args: dict) -> dict:
        """A holder asks for (or renews) the promises on ``buckets``: each granted only to the
        node this replica places first in the bucket's one replica set, and not while that
        node lags far behind the others here (``holder_slow``: its lease then lapses, and
        reads are quorum reads, which go around it)."""
        buckets, holder = args.get("buckets"), args.get("holder")
        if not isinstance(buckets, list) or not isinstance(holder, str) or \
                not all(isinstance(b, str) for b in buckets):
            raise BadPeerRequest("index/grant takes a list of bucket names and the holder's id")
        grants: dict[str, dict] = {}
        for bucket in buckets:
            if self.promises is None or self.holder_of is None or self.holder_of(bucket) != holder \
                    or (self.holder_slow is not None and self.holder_slow(holder)):
                grants[bucket] = {"granted": False}
            else:
                grants[bucket] = self.promises.grant(bucket, holder)
        return {"grants": grants}

    async def revoke(self, args: dict) -> dict:
        """A writer or reader could not reach the holder: no more renewals; the seconds until
        the promise has ended."""
        if not isinstance(args.get("bucket"), str):
            raise BadPeerRequest("index/revoke takes a bucket name")
        return {"left": self.promises.revoke(args["bucket"]) if self.promises is not None else 0.0}

    async def holds(self, args: dict) -> dict:
        """For each bucket's ``[[key, version(, exact)], ...]``: whether this replica holds that
        version, or held it before the version it holds now (``_recent``; not with ``exact``,
        which asks about a version an undo put back on the holder): the lease holder's merges
        it may then answer."""
        by_bucket = args.get("buckets")
        if not isinstance(by_bucket, dict) or not all(
                isinstance(b, str) and isinstance(items, list) and all(
                    isinstance(i, list | tuple) and len(i) in (2, 3) and isinstance(i[0], str)
                    and isinstance(i[1], list | tuple) and (len(i) == 2 or isinstance(i[2], bool))
                    for i in items) for b, items in by_bucket.items()):
            raise BadPeerRequest("index/holds takes {bucket: [[key, version(, exact)], ...]}")
        held: dict[str, list[bool]] = {}
        for bucket, items in by_bucket.items():
            out = held[bucket] = []
            for key, version, *exact in items:
                want = _ts(version)
                _, have = self.registry.get_version(bucket, key)
                if have is None or have < want:
                    out.append(False)
                elif have == want:
                    out.append(True)
                elif exact and exact[0]:
                    out.append(False)
                else:
                    recent = self._recent.get(hash((bucket, key)))
                    if recent is None or recent[0] != hash(have):
                        out.append(None)  # its versions before this one are not remembered here
                    elif want in recent[1]:
                        out.append(True)
                    else:
                        # Never held here if it is newer than the oldest version remembered
                        # (they follow each other), or those go back to the key's first;
                        # else unknown: it may have been held and forgotten since.
                        past = recent[1]
                        out.append(False if recent[3] or (past and want > past[0]) else None)
        return {"held": held}

    async def read(self, args: dict) -> dict:
        """A lookup (or, with ``scan`` set, a listing page) sent to this node as the bucket's
        lease holder."""
        if not isinstance(args.get("bucket"), str) or not (args.get("scan") or isinstance(args.get("key"), str)):
            raise BadPeerRequest("index/read takes a bucket and a key (or scan)")
        if self.serve_read is None:
            return {"leased": False}
        return await self.serve_read(args)

    def handlers(self) -> dict[str, Callable[[dict], Awaitable[dict]]]:
        return {"merge": self.merge, "get": self.get, "scan": self.scan, "digest": self.digest,
                "versions": self.versions, "drop": self.drop, "lock": self.lock, "unlock": self.unlock,
                "grant": self.grant, "revoke": self.revoke, "holds": self.holds, "read": self.read,
                "retract": self.retract, "tombs_held": self.tombs_held, "forget_tombs": self.forget_tombs}


def _tomb_items(args: dict, call: str) -> tuple[str, list[tuple[str, tuple]]]:
    """(bucket, [(key, version)]) of a ``tombs_held`` or ``forget_tombs`` call."""
    bucket, items = args.get("bucket"), args.get("items")
    if not isinstance(bucket, str) or not bucket or not isinstance(items, list) or len(items) > 10 * TOMBSTONE_BATCH \
            or not all(isinstance(i, list | tuple) and len(i) == 2 and isinstance(i[0], str) and _is_version(i[1])
                       for i in items):
        raise BadPeerRequest(f"{call} takes a bucket and a list of [key, version]")
    return bucket, [(key, _ts(version)) for key, version in items]


def _name_bucket(args: dict, created: float | None) -> None:
    """A merge names the bucket it writes into (``IndexReplica._refuse_other``)."""
    if created is not None:
        args["created"] = created


def _is_version(value: Any) -> bool:
    return isinstance(value, list | tuple) and 2 <= len(value) <= 3 and isinstance(value[0], int) \
        and isinstance(value[1], str)


# A conditional write's committed entry carries the version its check judged the key at
# (``JUDGED``; a conditional delete's tombstone keeps it in the registry, and calls and answers
# carrying the tombstone name it), so that wherever the commit goes later (a read's write-back,
# anti-entropy, a lease holder's push) a replica holding a newer write that check did not see
# refuses it as its commit is refused (``unseen``): the commit, applied there only, must not
# spread over a write acknowledged after its check (a lossy history, session 28).
def _judged_of(entry: dict | None, answer: dict) -> Any:
    """The version a conditional write's check judged, carried by its entry or (a conditional
    delete's tombstone) by the answer or call that carries the tombstone; ``NOT_JUDGED`` for
    any other write."""
    if isinstance(entry, dict):
        judged = entry.get(JUDGED, NOT_JUDGED)
    else:
        judged = answer.get(JUDGED, NOT_JUDGED) if entry is None else NOT_JUDGED
    if judged is NOT_JUDGED:
        return NOT_JUDGED
    return _ts(judged) if _is_version(judged) else None


def _unjudged(entry: dict | None) -> dict | None:
    """An entry to write anew (a blind PUT, a version moved, a re-written record): not a
    conditional write's commit, whatever the entry it was made from was."""
    if entry is None or JUDGED not in entry:
        return entry
    return {f: v for f, v in entry.items() if f != JUDGED}


def _missed(judged: Any, version: tuple, answers: dict[str, Any], placement: Any) -> tuple[bool, dict | None, bool]:
    """If the write of version ``version`` is a conditional write's commit (its check judged
    the key at ``judged``: ``_judged_of``) and ``answers`` (replica -> what it holds:
    ``{"entry", "ts"}``) show it never reached a quorum: (True, the entry of the newest write
    its check did not see, None for a tombstone, True); else (False, None, whether any answer
    holds a write that check did not see). A replica holding a version newer than the one the
    check judged and older than the commit never held the commit (it would have refused it)."""
    if judged is NOT_JUDGED:
        return False, None, False
    missed = {n: _ts(a["ts"]) for n, a in answers.items() if isinstance(a, dict) and a.get("ts") is not None
              and (judged is None or _ts(a["ts"]) > judged) and _ts(a["ts"]) < version}
    if not missed or not any(sum(1 for n in s if n not in missed) < Quorum.for_replicas(len(s)).w
                             for s in placement.write):
        return False, None, bool(missed)
    return True, answers[max(missed, key=lambda n: missed[n])].get("entry"), True


class _Void(Exception):
    """A read's write-back of a conditional write's commit met replicas holding writes its check
    did not see, so many that the commit never reached a quorum (``ReplicatedIndex._write_back``)."""

    def __init__(self, refused: dict[str, dict]) -> None:
        super().__init__(f"refused by {', '.join(sorted(refused))}")
        self.refused = refused


class _Merges:
    """One attempt's merge calls: every answer as it comes, also after the quorum's (``late``;
    None: the call failed), and the replicas whose call failed before anything was sent."""

    def __init__(self, index: "ReplicatedIndex", args: dict) -> None:
        self.index, self.args = index, args
        self.late: dict[str, Any] = {}
        self.unsent: set[str] = set()
        self.calls: list[asyncio.Future] = []

    async def _merge(self, node: str) -> Any:
        try:
            ans = await self.index._call(node, "merge", self.args)
        except BaseException as exc:
            self.late[node] = None
            if getattr(exc, "unsent", False):
                self.unsent.add(node)
            raise
        self.late[node] = ans
        return ans

    def call(self, node: str) -> asyncio.Future:
        self.calls.append(asyncio.ensure_future(self._merge(node)))
        return self.calls[-1]


def _on_quorum(nodes: set[str], placement: Any) -> bool:
    """``nodes`` include a write quorum of every write set of ``placement``."""
    return all(len(nodes & set(s)) >= Quorum.for_replicas(len(s)).w for s in placement.write)


def _seen_by(answer: Any, ts: tuple) -> bool:
    """A merge of version ``ts`` was refused by a conditional write's commit whose check saw
    it: the check judged the key at ``ts`` or a later version."""
    return (isinstance(answer, dict) and bool(answer.get("cond")) and answer.get("judged") is not None
            and _ts(answer["judged"]) >= ts)


def _unseen_by(answer: Any, ts: tuple) -> bool:
    """A merge of version ``ts`` was refused by a conditional write's commit whose check did
    not see it (judged the key at an older version, or at none)."""
    return isinstance(answer, dict) and bool(answer.get("cond")) and not _seen_by(answer, ts)


def _why_unknown(silent: set[str]) -> str:
    """Why a write's reach is unknown: the replicas that did not answer, or none (a conditional
    write saw it where it was not on a quorum)."""
    return f"{', '.join(sorted(silent))} did not answer" if silent else "seen by a conditional write"


class ReplicatedIndex:
    """The object-index API the engine calls in a cluster (``get``, ``put``, ``delete``,
    ``list``), routed to each bucket's replicas with quorums.

    ``replicas_of(bucket)`` names the bucket's replicas: a list (one set, read and written),
    or an ``IndexPlacement`` (during an index move: read one set, write a quorum of each)."""

    def __init__(self, node_id: str, local: IndexReplica, transport: IndexTransport,
                 replicas_of: Callable[[str], Sequence[str] | IndexPlacement], *,
                 clock: HybridClock | None = None, timeout: float = 5.0, leases: bool = True,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self.node_id = node_id
        self.local = local
        self.transport = transport
        self.replicas_of = replicas_of
        self.clock = clock or HybridClock()
        local.observe = self.clock.observe
        local.age = self.clock.age
        self.timeout = timeout
        self._background: set[asyncio.Task] = set()
        self.read_repairs = 0
        self.entropy_repairs = 0
        # Small objects' bytes that another replica sent with its answer to ``get``, by
        # (bucket, key, wid): a write id names immutable bytes, so an entry is never stale;
        # bounded by count (each copy is at most the store's small-copy limit, 16 KiB).
        self._small: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        # A small write's shard records that replicas answered a GET's lookup with, by
        # (bucket, key, wid): {slot: record}. Taken (removed) by the GET's reader.
        self._records: OrderedDict[tuple[str, str, str], dict[int, bytes]] = OrderedDict()
        self.lease_waits = 0  # writes and reads that waited out a lease holder's promise
        # The replicas whose last merge answer said their registry's disk is at its reserve,
        # node -> time.monotonic() of that answer (``check_room``).
        self._full: dict[str, float] = {}
        # Failed blind PUTs' merges undone on a replica (``_retract``), and those that could
        # not be (unreachable, or not answered in time).
        self.retractions = 0
        self.retract_misses = 0
        # Failed conditional commits that reads found and put the write they missed above.
        self.voided = 0
        # Read leases: a bucket's first replica answers its lookups alone (``leases``).
        self.leases = LeaseKeeper(self, seconds=lease_seconds) if leases else None
        # When the bucket of a name was created, as this node's control plane has it (None: no
        # such bucket, or not known): what a read writes back names the bucket it read.
        self.bucket_created: Callable[[str], float | None] | None = None

    def created_of(self, bucket: str) -> float | None:
        """The ``created`` of the bucket an index space belongs to (its shadows' too), for the
        write-backs of a read that starts now (``IndexReplica._refuse_other``)."""
        return self.bucket_created(bucket.split("\x01", 1)[0]) if self.bucket_created is not None else None

    # -- calls ----------------------------------------------------------------------------
    async def _call(self, node: str, method: str, args: dict, timeout: float | None = None) -> Any:
        """One call to a replica (this node's own: directly), within ``self.timeout`` or the
        shorter ``timeout``. (One ``wait_for``, not one around another: an outer one cancelled
        while the inner call had just failed left that failure in a task nobody retrieved,
        logged as "Task exception was never retrieved".) ``runtime.wait_for``, not 3.11's
        ``asyncio.wait_for``: the call runs in the caller's task (no task of its own per call)
        and a cancel of the caller that lands as the call finishes is raised, not lost."""
        if node == self.node_id:
            answer = await wait_for(self.local.handlers()[method](args), timeout)
        else:
            answer = await wait_for(self.transport(node, method, args),
                                    self.timeout if timeout is None else min(timeout, self.timeout))
        if method == "merge" and isinstance(answer, dict):
            if answer.get("room") is False:
                if node not in self._full:
                    log.warning("the index replica on %s has its registry's disk full (at its free-space reserve): "
                                "new objects in the buckets it replicates are refused (507) until it has room",
                                node)
                self._full[node] = time.monotonic()
            else:
                self._full.pop(node, None)
        return answer

    def check_room(self, bucket: str) -> None:
        """Raise ``StorageFull`` when one of ``bucket``'s index replicas answered a merge lately
        (within ``FULL_MEMORY`` seconds, and none since with room) that its registry's disk is
        at its free-space reserve: a new object's entry would grow that registry into the space
        its disk keeps for deletions, as ``Registry.check_room`` keeps a single node's. Learnt
        from the merges' answers (any writer's, deletions' too), so no call of its own; once the
        memory lapses a write goes in and its answer says again."""
        if not self._full:
            return
        placement = self.replicas_of(bucket)
        nodes = placement.nodes if isinstance(placement, IndexPlacement) else placement
        now = time.monotonic()
        for node in nodes:
            seen = self._full.get(node)
            if seen is not None and now - seen < FULL_MEMORY:
                raise errors.StorageFull()

    async def _gather(self, nodes: Sequence[str], method: str, args: dict, need: int,
                      error: type[errors.BucketsError] = errors.ReadQuorumLost,
                      spares: Sequence[str] = ()) -> list[tuple[str, Any]]:
        """Call ``nodes`` concurrently; return as soon as ``need`` have answered (the rest keep
        going in the background). ``spares`` are called too once one of ``nodes`` failed, or
        lags far behind the others (a replica behind a slow link: ``engine/hedge.py``'s rule),
        rather than after the call's timeout. Fewer than ``need`` answers is ``error``."""
        loop = asyncio.get_running_loop()
        tasks = {asyncio.ensure_future(self._call(n, method, args)): n for n in nodes}
        done: list[tuple[str, Any]] = []
        failures: list[str] = []
        pending = set(tasks)
        spares = list(spares)
        start, last = loop.time(), None

        def ask_spares() -> None:
            for n in spares:
                t = asyncio.ensure_future(self._call(n, method, args))
                tasks[t] = n
                pending.add(t)
            spares.clear()

        try:
            while (pending or spares) and len(done) < need:
                if not pending:
                    ask_spares()
                timeout = None
                if spares:
                    due = start + hedge.HEDGE_NONE if last is None else \
                        last + max(hedge.HEDGE_MIN, hedge.HEDGE_FACTOR * (last - start))
                    timeout = max(0.0, due - loop.time())
                finished, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not finished:
                    ask_spares()
                    continue
                last = loop.time()
                for t in finished:
                    exc = t.exception()
                    if exc is None:
                        done.append((tasks[t], t.result()))
                    else:
                        failures.append(f"{tasks[t]}: {exc}")
                        ask_spares()
        finally:
            # Stragglers finish (or fail) on their own; their answers are not needed. If we were
            # cancelled (the request or the scanner stopped), every call still running is one:
            # kept, so its failure is consumed instead of logged as never retrieved.
            for t in pending:
                self._keep(t)
        if len(done) < need:
            raise error(
                f"Index quorum lost: {len(done)} of {len(tasks)} replicas answered, {need} needed "
                f"({'; '.join(failures)})")
        return done

    async def _read(self, nodes: Sequence[str], method: str, args: dict, r: int) -> list[tuple[str, Any]]:
        """A read quorum: this node's replica (free) and the fewest others, the first replica
        (a lease holder) before the rest; if one of those fails or lags far behind (``_gather``),
        the remaining replicas are asked as well. When an answer reports a read lease's promise, the holder's answer is
        needed too (or the promise revoked and waited out): a version the others hold but the
        holder lacks (a write in flight) must not be read around it."""
        first = nodes[0] if nodes else None
        ordered = sorted(nodes, key=lambda n: (n != self.node_id, n != first))
        answers = await self._gather(ordered[:r], method, args, r, spares=ordered[r:])
        promises = {n: a["promise"] for n, a in answers if isinstance(a, dict) and a.get("promise")}
        if promises:
            asked = {n for n, _ in answers}
            missing = lease_holders(promises, [nodes]) - asked
            for holder in sorted(missing):
                if holder not in nodes:
                    continue
                try:
                    answers.append((holder, await self._call(holder, method, args, HOLDER_WAIT)))
                except (errors.BucketsError, asyncio.TimeoutError, OSError):
                    pass
            missing -= {n for n, _ in answers}
            if missing:
                await self._wait_out(args["bucket"], promises, missing, [nodes], errors.ReadQuorumLost)
        if self.leases is not None:
            self.leases.saw(args["bucket"], answers)
        return answers

    def _keep(self, task: asyncio.Future) -> None:
        self._background.add(task)  # type: ignore[arg-type]
        task.add_done_callback(lambda t: (self._background.discard(t), t.cancelled() or t.exception()))

    def placement(self, bucket: str) -> IndexPlacement:
        p = self.replicas_of(bucket)
        return p if isinstance(p, IndexPlacement) else IndexPlacement.single(p)

    def _quorum(self, bucket: str) -> tuple[list[str], Quorum]:
        """The replicas a read asks, and their quorum sizes."""
        nodes = list(self.placement(bucket).read)
        return nodes, Quorum.for_replicas(len(nodes))

    async def _gather_sets(self, sets: Sequence[Sequence[str]], call: Callable[[str], Awaitable[Any]],
                           answered: dict[str, Any], stop: Callable[[], bool] | None = None,
                           promises: dict[str, list] | None = None, bucket: str = "") -> None:
        """Call every node of ``sets`` that is not in ``answered`` yet, concurrently, adding
        each answer to ``answered``; return once every set has a write quorum of answers (or
        ``stop()`` holds). A set that can no longer reach its quorum is ``WriteQuorumLost``.

        ``promises`` (merges: the writes and write-backs): an answer that reports a read
        lease's promise is noted there, and the write then needs the lease holder's answer
        too, or, if the holder does not answer within ``HOLDER_WAIT``, to have revoked the
        promises and waited until they ended (``buckets.cluster.leases``)."""
        loop = asyncio.get_running_loop()
        failed: set[str] = set()

        def quorate() -> bool:
            return all(sum(1 for n in s if n in answered) >= Quorum.for_replicas(len(s)).w for s in sets)

        def unsettled() -> bool:
            return any(isinstance(a, dict) and a.get("unsettled") for a in answered.values())

        def awaited() -> set[str]:
            missing: set[str] = set()
            if promises:
                missing = {h for h in lease_holders(promises, sets) if h not in answered and h not in failed}
            if unsettled():
                # A replica's lock of the key ended without its conditional write's commit
                # there: that write may have committed on replicas not heard yet, with a
                # version newer than this one, and if its check did not see this write it comes
                # first (put_displacing, _write_new). Hear them all before acknowledging.
                missing |= {n for s in sets for n in s if n not in answered and n not in failed}
            return missing

        def satisfied() -> bool:
            return quorate() and not awaited()

        def note(node: str, ans: Any) -> None:
            if promises is not None and isinstance(ans, dict) and ans.get("promise"):
                promises[node] = ans["promise"]

        for node, ans in answered.items():
            note(node, ans)
        nodes = list(dict.fromkeys(n for s in sets for n in s if n not in answered))
        tasks = {asyncio.ensure_future(call(n)): n for n in nodes}
        pending = set(tasks)
        failures: list[str] = []
        deleting = False  # a replica refused: its node applied a DeleteBucket's mark (``_refuse_new``)
        holder_deadline: float | None = None
        try:
            while not satisfied() and not (stop is not None and stop()):
                if quorate():
                    # Only a lease holder is still awaited: not for long.
                    called = set(tasks.values())
                    failed.update(h for h in awaited() if h not in called)
                    if not awaited() or not pending:
                        break
                    if holder_deadline is None:
                        holder_deadline = loop.time() + HOLDER_WAIT
                    left = holder_deadline - loop.time()
                    if left <= 0:
                        failed.update(awaited())
                        break
                    finished, pending = await asyncio.wait(pending, timeout=left,
                                                           return_when=asyncio.FIRST_COMPLETED)
                elif pending:
                    finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                else:
                    break
                for t in finished:
                    exc = t.exception()
                    if exc is None:
                        answered[tasks[t]] = t.result()
                        note(tasks[t], answered[tasks[t]])
                    else:
                        failed.add(tasks[t])
                        failures.append(f"{tasks[t]}: {exc}")
                        deleting = deleting or isinstance(exc, errors.BucketBeingDeleted)
        finally:
            for t in pending:  # stragglers finish on their own (see _gather)
                self._keep(t)
        if stop is not None and stop():
            return
        if quorate():
            unheard = sorted({n for s in sets for n in s if n not in answered}) if unsettled() else []
            if unheard:
                raise errors.WriteQuorumLost(
                    f"Index of {bucket!r}: a conditional write's lock of the key ended without its commit on "
                    f"a replica lately, and {', '.join(unheard)} did not answer: whether that write is newer "
                    f"and came first is unknown ({'; '.join(failures) or 'no answer in time'})")
            if promises:
                missing = {h for h in lease_holders(promises, sets) if h not in answered}
                if missing:
                    await self._wait_out(bucket, promises, missing, sets)
            return
        short = [f"{sum(1 for n in s if n in answered)} of {len(s)}" for s in sets]
        raise (errors.BucketBeingDeleted if deleting else errors.WriteQuorumLost)(
            f"Index quorum lost: {', '.join(short)} replicas answered, "
            f"{'/'.join(str(Quorum.for_replicas(len(s)).w) for s in sets)} needed ({'; '.join(failures)})")

    async def _wait_out(self, bucket: str, promises: dict[str, list], missing: set[str],
                        sets: Sequence[Sequence[str]], error: type[errors.BucketsError] = errors.WriteQuorumLost) -> None:
        """The lease holders ``missing`` did not answer: revoke the promises to them that
        replicas reported, and wait until those have ended (the holders' leases ended first)."""
        promisers = [n for n in promises if lease_holders({n: promises[n]}, sets) & missing]
        waits: list[float] = []
        for node in promisers:
            try:
                ans = await self._call(node, "revoke", {"bucket": bucket}, HOLDER_WAIT)
            except (errors.BucketsError, asyncio.TimeoutError, OSError) as exc:
                raise error(f"Index of {bucket!r}: lease holder {', '.join(sorted(missing))} did not answer "
                            f"and its promise on {node} could not be ended ({exc or type(exc).__name__})") from None
            waits.append(float(ans.get("left") or 0.0))
        self.lease_waits += 1
        if waits and max(waits) > 0:
            await asyncio.sleep(max(waits))

    # -- writes ---------------------------------------------------------------------------
    async def put(self, bucket: str, key: str, entry: dict, data: bytes | None = None) -> dict:
        """Store ``entry`` (given a fresh version) on a write quorum of the bucket's replicas."""
        return await self._write_new(bucket, key, entry, data, entry["wid"])  # type: ignore[return-value]

    async def _write_new(self, bucket: str, key: str, entry: dict | None, data: bytes | None,
                         wid: str) -> dict | None:
        """``entry`` (None: a tombstone) under a fresh version on a write quorum. Refused as
        older than a conditional write's commit whose check judged the key at a version older
        than this write's (``_unseen_by``): the check did not see this write, which was not on
        a quorum when the key was locked, so this write comes after the conditional one and is
        merged again under a newer version; kept older, it would be acknowledged and lost, the
        conditional write standing on a check that missed it.

        Refused by a blind PUT's version that its writer may still undo there (``undoable``: no
        read returned it there): that is no newer write that stands. Counted as one, this write
        was acknowledged with fewer replicas than a quorum applying it, and lost once that PUT
        failed and was undone (refused on n1, applied on n2, n3 not reached; the PUT undone on
        n1). So, as ``put_displacing`` does, every replica is heard first: applied on a write
        quorum, the write stands as it is (a read may have returned it: merged again, it would
        take effect twice, after writes acknowledged since); perhaps on one (replicas silent),
        its outcome is unknown (503); on none, no read returned it and it is merged again above
        the refusing version. Returns the entry as merged last."""
        versioned = entry
        after: tuple | None = None  # merged again after a conditional write: just above this version
        answered: dict[str, Any] = {}
        created = self.created_of(bucket)
        for _ in range(DISPLACE_ATTEMPTS):
            ts = [self.clock.now() if after is None else after[0] + 1, wid]
            t = _ts(ts)
            versioned = dict(_unjudged(entry), ts=ts) if entry is not None else None
            args = {"bucket": bucket, "key": key, "entry": versioned, "data": data, "ts": ts, "new": True}
            _name_bucket(args, created)
            merges = _Merges(self, args)
            late, unsent = merges.late, merges.unsent

            placement = self.placement(bucket)
            answered = await self._write_placed(bucket, merges.call)

            def again(a: Any, t: tuple = t) -> bool:
                return _unseen_by(a, t) or (isinstance(a, dict) and bool(a.get("undoable")))

            newer = self._newer_than(t, [a for a in answered.values() if again(a)])
            if newer is None:
                break
            # Refused only by blind PUTs' versions that may be undone, also after being merged
            # again above a conditional write (``after``): hear every replica first. A read
            # may have returned this version (a reader's write-back can put it on a quorum
            # before this writer's own merges arrive, refused there), and writes acknowledged
            # after that read replaced it: merged again above the refusing PUT, it would take
            # effect twice (a DELETE read as absent, then the PUT, then absent again: traced
            # in test_index_history.py, session 26).
            if not any(_unseen_by(a, t) for a in answered.values()) and (
                    after is None or self.placement(bucket) == placement):
                if self.placement(bucket) != placement:  # (as put_displacing: merged again)
                    self.clock.observe(newer[0])
                    continue
                # A call that never left did not apply this version (fresh for this attempt).
                holders, silent = await self._heard(bucket, key, t, merges, placement, skip=unsent)
                # A replica that refused it with a conditional commit whose check saw it holds a
                # write that came after this one: merged again above it, this write would take
                # effect twice (traced in test_index_history.py, session 26).
                seen = {n for n, a in late.items() if _seen_by(a, t)}
                if _on_quorum(holders | seen, placement):
                    break
                if _on_quorum(holders | seen | silent, placement) or seen:
                    raise errors.WriteQuorumLost(
                        f"Index of {bucket!r}: {key!r} met a newer write that may be undone, and whether this "
                        f"write reached a quorum is unknown ({_why_unknown(silent)})")
                # (every answer, the late ones too: merged again above the newest that refused it)
                heard = [a for a in late.values() if a is not None and again(a)]
                self.clock.observe(self._newer_than(t, heard)[0])
                if after is None:
                    continue  # merged again at this node's clock, now above it
                # After a conditional write: just above the refusing version (an earlier
                # attempt's version may have been read, and writes acknowledged since are newer).
                after = self._newer_than(t, heard)
                continue
            self.clock.observe(newer[0])
            after = self._newer_than(t, [a for a in answered.values() if (
                again(a) if after is not None else not _seen_by(a, t))])
        else:
            if any(isinstance(a, dict) and a.get("undoable") for a in answered.values()):
                raise errors.WriteQuorumLost(
                    f"Index of {bucket!r}: {key!r} was merged again {DISPLACE_ATTEMPTS} times and still met "
                    "a newer write whose outcome is open")
        return versioned

    async def put_displacing(self, bucket: str, key: str, entry: dict,
                             data: bytes | None = None) -> list[dict] | None:
        """``put`` without a read of the key first; returns the entries it replaced.

        A read before a write did two things, and this does both from the merge's answers:

        - **Order.** The read made this node's clock pass the version of every write already
          acknowledged (a read quorum meets every write quorum), so this write's version is
          larger. Here, a replica that holds a newer version refuses the merge and answers that
          version; then this node's clock passes it and the write is merged again under a new
          version, at most ``DISPLACE_ATTEMPTS`` times (after that, the newer writes are
          concurrent ones still racing this one, and either order is a correct outcome) -
          unless every replica's answer shows the first version applied on a write quorum:
          then no newer write can have been acknowledged before this one began, and it stands
          (a read may already have returned it).
        - **Cleanup.** Each replica that applied the write answers the entry it replaced: a write
          older than this one, which once this one is acknowledged is never the key's state
          again. The caller removes their data.

        Returns those entries; None when a replica that applied the write did not say what it
        replaced (a node of an older version): the caller cannot know them."""
        replaced: dict[str, dict] = {}
        unknown = False
        after: tuple | None = None  # merged again after a conditional write: just above this version
        created = self.created_of(bucket)
        ts: tuple = ()  # the version of the last attempt
        first: int | None = None  # the first attempt's version (its hybrid clock value)
        for attempt in range(DISPLACE_ATTEMPTS):
            if first is not None and (age := self.clock.age(first)) > MERGE_AGAIN_WITHIN:
                # Too late to merge it again: another node told that one of this write's versions
                # was replaced removes its data once that version is COME_BACK_WINDOW old
                # (engine/replaced.py), and merged again after that, it was the key's state
                # with no data. Measured from the first version, which every later one follows:
                # the attempts together stay within the window. Its outcome is unknown (the
                # version may stand where it was applied, under the newer one), as after any
                # lost quorum.
                late_again = errors.WriteQuorumLost(
                    f"Index of {bucket!r}: {key!r} met a newer write, and {age:.1f} s after its first version "
                    f"it is too late to merge it again (at most {MERGE_AGAIN_WITHIN:.0f} s)")
                late_again.undone = False  # (its versions may stand, under the newer one: the data stays)
                raise late_again
            versioned = dict(_unjudged(entry), ts=[self.clock.now() if after is None else after[0] + 1, entry["wid"]])
            ts = _ts(versioned["ts"])
            args = {"bucket": bucket, "key": key, "entry": versioned, "data": data, "ts": versioned["ts"],
                    "displaced": True}
            if first is None:
                first = ts[0]
            else:
                # The replicas refuse it past the deadline too, on their own clocks: a merge held
                # up between the check above and its arrival (a pause, a stalled link) is refused
                # there instead of landing after the other node's removal (``MergedTooLate``).
                args["again"] = first
            _name_bucket(args, created)
            merges = _Merges(self, args)
            late, unsent, calls = merges.late, merges.unsent, merges.calls

            placement = self.placement(bucket)
            try:
                answered = await self._write_placed(bucket, merges.call)
            except errors.WriteQuorumLost as exc:
                # Fewer replicas than a quorum took it: the write fails (503), so undo it where
                # it was merged, or a node that comes back would spread it (anti-entropy) and a
                # write the client was told failed would appear.
                gone = await self._retract(bucket, key, ts, calls, late, unsent)
                # Undone on every replica that took it, and every other one answered that it
                # did not (or was never sent it): no entry points at this write's data, and
                # none ever will, so the caller removes it now (not the orphan sweep, later).
                # Only on the first attempt: an earlier one's version (the same write id) may
                # stand on replicas that applied it, and come back if what refused it is undone.
                exc.undone = attempt == 0 and gone and self.placement(bucket) == placement and all(
                    n in unsent or late.get(n) is not None for n in placement.nodes)
                raise
            # A conditional write whose check saw this one (judged at this version or later)
            # comes after it: its refusal is no reason to merge this one again. Merged again
            # just after a conditional write (``after``), only another such write's refusal is,
            # or a blind PUT's version its writer may still undo (``undoable``): counted as a
            # write that came after this one, it made this one acknowledged on no replica,
            # and once undone this write was lost (a lossy history, session 22: two PUTs
            # merged again just above one conditional write, the same clock value; the one
            # that won the tie failed and was undone).
            def again(a: Any, after: tuple | None = after) -> bool:
                if after is None:
                    return not _seen_by(a, ts)
                return _unseen_by(a, ts) or (isinstance(a, dict) and bool(a.get("undoable")))

            newer = self._newer_than(ts, [a for a in answered.values() if again(a)])
            if newer is None and after is None and answered and not any(
                    isinstance(a, dict) and a.get("applied") for a in answered.values()):
                # Refused by every replica that answered, each time by a conditional commit
                # whose check judged a version at or above this one. Such a check saw this write
                # only if a replica held it (one that has not answered yet); else it judged
                # another write ahead of this one (the same millisecond and a larger write id,
                # or this node's clock behind), perhaps one acknowledged before this PUT began,
                # and this PUT, left as it is, was acknowledged and applied nowhere: lost
                # (test_catalog_update.py, tied clocks, when the writer's own replica answered
                # last: 2 in ~60 runs on a loaded machine). Every replica's answer tells which,
                # as after a plain refusal below.
                newer = self._newer_than(ts, [a for a in answered.values() if isinstance(a, dict)])
            if newer is not None and self.placement(bucket) == placement:
                # Refused by a newer version. Merged again, this write could come back after a
                # write that a read has already seen replace it (a read that met this version
                # where it was applied): so first hear every replica. Applied on a write quorum
                # of every set, it stands as it is, older than the newer write: no write
                # acknowledged before this one began can be newer (the replicas of its quorum
                # would have refused this one; one of them is in this quorum).
                holders, silent = await self._heard(bucket, key, ts, merges, placement)


                # Refused by a conditional write's commit whose check did not see this write:
                # that write comes first, so this one is merged again (newer) even if it is on
                # a quorum. It reached a quorum only through replicas that write had not locked
                # or had unlocked after its commit quorum, so no read returned it before that
                # write was acknowledged. A read may have returned it since, though, and writes
                # acknowledged after that read replaced it: so it is merged again just above
                # the newest version that refused it (``after``), not at this node's clock now.
                # Those later writes stay newer (merged again at now, it came back after them:
                # a lossy history, 2026-12-02), and a refusal by one of them says nothing but
                # that it came after this PUT began: every write acknowledged before the PUT
                # began is on a quorum that met the first version's, so it is at most ``after``.
                # Refused, after being merged again above a conditional write, only by a blind
                # PUT's version that may be undone: like any other refusal, it stands if on a
                # quorum (a read may have returned it, and writes acknowledged since replaced
                # it), else it is merged again just above the refusing version.
                # A replica that refused it with a conditional commit whose check saw it holds a
                # write that came after this one, as good as holding it (merged again above that
                # write, this one would take effect twice).
                heard = [a for a in late.values() if isinstance(a, dict)]
                after_check = self._newer_than(ts, [a for a in heard if _unseen_by(a, ts)]) is not None
                seen = {n for n, a in late.items() if _seen_by(a, ts)}
                if after_check:
                    after = self._newer_than(ts, [a for a in heard if again(a)])
                elif seen and attempt == 0 and not holders and not silent:
                    # The first version was applied nowhere (every replica said so): no read
                    # returned it, so it cannot take effect twice, and a conditional commit
                    # whose check judged a version at or above it did not see it: it judged
                    # another write whose version is ahead of this one's (this node's wall
                    # clock behind, or the same millisecond and a larger write id), perhaps
                    # one acknowledged before this PUT began. Left as "older", this PUT was
                    # acknowledged and lost (tests/unit/cluster/test_catalog_update.py, tied
                    # clocks). Merged again above every refusal, as after a plain one.
                    newer = self._newer_than(ts, heard)
                elif _on_quorum(holders | seen, placement):
                    answered = {n: ans for n, ans in late.items() if ans is not None}
                    newer = None
                elif _on_quorum(holders | seen | silent, placement) or seen:
                    # Perhaps on a quorum (a read may have returned it), perhaps not: merged
                    # again it could come back after the newer write; left as it is, it may be
                    # lost to it. Neither is an acknowledgement: the PUT's outcome is unknown.
                    raise errors.WriteQuorumLost(
                        f"Index of {bucket!r}: {key!r} met a newer write, and whether its first version "
                        f"reached a quorum is unknown ({_why_unknown(silent)})")
                elif after is not None:
                    after = self._newer_than(ts, [a for a in heard if again(a)])
            for ans in answered.values():
                if not ans.get("applied"):
                    continue
                if "was" not in ans:
                    unknown = True
                    continue
                was = ans["was"]
                if isinstance(was, dict) and was.get("wid") not in (None, entry["wid"]) \
                        and was.get("ts") is not None and _ts(was["ts"]) < ts:
                    replaced.setdefault(was["wid"], was)
            if newer is None:
                break
            self.clock.observe(newer[0])
        else:
            if after is not None and any(isinstance(a, dict) and a.get("undoable") for a in answered.values()):
                # Still refused by a version that may be undone: neither standing nor known
                # to be replaced by a write that stands.
                raise errors.WriteQuorumLost(
                    f"Index of {bucket!r}: {key!r} was merged again {DISPLACE_ATTEMPTS} times and still met "
                    "a newer write whose outcome is open")
        return None if unknown else list(replaced.values())

    async def _heard(self, bucket: str, key: str, ts: tuple, merges: "_Merges", placement: Any,
                     skip: set[str] | frozenset = frozenset()) -> tuple[set[str], set[str]]:
        """Every replica heard on a write of version ``ts`` that met a newer one: (those that
        hold it, those that may and did not say). A merge whose answer was lost (or is late)
        may have been applied: those replicas are asked whether they hold the version, or held
        it before their current one; ``skip``: replicas known not to (never sent it)."""
        await asyncio.wait(merges.calls, timeout=self.timeout)
        holders = {n for n, ans in merges.late.items() if ans is not None and (
            ans.get("applied") or ans.get("had") or (ans.get("ts") is not None and _ts(ans["ts"]) == ts))}
        unsure = [n for n in placement.nodes if n not in holders and merges.late.get(n) is None and n not in skip]
        silent: set[str] = set()
        if unsure:
            found, silent = await self._holding(bucket, key, ts, unsure)
            holders |= found
        return holders, silent

    async def _holding(self, bucket: str, key: str, ts: tuple, nodes: Sequence[str]) -> tuple[set[str], set[str]]:
        """Of ``nodes``, those that hold version ``ts`` of the key or held it before the version
        they hold now (``holds``), and those that did not answer or cannot tell (they no longer
        remember the key's versions that far back: a lossy history, session 23, where a PUT
        that stood on a quorum and was read was merged again 0.4 s later, after 10 newer
        versions, because the replica that had held it said no)."""
        async def ask(node: str) -> bool | None:
            ans = await self._call(node, "holds", {"buckets": {bucket: [[key, list(ts)]]}})
            held = (ans.get("held") or {}).get(bucket, [False])[0]
            return None if held is None else bool(held)

        answers = await asyncio.gather(*(ask(n) for n in nodes), return_exceptions=True)
        found = {n for n, a in zip(nodes, answers) if a is True}
        unknown = {n for n, a in zip(nodes, answers) if a is None or isinstance(a, BaseException)}
        for a in answers:
            if isinstance(a, BaseException) and not isinstance(a, (errors.BucketsError, asyncio.TimeoutError, OSError)):
                raise a
        return found, unknown

    async def _retract(self, bucket: str, key: str, ts: tuple, calls: list[asyncio.Future],
                       late: dict[str, Any], unsent: set[str] = frozenset()) -> bool:
        """A merge of version ``ts`` failed to reach a quorum: on every replica that applied it,
        put back what it replaced (``IndexReplica.retract``, only if the key still holds
        ``ts`` there). Best effort: a replica that cannot be reached, or whose merge has not
        answered within the timeout, keeps the version, which may then spread (a failed
        write's outcome is open, as on S3); ``retract_misses`` counts those. True when every
        merge answered (or was never sent) and each one applied was undone."""
        if calls:
            await asyncio.wait(calls, timeout=self.timeout)
        unsure = sum(1 for c in calls if not c.done())
        applied = [(n, ans) for n, ans in late.items() if isinstance(ans, dict) and ans.get("applied")]

        async def one(node: str, ans: dict) -> int:
            """1: undone; 0: the key had moved on there (nothing to undo); -1: not undone."""
            if "was" not in ans or "prior" not in ans:  # a node of an older version
                return -1
            try:
                got = await self._call(node, "retract", {"bucket": bucket, "key": key, "ts": list(ts),
                                                         "was": ans["was"], "prior": ans["prior"]})
            except (errors.BucketsError, asyncio.TimeoutError, OSError) as exc:
                log.info("%s/%s: the failed write %s could not be undone on %s: %s", bucket, key, list(ts), node, exc)
                return -1
            return 1 if got.get("retracted") else 0

        done = await asyncio.gather(*(one(n, a) for n, a in applied))
        self.retractions += done.count(1)
        lost = [n for n, ans in late.items() if ans is None and n not in unsent]  # may have applied it
        self.retract_misses += unsure + done.count(-1) + len(lost)
        if applied or unsure:
            log.info("%s/%s: write %s reached no quorum; undone on %d of %d replicas that took it "
                     "(%d could not be, %d merges not answered)",
                     bucket, key, list(ts), done.count(1), len(applied), done.count(-1), unsure)
        return not unsure and not lost and done.count(1) == len(done)

    @staticmethod
    def _newer_than(ts: tuple, answers: Iterable[Any]) -> tuple | None:
        """The newest version a replica refused a merge of version ``ts`` with, if any."""
        newer: tuple | None = None
        for ans in answers:
            if not ans.get("applied"):
                held = _ts(ans["ts"]) if ans.get("ts") is not None else None
                if held is not None and held > ts and (newer is None or held > newer):
                    newer = held
        return newer

    async def delete(self, bucket: str, key: str, wid: str) -> None:
        await self._write_new(bucket, key, None, None, wid)

    async def _write_placed(self, bucket: str, call: Callable[[str], Awaitable[Any]],
                            stop: Callable[[dict[str, Any]], bool] | None = None,
                            promises: dict[str, list] | None = None) -> dict[str, Any]:
        """Write a quorum of every write set of the bucket's placement; if the placement
        changed meanwhile (an index move's phase applied here), write the new one's sets too
        (merging a version twice is harmless). So a write acknowledged under a placement was
        on a quorum of it while that placement was still this node's current one: the move
        waits for every node to apply a phase before it copies, and the copy finds the write."""
        answered: dict[str, Any] = {}
        promises = {} if promises is None else promises  # read leases' promises the answers report
        placement = self.placement(bucket)
        while True:
            await self._gather_sets(placement.write, call, answered,
                                    None if stop is None else (lambda: stop(answered)), promises, bucket)
            if stop is not None and stop(answered):
                return answered
            now = self.placement(bucket)
            if now == placement:
                return answered
            placement = now

    async def put_version(self, bucket: str, key: str, entry: dict | None, ts: Sequence, *,
                          created: float | None = None) -> bool:
        """Merge ``entry`` (None: a tombstone) with the given version ``ts`` (no new clock
        value) on a write quorum of each of the bucket's write sets: a compare-and-set through
        last-writer-wins for the migration, whose moved entry carries the version it moved plus
        the generation (``[hlc, wid, gen]``).

        True: a quorum of every write set held exactly this version (it is committed; a later
        write may still replace it). False: some replica holds a newer version, so this one
        can never be the key's state again (a concurrent overwrite or delete won). Neither
        known (replicas unreachable): ``WriteQuorumLost``, and the outcome is open (the
        version may still spread): the caller keeps what the entry points to and retries.
        ``created``: the bucket the entry was read from (by default the bucket of that name now);
        a replica where the name is another bucket by then refuses it."""
        version = _ts(ts)
        self.clock.observe(version[0])
        if entry is not None:
            entry = dict(_unjudged(entry), ts=list(version))
        args = {"bucket": bucket, "key": key, "entry": entry, "data": None, "ts": list(version)}
        _name_bucket(args, created if created is not None else self.created_of(bucket))
        promises: dict[str, list] = {}

        async def merge(node: str) -> tuple:
            ans = await self._call(node, "merge", args)
            if ans.get("promise"):
                promises[node] = ans["promise"]
            if ans.get("applied"):
                return version
            held = ans.get("ts") if "ts" in ans else (await self._call(node, "get", {"bucket": bucket,
                                                                                   "key": key})).get("ts")
            if held is None:  # refused, yet holding nothing: not an answer this can count
                raise errors.WriteQuorumLost(f"{node} refused version {list(version)} of {key!r} and holds none")
            return _ts(held)

        def lost(answered: dict[str, Any]) -> bool:
            return any(held > version for held in answered.values())

        answered = await self._write_placed(bucket, merge, lost, promises)
        return not lost(answered)

    async def write_checked(self, bucket: str, key: str, entry: dict | None, judge: Callable[[dict | None], None],
                            data: bytes | None = None, *,
                            before_commit: Callable[[dict | None], Awaitable[None]] | None = None) -> dict | None:
        """A conditional write (``entry``) or delete (None) of one key: ``judge(current)``
        decides on the key's current entry (None: no object) and raises to refuse; no other
        write of the key can land between that decision and this write's commit.

        The check and the commit are one step on the replicas: each replica asked takes the
        key's lock and answers what it holds (``lock``); with a write quorum of every write
        set locked, the newest of their answers is the key's state (every acknowledged write
        is on one of them), and no other write can reach a quorum until this one commits: a
        write that reaches a locked replica waits there for the commit. Then ``judge`` runs, and
        the write merges with a version newer than any answered, carrying the lock's id (which
        ends the lock on each replica). A refusal unlocks and raises the judge's error. A write
        that was acknowledged before the locks were taken is thus seen by the judge; one that
        was not is acknowledged after this one, with a newer version (a replica that already
        holds this write refuses the older one and its writer merges it again, newer).

        ``before_commit(current)``, if given, runs after ``judge`` under the locks (a versioned
        bucket's version records, which must be written before the key's entry names them).

        Returns the entry this replaced (what ``judge`` saw)."""
        loop = asyncio.get_running_loop()
        placement = self.placement(bucket)
        created = self.created_of(bucket)
        held: dict[str, str] = {}  # replica -> id of this write's lock there (until committed or unlocked)
        finished = False

        async def take(node: str, args: dict, busy: set[str]) -> dict:
            ans = await self._call(node, "lock", args)
            if ans.get("locked"):
                busy.add(node)
                raise errors.KeyLocked(f"{node} holds {bucket}/{key} for another write")
            if finished or args["id"] != lock_id:
                # Answered after this write ended, or after the round it belongs to gave up: end
                # the lock it took there now.
                self._keep(asyncio.ensure_future(self._unlock(node, args)))
            else:
                held[node] = args["id"]
            return ans

        started = loop.time()
        deadline = started + KEY_LOCK_WAIT
        pause = 0.005
        answered: dict[str, Any] = {}
        committed: set[str] = set()
        committing = False  # the commit was sent: a replica it did not reach is left unsettled
        try:
            while True:
                # Each round its own lock id, so a lock that lands after its round gave up is
                # told apart from this round's. A replica held by another write counts as one
                # that did not answer: a quorum of this write's own locks is what it needs.
                lock_id = os.urandom(8).hex()
                args = {"bucket": bucket, "key": key, "id": lock_id, "ttl": KEY_LOCK_SECONDS, "new": entry is not None}
                busy: set[str] = set()
                answered = {}
                try:
                    await self._gather_sets(placement.write, lambda n, a=args, b=busy: take(n, a, b), answered)
                    break
                except errors.WriteQuorumLost as exc:
                    for node, lid in list(held.items()):
                        held.pop(node)
                        self._keep(asyncio.ensure_future(self._unlock(node, dict(args, id=lid))))
                    if isinstance(exc, errors.BucketBeingDeleted):
                        raise  # (nothing committed: its writer may write again)
                    if not busy:
                        raise errors.WriteQuorumLost(
                            f"{bucket}/{key}: the key could not be locked on a quorum: {exc}") from None
                    if loop.time() > deadline:
                        raise errors.ConditionalRequestConflict(
                            "Another conditional write to this key is committing; retry the request.",
                            resource=f"/{bucket}/{key}") from None
                await asyncio.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 0.1)
                if self.placement(bucket) != placement:
                    raise errors.SlowDown(f"{bucket}/{key}: the bucket's index is moving; retry")
            for heard_all in (False, True):
                current, newest, newest_ans = None, None, {}
                for ans in answered.values():
                    ts = _ts(ans["ts"]) if ans.get("ts") is not None else None
                    if ts is not None:
                        self.clock.observe(ts[0])
                        if newest is None or ts > newest:
                            current, newest, newest_ans = ans.get("entry"), ts, ans
                if newest is None:
                    break
                # The newest is another conditional write's commit that never reached a quorum
                # (replicas enough hold writes its check did not see: ``_write_back``): it failed,
                # and a read puts the newest write it missed above it. Judged at that write
                # (as a read now answers), and committed above both. Some answer holds such a
                # write, but too few to tell: the other replicas are locked too (or 503).
                void, missed, some = _missed(_judged_of(current, newest_ans), newest, answered, placement)
                if void:
                    current = missed
                rest = [n for n in placement.nodes if n not in answered]
                if void or not some or not rest or heard_all:
                    break
                got = await asyncio.gather(*(take(n, args, busy) for n in rest), return_exceptions=True)
                failed = [f"{n}: {a or type(a).__name__}" for n, a in zip(rest, got) if isinstance(a, BaseException)]
                if failed:
                    raise errors.WriteQuorumLost(
                        f"{bucket}/{key}: another conditional write's commit may have failed, and whether it "
                        f"did cannot be told without {'; '.join(failed)}")
                answered.update(zip(rest, got))
            judge(current)
            if before_commit is not None:
                await before_commit(current)
            if loop.time() - started > KEY_LOCK_SECONDS / 2 or self.placement(bucket) != placement:
                # The locks may be about to expire, or the bucket's index is moving: the commit
                # could no longer be sure no other write came in between.
                raise errors.SlowDown(f"{bucket}/{key}: the conditional write's commit was delayed; retry")
            wid = entry["wid"] if entry is not None else os.urandom(8).hex()
            version = [self.clock.now(), wid]
            if entry is not None:
                # (the version judged goes with the entry wherever it is written later: JUDGED)
                entry = dict(entry, ts=version, **{JUDGED: list(newest) if newest is not None else None})
            merge_args = {"bucket": bucket, "key": key, "entry": entry, "data": data, "ts": version, "lock": lock_id,
                          "judged": list(newest) if newest is not None else None}
            _name_bucket(merge_args, created)

            mine = _ts(version)

            async def merge(node: str) -> dict:
                ans = await self._call(node, "merge", merge_args)
                committed.add(node)
                if not ans.get("applied") and ans.get("ts") is not None and _ts(ans["ts"]) > mine:
                    # A newer write there: one that came after this commit reached the
                    # replicas this write locked (it saw this write), or one that came after
                    # this write's lock expired (its writer stalled). Not an answer toward the
                    # quorum: the commit stands if a quorum applied it; if not, its outcome is
                    # open, as for any write that fails after reaching replicas.
                    raise errors.WriteQuorumLost(f"{bucket}/{key}: {node} holds a newer write")
                if not ans.get("applied") and ans.get("unseen"):
                    # A replica whose answer the check did not judge (not locked, its lock
                    # expired, or its lock's answer came after the quorum's) holds a write newer
                    # than the one judged, a write whose outcome was open: applied over it, this
                    # commit would replace a write that a read could still complete and return
                    # before it, which its condition never saw (a lossy history, session 26: the
                    # coordinator's own late lock, a failed PUT's version there overwritten by
                    # the commit, then read and written back by a reader, then the commit read).
                    # Not an answer toward the quorum: the replicas whose answers were judged are.
                    raise errors.WriteQuorumLost(f"{bucket}/{key}: {node} holds a write the check did not see")
                return ans

            committing = True
            try:
                await self._write_placed(bucket, merge)
            except errors.BucketBeingDeleted as exc:
                # Locked before a DeleteBucket's mark, committing after it: refused where the
                # mark was applied, perhaps applied elsewhere. Its outcome is open, as for any
                # commit that failed after reaching replicas: not to be written again as new.
                raise errors.WriteQuorumLost(str(exc)) from None
            return current
        finally:
            finished = True
            for node, lid in held.items():
                if node not in committed:
                    unlock = {"bucket": bucket, "key": key, "id": lid, "committing": committing}
                    if committing:
                        unlock["ts"] = version  # (the replica is unsettled until it holds this or newer)
                    self._keep(asyncio.ensure_future(self._unlock(node, unlock)))

    async def _unlock(self, node: str, args: dict) -> None:
        try:
            await self._call(node, "unlock", args)
        except Exception as exc:  # it expires on its own
            log.info("key lock on %s/%s at %s not ended: %s", args["bucket"], args["key"], node, exc)

    # -- reads ----------------------------------------------------------------------------
    async def get(self, bucket: str, key: str, *, records: bool = False) -> dict | None:
        """The key's entry from a read quorum (None: no object). A replica answers a small
        object's bytes with its entry when its registry keeps a copy, so the GET that follows
        reads no disk. Otherwise, when ``records`` is set (a GET's lookup), it answers the
        write's records on its own disks, which the GET then need not read (``take_records``)."""
        args = {"bucket": bucket, "key": key, "small": True}
        if records:
            args["records"] = True
        created = self.created_of(bucket)  # (before anything is read)
        if self.leases is not None:
            leased, ans = await self.leases.read(bucket, args)
            if leased:
                assert ans is not None
                return self._take_answer(bucket, key, records, [("holder", ans)], ans.get("entry"))
        return await self._quorum_read(bucket, key, args, records, created)

    async def _quorum_read(self, bucket: str, key: str, args: dict, records: bool,
                           created: float | None) -> dict | None:
        """Read rounds through a quorum (each writing back what it found) until one answers.
        ``created``: the bucket read, as this node had it when the read began."""
        for round_ in range(READ_ROUNDS):
            found = await self._get_round(bucket, key, args, records, created, last=round_ + 1 == READ_ROUNDS)
            if found is not _AGAIN:
                return found  # type: ignore[return-value]
        raise AssertionError("unreachable: the last round always answers")

    async def _get_round(self, bucket: str, key: str, args: dict, records: bool, created: float | None, *,
                         last: bool) -> Any:
        nodes, q = self._quorum(bucket)
        # Ask the local replica (free) and enough others to make a read quorum; if one of
        # those fails, the remaining replicas are asked too.
        answers = await self._read(nodes, "get", args, q.r)
        if any(ans.get("unsettled") for _, ans in answers):
            answers += await self._hear_rest(bucket, key, nodes, answers, args)
        best_entry, best_ts, best_ans = None, None, {}
        for _, ans in answers:
            ts = _ts(ans["ts"]) if ans.get("ts") is not None else None
            if ts is not None:
                self.clock.observe(ts[0])
            if ts is not None and (best_ts is None or ts > best_ts):
                best_entry, best_ts, best_ans = ans.get("entry"), ts, ans
        if best_ts is not None:
            stale = [n for n, ans in answers if ans.get("ts") is None or _ts(ans["ts"]) < best_ts]
            promised = {n: a["promise"] for n, a in answers if a.get("promise")}
            written = True
            if stale:
                try:
                    written = await self._write_back(bucket, key, best_entry, best_ts,
                                                     [n for n, _ in answers if n not in stale], promised,
                                                     judged=_judged_of(best_entry, best_ans), created=created)
                except _Void as void:
                    above = await self._put_above(bucket, key, best_ts, void.refused, promised, created)
                    written = above is not None
                    if above is not None:
                        best_entry, best_ts = above
            if not written:
                if last:
                    raise errors.ReadQuorumLost(f"{bucket}/{key} changed under each of {READ_ROUNDS} reads; retry")
                return _AGAIN
            if self.leases is not None and (stale or len(answers) >= q.w):
                self.leases.confirmed(bucket, key, best_ts)  # on a write quorum now
        return self._take_answer(bucket, key, records, answers, best_entry)

    async def _hear_rest(self, bucket: str, key: str, nodes: Sequence[str], answers: list[tuple[str, Any]],
                         args: dict) -> list[tuple[str, Any]]:
        """A replica answered that the key is unsettled there (``IndexReplica.unsettled``): a
        conditional write newer than what it holds may have committed on a replica not asked
        yet. The others' answers, every one of them, or ``ReadQuorumLost``: read around such a
        commit, a version it replaces could be returned while another read returns the commit
        (the write-back of the newest then brings the unsettled replica up to it)."""
        asked = {n for n, _ in answers}
        rest = [n for n in nodes if n not in asked]
        got = await asyncio.gather(*(self._call(n, "get", args) for n in rest), return_exceptions=True)
        failed = [f"{n}: {a or type(a).__name__}" for n, a in zip(rest, got) if isinstance(a, BaseException)]
        if failed:
            raise errors.ReadQuorumLost(
                f"{bucket}/{key}: a conditional write's lock of the key ended without its commit on a replica "
                f"lately, and whether that write is newer cannot be told without {'; '.join(failed)}")
        return list(zip(rest, got))

    def _take_answer(self, bucket: str, key: str, records: bool, answers: list[tuple[str, Any]],
                     best_entry: dict | None) -> dict | None:
        """Keep what the answers brought besides the entry (a small object's bytes, its
        records on the answering nodes' disks) for the GET that follows."""
        if best_entry is not None:
            for _, ans in answers:
                if ans.get("ts") is not None:
                    self.clock.observe(_ts(ans["ts"])[0])
            data = next((ans["data"] for n, ans in answers if n != self.node_id and ans.get("data") is not None
                         and (ans.get("entry") or {}).get("wid") == best_entry.get("wid")), None)
            if isinstance(data, bytes):
                self._remember_small(bucket, key, best_entry.get("wid", ""), data)
            if records:
                self._remember_records(bucket, key, best_entry.get("wid", ""), [
                    ans.get("recs") for _, ans in answers
                    if (ans.get("entry") or {}).get("wid") == best_entry.get("wid")])
        return best_entry

    def _remember_records(self, bucket: str, key: str, wid: str, answered: list) -> None:
        got: dict[int, bytes] = {}
        for recs in answered:
            if not isinstance(recs, list):
                continue
            for item in recs:  # [[slot, record], ...]; the reader checks each record it uses
                if (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], int)
                        and isinstance(item[1], bytes)):
                    got.setdefault(item[0], item[1])
        if not got:
            return
        self._records[(bucket, key, wid)] = got
        self._records.move_to_end((bucket, key, wid))
        while len(self._records) > RECORD_SETS:
            self._records.popitem(last=False)

    def take_records(self, bucket: str, key: str, wid: str) -> dict[int, bytes]:
        """The records of write ``wid`` that replicas answered its GET's lookup with (once)."""
        return self._records.pop((bucket, key, wid), None) or {}

    def _remember_small(self, bucket: str, key: str, wid: str, data: bytes) -> None:
        self._small[(bucket, key, wid)] = data
        self._small.move_to_end((bucket, key, wid))
        while len(self._small) > SMALL_COPIES:
            self._small.popitem(last=False)

    def small_copy(self, bucket: str, key: str, wid: str) -> bytes | None:
        """The bytes of write ``wid`` if a replica sent them with a recent ``get``."""
        return self._small.get((bucket, key, wid))

    async def _write_back(self, bucket: str, key: str, entry: dict | None, ts: tuple, holders: list[str],
                          promised: dict[str, list] | None = None, *, judged: Any = NOT_JUDGED,
                          created: float | None = None) -> bool:
        """Before a read returns a version that some replica it asked lacks, put that version
        on a write quorum of every write set (the ``holders`` already have it): ABD's write-back.
        Without it, a read that met a write still in flight (on one replica of three) could
        return the new version, and a later read, asking two replicas the write had not reached
        yet, the old one. Merged under its own version (no new clock value), so it changes
        nothing a newer write did. A replica that holds a newer one answers so; it counts only
        if it held this version before (``had``): else the read must start again (False), since
        the version read, on fewer than a quorum, may be a blind PUT's first version, which its
        writer then merges again, newer, after the newer write. Fewer replicas than a quorum
        reachable: the read fails (``ReadQuorumLost``) rather than return a version a later
        read might not see.

        A conditional write's commit (its entry carries the version its check judged:
        ``JUDGED``) is refused by a replica holding a write that check did not see (``unseen``);
        such a refusal is no answer toward the quorum. Refused by so many that the others
        cannot make a write quorum, that commit never reached one (a replica that refused it
        never held it): it failed, and written back it would replace a write acknowledged after
        its check. ``_Void`` says so, with the refusals. (A conditional delete's tombstone
        carries its judged version in the call: ``judged``.) ``created`` names the bucket read:
        a replica where that name is another bucket by now refuses the version."""
        args = {"bucket": bucket, "key": key, "entry": entry, "data": None, "ts": list(ts)}
        _name_bucket(args, created)
        if entry is None and judged is not NOT_JUDGED:
            args[JUDGED] = list(judged) if judged is not None else None
        answered: dict[str, Any] = dict.fromkeys(holders, True)
        self.read_repairs += 1
        placement = self.placement(bucket)
        promises: dict[str, list] = dict(promised or {})
        checked = _judged_of(entry, args) is not NOT_JUDGED
        refused: dict[str, dict] = {}

        async def merge(node: str) -> Any:
            ans = await self._call(node, "merge", args)
            if checked and isinstance(ans, dict) and ans.get("unseen"):
                refused[node] = ans
                raise errors.WriteQuorumLost(f"{node} holds a write the check of {list(ts)} did not see")
            return ans

        try:
            while True:
                await self._gather_sets(placement.write, merge, answered, promises=promises, bucket=bucket)
                if self._newer_than(ts, (a for a in answered.values() if isinstance(a, dict) and not a.get("had"))):
                    return False
                now = self.placement(bucket)
                if now == placement:
                    return True
                placement = now
        except errors.WriteQuorumLost as exc:
            placement = self.placement(bucket)
            if refused and any(sum(1 for n in s if n not in refused) < Quorum.for_replicas(len(s)).w
                               for s in placement.write):
                raise _Void(refused) from None
            raise errors.ReadQuorumLost(f"{bucket}/{key}: the version read could not be written back to a "
                                        f"quorum: {exc}") from None

    async def _put_above(self, bucket: str, key: str, void: tuple, refused: dict[str, dict],
                         promised: dict[str, list], created: float | None) -> tuple[dict | None, tuple] | None:
        """A conditional write's commit (version ``void``) was read but never reached a quorum,
        and replicas enough to tell hold writes its check did not see (``refused``: their
        answers). Put the newest of those writes above it, on a write quorum, as its writer would
        have had it heard that replica's refusal (``put_displacing``: just above the refusing
        version), so that no read returns the failed commit after that write, and anti-entropy
        and reads converge on it. Returns (entry, version) as written, or None (read again)."""
        newest = max(refused.values(), key=lambda a: _ts(a["ts"]))
        if "entry" not in newest:  # (a replica of an older version)
            return None
        held = _ts(newest["ts"])
        ts = (void[0] + 1,) + held[1:]
        entry = newest["entry"]
        # Another conditional write's commit: it comes after the failed one, which never took
        # effect (a replica holding that one applies this, and does not refuse it).
        judged: Any = NOT_JUDGED if _judged_of(entry, newest) is NOT_JUDGED else void
        if entry is not None:
            entry = dict(entry, ts=list(ts))
            if judged is not NOT_JUDGED:
                entry[JUDGED] = list(void)
        self.clock.observe(ts[0])
        self.voided += 1
        try:
            if not await self._write_back(bucket, key, entry, ts, [], promised, judged=judged, created=created):
                return None
        except _Void:
            raise errors.ReadQuorumLost(f"{bucket}/{key}: a failed conditional write's commit was read, and the "
                                        "write it missed could not be put above it") from None
        log.info("%s/%s: a conditional write's commit %s reached no quorum and missed write %s: that write "
                 "is put above it", bucket, key, list(void), list(held))
        return entry, ts

    async def list(self, bucket: str, prefix: str = "", delimiter: str = "", start_after: str = "",
                   limit: int = 1000, *, full: bool = False, markers: bool = False,
                   deleting: bool = False) -> tuple[list[tuple[str, dict]], list[str], bool]:
        """One listing page, merged from a read quorum of replicas. Where replicas disagree about
        a key (present on one, missing or older on another), the key is resolved by a quorum
        point read, so a stale replica can neither hide nor resurrect an object. Keys whose
        entry is a delete marker are left out unless ``markers``. ``deleting``: a DeleteBucket's
        emptiness check, from replicas that applied its mark only (never a lease holder alone)."""
        while True:
            objects, prefixes, truncated, horizon = await self._list_page(
                bucket, prefix, delimiter, start_after, limit, full, markers, deleting)
            if objects or prefixes or not truncated or horizon is None:
                return objects, prefixes, truncated
            start_after = horizon  # every key up to the horizon was deleted: read on

    async def _list_page(self, bucket: str, prefix: str, delimiter: str, start_after: str, limit: int,
                         full: bool, markers: bool = False,
                         deleting: bool = False) -> tuple[list[tuple[str, dict]], list[str], bool, str | None]:
        nodes, q = self._quorum(bucket)
        args = {"bucket": bucket, "prefix": prefix, "delimiter": delimiter,
                "start_after": start_after, "limit": limit, "full": full}
        if markers:
            args["markers"] = True
        if deleting:
            args["deleting"] = True
        leased, ans = await self.leases.read(bucket, dict(args, scan=True)) \
            if self.leases is not None and not deleting else (False, None)
        answers = [("holder", ans)] if leased else await self._read(nodes, "scan", args, q.r)
        if len(answers) == 1:
            ans = answers[0][1]
            return [(k, e) for k, e in ans["objects"]], list(ans["prefixes"]), bool(ans["truncated"]), None
        pages = [a for _, a in answers]
        # Only keys below every truncated page's last item are known to all answers.
        horizon: str | None = None
        for page in pages:
            if page["truncated"]:
                last = max([k for k, _ in page["objects"]] + list(page["prefixes"]), key=str.encode, default="")
                horizon = last if horizon is None or last.encode() < horizon.encode() else horizon
        merged: dict[str, list] = {}
        listed: dict[str, int] = {}
        for page in pages:
            for k, e in page["objects"]:
                merged.setdefault(k, []).append(e)
            for p in page["prefixes"]:
                listed[p] = listed.get(p, 0) + 1
        # A common prefix every answer lists stands. One that only some list (a replica that
        # missed the DELETE of the last key under it, or the PUT of the first) is decided as a
        # disputed key is: by a quorum listing under it (``_prefix_live``).
        prefixes = {p for p, n in listed.items() if n == len(pages)}
        for p in sorted(listed.keys() - prefixes, key=str.encode):
            if (horizon is None or p.encode() <= horizon.encode()) and await self._prefix_live(
                    bucket, p, markers, deleting):
                prefixes.add(p)
        # Keys unsettled on a replica (a conditional write's commit lost there may be newer than
        # what every answer holds, and on a replica not asked): each is read with a point read,
        # which hears every replica, as a key the answers disagree about is.
        doubtful = {k for page in pages for k in page.get("unsettled") or ()
                    if isinstance(k, str) and k.startswith(prefix) and k.encode() > start_after.encode()}
        objects: list[tuple[str, dict]] = []
        for k in sorted(set(merged) | doubtful, key=str.encode):
            if horizon is not None and k.encode() > horizon.encode():
                continue
            seen = merged.get(k)
            if seen is not None and k not in doubtful and len(seen) == len(pages) \
                    and all(_same_listing(seen[0], e) for e in seen[1:]):
                objects.append((k, seen[0]))
                continue
            cut = k.find(delimiter, len(prefix)) if seen is None and delimiter else -1
            if cut >= 0 and k[:cut + len(delimiter)] in prefixes:
                continue  # (an unsettled key under a common prefix listed already)
            entry = await self.get(bucket, k)  # disagreement: quorum point read decides
            if entry is None or (entry.get("dm") and not markers):
                continue
            if cut >= 0:
                prefixes.add(k[:cut + len(delimiter)])
            elif full:
                objects.append((k, entry))
            else:
                objects.append((k, {f: entry.get(f) for f in (seen[0] if seen else LISTING_FIELDS)}))
        cps = sorted((p for p in prefixes if horizon is None or p.encode() <= horizon.encode()), key=str.encode)
        items = sorted([(k, False) for k, _ in objects] + [(p, True) for p in cps], key=lambda i: i[0].encode())
        truncated = horizon is not None or len(items) > limit
        items = items[:limit]
        keep = {k for k, is_cp in items if not is_cp}
        return ([(k, e) for k, e in objects if k in keep], [p for p, is_cp in items if is_cp], truncated,
                horizon)

    async def _prefix_live(self, bucket: str, prefix: str, markers: bool, deleting: bool) -> bool:
        """Whether a quorum of replicas holds a key under ``prefix`` that a listing shows: a
        listing under it without a delimiter (each disputed key read through a quorum)."""
        objects, _, _ = await self.list(bucket, prefix, "", "", 100, markers=markers, deleting=deleting)
        return bool(objects)

    # -- anti-entropy ---------------------------------------------------------------------
    async def sync_bucket(self, bucket: str) -> int:
        """Pull every version this replica is missing from the bucket's other replicas (every
        node of its placement: during an index move, both sets). Run on every replica, it makes
        them converge. Returns the number of repairs."""
        nodes = self.placement(bucket).nodes
        if self.node_id not in nodes:
            return 0
        repaired = 0
        for peer in nodes:
            if peer == self.node_id:
                continue
            try:
                repaired += await self.exchange(bucket, peer, self.node_id, settle=SETTLE_CHECKS)
            except errors.BucketsError as exc:
                log.info("anti-entropy of %s with %s: %s", bucket, peer, exc)
            except asyncio.TimeoutError:
                log.info("anti-entropy of %s with %s: timed out", bucket, peer)
        self.entropy_repairs += repaired
        return repaired

    async def exchange(self, bucket: str, source: str, target: str, settle: int = 0) -> int:
        """The anti-entropy exchange between two replicas (either may be this node): compare
        their range digests, then copy to ``target`` every entry and tombstone of the differing
        ranges that ``source`` holds newer. Returns how many it copied; errors propagate.

        ``settle``: compare the ranges that differ this many times more, ``SETTLE_SECONDS``
        apart, and exchange only those that differ every time. Under writes, a range differs
        whenever a write in it has reached one replica and not yet the other, and each
        exchange of a range costs both sides a scan of the whole bucket (``versions``); a
        range whose replicas really disagree differs at every comparison."""
        created = self.created_of(bucket)  # (the copies name the bucket they were read from)

        async def compare(among: "list[int] | None") -> tuple[list[int], dict, dict]:
            mine = await self._call(target, "digest", {"bucket": bucket})
            theirs = await self._call(source, "digest", {"bucket": bucket})
            differ = [i for i, (a, b) in enumerate(zip(mine["digest"], theirs["digest"])) if a != b]
            return (differ if among is None else [i for i in differ if i in among]), mine, theirs

        differ, mine, theirs = await compare(None)
        for _ in range(settle):
            if not differ:
                break
            await asyncio.sleep(SETTLE_SECONDS)
            differ, mine, theirs = await compare(differ)
        copied = 0
        # The differing ranges in batches of about VERSIONS_BATCH keys (by the larger side's
        # counts): a replica far behind, or new, never gets a huge bucket's whole version list
        # in one answer (each batch costs each side one scan of the bucket).
        sizes = [max(c1, c2) for c1, c2 in zip(mine.get("counts") or [0] * len(mine["digest"]),
                                               theirs.get("counts") or [0] * len(theirs["digest"]))]
        batch: list[int] = []
        held = 0
        for i in differ:
            batch.append(i)
            held += sizes[i] if i < len(sizes) else 0
            if held >= VERSIONS_BATCH or i == differ[-1]:
                copied += await self._exchange_ranges(bucket, source, target, batch, created)
                batch, held = [], 0
        return copied

    async def _exchange_ranges(self, bucket: str, source: str, target: str, ranges: list[int],
                               created: float | None) -> int:
        remote = (await self._call(source, "versions", {"bucket": bucket, "ranges": ranges}))["versions"]
        local = {k: _ts(v) for k, v, _t in (await self._call(
            target, "versions", {"bucket": bucket, "ranges": ranges}))["versions"]}
        copied = 0
        for key, version, _tomb in remote:
            have = local.get(key)
            if have is not None and have >= _ts(version):
                continue
            ans = await self._call(source, "get", {"bucket": bucket, "key": key})
            if ans.get("ts") is None:
                continue
            merge = {"bucket": bucket, "key": key, "entry": ans.get("entry"), "data": None, "ts": ans["ts"]}
            if ans.get("entry") is None and JUDGED in ans:  # (a conditional delete's tombstone)
                merge[JUDGED] = ans[JUDGED]
            _name_bucket(merge, created)
            merged = await self._call(target, "merge", merge)
            if isinstance(merged, dict) and merged.get("unseen"):
                # A conditional commit the target refuses: it holds a write that commit's check
                # did not see. Neither side would ever take the other's version, so the range
                # would differ at every pass; a quorum read settles the key as any read meeting
                # both does (the commit, if it stands on a quorum, or that write above it).
                try:  # (never from a lease: for the write-backs alone)
                    await self._quorum_read(bucket, key, {"bucket": bucket, "key": key}, False, created)
                except errors.BucketsError as exc:
                    log.info("anti-entropy of %s/%s: %s", bucket, key, exc)
            copied += 1
        return copied

    async def copy_replicas(self, bucket: str, sources: Sequence[str], targets: Sequence[str]) -> int:
        """Bring ``targets`` up to date with ``sources`` (an index move's copy step): each
        target pulls from every reachable source. A target counts as complete once it pulled
        from a read quorum of the sources, which overlaps the write quorum of every write
        acknowledged on them; fewer than a write quorum of complete targets is
        ``WriteQuorumLost`` (the move is retried). Returns the entries copied."""
        need_src = Quorum.for_replicas(len(sources)).r
        complete, copied, failures = 0, 0, []
        for target in targets:
            pulled = 0
            for source in sources:
                if source == target:
                    pulled += 1
                    continue
                try:
                    copied += await self.exchange(bucket, source, target)
                    pulled += 1
                except (errors.BucketsError, asyncio.TimeoutError) as exc:
                    failures.append(f"{source} -> {target}: {exc or type(exc).__name__}")
            complete += pulled >= need_src
        if complete < Quorum.for_replicas(len(targets)).w:
            raise errors.WriteQuorumLost(
                f"Index copy of {bucket!r}: {complete} of {len(targets)} new replicas complete "
                f"({'; '.join(failures)})")
        return copied

    async def drop_replicas(self, bucket: str, nodes: Sequence[str], *, strict: bool = False) -> int:
        """Ask ``nodes`` to forget the bucket's entries; a node that does not answer keeps them
        (it is no replica, so nothing reads them) and is logged. Returns the entries dropped.
        ``strict``: the nodes are about to become replicas (an index move's new-only ones), so
        one that did not drop is ``WriteQuorumLost`` (the move is retried): an entry it kept
        from an earlier stay of the index could be one whose delete's tombstone was forgotten
        since (``forget_tombstones``), and it would spread that entry back."""
        dropped = 0
        for node in nodes:
            try:
                dropped += await self.drop_on(node, bucket)
            except (errors.BucketsError, asyncio.TimeoutError) as exc:
                if strict:
                    raise errors.WriteQuorumLost(f"Index move of {bucket!r}: {node} did not empty its replica "
                                                 f"({exc or type(exc).__name__})") from None
                log.warning("index of %s: %s did not drop its old replica: %s", bucket, node,
                            exc or type(exc).__name__)
        return dropped

    async def forget_tombstones(self, bucket: str, before_hlc: int, after: str = "",
                                limit: int = TOMBSTONE_BATCH) -> tuple[int, str | None]:
        """Forget up to ``limit`` of ``bucket``'s tombstones whose version's clock is below
        ``before_hlc`` (from this replica's record after ``after``'s), on every replica, those
        that every replica holds exactly (``IndexReplica.tombs_held``): no replica then keeps an
        entry one of them deleted. Not during an index move (two replica sets, one being
        filled), nor with a replica that does not answer (it may hold an entry a tombstone
        deleted): nothing is forgotten then. Each replica forgets a tombstone only where its
        key still holds it (``forget_tombs``); one that fails keeps it, and anti-entropy may
        give it back to the others, to be forgotten at a later round. Returns (tombstones
        forgotten here, the key to resume after; None: the walk is done). Errors propagate."""
        placement = self.placement(bucket)
        nodes = list(placement.read)
        if len(placement.write) != 1 or set(placement.write[0]) != set(nodes) or self.node_id not in nodes:
            return 0, None  # (an index move under way, or not a replica)
        old = await asyncio.get_running_loop().run_in_executor(
            None, self.local.registry.old_tombstones, bucket, before_hlc, limit, after)
        if not old:
            return 0, None
        items = [[key, list(version)] for key, version in old]
        held = [True] * len(items)
        for node in nodes:
            answer = (await self._call(node, "tombs_held", {"bucket": bucket, "items": items}))["held"]
            if len(answer) != len(items):
                raise errors.ServiceUnavailable(f"{node} answered tombs_held for {len(answer)} of {len(items)}")
            held = [a and b is True for a, b in zip(held, answer)]
        sure = [item for item, h in zip(items, held) if h]
        forgot = 0
        if sure:
            for node in nodes:
                try:
                    n = int((await self._call(node, "forget_tombs", {"bucket": bucket, "items": sure}))["forgot"])
                except (errors.BucketsError, asyncio.TimeoutError) as exc:
                    log.info("index of %s: %s did not forget %d tombstones: %s", bucket, node, len(sure),
                             exc or type(exc).__name__)
                    continue
                if node == self.node_id:
                    forgot = n
        return forgot, (old[-1][0] if len(old) >= limit else None)

    async def drop_on(self, node: str, bucket: str, *, deleted: bool = False) -> int:
        """Ask one node to forget the bucket's entries (raises if it does not answer);
        ``deleted``: the bucket was deleted (``IndexReplica.drop``)."""
        args: dict[str, Any] = {"bucket": bucket}
        if deleted:
            args["deleted"] = True
        return int((await self._call(node, "drop", args))["dropped"])

    async def close(self) -> None:
        if self.leases is not None:
            await self.leases.close()
        for t in list(self._background):
            t.cancel()
        for t in list(self._background):
            await cancel_and_wait(t)


def _same_listing(a: dict, b: dict) -> bool:
    return a.get("etag") == b.get("etag") and a.get("mt") == b.get("mt") and a.get("size") == b.get("size")
