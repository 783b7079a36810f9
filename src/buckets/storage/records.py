"""The per-disk record log: framing of one record and the segment naming.

Small writes (inline objects, delete markers) do not get a file each: every disk appends
them as *records* to its log, ``.buckets.sys/log/<segment>.seg`` (16 hex digits, ascending;
each process start opens a new segment, and a segment is sealed once it passes
``SEGMENT_MAX`` bytes). A record is::

    b"BKR1" | u32 length of payload (LE) | xxh3_64(length bytes + payload) (u64 LE) | payload

The payload is opaque here (the engine's msgpack, the same fields a ``.meta`` file holds).
A record's *location* is ``[segment, offset, length]`` (offset of the magic, total length
including the 16-byte header). A record that fails its magic, length or checksum is
``CorruptData``: a torn tail (power cut mid-append) is never mistaken for a record (and nothing
is ever appended after one: a new process appends to a new segment, and a failed append
closes its segment), and a scan skips a damaged record to the next intact one.
"""

from __future__ import annotations

import re
import struct

import xxhash

from buckets.errors import CorruptData, DiskError
from buckets.storage.disk import MAX_SMALL_FILE
from buckets.storage.format import LOG_DIR

MAGIC = b"BKR1"
HEADER = struct.Struct("<4sIQ")
HEADER_SIZE = HEADER.size  # 16
SEGMENT_MAX = 64 << 20  # a segment past this size is sealed and a new one started
MAX_RECORD = MAX_SMALL_FILE  # no record payload is larger than a metadata file could be
_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})\.seg$")


def segment_name(segment: int) -> str:
    return f"{segment:016x}.seg"


def segment_path(segment: int) -> str:
    return f"{LOG_DIR}/{segment_name(segment)}"


def parse_segment_name(name: str) -> int | None:
    m = _SEGMENT_NAME.match(name)
    return int(m.group(1), 16) if m else None


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_RECORD:
        raise DiskError(f"a record of {len(payload)} bytes is over the limit of {MAX_RECORD}")
    n = len(payload).to_bytes(4, "little")
    return HEADER.pack(MAGIC, len(payload), xxhash.xxh3_64_intdigest(n + payload)) + payload


def unframe(raw: bytes | memoryview, where: str = "record") -> bytes:
    """The payload of one whole framed record; ``CorruptData`` if it is not one."""
    if len(raw) < HEADER_SIZE:
        raise CorruptData(f"{where}: {len(raw)} bytes, shorter than a record header")
    magic, length, ck = HEADER.unpack_from(raw, 0)
    if magic != MAGIC or length != len(raw) - HEADER_SIZE:
        raise CorruptData(f"{where}: not a record (bad magic or length)")
    payload = bytes(raw[HEADER_SIZE:])
    if ck != xxhash.xxh3_64_intdigest(length.to_bytes(4, "little") + payload):
        raise CorruptData(f"{where}: record checksum mismatch")
    return payload


def check_location(location) -> tuple[int, int, int]:
    """``[segment, offset, length]`` as three ints, or ``DiskError``."""
    if (not isinstance(location, (list, tuple)) or len(location) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in location)):
        raise DiskError(f"not a record location: {location!r:.100}")
    segment, offset, length = location
    if segment < 0 or segment >= 1 << 64 or offset < 0 or not HEADER_SIZE <= length <= HEADER_SIZE + MAX_RECORD:
        raise DiskError(f"record location out of range: {location!r}")
    return segment, offset, length


def scan(data: bytes | memoryview, base: int, segment: int, final: bool) -> tuple[list[tuple[list[int], bytes]], int]:
    """Records in ``data`` (the segment's bytes from offset ``base``): ``(records, consumed)``;
    the caller reads on from ``consumed`` (the rest may hold the start of a record whose bytes
    were not all in ``data``). ``final``: ``data`` runs to the end of the segment.

    A damaged record (bit rot, a bad sector) is skipped: the scan looks for the next place
    where an intact record starts (its magic, and a checksum over its length and payload), so
    one bad record never hides the ones after it. A torn tail has no intact record after it."""
    out: list[tuple[list[int], bytes]] = []
    mv = memoryview(data)
    raw = bytes(data) if not isinstance(data, bytes) else data
    pos = 0
    while len(mv) - pos >= HEADER_SIZE:
        magic, length, _ck = HEADER.unpack_from(mv, pos)
        if magic == MAGIC and length <= MAX_RECORD:
            end = pos + HEADER_SIZE + length
            if end > len(mv) and not final:
                return out, pos  # wait for the rest of it
            if end <= len(mv):
                try:
                    out.append(([segment, base + pos, end - pos], unframe(mv[pos:end])))
                    pos = end
                    continue
                except CorruptData:
                    pass
        nxt = raw.find(MAGIC, pos + 1)
        if nxt < 0:  # nothing here: keep a few bytes, a magic may straddle the next read
            return out, len(mv) if final else max(pos, len(mv) - len(MAGIC) + 1)
        pos = nxt
    return out, pos
