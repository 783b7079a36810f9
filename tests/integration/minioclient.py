"""Helpers for the tests that drive MinIO's Python SDK (test_client_minio.py, test_tls.py)."""

from __future__ import annotations

from typing import Any


def read_object(mc: Any, bucket: str, key: str, **kwargs: Any) -> bytes:
    """The body of ``get_object`` (``offset``, ``length``, ``version_id``, ``ssec`` ...), its
    connection handed back to the pool as the SDK asks its users to."""
    response = mc.get_object(bucket, key, **kwargs)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()
