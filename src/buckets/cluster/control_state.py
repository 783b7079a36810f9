"""The control plane's replicated state machine: typed records and deterministic commands.

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
threads never see a half-applied command and never take a lock.

Records carry a format version; the whole state serialises to one msgpack document
(``dump_state``/``load_state``) that the Raft layer stores as its snapshot.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import msgpack

from buckets.errors import BucketsError, InvalidArgument
from buckets.placement import MAX_SET_SIZE, DiskSpec, PartitionTable, Topology

FORMAT_VERSION = 1  # of records, snapshots and commands
COMMAND_VERSION = 1
RECENT_RESULTS = 4096  # request ids remembered for idempotent retries
MAX_COMMAND_BYTES = 8 << 20  # a partition table of 65,536 x 16 slots compresses far below this
MAX_TABLE_BYTES = 16 << 20  # decompressed table bound (zip-bomb guard); 65,536 x 16 slots is ~3 MiB
MAX_KEY_CHARS = 256
MAX_SECRET_BYTES = 1024

ACTIVE, JOINING, DRAINING, REMOVED = "active", "joining", "draining", "removed"
NODE_STATES = (ACTIVE, JOINING, DRAINING, REMOVED)
PLACED_STATES = frozenset({ACTIVE, JOINING})  # nodes whose disks the partition table may use
USER_STATUSES = ("enabled", "disabled")
ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9._@+=-]{3,128}")  # same rule as the admin API
_ADDRESS_RE = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")

Wire = dict[str, Any]
log = logging.getLogger("buckets.cluster.control")


class CommandError(Exception):
    """A command refused by validation: becomes ``("err", code, message)``, same on every node."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> CommandError:
    return CommandError("InvalidArgument", message)


# --- small checks ---------------------------------------------------------------------------
def _check_str(value: Any, what: str, *, max_chars: int = MAX_KEY_CHARS) -> str:
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise ValueError(f"{what} must be a non-empty string of at most {max_chars} characters, got {value!r}")
    return value


def _check_int(value: Any, what: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _check_plain(value: Any, what: str) -> Any:
    """Settings and job values: msgpack-able plain data with string map keys."""
    try:
        packed = msgpack.packb(value, use_bin_type=True)
        msgpack.unpackb(packed, raw=False, strict_map_key=True)
    except (TypeError, ValueError, msgpack.ExtraData) as exc:
        raise ValueError(f"{what} must be plain data (maps with string keys, lists, strings, "
                         f"bytes, numbers, booleans, nil): {exc}") from None
    return value


def check_address(address: Any, what: str = "control address") -> str:
    """``host:port`` (IPv6 hosts in brackets), port 1..65535."""
    match = _ADDRESS_RE.fullmatch(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"{what} must be host:port with a port 1-65535, got {address!r}")
    return address


def check_endpoint(endpoint: Any) -> str:
    if not isinstance(endpoint, str) or len(endpoint) > 1024:
        raise ValueError(f"endpoint must be a URL string, got {endpoint!r}")
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        port = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or port is None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"endpoint must look like http://host:port, got {endpoint!r}")
    return endpoint


# --- records --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DiskRecord:
    """One disk of a node. ``weight`` is relative capacity for placement; ``capacity`` bytes (0: unknown)."""

    disk_id: str
    path: str
    weight: float = 1.0
    capacity: int = 0

    def __post_init__(self) -> None:
        _check_str(self.disk_id, "disk id")
        _check_str(self.path, "disk path", max_chars=4096)
        weight = _check_number(self.weight, f"weight of disk {self.disk_id}")
        if weight <= 0:
            raise ValueError(f"weight of disk {self.disk_id} must be > 0, got {weight}")
        object.__setattr__(self, "weight", weight)
        _check_int(self.capacity, f"capacity of disk {self.disk_id}")

    def to_wire(self) -> Wire:
        return {"id": self.disk_id, "path": self.path, "weight": self.weight, "capacity": self.capacity}

    @classmethod
    def from_wire(cls, doc: Any) -> DiskRecord:
        doc = _map(doc, "disk")
        return cls(doc.get("id"), doc.get("path"), doc.get("weight", 1.0), doc.get("capacity", 0))


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node: its S3 endpoint, its control-plane (Raft) address, membership state, disks."""

    node_id: str
    endpoint: str
    control_address: str
    state: str
    disks: tuple[DiskRecord, ...]

    def __post_init__(self) -> None:
        _check_str(self.node_id, "node id")
        check_endpoint(self.endpoint)
        check_address(self.control_address)
        if self.state not in NODE_STATES:
            raise ValueError(f"state of node {self.node_id} must be one of {', '.join(NODE_STATES)}, "
                             f"got {self.state!r}")
        disks = tuple(self.disks)
        object.__setattr__(self, "disks", disks)
        if not disks or not all(isinstance(d, DiskRecord) for d in disks):
            raise ValueError(f"node {self.node_id} needs at least one disk")

    @property
    def placed(self) -> bool:
        """Whether the partition table may put shards on this node's disks."""
        return self.state in PLACED_STATES

    def to_wire(self) -> Wire:
        return {"id": self.node_id, "endpoint": self.endpoint, "control": self.control_address,
                "state": self.state, "disks": [d.to_wire() for d in self.disks]}

    @classmethod
    def from_wire(cls, doc: Any) -> NodeRecord:
        doc = _map(doc, "node")
        disks = doc.get("disks")
        if not isinstance(disks, (list, tuple)):
            raise ValueError("node disks must be a list")
        return cls(doc.get("id"), doc.get("endpoint"), doc.get("control"), doc.get("state", ACTIVE),
                   tuple(DiskRecord.from_wire(d) for d in disks))


