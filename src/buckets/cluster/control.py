"""The control plane: cluster-wide state, one source of truth, replicated by Raft on every node.

What it holds (``control_state``): the topology (deployment id, erasure layout, nodes with
their disks and states, and every generation of the partition table), users (secrets sealed
by the caller), buckets with their settings, free-form cluster settings, and a keyed,
versioned store for migration jobs and checkpoints. It changes rarely and can afford
consensus on every change; the data plane (shards, registry entries) never waits on it.

How (``control_raft``): an embedded ``pysyncobj`` node per process. A change is a command
appended to the Raft log; it is applied, in log order, by every node's state machine, and
the caller gets the result once it is committed on a majority and applied locally. Any
node accepts a change: a follower forwards it to the leader (pysyncobj does this), and
the answer still comes from the follower's own state machine, so it equals the leader's.

This module is the asyncio face of it::

    cp = ControlPlane(ControlConfig(address="127.0.0.2:10000", members=(...), secret=..., directory=...))
    await cp.start()
    await cp.apply("create_bucket", name="photos", owner="alice")   # committed, or a typed error
    cp.snapshot.buckets["photos"]                                   # local read, no round trip
    (await cp.read(linearizable=True)).buckets                      # sees every earlier commit
    cp.status().as_dict()                                           # for info and /health/cluster

``apply`` never blocks the event loop (pysyncobj's callback runs on its own thread and is
handed back with ``call_soon_threadsafe``), retries the same request while the leader
changes (the state machine answers a retried request id with its first result, so a
retry never applies twice), and raises ``NoQuorum`` (a 503) once ``commit_timeout`` passes
without a majority committing it. As with any consensus system, a command that timed out
may still commit later if a majority returns and the old leader's entry survives; retrying
is safe for commands that check state (``create_bucket`` then answers "you own it").

Addresses: Raft needs a TCP port of its own (pysyncobj is not HTTP). It binds to the
node's own address on ``control_port``, by default the node's S3 port + 1000 (9000 ->
10000), so the same command line works on every node; on one machine the nodes are
distinct loopback addresses (127.0.0.1 ... 127.0.0.8) with the same ports, as in the
tests. Traffic is encrypted and authenticated with a password derived (HKDF) from the
cluster secret. The journal and snapshot live on the node's first disk, under
``.buckets.sys/control/``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pysyncobj import SyncObjConf
from pysyncobj.config import FAIL_REASON
from pysyncobj.syncobj import SyncObjException

from buckets.runtime import wait_for
from buckets import errors
from buckets.cluster.control_raft import JOURNAL_DISK_FAILED, JOURNAL_FILE, SNAPSHOT_FILE, RaftNode, RaftStatus
from buckets.cluster.control_records import (
    ControlSnapshot, Layout, NodeRecord, check_address, check_endpoint, check_nodes, compress_table,
    placement_disks,
)
from buckets.cluster.control_state import ControlMachine, encode_command
from buckets.errors import BucketsError, define_error
from buckets.placement import DiskSpec, PartitionTable, Topology, build_table

log = logging.getLogger("buckets.cluster.control")

CONTROL_PORT_OFFSET = 1000
CONTROL_SUBDIR = "control"  # under the disk's system directory (buckets.storage.format.SYS_DIR)

# --- errors: every refusal the state machine can give, typed ----------------------------------
NoQuorum = define_error(
    "NoQuorum", "ServiceUnavailable", 503,
    "The cluster's control plane has no majority of nodes online: the change was not committed. "
    "Retry once more nodes are back.")
NoSuchUser = define_error("NoSuchUser", "NoSuchUser", 404, "The specified user does not exist.")
UserAlreadyExists = define_error("UserAlreadyExists", "UserAlreadyExists", 409, "The user already exists.")
NoSuchNode = define_error("NoSuchNode", "NoSuchNode", 404, "The specified node is not in the cluster.")
NoSuchGeneration = define_error("NoSuchGeneration", "NoSuchGeneration", 404, "No such topology generation.")
NoSuchJob = define_error("NoSuchJob", "NoSuchJob", 404, "The specified job does not exist.")
GenerationConflict = define_error(
    "GenerationConflict", "GenerationConflict", 409,
    "The topology changed while the change was prepared; prepare it again.")
VersionConflict = define_error("VersionConflict", "VersionConflict", 409,
                               "The record changed since it was read; read it again.")
ClusterMismatch = define_error(
    "ClusterMismatch", "ClusterMismatch", 409,
    "The cluster is already initialised with different nodes or layout.")
ClusterNotInitialized = define_error(
    "ClusterNotInitialized", "ServiceUnavailable", 503, "The cluster has not been initialised yet.")
LevelTooLow = define_error(
    "LevelTooLow", "LevelTooLow", 409,
    "A node runs an older release than the cluster's control level: upgrade it first.")
MembershipChangeRefused = define_error(
    "MembershipChangeRefused", "MembershipChangeRefused", 409,
    "The control plane kept refusing the membership change (another change is in progress).")

_ERRORS: dict[str, type[BucketsError]] = {
    "InvalidArgument": errors.InvalidArgument,
    "InternalError": errors.InternalError,
    "InvalidBucketName": errors.InvalidBucketName,
    "NoSuchBucket": errors.NoSuchBucket,
    "BucketAlreadyExists": errors.BucketAlreadyExists,
    "BucketAlreadyOwnedByYou": errors.BucketAlreadyOwnedByYou,
    "NoSuchUser": NoSuchUser,
    "UserAlreadyExists": UserAlreadyExists,
    "NoSuchNode": NoSuchNode,
    "NoSuchGeneration": NoSuchGeneration,
    "NoSuchJob": NoSuchJob,
    "GenerationConflict": GenerationConflict,
    "VersionConflict": VersionConflict,
    "BucketChanged": errors.BucketSettingsChanged,
    "OperationAborted": errors.OperationAborted,
    "ClusterMismatch": ClusterMismatch,
    "ClusterNotInitialized": ClusterNotInitialized,
    "LevelTooLow": LevelTooLow,
}
_BUCKET_ERRORS = {"InvalidBucketName", "NoSuchBucket", "BucketAlreadyExists", "BucketAlreadyOwnedByYou",
                  "OperationAborted"}

# pysyncobj outcomes after which the same request is sent again (it may or may not have
# been appended; the request id makes a second application answer the first result).
_RETRY = {FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.DISCARDED, FAIL_REASON.NOT_LEADER,
          FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME}


def first_disk_failing(first_disk_root: str, cause: str) -> str:
    """What a node whose first disk fails at start says: that disk holds its control-plane
    journal (and its index replica), which it cannot start again without."""
    return (f"{first_disk_root}: this node's first disk is failing ({cause}): it holds the node's "
            f"control-plane journal, which a Raft member cannot start again without. Remove the node through "
            f"another one (buckets-admin cluster remove-node ALIAS <this node's URL> --force), then replace "
            f"the disk, wipe the node's other disks and start it with --join (docs/cluster.md)")


class ControlPlaneError(Exception):
    """The control plane cannot start as configured (bad address, port in use, bad directory)."""


# --- configuration ------------------------------------------------------------------------------
def control_address(endpoint: str, control_port: int | None = None) -> str:
    """The Raft address of the node serving ``endpoint``: its host, ``control_port`` or S3 port + 1000."""
    check_endpoint(endpoint)
    parts = urlsplit(endpoint)
    port = control_port if control_port is not None else parts.port + CONTROL_PORT_OFFSET
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"control port for {endpoint} would be {port}: pass a control port in 1-65535")
    if ":" in parts.hostname:
        raise ValueError(f"{endpoint}: the control plane (pysyncobj) takes IPv4 addresses or host names")
    return check_address(f"{parts.hostname}:{port}")


def control_directory(disk_root: str) -> str:
    """Where a node keeps its Raft journal and snapshot: a system directory of its first disk."""
    from buckets.storage.format import SYS_DIR  # here, so importing the control plane stays light

    return os.path.join(disk_root, SYS_DIR, CONTROL_SUBDIR)


def derive_password(secret: bytes | str) -> str:
    """The Raft transport password: HKDF of the cluster secret, so the secret itself (also the
    peer-RPC HMAC key) is never the key of a second protocol."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise ValueError("the cluster secret must not be empty")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"buckets cluster",
               info=b"buckets control plane v1").derive(raw)
    return key.hex()


