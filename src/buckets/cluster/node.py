"""``ClusterNode``: the composition root of one node of a cluster.

Started by ``buckets server`` when the disk arguments are URLs naming several nodes. In order:

1. ``ClusterNode.create``: the cluster spec (which node is this one), the cluster secret, one
   ``PeerClient`` per peer, a ``LocalDisk`` per own path and a ``RemoteDisk`` per peer path (in
   the command line's order: that order is the slot order, the same on every node), and the
   peer RPC server with the disk service, so peers can reach this node's disks before anything
   else is ready (the server listens with only the peer routes while the store opens).
2. ``open_store``: wait until every peer answers with the same endpoint list (a node started
   with another list, or another secret, is refused with one line), then open the store. Only
   the first node of the list formats a new deployment; the others wait for its format. Then
   the control plane (Raft over every node) starts and is initialised with the topology
   (generation 1, its partition table), and the store uses that table and the cluster catalog:
   buckets and users in the control plane, object entries in the replicated index whose
   replicas are, for each bucket, the first 3 distinct nodes of the bucket's partition row.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from buckets import errors
from buckets.cluster.catalog import ClusterCatalog, ClusterUserTable, index_bucket
from buckets.cluster.control import ControlConfig, ControlPlane, control_address, control_directory
from buckets.cluster.control_state import DiskRecord, Layout, NodeRecord
from buckets.cluster.index import IndexReplica, ReplicatedIndex
from buckets.cluster.rpcauth import PeerVerifier, ReplayCache, cluster_secret
from buckets.cluster.rpcclient import PeerClient
from buckets.cluster.rpcserver import PeerRpcServer
from buckets.cluster.topology import ClusterSpec, NodeSpec, cluster_spec
from buckets.placement import PartitionTable
from buckets.storage import LocalDisk
from buckets.storage.disk import Disk

log = logging.getLogger("buckets.cluster")

INDEX_REPLICAS = 3
# How long a node waits for its peers (and the first node's format) before giving up.
FORMATION_TIMEOUT = 120.0


class ClusterStartError(Exception):
    """The cluster cannot form as configured (one line for the operator)."""


def node_id_of(node: NodeSpec) -> str:
    """A node's id in the topology: its URL, stable across restarts with the same command line."""
    return node.url


