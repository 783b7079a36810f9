"""Membership: nodes join and leave a running cluster, one at a time.

Three pieces, used by ``ClusterNode`` (``buckets.cluster.node``) and the admin API
(``buckets.admin.cluster_api``):

- **The membership file** (``members.json`` beside the Raft journal on the node's first disk):
  the control plane's node list as this node last applied it. On a restart it names the
  peers, their disks and the Raft members before the control plane has replayed its journal;
  the command line then only names this node's own disks (and, the first time, the seed).
  The control plane stays the source of truth: the file is rewritten on every topology
  change this node applies.
- **Joining**: a new node asks a member for ``cluster/join_info`` (peer RPC, signed with the
  cluster secret like every peer call): the deployment id, the erasure layout, the nodes and
  the Raft members. It formats its own empty disks for that deployment (each disk's format
  names this node's disks only: the partition table, not the format, says where shards go).
- **Changes** (``add_node``, ``remove_node``), run by whichever node the operator's admin
  call reached; every control-plane change is forwarded to the Raft leader:

  add-node: hello-check the new node (same secret, joined this deployment, the disks the
  operator named), ``add_member`` its Raft address, commit generation g+1 with the node
  ACTIVE (its table built from g's, so only what must move moves), start the migration.

  remove-node: the node DRAINING in generation g+1 (no disk of it placed), migration; once
  the migration to g+1 is done, ``finish_removals`` (on the leader) sets it REMOVED and
  removes it from Raft. ``--force`` (a dead node): REMOVED in g+1 at once, out of Raft; the
  migration rebuilds its shards from parity on their new disks.

A second change while a migration runs is **queued**: one ``from_gen -> to_gen`` migration at
a time, the changes after it in a queue in the control plane (job ``changes``), checked when
they are asked for (the node answers, has joined, the disks match) and applied in order by the
leader once the migration before them is done (``run_queued``): each commits its own
generation and migration. The queue survives any restart; a change applied twice (a leader
that died between applying and dequeuing) is a no-op the second time.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from buckets import errors
from buckets.cluster.catalog import INDEX_REPLICAS
from buckets.cluster.control import LevelTooLow, control_address, control_directory, first_disk_failing
from buckets.cluster.rpcerrors import clock_cause, refused_signature
from buckets.cluster.control_records import (
    ACTIVE, DRAINING, REMOVED, DiskRecord, Layout, NodeRecord, TopologyRecord, check_endpoint, placement_disks,
)
from buckets.cluster.levels import level_of
from buckets.errors import define_error
from buckets.placement import nodes_survived
from buckets.placement.builder import node_limit

log = logging.getLogger("buckets.cluster")

MEMBERS_FILE = "members.json"
JOB_KEY = "migration"
CHANGES_KEY = "changes"  # the queue of topology changes waiting for the running migration
MAX_QUEUED = 16

NodeUnreachable = define_error(
    "NodeUnreachable", "ServiceUnavailable", 503,
    "The node did not answer: start it with --join first, then add it.")
NodeRefused = define_error(
    "NodeRefused", "NodeRefused", 409,
    "The node refused this cluster's signature: it was started with another cluster secret.")
NodeNotJoined = define_error(
    "NodeNotJoined", "NodeNotJoined", 409,
    "The node is not joining this cluster: start it with --join and this cluster's URL.")
ToleranceWouldFall = define_error(
    "ToleranceWouldFall", "ToleranceWouldFall", 409,
    "This change lowers the node failures the cluster tolerates: ask again with --accept-lower-tolerance.")
NotACluster = define_error(
    "NotACluster", "InvalidRequest", 400,
    "This server is not a cluster node: start it with node URLs (http://HOST:PORT/path).")


# --- what the cluster survives -----------------------------------------------------------------
def tolerated_failures(shards_per_node: int, k: int, m: int, members: int) -> int:
    """How many whole nodes may fail with every object still readable and writable, every
    index still answering and the control plane keeping its majority, when no node holds more
    than ``shards_per_node`` shards of an object."""
    majority = (members - 1) // 2
    replicas = min(INDEX_REPLICAS, members)
    index = replicas - (replicas // 2 + 1)
    return max(0, min(nodes_survived(k, m, shards_per_node), majority, index))


def tolerates(nodes: Sequence[NodeRecord], layout: Layout) -> int:
    """``tolerated_failures`` of a cluster of ``nodes``, by the rule its partition table keeps:
    no node holds more shards of a partition than the most even spread its disks allow
    (``placement.builder.node_limit``). What a membership change is about to make of it."""
    per_node = Counter(node_id for _, node_id, _ in placement_disks(nodes))
    if not per_node:
        return 0
    per_disk = -(-layout.set_size // sum(per_node.values()))
    worst = node_limit(list(per_node.values()), per_disk, layout.set_size)
    return tolerated_failures(worst, layout.k, layout.m, sum(1 for n in nodes if n.state != REMOVED))


def _tolerance(topology: TopologyRecord, nodes: Sequence[NodeRecord], change: str, accept: Any) -> dict:
    """The node failures the cluster tolerates before and after a change to ``nodes`` (its
    answer names both). A change that lowers them is refused unless ``accept`` (the operator's
    ``--accept-lower-tolerance``): with that many nodes down some objects would stop reading or
    writing, which the operator should choose, not find out."""
    if not isinstance(accept, bool):
        raise errors.InvalidArgument("accept_lower_tolerance must be true or false")
    before, after = tolerates(topology.nodes, topology.layout), tolerates(nodes, topology.layout)
    if after < before and not accept:
        raise ToleranceWouldFall(
            f"{change} would leave a cluster that tolerates {after} node failure(s), not {before}: with {after + 1} "
            f"node(s) down some objects would neither read nor write until they are back. Add a node (or disks) "
            f"first, or ask again with --accept-lower-tolerance")
    return {"before": before, "after": after}


# --- the membership file ----------------------------------------------------------------------
def members_path(first_disk_root: str) -> str:
    return os.path.join(control_directory(first_disk_root), MEMBERS_FILE)


def read_members(first_disk_root: str) -> dict | None:
    """``{deployment_id, generation, nodes: [NodeRecord]}`` or None (no file: never a member).
    A damaged file refuses the start: it is this node's only record of its peers."""
    path = members_path(first_disk_root)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        nodes = tuple(NodeRecord.from_wire(n) for n in doc["nodes"])
        return {"deployment_id": str(doc["deployment_id"]), "generation": int(doc["generation"]), "nodes": nodes}
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ENXIO, errno.ENODEV):
            raise errors.FormatError(first_disk_failing(first_disk_root, exc.strerror)) from None
        raise _unreadable(path, exc) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: str, exc: Exception) -> errors.FormatError:
    return errors.FormatError(f"{path}: unreadable membership file ({exc}); it is rewritten from the "
                              f"control plane: restore it from another node's copy with this node's "
                              f"own entry, or start with --join again")


