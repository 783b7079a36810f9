"""The control plane's records: typed, versioned values, their wire form and validation.

Frozen dataclasses, each with ``to_wire``/``from_wire`` (plain maps for msgpack): the
topology (``TopologyRecord``: deployment id, ``Layout``, ``NodeRecord`` with ``DiskRecord``,
and the ``GenerationRecord`` history with each generation's partition table), users,
buckets and jobs, and ``ControlSnapshot``, the whole applied state that readers see.
Pure: no I/O, no clocks. Bad values raise ``ValueError``; the state machine
(``control_state``) turns that into a deterministic refusal.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import msgpack

from buckets.placement import MAX_SET_SIZE, DiskSpec, PartitionTable, Topology

FORMAT_VERSION = 1  # of records and snapshots
# Control levels (``buckets.cluster.levels``): the rule set the state machine applies. A rule
# that changes what a command decides applies from the level that introduced it, once every
# member runs a release of that level; ``CONTROL_LEVEL`` is this release's.
BASE_LEVEL = 1  # the rules of the releases before levels (their nodes name no level)
CONTROL_LEVEL = 2  # this release: nodes report their level, the cluster records the one all of them run
MAX_TABLE_BYTES = 16 << 20  # decompressed table bound (zip-bomb guard); 65,536 x 16 slots is ~3 MiB
MAX_KEY_CHARS = 256

ACTIVE, JOINING, DRAINING, REMOVED = "active", "joining", "draining", "removed"
NODE_STATES = (ACTIVE, JOINING, DRAINING, REMOVED)
PLACED_STATES = frozenset({ACTIVE, JOINING})  # nodes whose disks the partition table may use
_ADDRESS_RE = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")

Wire = dict[str, Any]


# --- small checks ---------------------------------------------------------------------------
def check_str(value: Any, what: str, *, max_chars: int = MAX_KEY_CHARS) -> str:
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise ValueError(f"{what} must be a non-empty string of at most {max_chars} characters, got {value!r}")
    return value


def check_int(value: Any, what: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def check_plain(value: Any, what: str) -> Any:
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
    """One disk of a node. ``weight`` is relative capacity for placement; ``capacity`` bytes (0: unknown);
    ``draining``: being removed (``cluster remove-disk``): not placed, its shards move away, then it
    is dropped from the node's record."""

    disk_id: str
    path: str
    weight: float = 1.0
    capacity: int = 0
    draining: bool = False

    def __post_init__(self) -> None:
        check_str(self.disk_id, "disk id")
        check_str(self.path, "disk path", max_chars=4096)
        weight = _check_number(self.weight, f"weight of disk {self.disk_id}")
        if weight <= 0:
            raise ValueError(f"weight of disk {self.disk_id} must be > 0, got {weight}")
        object.__setattr__(self, "weight", weight)
        check_int(self.capacity, f"capacity of disk {self.disk_id}")
        if not isinstance(self.draining, bool):
            raise ValueError(f"draining of disk {self.disk_id} must be true or false")

    def to_wire(self) -> Wire:
        wire: dict[str, Any] = {"id": self.disk_id, "path": self.path, "weight": self.weight,
                                "capacity": self.capacity}
        if self.draining:  # absent when false: the records of a cluster that never removed a disk stay as they were
            wire["draining"] = True
        return wire

    @classmethod
    def from_wire(cls, doc: Any) -> DiskRecord:
        doc = as_map(doc, "disk")
        return cls(doc.get("id"), doc.get("path"), doc.get("weight", 1.0), doc.get("capacity", 0),
                   doc.get("draining", False))


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node: its S3 endpoint, its control-plane (Raft) address, membership state, disks."""

    node_id: str
    endpoint: str
    control_address: str
    state: str
    disks: tuple[DiskRecord, ...]

    def __post_init__(self) -> None:
        check_str(self.node_id, "node id")
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
        doc = as_map(doc, "node")
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
        check_int(self.k, "k", minimum=1)
        check_int(self.m, "m")
        check_int(self.block_size, "block size", minimum=1)
        check_int(self.partitions, "partitions", minimum=1)
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
        doc = as_map(doc, "layout")
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
        doc = as_map(doc, "generation")
        disks = tuple((d[0], d[1], float(d[2])) for d in doc.get("disks", ()))
        table = doc.get("table")
        if table is not None and not isinstance(table, bytes):
            raise ValueError("generation table must be bytes")
        return cls(check_int(doc.get("generation"), "generation"), _check_number(doc.get("created"), "created"),
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
        doc = as_map(doc, "topology")
        return cls(check_str(doc.get("deployment_id"), "deployment id"), Layout.from_wire(doc.get("layout")),
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
        doc = as_map(doc, "user")
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
        doc = as_map(doc, "bucket")
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
        doc = as_map(doc, "job")
        return cls(doc["key"], doc["version"], doc["value"], doc["updated"])


def as_map(doc: Any, what: str) -> Mapping[str, Any]:
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
    return tuple(sorted((d.disk_id, n.node_id, d.weight) for n in nodes if n.placed for d in n.disks
                        if not d.draining))


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


def check_table(blob: Any, generation: int, layout: Layout, disks: tuple[tuple[str, str, float], ...]) -> bytes:
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
    level: int = BASE_LEVEL  # the control level every member runs (raised by ``set_level``, never lowered)

    @property
    def generation(self) -> int:
        return self.topology.generation if self.topology is not None else 0

    def to_wire(self) -> Wire:
        return {"applied": self.applied, "level": self.level,
                "topology": self.topology.to_wire() if self.topology is not None else None,
                "users": [u.to_wire() for u in self.users.values()],
                "buckets": [b.to_wire() for b in self.buckets.values()],
                "settings": dict(self.settings),
                "jobs": [j.to_wire() for j in self.jobs.values()]}

    @classmethod
    def from_wire(cls, doc: Any) -> ControlSnapshot:
        doc = as_map(doc, "state")
        topology = doc.get("topology")
        return cls(
            applied=doc.get("applied", 0),
            topology=TopologyRecord.from_wire(topology) if topology is not None else None,
            users=frozen_map({u["access_key"]: UserRecord.from_wire(u) for u in doc.get("users", ())}),
            buckets=frozen_map({b["name"]: BucketRecord.from_wire(b) for b in doc.get("buckets", ())}),
            settings=frozen_map(dict(doc.get("settings", {}))),
            jobs=frozen_map({j["key"]: JobRecord.from_wire(j) for j in doc.get("jobs", ())}),
            level=check_int(doc.get("level", BASE_LEVEL), "control level", minimum=BASE_LEVEL),
        )


def frozen_map(table: dict) -> Mapping:
    return MappingProxyType(table)
