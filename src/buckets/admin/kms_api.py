"""The key store's admin endpoints (under ``/_buckets/admin/v1/``, root only, like the rest).

===========  ==================================  =============================================
method       path (after the prefix)             what
===========  ==================================  =============================================
GET          ``kms/keys``                        the master key's state (name, fingerprint,
                                                 where it was read from, or what is wrong)
                                                 and every KMS key (names, never material)
PUT          ``kms/keys/{name}``                 create a KMS key (``buckets-admin kms key
                                                 create``): 32 random bytes, wrapped by the
                                                 master key; 409 when the name is taken
===========  ==================================  =============================================

In a cluster the keys are control-plane settings, so a key created through one node is
usable through every node at once. ``routes(store)`` gives ``AdminApi`` its table rows.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from buckets.admin.jsonio import answer
from buckets.engine.crypto import KMSNotConfigured

log = logging.getLogger("buckets.admin")


class KmsApi:
    def __init__(self, store: Any) -> None:
        self.store = store

    @property
    def kms(self) -> Any:
        kms = getattr(self.store, "kms", None)
        if kms is None:
            raise KMSNotConfigured()
        return kms

    async def list_keys(self, request: web.Request, body: bytes) -> web.Response:
        kms = self.kms
        return answer({"master": kms.status(), "keys": kms.list_keys()})

    async def create_key(self, request: web.Request, body: bytes, name: str) -> web.Response:
        created = await self.kms.create_key(name)
        log.info("KMS key %s created through the admin API", name)
        return answer(created)


def routes(store: Any) -> list[tuple[re.Pattern[str], dict[str, Any], str]]:
    api = KmsApi(store)
    return [
        (re.compile(r"kms/keys"), {"GET": api.list_keys}, "kms.keys"),
        (re.compile(r"kms/keys/(?P<name>[^/]+)"), {"PUT": api.create_key}, "kms.key"),
    ]