@dataclass(frozen=True)
class ControlConfig:
    """One node's control-plane settings. ``members`` lists every voting member's control
    address (this node's included), the same list on every node."""

    address: str
    members: tuple[str, ...]
    secret: bytes | str = field(repr=False)
    directory: str
    commit_timeout: float = 5.0  # apply() gives up with NoQuorum after this long
    election_timeout: tuple[float, float] = (1.0, 2.0)  # a follower that hears no leader for this long stands
    heartbeat: float = 0.1
    connection_timeout: float = 3.5
    reconnect_interval: float = 1.0
    leader_fallback: float = 3.0  # a leader without a majority for this long steps down
    compaction_entries: int = 5000  # snapshot the state and truncate the journal after this many entries
    compaction_interval: float = 300.0  # ... or this many seconds
    bind_timeout: float = 5.0
    # A command forwarded to the leader whose answer has not come after this long is sent
    # again (same request id, so it applies once): pysyncobj drops a forward sent while its
    # connection to the leader is down, and its callback then waits for a leader change.
    resend_after: float = 1.0

    def __post_init__(self) -> None:
        try:
            check_address(self.address)
            for member in self.members:
                check_address(member, "member address")
        except ValueError as exc:
            raise ControlPlaneError(str(exc)) from None
        members = tuple(dict.fromkeys(self.members))
        if self.address not in members:
            raise ControlPlaneError(f"this node's control address {self.address} is not among the members "
                                    f"({', '.join(members)})")
        object.__setattr__(self, "members", members)
        derive_password(self.secret)  # refuses an empty secret early


