"""The per-request value every S3 handler receives.

`S3Request` bundles what a handler needs (the aiohttp request, the engine, the server
config, the resolved bucket/key, the authenticated caller and the request id) so
handlers are plain `async def op(req: S3Request) -> web.StreamResponse` functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy, MultiDictProxy

from buckets.errors import KeyTooLongError
from buckets.iam.identity import canonical_id
from buckets.s3.params import INT32_MAX, int_argument
from buckets.s3.router import Target

MAX_KEY_BYTES = 1024
# What a handler leaves on the request for the notifier (buckets.s3.app): the keys DeleteObjects
# removed, as (key, version id, whether a delete marker was written), and the key a POST form wrote.
DELETED_KEYS = web.RequestKey[list[tuple[str, str | None, bool]]]("s3_deleted_keys")
WRITTEN_KEY = web.RequestKey("s3_written_key", str)


@dataclass(slots=True)
class S3Request:
    request: web.Request
    store: Any  # buckets.engine.store.Store (duck-typed so this module imports cheaply)
    config: Any  # server config: region, region_strict (optional), domains, root_user, root_password
    target: Target
    operation: str
    request_id: str
    auth: Any = None  # buckets.s3.auth.AuthContext

    @property
    def bucket(self) -> str:
        assert self.target.bucket is not None
        return self.target.bucket

    @property
    def key(self) -> str:
        assert self.target.key is not None
        return self.target.key

    @property
    def query(self) -> MultiDictProxy[str]:
        return self.request.query

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.request.headers

    @property
    def is_head(self) -> bool:
        return self.request.method == "HEAD"

    def owner(self) -> tuple[str, str]:
        """(canonical ID, display name) of the owner a response names: the bucket's owner for
        what is in a bucket, the caller for ListBuckets."""
        root = str(getattr(self.config, "root_user", "buckets"))
        name = None
        catalog = getattr(self.store, "catalog", None)
        if self.target.bucket is not None and catalog is not None:
            record = catalog.get_bucket(self.target.bucket)
            if record is not None:
                name = record.get("owner", "") or root
        if name is None:
            access_key = getattr(self.auth, "access_key", None)
            name = access_key or root
        return canonical_id(name), name

    def int_param(self, name: str, default: int, *, minimum: int = 0, maximum: int = INT32_MAX,
                  cap: int | None = None) -> int:
        """An integer query parameter (see `params.int_argument`): InvalidArgument when it is
        not a number or out of range."""
        return int_argument(self.query.get(name), name, default=default, minimum=minimum,
                            maximum=maximum, cap=cap)


def region_is_strict(config: Any) -> bool:
    """Whether requests must name the server's region (SigV4 scope, LocationConstraint).

    Off unless the operator set ``region_strict``: then any region a client is configured
    with is accepted, as MinIO does when no region is configured.
    """
    return bool(getattr(config, "region_strict", False))


def check_key(key: str) -> None:
    """Refuse over-long keys before any body is read."""
    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
        raise KeyTooLongError(Size=str(len(key.encode("utf-8", "surrogateescape"))),
                              MaxSizeAllowed=str(MAX_KEY_BYTES))
