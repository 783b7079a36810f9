"""``Registry``: LMDB-backed index of buckets, objects, uploads, users and usage.

Object keys are stored as ``bucket \\0 key`` in UTF-8, so a listing is one sorted range
scan. LMDB caps keys at 511 bytes while S3 keys reach 1024, so a full key of
``LONG`` bytes or more is filed under its first ``LONG`` bytes in a record that holds a
sorted list of every full key sharing that prefix. Sort order is preserved: every key
with that prefix sorts after all shorter records below the prefix and before all above.

Writes go through ``commit()``: callers queue their ops and await; one committer task
takes everything queued, applies it in a single write transaction in a thread, syncs
once, updates the cache, and wakes every waiter (group commit).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import hashlib
import logging
import mmap
import os
import struct
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack
import xxhash

from buckets.runtime import cancel_and_wait
from buckets.errors import BucketNotEmpty, BucketsError, KeyLocked, NoSuchBucket, RegistryFailed, StorageFull
from buckets.registry.cache import LRUCache, in_background
from buckets.registry.digests import BucketDigests, range_digests, range_of
from buckets.registry.entrycodec import (
    MARK, compact, compactable, default_checksum, default_checksum_fields, expand,
)
from buckets.runtime import Workers

log = logging.getLogger("buckets.registry")

LONG = 480  # record-key bytes; keeps us under LMDB's 511-byte key limit
# Object record values: _SINGLE | u16 head length | head | entry, where head is the msgpack
# of what a listing shows (LISTING_FIELDS), so scans decode ~60 bytes, not the whole entry
# (an MD5 ETag as its 16 bytes, S3's default checksum as its 8: ``_decode_listing``).
# _MULTI | msgpack [[full key, entry], ...] for long keys sharing one record.
_SINGLE, _MULTI = b"\x03", b"\x02"
LISTING_FIELDS = ("size", "etag", "mt", "sc", "ck", "ckt", "vid", "dm")
_HEAD = struct.Struct("<H")


_CK, _CKT, _ETAG = (LISTING_FIELDS.index(f) for f in ("ck", "ckt", "etag"))
_HEX = frozenset("0123456789abcdef")


def _encode_single(entry: dict) -> bytes:
    fields = [entry.get(f) for f in LISTING_FIELDS]
    etag = fields[_ETAG]
    if isinstance(etag, str) and len(etag) == 32 and set(etag) <= _HEX:  # a plain MD5: its 16 bytes
        fields[_ETAG] = bytes.fromhex(etag)
    raw = default_checksum(entry)
    if raw is not None:  # S3's default checksum: its 8 bytes for "ck" (and "ckt" implied)
        fields[_CK], fields[_CKT] = raw, None
    head = _pack(fields)
    return _SINGLE + _HEAD.pack(len(head)) + head + _pack(compact(entry) if compactable(entry) else entry)


def _decode_single(raw: bytes) -> dict:
    (n,) = _HEAD.unpack_from(raw, 1)
    entry = _unpack(raw[3 + n:])
    return expand(entry) if entry.get(MARK) == 1 else entry


def _decode_listing(raw: bytes) -> dict:
    (n,) = _HEAD.unpack_from(raw, 1)
    values = _unpack(raw[3:3 + n])  # the hot path of every listing: list slots, no dict lookups
    if values[_ETAG].__class__ is bytes:
        values[_ETAG] = values[_ETAG].hex()
    if values[_CK].__class__ is bytes:
        values[_CK], values[_CKT] = default_checksum_fields(values[_CK])
    return dict(zip(LISTING_FIELDS, values))
_SMALL = struct.Struct("<Q")  # xxh3_64 of the bytes that follow, in the "small" table

_pack = msgpack.Packer(use_bin_type=True).pack


def _unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False)


POLICY_PREFIX = "policy:"
# Key locks of the cluster index (``lock_key``), in the ``sys`` table: while a conditional write
# commits, no other write of the key merges on this replica (cluster/index.py, write_checked).
KEY_LOCK_PREFIX = b"klock\0"
# merge_object's ``result`` when a conditional write's commit met a write its check did not see.
UNSEEN = "unseen"


def object_key(bucket: str, key: str) -> bytes:
    return bucket.encode() + b"\0" + key.encode()


_VS = struct.Struct(">Q")
_VS_MAX = (1 << 64) - 1


def version_seq(entry: dict) -> int:
    """The order of an object's versions: ``vs`` (nanoseconds at the write), or one derived
    from the mtime for entries written before versioning existed."""
    vs = entry.get("vs")
    return int(vs) if vs is not None else int(entry.get("mt", 0) * 1e9)


def _versions_base(bucket: str, key: str) -> bytes:
    """Prefix of a key's noncurrent versions in the ``versions`` table: the key's hash, so
    every record key stays far below LMDB's limit whatever the key's length."""
    return bucket.encode() + b"\0" + xxhash.xxh3_128_digest(key.encode())


def _versions_key(bucket: str, key: str, entry: dict) -> bytes:
    """Newest first: the inverted version sequence, then the version id."""
    return _versions_base(bucket, key) + _VS.pack(_VS_MAX - version_seq(entry)) + entry["vid"].encode()


def _tomb_key(full: bytes) -> bytes:
    """Tombstones are keyed like objects; a full key too long for LMDB is filed by its hash
    (tombstones are only ever looked up by key or walked whole, never listed in order)."""
    return full if len(full) < LONG else full[:LONG - 21] + b"\1" + hashlib.blake2b(full, digest_size=20).digest()


def _lock_key(full: bytes) -> bytes:
    """A key lock's record in ``sys``: filed like the key's tombstone (hashed when long)."""
    return KEY_LOCK_PREFIX + _tomb_key(full)


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return None


@dataclass(slots=True)
class Op:
    """One change inside a group commit. ``kind`` picks the table."""

    kind: str  # put_object, delete_object, put_version, delete_version, update_version, merge_object, retract_object, forget_tombstone, lock_key, unlock_key, drop_entries, put_bucket, delete_bucket, put_upload, delete_upload, put_user, delete_user, put_sys, put_policy, delete_policy, put_event, delete_event
    name: str
    key: str = ""
    value: Any = None
    data: bytes | None = None  # put_object of a small object: a copy of its bytes for disk-free GETs
    # merge_object (a replica of the cluster's object index): the write's version, compared
    # last-writer-wins with what is stored; ``value`` None is a delete (kept as a tombstone).
    ts: tuple | None = None
    applied: bool = True  # merge_object: set False when a newer version was already stored
    # drop_entries: the keys it removed (for the cache); ``applied`` then says whether more remain.
    # merge_object, applied: the entry it replaced (None: none, or a tombstone); put_object and
    # delete_object: the entry it replaced or removed (None: none).
    # lock_key: (entry or None, version or None) of the key as the lock found it.
    result: Any = None
    # merge_object: the version of what it replaced or, not applied, of what it found (an
    # entry's or a tombstone's; None: nothing). retract_object: the version of the tombstone
    # it puts back when ``value`` is None (None: no tombstone, the key held nothing).
    prior: tuple | None = None
    # merge_object of a conditional write's commit: the id of the key lock its ``lock_key``
    # took here (the merge passes that lock and ends it); without one, a locked key is
    # ``KeyLocked``.
    lock: str | None = None
    # merge_object of a conditional write's commit (``judging``): the version its check judged
    # the key at (None: nothing). Where the key holds a newer version than that, the check did
    # not see that write (this replica was not locked, or its lock expired, or its lock's answer
    # came after the check): not applied, ``result`` is ``UNSEEN`` (the lock still ends).
    judged: tuple | None = None
    judging: bool = False


def version_tuple(ts) -> tuple:
    """A last-writer-wins version as a comparable tuple: ``(hlc, wid)`` or ``(hlc, wid, gen)``.

    The optional third element is the placement generation an entry was *moved* to (the
    migration commits a moved entry with its old version plus the generation): tuples compare
    element-wise and a longer one with an equal prefix is greater, so ``(h, w, g)`` replaces
    exactly the version ``(h, w)`` it moved (or a lower generation of it) and loses to any
    newer write ``(h2 > h, ...)``."""
    if len(ts) > 2:
        return (int(ts[0]), str(ts[1]), int(ts[2]))
    return (int(ts[0]), str(ts[1]))


def entry_version(entry: dict) -> tuple:
    """An entry's last-writer-wins version: ``ts`` ([hlc, wid] or [hlc, wid, gen]) when the
    cluster index wrote it, else one derived from its mtime, so entries of a single-node
    registry compare too."""
    ts = entry.get("ts")
    if ts is not None:
        return version_tuple(ts)
    return (int(entry.get("mt", 0) * 1000) << 16, entry.get("wid", ""))


# A tombstone that no conditional delete's check judged (``_tomb_value``, ``held_judged``).
NOT_JUDGED = object()
# Ops that change a bucket's keys other than one version at a time (and never on a cluster
# node's index replica, but for a drop): the bucket's anti-entropy digests are scanned again.
_RESTATES = frozenset({"put_object", "delete_object", "put_version", "delete_version", "update_version",
                       "drop_entries", "delete_bucket"})
# The field of a conditional write's committed entry (and of a call or answer carrying a
# conditional delete's tombstone) that holds the version its check judged the key at
# (``buckets.cluster.index``).
JUDGED = "cj"


def _tomb_value(ts: tuple, key: str, judged: Any = NOT_JUDGED) -> bytes:
    """A tombstone record: ``[hlc, wid, key]``, or ``[hlc, wid, key, gen]`` for a moved one;
    a conditional delete's (or a merge of it) adds the version its check judged the key at:
    ``[hlc, wid, key, gen or None, judged or None]``."""
    if judged is NOT_JUDGED:
        return _pack([ts[0], ts[1], key, *ts[2:3]])
    return _pack([ts[0], ts[1], key, ts[2] if len(ts) > 2 else None,
                  list(judged) if judged is not None else None])


def _tomb_version(raw: bytes) -> tuple[tuple, str]:
    """(version, key) of a tombstone record."""
    hlc, wid, key, *rest = _unpack(raw)
    return version_tuple([hlc, wid, *rest[:1]] if rest and rest[0] is not None else [hlc, wid]), key


def _tomb_judged(raw: bytes) -> Any:
    """The version a conditional delete's check judged (None: nothing), or ``NOT_JUDGED``."""
    rest = _unpack(raw)[3:]
    return version_tuple(rest[1]) if len(rest) > 1 and rest[1] is not None else (
        None if len(rest) > 1 else NOT_JUDGED)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _typed_failure(exc: Exception, path: str) -> Exception:
    """A commit's failure as the client should see it: a registry that cannot grow (its map
    size reached, or its disk full to the last block) is a full store (``507 StorageFull``,
    logged with the path), not a 500."""
    if isinstance(exc, lmdb.MapFullError):
        log.error("registry %s reached its map size: no commit goes in until objects are deleted", path)
        return StorageFull("The storage is full: the registry reached its size limit. Delete objects to make room.")
    if isinstance(exc, lmdb.Error) and ("No space left" in str(exc) or _out_of_space(path)):
        # (LMDB reports a page write that found no space as an I/O error: told by the free space)
        log.error("registry %s: its disk is full: %s", path, exc)
        return StorageFull()
    return exc


