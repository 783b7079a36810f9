"""Observability: metrics, structured logs, access lines, request ids and health.

Owns what an operator watches a running node through: the Prometheus registry of one
app (``metrics``), the JSON/console log setup (``logs``), the per-request access line and
request metrics (``access``), and the unauthenticated ``/metrics`` and health endpoints
(``endpoints``). It reads the engine's counters (registry usage, cache, heal stats,
disk states) but never changes them, never touches object data, and never imports the S3
or admin layers above it: what it needs from a request (operation, access key, bucket,
key) the S3 layer leaves on the request under documented names.
"""

from buckets.obs.access import AccessLogger
from buckets.obs.endpoints import OpsEndpoints, node_health
from buckets.obs.logs import configure_logging, set_log_level
from buckets.obs.metrics import ServerMetrics

__all__ = ["AccessLogger", "OpsEndpoints", "ServerMetrics", "configure_logging", "node_health",
           "set_log_level"]
