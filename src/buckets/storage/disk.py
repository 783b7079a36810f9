"""The ``Disk`` protocol: everything the engine may do to one disk.

MinIO's ``StorageAPI`` is the model: one protocol, implemented by a local directory
(``LocalDisk``), by a disk behind a peer node (``RemoteDisk``, the same calls over peer
RPC) and by a fault-injecting wrapper for tests (``FaultyDisk``). So every method is one
round trip: arguments and results are plain values that msgpack carries (str, int, float,
bool, bytes, lists, the dataclasses below via ``to_wire``), and shard data moves as a
stream (``create_file`` then ``ShardWriter.write``; ``read_range``), never as one whole
object in memory.

Paths are always relative to the disk root and built by the engine from its own
generated names (hashes, uuids, validated bucket names); implementations still refuse
anything that would escape the root (``PathEscape``).

Errors are the typed ``DiskError`` family of ``buckets.errors`` (``FileNotFound``,
``CorruptData``, ``DiskFull``, ``DiskOffline``...), which cross the wire by their ``code``.
Any other exception out of a disk call is a bug.

State: ``online`` is this node's view of the disk. A disk marks itself offline when a
call fails with ``DiskOffline`` (or a subclass: an I/O error, a vanished root, a node that
does not answer); the engine's disk monitor probes offline disks (``read_format``) and
brings them back with ``mark_online`` (then refills them). ``healing`` is set by the engine
while a disk is being refilled. ``info()`` reports all of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import astuple, dataclass
from typing import Protocol

# Largest range one ``read_range`` call returns: the engine reads a few erasure blocks'
# frames at a time; a bigger request is a bug, and refusing it bounds memory per call.
MAX_RANGE = 64 << 20

# Largest file ``read_file`` returns whole: an inline object's shard (<= 128 KiB of data,
# framed) plus its metadata, or the user-table mirror. A bigger one is damage.
MAX_SMALL_FILE = 16 << 20

# Largest format file: a few hundred bytes of JSON; anything bigger is not one.
MAX_FORMAT_FILE = 1 << 20


@dataclass(slots=True)
class DiskInfo:
    disk_id: str
    endpoint: str
    online: bool
    total: int = 0
    free: int = 0
    used: int = 0
    error: str = ""
    healing: bool = False

    def to_wire(self) -> list:
        return list(astuple(self))

    @classmethod
    def from_wire(cls, doc: list) -> "DiskInfo":
        return cls(*doc)


@dataclass(slots=True)
class FileStat:
    """One file or directory: ``path`` relative to the disk root, size, mtime (unix s)."""

    path: str
    size: int
    mtime: float
    is_dir: bool

    def to_wire(self) -> list:
        return [self.path, self.size, self.mtime, self.is_dir]

    @classmethod
    def from_wire(cls, doc: list) -> "FileStat":
        return cls(*doc)


class ShardWriter(Protocol):
    """A file being streamed into place (a shard in staging, a multipart part).

    ``write`` appends ``data``: one buffer, or a tuple of buffers written one after the other
    (a framed piece as its checksum and the piece, not joined first); ``close(sync)`` finishes it (fsynced when ``sync``) and reports any
    failure; ``abort`` discards the file whether or not it was closed and never raises.
    ``write`` after ``close``/``abort`` raises ``DiskError``.
    """

    async def write(self, data: "bytes | tuple[bytes | memoryview, ...]") -> None: ...
    async def close(self, sync: bool) -> None: ...
    async def abort(self) -> None: ...


class Disk(Protocol):
    disk_id: str  # from the disk's format file; set by bootstrap
    endpoint: str  # where it is, for people: a path, or a node URL plus a path
    online: bool
    healing: bool
    last_error: str  # the last failure that was the disk's fault (I/O, space, offline)

    # -- state (no I/O) ---------------------------------------------------------------------
    def mark_offline(self, reason: str) -> None:
        """Stop counting on this disk (logged once per transition); ``reason`` becomes
        ``last_error``."""

    def mark_online(self) -> None:
        """The disk monitor found the disk answering again."""

    def local_path(self, rel: str) -> str | None:
        """The absolute path of ``rel`` on this machine, or None for a disk that is not
        local. Only for what cannot go through the protocol: the node's own LMDB registry
        directory (chosen among local disks only). ``PathEscape`` for a path outside."""

    # -- lifecycle and health --------------------------------------------------------------
    async def close(self) -> None:
        """Finish pending writes and release threads/connections; later calls fail with
        ``DiskOffline``. Idempotent."""

    async def info(self) -> DiskInfo:
        """Capacity and state. Never raises; does not touch the device while offline."""

    async def upkeep(self) -> None:
        """The disk monitor's periodic round on a disk of this node (a local disk's ballast,
        ``LocalDisk.keep_ballast``); nothing for a peer's disk, which its own node keeps.
        Never raises."""

    # -- the format file (owned by the storage layer) ---------------------------------------
    async def read_format(self) -> bytes:
        """The raw format file. ``UnformattedDisk`` when the root is missing or holds nothing
        but ``lost+found`` and Buckets' own trees (the system directory and ``buckets/``: a
        disk wiped under load is written to before it is re-formatted), ``ForeignDisk`` when
        it holds anything else, ``DiskOffline`` when the root is not a usable directory."""

    async def write_format(self, data: bytes, *, create_root: bool, sync: bool) -> None:
        """Write the format file atomically, with the system and staging directories. A
        missing root is created only with ``create_root`` (the first format of a new
        deployment): otherwise it is ``DiskOffline`` (an unmounted disk is never written to
        its parent's filesystem)."""

    # -- files -------------------------------------------------------------------------------
    async def create_file(self, path: str) -> ShardWriter:
        """Start streaming a file (parents created, an existing file truncated). A bad path
        is refused here; a disk failure may surface here or at the first ``write``/``close``
        (a remote disk opens its stream lazily, so a PUT costs one round trip per shard)."""

    async def write_file(self, path: str, data: bytes, *, sync: bool, new_data: bool = False) -> None:
        """Write a whole small file atomically: a reader sees the old content or the new,
        never a mix (temp file, fsync, rename, fsync dir). ``new_data``: the file carries new
        data (an inline object's metadata with its shard, as a new write or a migration's
        copy makes), refused with ``DiskFull`` below the disk's free-space reserve; other
        files (a bucket's or a user's settings, heal's restored shards) may use it."""

    async def read_file(self, path: str, *, max_size: int = MAX_SMALL_FILE) -> bytes:
        """A whole small file; ``CorruptData`` when it is larger than ``max_size``."""

    async def read_range(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``: shorter at the end of the file, empty past
        it. ``DiskError`` for a negative argument or a length over ``MAX_RANGE``."""

    async def rename_data(self, moves: list[tuple[str, str]], meta: tuple[str, bytes] | None, *,
                          sync: bool, cleanup: str | None = None) -> None:
        """Commit a write in one call (MinIO's ``RenameData``): rename each (src, dst) into
        place (creating parents, replacing what is there), fsync their directories (and a
        moved directory itself), then write the metadata file ``meta = (path, bytes)``
        atomically, and last remove the directory ``cleanup`` (the emptied staging area).
        The metadata becomes visible only after the data it describes is durably in place:
        if a move fails, it is not written. A source inside a multipart upload's directory
        is linked into place rather than moved: the upload keeps its part until the
        upload is removed, so a completion that fails or is cut by a crash can be retried."""

    async def fsync_dir(self, path: str) -> None: ...

    async def delete(self, path: str, *, recursive: bool = False, prune: int = 0) -> None:
        """Remove a file or directory (absent: no error; a non-empty directory without
        ``recursive``: ``DiskError``); then remove up to ``prune`` parents left empty,
        never the root."""

    async def list_dir(self, path: str) -> list[str]:
        """Names in a directory (``FileNotFound`` if it is not one)."""

    async def exists(self, path: str) -> bool: ...
    async def file_size(self, path: str) -> int: ...
    async def stat(self, path: str) -> FileStat: ...

    def walk_files(self, path: str, suffix: str) -> AsyncIterator[str]:
        """Paths (relative to the root) of the files under ``path``, at any depth, whose name
        ends with ``suffix``; nothing if ``path`` does not exist. Streamed in batches."""

    def walk_entries(self, path: str, depth: int) -> AsyncIterator[FileStat]:
        """Every file and directory exactly ``depth`` levels below ``path``, with sizes and
        mtimes (the orphan sweep's listing); nothing if ``path`` does not exist. Streamed."""

    # -- the record log of small writes (``buckets.storage.records``) -------------------------
    async def append_records(self, records: list[bytes], *, sync: bool, data: bool = False) -> list[list[int]]:
        """Append each payload as one framed record to this disk's current log segment and
        return their locations ``[segment, offset, length]``, in order. Concurrent calls are
        group-committed: they share one write and (with ``sync``) one fsync of the segment,
        and none is answered before the batch is durable. On failure none of them is
        (the segment is closed; the next append starts a new one). ``data``: the records
        are new data (inline objects), refused with ``DiskFull`` below the disk's free-space
        reserve; other records (deletions, compaction) may use the reserve."""

    async def read_record(self, location: list[int]) -> bytes:
        """The payload of the record at ``location`` (one ``pread``): ``FileNotFound`` when
        its segment is gone (compacted), ``CorruptData`` when the bytes there fail the
        record's magic, length or checksum; ``DiskError`` for a malformed location."""

    def walk_records(self, segment: int | None = None) -> AsyncIterator[tuple[list[int], bytes]]:
        """Every intact record ``(location, payload)`` of every segment in ascending order (or
        of ``segment`` only): a damaged record is skipped, a torn tail ignored. Streamed in
        batches; nothing when there is no log."""

    async def list_segments(self) -> list[list[int]]:
        """``[[segment, size], ...]`` ascending; the one being appended to, if any, is last."""

    async def release_records(self, wid: str, locations: list[list[int]]) -> int:
        """Free now the space of write ``wid``'s records at ``locations``: the write was removed
        (its entry is gone, as its files would be unlinked). Each is checked first to be an
        intact record of that write; it then reads as zeros (a scan skips it, as a damaged
        record) and its whole blocks go back to the file system, so deleting small objects
        frees space at once instead of at the segment's compaction. Returns the bytes freed
        (0 where the file system cannot punch holes, or a peer of an older version)."""

    async def delete_segment(self, segment: int) -> None:
        """Remove a sealed segment (compaction moved its live records away first). The segment
        being appended to is refused (``DiskError``); a missing one is not an error."""
