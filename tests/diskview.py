"""What a disk directory holds of each object write, read straight from the files, for tests
that check placement on the disks: metadata files (``<keyhash>.<wid>.meta``, with the shard
data beside them or inline) and the records of the disk's log (small objects, the default).

A record counts as a registry rebuild would count it: per write and slot the newest record,
unless a kill record of that write follows it on the same disk (an overwrite, a delete, a
migration that vacated the disk). Garbage the compaction has not reclaimed yet is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from buckets.engine import smalllog
from buckets.engine.meta import decode_meta_file
from buckets.engine.paths import key_hash
from buckets.storage.format import DATA_DIR, LOG_DIR
from buckets.storage.local import _walk_records


@dataclass(frozen=True)
class Shard:
    bucket: str
    key_hash: str
    wid: str
    slot: int | None  # None for a metadata file whose contents were not read
    size: int  # shard bytes on the disk: part files, or the metadata file / record holding it
    source: str  # "file" or "record"

    @property
    def write(self) -> str:
        return f"{self.key_hash}.{self.wid}"


def log_records(root: Path) -> list[dict]:
    """The records of ``root``'s log that still count (see the module doc), each with
    ``_size``: the record's bytes."""
    newest: dict[tuple, dict] = {}
    for batch in _walk_records(str(Path(root) / LOG_DIR), None):
        for loc, raw in batch:
            try:
                meta = smalllog.decode(raw)
            except Exception:  # noqa: BLE001 - a damaged record does not count
                continue
            ident = (meta.get("bucket"), meta.get("key"), meta.get("wid"))
            if meta.get("kill"):
                newest = {i: m for i, m in newest.items() if i[:3] != ident}
            elif isinstance(meta.get("shard"), int):
                newest[ident + (meta["shard"],)] = dict(meta, _size=loc[2])
    return list(newest.values())


def shards(root: Path, bucket: str | None = None) -> list[Shard]:
    """Every object write's shard on the disk at ``root`` (in ``bucket``, or any)."""
    root = Path(root)
    out = []
    for meta in log_records(root):
        if bucket is None or meta["bucket"] == bucket:
            out.append(Shard(meta["bucket"], key_hash(meta["key"]), meta["wid"], meta["shard"], meta["_size"],
                             "record"))
    data = root / DATA_DIR
    pattern = "*/*/*.meta" if bucket is None else f"{bucket}/*/*.meta"
    for path in data.glob(pattern):
        if path.name == ".bucket.meta":
            continue
        write = path.name[:-len(".meta")]
        hashed, _, wid = write.partition(".")
        parts = path.parent / write
        try:
            size = sum(p.stat().st_size for p in parts.iterdir()) if parts.is_dir() else path.stat().st_size
        except FileNotFoundError:  # removed meanwhile (a delete, a vacated shard)
            continue
        out.append(Shard(path.parent.parent.name, hashed, wid, None, size, "file"))
    return out


def writes_of(root: Path, bucket: str, key: str) -> list[dict]:
    """The metadata of every write of ``bucket/key`` on the disk at ``root``: its metadata
    files and its counting log records."""
    root = Path(root)
    found = [m for m in log_records(root) if m["bucket"] == bucket and m["key"] == key]
    directory = root / DATA_DIR / bucket
    for path in directory.glob(f"*/{key_hash(key)}.*.meta"):
        try:
            found.append(decode_meta_file(path.read_bytes()))
        except FileNotFoundError:
            continue
    return found