def write_members(first_disk_root: str, topology: TopologyRecord) -> None:
    """Atomically (temp file, fsync, rename, directory fsync), like the Raft metadata."""
    path = members_path(first_disk_root)
    doc = {"deployment_id": topology.deployment_id, "generation": topology.generation,
           "nodes": [n.to_wire() for n in topology.nodes]}
    data = json.dumps(doc, indent=1, sort_keys=True).encode()
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- joining ----------------------------------------------------------------------------------
def join_info(control: Any) -> dict:
    """What a member tells a joining node (``cluster/join_info``)."""
    topology = control.snapshot.topology
    status = control.status()
    return {"deployment_id": topology.deployment_id, "layout": topology.layout.to_wire(),
            "generation": topology.generation, "nodes": [n.to_wire() for n in topology.nodes],
            "members": [m.address for m in status.members], "level": control.snapshot.level}


async def format_for_join(disks: list, info: dict, sync: bool = True) -> list[str]:
    """Format this node's own empty disks for the deployment of ``info``; disks already
    formatted for it (a restart before add-node) are kept. Returns the disk ids."""
    from buckets.engine.bootstrap import read_disk_format, refuse_shared_directories, refuse_unmounted
    from buckets.storage.format import DiskFormat, new_format, new_ids

    deployment = info["deployment_id"]
    layout = Layout.from_wire(info["layout"])
    refuse_shared_directories(disks)
    refuse_unmounted(disks)
    probes = await asyncio.gather(*(read_disk_format(d) for d in disks))
    for d, p in zip(disks, probes):
        if isinstance(p, str):
            raise errors.FormatError(f"{d.endpoint} is unusable: {p}")
        if isinstance(p, DiskFormat) and p.deployment_id != deployment:
            raise errors.FormatError(f"{d.endpoint} belongs to deployment {p.deployment_id}, the cluster at "
                                     f"--join is {deployment}: give the joining node empty disks")
    formats = [p for p in probes if isinstance(p, DiskFormat)]
    if formats and len(formats) == len(disks):
        return list(formats[0].disks)
    if formats:
        ids = list(formats[0].disks)
        if len(ids) != len(disks):
            raise errors.FormatError(f"this node's disks were formatted as {len(ids)} disks, {len(disks)} are given")
    else:
        _, ids = new_ids(len(disks))
    for slot, (d, p) in enumerate(zip(disks, probes)):
        if p is None:
            fmt = new_format(slot, ids, deployment, layout.k, layout.m, layout.block_size, layout.partitions)
            await d.write_format(fmt.to_json(), create_root=True, sync=sync)
    log.info("formatted %d disks for deployment %s (joining)", len(disks), deployment)
    return ids