# What says the registry's disk (or the environment on it) is gone, not the request: an I/O
# error, a file system that went read-only after an error of its own (ext4's errors=remount-ro),
# a device that vanished, LMDB's own verdicts on a damaged or fatally failed environment.
_DISK_ERRNOS = (errno.EIO, errno.EROFS, errno.ENODEV, errno.ENXIO, errno.ESTALE)
_DISK_MESSAGES = tuple(os.strerror(code) for code in _DISK_ERRNOS)


def is_disk_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (raised by LMDB or the file system under it) means the registry's disk
    or environment failed, as opposed to a full disk or a request's own fault."""
    if isinstance(exc, (lmdb.PanicError, lmdb.DiskError, lmdb.CorruptedError, lmdb.PageNotFoundError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _DISK_ERRNOS
    return isinstance(exc, lmdb.Error) and not isinstance(exc, lmdb.MapFullError) and \
        any(text in str(exc) for text in _DISK_MESSAGES)


_OPEN: "weakref.WeakSet[Registry]" = weakref.WeakSet()  # the registries serving (normally one)


def storage_failure(exc: BaseException) -> BucketsError | None:
    """For a request that failed with an exception nobody typed: ``RegistryFailed`` when it is
    a registry read that found the environment failed (``is_disk_failure``), after marking the
    open registries failed (``Registry.fail``); None for anything else. An LMDB error can only
    come from a registry, and a node serves one."""
    if not isinstance(exc, lmdb.Error) or not is_disk_failure(exc):
        return None
    for registry in list(_OPEN):
        registry.fail(f"a read failed: {exc}")
    return RegistryFailed()


# -- reading a registry through before it is opened -------------------------------------------
#
# LMDB reads through a map of its file: a page the disk cannot read (a bad sector) is not an
# error that a read returns but a SIGBUS that ends the process, at the first lookup, listing or
# scan that touches it. A supervisor restarts the node, and the next start touches the page
# again (the usage and bucket tables are read at every open). So before a registry is opened its
# files are read through with ``pread``, where such a page is an ``EIO``: the registry then moves
# to another disk (``engine/store.py``). Always while the registry is small (a second's read at
# most), and at any size after a stop that did not close it (its RUNNING_MARK left behind:
# ``kill -9``, a crash, that SIGBUS), as a node with a large one starts faster after a clean stop.
RUNNING_MARK = "running.pid"  # in the registry's directory while a process has it open
READ_THROUGH_ALWAYS_BELOW = 1 << 30
_READ_CHUNK = 1 << 20
_FILES = ("data.mdb", "lock.mdb")


def needs_read_through(path: str) -> tuple[bool, str | None]:
    """Whether the registry at ``path`` is read through before it is opened (above), and the
    pid of the process that did not close it, if one did not ("?" where the mark is unreadable)."""
    try:
        size = os.stat(os.path.join(path, "data.mdb")).st_size
    except FileNotFoundError:
        return False, None  # none yet: a new one is created
    except OSError:
        return True, None  # (the read says what is wrong)
    try:
        with open(os.path.join(path, RUNNING_MARK)) as f:
            left = f.read(32).strip() or "?"
    except FileNotFoundError:
        left = None
    except (OSError, ValueError):
        left = "?"
    return size < READ_THROUGH_ALWAYS_BELOW or left is not None, left


def read_through(path: str, progress: list[int], *, media: bool = False, rate: float | None = None,
                 stop: Any = None, names: tuple[str, ...] = _FILES) -> None:
    """Read every byte of the registry's files at ``path`` with ``pread`` (adding to
    ``progress[0]`` as it goes); an ``OSError`` naming the file and the offset where a read
    failed. ``media``: past the page cache (``O_DIRECT``, where the file system takes it), as
    the scanner's deep cycles do: a page cached now is read from the disk again once evicted,
    and a sector that went bad under it then ends the process. ``rate``: at most so many bytes
    a second (the scanner's pace). ``stop``: a ``threading.Event`` that ends the read early."""
    buf = mmap.mmap(-1, _READ_CHUNK)  # page-aligned, as O_DIRECT wants
    started = time.monotonic()
    try:
        for name in names:
            full = os.path.join(path, name)
            fd = -1
            if media and hasattr(os, "O_DIRECT"):
                try:
                    fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
                except FileNotFoundError:
                    continue
                except OSError:
                    fd = -1  # (EINVAL: a file system without O_DIRECT; read through the cache)
            if fd < 0:
                try:
                    fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                offset = 0
                while True:
                    try:
                        got = os.preadv(fd, [buf], offset)
                    except OSError as exc:
                        raise OSError(exc.errno, f"{exc.strerror} reading {name} at byte {offset:,}",
                                      full) from None
                    if got == 0 or (stop is not None and stop.is_set()):
                        break
                    offset += got
                    progress[0] += got
                    if rate:
                        ahead = started + progress[0] / rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
            finally:
                os.close(fd)
    finally:
        buf.close()


def read_file_through(path: str) -> None:
    """``read_through`` for one file (a cluster node's control-plane journal, read through a map
    as well); an ``OSError`` where a read fails."""
    read_through(os.path.dirname(path), [0], names=(os.path.basename(path),))


# LMDB's reader table (``lock.mdb``) is a file it maps and writes at every read transaction. In
# the registry's directory, a read then waits, in a page fault of the event loop, whenever that
# file system is frozen (``fsfreeze``, as snapshot tools freeze one for seconds): every request
# of the node stopped, GETs of objects on other disks and health checks included. Nothing in it
# outlives the process (LMDB resets it when the first process opens the registry), so it is kept
# in memory instead: a new file on a tmpfs, reached through a ``lock.mdb`` symlink while LMDB
# opens it, then unlinked (symlink and file: LMDB keeps its descriptor and map, the kernel frees
# the file with the process, even after ``kill -9``). A second process cannot share the table,
# and none may: the disks' lock (``storage/local.py``, one process per disk) keeps the registry to one process.
LOCK_FILE = "lock.mdb"
_TMPFS_DIRS = ("/dev/shm", "/run")
_MEMORY_LOCK_PREFIX = "buckets-registry-"


def _memory_lock_dir() -> str | None:
    """The first of ``_TMPFS_DIRS`` that is a writable tmpfs, or None (the lock then stays a
    file in the registry's directory, as LMDB makes it)."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = {fields[1]: fields[2] for fields in (line.split() for line in f) if len(fields) > 2}
    except OSError:
        return None
    for candidate in _TMPFS_DIRS:
        if mounts.get(candidate) == "tmpfs" and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


def _sweep_memory_locks(directory: str) -> None:
    """Remove lock files left in ``directory`` by processes that ended between creating one and
    unlinking it (a window of one ``lmdb.open``)."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(_MEMORY_LOCK_PREFIX)]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name[len(_MEMORY_LOCK_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
            continue  # (its process lives: it may be opening a registry now)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def open_with_lock_in_memory(path: str, **kwargs: Any) -> lmdb.Environment:
    """``lmdb.open(path, **kwargs)`` with its reader table in memory (above); where no tmpfs
    takes it, as LMDB does by itself."""
    lock = os.path.join(path, LOCK_FILE)
    directory = _memory_lock_dir()
    if directory is None:
        if os.path.islink(lock):
            os.unlink(lock)  # (left by an earlier process that had a tmpfs: LMDB would follow it)
        return lmdb.open(path, **kwargs)
    _sweep_memory_locks(directory)
    fd, target = tempfile.mkstemp(prefix=f"{_MEMORY_LOCK_PREFIX}{os.getpid()}-", suffix=".lock", dir=directory)
    os.close(fd)
    link = f"{lock}.{os.getpid()}.new"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(target, link)
        os.replace(link, lock)  # (a lock.mdb file an older release left is replaced too)
        return lmdb.open(path, **kwargs)
    finally:
        for leftover in (lock, link):
            if os.path.islink(leftover):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
        with contextlib.suppress(OSError):
            os.unlink(target)


def _mark_running(path: str) -> None:
    try:
        with open(os.path.join(path, RUNNING_MARK), "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:  # (a read-only or full disk: the next start reads the registry through)
        log.debug("registry %s: cannot leave the running mark: %s", path, exc)


def _unmark_running(path: str) -> None:
    try:
        os.unlink(os.path.join(path, RUNNING_MARK))
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("registry %s: cannot remove the running mark: %s", path, exc)


def _out_of_space(path: str) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


class Registry:
    TABLES = ("buckets", "objects", "small", "uploads", "users", "usage", "sys", "tombs", "events", "versions")

    def __init__(self, path: str, *, cache_size: int = 1_000_000, sync: bool = True,
                 map_size: int = 1 << 40) -> None:
        self.path = path
        self.created = not os.path.exists(os.path.join(path, "data.mdb"))
        os.makedirs(path, exist_ok=True)
        self.env = open_with_lock_in_memory(path, map_size=map_size, max_dbs=len(self.TABLES) + 2, sync=sync,
                                            metasync=sync, readahead=False, max_readers=512, lock=True)
        _mark_running(path)
        if self.created and sync:
            # LMDB syncs its file's data at every commit, never the directory entries: until
            # they are durable a power cut could take the whole new registry, and its rebuild
            # from the disks would bring back deleted keys and forget open uploads.
            _fsync_dir(path)
            _fsync_dir(os.path.dirname(os.path.abspath(path)))
        self.db = {name: self.env.open_db(name.encode()) for name in self.TABLES}
        self.cache = LRUCache(cache_size)
        # Anti-entropy's range digests of the buckets a cluster node's index replica was asked
        # about, kept current by the commits (``digests.py``, ``bucket_digest``)
        self.digests = BucketDigests()
        self.usage: dict[str, list[int]] = {}  # bucket -> [objects, bytes], mirrors the usage table
        self._pending: list[tuple[list[Op], asyncio.Future]] = []
        self._wakeup: asyncio.Event | None = None
        self._committer: asyncio.Task | None = None
        self._pool = Workers(max_workers=1, thread_name_prefix="registry-commit")
        self._read_pool = Workers(max_workers=2, thread_name_prefix="registry-read")
        # (monotonic time, room, near) of check_room's statvfs; ``near``: within twice the full
        # threshold, where it is asked again at every check (a second's writes could cross it)
        self._room: tuple[float, bool, bool] = (float("-inf"), True, False)
        self.commits = 0
        self.committed_ops = 0
        self.last_batch = 0
        # group-commit size histogram: writers per transaction, cumulative bucket counts
        self.batch_bounds = (1, 2, 4, 8, 16, 32, 64, 128)
        self.batch_counts = [0] * (len(self.batch_bounds) + 1)
        self.batch_sum = 0
        self.closed = False
        # Set once the environment failed (``fail``): every commit is refused from then on, with
        # ``RegistryFailed``; ``on_failure(reason)`` is called once (the server restarts a
        # single node to rebuild its registry elsewhere).
        self.failed: str | None = None
        self.on_failure: Any = None
        self.hung_since: float | None = None  # monotonic() start of a commit past the disk timeout
        self._load_usage()
        # Buckets are few and read on every request: keep the table in memory.
        self.buckets: dict[str, dict] = dict(self._items("buckets"))

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        _OPEN.add(self)
        self._wakeup = asyncio.Event()
        self._committer = asyncio.get_running_loop().create_task(self._commit_loop(), name="registry-commit")

    async def close(self) -> None:
        if self._committer is not None:
            while self._pending:
                await asyncio.sleep(0.005)
            await cancel_and_wait(self._committer)
            self._committer = None
        self._pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)
        _OPEN.discard(self)
        try:
            self.env.sync(True)
        except lmdb.Error as exc:
            if not is_disk_failure(exc):
                raise
            # Nothing to save: every commit was synced as it went (or, without sync, its
            # loss is what --sync off accepts); the environment is closed all the same.
            log.error("registry %s: the sync at close failed: %s", self.path, exc)
        self.env.close()
        self.closed = True
        if self.failed is None:
            _unmark_running(self.path)

    @property
    def is_open(self) -> bool:
        """True while writes can be committed (environment open, committer alive, not failed,
        no commit hung past the disk timeout)."""
        return not self.closed and self.failed is None and self.hung_since is None \
            and self._committer is not None and not self._committer.done()

    def fail(self, reason: str) -> None:
        """The environment (or its disk) failed: refuse every commit from now on, and tell
        ``on_failure`` once. Reads go on while they can (LMDB's map keeps what it has read)."""
        if self.failed is not None:
            return
        self.failed = reason
        log.error("registry %s failed: %s; no write can be committed on this node until it is rebuilt "
                  "elsewhere", self.path, reason)
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception:  # noqa: BLE001 - the failure itself is already recorded and logged
                log.exception("registry %s: the failure hook failed", self.path)

    def _load_usage(self) -> None:
        with self.env.begin(db=self.db["usage"]) as txn:
            for k, v in txn.cursor():
                self.usage[bytes(k).decode()] = list(_unpack(v))

    def check_room(self) -> None:
        """Raise ``StorageFull`` when the registry's disk is full: within its free-space reserve
        and the margin of the writes under way (``storage.local.full_below``, what ``buckets-admin
        info`` calls ``full``), before a write of a new object or part. Such a write may still
        reach a quorum of other disks, but degraded (this disk takes none of its shards), and
        its entry grows the registry into the reserve its disk keeps for deletions, until no
        deletion fits either. A statvfs at most once a second while there is room to spare, and
        at every write once free space is under twice the threshold (a second's writes could
        cross it: a cluster test found the registry's disk 1.6 MB past it) or the disk is full
        (so space a deletion freed is seen at once)."""
        if not self.has_room():
            raise StorageFull()

    def has_room(self) -> bool:
        """Whether the registry's disk is not full (see ``check_room``); True when the disk cannot
        be asked (the commit will say what is wrong with it)."""
        from buckets.storage import local

        now = time.monotonic()
        checked, room, near = self._room
        if not room or near or now - checked > 1.0:
            try:
                st = os.statvfs(self.path)
            except OSError:
                return True
            free, full = st.f_bavail * st.f_frsize, local.full_below(st.f_blocks * st.f_frsize)
            room = free >= full
            self._room = (now, room, free < 2 * full)
        return room

    # -- group commit ---------------------------------------------------------------
    async def commit(self, ops: list[Op]) -> None:
        if self.failed is not None:
            raise RegistryFailed()
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((ops, fut))
        assert self._wakeup is not None, "Registry.start() not called"
        self._wakeup.set()
        await fut

    async def _apply_batch(self, batch: list[list[Op]]) -> tuple[list, Any]:
        """One group commit (``_apply`` in the registry's thread), its failure typed. A commit
        that found its disk full to the last block releases the disk's ballast
        (``storage.local.BALLAST``: another program filled the file system) and is tried once
        more in that space: deletions go on."""
        from buckets.storage import local

        if self.failed is not None:
            raise RegistryFailed()
        try:
            return await self._pool.run(self._apply, batch)
        except Exception as exc:
            failure = self._failure(exc)
            if not (isinstance(failure, StorageFull) and not isinstance(exc, lmdb.MapFullError)
                    and local.release_ballast(os.path.dirname(os.path.abspath(self.path)), f"registry commit: {exc}")):
                raise failure from None
        try:
            return await self._pool.run(self._apply, batch)
        except Exception as exc:
            raise self._failure(exc) from None

    def _watch_commit(self) -> asyncio.TimerHandle | None:
        """A commit whose disk hangs (its file system frozen, its device stuck) cannot be
        abandoned: it may still land. Past ``storage.local.disk_timeout`` the registry says so
        (an error in the log, ``is_open`` false: ``/health/ready`` answers 503) while the
        writes wait for it; ``_commit_done`` ends that once it returns."""
        from buckets.storage import local

        if local.disk_timeout <= 0:
            return None
        started = time.monotonic()

        def hung() -> None:
            self.hung_since = started
            log.error("registry %s: a commit has not finished in %gs: its disk hangs; writes wait for it, "
                      "and the node reports itself not ready", self.path, local.disk_timeout)

        return asyncio.get_running_loop().call_later(local.disk_timeout, hung)

    def _commit_done(self, watch: asyncio.TimerHandle | None) -> None:
        if watch is not None:
            watch.cancel()
        if self.hung_since is not None:
            log.warning("registry %s: the commit that hung finished after %.0fs: writes go on", self.path,
                        time.monotonic() - self.hung_since)
            self.hung_since = None

    def _failure(self, exc: Exception) -> Exception:
        """``_typed_failure``, and a failed disk or environment (``is_disk_failure``; a full disk
        is not one) fails the registry (``fail``)."""
        failure = _typed_failure(exc, self.path)
        if failure is exc and is_disk_failure(exc):
            self.fail(f"a commit failed: {exc}")
            return RegistryFailed()
        return failure

    async def _commit_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                watch = self._watch_commit()
                try:
                    results, deltas = await self._apply_batch([ops for ops, _ in batch])
                except Exception as exc:  # the environment failed (disk full, I/O): fail the batch
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                finally:
                    self._commit_done(watch)
                self._after_commit([op for (ops, _), err in zip(batch, results) if err is None for op in ops], deltas)
                self.commits += 1
                self.committed_ops += sum(len(ops) for ops, _ in batch)
                self.last_batch = len(batch)
                self.batch_sum += len(batch)
                self.batch_counts[bisect.bisect_left(self.batch_bounds, len(batch))] += 1
                for (_, fut), err in zip(batch, results):
                    if fut.done():
                        continue
                    if err is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(err)

    def _apply(self, items: list[list[Op]]) -> tuple[list[Exception | None], dict[str, list[int]]]:
        """One write transaction for the whole batch; each caller's ops in a nested one, so
        a failed precondition rejects only that caller's change."""
        results: list[Exception | None] = []
        deltas: dict[str, list[int] | None] = {}
        changes: list[tuple] = []  # (bucket, key, old, new) of the keys' versions: the range digests'
        with self.env.begin(write=True) as txn:
            for ops in items:
                item_deltas: dict[str, list[int] | None] = {}
                item_changes: list[tuple] = []
                try:
                    with self.env.begin(write=True, parent=txn) as sub:
                        for op in ops:
                            self._apply_op(sub, op, item_deltas, item_changes)
                except BucketsError as exc:
                    results.append(exc)
                    continue
                results.append(None)
                changes += item_changes
                for bucket, d in item_deltas.items():
                    acc = deltas.get(bucket)
                    if d is None:
                        deltas[bucket] = None
                    elif acc is None:
                        deltas[bucket] = list(d)
                    else:
                        acc[0] += d[0]
                        acc[1] += d[1]
            for bucket, d in deltas.items():
                if d is None:
                    continue
                cur = txn.get(bucket.encode(), db=self.db["usage"])
                objs, size = _unpack(cur) if cur else (0, 0)
                txn.put(bucket.encode(), _pack([objs + d[0], size + d[1]]), db=self.db["usage"])
            txn_id = txn.id()
        try:  # (after the commit: see digests.py)
            self.digests.committed(txn_id, changes)
        except Exception:  # noqa: BLE001 - the commit stands; digests that missed it must not be kept
            log.exception("registry: keeping anti-entropy digests failed; they are scanned again")
            self.digests.stale_all()
        return results, deltas  # type: ignore[return-value]

    def _apply_op(self, txn, op: Op, deltas: dict[str, list[int] | None], changes: list[tuple]) -> None:
        """Apply one op in ``txn``; ``changes`` gets (bucket, key, old, new) for each key whose
        version it changed, each state (version, is tombstone) or None, or (bucket, None, None,
        None) when it changed the bucket's keys in another way (its range digests are stale)."""
        kind = op.kind
        if kind in _RESTATES:
            changes.append((op.name, None, None, None))
        if kind == "put_object" or kind == "delete_object":
            if kind == "put_object" and txn.get(op.name.encode(), db=self.db["buckets"]) is None:
                raise NoSuchBucket(resource=op.name, BucketName=op.name)
            op.result = self._txn_set_object(txn, op.name, op.key, op.value if kind == "put_object" else None,
                                             op.data, deltas)
        elif kind == "put_version":
            self._txn_put_version(txn, op, deltas)
        elif kind == "delete_version":
            self._txn_delete_version(txn, op, deltas)
        elif kind == "update_version":
            self._txn_update_version(txn, op)
        elif kind == "merge_object":
            assert op.ts is not None, "merge_object needs a version"
            full = object_key(op.name, op.key)
            tomb_key = _tomb_key(full)
            lock = self._txn_key_lock(txn, full)
            if lock is not None:
                if lock["id"] != op.lock:
                    raise KeyLocked(until=lock["until"])
                txn.delete(_lock_key(full), db=self.db["sys"])  # the lock's own commit ends it
            current, have = self._txn_held(txn, op.name, op.key)
            op.prior = have
            if have is not None and have >= version_tuple(op.ts):
                op.applied = False
                return
            if op.judging and have is not None and (op.judged is None or have > version_tuple(op.judged)):
                op.applied = False  # (see ``Op.judged``)
                op.result = UNSEEN
                return
            self._txn_set_object(txn, op.name, op.key, op.value, op.data, deltas, old=current)
            op.result = current
            if op.value is None:
                txn.put(tomb_key, _tomb_value(version_tuple(op.ts), op.key, op.judged if op.judging else NOT_JUDGED),
                        db=self.db["tombs"])
                new = (version_tuple(op.ts), True)
            else:
                txn.delete(tomb_key, db=self.db["tombs"])
                new = (entry_version(op.value), False)
            changes.append((op.name, op.key, None if have is None else (have, current is None), new))
        elif kind == "retract_object":
            # Undo a merge_object of version ``ts`` whose write failed (a replica index's
            # ``retract``): only if that version is still what the key holds, put back what it
            # replaced (``value``: the entry; None: the tombstone of version ``prior``, or nothing).
            assert op.ts is not None, "retract_object needs the version it undoes"
            full = object_key(op.name, op.key)
            tomb_key = _tomb_key(full)
            lock = self._txn_key_lock(txn, full)
            if lock is not None:
                raise KeyLocked(until=lock["until"])
            current, have = self._txn_held(txn, op.name, op.key)
            if have != version_tuple(op.ts) or (op.value is not None and entry_version(op.value) >= have) \
                    or (op.prior is not None and version_tuple(op.prior) >= have):
                op.applied = False
                return
            self._txn_set_object(txn, op.name, op.key, op.value, None, deltas, old=current)
            if op.value is None and op.prior is not None:
                txn.put(tomb_key, _tomb_value(version_tuple(op.prior), op.key), db=self.db["tombs"])
                new = (version_tuple(op.prior), True)
            else:
                txn.delete(tomb_key, db=self.db["tombs"])
                new = None if op.value is None else (entry_version(op.value), False)
            changes.append((op.name, op.key, (have, current is None), new))
        elif kind == "forget_tombstone":
            # Forget a delete's tombstone (a replica index's ``forget_tombs``): only if the key
            # holds exactly that tombstone (version ``ts``: no entry, no newer or older one) and
            # no conditional write holds its lock; else not applied.
            assert op.ts is not None, "forget_tombstone needs the version it forgets"
            full = object_key(op.name, op.key)
            current, have = self._txn_held(txn, op.name, op.key)
            if current is not None or have != version_tuple(op.ts) or self._txn_key_lock(txn, full) is not None:
                op.applied = False
                return
            txn.delete(_tomb_key(full), db=self.db["tombs"])
            changes.append((op.name, op.key, (have, True), None))
        elif kind == "lock_key":
            full = object_key(op.name, op.key)
            lock = self._txn_key_lock(txn, full)
            if lock is not None and lock["id"] != op.value["id"]:
                raise KeyLocked(until=lock["until"])
            txn.put(_lock_key(full), _pack(op.value), db=self.db["sys"])
            op.result = self._txn_held_judged(txn, op.name, op.key)
        elif kind == "unlock_key":
            full = object_key(op.name, op.key)
            lock = self._txn_key_lock(txn, full)
            if lock is not None and lock["id"] == op.value["id"]:
                txn.delete(_lock_key(full), db=self.db["sys"])
        elif kind == "drop_entries":
            self._txn_drop_entries(txn, op, deltas)
        elif kind == "put_bucket":
            txn.put(op.name.encode(), _pack(op.value), db=self.db["buckets"])
        elif kind == "delete_bucket":
            base = op.name.encode() + b"\0"
            cur = txn.cursor(db=self.db["objects"])
            if cur.set_range(base) and cur.key().startswith(base):
                raise BucketNotEmpty(resource=op.name, BucketName=op.name)
            txn.delete(op.name.encode(), db=self.db["buckets"])
            txn.delete(op.name.encode(), db=self.db["usage"])
            deltas[op.name] = None
        elif kind == "put_upload":
            txn.put(f"{op.name}\0{op.key}".encode(), _pack(op.value), db=self.db["uploads"])
        elif kind == "delete_upload":
            txn.delete(f"{op.name}\0{op.key}".encode(), db=self.db["uploads"])
        elif kind == "put_user":
            txn.put(op.name.encode(), _pack(op.value), db=self.db["users"])
        elif kind == "delete_user":
            txn.delete(op.name.encode(), db=self.db["users"])
        elif kind == "put_sys":
            txn.put(op.name.encode(), _pack(op.value), db=self.db["sys"])
        elif kind == "put_event":  # the notification queue: key = a time-ordered id
            txn.put(op.name.encode(), _pack(op.value), db=self.db["events"])
        elif kind == "delete_event":
            txn.delete(op.name.encode(), db=self.db["events"])
        elif kind == "put_policy":
            txn.put((POLICY_PREFIX + op.name).encode(), _pack(op.value), db=self.db["sys"])
        elif kind == "delete_policy":
            txn.delete((POLICY_PREFIX + op.name).encode(), db=self.db["sys"])
        else:
            raise ValueError(f"unknown registry op {kind}")

    def _txn_key_lock(self, txn, full: bytes) -> dict | None:
        """The key's lock (``{"id", "until"}``), if one is held; an expired one (its writer
        died or stalled past ``until``, wall clock) is removed and counts as none."""
        raw = txn.get(_lock_key(full), db=self.db["sys"])
        if raw is None:
            return None
        lock = _unpack(raw)
        if float(lock.get("until", 0)) < time.time():
            txn.delete(_lock_key(full), db=self.db["sys"])
            return None
        return lock

    def _txn_set_object(self, txn, bucket: str, key: str, entry: dict | None, data: bytes | None,
                        deltas: dict[str, list[int] | None], old: Any = False) -> dict | None:
        """Store ``entry`` for (bucket, key), or remove the key when it is None; keep the
        usage counters and the small-object copy in step. Returns the entry it replaced."""
        if old is False:
            old = self._txn_get_object(txn, bucket, key)
        d = deltas.get(bucket) or [0, 0]
        deltas[bucket] = d
        if old is not None:
            d[0] -= 1
            d[1] -= old.get("size", 0)
        if entry is not None:
            d[0] += 1
            d[1] += entry.get("size", 0)
        self._txn_set_current(txn, bucket, key, entry, data, old)
        return old

    # -- versions (versioned buckets) ----------------------------------------------------
    # The ``objects`` table holds each key's current version (an object or a delete marker,
    # ``dm``); the ``versions`` table holds the noncurrent ones, newest first per key. The
    # usage counters count every stored version that is not a delete marker.
    @staticmethod
    def _count(d: list[int], entry: dict, sign: int) -> None:
        if not entry.get("dm"):
            d[0] += sign
            d[1] += sign * entry.get("size", 0)

    def _txn_find_version(self, txn, bucket: str, key: str, vid: str) -> tuple[bytes, dict] | None:
        """A noncurrent version by id: one lookup for ids that carry their order
        (``engine.versions.new_version_id``), a walk of the key's versions otherwise (``null``)."""
        if len(vid) == 32 and vid != "null":
            try:
                rec = _versions_base(bucket, key) + _VS.pack(_VS_MAX - int(vid[:16], 16)) + vid.encode()
            except ValueError:
                rec = None
            if rec is not None:
                raw = txn.get(rec, db=self.db["versions"])
                if raw is not None:
                    entry = _unpack(raw)
                    if entry.get("key") == key and entry.get("vid") == vid:
                        return rec, entry
        for rec, entry in self._txn_versions(txn, bucket, key, vid=vid):
            return rec, entry
        return None

    def _txn_versions(self, txn, bucket: str, key: str, *, vid: str | None = None,
                      limit: int | None = None) -> list[tuple[bytes, dict]]:
        base = _versions_base(bucket, key)
        out = []
        cur = txn.cursor(db=self.db["versions"])
        if cur.set_range(base):
            for rec, raw in cur:
                rec = bytes(rec)
                if not rec.startswith(base):
                    break
                entry = _unpack(raw)
                if entry.get("key") == key and (vid is None or entry.get("vid") == vid):
                    out.append((rec, entry))  # (a hash collision is never mistaken for this key)
                    if limit is not None and len(out) >= limit:
                        break
        return out

    def _txn_set_current(self, txn, bucket: str, key: str, entry: dict | None, data: bytes | None,
                         old: dict | None) -> None:
        """Replace the current record (no usage accounting) and keep the small copy in step."""
        small_key = hashlib.blake2b(object_key(bucket, key), digest_size=20).digest()
        if entry is not None:
            self._txn_put_object(txn, bucket, key, entry)
            if data is not None:
                body = entry["wid"].encode() + b"\0" + data
                txn.put(small_key, _SMALL.pack(xxhash.xxh3_64_intdigest(body)) + body, db=self.db["small"])
            elif old is not None and old.get("inline"):
                txn.delete(small_key, db=self.db["small"])
        elif old is not None:
            self._txn_delete_object(txn, bucket, key)
            if old.get("inline"):
                txn.delete(small_key, db=self.db["small"])

    def _txn_put_version(self, txn, op: Op, deltas: dict[str, list[int] | None]) -> None:
        """Make ``op.value`` the current version. The previous current becomes noncurrent,
        unless it has the same version id (the ``null`` version is replaced in place); a
        noncurrent version with the new one's id is replaced too. ``op.result``: the entries
        replaced (their files are the caller's to remove)."""
        bucket, key, entry = op.name, op.key, op.value
        if txn.get(bucket.encode(), db=self.db["buckets"]) is None:
            raise NoSuchBucket(resource=bucket, BucketName=bucket)
        d = deltas.get(bucket) or [0, 0]
        deltas[bucket] = d
        old = self._txn_get_object(txn, bucket, key)
        replaced = []
        if old is not None:
            if old.get("vid", "null") == entry["vid"]:
                replaced.append(old)
            else:
                txn.put(_versions_key(bucket, key, old), _pack(dict(old, key=key)), db=self.db["versions"])
        if entry["vid"] == "null":  # only the null version can be written twice
            for rec, prior in self._txn_versions(txn, bucket, key, vid="null"):
                txn.delete(rec, db=self.db["versions"])
                replaced.append(prior)
        for r in replaced:
            self._count(d, r, -1)
        self._count(d, entry, +1)
        self._txn_set_current(txn, bucket, key, entry, op.data, old)
        op.result = replaced

    def _txn_delete_version(self, txn, op: Op, deltas: dict[str, list[int] | None]) -> None:
        """Remove version ``op.value`` of a key for good; when it was the current one, the
        newest noncurrent version (object or delete marker) becomes current. ``op.result``:
        the removed entry, or None when there was no such version."""
        bucket, key, vid = op.name, op.key, op.value
        d = deltas.get(bucket) or [0, 0]
        deltas[bucket] = d
        current = self._txn_get_object(txn, bucket, key)
        op.result = None
        if current is not None and current.get("vid", "null") == vid:
            older = self._txn_versions(txn, bucket, key, limit=1)
            if older:
                rec, promoted = older[0]
                txn.delete(rec, db=self.db["versions"])
                promoted = {f: v for f, v in promoted.items() if f != "key"}
                self._txn_set_current(txn, bucket, key, promoted, None, current)
            else:
                self._txn_set_current(txn, bucket, key, None, None, current)
            op.result = current
        else:
            found = self._txn_find_version(txn, bucket, key, vid)
            if found is not None:
                txn.delete(found[0], db=self.db["versions"])
                op.result = {f: v for f, v in found[1].items() if f != "key"}
        if op.result is not None:
            self._count(d, op.result, -1)

    def _txn_update_version(self, txn, op: Op) -> None:
        """Replace the stored entry of version ``op.value["vid"]`` (same write: its tags, lock,
        ACL), wherever it is; ``op.applied`` False when that version no longer exists."""
        bucket, key, entry = op.name, op.key, op.value
        current = self._txn_get_object(txn, bucket, key)
        if current is not None and current.get("vid", "null") == entry["vid"] and current["wid"] == entry["wid"]:
            self._txn_put_object(txn, bucket, key, entry)
            return
        found = self._txn_find_version(txn, bucket, key, entry["vid"])
        if found is not None and found[1]["wid"] == entry["wid"]:
            txn.put(found[0], _pack(dict(entry, key=key)), db=self.db["versions"])
            return
        op.applied = False

    def get_object_version(self, bucket: str, key: str, vid: str) -> dict | None:
        """Version ``vid`` of a key (current or not), or None."""
        current = self.get_object(bucket, key)
        if current is not None and current.get("vid", "null") == vid:
            return current
        with self.env.begin() as txn:
            found = self._txn_find_version(txn, bucket, key, vid)
        return None if found is None else {f: v for f, v in found[1].items() if f != "key"}

    def noncurrent_versions(self, bucket: str, key: str) -> list[dict]:
        """A key's noncurrent versions, newest first (entries without ``key``)."""
        with self.env.begin() as txn:
            return [{f: v for f, v in e.items() if f != "key"} for _, e in self._txn_versions(txn, bucket, key)]

    def scan_versions(self, bucket: str, prefix: str = "", delimiter: str = "", key_marker: str = "",
                      version_marker: str = "", limit: int = 1000
                      ) -> tuple[list[tuple[str, dict, bool]], list[str], bool, tuple[str, str] | None]:
        """One ListObjectVersions page: ([(key, entry, is_latest)], common prefixes, truncated,
        (next key marker, next version-id marker) or None). Keys ascending, each key's versions
        newest first, delete markers included. Blocking: run off-loop."""
        items: list[tuple[str, dict, bool]] = []
        prefixes: list[str] = []
        with self.env.begin() as txn:  # one read transaction for the page's versions
            return self._scan_versions(txn, items, prefixes, bucket, prefix, delimiter, key_marker,
                                       version_marker, limit)

    def _scan_versions(self, txn, items: list, prefixes: list, bucket: str, prefix: str, delimiter: str,
                       key_marker: str, version_marker: str, limit: int):
        def expand(key: str, after_vid: str | None) -> bool:
            """Add a key's versions (after ``after_vid`` when given); False when the page filled."""
            current = self._txn_get_object(txn, bucket, key)
            if current is None:
                return True
            versions = [(current, True)] + [(e, False) for _, e in self._txn_versions(txn, bucket, key)]
            if after_vid is not None:
                ids = [e.get("vid", "null") for e, _ in versions]
                if after_vid not in ids:
                    return True
                versions = versions[ids.index(after_vid) + 1:]
            for entry, latest in versions:
                if len(items) + len(prefixes) >= limit:
                    return False
                items.append((key, entry, latest))
            return True

        start_after = key_marker
        if key_marker and version_marker and key_marker.startswith(prefix):
            if not expand(key_marker, version_marker):
                last_key, last_entry, _ = items[-1]
                return items, prefixes, True, (last_key, last_entry.get("vid", "null"))
        while True:
            room = limit - len(items) - len(prefixes)
            if room <= 0:
                more_keys, more_prefixes, _ = self.scan_objects(bucket, prefix, delimiter, start_after, 1,
                                                                include_markers=True)
                if not more_keys and not more_prefixes:
                    return items, prefixes, False, None
                return items, prefixes, True, self._version_cursor(items, prefixes)
            keys, cps, truncated = self.scan_objects(bucket, prefix, delimiter, start_after, min(room, 256),
                                                     include_markers=True)
            # merge keys and prefixes in order, as the scan produced them
            merged = sorted([(k.encode(), k, False) for k, _ in keys] + [(p.encode(), p, True) for p in cps])
            for _, name, is_prefix in merged:
                if is_prefix:
                    if len(items) + len(prefixes) >= limit:
                        return items, prefixes, True, self._version_cursor(items, prefixes)
                    prefixes.append(name)
                elif not expand(name, None):
                    return items, prefixes, True, self._version_cursor(items, prefixes)
                start_after = name
            if not truncated:
                return items, prefixes, False, None

    @staticmethod
    def _version_cursor(items: list[tuple[str, dict, bool]], prefixes: list[str]) -> tuple[str, str]:
        last_item = items[-1] if items else None
        last_prefix = prefixes[-1] if prefixes else None
        if last_prefix is not None and (last_item is None or last_prefix.encode() > last_item[0].encode()):
            return last_prefix, ""
        assert last_item is not None
        return last_item[0], last_item[1].get("vid", "null")

    def walk_noncurrent(self, start: bytes = b"", limit: int = 256) -> tuple[list[tuple[str, str, dict]], bytes | None]:
        """Up to ``limit`` noncurrent (bucket, key, entry) from raw position ``start`` in the
        versions table, and where to resume (the scanner's pass over old versions)."""
        out: list[tuple[str, str, dict]] = []
        with self.env.begin(db=self.db["versions"]) as txn:
            cur = txn.cursor()
            if not cur.set_range(start):
                return out, None
            for rec, raw in cur:
                if len(out) >= limit:
                    return out, bytes(rec)
                entry = _unpack(raw)
                bucket = bytes(rec).split(b"\0", 1)[0].decode()
                key = entry.pop("key")
                out.append((bucket, key, entry))
        return out, None

    def _txn_drop_entries(self, txn, op: Op, deltas: dict[str, list[int] | None]) -> None:
        """Remove up to ``op.value`` object entries and as many tombstones of bucket ``op.name``
        (a replica that no longer holds the bucket's index); ``op.applied``: more remain."""
        limit = int(op.value or 1000)
        base = op.name.encode() + b"\0"
        keys: list[str] = []
        cur = txn.cursor(db=self.db["objects"])
        more = False
        if cur.set_range(base):
            for rec, raw in cur:
                rec = bytes(rec)
                if not rec.startswith(base):
                    break
                fulls = [rec] if raw[:1] == _SINGLE else [bytes(k) for k, _ in _unpack(raw[1:])]
                keys.extend(f[len(base):].decode() for f in fulls)
                if len(keys) >= limit:
                    more = True
                    break
        for key in keys:
            self._txn_set_object(txn, op.name, key, None, None, deltas)
        tombs = []
        cur = txn.cursor(db=self.db["tombs"])
        if cur.set_range(base):
            for rec, _ in cur:
                if not bytes(rec).startswith(base):
                    break
                if len(tombs) >= limit:
                    more = True
                    break
                tombs.append(bytes(rec))
        for rec in tombs:
            txn.delete(rec, db=self.db["tombs"])
        op.result = keys
        op.applied = more

    async def drop_entries(self, bucket: str, batch: int = 1000) -> int:
        """Forget every object entry and tombstone of ``bucket`` (the index replica moved
        away), ``batch`` at a time (short transactions). Returns how many entries went."""
        dropped = 0
        while True:
            op = Op("drop_entries", bucket, value=batch)
            await self.commit([op])
            dropped += len(op.result or ())
            if not op.applied:
                return dropped

    def _after_commit(self, ops: list[Op], deltas: dict[str, list[int]]) -> None:
        for op in ops:
            if op.kind == "drop_entries":
                for key in op.result or ():
                    self.cache.discard((op.name, key))
            elif op.kind in ("put_version", "delete_version", "update_version"):
                self.cache.discard((op.name, op.key))  # the current may have changed: re-read it
            elif op.kind == "put_object" or (op.kind in ("merge_object", "retract_object")
                                             and op.applied and op.value is not None):
                self.cache.replace((op.name, op.key), op.value)  # a write does not admit (cache.py)
            elif op.kind == "delete_object" or (op.kind in ("merge_object", "retract_object") and op.applied):
                self.cache.discard((op.name, op.key))
            elif op.kind == "put_bucket":
                self.buckets[op.name] = op.value
            elif op.kind == "delete_bucket":
                self.buckets.pop(op.name, None)
        for bucket, d in deltas.items():
            if d is None:
                self.usage.pop(bucket, None)
                continue
            u = self.usage.setdefault(bucket, [0, 0])
            u[0] += d[0]
            u[1] += d[1]

    # -- object records ---------------------------------------------------------------
    def _txn_held_judged(self, txn, bucket: str, key: str) -> tuple[dict | None, tuple | None, Any]:
        """``_txn_held``, and for a tombstone the version its conditional delete judged (None:
        nothing) or ``NOT_JUDGED`` (an entry carries its own)."""
        current = self._txn_get_object(txn, bucket, key)
        if current is not None:
            return current, entry_version(current), NOT_JUDGED
        raw = txn.get(_tomb_key(object_key(bucket, key)), db=self.db["tombs"])
        if raw is None:
            return None, None, NOT_JUDGED
        return None, _tomb_version(raw)[0], _tomb_judged(raw)

    def _txn_held(self, txn, bucket: str, key: str) -> tuple[dict | None, tuple | None]:
        """(entry, its version) of a key, or (None, its tombstone's version or None)."""
        current = self._txn_get_object(txn, bucket, key)
        if current is not None:
            return current, entry_version(current)
        raw = txn.get(_tomb_key(object_key(bucket, key)), db=self.db["tombs"])
        return None, (_tomb_version(raw)[0] if raw is not None else None)

    def _txn_get_object(self, txn, bucket: str, key: str) -> dict | None:
        full = object_key(bucket, key)
        if len(full) < LONG:
            raw = txn.get(full, db=self.db["objects"])
            return _decode_single(raw) if raw is not None else None
        raw = txn.get(full[:LONG], db=self.db["objects"])
        if raw is None:
            return None
        for k, entry in _unpack(raw[1:]):
            if k == full:
                return entry
        return None

    def _txn_put_object(self, txn, bucket: str, key: str, entry: dict) -> None:
        full = object_key(bucket, key)
        objects = self.db["objects"]
        if len(full) < LONG:
            txn.put(full, _encode_single(entry), db=objects)
            return
        raw = txn.get(full[:LONG], db=objects)
        items = [i for i in _unpack(raw[1:]) if i[0] != full] if raw is not None else []
        items.append([full, entry])
        items.sort(key=lambda i: i[0])
        txn.put(full[:LONG], _MULTI + _pack(items), db=objects)

    def _txn_delete_object(self, txn, bucket: str, key: str) -> None:
        full = object_key(bucket, key)
        objects = self.db["objects"]
        if len(full) < LONG:
            txn.delete(full, db=objects)
            return
        raw = txn.get(full[:LONG], db=objects)
        if raw is None:
            return
        items = [i for i in _unpack(raw[1:]) if i[0] != full]
        if items:
            txn.put(full[:LONG], _MULTI + _pack(items), db=objects)
        else:
            txn.delete(full[:LONG], db=objects)

    def get_small(self, bucket: str, key: str, wid: str) -> bytes | None:
        """The registry's copy of the bytes of write ``wid`` of a small object, if present and intact.

        The disks hold the authoritative, erasure-coded copy; this one only saves small GETs
        their disk reads (two thread hand-offs each). A copy failing its xxh3 is ignored.
        """
        small_key = hashlib.blake2b(object_key(bucket, key), digest_size=20).digest()
        with self.env.begin(db=self.db["small"]) as txn:
            raw = txn.get(small_key)
        if raw is None or len(raw) < _SMALL.size:
            return None
        body = raw[_SMALL.size:]
        if _SMALL.unpack_from(raw, 0)[0] != xxhash.xxh3_64_intdigest(body):
            return None
        stored_wid, _, data = body.partition(b"\0")
        return data if stored_wid == wid.encode() else None

    def get_object(self, bucket: str, key: str) -> dict | None:
        """Cache, then LMDB. Point lookups are a few microseconds: safe on the event loop.
        A background worker's lookup (``cache.background_lookups``) leaves the cache as it is."""
        ck = (bucket, key)
        quiet = in_background()
        entry = self.cache.peek(ck) if quiet else self.cache.get(ck)
        if entry is not None:
            return entry
        with self.env.begin() as txn:
            entry = self._txn_get_object(txn, bucket, key)
        if entry is not None and not quiet:
            self.cache.put(ck, entry)
        return entry

    def scan_objects(self, bucket: str, prefix: str = "", delimiter: str = "", start_after: str = "",
                     limit: int = 1000, include_markers: bool = False) -> tuple[list[tuple[str, dict]], list[str], bool]:
        """One listing page: (objects, common prefixes, truncated). Blocking: run off-loop.

        Each object comes with its listing fields only (``LISTING_FIELDS``), not the whole
        entry: use ``get_object`` for that. A key whose current version is a delete marker
        is not listed (and makes no common prefix) unless ``include_markers``."""
        base = bucket.encode() + b"\0"
        pfx = prefix.encode()
        delim = delimiter.encode()
        after = start_after.encode()
        objects: list[tuple[str, dict]] = []
        prefixes: list[str] = []
        full_prefix = base + pfx
        seek = max(full_prefix, base + after) if after else full_prefix
        # A key of LONG bytes or more lives in the record named by its first LONG bytes, which
        # sorts before a longer seek target: seek to seek[:LONG] and skip items below ``floor``.
        floor = seek
        with self.env.begin(db=self.db["objects"]) as txn:
            cur = txn.cursor()
            if not cur.set_range(seek[:LONG]):
                return objects, prefixes, False
            while True:
                rec = cur.key()
                if not rec.startswith(base) or (pfx and not rec.startswith(full_prefix[:len(rec)])):
                    return objects, prefixes, False
                raw = cur.value()
                if raw[:1] == _SINGLE:
                    items: Iterable = ((rec, raw),)
                else:
                    items = [(k, None, {f: e.get(f) for f in LISTING_FIELDS})  # type: ignore[misc]
                             for k, e in _unpack(raw[1:])]
                next_seek = None
                for item in items:
                    full = item[0]
                    if full < floor:
                        continue
                    k = full[len(base):]
                    if after and k <= after:
                        continue
                    if not k.startswith(pfx):
                        if k > pfx:
                            return objects, prefixes, False
                        continue
                    entry = _decode_listing(item[1]) if len(item) == 2 else item[2]
                    if entry.get("dm") and not include_markers:
                        continue
                    if delim:
                        idx = k.find(delim, len(pfx))
                        if idx >= 0:
                            cp = k[: idx + len(delim)]
                            if after and cp <= after:
                                next_seek = prefix_successor(base + cp)
                                break
                            if len(objects) + len(prefixes) >= limit:
                                return objects, prefixes, True
                            prefixes.append(cp.decode())
                            next_seek = prefix_successor(base + cp)
                            break
                    if len(objects) + len(prefixes) >= limit:
                        return objects, prefixes, True
                    objects.append((k.decode(), entry))
                if next_seek is not None:
                    floor = next_seek
                    if not cur.set_range(next_seek[:LONG]):
                        return objects, prefixes, False
                elif not cur.next():
                    return objects, prefixes, False

    async def list_objects(self, *args, **kwargs):
        return await self._read_pool.run(lambda: self.scan_objects(*args, **kwargs))

    def bucket_has_objects(self, bucket: str) -> bool:
        base = bucket.encode() + b"\0"
        with self.env.begin(db=self.db["objects"]) as txn:
            cur = txn.cursor()
            return bool(cur.set_range(base)) and cur.key().startswith(base)

    def page_objects(self, start: bytes = b"", limit: int = 256) -> tuple[list[tuple[str, str, dict]], bytes | None]:
        """Up to ``limit`` (bucket, key, entry) from raw position ``start``, and where to resume.

        Each page is its own short read transaction, so slow walkers (scanner, refill)
        never pin an old snapshot of the database.
        """
        out: list[tuple[str, str, dict]] = []
        with self.env.begin(db=self.db["objects"]) as txn:
            cur = txn.cursor()
            if not cur.set_range(start):
                return out, None
            for rec, raw in cur:
                rec = bytes(rec)
                if len(out) >= limit:
                    return out, rec
                if raw[:1] == _SINGLE:
                    items = [(rec, _decode_single(raw))]
                else:
                    items = [(bytes(k), e) for k, e in _unpack(raw[1:])]
                for full, entry in items:
                    b, _, k = full.partition(b"\0")
                    out.append((b.decode(), k.decode(), entry))
        return out, None

    def walk_objects(self, start: bytes = b""):
        """Every (bucket, key, entry) from ``start``, one short transaction per page."""
        pos: bytes | None = start
        while pos is not None:
            page, pos = self.page_objects(pos)
            yield from page

    def bucket_versions(self, bucket: str) -> list[tuple[str, tuple, bool]]:
        """Every (key, version, is_tombstone) of one bucket, as a list (tests, small buckets)."""
        return list(self.iter_bucket_versions(bucket))

    def bucket_digest(self, bucket: str, n: int) -> tuple[list[int], list[int]]:
        """Anti-entropy's ``n`` range digests of ``bucket`` and the keys counted in each
        (``digests.range_digests`` over ``iter_bucket_versions``): for the usual ``n``, kept
        current by the commits once scanned (``digests.py``). Blocking: call it off-loop."""
        if n != self.digests.ranges:
            counts = [0] * n
            return range_digests(self.iter_bucket_versions(bucket), n, counts), counts

        def scan() -> tuple[int, list[int], list[int]]:
            counts = [0] * n
            with self.env.begin() as txn:
                return txn.id(), range_digests(self._txn_bucket_versions(txn, bucket), n, counts), counts

        return self.digests.get(bucket, scan)

    def iter_bucket_versions(self, bucket: str, ranges: "set[int] | None" = None,
                             n: int = 0) -> Iterator[tuple[str, tuple, bool]]:
        """Every (key, version, is_tombstone) of one bucket, one at a time from one read
        transaction: the input of anti-entropy digests, which fold it as it comes (memory does
        not grow with the bucket). Blocking and linear in the bucket's size: consume it
        off-loop, paced by the caller. ``ranges``: only the keys in these of ``n`` digest
        ranges (``digests.range_of``), the others not decoded (an exchange asks for a few)."""
        with self.env.begin() as txn:
            yield from self._txn_bucket_versions(txn, bucket, ranges, n)

    def _txn_bucket_versions(self, txn, bucket: str, ranges: "set[int] | None" = None,
                             n: int = 0) -> Iterator[tuple[str, tuple, bool]]:
        base = bucket.encode() + b"\0"
        cur = txn.cursor(db=self.db["objects"])
        if cur.set_range(base):
            for rec, raw in cur:
                rec = bytes(rec)
                if not rec.startswith(base):
                    break
                if raw[:1] == _SINGLE:
                    key = rec[len(base):].decode()
                    if ranges is None or range_of(key, n) in ranges:
                        yield key, entry_version(_decode_single(raw)), False
                    continue
                for full, entry in _unpack(raw[1:]):
                    key = bytes(full)[len(base):].decode()
                    if ranges is None or range_of(key, n) in ranges:
                        yield key, entry_version(entry), False
        cur = txn.cursor(db=self.db["tombs"])
        if cur.set_range(base):
            for rec, raw in cur:
                rec = bytes(rec)
                if not rec.startswith(base):
                    break
                if ranges is not None and len(rec) < LONG and range_of(rec[len(base):].decode(), n) not in ranges:
                    continue  # (a long key's record names its hash: decoded to be judged)
                version, key = _tomb_version(raw)
                if ranges is None or range_of(key, n) in ranges:
                    yield key, version, True

    def get_version(self, bucket: str, key: str) -> tuple[dict | None, tuple | None]:
        """(entry, version) of a key, or (None, tombstone version or None).

        The entry and the tombstone are read in one transaction: read in two, a commit landing
        between them (the committer runs in its own thread) that replaces a tombstone with an
        entry made the key read as never written, neither one nor the other (a replica index
        answered "nothing" for a key it held, and a reader returned an older version: a lossy
        history, session 28)."""
        entry, version, _ = self.held_judged(bucket, key)
        return entry, version

    def held_judged(self, bucket: str, key: str) -> tuple[dict | None, tuple | None, Any]:
        """``get_version``, and for a tombstone the version its conditional delete's check
        judged (None: nothing), or ``NOT_JUDGED``; one transaction."""
        ck = (bucket, key)
        quiet = in_background()
        entry = self.cache.peek(ck) if quiet else self.cache.get(ck)
        if entry is not None:
            return entry, entry_version(entry), NOT_JUDGED
        with self.env.begin() as txn:
            entry, version, judged = self._txn_held_judged(txn, bucket, key)
        if entry is not None and not quiet:
            self.cache.put(ck, entry)
        return entry, version, judged

    def old_tombstones(self, bucket: str, before_hlc: int, limit: int, after: str = "") -> list[tuple[str, tuple]]:
        """Up to ``limit`` (key, version) of ``bucket``'s tombstones whose version's clock is
        below ``before_hlc``, from the first record after ``after``'s (a walk of the bucket's
        tombstones in record order, resumed where the last call stopped). Blocking: off the loop."""
        base = bucket.encode() + b"\0"
        start = _tomb_key(object_key(bucket, after)) + b"\0" if after else base
        out: list[tuple[str, tuple]] = []
        with self.env.begin(db=self.db["tombs"]) as txn:
            cur = txn.cursor()
            if not cur.set_range(start):
                return out
            for rec, raw in cur:
                if not bytes(rec).startswith(base):
                    break
                version, key = _tomb_version(raw)
                if version[0] < before_hlc:
                    out.append((key, version))
                    if len(out) >= limit:
                        break
        return out

    def tombstones_held(self, bucket: str, items: list[tuple[str, tuple]]) -> list[bool]:
        """For each (key, version): whether the key holds exactly that tombstone (no entry), read
        in one transaction, past the cache. Blocking: off the loop."""
        with self.env.begin() as txn:
            return [current is None and have == version
                    for (current, have), (_, version) in zip((self._txn_held(txn, bucket, key) for key, _ in items),
                                                             items)]

    def count_objects(self) -> int:
        return self._entries("objects")

    def count_tombstones(self) -> int:
        """The deletes this registry remembers (a cluster's index replica: ``tombs``)."""
        return self._entries("tombs")

    def _entries(self, table: str) -> int:
        """Records in ``table``: one read of its header."""
        with self.env.begin(db=self.db[table]) as txn:
            return txn.stat(self.db[table])["entries"]

    # -- other tables -----------------------------------------------------------------
    def _get(self, table: str, key: str) -> Any:
        if not key:  # LMDB rejects an empty key (MDB_BAD_VALSIZE); no record can have one
            return None
        with self.env.begin(db=self.db[table]) as txn:
            raw = txn.get(key.encode())
        return _unpack(raw) if raw is not None else None

    def _items(self, table: str, prefix: str = "") -> list[tuple[str, Any]]:
        out = []
        p = prefix.encode()
        with self.env.begin(db=self.db[table]) as txn:
            cur = txn.cursor()
            if not cur.set_range(p):
                return out
            for k, v in cur:
                if not bytes(k).startswith(p):
                    break
                out.append((bytes(k).decode(), _unpack(v)))
        return out

    def get_bucket(self, name: str) -> dict | None:
        return self.buckets.get(name)

    def list_buckets(self) -> list[tuple[str, dict]]:
        return sorted(self.buckets.items(), key=lambda kv: kv[0].encode())

    def get_upload(self, bucket: str, upload_id: str) -> dict | None:
        return self._get("uploads", f"{bucket}\0{upload_id}")

    def list_uploads(self, bucket: str) -> list[dict]:
        return [v for _, v in self._items("uploads", f"{bucket}\0")]

    def get_user(self, access_key: str) -> dict | None:
        return self._get("users", access_key)

    def list_users(self) -> list[tuple[str, dict]]:
        return self._items("users")

    def get_sys(self, name: str) -> Any:
        return self._get("sys", name)

    def list_events(self, after: str = "", limit: int = 256) -> list[tuple[str, dict]]:
        """Queued notification events in id (time) order, after ``after``."""
        out = []
        with self.env.begin(db=self.db["events"]) as txn:
            cur = txn.cursor()
            if not cur.set_range(after.encode()):
                return out
            for k, v in cur:
                key = bytes(k).decode()
                if key == after:
                    continue
                out.append((key, _unpack(v)))
                if len(out) >= limit:
                    break
        return out

    def count_events(self) -> int:
        with self.env.begin(db=self.db["events"]) as txn:
            return txn.stat(self.db["events"])["entries"]

    def get_policy(self, name: str) -> dict | None:
        """A named access policy (``buckets-admin policy``): ``{"document": ..., "created": ts}``."""
        return self._get("sys", POLICY_PREFIX + name)

    def list_policies(self) -> list[tuple[str, dict]]:
        return [(k[len(POLICY_PREFIX):], v) for k, v in self._items("sys", POLICY_PREFIX)]

    def size_bytes(self) -> int:
        info = self.env.info()
        stat = self.env.stat()
        return (info["last_pgno"] + 1) * stat["psize"]
