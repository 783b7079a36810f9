"""Look at and damage a deployment's disks directly, the way bitrot and operators do.

An object's files are found from its key alone (``<disk>/buckets/<bucket>/<h[:3]>/<h>.<wid>``,
see architecture/on-disk-format.md); each metadata file names the write, the shard index
it holds and the geometry, so a :class:`Shard` knows where every piece of every block
lives. A small object written with ``--small-log on`` has no metadata file: each disk holds a
record in its log instead (``.buckets.sys/log/<segment>.seg``), found by scanning the
segments as a registry rebuild does; its Shard names the segment and the record's location,
and damage to it is damage to those bytes. Damage is recorded as a :class:`Fault` with a fingerprint of the file as it was
before, so a test can later prove the file was rebuilt byte for byte, not just "healed".
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from buckets.engine import smalllog
from buckets.engine.meta import decode_meta_file
from buckets.engine.paths import key_hash
from buckets.erasure import ShardGeometry
from buckets.erasure.codec import CHECKSUM_SIZE
from buckets.storage import records as rlog
from buckets.storage.format import FORMAT_FILE, LOG_DIR, TMP_DIR


@dataclass
class Shard:
    """One slot of one object write on one disk, as read from its metadata file."""

    bucket: str
    key: str
    disk: Path
    slot: int
    wid: str
    meta_path: Path  # the metadata file, or the log segment holding the record
    meta: dict = field(repr=False)
    loc: list | None = None  # a record in the disk's log: [segment, offset, length]

    @property
    def inline(self) -> bool:
        return bool(self.meta.get("inline"))

    @property
    def data_dir(self) -> Path:
        return self.meta_path.with_name(self.meta_path.name[: -len(".meta")])

    def part_paths(self) -> list[tuple[Path, ShardGeometry]]:
        """(shard file, geometry) per part; [] for inline objects."""
        if self.inline:
            return []
        k, bs = self.meta["k"], self.meta["bs"]
        return [(self.data_dir / f"part.{p[0]}", ShardGeometry(k, bs, p[1])) for p in self.meta["parts"]]


@dataclass
class Fault:
    """One injected fault: which object, which slot, what was done and to which file."""

    bucket: str
    key: str
    slot: int
    kind: str  # flip-piece, flip-checksum, flip-meta, delete-part, delete-meta, delete-data-dir
    path: Path
    before: str  # sha256 of the file before (for a directory: of its files, sorted)
    detail: str = ""
    original_meta: dict | None = field(default=None, repr=False)  # payload, for metadata files
    record: tuple | None = None  # a log record's (disk, wid): restored is a new record of the slot


def fingerprint(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.rglob("*")):
            if f.is_file():
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        return h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def meta_payload(path: Path) -> dict | None:
    """The decoded metadata file, or None when it is missing or fails its checksum."""
    try:
        return decode_meta_file(path.read_bytes())
    except (OSError, ValueError, Exception):  # noqa: BLE001 - CorruptData and msgpack errors alike
        return None


def log_records(disk: Path) -> list[tuple[Path, list, dict]]:
    """The records of a disk's log a registry rebuild would count: per write and slot the
    newest intact one, unless a kill record names the write. ``(segment file, location,
    payload)`` each."""
    seg_dir = disk / LOG_DIR
    if not disk.is_dir() or not seg_dir.is_dir():
        return []
    newest: dict[tuple, tuple[Path, list, dict]] = {}
    killed: set[tuple] = set()
    for seg_path in sorted(seg_dir.glob("*.seg")):
        seg = rlog.parse_segment_name(seg_path.name)
        if seg is None:
            continue
        try:
            found, _ = rlog.scan(seg_path.read_bytes(), 0, seg, True)
        except FileNotFoundError:
            continue
        for loc, raw in found:
            try:
                meta = smalllog.decode(raw)  # as the engine reads it (ids and hashes back to text)
            except Exception:  # noqa: BLE001 - a payload that does not decode is no record
                continue
            ident = (meta.get("bucket"), meta.get("key"), meta.get("wid"))
            if meta.get("kill"):
                killed.add(ident)
            else:
                newest[ident + (meta.get("shard"),)] = (seg_path, loc, meta)
    return [v for k, v in newest.items() if k[:3] not in killed]


def all_shards(disks: list[Path], bucket: str, key: str) -> list[Shard]:
    """Every readable shard of every write of ``key``: metadata files and log records."""
    h = key_hash(key)
    found: list[Shard] = []
    for disk in disks:
        fan = disk / "buckets" / bucket / h[:3]
        for mp in fan.glob(f"{h}.*.meta") if fan.is_dir() else ():
            meta = meta_payload(mp)
            if meta is not None and meta.get("key") == key:
                found.append(Shard(bucket, key, disk, meta["shard"], meta["wid"], mp, meta))
        for seg_path, loc, meta in log_records(disk):
            if meta.get("bucket") == bucket and meta.get("key") == key:
                found.append(Shard(bucket, key, disk, meta["shard"], meta["wid"], seg_path, meta, loc))
    return found


def current_shards(disks: list[Path], bucket: str, key: str) -> list[Shard]:
    """Every readable shard of the newest write of ``key`` (by mtime in the metadata)."""
    found = all_shards(disks, bucket, key)
    if not found:
        return []
    newest = max(found, key=lambda s: s.meta["mt"]).wid
    return sorted((s for s in found if s.wid == newest), key=lambda s: s.slot)


def _flip_byte(path: Path, offset: int, rnd: random.Random) -> str:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        new = bytes([old[0] ^ (1 << rnd.randrange(8))])
        f.seek(offset)
        f.write(new)
    return f"offset {offset}: {old.hex()} -> {new.hex()}"


def flip_piece(shard: Shard, rnd: random.Random, *, checksum: bool = False) -> Fault:
    """Flip one bit inside one piece (or its 8-byte checksum) of a random block of the shard.

    Inline objects keep their pieces inside the metadata file, whose own checksum covers
    them, so there the flip lands in the metadata file's payload.
    """
    if shard.inline:
        return flip_meta(shard, rnd)
    path, geo = rnd.choice([pg for pg in shard.part_paths() if pg[1].blocks])
    block = rnd.randrange(geo.blocks)
    if checksum:
        offset = geo.frame_offset(block) + rnd.randrange(CHECKSUM_SIZE)
    else:
        offset = geo.frame_offset(block) + CHECKSUM_SIZE + rnd.randrange(geo.piece_len(block))
    before = fingerprint(path)
    detail = f"block {block} " + _flip_byte(path, offset, rnd)
    return Fault(shard.bucket, shard.key, shard.slot, "flip-checksum" if checksum else "flip-piece",
                 path, before, detail)


def _record_bytes(shard: Shard) -> bytes:
    with open(shard.meta_path, "rb") as f:
        f.seek(shard.loc[1])
        return f.read(shard.loc[2])


def flip_meta(shard: Shard, rnd: random.Random) -> Fault:
    if shard.loc is not None:  # a record: one bit anywhere in it (its checksum must catch it)
        before = hashlib.sha256(_record_bytes(shard)).hexdigest()
        detail = "record " + _flip_byte(shard.meta_path, shard.loc[1] + rnd.randrange(shard.loc[2]), rnd)
        return Fault(shard.bucket, shard.key, shard.slot, "flip-meta", shard.meta_path, before, detail,
                     original_meta=shard.meta, record=(shard.disk, shard.wid))
    before = fingerprint(shard.meta_path)
    size = shard.meta_path.stat().st_size
    detail = _flip_byte(shard.meta_path, rnd.randrange(size), rnd)
    return Fault(shard.bucket, shard.key, shard.slot, "flip-meta", shard.meta_path, before, detail,
                 original_meta=shard.meta)


def delete_part(shard: Shard, rnd: random.Random) -> Fault:
    if shard.inline:
        return delete_meta(shard, rnd)
    path, _ = rnd.choice(shard.part_paths())
    before = fingerprint(path)
    path.unlink()
    return Fault(shard.bucket, shard.key, shard.slot, "delete-part", path, before)


def delete_meta(shard: Shard, rnd: random.Random) -> Fault:
    if shard.loc is not None:  # a record cannot be unlinked: its bytes are lost (zeroed) instead
        before = hashlib.sha256(_record_bytes(shard)).hexdigest()
        with open(shard.meta_path, "r+b") as f:
            f.seek(shard.loc[1])
            f.write(b"\0" * shard.loc[2])
        return Fault(shard.bucket, shard.key, shard.slot, "delete-meta", shard.meta_path, before,
                     f"record at {shard.loc} zeroed", original_meta=shard.meta, record=(shard.disk, shard.wid))
    before = fingerprint(shard.meta_path)
    shard.meta_path.unlink()
    return Fault(shard.bucket, shard.key, shard.slot, "delete-meta", shard.meta_path, before,
                 original_meta=shard.meta)


def delete_data_dir(shard: Shard, rnd: random.Random) -> Fault:
    if shard.inline:
        return delete_meta(shard, rnd)
    before = fingerprint(shard.data_dir)
    shutil.rmtree(shard.data_dir)
    return Fault(shard.bucket, shard.key, shard.slot, "delete-data-dir", shard.data_dir, before)


def restored(fault: Fault) -> bool:
    """True when the damaged file is back as it was: shard files byte for byte, metadata
    files with the same payload (a rebuilt one may be encoded with another field order), a
    log record as a new record of the same write and slot with the same payload."""
    if fault.record is not None:
        disk, wid = fault.record
        for _seg, _loc, meta in log_records(disk):
            if (meta.get("bucket"), meta.get("key"), meta.get("wid"), meta.get("shard")) == (
                    fault.bucket, fault.key, wid, fault.slot):
                return meta == fault.original_meta
        return False
    if fault.original_meta is not None:
        return meta_payload(fault.path) == fault.original_meta
    return fingerprint(fault.path) == fault.before


def disk_id(disk: Path) -> str:
    return json.loads((disk / FORMAT_FILE).read_text())["disk_id"]


def staging_entries(disks: list[Path]) -> list[str]:
    """What is left in every disk's staging area (``.buckets.sys/tmp``)."""
    out = []
    for disk in disks:
        tmp = disk / TMP_DIR
        if tmp.is_dir():
            out += [str(tmp / e) for e in os.listdir(tmp)]
    return out