@dataclass
class ClusterNode:
    spec: ClusterSpec
    secret: bytes
    clients: dict[str, PeerClient]
    disks: list[Disk]
    disk_nodes: list[str]
    rpc: PeerRpcServer
    config: Any
    control: ControlPlane | None = None
    index: ReplicatedIndex | None = None
    table: PartitionTable | None = None
    _replicas: dict[str, list[str]] = field(default_factory=dict)

    # -- 1. wiring ------------------------------------------------------------------------
    @classmethod
    def create(cls, config: Any) -> "ClusterNode":
        from buckets.cli.ellipsis import this_host_names
        from buckets.cluster.diskservice import DiskService
        from buckets.cluster.remotedisk import RemoteDisk

        try:
            spec = cluster_spec(config.endpoints, config.host, config.port, this_host_names(config.host))
        except ValueError as exc:
            raise ClusterStartError(str(exc)) from None
        secret = cluster_secret(config.cluster_secret, config.root_user, config.root_password)
        clients = {peer.url: PeerClient(peer.url, secret) for peer in spec.peers}
        disks: list[Disk] = []
        disk_nodes: list[str] = []
        local: dict[str, LocalDisk] = {}
        for node in spec.nodes:
            for path in node.paths:
                if node is spec.me:
                    disk: Disk = LocalDisk(path)
                    local[path] = disk  # type: ignore[assignment]
                else:
                    disk = RemoteDisk(clients[node.url], path, node.disk_endpoint(path))
                disks.append(disk)
                disk_nodes.append(node_id_of(node))
        rpc = PeerRpcServer(PeerVerifier(secret, replay=ReplayCache()))
        self = cls(spec, secret, clients, disks, disk_nodes, rpc, config)
        DiskService(local).register(rpc)
        rpc.register("node", "hello", self._hello)
        return self

    async def _hello(self, args: dict) -> dict:
        return {"url": self.spec.me.url, "fingerprint": self.spec.fingerprint()}

    # -- 2. forming the cluster ------------------------------------------------------------
    async def wait_for_peers(self, timeout: float = FORMATION_TIMEOUT) -> None:
        """Every peer answers ``hello`` with the same endpoint list; refuse a mismatch at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = dict(self.clients)
        last: dict[str, str] = {}
        while pending:
            for url, client in list(pending.items()):
                try:
                    ans = await client.call("node", "hello", {}, timeout=2.0)
                except errors.BucketsError as exc:
                    if "403" in str(exc) or type(exc).__name__ in ("PeerAuthRefused", "AccessDenied"):
                        raise ClusterStartError(f"{url} refused this node's signature: the nodes were "
                                                f"started with different cluster secrets") from None
                    last[url] = str(exc)
                    continue
                if ans.get("fingerprint") != self.spec.fingerprint():
                    raise ClusterStartError(f"{url} was started with a different endpoint list; start every "
                                            f"node with the same list, in the same order")
                del pending[url]
            if not pending:
                return
            if loop.time() >= deadline:
                waiting = ", ".join(f"{u} ({last.get(u, 'no answer')})" for u in pending)
                raise ClusterStartError(f"peers did not answer within {timeout:g}s: {waiting}")
            await asyncio.sleep(0.5)

    async def open_store(self, **store_kwargs: Any):
        from buckets.engine.bootstrap import NotFormatted
        from buckets.engine.store import ClusterParts, Store

        await self.wait_for_peers()
        parts = ClusterParts(disk_nodes=self.disk_nodes, may_format=self.spec.self_index == 0,
                             table=self._start_control, catalog=self._catalog, users=self._users)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FORMATION_TIMEOUT
        while True:
            try:
                store = await Store.open_disks(self.disks, cluster=parts, **store_kwargs)
                break
            except NotFormatted:
                if loop.time() >= deadline:
                    raise ClusterStartError(f"no disk was formatted within {FORMATION_TIMEOUT:g}s: is "
                                            f"{self.spec.nodes[0].url} (the first node) running?") from None
                await asyncio.sleep(0.5)
                self.disks = [self._fresh(d) for d in self.disks]  # the failed open closed them
        assert self.index is not None
        for method, fn in self.index.local.handlers().items():
            self.rpc.register("index", method, fn)
        return store

    def _fresh(self, disk: Disk) -> Disk:
        from buckets.cluster.remotedisk import RemoteDisk

        if isinstance(disk, LocalDisk):
            return LocalDisk(disk.root)
        assert isinstance(disk, RemoteDisk)
        return RemoteDisk(disk.client, disk.path, disk.endpoint)

    async def _start_control(self, store: Any, boot: Any) -> PartitionTable:
        """Start Raft, initialise the topology (every node proposes the same; one wins) and
        return generation 1's partition table."""
        me = self.spec.me
        first_local = next(d for d in self.disks if isinstance(d, LocalDisk))
        members = tuple(control_address(n.url) for n in self.spec.nodes)
        self.control = ControlPlane(ControlConfig(
            address=control_address(me.url), members=members, secret=self.secret,
            directory=control_directory(first_local.root)))
        await self.control.start()
        records = []
        slot = 0
        for node in self.spec.nodes:
            disks = []
            for path in node.paths:
                disks.append(DiskRecord(boot.disk_ids[slot], path))
                slot += 1
            records.append(NodeRecord(node_id_of(node), node.url, control_address(node.url), "active",
                                      tuple(disks)))
        layout = Layout(boot.k, boot.m, boot.block_size, boot.partitions)
        deadline = asyncio.get_running_loop().time() + FORMATION_TIMEOUT
        while True:
            try:
                await self.control.bootstrap(boot.deployment_id, layout, records)
                break
            except errors.BucketsError as exc:
                if getattr(exc, "status", 0) != 503 or asyncio.get_running_loop().time() >= deadline:
                    raise
                log.info("waiting for a control-plane majority: %s", exc)
        topology = self.control.snapshot.topology
        assert topology is not None
        if topology.deployment_id != boot.deployment_id:
            raise ClusterStartError(f"the control plane belongs to deployment {topology.deployment_id}, "
                                    f"the disks to {boot.deployment_id}")
        self.table = topology.partition_table()
        return self.table

    def replicas_of(self, bucket: str) -> list[str]:
        """The index replicas of a bucket: the first 3 distinct nodes of its partition's row."""
        bucket = index_bucket(bucket)
        nodes = self._replicas.get(bucket)
        if nodes is None:
            assert self.table is not None
            _, row = self.table.locate(bucket, "")
            nodes = []
            for disk_id in row:
                node = self._node_of_disk[disk_id]
                if node not in nodes:
                    nodes.append(node)
                if len(nodes) == INDEX_REPLICAS:
                    break
            self._replicas[bucket] = nodes
        return nodes

    def _catalog(self, store: Any) -> ClusterCatalog:
        assert self.control is not None
        self._node_of_disk = {d.disk_id: n for d, n in zip(self.disks, self.disk_nodes)}
        self.index = ReplicatedIndex(node_id_of(self.spec.me), IndexReplica(store.registry), self._transport,
                                     self.replicas_of)
        return ClusterCatalog(self.control, self.index)

    def _users(self, store: Any) -> ClusterUserTable:
        assert self.control is not None
        return ClusterUserTable(self.control)

    async def _transport(self, node: str, method: str, args: dict) -> Any:
        return await self.clients[node].call("index", method, args)

    async def close(self) -> None:
        if self.index is not None:
            await self.index.close()
        if self.control is not None:
            await self.control.close()
        for client in self.clients.values():
            await client.close()
