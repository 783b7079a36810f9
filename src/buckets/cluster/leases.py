"""Read leases on a bucket's index: one replica answers a lookup alone.

A quorum read asks two of a bucket's three index replicas, because with writes acknowledged by
two of three any single replica may lack one. A lease makes one replica, the bucket's *holder*
(the first node of its replica set), complete for as long as the lease lasts, so a GET's lookup
is one call to the holder (none on the holder itself):

- **Promises.** The holder asks the other replicas for a promise (``grant``); each keeps it
  for ``LEASE_SECONDS`` from when it received the request, and renewals extend it. A replica
  reports every promise it keeps in its answers to ``merge``, ``get`` and ``scan``.
- **Nothing goes around the holder.** A write (or a read's write-back) whose answers report a
  promise waits for the holder's answer too, not only for a quorum; a read that meets a
  promise asks the holder as well. If the holder does not answer within ``HOLDER_WAIT``, the
  writer revokes the promises it met (``revoke``: no more renewals) and waits until they end
  before it answers: by then the holder's own view of its lease has ended (it counts from
  before it asked, shortened by ``DRIFT``), so the holder never answers without a write that
  was acknowledged.
- **Complete before it answers.** A lease counts only once the holder has caught up with a
  promise it relies on: after each *new* promise (not a renewal) it pulls every version the
  granter holds and pushes every version it holds that the granter lacks (anti-entropy
  exchanges both ways). Every write acknowledged before the promise is on the granter or the
  holder (any two of three replicas include one of them), and every one after it waited for
  the holder. With ``r - 1`` such granters (one of three), every write quorum without the
  holder contains one.
- **Never a version only it holds.** The holder tracks the keys merged on it since it began
  keeping the lease (``unconfirmed``, and ``inflight`` while a merge commits) and answers a
  lookup of one of them only once a granter said it holds that version too (``holds``, swept
  every ``CONFIRM_EVERY``); until then the lookup is a quorum read. Answering a version
  from a write that reached the holder alone, then losing the lease, would let a later quorum
  read go back in time. A granter that held the version and then a newer one says "held"
  too (the newer write waited for the holder), except for a version a failed write's undo
  put back on the holder (``exact``): a write the holder refused meanwhile may stand on the
  granters without it, so only a granter holding exactly that version confirms it.
- **A restarted replica** does not know what it promised before: for ``LEASE_SECONDS`` after
  it starts it reports a promise to whatever node is its set's holder.
- **Only outside index moves.** The holder keeps a lease only while its own placement of the
  bucket is one replica set with it first; a move's phases make it stop (granters' promises
  still end on their own, and writes keep waiting for the holder until they do).

A listing page is answered the same way when no key of its range has an unconfirmed merge
on the holder. Leases are kept only for buckets that are read: a holder asks for one when a lookup comes to it,
and lets it lapse after ``IDLE_SECONDS`` without one. ``architecture/consistency.md`` ("What a
lookup costs") has the argument in full.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from buckets.runtime import cancel_and_wait
from buckets import errors
from buckets.registry.store import JUDGED, NOT_JUDGED

if TYPE_CHECKING:
    from buckets.cluster.index import ReplicatedIndex

log = logging.getLogger("buckets.cluster.leases")

LEASE_SECONDS = 2.0  # a granter's promise lasts this long after each grant it received
DRIFT = 0.1  # the holder counts its lease as this much shorter (clock rate drift), and
MARGIN = 0.05  # this much shorter again
HOLDER_WAIT = 1.0  # a write or read that met a promise waits this long for the holder
CONFIRM_EVERY = 0.05  # the holder asks a granter which of its recent merges it holds
PUSH_AFTER = 2.0  # a version the granter still lacks after this long is pushed to it
IDLE_SECONDS = 300.0  # a lease not used this long lapses (a new one costs a scan of the bucket's index)
KNOWN_SECONDS = 10.0  # a node asks a holder first for this long after it said it holds a lease
UNCONFIRMED_MAX = 100_000  # more unconfirmed keys than this: the lease is dropped
CONFIRM_BATCH = 2000


@dataclass(slots=True)
class Promise:
    holder: str
    until: float
    epoch: str
    revoked: bool = False


class Promises:
    """A replica's side: the promises it keeps, by bucket."""

    def __init__(self, seconds: float = LEASE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.born = clock()
        self._by_bucket: dict[str, Promise] = {}

    def info(self, bucket: str) -> list[list] | None:
        """``[[holder, seconds left], ...]`` for the promises in force on ``bucket`` (holder
        None: whatever node is the holder, the promises of before a restart)."""
        now = self.clock()
        out: list[list] = []
        p = self._by_bucket.get(bucket)
        if p is not None:
            if p.until > now:
                out.append([p.holder, p.until - now])
            else:
                del self._by_bucket[bucket]
        blanket = self.born + self.seconds - now
        if blanket > 0:
            out.append([None, blanket])
        return out or None

    def grant(self, bucket: str, holder: str) -> dict:
        now = self.clock()
        p = self._by_bucket.get(bucket)
        if p is not None and p.until > now:
            if p.holder == holder and not p.revoked:
                p.until = now + self.seconds  # a renewal: the same epoch, no catching up
                return {"granted": True, "epoch": p.epoch}
            return {"granted": False, "left": p.until - now}
        p = self._by_bucket[bucket] = Promise(holder, now + self.seconds, os.urandom(8).hex())
        return {"granted": True, "epoch": p.epoch}

    def revoke(self, bucket: str) -> float:
        """End the bucket's promise (no more renewals); the seconds until it has ended."""
        now = self.clock()
        left = max(0.0, self.born + self.seconds - now)
        p = self._by_bucket.get(bucket)
        if p is not None and p.until > now:
            p.revoked = True
            left = max(left, p.until - now)
        return left


@dataclass(slots=True)
class Lease:
    """The holder's side, for one bucket."""

    bucket: str
    replicas: tuple[str, ...]
    start_seq: int
    valid_until: float = 0.0
    last_used: float = 0.0
    caught: dict[str, str] = field(default_factory=dict)  # granter -> epoch caught up with
    catching: set[str] = field(default_factory=set)
    unconfirmed: dict[str, tuple] = field(default_factory=dict)  # key -> version merged here
    # Keys whose unconfirmed version an undo put back: confirmed only by a granter holding
    # exactly that version (``holds``' ``exact``), not by one that held it before a newer one.
    exact: set[str] = field(default_factory=set)
    since: dict[str, float] = field(default_factory=dict)  # key -> when it became unconfirmed
    inflight: dict[str, int] = field(default_factory=dict)  # key -> merges committing now


def holders(promises: dict[str, list], sets: Sequence[Sequence[str]]) -> set[str]:
    """The holders that the promises reported by replicas (``{replica: [[holder, left]]}``)
    name; a promise of before a restart (holder None) names the first node of the replica's set."""
    out: set[str] = set()
    for node, plist in promises.items():
        for holder, _left in plist:
            if holder is None:
                holder = next((s[0] for s in sets if node in s), None)
            if holder is not None and holder != node:
                out.add(holder)
    return out


class LeaseKeeper:
    """The leases this node holds (as the first replica of buckets' sets), and the lookups
    it answers from them."""

    def __init__(self, index: "ReplicatedIndex", *, seconds: float = LEASE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.index = index
        self.seconds = seconds
        self.renew_every = seconds / 4  # renewals: four per promise's length
        self.clock = clock
        self._leases: dict[str, Lease] = {}
        # bucket -> until when this node asks the bucket's holder first: set when the holder
        # said it holds a lease (in a quorum read's answer, or by answering from it), so a
        # lookup does not spend a call on a holder that has none.
        self._known: dict[str, float] = {}
        self._task: asyncio.Task | None = None  # the loop that renews and confirms (while any lease is kept)
        self.served = 0  # lookups this node answered from its leases (its own and its peers')
        local = index.local
        local.promises = Promises(seconds, clock)
        local.holder_of = self.holder_of
        local.serve_read = self.serve_read
        local.on_merge = self._on_merge
        local.on_get = self.on_get

    # -- who holds ---------------------------------------------------------------------
    def holder_of(self, bucket: str) -> str | None:
        placement = self.index.placement(bucket)
        if len(placement.write) != 1 or len(placement.read) < 2:
            return None
        return placement.read[0]

    def _usable(self, bucket: str, args: dict) -> bool:
        """Whether this node's lease on ``bucket`` answers ``args``: a lookup of a key with no
        unconfirmed merge, or a listing page (``scan``) whose range holds no such key."""
        lease = self._leases.get(bucket)
        now = self.clock()
        if lease is None:
            return False
        lease.last_used = now
        if lease.valid_until <= now or tuple(self.index.placement(bucket).read) != lease.replicas:
            return False
        if not args.get("scan"):
            key = args["key"]
            return key not in lease.unconfirmed and not lease.inflight.get(key)
        prefix = str(args.get("prefix", ""))
        after = str(args.get("start_after", "")).encode()
        return not any(k.startswith(prefix) and k.encode() > after
                       for keys in (lease.unconfirmed, lease.inflight) for k in keys)

    async def _answer(self, args: dict) -> dict | None:
        """This replica's answer, if the lease still covers it once read (a listing page is
        read in a thread: a merge into its range meanwhile, or the lease's end, voids it)."""
        local = self.index.local
        ans = await (local.scan(args) if args.get("scan") else local.get(args))
        if not self._usable(args["bucket"], args) or ans.get("unsettled"):
            return None  # (unsettled: a quorum read hears every replica, ``ReplicatedIndex._hear_rest``)
        self.served += 1
        return ans

    # -- lookups and listings -------------------------------------------------------------
    async def read(self, bucket: str, args: dict) -> tuple[bool, dict | None]:
        """(True, answer) if a lease answered ``args`` (a ``get``, or with ``scan`` set a
        listing page): this node's own replica when it holds the lease, else the holder's;
        (False, None): ask a quorum."""
        holder = self.holder_of(bucket)
        if holder is None:
            return False, None
        me = self.index.node_id
        if holder == me:
            if self._usable(bucket, args):
                ans = await self._answer(args)
                if ans is not None:
                    return True, ans
            self.want(bucket)
            return False, None
        if self._known.get(bucket, 0.0) <= self.clock():
            return False, None
        try:
            ans = await self.index._call(holder, "read", args, HOLDER_WAIT)
        except (errors.BucketsError, asyncio.TimeoutError, OSError):
            self._known.pop(bucket, None)
            return False, None
        if not isinstance(ans, dict) or not ans.get("leased"):
            self._known.pop(bucket, None)
            return False, None
        self._known[bucket] = self.clock() + KNOWN_SECONDS
        return True, ans

    def saw(self, bucket: str, answers: list[tuple[str, Any]]) -> None:
        """A quorum read's answers: if the bucket's holder said it holds a lease, ask it first
        from now on."""
        holder = self.holder_of(bucket)
        if holder is not None and holder != self.index.node_id and any(
                node == holder and isinstance(ans, dict) and ans.get("lease") for node, ans in answers):
            if len(self._known) > 100_000:
                self._known.clear()
            self._known[bucket] = self.clock() + KNOWN_SECONDS

    def on_get(self, bucket: str) -> bool:
        """A ``get`` or ``scan`` on this node's replica: if this node is the bucket's holder,
        it wants a lease (a quorum read asks the holder first); True if it holds one."""
        if self.holder_of(bucket) != self.index.node_id:
            return False
        lease = self._leases.get(bucket)
        if lease is None:
            self.want(bucket)
            return False
        lease.last_used = self.clock()
        return lease.valid_until > self.clock()

    async def serve_read(self, args: dict) -> dict:
        """``index/read``: a lookup or listing page sent to this node as the bucket's holder."""
        bucket = args["bucket"]
        if self.holder_of(bucket) != self.index.node_id:
            return {"leased": False}
        if not self._usable(bucket, args):
            self.want(bucket)
            return {"leased": False}
        ans = await self._answer(args)
        if ans is None:
            return {"leased": False}
        ans["leased"] = True
        return ans

    # -- merges on this node -----------------------------------------------------------
    def _on_merge(self, bucket: str, key: str) -> Callable[[tuple | None], None] | None:
        lease = self._leases.get(bucket)
        if lease is None:
            return None
        lease.inflight[key] = lease.inflight.get(key, 0) + 1

        def done(version: tuple | None, retracted: bool = False) -> None:
            n = lease.inflight.get(key, 0) - 1
            if n > 0:
                lease.inflight[key] = n
            else:
                lease.inflight.pop(key, None)
            if retracted and version is not None:
                # A failed write's merge undone here (``IndexReplica.retract``): the key went back
                # to an older version, which a write refused here meanwhile may be newer than.
                # A granter that held this version and then that write would say "held" to
                # the usual question (traced in a lossy history, session 22: the holder then
                # answered the old version alone after the newer write was acknowledged): it
                # must hold exactly this version.
                lease.unconfirmed[key] = version
                lease.exact.add(key)
                lease.since[key] = self.clock()
            elif version is not None:
                held = lease.unconfirmed.get(key)
                if held is None or version > held:  # merges may finish out of order
                    lease.unconfirmed[key] = version
                    lease.exact.discard(key)
                    lease.since[key] = self.clock()
        return done

    def confirmed(self, bucket: str, key: str, version: tuple) -> None:
        """A quorum read through this node found ``version`` on a write quorum."""
        lease = self._leases.get(bucket)
        if lease is not None and lease.unconfirmed.get(key) == version:
            del lease.unconfirmed[key]
            lease.exact.discard(key)
            lease.since.pop(key, None)

    # -- keeping leases: one loop for all of them, one call per peer per round -------------
    def _registry_failed(self) -> bool:
        """This node's registry failed (its disk: ``Registry.fail``): it refuses every merge, so
        it can neither catch up nor hold what it would answer from; it holds no lease. Nor while
        a commit of it hangs past the disk timeout (``Registry.hung_since``: a frozen file system):
        merges wait behind that commit, and every write and read write-back that met a promise
        to this node waited for it (``HOLDER_WAIT``, then the promise's end), lease after lease."""
        registry = getattr(self.index.local, "registry", None)
        return getattr(registry, "failed", None) is not None or getattr(registry, "hung_since", None) is not None

    def want(self, bucket: str) -> None:
        if bucket in self._leases or self._registry_failed():
            return
        placement = self.index.placement(bucket)
        self._leases[bucket] = Lease(bucket, tuple(placement.read), self.index.local.seq, last_used=self.clock())
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def _drop(self, lease: Lease) -> None:
        lease.valid_until = 0.0
        if self._leases.get(lease.bucket) is lease:
            del self._leases[lease.bucket]

    async def _run(self) -> None:
        """Every ``CONFIRM_EVERY``: confirm the holder's recent merges with a granter; every
        quarter of a promise's length: renew every lease. Both batched, one call per peer."""
        renew_at = 0.0
        while self._leases:
            try:
                now = self.clock()
                me = self.index.node_id
                failed = self._registry_failed()
                for lease in list(self._leases.values()):
                    if failed or self.holder_of(lease.bucket) != me or \
                            tuple(self.index.placement(lease.bucket).read) != lease.replicas or \
                            now - lease.last_used > IDLE_SECONDS or len(lease.unconfirmed) > UNCONFIRMED_MAX:
                        self._drop(lease)
                ready = [lease for lease in self._leases.values()
                         if not self.index.local.merging_since(lease.bucket, lease.start_seq)]
                if now >= renew_at:
                    renew_at = now + self.renew_every
                    await self._renew(ready)
                await self._confirm(ready)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a lease is an optimisation: log, drop them, go on
                log.exception("read leases")
                for lease in list(self._leases.values()):
                    self._drop(lease)
            await asyncio.sleep(CONFIRM_EVERY)

    async def _renew(self, leases: list[Lease]) -> None:
        from buckets.cluster.index import Quorum

        me = self.index.node_id
        by_peer: dict[str, list[str]] = {}
        for lease in leases:
            for node in lease.replicas:
                if node != me:
                    by_peer.setdefault(node, []).append(lease.bucket)
        if not by_peer:
            return
        sent = self.clock()
        peers = list(by_peer)
        async def ask(n: str) -> Any:  # the call is made only once its task runs (none left unawaited if cancelled first)
            return await self.index._call(n, "grant", {"buckets": by_peer[n], "holder": me}, HOLDER_WAIT)

        answers = await asyncio.gather(*(ask(n) for n in peers), return_exceptions=True)
        granted: dict[str, dict] = {}
        for node, ans in zip(peers, answers):
            if isinstance(ans, dict):
                granted[node] = ans.get("grants") or {}
        for lease in leases:
            need = Quorum.for_replicas(len(lease.replicas)).r - 1
            good = 0
            for node in lease.replicas:
                if node == me:
                    continue
                grant = granted.get(node, {}).get(lease.bucket)
                if not isinstance(grant, dict) or not grant.get("granted"):
                    continue
                epoch = str(grant.get("epoch"))
                if lease.caught.get(node) == epoch:
                    good += 1
                elif node not in lease.catching:
                    lease.catching.add(node)
                    self.index._keep(asyncio.ensure_future(self._catch_up(lease, node, epoch)))
            if good >= need:
                lease.valid_until = max(lease.valid_until, sent + self.seconds * (1 - DRIFT) - MARGIN)

    async def _catch_up(self, lease: Lease, node: str, epoch: str) -> None:
        """After a new promise from ``node``: pull what it holds that this replica lacks, and
        push what this replica holds that it lacks."""
        me = self.index.node_id
        try:
            await self.index.exchange(lease.bucket, node, me)
            await self.index.exchange(lease.bucket, me, node)
            lease.caught[node] = epoch
        except (errors.BucketsError, asyncio.TimeoutError, OSError) as exc:
            log.info("read lease on %s: catching up with %s: %s", lease.bucket, node, exc)
        finally:
            lease.catching.discard(node)

    async def _confirm(self, leases: list[Lease]) -> None:
        """Ask a granter of each lease which of the holder's recent merges it holds too."""
        by_peer: dict[str, list[tuple[Lease, list[tuple[str, tuple]]]]] = {}
        for lease in leases:
            if not lease.unconfirmed:
                continue
            granter = next((n for n in lease.caught if n in lease.replicas), None)
            if granter is not None:
                items = list(lease.unconfirmed.items())[:CONFIRM_BATCH]
                by_peer.setdefault(granter, []).append((lease, items))
        if not by_peer:
            return
        peers = list(by_peer)
        async def ask(node: str) -> Any:  # as in renew: the call is made once its task runs
            return await self.index._call(node, "holds", {"buckets": {
                lease.bucket: [[k, list(v), True] if k in lease.exact else [k, list(v)] for k, v in items]
                for lease, items in by_peer[node]}}, HOLDER_WAIT)

        answers = await asyncio.gather(*(ask(node) for node in peers), return_exceptions=True)
        now = self.clock()
        for node, ans in zip(peers, answers):
            if not isinstance(ans, dict):
                continue
            held_by_bucket = ans.get("held") or {}
            for lease, items in by_peer[node]:
                stale: list[tuple[str, tuple]] = []
                for (key, version), held in zip(items, held_by_bucket.get(lease.bucket) or []):
                    if lease.unconfirmed.get(key) != version:
                        continue
                    if held:
                        del lease.unconfirmed[key]
                        lease.exact.discard(key)
                        lease.since.pop(key, None)
                    elif now - lease.since.get(key, now) > PUSH_AFTER:
                        stale.append((key, version))
                if stale:
                    self.index._keep(asyncio.ensure_future(self._push(lease, node, stale[:100])))

    async def _push(self, lease: Lease, node: str, stale: list[tuple[str, tuple]]) -> None:
        """Versions that reached this replica alone (their writes failed): put them on a
        granter too, so they can be answered (or are replaced there by newer ones)."""
        now = self.clock()
        for key, version in stale:
            entry, held_here, judged = self.index.local.registry.held_judged(lease.bucket, key)
            if held_here != version:
                continue
            lease.since[key] = now  # not pushed again before PUSH_AFTER
            merge = {"bucket": lease.bucket, "key": key, "entry": entry, "data": None, "ts": list(version)}
            if entry is None and judged is not NOT_JUDGED:  # (a conditional delete's tombstone)
                merge[JUDGED] = list(judged) if judged is not None else None
            if (created := self.index.created_of(lease.bucket)) is not None:
                merge["created"] = created  # (not into another bucket of that name: ``_refuse_other``)
            try:
                await self.index._call(node, "merge", merge, HOLDER_WAIT)
            except (errors.BucketsError, asyncio.TimeoutError, OSError):
                return

    def held(self) -> list[str]:
        """The buckets whose lease this node holds now."""
        now = self.clock()
        return [b for b, lease in self._leases.items() if lease.valid_until > now]

    async def close(self) -> None:
        for lease in list(self._leases.values()):
            self._drop(lease)
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)


def promise_answer(answer: dict, promises: Any, bucket: str) -> dict:
    """Add the promises a replica keeps on ``bucket`` to its answer."""
    if promises is not None:
        info = promises.info(bucket)
        if info:
            answer["promise"] = info
    return answer
