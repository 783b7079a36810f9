"""The compact form of an object's metadata entry, shared by the disks' log records
(``engine/smalllog.py``) and the registry's records of current objects.

A 4 KiB object's metadata is most of what it costs beyond its bytes, and it is stored
k+m+1 times (one log record per disk, one registry record). ``compact`` stores the same
entry in about half the bytes: defaults left out, the one part of a single-part object left
out when it only repeats the object's size, ETag, checksums and time, ids and hashes as raw
bytes instead of hex, disk ids as 16 bytes instead of 36 characters. ``z`` marks a compact
document; ``expand`` gives back exactly the entry ``compact`` was given (``compactable``
says which entries that holds for: the ones with every defaulted field present).
"""

from __future__ import annotations

import base64
import binascii
import functools
import uuid

# What a compact document leaves out when it holds the default (restored by ``expand``).
_DEFAULTS = {"h": {}, "um": {}, "ck": {}, "ckt": None, "sc": "STANDARD", "inline": True, "bs": 1 << 20}
_HEX = frozenset("0123456789abcdef")
MARK = "z"
# S3's default checksum, which every object written without one of the client's carries:
# ``ck = {"CRC64NVME": <base64 of 8 bytes>}, ckt = "FULL_OBJECT"`` is stored as its 8 raw bytes.
_CRC64 = "c6"


def _hex_bytes(value, length: int):
    """``value`` as raw bytes when it is exactly ``length`` lowercase hex digits (reversibly)."""
    if isinstance(value, str) and len(value) == length and set(value) <= _HEX:
        return bytes.fromhex(value)
    return value


@functools.lru_cache(maxsize=1024)  # disk ids: a few per deployment, on every record
def _uuid_bytes(value):
    if isinstance(value, str) and len(value) == 36:
        try:
            u = uuid.UUID(value)
        except ValueError:
            return value
        if str(u) == value:
            return u.bytes
    return value


@functools.lru_cache(maxsize=1024)
def _uuid_text(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def compactable(entry: dict) -> bool:
    """True when ``expand(compact(entry)) == entry``: every defaulted field is present (an
    absent one would come back as its default), and so are the fields the single part is
    rebuilt from."""
    return (MARK not in entry and all(f in entry for f in _DEFAULTS)
            and all(f in entry for f in ("parts", "size", "etag", "mt")))


def compact(payload: dict) -> dict:
    """The fields of an entry (or a log record) as stored; see the module doc."""
    p = {f: v for f, v in payload.items() if not (f in _DEFAULTS and v == _DEFAULTS[f])}
    if p.get("parts") == [[1, payload.get("size"), payload.get("etag"), payload.get("ck", {}), payload.get("mt")]]:
        del p["parts"]
    raw = default_checksum(p)
    if raw is not None:
        del p["ck"], p["ckt"]
        p[_CRC64] = raw
    for f, n in (("etag", 32), ("ch", 64), ("wid", 32)):
        if f in p:
            p[f] = _hex_bytes(p[f], n)
    if isinstance(p.get("disks"), list):
        p["disks"] = [_uuid_bytes(d) if isinstance(d, str) else d for d in p["disks"]]
    p[MARK] = 1
    return p


def default_checksum(p: dict) -> bytes | None:
    """The raw CRC64NVME when ``p`` holds exactly S3's default full-object checksum, written
    in its canonical base64 (so ``expand`` gives back the same text)."""
    ck = p.get("ck")
    if p.get("ckt") != "FULL_OBJECT" or not isinstance(ck, dict) or len(ck) != 1 or _CRC64 in p:
        return None
    value = ck.get("CRC64NVME")
    if not isinstance(value, str) or len(value) != 12:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 8 and base64.b64encode(raw).decode() == value else None


def default_checksum_fields(raw: bytes) -> tuple[dict, str]:
    """``ck`` and ``ckt`` of S3's default checksum from its raw bytes (``default_checksum``)."""
    return {"CRC64NVME": binascii.b2a_base64(raw, newline=False).decode()}, "FULL_OBJECT"


def expand(doc: dict) -> dict:
    out = {f: v for f, v in doc.items() if f != MARK}
    raw = out.pop(_CRC64, None)
    if isinstance(raw, bytes):
        out["ck"], out["ckt"] = default_checksum_fields(raw)
    for f, v in _DEFAULTS.items():
        out.setdefault(f, dict(v) if isinstance(v, dict) else v)
    for f in ("etag", "ch", "wid"):
        if isinstance(out.get(f), bytes):
            out[f] = out[f].hex()
    if isinstance(out.get("disks"), list):
        out["disks"] = [_uuid_text(d) if isinstance(d, bytes) else d for d in out["disks"]]
    if "parts" not in out:
        out["parts"] = [[1, out["size"], out["etag"], out["ck"], out["mt"]]]
    return out