# --- the operator's changes ---------------------------------------------------------------------
def normalize_endpoint(value: Any) -> str:
    """``http://host:port`` from what the operator typed (a trailing slash, no scheme)."""
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidArgument("name the node by its URL, http://HOST:PORT")
    text = value.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    try:
        return check_endpoint(text)
    except ValueError as exc:
        raise errors.InvalidArgument(str(exc)) from None


def find_node(topology: TopologyRecord, name: str) -> NodeRecord:
    """A node by URL or host:port."""
    wanted = normalize_endpoint(name)
    netloc = urlsplit(wanted).netloc
    for n in topology.nodes:
        if n.endpoint == wanted or urlsplit(n.endpoint).netloc == netloc:
            return n
    from buckets.cluster.control import NoSuchNode

    raise NoSuchNode(f"no node {name} in the cluster (nodes: {', '.join(n.endpoint for n in topology.nodes)})")


def _migration_active(snapshot: Any) -> dict | None:
    record = snapshot.jobs.get(JOB_KEY)
    if record is not None and isinstance(record.value, dict) and record.value.get("state") in ("running", "paused"):
        return record.value
    return None


# --- the queue of changes -----------------------------------------------------------------------
def queued_changes(snapshot: Any) -> list[dict]:
    record = snapshot.jobs.get(CHANGES_KEY)
    if record is None or not isinstance(record.value, dict):
        return []
    return [c for c in record.value.get("queue", []) if isinstance(c, dict)]


async def _update_queue(control: Any, change) -> list[dict]:
    """Compare-and-set the queue: ``change(queue)`` returns the new list (or raises)."""
    for _ in range(20):
        record = control.snapshot.jobs.get(CHANGES_KEY)
        queue = queued_changes(control.snapshot)
        new = change(list(queue))
        try:
            await control.apply("put_job", key=CHANGES_KEY, value={"queue": new},
                                expected_version=record.version if record is not None else 0, timeout=10.0)
            return new
        except errors.BucketsError as exc:
            if exc.code != "VersionConflict":
                raise
            await control.read(linearizable=True, timeout=10.0)
    raise errors.ServiceUnavailable("the queue of changes kept changing; try again")


def _accepting(change: dict, accept: bool) -> dict:
    """A queued change carries the operator's ``--accept-lower-tolerance``: it is checked
    again when it is applied, against the topology of then."""
    return {**change, "accept_lower_tolerance": True} if accept is True else change


def _same_change(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("op", "endpoint", "path"))


async def _enqueue(control: Any, change: dict, migrating: dict) -> dict:
    def add(queue: list[dict]) -> list[dict]:
        same = [c for c in queue if _same_change(c, change)]
        if same:
            return queue  # asked again: queued once
        if len(queue) >= MAX_QUEUED:
            raise errors.ServiceUnavailable(f"{len(queue)} changes are queued already: wait for the migration")
        return [*queue, dict(change, queued=time.time())]

    queue = await _update_queue(control, add)
    position = next(i for i, c in enumerate(queue, 1) if _same_change(c, change))
    log.info("%s %s%s queued (position %d): the migration to generation %s is %s", change["op"],
             change["endpoint"], change.get("path", ""), position, migrating.get("to_gen"), migrating.get("state"))
    return {"node": change["endpoint"], "added": False, "queued": True, "position": position,
            "generation": control.snapshot.topology.generation,
            "message": f"{change['op']} {change['endpoint']}{change.get('path', '')} is queued (position {position}): it is applied once the "
                       f"migration to generation {migrating.get('to_gen')} ({migrating.get('state')}) is done"}


