"""``ClusterNode``: the composition root of one node of a cluster.

Started by ``buckets server`` when the disk arguments are URLs naming several nodes. In order:

1. ``ClusterNode.create``: the cluster spec (which node is this one), the cluster secret, one
   ``PeerClient`` per peer, a ``LocalDisk`` per own path and a ``RemoteDisk`` per peer path (in
   the command line's order: that order is the slot order, the same on every node), and the
   peer RPC server with every service this node serves (disks, index, ``node/hello`` and
   ``node/info``), so peers can reach this node's disks before anything else is ready (the
   server listens with only the peer routes while the store opens). Until the store is open
   (and again once the node stops) the index methods answer ``PeerNotReady``: the caller
   counts this replica as unavailable, exactly as for a node that is down.
2. ``open_store``: wait until the peers answer with the same endpoint list (a node started
   with another list, or another secret, is refused with one line): every peer for a new
   cluster, a majority of the nodes on a restart (this node's disks already carry a format),
   so a node can restart while another is down. Then open the store. Only the first node of
   the list formats a new deployment; the others wait for its format. Then the control plane
   (Raft over every node) starts and is initialised with the topology (generation 1, its
   partition table), and the store uses that table and the cluster catalog: buckets and users
   in the control plane, object entries in the replicated index whose replicas are, for each
   bucket, the first 3 distinct nodes of the bucket's partition row.
3. ``stop`` (before the store closes): the background tasks that use the store (anti-entropy,
   read repairs) end and the index service stops answering; ``close`` (after the store closed)
   releases the control plane, the peer clients and the served disks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from buckets import errors
from buckets.cluster.catalog import (
    SETTLE_ASK, SETTLE_SECONDS, SHADOWS, ClusterCatalog, ClusterUserTable, IndexPlacer, applied_waiter,
    index_bucket,
)
from buckets.cluster.clocks import ClockWatch
from buckets.cluster.slowlink import SlowLinkWatch
from buckets.cluster.control import ControlConfig, ControlPlane, control_address, control_directory
from buckets.cluster.control_records import (
    BASE_LEVEL, CONTROL_LEVEL, REMOVED, DiskRecord, Layout, NodeRecord, TopologyRecord,
)
from buckets.cluster.levels import LevelTooNew, LevelWatch, check_level
from buckets.cluster.index import TOMBSTONE_TTL, IndexReplica, ReplicatedIndex, tombstone_sweep_interval
from buckets.cluster import membership, slowlink
from buckets.cluster.rpcauth import PeerVerifier, ReplayCache, cluster_secret
from buckets.cluster.rpcclient import PeerClient, PeerState, close_shared_session
from buckets.cluster.rpcerrors import PeerOffline, clock_cause, refused_signature
from buckets.cluster.rpcserver import PeerNotReady, PeerRpcServer, register_node_info
from buckets.cluster.topology import ClusterSpec, NodeSpec, cluster_spec
from buckets.cli.output import human_duration
from buckets.engine import smalllog
from buckets.placement import PartitionTable
from buckets.runtime import cancel_and_wait
from buckets.storage import LocalDisk, pace
from buckets.storage.disk import Disk

log = logging.getLogger("buckets.cluster")

INDEX_REPLICAS = 3
INDEX_DROPS_INTERVAL = 2.0  # seconds between looks for deleted buckets' index left to drop here
ANTI_ENTROPY_INTERVAL = 60.0  # seconds between passes (each compares 64 digests per bucket first)
# How long a node waits for its peers (and the first node's format) before giving up.
FORMATION_TIMEOUT = 120.0
# On a restart, once a majority of the nodes answers, how much longer the others are waited
# for (a whole cluster restarting comes up within a few seconds); after that they are left to
# the probes and their disks count as offline until they answer.
RESTART_GRACE = 5.0
PEER_DISKS_INTERVAL = 0.5  # how often a node looks for peers that came back (see _disks_follow_peers)
# How often a node looks at the control plane for a new topology (and, on the leader, for a
# drained node to remove); the snapshot is a local reference, so a look costs nothing.
FOLLOW_INTERVAL = 0.2
# The index replica's peer methods, registered before the store (and the replica) exists.
INDEX_METHODS = tuple(IndexReplica.__new__(IndexReplica).handlers())


class ClusterStartError(Exception):
    """The cluster cannot form as configured (one line for the operator)."""


def node_id_of(node: NodeSpec) -> str:
    """A node's id in the topology: its URL, stable across restarts with the same command line."""
    return node.url


