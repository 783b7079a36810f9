"""The control plane's replicated state machine: deterministic commands over the records.

Everything here is pure (no I/O, no clocks, no randomness, no threads of its own): a
command is a msgpack document ``{"v": 1, "op": ..., "args": {...}, "rid": ..., "ts": ...}``
and applying it to a state gives the same new state and the same result on every node,
because the only inputs are the state and the command (the proposer's wall clock travels
*in* the command as ``ts``). Validation happens here, inside the state machine: a bucket
that exists makes ``create_bucket`` fail identically everywhere, whoever proposed it.

Results are ``("ok", value)`` or ``("err", code, message)``, both plain msgpack data.
Every command carries a request id (``rid``); the last ``RECENT_RESULTS`` results are
kept by id in the replicated state, so a command that is retried after an unknown outcome
(leader changed, timeout) is applied once and answers the first result again.

Reads see a ``ControlSnapshot``: an immutable value published by one reference swap after
each command (copy-on-write of the one table a command changes), so readers on other
threads never see a half-applied command and never take a lock. The whole state
serialises to one msgpack document (``ControlMachine.dump``/``load``) that the Raft layer
stores as its snapshot.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import msgpack

from buckets.cluster.control_records import (
    BASE_LEVEL, FORMAT_VERSION, MAX_KEY_CHARS, NODE_STATES, PLACED_STATES, REMOVED, BucketRecord, ControlSnapshot,
    GenerationRecord, JobRecord, Layout, NodeRecord, TopologyRecord, UserRecord, Wire, as_map, check_int,
    check_nodes, check_plain, check_str, check_table, frozen_map, placement_disks,
)
from buckets.errors import BucketsError, InvalidArgument

COMMAND_VERSION = 1
RECENT_RESULTS = 4096  # request ids remembered for idempotent retries
MAX_COMMAND_BYTES = 8 << 20  # a partition table of 65,536 x 16 slots compresses far below this
MAX_SECRET_BYTES = 1024
USER_STATUSES = ("enabled", "disabled")
ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9._@+=-]{3,128}")  # same rule as the admin API

log = logging.getLogger("buckets.cluster.control")


class CommandError(Exception):
    """A command refused by validation: becomes ``("err", code, message)``, same on every node."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> CommandError:
    return CommandError("InvalidArgument", message)


def _with(table: Mapping, key: str, value: Any | None) -> Mapping:
    """Copy-on-write: a new read-only table with ``key`` set (or removed when value is None)."""
    copy = dict(table)
    if value is None:
        copy.pop(key, None)
    else:
        copy[key] = value
    return MappingProxyType(copy)