@dataclass(frozen=True, slots=True)
class Layout:
    """The erasure layout, fixed at format time: k data + m parity shards per partition."""

    k: int
    m: int
    block_size: int
    partitions: int

    def __post_init__(self) -> None:
        _check_int(self.k, "k", minimum=1)
        _check_int(self.m, "m")
        _check_int(self.block_size, "block size", minimum=1)
        _check_int(self.partitions, "partitions", minimum=1)
        if self.k + self.m > MAX_SET_SIZE:
            raise ValueError(f"k + m must be at most {MAX_SET_SIZE}, got {self.k} + {self.m}")
        if self.m > self.k:
            raise ValueError(f"parity m={self.m} may not exceed the data shards k={self.k}")

    @property
    def set_size(self) -> int:
        return self.k + self.m

    def to_wire(self) -> Wire:
        return {"k": self.k, "m": self.m, "block_size": self.block_size, "partitions": self.partitions}

    @classmethod
    def from_wire(cls, doc: Any) -> Layout:
        doc = _map(doc, "layout")
        return cls(doc.get("k"), doc.get("m"), doc.get("block_size"), doc.get("partitions"))


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """One placement generation: the inputs of its table and the table itself.

    ``disks`` are the placement inputs, ``(disk_id, node_id, weight)`` of every placed
    disk, so the table can be recomputed and checked (``buckets.placement.build_table``
    from the previous generation's table); ``table`` is the table's deterministic msgpack
    (``PartitionTable.to_bytes``) compressed with zlib (64 KiB -> ~6 KiB for 4,096 x 16
    slots). A retired generation (no registry entry points to it any more) drops its table.
    """

    generation: int
    created: float
    disks: tuple[tuple[str, str, float], ...]
    table: bytes | None

    def topology(self, partitions: int) -> Topology:
        return Topology(self.generation, tuple(DiskSpec(d, n, w) for d, n, w in self.disks), partitions)

    def partition_table(self) -> PartitionTable:
        if self.table is None:
            raise LookupError(f"generation {self.generation} is retired: its table was dropped")
        return parse_table(self.table)

    def to_wire(self) -> Wire:
        return {"generation": self.generation, "created": self.created,
                "disks": [list(d) for d in self.disks], "table": self.table}

    @classmethod
    def from_wire(cls, doc: Any) -> GenerationRecord:
        doc = _map(doc, "generation")
        disks = tuple((d[0], d[1], float(d[2])) for d in doc.get("disks", ()))
        table = doc.get("table")
        if table is not None and not isinstance(table, bytes):
            raise ValueError("generation table must be bytes")
        return cls(_check_int(doc.get("generation"), "generation"), _check_number(doc.get("created"), "created"),
                   disks, table)


