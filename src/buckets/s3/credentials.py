"""The server's credential source for request authentication.

Implements the auth layer's `CredentialStore` protocol over the root credentials from
the server config and the engine's durable user table (`store.users`).
"""

from __future__ import annotations

import hmac
from typing import Any


class ServerCredentials:
    """Root user from config first, then enabled users from `store.users`."""

    def __init__(self, root_user: str, root_password: str, users: Any | None) -> None:
        self._root_user = root_user
        self._root_password = root_password
        self._users = users

    async def secret_for(self, access_key: str) -> str | None:
        if hmac.compare_digest(access_key.encode("utf-8", "surrogateescape"),
                               self._root_user.encode("utf-8", "surrogateescape")):
            return self._root_password
        if self._users is None:
            return None
        record = await self._users.get(access_key)
        if record is None or not getattr(record, "enabled", True):
            return None
        return record.secret
