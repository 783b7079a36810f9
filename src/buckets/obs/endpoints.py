"""The unauthenticated operations endpoints: ``/metrics`` and the health checks.

Served by a middleware in front of the S3 app rather than by routes, so that they only
answer what they are for: an unsigned ``GET``/``HEAD`` of exactly these paths. A
SigV4/SigV2-signed request for the same path is S3's (a bucket named ``metrics`` or
``health`` keeps working) and passes straight through.

Health answers never touch object data or disks: they read the in-memory disk states
and ask LMDB for its environment info (microseconds), so a probe every second costs
nothing and still answers while disks are slow.

=====================  ===========================================================
``/health/live``       200 while the process answers
``/health/ready``      200 when this node can serve: registry open and a write
                       quorum of disks online, and (a cluster node) not behind the
                       control plane for a full journal disk, and its peers do not
                       find its link slow (``cluster/slowlink.py``); 503 otherwise
``/health/cluster``    the same verdict for the deployment (one node today), with
                       the write quorum in ``X-Buckets-Write-Quorum``
=====================  ===========================================================

Each is also answered under MinIO's ``/minio/health/...`` so existing probes and load
balancer checks work unchanged.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from buckets.errors import ServiceUnavailable
from buckets.obs.access import OPS_API, OPS_ERROR_CODE
from buckets.obs.metrics import ServerMetrics, write_quorum

log = logging.getLogger("buckets.obs")

METRICS_AUTH_MODES = ("public", "bearer")
_S3_QUERY_AUTH = ("X-Amz-Credential", "X-Amz-Signature", "AWSAccessKeyId", "Signature")


@dataclass(slots=True)
class NodeHealth:
    registry_open: bool
    disks_online: int
    disks_total: int
    write_quorum: int
    read_quorum: int
    # a cluster node whose control-plane journal cannot store entries (its disk full) while the
    # cluster changed its settings: it answers S3 with 503 until it caught up
    control_behind: bool = False
    # a cluster node whose peers find its link slow (``cluster/slowlink.py``): it serves, but a
    # load balancer should send clients to the other nodes
    slow_link: bool = False

    @property
    def serving(self) -> bool:
        """Able to serve (what ``/health/cluster`` counts), whatever its link's speed."""
        return self.registry_open and self.disks_online >= self.write_quorum and not self.control_behind

    @property
    def ready(self) -> bool:
        return self.serving and not self.slow_link

    def as_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.ready else "unavailable", **asdict(self)}


def registry_is_open(registry: Any) -> bool:
    return bool(getattr(registry, "is_open", False))


def node_health(store: Any) -> NodeHealth:
    data, parity = store.layout
    return NodeHealth(
        registry_open=registry_is_open(store.registry),
        disks_online=sum(1 for disk in store.disks if disk.online),
        disks_total=len(store.disks),
        write_quorum=write_quorum(data, parity),
        read_quorum=data,
        control_behind=control_behind(store),
        slow_link=slow_link(store),
    )


def slow_link(store: Any) -> bool:
    """A cluster node whose peers find its link slow (``SlowLinkWatch.out``)."""
    watch = getattr(getattr(store, "cluster_node", None), "slow_link", None)
    return bool(watch is not None and watch.out)


def control_behind(store: Any) -> bool:
    """A cluster node that cannot store the control plane's changes and missed some
    (``ControlPlane.behind``)."""
    control = getattr(getattr(store, "cluster_node", None), "control", None)
    return bool(control is not None and control.behind)


def serving_refusal(store: Any) -> Exception | None:
    """Why this node must not serve S3 (or the console's API) now, as the error to answer
    (``503 ServiceUnavailable``), or None. A cluster node refuses:

    - once removed from its cluster (``buckets-admin cluster remove-node``), until stopped;
    - while behind the control plane because its journal's disk is full (``control_behind``):
      it would answer from bucket settings, policies and users the cluster has changed since
      (a revoked permission still granted), until it has room and caught up. ``/health/ready``
      says 503 meanwhile, so a load balancer sends the requests to the other nodes.

    Checked by the S3 handler itself (path-style, virtual-host-style, and the requests the
    admin API, the peer RPC and the console hand it) and by the console's API, on the S3 port
    or its own; health, metrics, the admin API and peer RPC still answer."""
    node = getattr(store, "cluster_node", None)
    if node is None:
        return None
    if getattr(node, "removed", False):
        return ServiceUnavailable("This node was removed from the cluster: send requests to another node.")
    if control_behind(store):
        return ServiceUnavailable(
            "This node's control-plane journal disk is full and it has not applied the cluster's latest "
            "bucket, policy or user changes: send requests to another node.")
    return None


