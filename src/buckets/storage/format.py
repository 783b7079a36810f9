"""The per-disk format file and the fixed directory names of a disk.

Layout of one disk root::

    .buckets.sys/format.json          deployment id, disk id, slot, layout (this module)
    .buckets.sys/tmp/<txid>/          staging for writes in flight (wiped at start)
    .buckets.sys/multipart/<upload>/  erasure-coded parts of uploads in progress
    .buckets.sys/registry/            the node's LMDB registry (on the disk registry.json names;
                                      local disks only, reached by path, not through Disk)
    .buckets.sys/registry.json        {epoch, disk_id}: where the authoritative registry is
    .buckets.sys/users.meta           mirror of the user table (secrets sealed), for rebuilds
    .buckets.sys/log/<seg>.seg        record log of small writes (``buckets.storage.records``)
    buckets/<bucket>/.bucket.meta     bucket record
    buckets/<bucket>/<h[:3]>/         fan-out directory; h = xxh3_128(key) hex
        <h>.<wid>.meta                metadata (+ inline data) of one write of the object
        <h>.<wid>/part.<n>            shard files of that write
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field

from buckets.errors import FormatError

SYS_DIR = ".buckets.sys"
FORMAT_FILE = f"{SYS_DIR}/format.json"
TMP_DIR = f"{SYS_DIR}/tmp"
MULTIPART_DIR = f"{SYS_DIR}/multipart"
REGISTRY_DIR = f"{SYS_DIR}/registry"
REGISTRY_POINTER = f"{SYS_DIR}/registry.json"
USERS_FILE = f"{SYS_DIR}/users.meta"
LOG_DIR = f"{SYS_DIR}/log"  # the record log of small writes (buckets.storage.records)
DATA_DIR = "buckets"
FORMAT_VERSION = 1


@dataclass(slots=True)
class DiskFormat:
    deployment_id: str
    disk_id: str
    slot: int  # position of this disk in the node's disk list
    disks: list[str]  # every disk id of the node, in slot order
    k: int
    m: int
    block_size: int
    partitions: int
    format: str = "buckets"
    version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "DiskFormat":
        try:
            doc = json.loads(data)
            if doc.get("format") != "buckets":
                raise FormatError(f"{where}: not a Buckets format file")
            if doc.get("version") != FORMAT_VERSION:
                raise FormatError(f"{where}: unsupported format version {doc.get('version')}")
            return cls(**doc)
        except FormatError:
            raise
        except (ValueError, TypeError) as exc:
            raise FormatError(f"{where}: unreadable format file ({exc})") from None


def new_format(slot: int, disks: list[str], deployment_id: str, k: int, m: int,
               block_size: int, partitions: int) -> DiskFormat:
    return DiskFormat(deployment_id=deployment_id, disk_id=disks[slot], slot=slot, disks=disks,
                      k=k, m=m, block_size=block_size, partitions=partitions)


def new_ids(n: int) -> tuple[str, list[str]]:
    return str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(n)]
