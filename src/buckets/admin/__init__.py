"""The admin layer: the signed admin API that ``buckets-admin`` talks to, and its client.

Owns the JSON admin endpoints under ``/_buckets/admin/v1/`` (``api``), the settings that may
change on a running node (``settings``) and the client that signs calls to them
(``client``). Requests are SigV4-signed with the root credentials and verified with the
S3 layer's authentication code; the API reads and changes the engine only through its
public surface (``store.users``, ``store.scanner``, the registry's counters). It must not
serve S3 or touch object data.
"""

from buckets.admin.api import PREFIX, AdminApi
from buckets.admin.settings import LiveSettings, make_scanner_config

__all__ = ["PREFIX", "AdminApi", "LiveSettings", "make_scanner_config"]
