"""The ``Catalog``: what the engine needs to know about buckets, objects and uploads.

The engine writes shards through ``Disk``s and records where they are through a catalog.
One node (``LocalCatalog``) keeps everything in its own LMDB ``Registry``; a cluster
(``buckets.cluster.catalog.ClusterCatalog``) keeps buckets in the Raft control plane and
object and upload entries in the replicated, bucket-partitioned index. The engine does not
know which: it calls these methods and gets the same answers and the same typed errors.

Object entries are the registry's entry dicts. Bucket records are ``{"created": ts, ...}``.
An upload record holds the upload's settings and, under ``parts``, ``{"<n>": part}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from buckets import errors
from buckets.registry import Op, Registry


class Catalog(Protocol):
    # -- buckets (few, read on every request: local, synchronous reads) -------------------
    def get_bucket(self, name: str) -> dict | None:
        """This node's view (may lag a change made through another node by a moment)."""
    def list_buckets(self) -> list[tuple[str, dict]]: ...
    async def find_bucket(self, name: str) -> dict | None:
        """Like ``get_bucket``, but sees every change acknowledged anywhere before the call."""
    async def fresh_buckets(self) -> list[tuple[str, dict]]:
        """Like ``list_buckets``, with ``find_bucket``'s freshness."""
    async def create_bucket(self, name: str, rec: dict) -> None:
        """``BucketAlreadyOwnedByYou`` when it exists."""
    async def update_bucket(self, name: str, set: dict, unset: list[str], expect: dict | None = None) -> None:
        """Replace the named settings and remove those in ``unset`` (``NoSuchBucket``); the
        caller holds the bucket's lock. ``expect``: settings that must still have these values
        (None: absent), else ``BucketSettingsChanged`` (a change through another node)."""
    async def delete_bucket(self, name: str) -> list[dict]:
        """``BucketNotEmpty`` while it holds objects; returns the uploads it dropped."""

    # -- objects --------------------------------------------------------------------------
    async def get_object(self, bucket: str, key: str, *, read: bool = False) -> dict | None:
        """The key's entry; ``read``: for a GET, which will read the object's data next."""
    def take_records(self, bucket: str, key: str, wid: str) -> dict[int, bytes]:
        """Shard records of a small write its GET's lookup already brought, by slot (once);
        the reader checks each one as if it had read it from its disk."""
    async def put_object(self, bucket: str, key: str, entry: dict, *, small: bytes | None = None,
                         finished_upload: str | None = None, displaced: bool = False) -> list[dict] | None:
        """Make ``entry`` the key's current entry (``NoSuchBucket`` if the bucket went away);
        ``finished_upload`` names a multipart upload the entry completes, dropped with it.
        With ``displaced=True`` it returns the entries the write replaced, or None when it
        cannot tell (a cluster's replica that did not say): a PUT uses that instead of
        reading the key before it commits."""
    async def delete_object(self, bucket: str, key: str, entry: dict) -> None: ...
    def check_room(self, bucket: str) -> None:
        """``StorageFull`` when the registry that takes ``bucket``'s new entries is on a disk at
        its free-space reserve (kept for deletions): asked before a new object or part."""
    async def put_object_checked(self, bucket: str, key: str, entry: dict, judge: Callable[[dict | None], None], *,
                                 small: bytes | None = None, finished_upload: str | None = None) -> dict | None:
        """A conditional write: ``judge(current)`` raises to refuse, and no other write of the
        key commits between its decision and this commit (the caller holds the key's lock; a
        cluster also locks the key on its index replicas). Returns the entry it replaced."""
    async def delete_object_checked(self, bucket: str, key: str, judge: Callable[[dict | None], None]) -> dict | None:
        """``put_object_checked`` for a delete; returns the entry it removed (None: none)."""
    async def put_version_checked(self, bucket: str, key: str, entry: dict, judge: Callable[[dict | None], None], *,
                                  small: bytes | None = None, finished_upload: str | None = None) -> list[dict]:
        """``put_version`` of a conditional write, judged as ``put_object_checked``."""
    async def list_objects(self, bucket: str, prefix: str, delimiter: str, start_after: str,
                           limit: int) -> tuple[list[tuple[str, dict]], list[str], bool]: ...
    def get_small(self, bucket: str, key: str, wid: str) -> bytes | None:
        """A locally held verified copy of a small object's bytes, if any (never required)."""

    # -- versions (versioned buckets; a cluster has none yet) ----------------------------------
    async def put_version(self, bucket: str, key: str, entry: dict, *, small: bytes | None = None,
                          finished_upload: str | None = None) -> list[dict]:
        """Make ``entry`` the current version; the previous one becomes noncurrent unless it has
        the same version id. Returns the entries it replaced (same version id)."""
    async def delete_version(self, bucket: str, key: str, vid: str) -> dict | None:
        """Remove one version for good (the next newest becomes current); the removed entry."""
    async def update_version(self, bucket: str, key: str, entry: dict) -> bool:
        """Replace one version's entry in place (same write); False when it is gone."""
    async def get_version(self, bucket: str, key: str, vid: str) -> dict | None: ...
    async def noncurrent_versions(self, bucket: str, key: str) -> list[dict]:
        """A key's versions other than the current one, newest first."""
    def key_lease(self, bucket: str, key: str):
        """An async context manager held around a conditional write's check and commit, making
        conditional writes to one key take turns across every node (a no-op on one node)."""
    def upload_lease(self, bucket: str, upload_id: str):
        """An async context manager held around a multipart upload's Complete, Abort and the
        recording of a part, making them take turns across every node (a no-op on one node,
        where the store's upload lock does it)."""
    async def list_versions(self, bucket: str, prefix: str, delimiter: str, key_marker: str,
                            version_marker: str, limit: int):
        """``Registry.scan_versions``'s page."""

    # -- multipart uploads ----------------------------------------------------------------
    async def create_upload(self, bucket: str, upload_id: str, rec: dict) -> None: ...
    async def get_upload(self, bucket: str, upload_id: str) -> dict | None: ...
    async def put_part(self, bucket: str, upload_id: str, number: int, part: list) -> list | None:
        """Record a part (replacing one with the same number); returns the replaced part."""
    async def delete_upload(self, bucket: str, upload_id: str) -> None: ...
    async def list_uploads(self, bucket: str) -> list[dict]: ...


