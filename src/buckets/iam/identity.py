"""Who a caller is, in the names S3 uses for it.

A Buckets user is its access key. S3 names an owner three ways, and each is derived from
the access key (so nothing extra is stored and every node derives the same): the
*canonical ID* (64 hex digits, in ACLs and ``Owner`` elements), the *account ID* (12
digits, what ``x-amz-expected-bucket-owner`` carries), and the *user ARN*
(``arn:aws:iam::<account id>:user/<access key>``, a policy ``Principal``). The root user's
buckets are recorded with the owner ``""`` (and buckets made before owners existed too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache


@lru_cache(maxsize=4096)
def canonical_id(access_key: str) -> str:
    return hashlib.sha256(f"buckets-owner:{access_key}".encode("utf-8", "surrogateescape")).hexdigest()


@lru_cache(maxsize=4096)
def account_id(access_key: str) -> str:
    digest = hashlib.sha256(f"buckets-account:{access_key}".encode("utf-8", "surrogateescape")).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**12:012d}"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller: ``access_key`` None is anonymous; ``root`` the root user."""

    access_key: str | None
    root: bool = False

    @property
    def anonymous(self) -> bool:
        return self.access_key is None

    @property
    def owner_name(self) -> str | None:
        """The owner name this caller's buckets carry ("" for root, None for anonymous)."""
        if self.root:
            return ""
        return self.access_key

    def is_owner(self, owner: str) -> bool:
        return not self.anonymous and self.owner_name == owner


def owner_access_key(owner: str, root_user: str) -> str:
    """The access key of a recorded owner ("" is the root user)."""
    return owner or root_user
