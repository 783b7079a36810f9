"""Helpers for engine tests: body streams, reading objects back, and looking at the disks."""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import TYPE_CHECKING

from buckets.engine import paths
from buckets.storage.format import DATA_DIR, MULTIPART_DIR, TMP_DIR

if TYPE_CHECKING:
    from buckets import Store
    from buckets.cluster.index import ReplicatedIndex

# Small geometry so multi-block objects stay cheap: 16 KiB blocks, inline up to 4 KiB.
BLOCK = 16 * 1024
INLINE = 4 * 1024
MiB = 1024 * 1024


def content(key: str, size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes for ``key``."""
    seed = hashlib.sha256(key.encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest() * 32
        counter += 1
    return bytes(out[:size])


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    """Yield ``data`` in uneven chunks, with a scheduling point between them."""
    step = max(1, size)
    for off in range(0, len(data), step):
        yield data[off:off + step]
        await asyncio.sleep(0)


async def read_all(reader) -> bytes:
    out = bytearray()
    async for chunk in reader:
        out += chunk
    return bytes(out)


async def get_bytes(store, bucket: str, key: str, **kw) -> bytes:
    return await read_all(await store.get_object(bucket, key, **kw))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def files_under(root: str) -> list[str]:
    """Every file (relative path) under ``root``; [] if it does not exist."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def staging_files(disk_paths: list[str]) -> list[str]:
    """Everything left in the staging areas (files and directories)."""
    left = []
    for p in disk_paths:
        tmp = os.path.join(p, TMP_DIR)
        if os.path.isdir(tmp):
            left += [os.path.join(tmp, e) for e in os.listdir(tmp)]
    return left


def object_files(disk_paths: list[str], bucket: str) -> list[str]:
    """Every file of a bucket's objects on every disk, the bucket record excluded."""
    out = []
    for p in disk_paths:
        root = os.path.join(p, DATA_DIR, bucket)
        out += [os.path.join(root, f) for f in files_under(root) if f != ".bucket.meta"]
    return out


def key_files(disk_paths: list[str], bucket: str, key: str) -> list[str]:
    """Every file belonging to ``key`` (any write) on every disk."""
    prefix = paths.key_hash(key)
    out = []
    for p in disk_paths:
        d = os.path.join(p, paths.object_dir(bucket, key))
        out += [os.path.join(d, f) for f in files_under(d) if f.split("/")[0].startswith(prefix)]
    return out


def upload_files(disk_paths: list[str], upload_id: str | None = None) -> list[str]:
    """The part files of one upload (or of every upload) on the disks; the records beside them
    (``upload.meta``, ``<pwid>.pmeta``: ``upload_records``) are not counted."""
    out = []
    for p in disk_paths:
        root = os.path.join(p, MULTIPART_DIR, upload_id) if upload_id else os.path.join(p, MULTIPART_DIR)
        out += [os.path.join(root, f) for f in files_under(root) if f.endswith(".part")]
    return out


def upload_records(disk_paths: list[str], upload_id: str) -> list[str]:
    """The records a registry rebuild reads back: ``upload.meta`` and each part's ``.pmeta``."""
    out = []
    for p in disk_paths:
        root = os.path.join(p, MULTIPART_DIR, upload_id)
        out += [os.path.join(root, f) for f in files_under(root) if not f.endswith(".part")]
    return out


async def eventually(check, timeout: float = 5.0, interval: float = 0.02):
    """Poll ``check()`` (sync) until it returns truthy; return its value or fail with the last one."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


async def heal_left_out(store, bucket: str, key: str) -> None:
    """On a loaded machine a disk can lag past a write's budget (``hedge.LAG_MIN``): the write
    leaves its slot out, acknowledged degraded, to be healed once the disk keeps up. A test
    that counts an object's files calls this first: if any write left a slot out, the
    avoidance is made to lapse and the object healed at once (a no-op otherwise)."""
    if not store.slow_sources.left_out:
        return
    from buckets.engine import hedge
    from buckets.engine.heal import heal_object

    clock = store.slow_sources._clock
    store.slow_sources._clock = lambda: clock() + 2 * hedge.SLOW_MAX
    result = await heal_object(store, bucket, key, deep=True)
    assert result.repaired == result.bad and not result.deferred, result


def shard_file(store, bucket: str, key: str, slot: int) -> str:
    """Absolute path of the file holding shard ``slot`` of the current write of ``key``.

    For a streamed object that is the shard file of part 1; for an inline object it is the
    metadata file (the shard's data lives inside it).
    """
    entry = store.registry.get_object(bucket, key)
    disk = store.by_id[entry["disks"][slot]]
    if entry["inline"]:
        rel = paths.meta_path(bucket, key, entry["wid"])
    else:
        rel = paths.part_path(bucket, key, entry["wid"], 1)
    return disk.local_path(rel)


# -- a store with a cluster node's catalog ----------------------------------------------------------
def files_of(paths: list[str], wid: str) -> list[str]:
    out = []
    for root in paths:
        out += [f for f in glob.glob(os.path.join(root, "buckets", "**", "*"), recursive=True)
                if wid in f and os.path.isfile(f)]
    return sorted(out)


def files_on(store: Store, disk_ids: list[str], wid: str) -> list[str]:
    return files_of([d.root for d in store.disks_for(disk_ids)], wid)


async def as_cluster_node(store: Store, versioned: bool) -> ReplicatedIndex:
    """Give ``store`` a cluster node's catalog: the bucket ``bkt`` in a control-plane snapshot,
    its index on one replica (this node's registry)."""
    from buckets.cluster.catalog import ClusterCatalog
    from buckets.cluster.control_records import BucketRecord
    from buckets.cluster.index import IndexReplica, ReplicatedIndex

    settings = {"versioning": "Enabled"} if versioned else {}
    snapshot = SimpleNamespace(buckets={"bkt": BucketRecord("bkt", 1.0, "", settings)},
                               topology=SimpleNamespace(nodes=[]))
    control = SimpleNamespace(snapshot=snapshot)
    replica = IndexReplica(store.registry)
    replica.bucket_known = lambda name: name in snapshot.buckets
    replica.bucket_created = lambda name: 1.0 if name in snapshot.buckets else None

    async def transport(node: str, method: str, args: dict):
        return await replica.handlers()[method](args)

    index = ReplicatedIndex("n1", replica, transport, lambda bucket: ["n1"])
    index.bucket_created = replica.bucket_created
    store.catalog = ClusterCatalog(control, index)
    return index