def _looks_s3_signed(request: web.Request) -> bool:
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith(("AWS4-", "AWS ")):
        return True
    return any(name in request.query for name in _S3_QUERY_AUTH)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body) + "\n", content_type="application/json",
                        headers=headers)


class OpsEndpoints:
    """Health and metrics for one app. ``metrics_auth``/``metrics_token`` may change live."""

    def __init__(self, store: Any, metrics: ServerMetrics, *, metrics_auth: str = "public",
                 metrics_token: str | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.metrics_token = metrics_token
        self.metrics_auth = "public"
        self.set_metrics_auth(metrics_auth)
        health = {"live": self.live, "ready": self.ready, "cluster": self.cluster}
        self.routes: dict[str, Any] = {"/metrics": self.serve_metrics}
        for name, handler in health.items():
            self.routes[f"/health/{name}"] = handler
            self.routes[f"/minio/health/{name}"] = handler

    def set_metrics_auth(self, mode: str) -> None:
        mode = mode.strip().lower()
        if mode not in METRICS_AUTH_MODES:
            raise ValueError(f"metrics auth must be one of {', '.join(METRICS_AUTH_MODES)}; got {mode!r}")
        if mode == "bearer" and not self.metrics_token:
            raise ValueError("metrics auth 'bearer' needs a token: set BUCKETS_METRICS_TOKEN "
                             "(or metrics_token in the config file) and restart")
        self.metrics_auth = mode

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        endpoint = self.routes.get(request.path)
        if endpoint is None or request.method not in ("GET", "HEAD") or _looks_s3_signed(request):
            return await handler(request)
        request[OPS_API] = "metrics" if request.path == "/metrics" else "health"
        response = await endpoint(request)
        if request.method == "HEAD":
            response.body = None  # HEAD: status and headers only
        return response

    # -- health -------------------------------------------------------------------------------
    async def live(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def ready(self, request: web.Request) -> web.Response:
        health = node_health(self.store)
        if not health.ready:
            request[OPS_ERROR_CODE] = "NotReady"
        return _json(200 if health.ready else 503, health.as_dict())

    async def cluster(self, request: web.Request) -> web.Response:
        health = node_health(self.store)
        if not health.ready:
            request[OPS_ERROR_CODE] = "NotReady"
        quorum = str(health.write_quorum)
        node = getattr(self.store, "cluster_node", None)
        if node is not None:  # a cluster: every node as this one sees it, and the control plane's majority
            status = node.status()
            ok = health.serving and status["has_quorum"]  # (a slow link is this node's, not the deployment's)
            body = {**health.as_dict(), **status, "status": "ok" if ok else "unavailable"}
            if not ok:
                request[OPS_ERROR_CODE] = "NotReady"
            return _json(200 if ok else 503, body,
                         headers={"X-Buckets-Write-Quorum": quorum, "X-Minio-Write-Quorum": quorum})
        body = {**health.as_dict(), "nodes_total": 1, "nodes_online": 1 if health.ready else 0}
        return _json(200 if health.ready else 503, body,
                     headers={"X-Buckets-Write-Quorum": quorum, "X-Minio-Write-Quorum": quorum})

    # -- metrics ------------------------------------------------------------------------------
    async def serve_metrics(self, request: web.Request) -> web.Response:
        if self.metrics_auth == "bearer":
            refusal = self._check_bearer(request)
            if refusal is not None:
                return refusal
        body, content_type = await self.metrics.render(request.headers.get("Accept"))
        response = web.Response(status=200, body=body)
        response.headers["Content-Type"] = content_type  # carries version= parameters aiohttp won't split
        return response

    def _check_bearer(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            request[OPS_ERROR_CODE] = "MissingBearerToken"
            return web.Response(status=401, text="metrics need a bearer token: Authorization: Bearer <token>\n",
                                headers={"WWW-Authenticate": 'Bearer realm="buckets-metrics"'})
        expected = (self.metrics_token or "").encode()
        if not expected or not hmac.compare_digest(token.strip().encode(), expected):
            request[OPS_ERROR_CODE] = "InvalidBearerToken"
            return web.Response(status=403, text="invalid bearer token\n")
        return None