# --- status -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MemberStatus:
    address: str
    node_id: str | None  # from the topology, once it knows this address
    endpoint: str | None
    online: bool  # this node has a live, authenticated connection to it (or it is this node)
    leader: bool
    is_self: bool
    match_index: int | None  # leader's view of how far its log is replicated there

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "node_id": self.node_id, "endpoint": self.endpoint,
                "online": self.online, "leader": self.leader, "self": self.is_self,
                "match_index": self.match_index}


@dataclass(frozen=True, slots=True)
class ControlStatus:
    address: str
    role: str
    leader: str | None
    term: int
    commit_index: int
    last_applied: int
    has_quorum: bool
    deployment_id: str | None
    generation: int
    members: tuple[MemberStatus, ...]
    journal_full: bool = False  # this node's journal could not store an entry lately (its disk full)
    behind: bool = False  # and the leader committed changes it has not applied (``RaftStatus.behind``)
    journal_failed: bool = False  # ... because its journal's disk failed (I/O errors), not full

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "role": self.role, "leader": self.leader, "term": self.term,
                "commit_index": self.commit_index, "last_applied": self.last_applied,
                "has_quorum": self.has_quorum, "deployment_id": self.deployment_id,
                "generation": self.generation, "members": [m.as_dict() for m in self.members],
                "journal_full": self.journal_full, "behind": self.behind, "journal_failed": self.journal_failed}


# --- planning: what the proposer computes before it proposes (CPU, off the loop) -------------
def plan_table(layout: Layout, nodes: Sequence[NodeRecord], generation: int,
               previous: PartitionTable | None = None) -> bytes:
    """The compressed partition table of ``generation`` for ``nodes`` (placed disks only)."""
    disks = tuple(DiskSpec(d, n, w) for d, n, w in placement_disks(nodes))
    table = build_table(Topology(generation, disks, layout.partitions), layout.set_size, previous)
    return compress_table(table)


