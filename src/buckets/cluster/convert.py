"""A single node becomes a cluster of one, so that ``buckets-admin cluster add-node`` grows it.

``buckets server /data{1...4}`` (plain paths) runs without a control plane: its buckets, users,
objects and multipart uploads live in its own LMDB registry. A cluster node keeps buckets and
users in the Raft control plane and object entries in the replicated index, whose replica on
each node is that node's own LMDB registry, with the same keys. So the conversion moves
little:

* object entries stay where they are: this node's registry *is* the only index replica of
  every bucket (an entry without an index version compares by its mtime, see
  ``buckets.registry.store.entry_version``), and the shard files do not move;
* the control plane is started with this node as its only member and initialised with the
  deployment's layout and this node's disks (generation 1); its partition table is the one
  the single node placed with (the same disk ids in the same order give the same rows, which
  is checked);
* buckets (with their creation times) and users (secrets stay sealed under the same key) are
  imported into it;
* multipart uploads in progress are copied into each bucket's uploads shadow bucket, the form
  the cluster catalog reads;
* last, the membership file is written beside the Raft journal. It is the commit point: the
  next start of ``buckets server`` with the same plain paths finds it and starts a cluster
  node (``membership_config``), whatever the command line says, as every member does.

A conversion cut short (a crash) before the membership file leaves the single node as it was
(the control plane's journal is ignored without the file, and is replayed by the next attempt,
which imports again idempotently). The node's URL is the one peers reach it at: ``--address``'s
host when it names one, else the host the operator's ``buckets-admin`` reached.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any

from buckets import errors
from buckets.cluster import membership
from buckets.cluster.control import ControlConfig, ControlPlane, control_address, control_directory
from buckets.cluster.control_records import ACTIVE, DiskRecord, Layout, NodeRecord, TopologyRecord
from buckets.cluster.index import HybridClock
from buckets.registry import Op
from buckets.registry.store import POLICY_PREFIX

log = logging.getLogger("buckets.cluster.convert")

MEMBER_MARK = "cluster_member"  # in the registry's system table: this node became a cluster member
UPLOADS = "\x01uploads"  # the cluster catalog's shadow bucket suffix (buckets.cluster.catalog)
# Import errors that mean "already imported": a retried conversion finds its own records.
_ALREADY = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


def node_url(config: Any, request_host: str | None) -> str:
    """The URL peers will reach this node at: ``--address``'s host, or the host (and this
    node's port) that the operator's admin request was addressed to."""
    host = config.host
    if not host or host in ("0.0.0.0", "::"):
        name = (request_host or "").rsplit(":", 1)[0] if request_host and not request_host.endswith("]") \
            else (request_host or "")
        host = name.strip("[]")
    if not host:
        raise errors.InvalidArgument("this node listens on every address and the request named no host: "
                                     "start it with --address HOST:PORT")
    return f"http://{host}:{config.port}"


async def become_cluster_of_one(store: Any, url: str, secret: bytes) -> TopologyRecord:
    """Convert the open single-node ``store`` (see the module docstring). Blocking parts run
    off the loop; S3 requests are still being served meanwhile, so the caller restarts the
    node right after (it then serves as a cluster node)."""
    if getattr(store, "cluster", None) is not None:
        raise errors.InvalidArgument("this node is a cluster node already")
    local = store.disks
    if not local or any(not hasattr(d, "root") for d in local):
        raise errors.InvalidArgument("a single node converts only over its own local disks")
    offline = [d.endpoint for d in local if not d.online]
    if offline:
        raise errors.ServiceUnavailable(f"disks offline ({', '.join(offline)}): bring every disk back (or "
                                        f"replace it and let it refill) before this node becomes a cluster")
    try:
        address = control_address(url)
    except ValueError as exc:
        raise errors.InvalidArgument(str(exc)) from None
    first_root = local[0].root
    record = NodeRecord(url, url, address, ACTIVE, tuple(DiskRecord(d.disk_id, d.root) for d in local))
    layout = Layout(store.k, store.m, store.block_size, store.boot.partitions)
    control = ControlPlane(ControlConfig(address=address, members=(address,), secret=secret,
                                         directory=control_directory(first_root)))
    try:
        await control.start()
    except Exception as exc:  # noqa: BLE001 - a port taken, a directory not writable: the operator's to fix
        raise errors.ServiceUnavailable(f"cannot start the control plane on {address}: {exc}") from None
    try:
        await control.wait_leader(timeout=30.0)
        await control.bootstrap(store.deployment_id, layout, [record], timeout=30.0)
        topology = control.snapshot.topology
        assert topology is not None
        if topology.deployment_id != store.deployment_id:
            raise errors.InvalidArgument(f"{control_directory(first_root)} holds the control plane of deployment "
                                         f"{topology.deployment_id}, not {store.deployment_id}")
        if topology.partition_table().rows != store.table.rows:
            raise errors.InternalError("the cluster's partition table would differ from this node's")
        counts = await _import(store, control)
        await store.registry.commit([Op("put_sys", MEMBER_MARK, value=url)])
        # The commit point: from here on this node starts as a cluster member.
        membership.write_members(first_root, topology)
        await _drop_local_uploads(store)
        log.info("this node is now a cluster of one at %s (deployment %s): imported %d buckets, %d users, "
                 "%d multipart uploads; restarting as a cluster node", url, store.deployment_id,
                 counts["buckets"], counts["users"], counts["uploads"])
        return topology
    finally:
        await control.close()


async def _import(store: Any, control: ControlPlane) -> dict[str, int]:
    registry = store.registry
    counts = {"buckets": 0, "users": 0, "uploads": 0}
    for name, rec in registry.list_buckets():
        settings = {k: v for k, v in rec.items() if k not in ("created", "owner")}
        try:
            await control.apply("create_bucket", timeout=30.0, name=name, owner=rec.get("owner", ""),
                                settings=settings, created=rec.get("created"))
        except errors.BucketsError as exc:
            if exc.code not in _ALREADY:
                raise
        counts["buckets"] += 1
    for access_key, user in registry.list_users():
        await control.apply("put_user", timeout=30.0, access_key=access_key, secret=user["secret"],
                            status="enabled" if user.get("enabled", True) else "disabled",
                            policy=user.get("policy", "readwrite"), created=user.get("created"))
        counts["users"] += 1
    for name, policy in registry.list_policies():
        await control.apply("set_settings", timeout=30.0, set={POLICY_PREFIX + name: policy})
    clock = HybridClock()
    for name, _ in registry.list_buckets():
        ops = []
        for upload in registry.list_uploads(name):
            uid = upload["uid"]
            head = {k: v for k, v in upload.items() if k != "parts"}
            entry = dict(head, wid=uid, mt=upload.get("init", time.time()), parts={})
            ops.append(Op("merge_object", name + UPLOADS, uid, value=dict(entry, ts=[clock.now(), uid]),
                          ts=(clock.now(), uid)))
            for number, part in (upload.get("parts") or {}).items():
                key = f"{uid}/{int(number):05d}"
                value = {"wid": part[0], "mt": part[4], "n": int(number), "part": part, "size": part[1],
                         "etag": part[2]}
                version = clock.now()
                ops.append(Op("merge_object", name + UPLOADS, key, value=dict(value, ts=[version, part[0]]),
                              ts=(version, part[0])))
            counts["uploads"] += 1
        for start in range(0, len(ops), 256):
            await registry.commit(ops[start:start + 256])
    # Noncurrent versions of versioned buckets: one record each in the bucket's versions shadow
    # (the current versions are the objects' own entries, which need no import).
    from buckets.cluster.catalog import VERSIONS, version_record

    pos: bytes | None = b""
    while pos is not None:
        page, pos = registry.walk_noncurrent(pos)
        ops = []
        for bucket, key, entry in page:
            version = clock.now()
            ops.append(Op("merge_object", bucket + VERSIONS, version_record(key, entry),
                          value=dict(entry, ts=[version, entry["wid"]]), ts=(version, entry["wid"])))
        if ops:
            await registry.commit(ops)
        counts["versions"] = counts.get("versions", 0) + len(ops)
    return counts


async def _drop_local_uploads(store: Any) -> None:
    """The single node's upload records, now copied: the cluster catalog never reads them."""
    registry = store.registry
    for name, _ in registry.list_buckets():
        ops = [Op("delete_upload", name, u["uid"]) for u in registry.list_uploads(name)]
        for start in range(0, len(ops), 256):
            await registry.commit(ops[start:start + 256])


