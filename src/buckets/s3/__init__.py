"""The S3 HTTP layer: routing, authentication (``auth/``), XML in/out, S3 errors, and one
handler module per API family (``handlers/``).

It turns HTTP requests into calls on the engine (`buckets.engine.store.Store`) and engine
results and typed errors back into S3 responses. It must not touch files or disks, and
never reads an object body into memory: bodies stream to and from the engine.

    from buckets.s3 import create_app
    app = create_app(store, cfg)   # cfg: region, domains, root_user, root_password
"""

from __future__ import annotations

from typing import Any


def create_app(store: Any, cfg: Any):  # noqa: ANN201 - lazy import keeps `import buckets.s3` light
    from buckets.s3.app import create_app as _create_app

    return _create_app(store, cfg)


__all__ = ["create_app"]
