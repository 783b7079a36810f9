"""The admin API's JSON in and out, shared by its handler modules (``api``, ``cluster_api``,
``migration_api``): one answer format, one set of body refusals."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from buckets.errors import InvalidArgument


def answer(payload: Any, status: int = 200) -> web.Response:
    """A JSON answer (values JSON cannot spell, such as times, as strings)."""
    return web.Response(status=status, text=json.dumps(payload, default=str) + "\n",
                        content_type="application/json")


def json_body(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object (empty: ``{}``); anything else is ``InvalidArgument``."""
    if not body:
        return {}
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("the request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return document