def layout_line(layout: dict) -> str:
    """``12+4, each object on 16 of the 16 disks`` (``layout_status``'s layout)."""
    return f"{layout['k']}+{layout['m']}, each object on {layout['set_size']} of the {layout['disks']} disks"


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
    _served: list = field(default_factory=list)
    disk_service: Any = None  # serves this node's disks to its peers (a disk added is served at once)
    _entropy: asyncio.Task | None = None
    _peer_disks: asyncio.Task | None = None  # probes a peer's disks as soon as the peer is back
    _drops: asyncio.Task | None = None  # drops deleted buckets' index this node missed (INDEX_DROP)
    _store: Any = None  # set once the store is open and the node serves; None again once it stops
    _stopping: bool = False
    _replicas: dict[str, list[str]] = field(default_factory=dict)
    placer: IndexPlacer | None = None  # each bucket's index replicas, once the catalog exists
    # Membership (``buckets.cluster.membership``): the nodes this node knew at its last run
    # (its membership file; None for a node that was never a member), the seed of --join.
    known: dict | None = None
    join: str | None = None
    join_info: dict | None = None
    deployment_id: str | None = None
    topology: TopologyRecord | None = None  # the one this node applied last
    removed: bool = False  # this node was removed from the cluster: S3 answers 503
    migration: Any = None  # the migration coordinator (``buckets.cluster.migration``), once started
    _node_of_disk: dict[str, str] = field(default_factory=dict)
    _follow: asyncio.Task | None = None
    clocks: ClockWatch = field(default_factory=ClockWatch)  # the peers' clock offsets (``buckets.cluster.clocks``)
    _clock_watch: asyncio.Task | None = None
    slow_link: SlowLinkWatch = field(default_factory=lambda: SlowLinkWatch(""))  # (``cluster/slowlink.py``)
    _slow_watch: asyncio.Task | None = None
    _peer_lagging: dict = field(default_factory=dict)  # (peer client, disk path) -> when it said that disk lags
    _lagging_said: set = field(default_factory=set)  # this node's disks logged as lagging
    _tolerates: tuple | None = None  # (table, members, node failures tolerated, disks placed): ``layout_status``
    levels: LevelWatch | None = None  # the control level each member runs (``buckets.cluster.levels``)
    _level_watch: asyncio.Task | None = None
    tombstone_ttl: float = TOMBSTONE_TTL  # (the setting ``tombstone_retention``)
    _tomb_sweeps: asyncio.Task | None = None

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
        try:
            known = membership.read_members(spec.me.paths[0])
        except errors.FormatError as exc:
            raise ClusterStartError(str(exc)) from None
        join = getattr(config, "join", None)
        if known is not None:
            me = next((n for n in known["nodes"] if n.endpoint == spec.me.url), None)
            if me is not None and me.state == REMOVED:
                raise ClusterStartError(f"{spec.me.url} was removed from the cluster (deployment "
                                        f"{known['deployment_id']}); to add it back, wipe its disks and start "
                                        f"it with --join")
            join = None  # a member restarts from its membership file, whatever the command line says
        elif join is not None:
            if join.rstrip("/") == spec.me.url:
                raise ClusterStartError("--join names this node itself: name a node of the running cluster")
        clients = {peer.url: PeerClient(peer.url, secret) for peer in spec.peers}
        if known is not None:
            # The peers are the control plane's nodes as last applied here (a removed node's
            # disks stay reachable while an object may still name them).
            for n in known["nodes"]:
                if n.endpoint != spec.me.url and n.endpoint not in clients:
                    clients[n.endpoint] = PeerClient(n.endpoint, secret)
        elif join is not None:
            clients[join] = PeerClient(join, secret)
        disks: list[Disk] = []
        disk_nodes: list[str] = []
        local: dict[str, LocalDisk] = {}
        # A member restarting: its disks, its peers' and their ids are the control plane's, as
        # its membership file last recorded them (disks added or removed since included),
        # whatever the command line says; a node never placed yet starts from the command line.
        placed = known is not None and any(n.endpoint == spec.me.url for n in known["nodes"])
        layout = ([(n.endpoint, [(d.path, d.disk_id) for d in n.disks]) for n in known["nodes"]] if placed
                  else [(n.url, [(p, "") for p in n.paths]) for n in spec.nodes])
        for url, node_disks in layout:
            for path, disk_id in node_disks:
                if url == spec.me.url:
                    # The store owns (and closes) its disks; the disk service keeps its own
                    # handles on the same directories for as long as the node runs, which
                    # append to the record log through the store's (one appender per disk).
                    store_disk = LocalDisk(path, disk_id)
                    disk: Disk = store_disk
                    local[path] = store_disk.peer_handle()
                else:
                    disk = RemoteDisk(clients[url], path, f"{url}{path}", disk_id)
                disks.append(disk)
                disk_nodes.append(url)
        rpc = PeerRpcServer(PeerVerifier(secret, replay=ReplayCache()))
        self = cls(spec, secret, clients, disks, disk_nodes, rpc, config, known=known, join=join,
                   tombstone_ttl=getattr(config, "tombstone_retention", TOMBSTONE_TTL))
        self.levels = LevelWatch(node_id_of(spec.me))
        self.slow_link = SlowLinkWatch(spec.me.url, on_change=self._slow_link_changed, on_views=self._peer_disks_lag)
        if known is not None:
            self.deployment_id = known["deployment_id"]
        self._served = list(local.values())
        self.disk_service = DiskService(local)
        self.disk_service.register(rpc)
        rpc.register("cluster", "prepare_disk", self.prepare_disk)
        rpc.register("node", "hello", self._hello)
        rpc.register("node", "slow_view", self._slow_view)
        rpc.register("cluster", "join_info", self._join_info)
        rpc.register("cluster", "applied", self._applied)
        register_node_info(rpc, config, lambda: self._store, disks=len(disks))
        # Every service is registered up front: a peer that calls the index while this node
        # starts gets a typed, retryable "not ready", never "no peer method".
        for method in INDEX_METHODS:
            rpc.register("index", method, self._index_handler(method))
        return self

    def _index_handler(self, method: str):
        async def handle(args: dict) -> Any:
            store, index = self._store, self.index
            if store is None or index is None:
                state = "stopping" if self._stopping else "starting"
                raise PeerNotReady(f"{self.spec.me.url} is {state}: its index replica is not serving")
            return await index.local.handlers()[method](args)
        return handle

    async def _hello(self, args: dict) -> dict:
        own = [d for d in self.disks if isinstance(d, LocalDisk)]
        return {"url": self.spec.me.url, "fingerprint": self.spec.fingerprint(),
                "deployment": self.deployment_id or "",
                "disks": [{"id": d.disk_id, "path": d.root} for d in own] if self.deployment_id else [],
                "member": self.known is not None or self._store is not None, "level": CONTROL_LEVEL}

    async def _slow_view(self, args: dict) -> dict:
        """The nodes this one finds surely slow now, whether it is out itself
        (``cluster/slowlink.py``), and which of its disks lag its others (``storage/pace.py``)."""
        store = self._store
        return {"slow": store.slow_sources.surely_names() if store is not None else [], "out": self.slow_link.out,
                "slow_disks": self._own_disks_lagging()}

    def _own_disks_lagging(self) -> list[str]:
        """This node's disks that lag its other disks (their paths, as its peers name them);
        said in the log when one starts or stops lagging."""
        served = self.disk_service.disks if self.disk_service is not None else {}
        slow = set(pace.lagging(served.values(), [d for p, d in served.items() if p in self._lagging_said]))
        # one said to lag stays so until its calls show otherwise: its peers now go around it,
        # so its average may go stale for want of calls, which proves nothing
        slow |= {d for p, d in served.items() if p in self._lagging_said and d.online and d.pace.current() is None}
        paths = sorted(path for path, disk in served.items() if disk in slow)
        for path in sorted(set(paths) - self._lagging_said):
            disk = served[path]
            typical = sorted(d.pace.share for d in served.values() if d is not disk)
            log.warning("disk %s lags this node's other disks (%.0f%% of its calls lately took over %.0f ms, of "
                        "theirs %.0f%%): the other nodes read and write around it alone (a disk retrying or "
                        "failing: see docs/operations.md)", path, disk.pace.share * 100, pace.SLOW_CALL * 1000,
                        typical[len(typical) // 2] * 100 if typical else 0.0)
        for path in sorted(self._lagging_said - set(paths)):
            log.info("disk %s no longer lags this node's other disks", path)
        self._lagging_said = set(paths)
        return paths

    def _peer_says_lagging(self, disk: Any) -> bool:
        """``disk``'s own node said, within the last ``pace.LINGER`` seconds, that it lags its
        others. (It stops saying so once the calls it still gets are quick, which they are while
        the others go around it: the lag the next trial meets is still that disk's.)"""
        said = self._peer_lagging.get((getattr(disk, "client", None), getattr(disk, "path", None)))
        return said is not None and time.monotonic() - said < pace.LINGER

    def _peer_disks_lag(self, views: dict[str, dict]) -> None:
        """A round of the peers' ``node/slow_view`` answers: the disks each says lag its others.
        A peer that names one it had not named lately is forgiven what lags were put on it as a
        whole meanwhile (they were that disk's: ``SlowSources.forgive``)."""
        now = time.monotonic()
        store = self._store
        for url, view in views.items():
            client, paths = self.clients.get(url), view.get("slow_disks")
            if client is None or not isinstance(paths, list):
                continue
            for path in paths:
                if not isinstance(path, str):
                    continue
                if not any(c is client and now - at < pace.LINGER for (c, _), at in self._peer_lagging.items()) \
                        and store is not None:
                    store.slow_sources.forgive(client)
                self._peer_lagging[(client, path)] = now
        for said in [said for said, at in self._peer_lagging.items() if now - at >= pace.LINGER]:
            del self._peer_lagging[said]

    async def _join_info(self, args: dict) -> dict:
        control = self.control
        if control is None or control.snapshot.topology is None or self._store is None:
            raise PeerNotReady(f"{self.spec.me.url} is starting: ask again shortly")
        return membership.join_info(control)

    async def _applied(self, args: dict) -> dict:
        """How many control-plane commands this node has applied (an index move waits until
        every live node has applied its phase change: ``catalog.applied_waiter``)."""
        control = self.control
        if control is None or self._store is None:
            raise PeerNotReady(f"{self.spec.me.url} is starting: ask again shortly")
        return {"applied": control.snapshot.applied}

    async def _ask_applied(self, node_id: str) -> int:
        if node_id == node_id_of(self.spec.me):
            assert self.control is not None
            return self.control.snapshot.applied
        client = self.clients.get(node_id)
        if client is None:
            raise errors.ServiceUnavailable(f"no peer client for {node_id}")
        return int((await client.call("cluster", "applied", {}, timeout=5.0))["applied"])

    async def prepare_disk(self, args: dict) -> dict:
        """``cluster add-disk``, on the node that owns the path: format the directory (created
        if missing; it must be empty, or a disk of this deployment not placed yet: a retry) as a
        new disk of this deployment, serve it to the peers and give it to the store. The
        caller then commits a generation that names it. Returns its id."""
        import os

        from buckets.engine.bootstrap import read_disk_format
        from buckets.storage.format import DiskFormat, new_format, new_ids

        path = args.get("path")
        if not isinstance(path, str) or not path.startswith("/") or os.path.normpath(path) != path:
            raise errors.InvalidArgument(f"disk path {path!r}: name an absolute, normalized path")
        store = self._store
        topology = self.control.snapshot.topology if self.control is not None else None
        if store is None or topology is None:
            raise PeerNotReady(f"{self.spec.me.url} is starting: ask again shortly")
        mine = topology.node(self.spec.me.url)
        if mine is not None and any(d.path == path for d in mine.disks):
            raise errors.InvalidArgument(f"{path} is a disk of {self.spec.me.url} already")
        if any(os.path.realpath(path) == os.path.realpath(d.root) for d in self._served):
            raise errors.InvalidArgument(f"{path} is a disk of {self.spec.me.url} already")
        disk = LocalDisk(path)
        try:
            probe = await read_disk_format(disk)
        except errors.FormatError as exc:  # a foreign, non-empty directory: never taken over
            await disk.close()
            raise errors.InvalidArgument(f"{path} cannot be added: {exc}") from None
        if isinstance(probe, str):
            await disk.close()
            raise errors.InvalidArgument(f"{path} is unusable: {probe}")
        taken = {d.disk_id for n in topology.nodes for d in n.disks}
        if isinstance(probe, DiskFormat):
            if probe.deployment_id != topology.deployment_id:
                raise errors.InvalidArgument(f"{path} belongs to deployment {probe.deployment_id}: give an empty "
                                             f"directory")
            if probe.disk_id in taken:
                raise errors.InvalidArgument(f"{path} holds disk {probe.disk_id}, which the cluster has already")
            disk_id = probe.disk_id  # formatted by an add-disk that did not commit: the same disk
        else:
            _, (disk_id,) = new_ids(1)
            layout = topology.layout
            fmt = new_format(0, [disk_id], topology.deployment_id, layout.k, layout.m, layout.block_size,
                             layout.partitions)
            await disk.write_format(fmt.to_json(), create_root=True, sync=store.sync)
        disk.disk_id = disk_id
        if disk_id not in store.by_id:
            served = disk.peer_handle()
            self._served.append(served)
            self.disk_service.disks[path] = served
            store.disks.append(disk)
            store.by_id[disk_id] = disk
            self.disks.append(disk)
            self.disk_nodes.append(self.spec.me.url)
            log.info("disk %s formatted as disk %s of deployment %s: served, placed once its generation commits",
                     path, disk_id, topology.deployment_id)
        else:
            await disk.close()
        return {"id": disk_id, "path": path}

    def node_of_disk(self, disk_id: str) -> str | None:
        """The node id of a disk of the adopted topology (None: not one of them)."""
        return self._node_of_disk.get(disk_id)

    def disk_by_id(self, disk_id: str) -> Disk | None:
        store = self._store
        if store is not None:
            return store.by_id.get(disk_id)
        return next((d for d in self.disks if d.disk_id == disk_id), None)

    @property
    def member_urls(self) -> list[str]:
        """The nodes that count for a majority: the control plane's (not removed), or the
        command line's before this node ever applied a topology."""
        topology = self.topology
        if topology is None and self.known is not None:
            return [n.endpoint for n in self.known["nodes"] if n.state != REMOVED]
        if topology is None:
            return [n.url for n in self.spec.nodes]
        return [n.endpoint for n in topology.nodes if n.state != REMOVED]

    # -- 2. forming the cluster ------------------------------------------------------------
    def majority_peers(self) -> int:
        """How many peers must answer for this node to be part of a majority of the nodes
        (what the control plane and, with the index's 2 of 3, the write quorum need)."""
        return len(self.member_urls) // 2

    async def wait_for_peers(self, need: int | None = None, *, timeout: float = FORMATION_TIMEOUT,
                             grace: float = RESTART_GRACE) -> list[str]:
        """Until ``need`` peers (default: every one) answer ``hello`` with the same endpoint
        list; a mismatch is refused at once. Once ``need`` have answered, the others get
        ``grace`` seconds more, then are left to the health probes. Returns the peers that
        did not answer."""
        loop = asyncio.get_running_loop()
        members = set(self.member_urls)
        peers = {url: client for url, client in self.clients.items() if url in members}
        need = len(peers) if need is None else min(need, len(peers))
        deadline = loop.time() + timeout
        pending = dict(peers)
        last: dict[str, str] = {}
        enough_at: float | None = None

        async def hello(url: str, client: PeerClient) -> None:
            try:
                ans = await client.call("node", "hello", {}, timeout=2.0)
            except errors.BucketsError as exc:
                if refused_signature(exc):
                    cause = clock_cause(exc) or "the nodes were started with different cluster secrets"
                    raise ClusterStartError(f"{url} refused this node's signature: {cause}") from None
                last[url] = str(exc)
                return
            if self.known is not None:
                # A member restarting: its peers are the control plane's, whatever their command
                # lines; they must belong to the same deployment.
                if ans.get("deployment") and ans.get("deployment") != self.deployment_id:
                    raise ClusterStartError(f"{url} belongs to deployment {ans.get('deployment')}, this node "
                                            f"to {self.deployment_id}")
            elif ans.get("fingerprint") != self.spec.fingerprint():
                raise ClusterStartError(f"{url} was started with a different endpoint list; start every "
                                        f"node with the same list, in the same order")
            pending.pop(url, None)

        while pending:
            await asyncio.gather(*(hello(url, client) for url, client in list(pending.items())))
            if not pending:
                return []
            now = loop.time()
            if len(peers) - len(pending) >= need:
                enough_at = now if enough_at is None else enough_at
                if now - enough_at >= grace:
                    log.warning("starting with %d of %d nodes: %s did not answer (%s); their disks count "
                                "as offline until they do", len(peers) + 1 - len(pending),
                                len(peers) + 1, ", ".join(pending),
                                "; ".join(last.get(u, "no answer") for u in pending))
                    return list(pending)
            if now >= deadline:
                waiting = ", ".join(f"{u} ({last.get(u, 'no answer')})" for u in pending)
                raise ClusterStartError(f"{len(peers) - len(pending)} of {len(peers)} peers "
                                        f"answered within {timeout:g}s, {need} needed: {waiting}")
            await asyncio.sleep(0.5)
        return []

    async def _restarting(self) -> bool:
        """Whether this node's disks already belong to a deployment (a restart), as opposed to
        a new cluster forming. A foreign or unreadable format refuses the start (FormatError)."""
        from buckets.engine.bootstrap import read_disk_format
        from buckets.storage.format import DiskFormat

        own = [d for d in self.disks if isinstance(d, LocalDisk)]
        probes = await asyncio.gather(*(read_disk_format(d) for d in own))
        return any(isinstance(p, DiskFormat) for p in probes)

    async def open_store(self, **store_kwargs: Any):
        from buckets.engine.bootstrap import NotFormatted
        from buckets.engine.store import ClusterParts, Store

        # A new cluster needs every node: the first node formats every disk (a disk it cannot
        # reach would be left out of the deployment) and the layout follows every node's disk
        # count (placement.cluster_layout). A restart needs a majority only: the disks are formatted already, the control
        # plane commits with a majority, and a missing node's disks are offline until it answers.
        restart = await self._restarting()
        if self.join is not None:
            # A new node: not a member yet. It formats its own disks for the seed's deployment and
            # opens its store once `cluster add-node` placed it; meanwhile it serves its disks.
            await self._join()
            parts = ClusterParts(disk_nodes=self.disk_nodes, may_format=False,
                                 table=self._start_joined_control, catalog=self._catalog, users=self._users)
        elif self.known is not None:
            # A member restarting: peers, disks and Raft members come from the control plane
            # (its membership file); a majority of them must answer.
            await self.wait_for_peers(self.majority_peers())
            parts = ClusterParts(disk_nodes=self.disk_nodes, may_format=False,
                                 table=self._start_member_control, catalog=self._catalog, users=self._users,
                                 known_ids=all(d.disk_id for d in self.disks))
        else:
            await self.wait_for_peers(self.majority_peers() if restart else None)
            first = self.spec.self_index == 0
            if not first and not restart:
                await self._wait_formatted()
            parts = ClusterParts(disk_nodes=self.disk_nodes, may_format=first,
                                 table=self._start_control, catalog=self._catalog, users=self._users)
        try:
            store = await Store.open_disks(self.disks, cluster=parts, **store_kwargs)
        except NotFormatted:
            raise ClusterStartError(f"the disks lost their format while this node started: is "
                                    f"{self.spec.nodes[0].url} (the first node) formatting another cluster?") from None
        assert self.index is not None
        self._entropy = asyncio.get_running_loop().create_task(self._anti_entropy(store), name="anti-entropy")
        self._tomb_sweeps = asyncio.get_running_loop().create_task(self._sweep_tombstones(store),
                                                                   name="tombstone-sweeps")
        self._peer_disks = asyncio.get_running_loop().create_task(self._disks_follow_peers(store),
                                                                  name="peer-disks")
        store.cluster_node = self  # for /health/cluster and buckets-admin info
        store.slow_sources.says_lagging = self._peer_says_lagging
        self._store = store  # from here on the index service answers its peers
        self._follow = asyncio.get_running_loop().create_task(self._follow_topology(store), name="topology")
        self._drops = asyncio.get_running_loop().create_task(self._index_drops(store), name="index-drops")
        self._clock_watch = asyncio.get_running_loop().create_task(self.clocks.watch(self._clock_peers),
                                                                   name="clock-watch")
        self._slow_watch = asyncio.get_running_loop().create_task(self.slow_link.watch(self._view_peers),
                                                                  name="slow-link-watch")
        assert self.levels is not None and self.control is not None
        self._level_watch = asyncio.get_running_loop().create_task(
            self.levels.watch(self._level_peers, self.control, lambda: membership.leading(self.control) is not None),
            name="level-watch")
        return store

    def _member_clients(self) -> dict[str, PeerClient]:
        """The client of every other member (not removed)."""
        members = ({n.endpoint for n in self.topology.nodes if n.state != REMOVED} if self.topology is not None
                   else {n.url for n in self.spec.nodes})
        return {url: client for url, client in self.clients.items() if url in members and url != self.spec.me.url}

    def _clock_peers(self) -> dict[str, Any]:
        """The peers whose clocks ``clocks`` pings this round: every member. A ping to one that
        is offline fails at once, and its last estimate stays until it is stale: a peer back
        with the same skew is not logged again."""
        return {url: functools.partial(client.call, "node", "ping") for url, client in self._member_clients().items()}

    def _view_peers(self) -> dict[str, Any]:
        """The members ``slow_link`` asks this round which nodes they find slow: every one."""
        return {url: functools.partial(client.call, "node", "slow_view", {}, timeout=slowlink.ASK_TIMEOUT)
                for url, client in self._member_clients().items()}

    def _slow_link_changed(self, out: bool) -> None:
        """The other nodes find this node's link slow (or no longer): it does not lead the
        control plane meanwhile (``ControlPlane.stand_aside``)."""
        if self.control is not None:
            self.control.stand_aside(out)

    def _level_peers(self) -> dict[str, Any]:
        """The members whose control level ``levels`` asks this round: every one not removed."""
        topology = self.topology
        members = {n.endpoint for n in topology.nodes if n.state != REMOVED} if topology is not None else set()
        return {url: functools.partial(client.call, "node", "hello", {}, timeout=2.0)
                for url, client in self.clients.items() if url in members and url != self.spec.me.url}

    async def _index_drops(self, store: Any, interval: float = INDEX_DROPS_INTERVAL) -> None:
        """Every ``interval``: drop the index of buckets deleted while this node was away (each
        such bucket's name is blocked from being created again until then: ``INDEX_DROP``)."""
        me = node_id_of(self.spec.me)
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                done = await store.catalog.finish_index_drops(me)
            except errors.BucketsError as exc:  # no control-plane quorum now: next round
                log.info("dropping deleted buckets' index: %s", exc)
            except Exception:  # noqa: BLE001 - next round tries again
                log.exception("dropping deleted buckets' index failed")
            else:
                if done:
                    log.info("dropped the index of %d bucket(s) deleted while this node was away", done)

    async def _disks_follow_peers(self, store: Any, interval: float = PEER_DISKS_INTERVAL) -> None:
        """A peer that was offline and answers again (its client's probe) gets its disks probed
        at once, instead of at the disk monitor's next round: a node restarted (or started
        late) is written to and read from by every node as soon as it is back."""
        offline = {url for url, c in self.clients.items() if c.state is PeerState.OFFLINE}
        while True:
            await asyncio.sleep(interval)
            now = {url for url, c in self.clients.items() if c.state is PeerState.OFFLINE}
            back, offline = offline - now, now
            if back and any(not d.online for d, n in zip(self.disks, self.disk_nodes) if n in back):
                log.info("answering again: %s; probing their disks", ", ".join(sorted(back)))
                try:
                    await store.scanner.check_disks()
                except Exception:  # noqa: BLE001 - the disk monitor's next round tries again
                    log.exception("probing the disks of %s failed", ", ".join(sorted(back)))

    async def _anti_entropy(self, store: Any, interval: float = ANTI_ENTROPY_INTERVAL) -> None:
        """Every ``interval`` (and soon after a start, to catch up on what was missed while
        down): for each bucket this node replicates, pull what the other replicas have newer."""
        assert self.index is not None
        await asyncio.sleep(min(5.0, interval))
        while not self._stopping:
            repaired = 0
            buckets = self._replicated(store)
            log.debug("anti-entropy: a pass over the %d buckets this node replicates", len(buckets))
            for name in buckets:
                for bucket in (name, *(name + s for s in SHADOWS)):
                    if self._stopping:  # a cancel swallowed by wait_for (Python 3.11) ends here
                        return
                    try:
                        repaired += await self.index.sync_bucket(bucket)
                    except Exception:  # noqa: BLE001 - one bucket's failure must not stop the pass
                        log.exception("anti-entropy of %s failed", bucket)
            if repaired:
                log.info("anti-entropy repaired %d index entries", repaired)
            await asyncio.sleep(interval)

    def _replicated(self, store: Any) -> list[str]:
        """The buckets whose index this node is a replica of."""
        me = node_id_of(self.spec.me)
        return [name for name, _ in store.catalog.list_buckets() if me in self.replicas_of(name)]

    async def _sweep_tombstones(self, store: Any) -> None:
        """Every ``tombstone_sweep_interval`` (hourly by default; the first sweep one interval
        after the start): forget the old tombstones of the buckets this node replicates."""
        while not self._stopping:
            await asyncio.sleep(tombstone_sweep_interval(self.tombstone_ttl))
            if self._stopping:
                return
            try:
                await self._forget_tombstones(self._replicated(store))
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("a sweep of old tombstones failed")

    async def _forget_tombstones(self, buckets: list[str]) -> int:
        """Forget the tombstones older than ``tombstone_ttl`` of the buckets whose index this
        node is the first replica of, where every replica holds them
        (``ReplicatedIndex.forget_tombstones``). Returns how many this replica forgot."""
        assert self.index is not None
        me = node_id_of(self.spec.me)
        before = int((time.time() - self.tombstone_ttl) * 1000) << 16
        forgot = 0
        for name in buckets:
            for bucket in (name, *(name + s for s in SHADOWS)):
                first = self.index.placement(bucket).read[:1]
                if self._stopping or first != (me,):
                    continue
                after: str | None = ""
                try:
                    while after is not None and not self._stopping:
                        n, after = await self.index.forget_tombstones(bucket, before, after)
                        forgot += n
                except Exception as exc:  # noqa: BLE001 - a later sweep tries again
                    log.info("forgetting old tombstones of %s: %s", bucket, exc or type(exc).__name__)
        if forgot:
            log.info("forgot %d tombstones older than %s", forgot, human_duration(self.tombstone_ttl))
        return forgot

    async def _wait_formatted(self, timeout: float = FORMATION_TIMEOUT) -> None:
        """Wait until the first node has formatted every disk of a new cluster (a disk that
        is formatted already, as on every later start, passes at once)."""
        from buckets.engine.bootstrap import read_disk_format
        from buckets.storage.format import DiskFormat

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            probes = await asyncio.gather(*(read_disk_format(d) for d in self.disks))
            if all(isinstance(p, DiskFormat) for p in probes):
                for d in self.disks:  # a probe may have marked a not-yet-reachable disk offline
                    d.mark_online()
                return
            if loop.time() >= deadline:
                missing = [d.endpoint for d, p in zip(self.disks, probes) if not isinstance(p, DiskFormat)]
                raise ClusterStartError(f"disks not formatted within {timeout:g}s ({', '.join(missing[:4])}): "
                                        f"is {self.spec.nodes[0].url} (the first node) running?")
            await asyncio.sleep(0.5)

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
        self._check_level()
        return self._adopt(topology, store)

    # -- 2b. joining a running cluster, restarting as a member ------------------------------
    async def _join(self, timeout: float = FORMATION_TIMEOUT) -> None:
        """Ask the seed (``--join``) for the deployment, format this node's own disks for it."""
        assert self.join is not None
        seed = self.clients[self.join]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        said = loop.time()
        while True:
            try:
                info = await seed.call("cluster", "join_info", {"url": self.spec.me.url}, timeout=5.0)
                break
            except PeerNotReady as exc:
                # The seed answered: it is starting, or a single node that `cluster add-node`
                # turns into a cluster first. Wait for as long as the operator takes.
                if loop.time() >= said:
                    said = loop.time() + 30.0
                    log.info("waiting for %s (--join): %s", self.join, exc.message)
                deadline = loop.time() + timeout  # it answers: a restart into a cluster may follow
                await asyncio.sleep(1.0)
                continue
            except errors.BucketsError as exc:
                if refused_signature(exc):
                    cause = clock_cause(exc) or ("start it with the cluster's secret (BUCKETS_CLUSTER_SECRET or "
                                                 "the same root credentials)")
                    raise ClusterStartError(f"{self.join} refused this node's signature: {cause}") from None
                if loop.time() >= deadline:
                    raise ClusterStartError(f"{self.join} (--join) did not answer within {timeout:g}s: "
                                            f"{exc}") from None
                log.info("waiting for %s (--join) to answer: %s", self.join, exc)
                await asyncio.sleep(1.0)
        level = info.get("level", BASE_LEVEL)
        if isinstance(level, int) and level > CONTROL_LEVEL:
            raise ClusterStartError(f"{self.join} runs control level {level}; this release knows levels up to "
                                    f"{CONTROL_LEVEL}: start this node with the cluster's release (or later)")
        nodes = [NodeRecord.from_wire(n) for n in info["nodes"]]
        mine = next((n for n in nodes if n.endpoint == self.spec.me.url), None)
        own = [d for d in self.disks if isinstance(d, LocalDisk)]
        if mine is not None and mine.state == REMOVED:
            from buckets.engine.bootstrap import read_disk_format

            if any(p is not None for p in await asyncio.gather(*(read_disk_format(d) for d in own))):
                raise ClusterStartError(f"{self.spec.me.url} was removed from this cluster: to add it back, "
                                        f"wipe its disks first")
        try:
            ids = await membership.format_for_join(own, info, sync=getattr(self.config, "sync", True))
        except errors.FormatError as exc:
            raise ClusterStartError(str(exc)) from None
        for disk, disk_id in zip(own, ids):
            disk.disk_id = disk_id
        self.deployment_id = info["deployment_id"]
        self.join_info = info
        for n in nodes:
            if n.endpoint != self.spec.me.url and n.state != REMOVED and n.endpoint not in self.clients:
                self.clients[n.endpoint] = PeerClient(n.endpoint, self.secret)
        log.info("joining deployment %s through %s (generation %d, %d nodes): waiting to be added with "
                 "`buckets-admin cluster add-node ALIAS %s`", self.deployment_id, self.join, info["generation"],
                 len(nodes), " ".join(self.config.paths))

    def _control_plane(self, members: list[str]) -> ControlPlane:
        me = self.spec.me
        first_local = next(d for d in self.disks if isinstance(d, LocalDisk))
        address = control_address(me.url)
        return ControlPlane(ControlConfig(address=address, members=tuple(dict.fromkeys([*members, address])),
                                          secret=self.secret, directory=control_directory(first_local.root)))

    async def _start_joined_control(self, store: Any, boot: Any) -> PartitionTable:
        """Raft with the members as partners (they accept it once add-node adds it); wait, as
        long as it takes, until the topology places this node."""
        assert self.join_info is not None
        self.control = self._control_plane(list(self.join_info["members"]))
        await self.control.start()
        loop = asyncio.get_running_loop()
        said = loop.time()
        while True:
            topology = self.control.snapshot.topology
            mine = topology.node(self.spec.me.url) if topology is not None else None
            if mine is not None and mine.placed:
                break
            if loop.time() - said >= 30.0:
                said = loop.time()
                log.info("still waiting to be added: run `buckets-admin cluster add-node ALIAS %s` on any node",
                         " ".join(self.config.paths))
            await asyncio.sleep(0.2)
        if topology.deployment_id != boot.deployment_id:
            raise ClusterStartError(f"the control plane belongs to deployment {topology.deployment_id}, "
                                    f"the disks to {boot.deployment_id}")
        log.info("added to the cluster: generation %d", topology.generation)
        self._check_level()
        return self._adopt(topology, store)

    async def _start_member_control(self, store: Any, boot: Any) -> PartitionTable:
        """A restart: Raft with the members of the membership file; the topology is the one
        the journal replays (or the leader sends)."""
        assert self.known is not None
        self.control = self._control_plane([n.control_address for n in self.known["nodes"] if n.state != REMOVED])
        await self.control.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FORMATION_TIMEOUT
        while self.control.snapshot.topology is None:
            if loop.time() >= deadline:
                raise ClusterStartError(f"the control plane did not replay its topology within "
                                        f"{FORMATION_TIMEOUT:g}s: is a majority of the nodes running?")
            await asyncio.sleep(0.1)
        # The journal replays what this node had seen before it stopped; a topology change or
        # an index move committed while it was down must be applied before it routes anything
        # (an old replica set would miss writes): a linearizable read catches it up.
        while True:
            try:
                await self.control.read(linearizable=True, timeout=5.0)
                break
            except errors.BucketsError as exc:
                if loop.time() >= deadline:
                    raise ClusterStartError(f"the control plane could not catch up within {FORMATION_TIMEOUT:g}s "
                                            f"({exc}): is a majority of the nodes running?") from None
                log.info("catching up the control plane: %s", exc)
                await asyncio.sleep(0.5)
        topology = self.control.snapshot.topology
        if topology.deployment_id != boot.deployment_id:
            raise ClusterStartError(f"the control plane belongs to deployment {topology.deployment_id}, "
                                    f"the disks to {boot.deployment_id}")
        mine = topology.node(self.spec.me.url)
        if mine is not None and mine.state == REMOVED:
            raise ClusterStartError(f"{self.spec.me.url} was removed from the cluster")
        self._check_level()
        return self._adopt(topology, store)

    def _check_level(self) -> None:
        """Stop here if the cluster runs a control level this release does not know: its log
        holds commands whose rules this node would apply differently (``buckets.cluster.levels``)."""
        assert self.control is not None
        try:
            check_level(self.control.snapshot)
        except LevelTooNew as exc:
            raise ClusterStartError(str(exc)) from None

    # -- 2c. following the control plane's topology -----------------------------------------
    def _adopt(self, topology: TopologyRecord, store: Any) -> PartitionTable:
        """Make ``topology`` this node's: a RemoteDisk for every disk it does not have yet
        (old generations' disks stay: entries may still name them), the current table for new
        writes, the peers and their probes, the membership file."""
        from buckets.cluster.remotedisk import RemoteDisk

        me = self.spec.me.url
        for n in topology.nodes:
            if n.endpoint == me:
                continue
            client = self.clients.get(n.endpoint)
            if client is None:
                client = self.clients[n.endpoint] = PeerClient(n.endpoint, self.secret)
            for d in n.disks:
                if d.disk_id in store.by_id:
                    continue
                disk = RemoteDisk(client, d.path, f"{n.endpoint}{d.path}", d.disk_id)
                store.disks.append(disk)
                store.by_id[d.disk_id] = disk
                self.disks.append(disk)
                self.disk_nodes.append(n.node_id)
        self._node_of_disk = {d.disk_id: n.node_id for n in topology.nodes for d in n.disks}
        table = topology.partition_table()
        self.table = table
        store.table = table
        self._replicas.clear()
        previous, self.topology = self.topology, topology
        self.deployment_id = topology.deployment_id
        mine = topology.node(me)
        removed = mine is not None and mine.state == REMOVED
        if removed and not self.removed:
            log.warning("this node was removed from the cluster: S3 requests are answered 503")
        self.removed = removed
        if previous is None or previous.generation != topology.generation or previous.nodes != topology.nodes:
            first_local = next(d for d in self.disks if isinstance(d, LocalDisk))
            try:
                membership.write_members(first_local.root, topology)
            except OSError as exc:
                log.warning("cannot write the membership file: %s", exc)
            self.known = {"deployment_id": topology.deployment_id, "generation": topology.generation,
                          "nodes": topology.nodes}
            if previous is not None:
                log.info("topology: generation %d, nodes %s", topology.generation,
                         ", ".join(f"{n.endpoint} ({n.state})" for n in topology.nodes))
        return table

    def follow_now(self) -> None:
        """Adopt the control plane's current topology at once if this node has not yet: the
        migration coordinator can see a new generation's job before ``_follow_topology``'s
        next look, and its copies need the new node's disks (``engine.move.copy_shards``)."""
        topology = self.control.snapshot.topology if self.control is not None else None
        if topology is not None and topology is not self.topology and self._store is not None:
            self._adopt(topology, self._store)

    async def _follow_topology(self, store: Any, interval: float = FOLLOW_INTERVAL) -> None:
        """Apply every topology change the control plane commits; on the leader, finish the
        removal of drained nodes, then apply the next queued change."""
        assert self.control is not None
        loop = asyncio.get_running_loop()
        next_finish = loop.time()
        while True:
            await asyncio.sleep(interval)
            try:
                topology = self.control.snapshot.topology
                if topology is not None and topology is not self.topology:
                    self._adopt(topology, store)
                if loop.time() >= next_finish:
                    next_finish = loop.time() + 1.0
                    await membership.start_missed_migration(self)
                    await membership.finish_removals(self)
                    await membership.finish_disk_removals(self)
                    await membership.run_queued(self)
            except asyncio.CancelledError:
                raise
            except errors.BucketsError as exc:  # no majority, a change refused: try again next time
                log.info("membership: %s", exc)
            except Exception:  # noqa: BLE001 - the loop must survive a bug in one look
                log.exception("following the topology failed")

    def status(self) -> dict:
        """Every node as this node sees it: online, control-plane leader, disks; plus the
        generation and whether the control plane has a majority (``/health/cluster``, ``info``)."""
        control = self.control.status() if self.control is not None else None
        leader = control.leader if control is not None else None
        online_disks: dict[str, int] = {}
        for d, n in zip(self.disks, self.disk_nodes):
            online_disks[n] = online_disks.get(n, 0) + (1 if d.online else 0)
        nodes = []
        topology = self.topology
        listed = ([(n.endpoint, len(n.disks), n.state) for n in topology.nodes] if topology is not None
                  else [(n.url, len(n.paths), "active") for n in self.spec.nodes])
        for url, disks, state in listed:
            me = url == self.spec.me.url
            client = self.clients.get(url)
            nodes.append({
                "endpoint": url, "self": me, "state": state,
                "online": True if me else (client is not None and client.state.value == "online"),
                "leader": leader is not None and control_address(url) == leader,
                "disks_total": disks, "disks_online": online_disks.get(url, 0),
                **({"clock_offset": 0.0, "clock_uncertainty": 0.0} if me else self.clocks.peer_status(url)),
                # calls to it that timed out while it answered others (slow, not gone: ``rpcclient``)
                "slow_timeouts": 0 if me or client is None else client.health.slow_timeouts,
                "level": self.levels.level(url) if self.levels is not None and state != REMOVED else None,
            })
        members = [n for n in nodes if n["state"] != REMOVED]
        return {
            "nodes": nodes,
            "nodes_total": len(members),
            "nodes_online": sum(1 for n in members if n["online"]),
            "generation": control.generation if control is not None else None,
            "migration": self.migration_summary(),
            "control": control.as_dict() if control is not None else None,
            "has_quorum": bool(control and control.has_quorum),
            "index": self.index_counters(),
            "removed": bool(self.removed),  # this node adopted its removal: it answers S3 with 503
            "clock": self.clocks.status(),  # the peers' clocks against this node's (``clocks``)
            # the other nodes find this node's link slow: its /health/ready answers 503 (``slowlink``)
            "slow_link": self.slow_link.out, "slow_link_named_by": self.slow_link.named_by,
            # this node's disks that lag its others, as it last told its peers (``storage/pace.py``)
            "disks_lagging": sorted(self._lagging_said),
            # the control level the cluster applies, and the nodes still on an older release (``levels``)
            "level": (self.levels.status(self.control.snapshot) if self.levels is not None and self.control is not None
                      else {"cluster": None, "this_node": CONTROL_LEVEL}),
            # the erasure layout, and the node failures the current table tolerates (``tolerated_node_failures``)
            **self.layout_status(),
        }

    def layout_status(self) -> dict:
        layout = self.control.snapshot.topology.layout if self.control and self.control.snapshot.topology else None
        if layout is None or self.table is None:
            return {"layout": None, "tolerates": None}
        table, members = self.table, len(self.member_urls)
        cached = self._tolerates
        if cached is None or cached[0] is not table or cached[1] != members:  # one pass over the table per change
            cached = self._tolerates = (table, members, self.tolerated_node_failures(layout.k, layout.m),
                                        len(table.disk_ids()))
        return {"layout": {"k": layout.k, "m": layout.m, "set_size": layout.set_size, "disks": cached[3]},
                "tolerates": cached[2]}

    def index_counters(self) -> dict:
        """The replicated index's repairs and read leases, since this node started."""
        index = self.index
        leases = index.leases if index is not None else None
        return {"read_repairs": index.read_repairs if index else 0,
                "entropy_repairs": index.entropy_repairs if index else 0,
                "lease_lookups": leases.served if leases is not None else 0,
                "leases_held": len(leases.held()) if leases is not None else 0,
                "lease_waits": index.lease_waits if index else 0,
                "retractions": index.retractions if index else 0,
                "retract_misses": index.retract_misses if index else 0,
                "voided_commits": index.voided if index else 0}

    def tolerated_node_failures(self, k: int, m: int) -> int:
        """How many whole nodes may fail with every object still readable and writable, every
        index still answering and the control plane keeping its majority."""
        assert self.table is not None
        node_of = self._node_of_disk
        worst = 1
        for row in self.table.rows:
            per_node: dict[str, int] = {}
            for disk_id in row:
                per_node[node_of[disk_id]] = per_node.get(node_of[disk_id], 0) + 1
            worst = max(worst, max(per_node.values()))
        return membership.tolerated_failures(worst, k, m, len(self.member_urls))

    def banner(self) -> str:
        assert self.table is not None
        me = self.spec.me
        topology = self.topology
        nodes = topology.nodes if topology is not None else ()
        members = [n for n in nodes if n.state != REMOVED]
        generation = topology.generation if topology is not None else 0
        lines = [f"Cluster:     {len(members)} node{'s' if len(members) != 1 else ''}, generation {generation}, "
                 f"this is {me.url}"]
        for n in nodes:
            lines.append(f"  {n.endpoint}  {len(n.disks)} disks  {n.state}"
                         f"{'  (this node)' if n.endpoint == me.url else ''}")
        lines.append(f"Migration:   {self.migration_line()}")
        status = self.layout_status()
        if status["layout"] is not None:
            lines.append(f"Layout:      {layout_line(status['layout'])}")
            lines.append(f"Tolerates:   {status['tolerates']} node failure(s) for reads and writes")
        return "\n".join(lines)

    def migration_summary(self) -> dict | None:
        control = self.control
        record = control.snapshot.jobs.get(membership.JOB_KEY) if control is not None else None
        if record is None or not isinstance(record.value, dict):
            return None
        job = record.value
        return {k: job.get(k) for k in ("state", "from_gen", "to_gen", "moved_objects", "moved_bytes", "errors")}

    def migration_line(self) -> str:
        job = self.migration_summary()
        if job is None:
            return "none"
        return (f"{job['state']}, generation {job['from_gen']} -> {job['to_gen']}, {job['moved_objects'] or 0} "
                f"objects ({job['moved_bytes'] or 0} bytes) moved, {job['errors'] or 0} errors")

    def replicas_of(self, bucket: str) -> list[str]:
        """The nodes holding a bucket's index now: the replica set of the bucket's index
        generation (both sets while its index moves, ``IndexPlacer``); before the catalog
        exists, the first 3 distinct nodes of its partition's row in the current table."""
        if self.placer is not None:
            return self.placer.replicas(bucket)
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
        control = self.control
        # Each bucket's index is placed by its index generation, not the current table: a
        # topology change moves it in phases (ClusterCatalog.move_bucket_index), which wait
        # until every live node applied each phase (the ``cluster/applied`` peer call).
        self.placer = IndexPlacer(lambda: control.snapshot)
        replica = IndexReplica(store.registry, functools.partial(smalllog.local_records, store))
        replica.bucket_known = lambda name: name in control.snapshot.buckets

        def holder_slow(node: str) -> bool:  # reads and writes here lag behind on that node lately
            client = self.clients.get(node)
            return client is not None and store.slow_sources.slow(client)

        replica.holder_slow = holder_slow

        def created(name: str) -> float | None:  # which bucket a name is now (reads name what they read)
            record = control.snapshot.buckets.get(name)
            return record.created if record is not None else None

        replica.bucket_created = created
        self.index = ReplicatedIndex(node_id_of(self.spec.me), replica, self._transport,
                                     self.placer.placement, leases=self.config.read_leases)
        self.index.bucket_created = created
        catalog = ClusterCatalog(control, self.index, self.placer,
                                 wait_applied=applied_waiter(lambda: control.snapshot, self._ask_applied),
                                 wait_settled=self._settle_waiter())
        replica.bucket_deleting = catalog.deleting
        return catalog

    def _settle_waiter(self) -> Any:
        """What a bucket or user change waits with before it is acknowledged (``catalog.settle``):
        every live node applied it, asked every 10 ms, at most 2 s."""
        control = self.control
        assert control is not None
        return applied_waiter(lambda: control.snapshot, self._ask_applied, poll=0.01,
                              timeout=SETTLE_SECONDS, ask_timeout=SETTLE_ASK)

    def _users(self, store: Any) -> ClusterUserTable:
        assert self.control is not None
        return ClusterUserTable(self.control, self._settle_waiter())

    async def _transport(self, node: str, method: str, args: dict) -> Any:
        client = self.clients.get(node)
        if client is None:
            # A node of a topology this node has not adopted yet (the control plane's log can
            # be ahead of ``_adopt``): unreachable from here for now, as an offline peer is.
            raise PeerOffline(f"no peer client for {node} yet (its topology is not adopted here)", endpoint=node)
        return await client.call("index", method, args)

    async def stop(self) -> None:
        """Before the store closes: stop answering index calls and end every background task
        that uses the store (anti-entropy, read repairs), so none runs into a closed registry."""
        self._stopping = True
        self._store = None
        for task in (self._entropy, self._follow, self._peer_disks, self._drops, self._clock_watch,
                     self._level_watch, self._slow_watch, self._tomb_sweeps):
            if task is not None:
                await cancel_and_wait(task)
        self._entropy = self._follow = self._peer_disks = self._drops = self._clock_watch = self._level_watch = None
        self._slow_watch = self._tomb_sweeps = None
        migration, self.migration = self.migration, None
        if migration is not None:
            try:
                await migration.stop()
            except Exception:  # noqa: BLE001 - shutting down
                log.exception("stopping the migration coordinator")
        if self.index is not None:
            await self.index.close()

    async def close(self) -> None:
        """After the store closed (or when it never opened): the control plane, the peer
        clients and their probes, the disks served to peers, the shared session."""
        await self.stop()
        if self.control is not None:
            await self.control.close()
        for client in self.clients.values():
            await client.close()
        for disk in self._served:
            await disk.close()
        await close_shared_session()