async def run_queued(node: Any) -> None:
    """On the leader, with no migration running and no node left draining: apply the first
    queued change, then take it off the queue. A change that cannot be applied any more (its
    node went away, the disks changed) is dropped with a warning; one that fails for a moment
    (no majority, a peer slow to answer) stays first and is tried again."""
    control = node.control
    snapshot = control.snapshot
    queue = queued_changes(snapshot)
    if not queue or _migration_active(snapshot) is not None:
        return
    status = control.status()
    if status.role != "leader" or not status.has_quorum:
        return
    topology = snapshot.topology
    if topology is None or any(n.state == DRAINING or any(d.draining for d in n.disks) for n in topology.nodes):
        return  # finish_removals and finish_disk_removals first
    change = queue[0]
    accept = change.get("accept_lower_tolerance") is True
    try:
        if change.get("op") == "add-node":
            result = await add_node(node, change.get("endpoint"), change.get("paths"), accept, from_queue=True)
        elif change.get("op") == "remove-node":
            result = await remove_node(node, change.get("endpoint"), bool(change.get("force")), accept,
                                       from_queue=True)
        elif change.get("op") == "add-disk":
            result = await add_disk(node, change.get("endpoint"), change.get("path"), accept, from_queue=True)
        elif change.get("op") == "remove-disk":
            result = await remove_disk(node, change.get("endpoint"), change.get("path"), accept, from_queue=True)
        else:
            result = {"message": f"unknown change {change.get('op')!r}"}
        log.info("queued %s %s applied: %s", change.get("op"), change.get("endpoint"),
                 result.get("message") or f"generation {result.get('generation')}")
    except errors.BucketsError as exc:
        if exc.status >= 500 or exc.code in ("MigrationInProgress", "GenerationConflict"):
            raise  # for a moment: tried again on the next look
        log.warning("queued %s %s dropped: %s", change.get("op"), change.get("endpoint"), exc)
    await _update_queue(control, lambda q: [c for c in q if c != change])


async def hello(node: Any, endpoint: str) -> dict:
    """``node/hello`` of ``endpoint``, with the answers an operator can act on."""
    from buckets.cluster.rpcclient import PeerClient

    client = node.clients.get(endpoint)
    own = client is None
    if own:
        client = PeerClient(endpoint, node.secret)
    try:
        return await client.call("node", "hello", {}, timeout=5.0)
    except errors.BucketsError as exc:
        if refused_signature(exc):
            cause = clock_cause(exc) or "it was started with another cluster secret"
            raise NodeRefused(f"{endpoint} refused this cluster's signature: {cause}") from None
        raise NodeUnreachable(f"{endpoint} did not answer ({exc}): start it with `buckets server --join "
                              f"{node.spec.me.url} {endpoint}/DISKS...` first") from None
    finally:
        if own:
            await client.close()


def check_paths(paths: Any) -> None:
    if paths is not None and (not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths)):
        raise errors.InvalidArgument("paths must be a list of the node's disk paths")