# --- commands ---------------------------------------------------------------------------------
def encode_command(op: str, args: Mapping[str, Any], rid: bytes, ts: float) -> bytes:
    """The replicated form of one command (what the Raft log stores)."""
    try:
        payload = msgpack.packb({"v": COMMAND_VERSION, "op": op, "args": dict(args), "rid": rid, "ts": ts},
                                use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(f"control-plane command {op}: arguments must be plain data ({exc})") from None
    if len(payload) > MAX_COMMAND_BYTES:
        raise InvalidArgument(f"control-plane command {op} is {len(payload)} bytes, more than {MAX_COMMAND_BYTES}")
    return payload


Handler = Callable[[ControlSnapshot, dict, float], tuple[ControlSnapshot, Any]]
_HANDLERS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn
    return register


def command_names() -> tuple[str, ...]:
    return tuple(sorted(_HANDLERS))


class ControlMachine:
    """The deterministic state machine. ``apply`` is called by one thread (Raft's), in log
    order; ``snapshot`` may be read from any thread at any time."""

    def __init__(self) -> None:
        self._snapshot = ControlSnapshot()
        self._recent: OrderedDict[bytes, Any] = OrderedDict()  # rid -> result, replicated
        self._lock = threading.Lock()  # apply vs dump/load; readers never take it

    @property
    def snapshot(self) -> ControlSnapshot:
        return self._snapshot

    def apply(self, payload: bytes) -> Any:
        """Apply one command; return its result. Never raises: a refused or malformed
        command is a deterministic ``("err", code, message)``."""
        with self._lock:
            try:
                doc = msgpack.unpackb(payload, raw=False, strict_map_key=True)
            except Exception as exc:  # msgpack raises several unrelated types on garbage
                return self._count(("err", "InvalidArgument", f"malformed command: {exc}"))
            if not isinstance(doc, dict):
                return self._count(("err", "InvalidArgument", "malformed command: not a map"))
            rid = doc.get("rid")
            if isinstance(rid, bytes) and rid in self._recent:
                return self._count(self._recent[rid])  # a retry of a command already applied
            result = self._run(doc)
            if isinstance(rid, bytes) and rid:
                self._recent[rid] = result
                while len(self._recent) > RECENT_RESULTS:
                    self._recent.popitem(last=False)
            return result

    def _count(self, result: Any) -> Any:
        self._snapshot = replace(self._snapshot, applied=self._snapshot.applied + 1)
        return result

    def _run(self, doc: dict) -> Any:
        state = self._snapshot
        version, op, args, ts = doc.get("v"), doc.get("op"), doc.get("args"), doc.get("ts")
        handler = _HANDLERS.get(op) if isinstance(op, str) else None
        if version != COMMAND_VERSION:
            return self._count(("err", "InvalidArgument", f"unsupported command version {version!r}"))
        if handler is None:
            return self._count(("err", "InvalidArgument", f"unknown command {op!r}"))
        if not isinstance(args, dict) or isinstance(ts, bool) or not isinstance(ts, (int, float)) \
                or not math.isfinite(ts):
            return self._count(("err", "InvalidArgument", f"malformed {op} command"))
        try:
            new_state, value = handler(state, args, float(ts))
        except CommandError as exc:
            return self._count(("err", exc.code, exc.message))
        except (ValueError, TypeError, KeyError) as exc:
            return self._count(("err", "InvalidArgument", f"{op}: {exc}"))
        except Exception as exc:  # a bug: refuse the command (same on every node), keep applying the log
            log.exception("control-plane command %s failed", op)
            return self._count(("err", "InternalError", f"{op}: {type(exc).__name__}"))
        self._snapshot = replace(new_state, applied=state.applied + 1)
        return ("ok", value)

    # --- snapshot of the replicated state (what Raft's log compaction stores) -------------------
    def dump(self) -> Wire:
        with self._lock:
            return {"format": FORMAT_VERSION, "state": self._snapshot.to_wire(),
                    "recent": [[rid, result] for rid, result in self._recent.items()]}

    def load(self, doc: Any) -> None:
        doc = as_map(doc, "control snapshot")
        if doc.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported control snapshot format {doc.get('format')!r}")
        snapshot = ControlSnapshot.from_wire(doc.get("state"))
        recent = OrderedDict((bytes(rid), _tuple_result(result)) for rid, result in doc.get("recent", ()))
        with self._lock:
            self._snapshot = snapshot
            self._recent = recent


def _tuple_result(result: Any) -> Any:
    return tuple(result) if isinstance(result, list) else result


# --- handlers: each validates, then returns (new state, result value) ---------------------------
def _require_topology(state: ControlSnapshot) -> TopologyRecord:
    if state.topology is None:
        raise CommandError("ClusterNotInitialized", "the cluster has no topology yet (bootstrap it first)")
    return state.topology


@command("noop")
def _noop(state: ControlSnapshot, args: dict, ts: float):
    return state, {"applied": state.applied + 1}


@command("init_cluster")
def _init_cluster(state: ControlSnapshot, args: dict, ts: float):
    deployment_id = check_str(args.get("deployment_id"), "deployment id")
    layout = Layout.from_wire(args.get("layout"))
    nodes = check_nodes(args.get("nodes"))
    if state.topology is not None:
        current = state.topology
        if current.layout == layout and _same_members(current.nodes, nodes):
            # Every node of a new cluster proposes the same bootstrap: the first one wins and
            # the others adopt it (with its deployment id).
            return state, {"created": False, "deployment_id": current.deployment_id,
                           "generation": current.generation}
        raise CommandError("ClusterMismatch",
                           f"the cluster is already initialised (deployment {current.deployment_id}, "
                           f"generation {current.generation}) with different nodes or layout")
    disks = placement_disks(nodes)
    table = check_table(args.get("table"), 1, layout, disks)
    first = GenerationRecord(1, ts, disks, table)
    topology = TopologyRecord(deployment_id, layout, nodes, (first,))
    return replace(state, topology=topology), {"created": True, "deployment_id": deployment_id, "generation": 1}


def _same_members(a: Iterable[NodeRecord], b: Iterable[NodeRecord]) -> bool:
    return {n.node_id: n for n in a} == {n.node_id: n for n in b}


@command("propose_generation")
def _propose_generation(state: ControlSnapshot, args: dict, ts: float):
    topology = _require_topology(state)
    expected = check_int(args.get("expected_generation"), "expected generation", minimum=1)
    if expected != topology.generation:
        raise CommandError("GenerationConflict", f"the current generation is {topology.generation}, "
                                                 f"the proposal was made against {expected}")
    nodes = check_nodes(args.get("nodes"))
    old_disks = {d.disk_id: n.node_id for n in topology.nodes for d in n.disks}
    for node in nodes:
        for disk in node.disks:
            owner = old_disks.get(disk.disk_id)
            if owner is not None and owner != node.node_id:
                raise _invalid(f"disk {disk.disk_id} belongs to node {owner}, not {node.node_id}")
    _check_joining_levels(state, topology, nodes, args.get("levels"))
    disks = placement_disks(nodes)
    generation = topology.generation + 1
    table = check_table(args.get("table"), generation, topology.layout, disks)
    record = GenerationRecord(generation, ts, disks, table)
    new = replace(topology, nodes=nodes, history=topology.history + (record,))
    return replace(state, topology=new), {"generation": generation}


def _check_joining_levels(state: ControlSnapshot, topology: TopologyRecord, nodes: tuple[NodeRecord, ...],
                          levels: Any) -> None:
    """A node that becomes a member (new, or back after its removal) must run the cluster's
    control level at least: ``levels`` (node id -> level, from its ``node/hello``) says which it
    runs. Releases before levels send none; they only propose at the base level."""
    if state.level <= BASE_LEVEL:
        return
    if levels is None:
        levels = {}
    if not isinstance(levels, dict):
        raise _invalid("levels must be a map of node id to control level")
    for node in nodes:
        before = topology.node(node.node_id)
        if node.state == REMOVED or (before is not None and before.state != REMOVED):
            continue
        level = levels.get(node.node_id)
        if isinstance(level, bool) or not isinstance(level, int) or level < state.level:
            raise CommandError("LevelTooLow", f"node {node.node_id} runs control level "
                                              f"{level if isinstance(level, int) else 'unknown'}; the cluster "
                                              f"runs level {state.level}: upgrade the node first")


@command("set_level")
def _set_level(state: ControlSnapshot, args: dict, ts: float):
    """Raise the cluster's control level to ``level`` once every member runs it: ``nodes`` maps
    each node id to the level its ``node/hello`` named. Refused unless every member that is not
    removed is there at ``level`` or above (a node added since is not). Never lowers the level."""
    topology = _require_topology(state)
    level = check_int(args.get("level"), "control level", minimum=BASE_LEVEL)
    seen = args.get("nodes")
    if not isinstance(seen, dict):
        raise _invalid("nodes must be a map of node id to control level")
    if level <= state.level:
        return state, {"level": state.level, "raised": False}
    for node in topology.nodes:
        if node.state == REMOVED:
            continue
        runs = seen.get(node.node_id)
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < level:
            raise CommandError("LevelTooLow", f"node {node.node_id} runs control level "
                                              f"{runs if isinstance(runs, int) else 'unknown'}, below {level}")
    return replace(state, level=level), {"level": level, "raised": True}


@command("set_node_state")
def _set_node_state(state: ControlSnapshot, args: dict, ts: float):
    topology = _require_topology(state)
    node_id, new_state = args.get("node_id"), args.get("state")
    node = topology.node(node_id) if isinstance(node_id, str) else None
    if node is None:
        raise CommandError("NoSuchNode", f"no node {node_id!r} in the topology")
    if new_state not in NODE_STATES:
        raise _invalid(f"state must be one of {', '.join(NODE_STATES)}, got {new_state!r}")
    if (new_state in PLACED_STATES) != node.placed:
        raise _invalid(f"{node.state} -> {new_state} changes which disks hold data: propose a new "
                       "generation (with its partition table) instead")
    nodes = tuple(replace(n, state=new_state) if n.node_id == node_id else n for n in topology.nodes)
    return replace(state, topology=replace(topology, nodes=nodes)), {"generation": topology.generation}


@command("retire_generation")
def _retire_generation(state: ControlSnapshot, args: dict, ts: float):
    topology = _require_topology(state)
    generation = check_int(args.get("generation"), "generation", minimum=1)
    record = topology.generation_record(generation)
    if record is None:
        raise CommandError("NoSuchGeneration", f"no generation {generation}")
    if generation == topology.generation:
        raise _invalid(f"generation {generation} is the current one and cannot be retired")
    history = tuple(replace(g, table=None) if g.generation == generation else g for g in topology.history)
    return replace(state, topology=replace(topology, history=history)), {"generation": generation}


def _check_access_key(value: Any) -> str:
    if not isinstance(value, str) or not ACCESS_KEY_RE.fullmatch(value):
        raise _invalid("an access key is 3 to 128 letters, digits or ._@+=- characters")
    return value


def _check_status(value: Any) -> str:
    if value not in USER_STATUSES:
        raise _invalid(f"status must be one of {', '.join(USER_STATUSES)}, got {value!r}")
    return value


@command("put_user")
def _put_user(state: ControlSnapshot, args: dict, ts: float):
    access_key = _check_access_key(args.get("access_key"))
    secret = args.get("secret")
    if not isinstance(secret, bytes) or not 0 < len(secret) <= MAX_SECRET_BYTES:
        raise _invalid(f"secret must be 1 to {MAX_SECRET_BYTES} bytes (sealed by the caller)")
    status = _check_status(args.get("status", "enabled"))
    policy = check_str(args.get("policy", "readwrite"), "policy")
    existing = state.users.get(access_key)
    if existing is not None and args.get("create_only"):
        raise CommandError("UserAlreadyExists", f"a user with access key {access_key!r} exists")
    created = existing.created if existing is not None else _imported_time(args, ts)
    record = UserRecord(access_key, secret, status, policy, created)
    return replace(state, users=_with(state.users, access_key, record)), {"created": existing is None}


def _existing_user(state: ControlSnapshot, args: dict) -> UserRecord:
    access_key = args.get("access_key")
    user = state.users.get(access_key) if isinstance(access_key, str) else None
    if user is None:
        raise CommandError("NoSuchUser", f"no user with access key {access_key!r}")
    return user


@command("set_user_status")
def _set_user_status(state: ControlSnapshot, args: dict, ts: float):
    user = _existing_user(state, args)
    record = replace(user, status=_check_status(args.get("status")))
    return replace(state, users=_with(state.users, user.access_key, record)), {"status": record.status}


@command("set_user_policy")
def _set_user_policy(state: ControlSnapshot, args: dict, ts: float):
    user = _existing_user(state, args)
    record = replace(user, policy=check_str(args.get("policy"), "policy"))
    return replace(state, users=_with(state.users, user.access_key, record)), {"policy": record.policy}


@command("delete_user")
def _delete_user(state: ControlSnapshot, args: dict, ts: float):
    user = _existing_user(state, args)
    return replace(state, users=_with(state.users, user.access_key, None)), {"deleted": True}


def _check_bucket_name(name: Any) -> str:
    from buckets.engine.names import check_bucket_name  # the one S3 naming rule, shared

    try:
        check_bucket_name(name)
    except BucketsError:
        raise CommandError("InvalidBucketName", f"invalid bucket name {name!r}") from None
    return name


def _check_settings(settings: Any, what: str) -> dict:
    if not isinstance(settings, dict):
        raise _invalid(f"{what} must be a map")
    for key in settings:
        check_str(key, f"{what} key")
    return check_plain(settings, what)


def _imported_time(args: dict, ts: float) -> float:
    """A record's creation time: the command's commit time, or ``created`` when a single
    node's records are imported (``buckets.cluster.convert``) and keep their own."""
    created = args.get("created")
    if created is None:
        return ts
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not 0 <= created <= ts + 86400:
        raise _invalid("created must be a time in seconds, not in the future")
    return float(created)


# A job under this prefix and a deleted bucket's name: the index replicas that have not yet
# dropped what they held of it (``{"nodes": [...]}``). A bucket of that name cannot be created
# again until none is left: a replica that missed the drop (down during the DeleteBucket) would
# otherwise bring the old bucket's entries into the new one (anti-entropy, or a read quorum).
INDEX_DROP = "index-drop/"


@command("create_bucket")
def _create_bucket(state: ControlSnapshot, args: dict, ts: float):
    name = _check_bucket_name(args.get("name"))
    pending = state.jobs.get(INDEX_DROP + name)
    if pending is not None:
        raise CommandError("OperationAborted", f"a bucket named {name} was deleted and its index is still held by "
                                               f"{', '.join(pending.value.get('nodes', []))}; retry later")
    owner = args.get("owner", "")
    if not isinstance(owner, str) or len(owner) > MAX_KEY_CHARS:
        raise _invalid("owner must be a string")
    existing = state.buckets.get(name)
    if existing is not None:
        if existing.owner == owner:
            raise CommandError("BucketAlreadyOwnedByYou", f"bucket {name} exists and is yours")
        raise CommandError("BucketAlreadyExists", f"bucket {name} exists")
    record = BucketRecord(name, _imported_time(args, ts), owner, _check_settings(args.get("settings", {}), "settings"))
    return replace(state, buckets=_with(state.buckets, name, record)), record.to_wire()


def _existing_bucket(state: ControlSnapshot, args: dict) -> BucketRecord:
    name = args.get("name")
    bucket = state.buckets.get(name) if isinstance(name, str) else None
    if bucket is None:
        raise CommandError("NoSuchBucket", f"bucket {name!r} does not exist")
    return bucket


def _check_expected(bucket: BucketRecord, args: dict) -> None:
    """``expect``: the settings the caller's check read, with the values it read (None: absent);
    the command applies only if they are still those (a compare-and-set: two changes through
    two nodes each checked against the other's absence, both applied, broke an invariant
    between two settings, e.g. Object Lock on with versioning suspended; and a deletion applies
    only under its own mark)."""
    expect = args.get("expect", {})
    if not isinstance(expect, dict) or not all(isinstance(k, str) for k in expect):
        raise _invalid("expect must be a map of setting names")
    for name, value in expect.items():
        if bucket.settings.get(name) != value:
            raise CommandError("BucketChanged", f"bucket {bucket.name!r}: its setting {name!r} changed")


@command("delete_bucket")
def _delete_bucket(state: ControlSnapshot, args: dict, ts: float):
    """``drop``: the nodes holding the bucket's index, which must drop it (``INDEX_DROP``);
    ``expect``: as ``update_bucket``'s (a deletion's own mark); ``before``: the latest proposal
    time (the command's ``ts``) at which the deletion may apply (its mark's end, less a margin:
    a proposal later than that could delete writes nodes let in once the mark had ended)."""
    bucket = _existing_bucket(state, args)
    _check_expected(bucket, args)
    before = args.get("before")
    if before is not None:
        if isinstance(before, bool) or not isinstance(before, (int, float)):
            raise _invalid("before must be a time")
        if ts > before:
            raise CommandError("OperationAborted", f"bucket {bucket.name!r}: its deletion was proposed too late "
                                                   f"under its mark; retry")
    drop = args.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(n, str) for n in drop):
        raise _invalid("drop must be a list of node ids")
    jobs = state.jobs
    if drop:
        key = INDEX_DROP + bucket.name
        current = jobs.get(key)
        nodes = sorted(set(drop) | set(current.value.get("nodes", []) if current is not None else ()))
        jobs = _with(jobs, key, JobRecord(key, (current.version if current is not None else 0) + 1,
                                          {"nodes": nodes}, ts))
    return replace(state, buckets=_with(state.buckets, bucket.name, None), jobs=jobs), {"deleted": True}