def meta_files(disk: Path, bucket: str) -> list[Path]:
    """The object metadata files of ``bucket`` on ``disk``, and its log records (one entry,
    the segment file, per record): one per shard the disk holds."""
    root = disk / "buckets" / bucket
    files = [p for p in root.rglob("*.meta") if p.name != ".bucket.meta"] if root.is_dir() else []
    return files + [seg for seg, _loc, meta in log_records(disk) if meta.get("bucket") == bucket]


def wipe(disk: Path, bucket: str) -> int:
    """Wipe a disk while the server runs, as swapping in a blank one does: the directory is
    renamed away and an empty one put in its place at once, then the old tree is deleted.
    Returns how many object metadata files (shards) of ``bucket`` were destroyed.

    (A plain ``rm -rf disk/*`` races the server's own writes into the tree; the rename
    makes the wipe one instant. The root itself stays: a vanished root is a missing disk,
    which the server must never re-create, see ``unplug``.)
    """
    gone = disk.with_name(disk.name + ".wiped")
    os.rename(disk, gone)
    disk.mkdir()
    destroyed = len(meta_files(gone, bucket))
    shutil.rmtree(gone)
    return destroyed


def unplug(disk: Path) -> Path:
    """Make a disk unusable: move its directory aside and put a regular file in its place."""
    aside = disk.with_name(disk.name + ".unplugged")
    os.rename(disk, aside)
    disk.write_bytes(b"not a disk\n")
    return aside