@dataclass(frozen=True, slots=True)
class TopologyRecord:
    """The deployment: its id, layout, nodes and the generations of its partition table."""

    deployment_id: str
    layout: Layout
    nodes: tuple[NodeRecord, ...]
    history: tuple[GenerationRecord, ...]  # ascending; the last one is current

    @property
    def generation(self) -> int:
        return self.history[-1].generation

    @property
    def current(self) -> GenerationRecord:
        return self.history[-1]

    def node(self, node_id: str) -> NodeRecord | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def node_by_address(self, control_address: str) -> NodeRecord | None:
        return next((n for n in self.nodes if n.control_address == control_address), None)

    def generation_record(self, generation: int) -> GenerationRecord | None:
        return next((g for g in self.history if g.generation == generation), None)

    def partition_table(self, generation: int | None = None) -> PartitionTable:
        record = self.current if generation is None else self.generation_record(generation)
        if record is None:
            raise LookupError(f"no generation {generation}")
        return record.partition_table()

    def to_wire(self) -> Wire:
        return {"deployment_id": self.deployment_id, "layout": self.layout.to_wire(),
                "nodes": [n.to_wire() for n in self.nodes], "history": [g.to_wire() for g in self.history]}

    @classmethod
    def from_wire(cls, doc: Any) -> TopologyRecord:
        doc = _map(doc, "topology")
        return cls(_check_str(doc.get("deployment_id"), "deployment id"), Layout.from_wire(doc.get("layout")),
                   tuple(NodeRecord.from_wire(n) for n in doc.get("nodes", ())),
                   tuple(GenerationRecord.from_wire(g) for g in doc.get("history", ())))


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user. ``secret`` is sealed by the caller (AES-GCM under the root-derived key):
    the control plane stores and replicates it, never sees it in clear."""

    access_key: str
    secret: bytes
    status: str = "enabled"
    policy: str = "readwrite"
    created: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"

    def to_wire(self) -> Wire:
        return {"access_key": self.access_key, "secret": self.secret, "status": self.status,
                "policy": self.policy, "created": self.created}

    @classmethod
    def from_wire(cls, doc: Any) -> UserRecord:
        doc = _map(doc, "user")
        return cls(doc["access_key"], doc["secret"], doc["status"], doc["policy"], doc["created"])


@dataclass(frozen=True, slots=True)
class BucketRecord:
    """A bucket. ``settings`` (versioning, policy, lifecycle, ...) is plain data; never
    mutate a record you read: commands replace records whole."""

    name: str
    created: float
    owner: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        return {"name": self.name, "created": self.created, "owner": self.owner, "settings": dict(self.settings)}

    @classmethod
    def from_wire(cls, doc: Any) -> BucketRecord:
        doc = _map(doc, "bucket")
        return cls(doc["name"], doc["created"], doc.get("owner", ""), doc.get("settings", {}))


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A migration job or checkpoint: a keyed value with a version for compare-and-set."""

    key: str
    version: int
    value: Any
    updated: float

    def to_wire(self) -> Wire:
        return {"key": self.key, "version": self.version, "value": self.value, "updated": self.updated}

    @classmethod
    def from_wire(cls, doc: Any) -> JobRecord:
        doc = _map(doc, "job")
        return cls(doc["key"], doc["version"], doc["value"], doc["updated"])