async def add_node(node: Any, endpoint: Any, paths: Any = None, accept_lower_tolerance: Any = False, *,
                   from_queue: bool = False) -> dict:
    from buckets.cluster.migration import start_migration

    endpoint = normalize_endpoint(endpoint)
    check_paths(paths)
    control = node.control
    snapshot = await control.read(linearizable=True, timeout=10.0)
    topology = snapshot.topology
    existing = next((n for n in topology.nodes if n.endpoint == endpoint), None)
    if existing is not None and existing.placed:  # a retry of an add-node that went through
        return {"node": endpoint, "added": False, "generation": topology.generation,
                "message": f"{endpoint} is already an active node"}
    migrating = _migration_active(snapshot)
    if existing is not None and existing.state == REMOVED and existing.control_address in {
            m.address for m in control.status().members}:
        raise errors.InvalidArgument(f"{endpoint} is still leaving the control plane: try again in a few seconds")
    answer = await hello(node, endpoint)
    if answer.get("deployment") != topology.deployment_id:
        raise NodeNotJoined(f"{endpoint} is not joining this cluster (its deployment is "
                            f"{answer.get('deployment') or 'none yet'}): start it with --join {node.spec.me.url}")
    level = level_of(answer)
    if level < snapshot.level:
        raise LevelTooLow(f"{endpoint} runs control level {level} (an older release); the cluster runs level "
                          f"{snapshot.level}: start it with this cluster's release, then add it")
    disks = answer.get("disks") or []
    served = [d.get("path") for d in disks]
    if paths is not None and list(paths) != served:
        raise errors.InvalidArgument(f"{endpoint} serves the disks {', '.join(served)}, not {', '.join(paths)}: "
                                     f"name them as the node was started")
    record = NodeRecord(endpoint, endpoint, control_address(endpoint), ACTIVE,
                        tuple(DiskRecord(d["id"], d["path"]) for d in disks))
    # A removed node comes back with wiped disks (new disk ids): its old record is replaced.
    others = [n for n in topology.nodes if n.endpoint != endpoint]
    taken = {d.disk_id for n in topology.nodes for d in n.disks}
    if any(d.disk_id in taken for d in record.disks):
        raise errors.InvalidArgument(f"{endpoint}'s disks already belong to a node of this cluster: a removed "
                                     f"node comes back with wiped disks")
    tolerance = _tolerance(topology, [*others, record], f"adding {endpoint}", accept_lower_tolerance)
    if migrating is not None and not from_queue:
        return await _enqueue(control, _accepting({"op": "add-node", "endpoint": endpoint, "paths": paths},
                                                  accept_lower_tolerance), migrating)
    await control.add_member(record.control_address, timeout=30.0)
    from_gen = topology.generation
    result = await control.propose_generation([*others, record], levels={record.node_id: level}, timeout=30.0)
    to_gen = result["generation"]
    log.info("node %s added (%d disks): generation %d, migrating from %d", endpoint, len(record.disks),
             to_gen, from_gen)
    job = await start_migration(node, from_gen, to_gen)
    return {"node": endpoint, "added": True, "generation": to_gen, "from_generation": from_gen,
            "disks": [d.to_wire() for d in record.disks], "migration": {"state": job.get("state")},
            "tolerates": tolerance}


async def remove_node(node: Any, endpoint: Any, force: bool = False, accept_lower_tolerance: Any = False, *,
                      from_queue: bool = False) -> dict:
    from buckets.cluster.migration import start_migration

    if not isinstance(force, bool):
        raise errors.InvalidArgument("force must be true or false")
    control = node.control
    snapshot = await control.read(linearizable=True, timeout=10.0)
    topology = snapshot.topology
    target = find_node(topology, endpoint)
    if target.state == REMOVED:
        return {"node": target.endpoint, "state": REMOVED, "generation": topology.generation,
                "message": f"{target.endpoint} is already removed"}
    if target.state == DRAINING and not force:
        return {"node": target.endpoint, "state": DRAINING, "generation": topology.generation,
                "message": f"{target.endpoint} is draining already"}
    remaining = [n for n in topology.nodes if n.placed and n.node_id != target.node_id]
    disks = sum(len(n.disks) for n in remaining)
    if disks < topology.layout.set_size:
        raise errors.InvalidArgument(f"removing {target.endpoint} would leave {disks} disks, fewer than the "
                                     f"{topology.layout.set_size} each object's shards need")
    if force and target.control_address == control.config.address:
        raise errors.InvalidArgument("a node cannot force its own removal: ask another node")
    # A forced removal is of a dead node: the cluster lost it already, and refusing would keep its
    # shards from being rebuilt; ``--force`` is the operator's say-so.
    gone = [replace(n, state=REMOVED) if n.node_id == target.node_id else n for n in topology.nodes]
    tolerance = _tolerance(topology, gone, f"removing {target.endpoint}",
                           accept_lower_tolerance if not force else True)
    migrating = _migration_active(snapshot)
    if migrating is not None and not from_queue:
        return await _enqueue(control, _accepting({"op": "remove-node", "endpoint": target.endpoint, "force": force},
                                                  accept_lower_tolerance), migrating)
    state = REMOVED if force else DRAINING
    nodes = [replace(n, state=state) if n.node_id == target.node_id else n for n in topology.nodes]
    from_gen = topology.generation
    result = await control.propose_generation(nodes, timeout=30.0)
    to_gen = result["generation"]
    if force:
        await control.remove_member(target.control_address, timeout=30.0)
        log.warning("node %s removed by force: generation %d; its shards are rebuilt from parity", target.endpoint,
                    to_gen)
    else:
        log.info("node %s draining: generation %d, migrating from %d", target.endpoint, to_gen, from_gen)
    job = await start_migration(node, from_gen, to_gen)
    return {"node": target.endpoint, "state": state, "generation": to_gen, "from_generation": from_gen,
            "migration": {"state": job.get("state")}, "tolerates": tolerance}