def _settle(future: asyncio.Future, result: Any, error: int) -> None:
    if not future.done():
        future.set_result((result, error))


JOURNAL_WAIT_SAY = (10.0, 60.0)  # a hung journal disk at start: said after this long, then this often


async def _journal_disk_answers(directory: str) -> None:
    """Make the journal's directory, in a thread: the journal is opened on the event loop's
    thread (pysyncobj's), and a disk whose writes hang (a frozen file system) would stop the
    loop there, the node's peer routes (its other disks) and health answers with it. Until
    the disk answers the node waits, saying so, rather than starting without its journal."""
    def probe() -> None:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        probe_path = os.path.join(directory, ".write-probe")
        try:  # a hang is what is looked for: a refusal (full, read-only) is the journal's to handle
            os.close(os.open(probe_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
            os.unlink(probe_path)
        except OSError:
            pass

    started = time.monotonic()
    task = asyncio.ensure_future(asyncio.to_thread(probe))
    first, every = JOURNAL_WAIT_SAY
    wait = first
    while True:
        done, _ = await asyncio.wait({task}, timeout=wait)
        if done:
            task.result()
            if time.monotonic() - started > first:
                log.warning("control plane: the journal's disk answered after %.0fs", time.monotonic() - started)
            return
        log.error("control plane: the disk of its journal (%s) has not taken a write in %.0fs: it hangs; "
                  "this node starts once it answers", directory, time.monotonic() - started)
        wait = every


class ControlPlane:
    """One node's replica of the control plane, driven from asyncio."""

    def __init__(self, config: ControlConfig) -> None:
        self.config = config
        self.machine = ControlMachine()
        self._raft: RaftNode | None = None
        self._aside = False  # (``stand_aside``)

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open (or create) the journal, bind the control port and join the other members.

        Call from the long-lived thread that runs the event loop (pysyncobj's tick thread
        stops when the thread that created it exits).
        """
        config = self.config
        try:  # the journal holds sealed user secrets and bucket names: owner only
            await _journal_disk_answers(config.directory)
        except OSError as exc:
            raise ControlPlaneError(f"cannot create the control-plane directory {config.directory}: "
                                    f"{exc.strerror}") from None
        low, high = config.election_timeout
        conf = SyncObjConf(
            password=derive_password(config.secret),
            bindAddress=config.address,
            journalFile=os.path.join(config.directory, JOURNAL_FILE),
            fullDumpFile=os.path.join(config.directory, SNAPSHOT_FILE),
            dynamicMembershipChange=True,
            appendEntriesUseBatch=False,  # send each entry at once: a commit takes ms, not heartbeats
            commandsWaitLeader=False,  # fail fast while there is no leader; apply() retries
            raftMinTimeout=low, raftMaxTimeout=high, appendEntriesPeriod=config.heartbeat,
            connectionTimeout=max(config.connection_timeout, high),
            connectionRetryTime=config.reconnect_interval,
            leaderFallbackTimeout=config.leader_fallback,
            logCompactionMinEntries=config.compaction_entries,
            logCompactionMinTime=config.compaction_interval,
            bindRetryTime=0.25, maxBindRetries=max(1, int(config.bind_timeout / 0.25)),
            onStateChanged=self._on_state_changed,
        )
        try:
            raft = RaftNode(config.address, config.members, conf, self.machine)
        except OSError as exc:
            if exc.errno in JOURNAL_DISK_FAILED:  # (EIO: a sector it cannot read, see _check_journal_header)
                raise ControlPlaneError(first_disk_failing(config.directory, exc.strerror or str(exc))) from None
            raise ControlPlaneError(f"cannot open the control-plane journal in {config.directory}: {exc}") from None
        except (ValueError, struct.error) as exc:  # a damaged journal
            raise ControlPlaneError(f"cannot open the control-plane journal in {config.directory}: {exc}") from None
        try:
            await asyncio.to_thread(raft.waitBinded)
        except SyncObjException:
            await asyncio.to_thread(raft.destroy_synchronous)
            raise ControlPlaneError(f"cannot bind the control port {config.address}: in use, or not an "
                                    "address of this host") from None
        raft.stand_aside = self._aside
        self._raft = raft
        log.info("control plane on %s, members %s", config.address, ", ".join(config.members))

    async def close(self) -> None:
        raft, self._raft = self._raft, None
        if raft is not None:
            await asyncio.to_thread(raft.destroy_synchronous)

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _on_state_changed(self, old: int, new: int) -> None:  # pysyncobj's thread
        names = {0: "follower", 1: "candidate", 2: "leader"}
        log.info("control plane %s: %s -> %s", self.config.address, names.get(old, old), names.get(new, new))

    # --- reads ----------------------------------------------------------------------------------
    @property
    def snapshot(self) -> ControlSnapshot:
        """The locally applied state: no round trip, possibly behind the leader."""
        return self.machine.snapshot

    async def read(self, *, linearizable: bool = False, timeout: float | None = None) -> ControlSnapshot:
        """The applied state; with ``linearizable``, only after a no-op committed through the
        log has been applied here, so it reflects every change committed before the call."""
        if linearizable:
            await self.apply("noop", timeout=timeout)
        return self.machine.snapshot

    # --- changes --------------------------------------------------------------------------------
    async def apply(self, op: str, /, *, timeout: float | None = None, **args: Any) -> Any:
        """Commit one command and return its result; raise its typed error, or ``NoQuorum``."""
        payload = encode_command(op, args, os.urandom(16), time.time())
        result = await self._submit(lambda callback: self._started().command(payload, callback=callback),
                                    op, timeout, resend=True)
        if isinstance(result, (tuple, list)) and result and result[0] == "ok":
            return result[1]
        if isinstance(result, (tuple, list)) and len(result) == 3 and result[0] == "err":
            raise self._error(result[1], result[2], args)
        raise errors.InternalError(f"control plane: unexpected result of {op}: {result!r}")

    @staticmethod
    def _error(code: str, message: str, args: dict) -> BucketsError:
        cls = _ERRORS.get(code, errors.InternalError)
        if code in _BUCKET_ERRORS and isinstance(args.get("name"), str):
            return cls(message, resource=args["name"], BucketName=args["name"])
        return cls(message)

    def _started(self) -> RaftNode:
        if self._raft is None:
            raise RuntimeError("the control plane is not started")
        return self._raft

    async def _submit(self, send, what: str, timeout: float | None, *, resend: bool = False,
                      settled: Callable[[], bool] | None = None) -> Any:
        """Send until committed, refused, or ``timeout`` (default ``commit_timeout``) passes.
        With ``resend`` (a command with a request id: sending it again applies it once), an
        answer that has not come within ``resend_after`` (doubling, at most 4 times that) is
        not waited for any longer: the command is sent again. ``settled()`` true before a
        send again: what the command would do is done already (another node's membership
        change, committed meanwhile): None."""
        raft = self._started()
        loop = asyncio.get_running_loop()
        budget = self.config.commit_timeout if timeout is None else timeout
        deadline = loop.time() + budget
        pause = 0.02
        patience = self.config.resend_after
        denied = False
        first = True
        while True:
            if not first and settled is not None and settled():
                return None
            first = False
            remaining = deadline - loop.time()
            if remaining <= 0:
                if denied:
                    raise MembershipChangeRefused(f"{what}: the leader kept refusing it for {budget:g}s (another "
                                                  "membership change in progress)")
                raise NoQuorum(f"{what}: no majority of the control plane committed it within {budget:g}s")
            status = raft.published_status
            if status is not None and not status.has_quorum:
                # No majority reachable from here: don't leave the command in anybody's log.
                await asyncio.sleep(min(pause, remaining))
                pause = min(pause * 2, 0.25)
                continue
            future: asyncio.Future = loop.create_future()
            send(functools.partial(self._handback, loop, future))
            wait = min(remaining, patience) if resend else remaining
            try:
                result, error = await wait_for(future, wait)
            except asyncio.TimeoutError:
                if resend and wait < remaining:
                    log.info("control plane: %s not answered within %gs; sending it again", what, wait)
                    patience = min(patience * 2, 4 * self.config.resend_after)
                continue  # again, or (out of time) the loop raises NoQuorum
            if error == FAIL_REASON.SUCCESS:
                return result
            # A membership change is refused while the previous one, or a new leader's first
            # entry, is not applied yet: transient, so try again until the deadline.
            denied = error == FAIL_REASON.REQUEST_DENIED
            if error not in _RETRY and not denied:
                log.warning("control plane: %s failed with pysyncobj reason %s; retrying", what, error)
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.25)

    @staticmethod
    def _handback(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any, error: int) -> None:
        try:  # pysyncobj's thread -> the event loop
            loop.call_soon_threadsafe(_settle, future, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    # --- topology helpers -----------------------------------------------------------------------
    async def bootstrap(self, deployment_id: str, layout: Layout, nodes: Iterable[NodeRecord | dict],
                        *, timeout: float | None = None) -> dict:
        """Initialise the topology (generation 1) unless it is already; every node of a new
        cluster may call this with the same nodes and layout: one wins, the others adopt it."""
        try:
            records = check_nodes(list(nodes))
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        table = await asyncio.to_thread(plan_table, layout, records, 1)
        return await self.apply("init_cluster", timeout=timeout, deployment_id=deployment_id,
                                layout=layout.to_wire(), nodes=[n.to_wire() for n in records], table=table)

    async def propose_generation(self, nodes: Iterable[NodeRecord | dict], *, levels: dict[str, int] | None = None,
                                 timeout: float | None = None) -> dict:
        """Commit generation g+1 with ``nodes`` (states decide which disks are placed) and a
        table built from generation g's, so only what must move moves. Raises
        ``GenerationConflict`` if another change committed g+1 first. ``levels``: the control
        level each node that becomes a member runs (``LevelTooLow`` if below the cluster's)."""
        try:
            records = check_nodes(list(nodes))
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        topology = self.snapshot.topology
        if topology is None:
            raise ClusterNotInitialized()
        generation = topology.generation
        table = await asyncio.to_thread(plan_table, topology.layout, records, generation + 1,
                                        topology.partition_table())
        return await self.apply("propose_generation", timeout=timeout, expected_generation=generation,
                                nodes=[n.to_wire() for n in records], table=table,
                                **({"levels": dict(levels)} if levels else {}))

    async def set_level(self, level: int, nodes: dict[str, int], *, timeout: float | None = None) -> dict:
        """Raise the cluster's control level to ``level``; ``nodes``: the level each member runs."""
        return await self.apply("set_level", timeout=timeout, level=level, nodes=dict(nodes))

    # --- Raft membership (one change at a time) --------------------------------------------------
    async def add_member(self, address: str, *, timeout: float | None = None) -> bool:
        """Make ``address`` a voting member; False if it already is. The new node is started
        with the current members as its ``members``; it catches up from the leader."""
        return await self._change_membership("add", address, timeout)

    async def remove_member(self, address: str, *, timeout: float | None = None) -> bool:
        """Remove ``address`` from the voting members; False if it is not one."""
        if address == self.config.address:
            raise errors.InvalidArgument("a node cannot remove itself from the control plane: ask another member")
        return await self._change_membership("remove", address, timeout)

    async def _change_membership(self, kind: str, address: str, timeout: float | None) -> bool:
        try:
            check_address(address, "member address")
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        raft = self._started()
        await self.read(linearizable=True, timeout=timeout)  # the membership we look at is current
        status = raft.published_status
        members = status.members if status is not None else self.config.members
        if (address in members) == (kind == "add"):
            return False
        change = raft.addNodeToCluster if kind == "add" else raft.removeNodeFromCluster

        def settled() -> bool:
            # Made meanwhile by another node (the leader's ``finish_removals`` removes a node a
            # forced ``remove-node`` marked REMOVED as soon as it sees it): this node's view
            # showed it still to be made when it sent the change, and the leader refuses a
            # change already made as if another were in progress, until the budget ran out.
            now = raft.published_status
            return now is not None and (address in now.members) == (kind == "add")

        await self._submit(lambda callback: change(address, callback=callback), f"{kind} member {address}", timeout,
                           settled=settled)
        return True

    async def transfer_leadership(self, *, timeout: float = 5.0) -> bool:
        """On the leader: hand leadership to the most caught-up follower (Raft TimeoutNow), so
        that a node leaving the cluster can be removed by the next leader. True once another
        node leads; False if none took over within ``timeout`` (try again later)."""
        raft = self._started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        fired: list[bool] = []

        def on_tick() -> None:  # pysyncobj's thread: its state is only touched there
            if not fired:
                fired.append(True)
                raft.transferLeadership(None, callback=functools.partial(self._handback, loop, future))

        raft.addOnTickCallback(on_tick)
        try:
            _, error = await wait_for(future, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            raft.removeOnTickCallback(on_tick)
        if error != FAIL_REASON.SUCCESS:
            return False
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            status = raft.published_status
            if status is not None and status.leader is not None and status.leader != self.config.address:
                log.info("control plane: leadership handed to %s", status.leader)
                return True
            await asyncio.sleep(0.05)
        return False

    def stand_aside(self, aside: bool) -> None:
        """While ``aside`` (the other nodes find this node's link slow: ``cluster/slowlink.py``),
        this node hands leadership over if it leads and starts no election
        (``control_raft.py``, module doc)."""
        self._aside = aside
        if self._raft is not None:
            self._raft.stand_aside = aside

    # --- status ---------------------------------------------------------------------------------
    async def wait_leader(self, timeout: float | None = None) -> str:
        """Wait until a leader is known here; return its address or raise NoQuorum."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.commit_timeout if timeout is None else timeout)
        while True:
            status = self._started().published_status
            if status is not None and status.leader is not None and status.has_quorum:
                return status.leader
            if loop.time() >= deadline:
                raise NoQuorum("no control-plane leader elected (no majority of members online)")
            await asyncio.sleep(0.05)

    @property
    def behind(self) -> bool:
        """This node cannot store the control plane's entries and has not applied changes the
        leader committed (``RaftStatus.behind``): as of the last tick, cheap enough per request."""
        status = self._raft.published_status if self._raft is not None else None
        return status is not None and status.behind

    def status(self) -> ControlStatus:
        """Per member: online, leader; for this node: role, term, commit index, quorum, generation."""
        raft = self._started()
        status: RaftStatus | None = raft.published_status
        snapshot = self.snapshot
        topology = snapshot.topology
        if status is None:  # before the first tick
            status = RaftStatus(self.config.address, "follower", None, 0, 0, 0, False, self.config.members,
                                frozenset([self.config.address]), {}, 0)
        members = []
        for address in status.members:
            node = topology.node_by_address(address) if topology is not None else None
            members.append(MemberStatus(
                address=address, node_id=node.node_id if node else None, endpoint=node.endpoint if node else None,
                online=address in status.connected, leader=address == status.leader,
                is_self=address == status.address,
                match_index=status.match_index.get(address) if status.role == "leader" else None,
            ))
        return ControlStatus(
            address=status.address, role=status.role, leader=status.leader, term=status.term,
            commit_index=status.commit_index, last_applied=status.last_applied, has_quorum=status.has_quorum,
            deployment_id=topology.deployment_id if topology is not None else None,
            generation=snapshot.generation, members=tuple(members), journal_full=status.journal_full,
            behind=status.behind, journal_failed=status.journal_failed,
        )
