"""Where an object's files live on a disk (see ``buckets.storage.format`` for the tree).

Every path below ``buckets/`` and ``.buckets.sys/`` is built here, and no part of one is
chosen by a client except a bucket name that passed ``names.check_bucket_name``: keys
appear only as ``key_hash`` (32 hex digits), write ids, transaction ids, part-write ids and
upload ids are server-generated hex (an upload id sent by a client is used only after the
registry found a record under it), part numbers are ints. So a key such as ``../x``,
``a/./b`` or one with control characters is as harmless as any other.
"""

from __future__ import annotations

import xxhash

from buckets.storage.format import DATA_DIR, MULTIPART_DIR, TMP_DIR


def key_hash(key: str) -> str:
    return xxhash.xxh3_128_hexdigest(key.encode())


def object_dir(bucket: str, key: str) -> str:
    return f"{DATA_DIR}/{bucket}/{key_hash(key)[:3]}"


def meta_path(bucket: str, key: str, wid: str) -> str:
    return f"{object_dir(bucket, key)}/{key_hash(key)}.{wid}.meta"


def data_dir(bucket: str, key: str, wid: str) -> str:
    return f"{object_dir(bucket, key)}/{key_hash(key)}.{wid}"


def part_path(bucket: str, key: str, wid: str, number: int) -> str:
    return f"{data_dir(bucket, key, wid)}/part.{number}"


def bucket_dir(bucket: str) -> str:
    return f"{DATA_DIR}/{bucket}"


def bucket_meta(bucket: str) -> str:
    return f"{DATA_DIR}/{bucket}/.bucket.meta"


def staging(txid: str) -> str:
    return f"{TMP_DIR}/{txid}"


def upload_dir(upload_id: str) -> str:
    return f"{MULTIPART_DIR}/{upload_id}"


def upload_part(upload_id: str, pwid: str) -> str:
    return f"{MULTIPART_DIR}/{upload_id}/{pwid}.part"


UPLOAD_META = "upload.meta"
PART_META_SUFFIX = ".pmeta"


def upload_meta(upload_id: str) -> str:
    """The upload's record as created (no parts), on each of its disks: a rebuild finds it."""
    return f"{MULTIPART_DIR}/{upload_id}/{UPLOAD_META}"


def upload_part_meta(upload_id: str, pwid: str) -> str:
    """One stored part's record (its number and what the upload record says of it)."""
    return f"{MULTIPART_DIR}/{upload_id}/{pwid}{PART_META_SUFFIX}"
