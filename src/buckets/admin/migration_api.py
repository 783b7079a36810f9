"""The migration's admin endpoints (under ``/_buckets/admin/v1/``, root only, like the rest).

===========  ==================================  =============================================
method       path (after the prefix)             what
===========  ==================================  =============================================
GET          ``cluster/migration``               state, generations, progress per node,
                                                 remaining estimate, rate, ETA, errors
POST         ``cluster/migration/pause``         stop moving (moves in flight are discarded
                                                 and redone on resume)
POST         ``cluster/migration/resume``        move again, from the checkpoint
POST         ``cluster/migration/throttle``      ``{"bytes_per_s": N, "objects": N}`` (0 bytes/s:
                                                 unlimited); either field alone
POST         ``cluster/reweight``                ``{"weights": {"<disk id>": weight}}``: a new
                                                 generation with those placement weights, and
                                                 the migration to it
===========  ==================================  =============================================

Pause, resume and throttle are compare-and-set changes of the job in the control plane, so
they work through any node; the coordinator (on the control plane's leader) sees them
within a quarter of a second. ``routes(store)`` gives ``AdminApi`` its table rows
(``(pattern, {method: handler}, name)``; handlers take ``(request, body, **params)``) and
starts this node's coordinator (``buckets.cluster.migration.ensure_coordinator``).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from buckets import errors
from buckets.admin.jsonio import answer, json_body
from buckets.cluster import migration

log = logging.getLogger("buckets.admin")

NotACluster = errors.define_error(
    "NotACluster", "InvalidRequest", 400,
    "This server is not a cluster node: there is no migration (start it with node URLs).")




class MigrationApi:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.coordinator = migration.ensure_coordinator(store)

    @property
    def node(self) -> Any:
        node = getattr(self.store, "cluster_node", None)
        if node is None or getattr(node, "control", None) is None:
            raise NotACluster()
        return node

    def _status(self) -> dict[str, Any]:
        record = self.node.control.snapshot.jobs.get(migration.JOB_KEY)
        value = record.value if record is not None and isinstance(record.value, dict) else None
        out = migration.status_of(value)
        out["generation"] = self.node.control.snapshot.generation
        if self.coordinator is not None:
            out["this_node_coordinates"] = self.coordinator.running
        return out

    async def status(self, request: web.Request, body: bytes) -> web.Response:
        if getattr(self.store, "cluster_node", None) is None:
            return answer({"state": "none", "cluster": False})
        return answer(self._status())

    async def pause(self, request: web.Request, body: bytes) -> web.Response:
        json_body(body)
        await migration.update_job(self.node.control, migration.pause)
        log.info("migration paused by the operator")
        return answer(self._status())

    async def resume(self, request: web.Request, body: bytes) -> web.Response:
        json_body(body)
        await migration.update_job(self.node.control, migration.resume)
        log.info("migration resumed by the operator")
        return answer(self._status())

    async def throttle(self, request: web.Request, body: bytes) -> web.Response:
        document = json_body(body)
        if not document:
            raise errors.InvalidArgument("nothing to set: send {\"bytes_per_s\": N, \"objects\": N}")
        migration.check_throttle(document)  # refuse bad input before touching the job

        def change(value: dict) -> dict:
            return dict(value, throttle=migration.check_throttle(document, value.get("throttle")))

        value = await migration.update_job(self.node.control, change)
        log.info("migration throttle set to %s", value["throttle"])
        return answer(self._status())

    async def reweight(self, request: web.Request, body: bytes) -> web.Response:
        """A new generation whose placement weights differ (a disk filling up, a bigger disk),
        then the migration to it."""
        document = json_body(body)
        weights = document.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise errors.InvalidArgument("send {\"weights\": {\"<disk id>\": weight, ...}}")
        node = self.node
        control = node.control
        snapshot = await control.read(linearizable=True)
        if migration.migration_in_progress(snapshot):
            raise migration.MigrationInProgress()
        topology = snapshot.topology
        if topology is None:
            raise errors.ServiceUnavailable("the cluster has no topology yet")
        known = {d.disk_id for n in topology.nodes for d in n.disks}
        for disk_id, weight in weights.items():
            if disk_id not in known:
                raise errors.InvalidArgument(f"no disk {disk_id!r} in the cluster")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1e6:
                raise errors.InvalidArgument(f"the weight of {disk_id} must be a number above 0 (at most 1e6)")
        from dataclasses import replace

        nodes = [replace(n, disks=tuple(replace(d, weight=float(weights.get(d.disk_id, d.weight))) for d in n.disks))
                 for n in topology.nodes]
        from_gen = topology.generation
        result = await control.propose_generation(nodes)
        to_gen = result["generation"]
        await migration.start_migration(node, from_gen, to_gen)
        log.info("disk weights changed (%s): generation %d, migrating from %d", weights, to_gen, from_gen)
        return answer(self._status())


def routes(store: Any) -> list[tuple[Any, dict[str, Any], str]]:
    """The rows ``AdminApi`` adds to its table."""
    import re

    api = MigrationApi(store)
    return [
        (re.compile(r"cluster/migration"), {"GET": api.status}, "cluster.migration"),
        (re.compile(r"cluster/migration/pause"), {"POST": api.pause}, "cluster.migration.pause"),
        (re.compile(r"cluster/migration/resume"), {"POST": api.resume}, "cluster.migration.resume"),
        (re.compile(r"cluster/migration/throttle"), {"POST": api.throttle}, "cluster.migration.throttle"),
        (re.compile(r"cluster/reweight"), {"POST": api.reweight}, "cluster.reweight"),
    ]
