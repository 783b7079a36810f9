"""``ClusterCatalog``: the engine's ``Catalog`` over the control plane and the replicated index.

- Buckets live in the Raft control plane: creating or deleting one is a committed command, so
  every node decides the same way (two nodes racing to create a name: exactly one wins), and
  reading one is a local snapshot lookup (no round trip on the request path).
- Object entries live in the bucket-partitioned, quorum-replicated index
  (``buckets.cluster.index``).
- Multipart uploads live in the same index, in a shadow "bucket" of each bucket
  (``<bucket>\\x01uploads``, which no S3 name can spell and no listing of the bucket reaches),
  replicated on the bucket's own replicas: the upload record under its id, and each part as its
  own record ``<upload id>/<part number>``, so parts uploaded through different nodes at the
  same time never overwrite each other's record (no read-modify-write across nodes).
- Users (``ClusterUserTable``) live in the control plane; ``buckets.engine.users.UserStore``
  seals and opens their secrets exactly as on one node.
"""

from __future__ import annotations

import time
from typing import Any

from buckets import errors
from buckets.cluster.control import ControlPlane
from buckets.cluster.index import ReplicatedIndex
from buckets.registry import Op

UPLOADS = "\x01uploads"


def index_bucket(name: str) -> str:
    """The bucket whose replicas hold ``name``'s entries (a shadow bucket maps to its owner)."""
    return name.split("\x01", 1)[0]


def _part_key(upload_id: str, number: int) -> str:
    return f"{upload_id}/{number:05d}"


class ClusterCatalog:
    def __init__(self, control: ControlPlane, index: ReplicatedIndex) -> None:
        self.control = control
        self.index = index

    # -- buckets ------------------------------------------------------------------------------
    def get_bucket(self, name: str) -> dict | None:
        rec = self.control.snapshot.buckets.get(name)
        return None if rec is None else {"created": rec.created, "owner": rec.owner, **dict(rec.settings)}

    def list_buckets(self) -> list[tuple[str, dict]]:
        return sorted(((n, {"created": r.created, "owner": r.owner}) for n, r in self.control.snapshot.buckets.items()),
                      key=lambda kv: kv[0].encode())

    async def find_bucket(self, name: str) -> dict | None:
        found = self.get_bucket(name)
        if found is None:  # maybe created through another node a moment ago: catch up first
            await self.control.read(linearizable=True)
            found = self.get_bucket(name)
        return found

    async def fresh_buckets(self) -> list[tuple[str, dict]]:
        await self.control.read(linearizable=True)
        return self.list_buckets()

    async def create_bucket(self, name: str, rec: dict) -> None:
        await self.control.apply("create_bucket", name=name, owner=rec.get("owner", ""))

    async def delete_bucket(self, name: str) -> list[dict]:
        objects, prefixes, _ = await self.index.list(name, limit=1)
        if objects or prefixes:
            raise errors.BucketNotEmpty(resource=name, BucketName=name)
        uploads = await self.list_uploads(name)
        await self.control.apply("delete_bucket", name=name)
        for u in uploads:
            await self.delete_upload(name, u["uid"])
        return uploads

    # -- objects ------------------------------------------------------------------------------
    async def get_object(self, bucket: str, key: str) -> dict | None:
        return await self.index.get(bucket, key)

    async def put_object(self, bucket: str, key: str, entry: dict, *, small: bytes | None = None,
                         finished_upload: str | None = None) -> None:
        if self.get_bucket(bucket) is None:
            raise errors.NoSuchBucket(resource=bucket, BucketName=bucket)
        await self.index.put(bucket, key, entry, small)
        if finished_upload is not None:
            await self.delete_upload(bucket, finished_upload)

    async def delete_object(self, bucket: str, key: str, entry: dict) -> None:
        await self.index.delete(bucket, key, entry["wid"])

    async def list_objects(self, bucket: str, prefix: str, delimiter: str, start_after: str,
                           limit: int) -> tuple[list[tuple[str, dict]], list[str], bool]:
        return await self.index.list(bucket, prefix, delimiter, start_after, limit)

    def get_small(self, bucket: str, key: str, wid: str) -> bytes | None:
        # Only this node's replica's copy, and only for the write the caller already resolved
        # through a quorum read (``wid``), so it can never be stale.
        return self.index.local.registry.get_small(bucket, key, wid)

    # -- multipart uploads ------------------------------------------------------------------------
    async def create_upload(self, bucket: str, upload_id: str, rec: dict) -> None:
        await self.index.put(bucket + UPLOADS, upload_id, dict(rec, wid=upload_id, mt=rec.get("init", time.time()),
                                                                parts={}))

    async def _records(self, bucket: str, prefix: str, delimiter: str) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        after = ""
        while True:
            objects, _, truncated = await self.index.list(bucket + UPLOADS, prefix, delimiter, after, 1000,
                                                          full=True)
            out.extend(objects)
            if not truncated or not objects:
                return out
            after = objects[-1][0]

    async def get_upload(self, bucket: str, upload_id: str) -> dict | None:
        rec = await self.index.get(bucket + UPLOADS, upload_id)
        if rec is None:
            return None
        parts = {}
        for _, part in await self._records(bucket, upload_id + "/", ""):
            parts[str(part["n"])] = part["part"]
        return dict(rec, parts=parts)

    async def put_part(self, bucket: str, upload_id: str, number: int, part: list) -> list | None:
        old = await self.index.get(bucket + UPLOADS, _part_key(upload_id, number))
        await self.index.put(bucket + UPLOADS, _part_key(upload_id, number),
                             {"wid": part[0], "mt": part[4], "n": number, "part": part, "size": part[1],
                              "etag": part[2]})
        return old["part"] if old is not None else None

    async def delete_upload(self, bucket: str, upload_id: str) -> None:
        await self.index.delete(bucket + UPLOADS, upload_id, upload_id)
        for key, part in await self._records(bucket, upload_id + "/", ""):
            await self.index.delete(bucket + UPLOADS, key, part.get("wid", ""))

    async def list_uploads(self, bucket: str) -> list[dict]:
        return [dict(rec, parts={}) for _, rec in await self._records(bucket, "", "/")]


class ClusterUserTable:
    """The user table ``UserStore`` works on, kept in the control plane (secrets stay sealed)."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def get_user(self, access_key: str) -> dict | None:
        rec = self.control.snapshot.users.get(access_key)
        if rec is None:
            return None
        return {"secret": rec.secret, "enabled": rec.enabled, "created": rec.created, "policy": rec.policy}

    def list_users(self) -> list[tuple[str, dict]]:
        return [(ak, self.get_user(ak)) for ak in sorted(self.control.snapshot.users)]  # type: ignore[misc]

    async def commit(self, ops: list[Op]) -> None:
        for op in ops:
            if op.kind == "put_user":
                value: dict[str, Any] = op.value
                await self.control.apply("put_user", access_key=op.name, secret=value["secret"],
                                         status="enabled" if value.get("enabled", True) else "disabled",
                                         policy=value.get("policy", "readwrite"))
            elif op.kind == "delete_user":
                await self.control.apply("delete_user", access_key=op.name)
            else:
                raise ValueError(f"not a user change: {op.kind}")
