"""Object metadata: the registry entry and the per-disk metadata file.

A registry entry is a msgpack-friendly dict with short field names (it is stored once
per object and scanned by listings). The metadata file on each disk holds the same
fields plus ``bucket``, ``key``, the ``shard`` index that disk holds and, for small
objects, that shard's framed data inline (``data``). File layout::

    b"BKM1" | xxh3_64(payload) as 8 bytes little-endian | msgpack(payload)
"""

from __future__ import annotations

import struct

import msgpack
import xxhash

from buckets.engine.types import ObjectInfo, PartInfo, UploadInfo
from buckets.errors import CorruptData

MAGIC = b"BKM1"
_HDR = struct.Struct("<4sQ")


def encode_meta_file(payload: dict) -> bytes:
    body = msgpack.packb(payload, use_bin_type=True)
    return _HDR.pack(MAGIC, xxhash.xxh3_64_intdigest(body)) + body


def decode_meta_file(raw: bytes) -> dict:
    if len(raw) < _HDR.size:
        raise CorruptData("metadata file too short")
    magic, ck = _HDR.unpack_from(raw, 0)
    body = raw[_HDR.size:]
    if magic != MAGIC or ck != xxhash.xxh3_64_intdigest(body):
        raise CorruptData("metadata file checksum mismatch")
    return msgpack.unpackb(body, raw=False)


def bucket_meta_file(name: str, record: dict) -> bytes:
    """A bucket's ``.bucket.meta``: its whole record (creation time, owner, settings such as
    its policy and ACL), versioned so that a registry rebuild keeps the newest one."""
    import time

    return encode_meta_file({**record, "bucket": name, "version": time.time_ns()})


def entry_to_info(bucket: str, key: str, e: dict) -> ObjectInfo:
    info = _entry_to_info(bucket, key, e)
    info.owner = e.get("own")
    info.tags = dict(e.get("tg") or {})
    info.lock_mode, info.lock_until, info.legal_hold = e.get("lm"), e.get("lu"), e.get("lh")
    info.upload_id = e.get("mpu")
    info.delete_marker = bool(e.get("dm"))
    return info


def entry_to_version(bucket: str, key: str, e: dict, latest: bool) -> ObjectInfo:
    """A ListObjectVersions item: the listing fields, whose owner, latest or not, marker or not."""
    info = entry_to_listing(bucket, key, e)
    info.is_latest = latest
    info.delete_marker = bool(e.get("dm"))
    info.owner = e.get("own")
    return info


def _entry_to_info(bucket: str, key: str, e: dict) -> ObjectInfo:
    # Copies: ``e`` may be the registry cache's own entry, which callers must not be able to change.
    sse = e.get("sse")
    if sse:  # parts are recorded with their stored (encrypted) sizes; clients see plaintext sizes
        from buckets.engine import crypto

        parts = [PartInfo(p[0], crypto.plain_size(p[1]), p[2], dict(p[3] or {}), p[4]) for p in e.get("parts", ())]
        return ObjectInfo(
            bucket=bucket, key=key, size=e["size"], etag=e["etag"], last_modified=e["mt"],
            headers=dict(e.get("h") or {}), user_meta=dict(e.get("um") or {}), checksums=dict(e.get("ck") or {}),
            checksum_type=e.get("ckt"), version_id=e.get("vid", "null"), storage_class=e.get("sc", "STANDARD"),
            parts=parts, content_hash=e.get("ch", ""), sse=crypto.sse_info(sse))
    return ObjectInfo(
        bucket=bucket, key=key, size=e["size"], etag=e["etag"], last_modified=e["mt"],
        headers=dict(e.get("h") or {}), user_meta=dict(e.get("um") or {}), checksums=dict(e.get("ck") or {}),
        checksum_type=e.get("ckt"), version_id=e.get("vid", "null"), storage_class=e.get("sc", "STANDARD"),
        parts=[PartInfo(p[0], p[1], p[2], dict(p[3] or {}), p[4]) for p in e.get("parts", ())],
        content_hash=e.get("ch", ""),
    )


def entry_to_listing(bucket: str, key: str, e: dict) -> ObjectInfo:
    """What a listing shows (no parts, headers or metadata). ``e`` is a freshly decoded
    record from a registry scan, never the cache's: no copies needed."""
    return ObjectInfo(bucket=bucket, key=key, size=e["size"], etag=e["etag"], last_modified=e["mt"],
                      checksums=e.get("ck") or {}, checksum_type=e.get("ckt"),
                      version_id=e.get("vid", "null"), storage_class=e.get("sc", "STANDARD"))


def upload_to_info(rec: dict) -> UploadInfo:
    return UploadInfo(bucket=rec["bucket"], key=rec["key"], upload_id=rec["uid"], initiated=rec["init"],
                      headers=rec.get("h") or {}, user_meta=rec.get("um") or {},
                      checksum_algorithm=rec.get("ca"), checksum_type=rec.get("ct"),
                      storage_class=rec.get("sc", "STANDARD"), sse=_upload_sse(rec))


def _upload_sse(rec: dict):
    if not rec.get("sse"):
        return None
    from buckets.engine import crypto

    return crypto.sse_info(rec["sse"])