class LocalCatalog:
    """One node: everything in the node's LMDB registry, in group-committed transactions."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def get_bucket(self, name: str) -> dict | None:
        return self.registry.get_bucket(name)

    def list_buckets(self) -> list[tuple[str, dict]]:
        return self.registry.list_buckets()

    async def find_bucket(self, name: str) -> dict | None:
        return self.registry.get_bucket(name)

    async def fresh_buckets(self) -> list[tuple[str, dict]]:
        return self.registry.list_buckets()

    def check_room(self, bucket: str) -> None:
        self.registry.check_room()

    async def create_bucket(self, name: str, rec: dict) -> None:
        existing = self.registry.get_bucket(name)
        if existing is not None:
            if existing.get("owner", "") == rec.get("owner", ""):
                raise errors.BucketAlreadyOwnedByYou(resource=name, BucketName=name)
            raise errors.BucketAlreadyExists(resource=name, BucketName=name)
        await self.registry.commit([Op("put_bucket", name, value=rec)])

    async def update_bucket(self, name: str, set: dict, unset: list[str], expect: dict | None = None) -> None:
        current = self.registry.get_bucket(name)
        if current is None:
            raise errors.NoSuchBucket(resource=name, BucketName=name)
        if any(current.get(k) != v for k, v in (expect or {}).items()):
            raise errors.BucketSettingsChanged(resource=name)
        record = {k: v for k, v in current.items() if k not in unset}
        record.update(set)
        await self.registry.commit([Op("put_bucket", name, value=record)])

    async def delete_bucket(self, name: str) -> list[dict]:
        if self.registry.bucket_has_objects(name):
            raise errors.BucketNotEmpty(resource=name, BucketName=name)
        uploads = self.registry.list_uploads(name)
        ops = [Op("delete_upload", name, u["uid"]) for u in uploads]
        await self.registry.commit(ops + [Op("delete_bucket", name)])
        return uploads

    async def get_object(self, bucket: str, key: str, *, read: bool = False) -> dict | None:
        return self.registry.get_object(bucket, key)

    def take_records(self, bucket: str, key: str, wid: str) -> dict[int, bytes]:
        return {}  # one node's disks are all local: the reader reads them

    async def put_object(self, bucket: str, key: str, entry: dict, *, small: bytes | None = None,
                         finished_upload: str | None = None, displaced: bool = False) -> list[dict] | None:
        ops = [Op("put_object", bucket, key, entry, data=small)]
        if finished_upload is not None:
            ops.append(Op("delete_upload", bucket, finished_upload))
        await self.registry.commit(ops)
        if displaced:
            # Read in the commit's own write transaction: a lookup before it, on the event
            # loop, cost a PUT of a new key about 5% of its CPU on a store of a million objects
            # (LMDB pages walked twice, the first time not yet mapped).
            return [ops[0].result] if ops[0].result is not None else []
        return None

    async def delete_object(self, bucket: str, key: str, entry: dict) -> None:
        await self.registry.commit([Op("delete_object", bucket, key)])

    # One node: the store's key lock, held by the caller, keeps other writes out.
    async def put_object_checked(self, bucket: str, key: str, entry: dict, judge: Callable[[dict | None], None], *,
                                 small: bytes | None = None, finished_upload: str | None = None) -> dict | None:
        current = self.registry.get_object(bucket, key)
        judge(current)
        await self.put_object(bucket, key, entry, small=small, finished_upload=finished_upload)
        return current

    async def delete_object_checked(self, bucket: str, key: str, judge: Callable[[dict | None], None]) -> dict | None:
        current = self.registry.get_object(bucket, key)
        judge(current)
        if current is not None:
            await self.delete_object(bucket, key, current)
        return current

    async def put_version_checked(self, bucket: str, key: str, entry: dict, judge: Callable[[dict | None], None], *,
                                  small: bytes | None = None, finished_upload: str | None = None) -> list[dict]:
        judge(self.registry.get_object(bucket, key))
        return await self.put_version(bucket, key, entry, small=small, finished_upload=finished_upload)

    async def list_objects(self, bucket: str, prefix: str, delimiter: str, start_after: str,
                           limit: int) -> tuple[list[tuple[str, dict]], list[str], bool]:
        return await self.registry.list_objects(bucket, prefix, delimiter, start_after, limit)

    def get_small(self, bucket: str, key: str, wid: str) -> bytes | None:
        return self.registry.get_small(bucket, key, wid)

    async def put_version(self, bucket: str, key: str, entry: dict, *, small: bytes | None = None,
                          finished_upload: str | None = None) -> list[dict]:
        op = Op("put_version", bucket, key, entry, data=small)
        ops = [op]
        if finished_upload is not None:
            ops.append(Op("delete_upload", bucket, finished_upload))
        await self.registry.commit(ops)
        return list(op.result or ())

    async def delete_version(self, bucket: str, key: str, vid: str) -> dict | None:
        op = Op("delete_version", bucket, key, vid)
        await self.registry.commit([op])
        return op.result

    async def update_version(self, bucket: str, key: str, entry: dict) -> bool:
        op = Op("update_version", bucket, key, entry)
        await self.registry.commit([op])
        return op.applied

    async def get_version(self, bucket: str, key: str, vid: str) -> dict | None:
        return self.registry.get_object_version(bucket, key, vid)

    async def noncurrent_versions(self, bucket: str, key: str) -> list[dict]:
        return self.registry.noncurrent_versions(bucket, key)

    def key_lease(self, bucket: str, key: str):
        """One node: the store's key lock already serializes a key's conditional writes."""
        return contextlib.nullcontext()

    def upload_lease(self, bucket: str, upload_id: str):
        """One node: the store's upload lock already serializes an upload's requests."""
        return contextlib.nullcontext()

    async def list_versions(self, bucket: str, prefix: str, delimiter: str, key_marker: str,
                            version_marker: str, limit: int):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: self.registry.scan_versions(
            bucket, prefix, delimiter, key_marker, version_marker, limit))

    async def create_upload(self, bucket: str, upload_id: str, rec: dict) -> None:
        await self.registry.commit([Op("put_upload", bucket, upload_id, rec)])

    async def get_upload(self, bucket: str, upload_id: str) -> dict | None:
        return self.registry.get_upload(bucket, upload_id)

    async def put_part(self, bucket: str, upload_id: str, number: int, part: list) -> list | None:
        # Read-modify-write of the upload record: the caller holds the upload's lock.
        rec = self.registry.get_upload(bucket, upload_id)
        if rec is None:
            raise errors.NoSuchUpload(UploadId=upload_id)
        old = rec["parts"].get(str(number))
        rec["parts"][str(number)] = part
        await self.registry.commit([Op("put_upload", bucket, upload_id, rec)])
        return old

    async def delete_upload(self, bucket: str, upload_id: str) -> None:
        await self.registry.commit([Op("delete_upload", bucket, upload_id)])

    async def list_uploads(self, bucket: str) -> list[dict]:
        return self.registry.list_uploads(bucket)