def membership_config(config: Any) -> Any:
    """For ``buckets server`` with plain paths: the same settings as a cluster node if these
    disks' membership file says this node was converted (or else ``config`` unchanged)."""
    if config.is_cluster or not config.endpoints:
        return config
    if not os.path.isfile(membership.members_path(config.disk_paths[0])):
        # Never converted, or the first disk is unusable (missing, not a directory): a single
        # node opens its disks as always (a converted node's registry says it is a member,
        # and ``check_not_member`` refuses that start).
        return config
    known = membership.read_members(config.disk_paths[0])
    if known is None:
        return config
    paths = [os.path.abspath(p) for p in config.disk_paths]
    mine = next((n for n in known["nodes"] if [d.path for d in n.disks] == paths), None)
    if mine is None:
        raise errors.FormatError(f"{config.disk_paths[0]} belongs to cluster {known['deployment_id']}, but no "
                                 f"node of it has exactly the disks {' '.join(paths)}: start this node with "
                                 f"the disks it was converted with")
    from buckets.cli.ellipsis import parse_endpoints

    port = int(mine.endpoint.rsplit(":", 1)[1])
    if port != config.port:
        raise errors.FormatError(f"this node was converted as {mine.endpoint}: start it on port {port}, "
                                 f"not {config.port}")
    endpoints = parse_endpoints([mine.endpoint + p for p in paths], server_port=port,
                                address_host=config.host)
    return replace(config, endpoints=endpoints)


def check_not_member(store: Any) -> None:
    """A single node's start over a registry that says the node became a cluster member: its
    membership file (on the first disk) is missing or unreadable, and serving as a single
    node would fork the deployment. Refused with what to do."""
    url = store.registry.get_sys(MEMBER_MARK)
    if url and store.cluster is None:
        raise errors.FormatError(f"this node became a cluster member ({url}), but its membership file "
                                 f"{membership.members_path(store.disks[0].root)} is missing or its first disk is "
                                 f"unusable: restore that disk (it holds the control plane too)")
