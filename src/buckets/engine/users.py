"""Users (access key → secret, policy) and named access policies, kept durably in the registry.

SigV4 needs the secret itself (it is an HMAC key), so secrets cannot be hashed; they are
encrypted with AES-256-GCM under a key-encryption key derived (HKDF-SHA256) from the root
credentials, so a copy of the registry alone does not reveal them. Changing the root
password makes stored secrets unreadable; ``rekey`` re-encrypts them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from buckets.registry import Op, Registry


@dataclass(slots=True)
class UserRecord:
    access_key: str
    secret: str
    enabled: bool = True
    created: float = 0.0
    policy: str = "readwrite"


def derive_kek(root_user: str, root_password: str, deployment_id: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=deployment_id.encode(),
                info=b"buckets users v1").derive(f"{root_user}\0{root_password}".encode())


Mirror = Callable[[bytes], Awaitable[None]]


def users_snapshot(registry: Registry) -> bytes:
    """Every user record (secrets still sealed), as the mirror file written to each disk."""
    from buckets.engine.meta import encode_meta_file

    return encode_meta_file({"version": time.time_ns(), "users": dict(registry.list_users()),
                             "policies": dict(registry.list_policies())})


class UserStore:
    """Users in the registry, mirrored after every change to a file on each disk
    (``.buckets.sys/users.meta``) so that a registry rebuild brings them back."""

    def __init__(self, registry: Registry, kek: bytes | None = None, mirror: Mirror | None = None) -> None:
        self.registry = registry
        self._kek = kek
        self._mirror = mirror

    async def _changed(self) -> None:
        if self._mirror is not None:
            await self._mirror(users_snapshot(self.registry))

    def set_kek(self, kek: bytes) -> None:
        self._kek = kek

    def _seal(self, access_key: str, secret: str) -> bytes:
        if self._kek is None:
            raise RuntimeError("user store has no key-encryption key")
        nonce = os.urandom(12)
        return nonce + AESGCM(self._kek).encrypt(nonce, secret.encode(), access_key.encode())

    def _open(self, access_key: str, blob: bytes) -> str | None:
        if self._kek is None:
            return None
        try:
            return AESGCM(self._kek).decrypt(blob[:12], blob[12:], access_key.encode()).decode()
        except Exception:  # wrong key (root password changed) or damaged record
            return None

    async def get(self, access_key: str) -> UserRecord | None:
        rec = self.registry.get_user(access_key)
        if rec is None:
            return None
        secret = self._open(access_key, rec["secret"])
        if secret is None:
            return None
        return UserRecord(access_key, secret, rec.get("enabled", True), rec.get("created", 0.0),
                          rec.get("policy", "readwrite"))

    async def put(self, access_key: str, secret: str, *, enabled: bool = True, policy: str | None = None) -> None:
        """Add a user or give it a new secret; ``policy`` None keeps the one it has (a new
        user gets readwrite)."""
        existing = self.registry.get_user(access_key)
        created = existing.get("created", time.time()) if existing else time.time()
        if policy is None:
            policy = existing.get("policy", "readwrite") if existing else "readwrite"
        await self.registry.commit([Op("put_user", access_key, value={
            "secret": self._seal(access_key, secret), "enabled": enabled, "created": created, "policy": policy})])
        await self._changed()

    async def set_enabled(self, access_key: str, enabled: bool) -> bool:
        rec = self.registry.get_user(access_key)
        if rec is None:
            return False
        rec["enabled"] = enabled
        await self.registry.commit([Op("put_user", access_key, value=rec)])
        await self._changed()
        return True

    async def remove(self, access_key: str) -> bool:
        if self.registry.get_user(access_key) is None:
            return False
        await self.registry.commit([Op("delete_user", access_key)])
        await self._changed()
        return True

    async def set_policy(self, access_key: str, policy: str) -> bool:
        """Attach ``policy`` (a canned or named policy's name, or a JSON document) to a user."""
        rec = self.registry.get_user(access_key)
        if rec is None:
            return False
        rec["policy"] = policy
        await self.registry.commit([Op("put_user", access_key, value=rec)])
        await self._changed()
        return True

    # -- named policies (``buckets-admin policy``) -------------------------------------------
    def get_policy(self, name: str) -> dict | None:
        """``{"document": <policy JSON text>, "created": ts}`` or None."""
        return self.registry.get_policy(name)

    def list_policies(self) -> list[tuple[str, dict]]:
        return self.registry.list_policies()

    async def put_policy(self, name: str, document: str) -> None:
        existing = self.registry.get_policy(name)
        created = existing.get("created", time.time()) if existing else time.time()
        await self.registry.commit([Op("put_policy", name, value={"document": document, "created": created})])
        await self._changed()

    async def delete_policy(self, name: str) -> bool:
        if self.registry.get_policy(name) is None:
            return False
        await self.registry.commit([Op("delete_policy", name)])
        await self._changed()
        return True

    async def list(self) -> list[UserRecord]:
        out = []
        for ak, rec in self.registry.list_users():
            out.append(UserRecord(ak, "", rec.get("enabled", True), rec.get("created", 0.0),
                                  rec.get("policy", "readwrite")))
        return out