def _merged(current: Mapping[str, Any], args: dict) -> dict:
    values = _check_settings(args.get("set", {}), "set")
    unset = args.get("unset", [])
    if not isinstance(unset, list) or not all(isinstance(k, str) for k in unset):
        raise _invalid("unset must be a list of names")
    merged = {k: v for k, v in current.items() if k not in unset}
    merged.update(values)
    return merged


@command("update_bucket")
def _update_bucket(state: ControlSnapshot, args: dict, ts: float):
    bucket = _existing_bucket(state, args)
    _check_expected(bucket, args)
    record = replace(bucket, settings=_merged(bucket.settings, args))
    return replace(state, buckets=_with(state.buckets, bucket.name, record)), record.to_wire()


@command("set_settings")
def _set_settings(state: ControlSnapshot, args: dict, ts: float):
    merged = _merged(state.settings, args)
    return replace(state, settings=frozen_map(merged)), {"settings": len(merged)}


def _check_expected_version(args: dict) -> int | None:
    expected = args.get("expected_version")
    return None if expected is None else check_int(expected, "expected version")


@command("put_job")
def _put_job(state: ControlSnapshot, args: dict, ts: float):
    key = check_str(args.get("key"), "job key")
    value = check_plain(args.get("value"), "job value")
    expected = _check_expected_version(args)
    current = state.jobs.get(key)
    version = current.version if current is not None else 0
    if expected is not None and expected != version:
        raise CommandError("VersionConflict", f"job {key} is at version {version}, expected {expected}")
    record = JobRecord(key, version + 1, value, ts)
    return replace(state, jobs=_with(state.jobs, key, record)), {"version": record.version}


@command("delete_job")
def _delete_job(state: ControlSnapshot, args: dict, ts: float):
    key = check_str(args.get("key"), "job key")
    current = state.jobs.get(key)
    if current is None:
        raise CommandError("NoSuchJob", f"no job {key!r}")
    expected = _check_expected_version(args)
    if expected is not None and expected != current.version:
        raise CommandError("VersionConflict", f"job {key} is at version {current.version}, expected {expected}")
    return replace(state, jobs=_with(state.jobs, key, None)), {"deleted": True}
