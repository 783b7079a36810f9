"""The cluster membership endpoints of the admin API (under ``/_buckets/admin/v1/``, root only).

===========  ==================================  =============================================
method       path (after the prefix)             what
===========  ==================================  =============================================
GET          ``cluster/nodes``                   every node: state, online, Raft role, disks
                                                 (placed, partition slots), the generation and
                                                 the migration in progress
POST         ``cluster/add-node``                ``{"endpoint": "http://h:p", "paths": [...]}``:
                                                 place a node started with ``--join``; a new
                                                 generation and the migration to it
POST         ``cluster/remove-node``             ``{"endpoint": "http://h:p", "force": false}``:
                                                 drain the node (a generation without its
                                                 disks, the migration), then it leaves;
                                                 ``force``: a dead node leaves at once
POST         ``cluster/add-disk``                ``{"endpoint": "http://h:p", "path": "/d5"}``:
                                                 the node formats and serves the disk; a new
                                                 generation places it, the migration fills it
POST         ``cluster/remove-disk``             ``{"endpoint": "http://h:p", "path": "/d3"}``:
                                                 the disk drains (not placed, migration off
                                                 it), then leaves the node's record
===========  ==================================  =============================================

Every change answers ``tolerates`` (the node failures the cluster survives before and after
it); one that lowers it is refused (``409 ToleranceWouldFall``, nothing changes) unless the
body says ``"accept_lower_tolerance": true`` (a forced removal of a dead node goes on anyway).

Any node answers: the changes are control-plane commands, forwarded to the Raft leader. A
change asked for while a migration runs is checked and queued (``"queued": true`` and its
position), and applied once the migration is done. The orchestration is
``buckets.cluster.membership``; ``routes(store)`` gives ``AdminApi`` its table rows.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from buckets.admin.jsonio import answer, json_body
from buckets.cluster import membership




ACCEPT = "accept_lower_tolerance"  # a change that lowers the node failures tolerated goes on only with it


class ClusterApi:
    def __init__(self, store: Any) -> None:
        self.store = store

    @property
    def node(self) -> Any:
        node = getattr(self.store, "cluster_node", None)
        if node is None or getattr(node, "control", None) is None or node.control.snapshot.topology is None:
            raise membership.NotACluster()
        return node

    async def list_nodes(self, request: web.Request, body: bytes) -> web.Response:
        return answer(membership.describe_nodes(self.node))

    async def add_node(self, request: web.Request, body: bytes) -> web.Response:
        document = json_body(body)
        convert = getattr(self.store, "become_cluster", None)
        if getattr(self.store, "cluster_node", None) is None and convert is not None:
            # A single node: it becomes a cluster of one first (buckets.cluster.convert) and
            # restarts; buckets-admin then asks again. Bad input is refused before anything changes.
            endpoint = membership.normalize_endpoint(document.get("endpoint"))
            membership.check_paths(document.get("paths"))
            return answer(await convert(request.host, endpoint))
        return answer(await membership.add_node(self.node, document.get("endpoint"), document.get("paths"),
                                                 document.get(ACCEPT, False)))

    async def add_disk(self, request: web.Request, body: bytes) -> web.Response:
        document = json_body(body)
        return answer(await membership.add_disk(self.node, document.get("endpoint"), document.get("path"),
                                                 document.get(ACCEPT, False)))

    async def remove_disk(self, request: web.Request, body: bytes) -> web.Response:
        document = json_body(body)
        return answer(await membership.remove_disk(self.node, document.get("endpoint"), document.get("path"),
                                                    document.get(ACCEPT, False)))

    async def remove_node(self, request: web.Request, body: bytes) -> web.Response:
        document = json_body(body)
        return answer(await membership.remove_node(self.node, document.get("endpoint"),
                                                    document.get("force", False), document.get(ACCEPT, False)))


def routes(store: Any) -> list[tuple[Any, dict[str, Any], str]]:
    """The rows ``AdminApi`` adds to its table."""
    api = ClusterApi(store)
    return [
        (re.compile(r"cluster/nodes"), {"GET": api.list_nodes}, "cluster.nodes"),
        (re.compile(r"cluster/add-node"), {"POST": api.add_node}, "cluster.add_node"),
        (re.compile(r"cluster/remove-node"), {"POST": api.remove_node}, "cluster.remove_node"),
        (re.compile(r"cluster/add-disk"), {"POST": api.add_disk}, "cluster.add_disk"),
        (re.compile(r"cluster/remove-disk"), {"POST": api.remove_disk}, "cluster.remove_disk"),
    ]