# --- one disk at a time ----------------------------------------------------------------------------
def _disk_path(path: Any) -> str:
    if not isinstance(path, str) or not path.startswith("/") or os.path.normpath(path) != path:
        raise errors.InvalidArgument(f"disk path {path!r}: name an absolute, normalized path")
    return path


async def _disk_target(node: Any, endpoint: Any, path: Any) -> tuple[str, Any, Any, NodeRecord]:
    """(path, snapshot, topology, node record) for a disk change, read linearizably."""
    path = _disk_path(path)
    snapshot = await node.control.read(linearizable=True, timeout=10.0)
    return path, snapshot, snapshot.topology, find_node(snapshot.topology, endpoint)


async def _commit(node: Any, nodes: list[NodeRecord], from_gen: int) -> tuple[int, dict]:
    """Commit the generation of ``nodes`` and start the migration to it: (generation, job)."""
    from buckets.cluster.migration import start_migration

    result = await node.control.propose_generation(nodes, timeout=30.0)
    to_gen = result["generation"]
    return to_gen, await start_migration(node, from_gen, to_gen)


async def add_disk(node: Any, endpoint: Any, path: Any, accept_lower_tolerance: Any = False, *,
                   from_queue: bool = False) -> dict:
    """``cluster add-disk``: the node formats and serves the new disk (``prepare_disk``), then a
    generation that places it is committed and the migration moves its share onto it."""
    control = node.control
    path, snapshot, topology, target = await _disk_target(node, endpoint, path)
    existing = next((d for d in target.disks if d.path == path), None)
    if existing is not None:
        if existing.draining:
            raise errors.InvalidArgument(f"{target.endpoint}{path} is being removed: add it back once it is gone")
        return {"node": target.endpoint, "added": False, "generation": topology.generation,
                "disk": existing.to_wire(), "message": f"{target.endpoint}{path} is a disk of the cluster already"}
    if target.state != ACTIVE:
        raise errors.InvalidArgument(f"{target.endpoint} is {target.state}: disks are added to active nodes")
    # Checked before the node formats the disk; the count is what matters, not the new disk's id.
    planned = DiskRecord("disk-being-added", path)
    tolerance = _tolerance(topology, [replace(n, disks=(*n.disks, planned)) if n.node_id == target.node_id else n
                          for n in topology.nodes], f"adding {target.endpoint}{path}", accept_lower_tolerance)
    migrating = _migration_active(snapshot)
    if migrating is not None and not from_queue:
        return await _enqueue(control, _accepting({"op": "add-disk", "endpoint": target.endpoint, "path": path},
                                                  accept_lower_tolerance), migrating)
    if target.endpoint == node.spec.me.url:
        answer = await node.prepare_disk({"path": path})
    else:
        client = node.clients.get(target.endpoint)
        if client is None:
            raise NodeUnreachable(f"{target.endpoint} has no peer client here")
        answer = await client.call("cluster", "prepare_disk", {"path": path}, timeout=60.0)
    disk = DiskRecord(answer["id"], path)
    nodes = [replace(n, disks=(*n.disks, disk)) if n.node_id == target.node_id else n for n in topology.nodes]
    from_gen = topology.generation
    to_gen, job = await _commit(node, nodes, from_gen)
    log.info("disk %s%s added (%s): generation %d, migrating from %d", target.endpoint, path, disk.disk_id,
             to_gen, from_gen)
    return {"node": target.endpoint, "added": True, "disk": disk.to_wire(), "generation": to_gen,
            "from_generation": from_gen, "migration": {"state": job.get("state")},
            "tolerates": tolerance}