def _map(doc: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{what} must be a map, got {type(doc).__name__}")
    return doc


# --- partition tables ----------------------------------------------------------------------
def compress_table(table: PartitionTable) -> bytes:
    return zlib.compress(table.to_bytes(), 6)


@lru_cache(maxsize=16)
def parse_table(blob: bytes) -> PartitionTable:
    """Decompress (bounded) and parse a stored table; ValueError on anything else."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(blob, MAX_TABLE_BYTES)
    except zlib.error as exc:
        raise ValueError(f"partition table is not zlib data: {exc}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"partition table is truncated or larger than {MAX_TABLE_BYTES} bytes")
    return PartitionTable.from_bytes(raw)


def placement_disks(nodes: Iterable[NodeRecord]) -> tuple[tuple[str, str, float], ...]:
    """``(disk_id, node_id, weight)`` of every disk the table may use, sorted by disk id."""
    return tuple(sorted((d.disk_id, n.node_id, d.weight) for n in nodes if n.placed for d in n.disks))


def check_nodes(nodes: Any) -> tuple[NodeRecord, ...]:
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise ValueError("nodes must be a non-empty list")
    records = tuple(n if isinstance(n, NodeRecord) else NodeRecord.from_wire(n) for n in nodes)
    for what, values in (("node id", [n.node_id for n in records]),
                         ("endpoint", [n.endpoint for n in records]),
                         ("control address", [n.control_address for n in records]),
                         ("disk id", [d.disk_id for n in records for d in n.disks])):
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise ValueError(f"{what} {value!r} appears twice")
            seen.add(value)
    if not any(n.placed for n in records):
        raise ValueError("at least one node must be active or joining")
    return records


def _check_table(blob: Any, generation: int, layout: Layout, disks: tuple[tuple[str, str, float], ...]) -> bytes:
    if not isinstance(blob, bytes):
        raise ValueError("table must be bytes (zlib of PartitionTable.to_bytes())")
    table = parse_table(blob)
    if table.generation != generation:
        raise ValueError(f"table is for generation {table.generation}, expected {generation}")
    if table.partitions != layout.partitions or table.set_size != layout.set_size:
        raise ValueError(f"table is {table.partitions} x {table.set_size}, the layout needs "
                         f"{layout.partitions} x {layout.set_size}")
    unknown = set(table.disk_ids()) - {d[0] for d in disks}
    if unknown:
        raise ValueError(f"table uses disks that are not placed in this generation: {sorted(unknown)[:3]}")
    return blob


# --- the snapshot readers see ---------------------------------------------------------------
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """The applied state at one point of the log. Immutable: safe to keep and share."""

    applied: int = 0  # commands applied (including refused ones and no-ops)
    topology: TopologyRecord | None = None
    users: Mapping[str, UserRecord] = field(default_factory=lambda: _EMPTY)
    buckets: Mapping[str, BucketRecord] = field(default_factory=lambda: _EMPTY)
    settings: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    jobs: Mapping[str, JobRecord] = field(default_factory=lambda: _EMPTY)

    @property
    def generation(self) -> int:
        return self.topology.generation if self.topology is not None else 0

    def to_wire(self) -> Wire:
        return {"applied": self.applied,
                "topology": self.topology.to_wire() if self.topology is not None else None,
                "users": [u.to_wire() for u in self.users.values()],
                "buckets": [b.to_wire() for b in self.buckets.values()],
                "settings": dict(self.settings),
                "jobs": [j.to_wire() for j in self.jobs.values()]}

    @classmethod
    def from_wire(cls, doc: Any) -> ControlSnapshot:
        doc = _map(doc, "state")
        topology = doc.get("topology")
        return cls(
            applied=doc.get("applied", 0),
            topology=TopologyRecord.from_wire(topology) if topology is not None else None,
            users=_frozen({u["access_key"]: UserRecord.from_wire(u) for u in doc.get("users", ())}),
            buckets=_frozen({b["name"]: BucketRecord.from_wire(b) for b in doc.get("buckets", ())}),
            settings=_frozen(dict(doc.get("settings", {}))),
            jobs=_frozen({j["key"]: JobRecord.from_wire(j) for j in doc.get("jobs", ())}),
        )


def _frozen(table: dict) -> Mapping:
    return MappingProxyType(table)


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


Handler = Callable[["ControlMachine", ControlSnapshot, dict, float], tuple[ControlSnapshot, Any]]
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
            new_state, value = handler(self, state, args, float(ts))
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
        doc = _map(doc, "control snapshot")
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
def _noop(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    return state, {"applied": state.applied + 1}


@command("init_cluster")
def _init_cluster(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    deployment_id = _check_str(args.get("deployment_id"), "deployment id")
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
    table = _check_table(args.get("table"), 1, layout, disks)
    first = GenerationRecord(1, ts, disks, table)
    topology = TopologyRecord(deployment_id, layout, nodes, (first,))
    return replace(state, topology=topology), {"created": True, "deployment_id": deployment_id, "generation": 1}


def _same_members(a: Iterable[NodeRecord], b: Iterable[NodeRecord]) -> bool:
    return {n.node_id: n for n in a} == {n.node_id: n for n in b}


@command("propose_generation")
def _propose_generation(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    topology = _require_topology(state)
    expected = _check_int(args.get("expected_generation"), "expected generation", minimum=1)
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
    disks = placement_disks(nodes)
    generation = topology.generation + 1
    table = _check_table(args.get("table"), generation, topology.layout, disks)
    record = GenerationRecord(generation, ts, disks, table)
    new = replace(topology, nodes=nodes, history=topology.history + (record,))
    return replace(state, topology=new), {"generation": generation}


@command("set_node_state")
def _set_node_state(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
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
def _retire_generation(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    topology = _require_topology(state)
    generation = _check_int(args.get("generation"), "generation", minimum=1)
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
def _put_user(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    access_key = _check_access_key(args.get("access_key"))
    secret = args.get("secret")
    if not isinstance(secret, bytes) or not 0 < len(secret) <= MAX_SECRET_BYTES:
        raise _invalid(f"secret must be 1 to {MAX_SECRET_BYTES} bytes (sealed by the caller)")
    status = _check_status(args.get("status", "enabled"))
    policy = _check_str(args.get("policy", "readwrite"), "policy")
    existing = state.users.get(access_key)
    if existing is not None and args.get("create_only"):
        raise CommandError("UserAlreadyExists", f"a user with access key {access_key!r} exists")
    created = existing.created if existing is not None else ts
    record = UserRecord(access_key, secret, status, policy, created)
    return replace(state, users=_with(state.users, access_key, record)), {"created": existing is None}


def _existing_user(state: ControlSnapshot, args: dict) -> UserRecord:
    access_key = args.get("access_key")
    user = state.users.get(access_key) if isinstance(access_key, str) else None
    if user is None:
        raise CommandError("NoSuchUser", f"no user with access key {access_key!r}")
    return user


@command("set_user_status")
def _set_user_status(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    user = _existing_user(state, args)
    record = replace(user, status=_check_status(args.get("status")))
    return replace(state, users=_with(state.users, user.access_key, record)), {"status": record.status}


@command("set_user_policy")
def _set_user_policy(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    user = _existing_user(state, args)
    record = replace(user, policy=_check_str(args.get("policy"), "policy"))
    return replace(state, users=_with(state.users, user.access_key, record)), {"policy": record.policy}


@command("delete_user")
def _delete_user(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
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
        _check_str(key, f"{what} key")
    return _check_plain(settings, what)


@command("create_bucket")
def _create_bucket(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    name = _check_bucket_name(args.get("name"))
    owner = args.get("owner", "")
    if not isinstance(owner, str) or len(owner) > MAX_KEY_CHARS:
        raise _invalid("owner must be a string")
    existing = state.buckets.get(name)
    if existing is not None:
        if existing.owner == owner:
            raise CommandError("BucketAlreadyOwnedByYou", f"bucket {name} exists and is yours")
        raise CommandError("BucketAlreadyExists", f"bucket {name} exists")
    record = BucketRecord(name, ts, owner, _check_settings(args.get("settings", {}), "settings"))
    return replace(state, buckets=_with(state.buckets, name, record)), record.to_wire()


def _existing_bucket(state: ControlSnapshot, args: dict) -> BucketRecord:
    name = args.get("name")
    bucket = state.buckets.get(name) if isinstance(name, str) else None
    if bucket is None:
        raise CommandError("NoSuchBucket", f"bucket {name!r} does not exist")
    return bucket


@command("delete_bucket")
def _delete_bucket(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    bucket = _existing_bucket(state, args)
    return replace(state, buckets=_with(state.buckets, bucket.name, None)), {"deleted": True}


def _merged(current: Mapping[str, Any], args: dict) -> dict:
    values = _check_settings(args.get("set", {}), "set")
    unset = args.get("unset", [])
    if not isinstance(unset, list) or not all(isinstance(k, str) for k in unset):
        raise _invalid("unset must be a list of names")
    merged = {k: v for k, v in current.items() if k not in unset}
    merged.update(values)
    return merged


@command("update_bucket")
def _update_bucket(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    bucket = _existing_bucket(state, args)
    record = replace(bucket, settings=_merged(bucket.settings, args))
    return replace(state, buckets=_with(state.buckets, bucket.name, record)), record.to_wire()


@command("set_settings")
def _set_settings(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    merged = _merged(state.settings, args)
    return replace(state, settings=_frozen(merged)), {"settings": len(merged)}


def _check_expected_version(args: dict) -> int | None:
    expected = args.get("expected_version")
    return None if expected is None else _check_int(expected, "expected version")


@command("put_job")
def _put_job(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    key = _check_str(args.get("key"), "job key")
    value = _check_plain(args.get("value"), "job value")
    expected = _check_expected_version(args)
    current = state.jobs.get(key)
    version = current.version if current is not None else 0
    if expected is not None and expected != version:
        raise CommandError("VersionConflict", f"job {key} is at version {version}, expected {expected}")
    record = JobRecord(key, version + 1, value, ts)
    return replace(state, jobs=_with(state.jobs, key, record)), {"version": record.version}


@command("delete_job")
def _delete_job(machine: ControlMachine, state: ControlSnapshot, args: dict, ts: float):
    key = _check_str(args.get("key"), "job key")
    current = state.jobs.get(key)
    if current is None:
        raise CommandError("NoSuchJob", f"no job {key!r}")
    expected = _check_expected_version(args)
    if expected is not None and expected != current.version:
        raise CommandError("VersionConflict", f"job {key} is at version {current.version}, expected {expected}")
    return replace(state, jobs=_with(state.jobs, key, None)), {"deleted": True}