def plug_back(disk: Path) -> None:
    aside = disk.with_name(disk.name + ".unplugged")
    disk.unlink()
    os.rename(aside, disk)


def files_of_key(disks: list[Path], bucket: str, key: str) -> list[str]:
    """Every file or directory of any write of ``key`` on the disks that are directories, and
    every log record of one that no kill record removed (``<segment>@<offset>:<wid>``)."""
    h = key_hash(key)
    out = []
    for disk in disks:
        fan = disk / "buckets" / bucket / h[:3]
        if disk.is_dir() and fan.is_dir():
            out += [str(p) for p in fan.iterdir() if p.name.startswith(h + ".")]
        out += [f"{seg}@{loc[1]}:{meta.get('wid')}" for seg, loc, meta in log_records(disk)
                if meta.get("bucket") == bucket and meta.get("key") == key]
    return out


def upload_files(disks: list[Path], upload_id: str | None = None) -> list[str]:
    """Files of one multipart upload (None: of every upload) on the disks that are
    directories: its parts and the records beside them (upload.meta, <pwid>.pmeta)."""
    out = []
    for disk in disks:
        d = disk / ".buckets.sys" / "multipart"
        if upload_id is not None:
            d = d / upload_id
        if disk.is_dir() and d.is_dir():
            out += [str(p) for p in d.rglob("*") if p.is_file()]
    return out