async def remove_disk(node: Any, endpoint: Any, path: Any, accept_lower_tolerance: Any = False, *,
                      from_queue: bool = False) -> dict:
    """``cluster remove-disk``: the disk drains (a generation that does not place it, and the
    migration off it); once that is done the leader drops it from the node's record
    (``finish_disk_removals``). The node's first disk (its control plane and membership
    file) stays."""
    control = node.control
    path, snapshot, topology, target = await _disk_target(node, endpoint, path)
    disk = next((d for d in target.disks if d.path == path), None)
    if disk is None:
        raise errors.InvalidArgument(f"{target.endpoint} has no disk {path} (its disks: "
                                     f"{', '.join(d.path for d in target.disks)})")
    if disk.draining:
        return {"node": target.endpoint, "disk": disk.to_wire(), "generation": topology.generation,
                "message": f"{target.endpoint}{path} is draining already"}
    if disk is target.disks[0]:
        raise errors.InvalidArgument(f"{path} is the first disk of {target.endpoint}: it holds the node's control "
                                     f"plane and membership file and stays while the node is a member")
    placed = sum(1 for n in topology.nodes if n.placed for d in n.disks if not d.draining)
    if target.placed and placed - 1 < topology.layout.set_size:
        raise errors.InvalidArgument(f"removing {path} would leave {placed - 1} disks, fewer than the "
                                     f"{topology.layout.set_size} each object's shards need")
    record = replace(target, disks=tuple(replace(d, draining=True) if d.disk_id == disk.disk_id else d
                                         for d in target.disks))
    nodes = [record if n.node_id == target.node_id else n for n in topology.nodes]
    tolerance = _tolerance(topology, nodes, f"removing {target.endpoint}{path}", accept_lower_tolerance)
    migrating = _migration_active(snapshot)
    if migrating is not None and not from_queue:
        return await _enqueue(control, _accepting({"op": "remove-disk", "endpoint": target.endpoint, "path": path},
                                                  accept_lower_tolerance), migrating)
    from_gen = topology.generation
    to_gen, job = await _commit(node, nodes, from_gen)
    log.info("disk %s%s (%s) draining: generation %d, migrating from %d", target.endpoint, path, disk.disk_id,
             to_gen, from_gen)
    return {"node": target.endpoint, "disk": replace(disk, draining=True).to_wire(), "state": "draining",
            "generation": to_gen, "from_generation": from_gen, "migration": {"state": job.get("state")},
            "tolerates": tolerance}


async def _settled(node: Any, draining: bool) -> bool:
    """On the leader, with no migration running or paused: whether the migration to the
    current generation is done. With ``draining`` (something drains), one that never started
    (its proposer died between committing the generation and starting it) is started now."""
    from buckets.cluster.migration import start_migration

    snapshot = node.control.snapshot
    topology = snapshot.topology
    record = snapshot.jobs.get(JOB_KEY)
    job = record.value if record is not None and isinstance(record.value, dict) else None
    if job is not None and job.get("state") in ("running", "paused"):
        return False
    if draining and (job is None or job.get("to_gen", 0) < topology.generation):
        await start_migration(node, job.get("to_gen", topology.generation - 1) if job else topology.generation - 1,
                              topology.generation)
        return False
    return True


UNSTARTED_GRACE = 5.0  # seconds a committed generation may go without its migration job (its proposer's next commit)


async def start_missed_migration(node: Any, *, grace: float = UNSTARTED_GRACE) -> dict | None:
    """On the leader: the migration of a generation that was committed but never got one. An
    add-node, add-disk, remove-node or remove-disk commits its generation, then starts that
    generation's migration: two control-plane commits. A proposer that stopped between them
    (its leader died, it lost its majority, a restart) left the new generation without a job:
    the added disks would only ever get new writes, the bucket indexes would stay on the old
    replica sets, and `cluster migration` would still say the previous one is done. Once such
    a generation was committed ``grace`` seconds ago (its ``created``; the proposer's own start
    comes within milliseconds, and a start from both is one job), it is started here. The job
    started, or None."""
    from buckets.cluster.migration import ACTIVE_STATES, start_migration

    if leading(node.control) is None:
        return None
    snapshot = node.control.snapshot
    topology = snapshot.topology
    record = snapshot.jobs.get(JOB_KEY)
    job = record.value if record is not None and isinstance(record.value, dict) else None
    if job is not None and (job.get("state") in ACTIVE_STATES or job.get("to_gen", 0) >= topology.generation):
        return None
    if job is None and topology.generation <= 1:
        return None  # a cluster's first generation has nothing to migrate from
    if time.time() - topology.current.created < grace:
        return None
    from_gen = job["to_gen"] if job is not None and isinstance(job.get("to_gen"), int) else topology.generation - 1
    started = await start_migration(node, from_gen, topology.generation)
    log.warning("generation %d was committed without its migration (its proposer stopped between the two "
                "commits): the migration from generation %d is started now", topology.generation, from_gen)
    return started


def leading(control: Any) -> Any:
    """The control plane's status if this node leads with a majority, else None."""
    status = control.status()
    return status if status.role == "leader" and status.has_quorum and control.snapshot.topology else None


async def finish_disk_removals(node: Any) -> None:
    """On the leader, once the migration off draining disks is done: a generation without
    them (the table does not change: they were not placed), and its (empty) migration."""
    if leading(node.control) is None:
        return
    topology = node.control.snapshot.topology
    if not any(d.draining for n in topology.nodes for d in n.disks) or not await _settled(node, True):
        return
    dropped = [f"{n.endpoint}{d.path}" for n in topology.nodes for d in n.disks if d.draining]
    nodes = [replace(n, disks=tuple(d for d in n.disks if not d.draining)) for n in topology.nodes]
    to_gen, _ = await _commit(node, nodes, topology.generation)
    log.info("disks drained and removed from the cluster: %s (generation %d)", ", ".join(dropped), to_gen)


async def finish_removals(node: Any) -> None:
    """On the control plane's leader: a DRAINING node whose migration is done becomes REMOVED
    (while it is still a Raft member, so it learns it), then leaves Raft. A leader that is
    itself the node leaving hands its leadership over first."""
    control = node.control
    status = leading(control)
    if status is None:
        return
    topology = control.snapshot.topology
    draining = [n for n in topology.nodes if n.state == DRAINING]
    members = {m.address for m in status.members}
    gone = [n for n in topology.nodes if n.state == REMOVED and n.control_address in members]
    if not draining and not gone:
        return
    if not await _settled(node, bool(draining)):
        return
    for n in draining:
        await control.apply("set_node_state", node_id=n.node_id, state=REMOVED, timeout=10.0)
        log.info("node %s drained: removed from the cluster", n.endpoint)
        gone.append(replace(n, state=REMOVED))
    for n in gone:
        if n.control_address == control.config.address:
            await control.transfer_leadership()
            return
        if await control.remove_member(n.control_address, timeout=30.0):
            log.info("node %s left the control plane", n.endpoint)


def describe_nodes(node: Any) -> dict:
    """Every node of the topology with its state, disks, whether it answers, and the
    migration in progress (``cluster/nodes``)."""
    control = node.control
    snapshot = control.snapshot
    topology = snapshot.topology
    status = control.status()
    members = {m.address: m for m in status.members}
    current = topology.current
    placed_disks = {d[0] for d in current.disks}
    table = topology.partition_table()
    slots: dict[str, int] = {}
    for row in table.rows:
        for disk_id in row:
            slots[disk_id] = slots.get(disk_id, 0) + 1
    out = []
    for n in topology.nodes:
        me = n.endpoint == node.spec.me.url
        client = node.clients.get(n.endpoint)
        member = members.get(n.control_address)
        online = True if me else (client is not None and client.state.value == "online")
        disks = []
        for d in n.disks:
            disk = node.disk_by_id(d.disk_id)
            disks.append({"id": d.disk_id, "path": d.path, "endpoint": f"{n.endpoint}{d.path}",
                          "online": bool(disk is not None and disk.online) if not me or disk is not None else False,
                          "placed": d.disk_id in placed_disks, "slots": slots.get(d.disk_id, 0),
                          "weight": d.weight, "draining": d.draining})
        out.append({"endpoint": n.endpoint, "node_id": n.node_id, "state": n.state, "self": me,
                    "online": online, "control_address": n.control_address,
                    "raft_member": member is not None, "leader": member is not None and member.leader,
                    "disks": disks, "slots": sum(d["slots"] for d in disks),
                    "level": node.levels.level(n.endpoint) if node.levels is not None and n.state != REMOVED
                    else None})
    record = snapshot.jobs.get(JOB_KEY)
    job = record.value if record is not None and isinstance(record.value, dict) else None
    return {"deployment_id": topology.deployment_id, "generation": topology.generation,
            "layout": topology.layout.to_wire(), "level": snapshot.level, "nodes": out,
            "queued": queued_changes(snapshot),
            "migration": None if job is None else {k: job.get(k) for k in (
                "state", "from_gen", "to_gen", "moved_objects", "moved_bytes", "errors")}}
