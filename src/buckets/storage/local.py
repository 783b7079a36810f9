"""``LocalDisk``: the Disk protocol over a directory on this machine.

Every blocking call runs in this disk's own small thread pool, so a slow or hung disk
stalls only its own work and never the event loop. Durability: data files are fsynced
before they are renamed into place, and every directory whose entries change is fsynced
after the rename (when ``sync`` is on).

Errors: ``OSError`` never leaves this module; it becomes the typed ``DiskError`` its errno
means (``FileNotFound``, ``DiskFull``, ``DiskAccessDenied``, ``DiskFaulty``...). An I/O
error or a vanished root marks the disk offline, except an I/O error reading a file's data
(bad sectors: ``CorruptData``, see ``_UNREADABLE_ERRNOS``).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import errno
import fcntl
import itertools
import logging
import mmap
import os
import shutil
import stat as stat_mod
import threading
import time
from builtins import open as builtins_open
from collections.abc import AsyncIterator, Iterator
from typing import Any

from buckets.errors import (
    CorruptData, DiskAccessDenied, DiskError, DiskFaulty, DiskFull, DiskInUse, DiskOffline, FileNotFound,
    ForeignDisk, PathEscape, UnformattedDisk,
)
from buckets.storage.disk import MAX_FORMAT_FILE, MAX_RANGE, MAX_SMALL_FILE, DiskInfo, FileStat
from buckets.storage import aiosync
from buckets.storage import records as rlog
from buckets.storage.pace import Pace
from buckets.storage.format import DATA_DIR, FORMAT_FILE, LOG_DIR, MULTIPART_DIR, SYS_DIR, TMP_DIR
from buckets.runtime import Workers, wait_for

log = logging.getLogger("buckets.storage")

# errnos that mean the device itself is failing: the disk goes offline until probed back
# EROFS too: a file system that turned itself read-only after an error of its own (ext4's
# errors=remount-ro) takes no write again until it is repaired. Kept online, it was tried by
# every write, each logging its refusal and queueing a heal that failed the same way (about
# 4,000 warnings a minute under load, tests/faults/test_faults_eio.py); offline, its shards are
# still read when the others are not enough (``Store.disks_for_read``).
_FAULTY_ERRNOS = {errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESTALE, errno.ENOTCONN, errno.EUCLEAN, errno.EROFS}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DENIED_ERRNOS = {errno.EACCES, errno.EPERM}
# An I/O error from the read of a file's data (a shard's range, a record, a metadata file) is
# not one of those, though: its sectors cannot be read, the most common way a disk fails, and the rest of the disk
# serves. Such a read is damage (``CorruptData``: read around, rewritten by the heal), not a
# dead disk: taken offline, the disk came back at the monitor's next probe, its refill met the
# same sectors and took it offline again, every 5 s (tests/faults/test_faults_bad_sectors.py).
# A disk that is dead fails its writes and the monitor's probe, and goes offline by those.
_UNREADABLE_ERRNOS = {errno.EIO, errno.EBADMSG}
_WALK_BATCH = 512  # entries per thread hand-off (and per round trip, for a remote disk)
_NOWAIT = getattr(os, "RWF_NOWAIT", None) if hasattr(os, "preadv") else None  # Linux 4.14+
_FILE_BLOCK = 4096  # what a small file takes at least (write_file's reserve check counts whole blocks)
_KEPT_SEGMENT_FDS = 64  # read descriptors of log segments a disk keeps open


def _pread_data(fd: int, length: int, offset: int, full: str) -> bytes:
    """``os.pread`` of ``length`` bytes (fewer only at the end of the file), a read of data
    whose sectors fail raised as ``CorruptData``. A read that meets a failing sector after
    good ones returns those first (a short read), and the next one fails: read on until the
    length or the end."""
    at = offset
    try:
        data = os.pread(fd, length, at)
        if len(data) == length or not data:
            return data
        out = bytearray(data)
        while len(out) < length:
            at = offset + len(out)
            more = os.pread(fd, length - len(out), at)
            if not more:
                break
            out += more
        return bytes(out)
    except OSError as exc:
        if exc.errno in _UNREADABLE_ERRNOS:
            raise CorruptData(f"{full}@{at}: unreadable ({exc.strerror})") from None
        raise


def _pread_salvaging(fd: int, length: int, offset: int) -> bytes:
    """``os.pread``, with the blocks whose sectors fail read as zeros (which no record scan
    takes for a record): a log scan goes on past a bad sector, as past a damaged record."""
    try:
        data = os.pread(fd, length, offset)
        if len(data) == length or not data or offset + len(data) >= os.fstat(fd).st_size:
            return data
    except OSError as exc:  # (a short read before the end: the next block may fail, below)
        if exc.errno not in _UNREADABLE_ERRNOS:
            raise
    out = bytearray()
    size = os.fstat(fd).st_size
    at, end = offset, min(offset + length, size)
    while at < end:
        step = min(4096 - at % 4096, end - at)
        try:
            piece = os.pread(fd, step, at)
        except OSError as exc:
            if exc.errno not in _UNREADABLE_ERRNOS:
                raise
            piece = bytes(step)
        if not piece:
            break
        out += piece
        at += len(piece)
    return bytes(out)



def _load_syncfs():
    """libc ``syncfs(fd)``: flush one filesystem (data, inodes, directory entries)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.syncfs
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


class _DeviceSync:
    """One ``syncfs`` at a time per filesystem, shared by every caller that asked for it
    before it started (group commit across the disks that live on one device).

    A caller needs a flush that *starts* after its own writes: the next generation. If one
    is running, it waits for it and for the next; whoever finds none running starts it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._started = 0
        self._completed = 0
        self._running = False
        self._failed: dict[int, int] = {}  # generation -> errno, for recent failures

    def sync(self, fd: int) -> None:
        with self._cond:
            target = self._started + 1
            while self._completed < target:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                gen = self._started
                self._cond.release()
                err = 0
                try:
                    if _syncfs(fd) != 0:
                        err = ctypes.get_errno() or errno.EIO
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._completed = gen
                    if err:
                        self._failed[gen] = err
                        for old in [g for g in self._failed if g < gen - 64]:
                            del self._failed[old]
                    self._cond.notify_all()
            err = self._failed.get(target) or next((e for g, e in self._failed.items() if g > target), 0)
        if err:
            raise OSError(err, "syncfs failed")


# Test-only: fsyncs to leave out, to prove that the power-loss harness notices a missing one
# (tests/crash/test_crash_selftest.py): "shard" (a streamed file's data before it is renamed
# into place), "rename-dir" (the directories a commit renamed into), "record" (a batch of the
# record log, on the event loop's path and the thread's). Always empty otherwise.
OMIT_FSYNC_FOR_TESTS: frozenset[str] = frozenset()

_DEVICE_SYNC: dict[int, _DeviceSync] = {}
_DEVICE_SYNC_LOCK = threading.Lock()


def _device_sync(dev: int) -> _DeviceSync:
    with _DEVICE_SYNC_LOCK:
        ds = _DEVICE_SYNC.get(dev)
        if ds is None:
            ds = _DEVICE_SYNC[dev] = _DeviceSync()
        return ds
_TMP_PREFIX = f"{os.getpid():x}-{os.urandom(4).hex()}"
_TMP_IDS = (f"{_TMP_PREFIX}-{i:x}" for i in itertools.count())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: str, sync: bool) -> None:
    """mkdir -p that fsyncs the parent of every directory it creates."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    _makedirs(parent, sync)
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    if sync:
        _fsync_dir(parent)


def _write_all(fh, data: bytes) -> None:
    """An unbuffered write may be short: loop until every byte is written."""
    view = memoryview(data)
    while view:
        n = fh.write(view)
        view = view[n:]


def _libc_function(name: str, argtypes: list):
    """A libc function Python's ``os`` has no binding for (Linux), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = getattr(libc, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


_SYNC_FILE_RANGE = _libc_function("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint])


# (``os.posix_fallocate`` has no modes)
_FALLOCATE = _libc_function("fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64])
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


class _CannotPunch(Exception):
    """The file system cannot punch holes (not an error of the disk)."""


def _punch(fd: int, offset: int, length: int) -> None:
    if _FALLOCATE(fd, _PUNCH_HOLE, offset, length) != 0:
        err = ctypes.get_errno() or errno.EIO
        if err in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise _CannotPunch()
        raise OSError(err, os.strerror(err))


def _wid_tokens(wid: str) -> tuple[bytes, ...]:
    """How a record's payload names write ``wid``: its text, or (the compact form of
    ``registry/entrycodec.py``) the bytes of a hex id."""
    try:
        return (wid.encode(), bytes.fromhex(wid)) if len(wid) >= 16 else (wid.encode(),)
    except ValueError:
        return (wid.encode(),)


def _release_records(path: str, records: list[tuple[tuple[bytes, ...], tuple[int, int, int]]]) -> list[int]:
    """Punch records of one segment out of its file (their bytes read as zeros from then on,
    and a scan skips them as it skips a damaged record), each ``(wid, location)`` only after
    checking that it is an intact record naming that write (``wid``: how a payload may name
    it). A record's partial first and last blocks are zeroed, not freed: such a block is freed
    too once all of it reads as zeros (its other bytes were another released record's, or
    zeros), which changes no byte of the file. Blocks past the last whole block below the end
    of the file are left alone: an append may be writing there. The bytes the file system
    freed, per record."""
    freed = [0] * len(records)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return freed  # compacted away meanwhile
    try:
        st = os.fstat(fd)
        blocks, size, bs = st.st_blocks, st.st_size, max(st.st_blksize, 512)
        zeros = bytes(bs)
        for n, (wid, (_segment, offset, length)) in enumerate(records):
            if offset + length > size:
                continue
            try:
                payload = rlog.unframe(os.pread(fd, length, offset))
            except CorruptData:
                continue  # released already, damaged, or not a record: nothing is known of it
            if not any(token in payload for token in wid):
                continue  # not the write's record: a stale location is never released
            _punch(fd, offset, length)
            for block in {offset // bs * bs, (offset + length) // bs * bs}:
                if block + bs <= size // bs * bs and os.pread(fd, bs, block) == zeros:
                    _punch(fd, block, bs)
            now = os.fstat(fd).st_blocks
            freed[n], blocks = max(0, blocks - now) * 512, now
        return freed
    finally:
        os.close(fd)
_SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_MIN = 64 << 10  # shard writes at least this big start their writeback at once


def _write_and_start_writeback(fh, data: bytes, offset: int) -> None:
    """Write, then have the kernel start writing those pages to the disk (asynchronously,
    ``SYNC_FILE_RANGE_WRITE``): a large object's shards then reach the disk while the body
    still streams, instead of all at the final fsync (which stays, and is what makes the
    write durable). Best effort: where the call is missing or fails, the fsync does it all."""
    _write_all(fh, data)
    if _SYNC_FILE_RANGE is not None and len(data) >= WRITEBACK_MIN:
        _SYNC_FILE_RANGE(fh.fileno(), offset, len(data), _SYNC_FILE_RANGE_WRITE)


# -- direct writes of shard files ----------------------------------------------------------------
#
# A shard file's bytes are written with O_DIRECT (from the writer's page-aligned buffer straight
# to the device) rather than copied into the page cache first. Measured on this project's VM
# (bench/README.md, bigwrites): a buffered write plus fdatasync cost ~2.7-3.7 ms of kernel CPU
# per MiB (copy_folio_from_iter_atomic: 41% of the server's samples during 16 MiB PUTs), O_DIRECT
# ~0.25. MinIO writes its shard files the same way. Whatever is not a whole 4 KiB block when the
# file is closed is written without O_DIRECT, then the file is fsynced as before: durability is
# unchanged (O_DIRECT alone promises nothing; the fsync does). A file system that refuses O_DIRECT
# (older tmpfs, some FUSE ones) gets buffered writes, as before.
DIRECT_ALIGN = 4096
# A file's buffer takes its first framed piece whole (512 KiB and its checksum at 2+2), plus the
# part block carried from the write before, so that each piece leaves in one write call: two writes per piece in a 256 KiB buffer cost the disk's thread one more system call
# and one more wait for the GIL each, and the event loop, waiting for the GIL behind four disks'
# threads doing that, stalled 1-3 ms at a time (16 MiB PUTs: 270-279 -> 290-302 MB/s, context
# switches per PUT 800 -> 615, three alternated runs). At least DIRECT_BUFFER, at most
# DIRECT_BUFFER_MAX; sizes in steps of DIRECT_STEP, so that files of one geometry share buffers.
DIRECT_BUFFER = 256 << 10
DIRECT_BUFFER_MAX = 4 << 20
DIRECT_STEP = 64 << 10
_DIRECT_KEEP = 16  # aligned buffers kept for reuse per size (a fresh one page-faults, dear on a VM)
_direct_free: dict[int, list[mmap.mmap]] = {}  # size -> buffers
_direct_lock = threading.Lock()


def _direct_size(first: int) -> int:
    """The buffer for a file whose first write is ``first`` bytes (see DIRECT_BUFFER)."""
    need = -(-(first + DIRECT_ALIGN) // DIRECT_STEP) * DIRECT_STEP
    return min(DIRECT_BUFFER_MAX, max(DIRECT_BUFFER, need))


def _take_direct(size: int) -> mmap.mmap:
    """A free buffer of at least ``size`` bytes (the smallest kept), or a new one."""
    with _direct_lock:
        for have in sorted(_direct_free):
            if have >= size and _direct_free[have]:
                return _direct_free[have].pop()
    return mmap.mmap(-1, size)


def _give_direct(buf: mmap.mmap) -> None:
    with _direct_lock:
        kept = _direct_free.setdefault(len(buf), [])
        if len(kept) < _DIRECT_KEEP:
            kept.append(buf)
            return
    buf.close()
direct_writes = True  # the server's --direct-io / BUCKETS_DIRECT_IO

# Record-log appends (see LocalDisk._append_here): with --aio-fsync on, a batch up to this size is
# written on the event loop (into the page cache: ~10-30 us) and fsynced through Linux AIO
# (aiosync), with no thread hand-off; a bigger one, a segment's first, or any where AIO is not
# available goes to the disk's thread as before. Off by default since session 45: that write is
# a blocking call on the loop, and a file system frozen (fsfreeze, a snapshot) or a device stuck
# under it stopped the whole node, every disk and request, until it thawed (7 minutes of
# timeouts in a test); in the disk's thread it stops only that disk (``disk_timeout``). Six
# alternated pairs of 4 KiB PUTs on the bench machine: 831-1,055 PUT/s off, 695-1,030 on.
aio_fsync = False  # the server's --aio-fsync / BUCKETS_AIO_FSYNC
LOOP_APPEND_MAX = 512 << 10

# Free space every disk keeps for what frees space or only describes it: deletions (their
# records in the log, the registry's commits), compaction, metadata files. New data (a shard
# file's bytes, an inline object's record) is refused with ``DiskFull`` once it would take the
# disk below its reserve, so a store that filled up can still delete (before, a disk filled to
# its last block refused the delete markers too, and nothing could be freed through S3).
disk_reserve = 1.0  # percent of each disk: the server's --disk-reserve / BUCKETS_DISK_RESERVE (0: none)

# A disk that hangs (a dying device retrying a sector, a file system frozen for a snapshot, a
# controller reset) answers nothing, and every request waiting on it would wait too: a call on
# a disk that has not finished after this many seconds marks the disk offline, as an I/O error
# does, and fails with ``DiskFaulty``; its thread is left to finish (or not) on its own, and
# what it was doing is undone or swept as after any failed call. The disk monitor brings the
# disk back once a write and a read there finish in time again. Calls that may rightly take
# longer (removing a whole tree) are not bounded. The server's --disk-timeout /
# BUCKETS_DISK_TIMEOUT (0: none).
disk_timeout = 30.0
RESERVE_FLOOR = 256 << 20  # at least this much, but never more than RESERVE_CAP of the disk
RESERVE_CAP = 0.05
_SPACE_TTL = 1.0  # seconds a disk's statvfs is trusted, less what was written since
_SPACE_RECHECK = 64 << 20  # ... or until this much was written since


# A disk with less free space than this many reserves is near full (the disk monitor's
# round): the removal of small objects then gives their records' space back at once
# (engine/space.py) instead of leaving it to compaction.
NEAR_FULL = 4

def reserve_bytes(total: int, percent: float | None = None) -> int:
    """The bytes a disk of ``total`` bytes keeps free for deletions (``disk_reserve``)."""
    percent = disk_reserve if percent is None else percent
    if percent <= 0:
        return 0
    return int(max(total * percent / 100, min(RESERVE_FLOOR, total * RESERVE_CAP)))


FULL_MARGIN = 64 << 20


def full_below(total: int) -> int:
    """Free space under which a disk of ``total`` bytes counts as full: its reserve, plus a
    margin (the reserve, at most FULL_MARGIN) for the pieces of the writes under way, since a
    piece is refused once it would cross the reserve. ``buckets-admin info`` calls such a disk
    ``full``, and the registry's disk there stops new objects (``Registry.check_room``): the
    disk takes no more of their shards, and each would go in degraded while its entry grows
    the registry into the reserve. 0 without a reserve."""
    reserve = reserve_bytes(total)
    return reserve + min(reserve, FULL_MARGIN)


# The reserve holds back only the store's own data. Another program that fills the file system
# to its last block (its files on the same mount) would still leave no room for a deletion's
# record or a registry commit, and nothing could be freed through S3. So every disk also keeps
# a ballast: a file of a quarter of its reserve (at most BALLAST_MAX) in its system directory,
# released when the disk runs out of space (ENOSPC, or free space under half the reserve) and
# made again once the disk has room (LocalDisk.keep_ballast, from the disk monitor).
BALLAST = "ballast"  # under SYS_DIR
BALLAST_MAX = 16 << 20


def ballast_bytes(total: int) -> int:
    """The ballast a disk of ``total`` bytes keeps (0 without a reserve)."""
    return min(BALLAST_MAX, reserve_bytes(total) // 4)


def release_ballast(sys_dir: str, why: str) -> bool:
    """Remove the ballast of the disk whose system directory is ``sys_dir`` (from any thread):
    its space goes to what the reserve is for. False when there was none."""
    path = os.path.join(sys_dir, BALLAST)
    try:
        size = os.stat(path).st_blocks * 512
        os.unlink(path)
    except OSError:
        return False
    log.error("disk %s is out of space (%s): released its %d-byte ballast so that deletions fit. "
              "Something other than the store may be filling it; free space there", os.path.dirname(sys_dir),
              why, size)
    return True


def _set_direct(fh, on: bool) -> bool:
    try:
        fd = fh.fileno()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | os.O_DIRECT) if on else (flags & ~os.O_DIRECT))
        return True
    except (OSError, AttributeError, ValueError):
        return False


class _DirectFile:
    """The O_DIRECT side of one shard file: bytes gather in a page-aligned buffer (taken from
    a small free list) and go out in whole 4 KiB blocks, the tail at ``finish``. One thread at
    a time (the lock: an abort must not hand the buffer back while a write still copies into it)."""

    def __init__(self, fh) -> None:
        self._fh = fh
        self._buf: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._used = 0
        self._lock = threading.Lock()
        self._wrote = False  # a direct write went through
        self._refused = False  # the file system took the flag but refused the write: buffered

    def _out(self, view: memoryview) -> None:
        if not self._refused:
            try:
                _write_all(self._fh, view)
                self._wrote = True
                return
            except OSError as exc:
                # EINVAL before any direct write went through: a file system that accepts the
                # flag but not the writes. Nothing was written: the same bytes, buffered.
                if exc.errno != errno.EINVAL or self._wrote or not _set_direct(self._fh, False):
                    raise
                self._refused = True
        _write_all(self._fh, view)

    def write(self, *parts: "bytes | memoryview", frame: bool = False) -> None:
        """Append ``parts``, each copied once, into the buffer. ``frame``: they are one framed
        piece (its checksum, the piece), and the file's first sizes its buffer to take each in
        one write (DIRECT_BUFFER); a stream's chunks (a peer's write) get the least buffer."""
        with self._lock:
            if self._view is None:
                self._buf = _take_direct(_direct_size(sum(map(len, parts))) if frame else DIRECT_BUFFER)
                self._view = memoryview(self._buf)
            buf, size = self._view, len(self._view)
            for part in parts:
                src = memoryview(part).cast("B")
                while src:
                    n = min(size - self._used, len(src))
                    buf[self._used:self._used + n] = src[:n]
                    self._used += n
                    src = src[n:]
                    if self._used == size:
                        self._out(buf)
                        self._used = 0
            whole = self._used - self._used % DIRECT_ALIGN
            if whole:  # out now, so the device works while the body streams
                self._out(buf[:whole])
                rest = self._used - whole
                buf[:rest] = buf[whole:self._used]
                self._used = rest

    def finish(self) -> None:
        """Write the tail (less than a block) without O_DIRECT; give the buffer back."""
        with self._lock:
            if self._used and self._view is not None:
                if not self._refused and not _set_direct(self._fh, False):
                    raise OSError(errno.EIO, "cannot clear O_DIRECT for a file's last bytes")
                _write_all(self._fh, self._view[:self._used])
                self._used = 0
            self._release()

    def release(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._view is None:
            return
        self._view.release()
        buf, self._buf, self._view, self._used = self._buf, None, None, 0
        _give_direct(buf)


def _rmtree(path: str) -> None:
    """Remove a tree; entries that vanish meanwhile (a concurrent delete) are not errors."""
    def onerror(_fn, _path, exc_info) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(path, onerror=onerror)


class LocalShardWriter:
    """Streams one file; writes go through the disk's pool in order."""

    def __init__(self, disk: "LocalDisk", path: str, fh) -> None:
        self._disk, self._path, self._fh = disk, path, fh
        self._state = "open"
        self._written = 0
        self._direct: _DirectFile | None = None
        self._tried_direct = not direct_writes

    def _write(self, data: "bytes | tuple[bytes | memoryview, ...]") -> None:
        self._disk._room_for(sum(map(len, data)) if isinstance(data, tuple) else len(data))
        if not self._tried_direct:
            self._tried_direct = True
            if _set_direct(self._fh, True):
                self._direct = _DirectFile(self._fh)
        if self._direct is not None:
            if isinstance(data, tuple):  # a framed piece (``ErasureCodec.encode_block_parts``)
                self._direct.write(*data, frame=True)
            else:
                self._direct.write(data)
        else:
            _write_and_start_writeback(self._fh, b"".join(data) if isinstance(data, tuple) else data,
                                       self._written)

    async def write(self, data: "bytes | tuple[bytes | memoryview, ...]") -> None:
        if self._state != "open":
            raise DiskError(f"{self._path}: write to a file already {self._state}")
        # No check of the disk's root (``_checked``): the file is open, so its bytes cannot land
        # on whatever holds the root's parent, and a stat per piece is one more wait for the GIL
        # in the disk's thread (see DIRECT_BUFFER). Its creation and its close are checked.
        await self._disk._run(self._write, data, check_root=False)
        self._written += sum(map(len, data)) if isinstance(data, tuple) else len(data)

    async def close(self, sync: bool) -> None:
        if self._state == "closed":
            return
        if self._state != "open":
            raise DiskError(f"{self._path}: close of a file already {self._state}")
        self._state = "closed"

        def _close() -> None:
            try:
                if self._direct is not None:
                    self._direct.finish()
                if sync and "shard" not in OMIT_FSYNC_FOR_TESTS:
                    os.fsync(self._fh.fileno())
            finally:
                if self._direct is not None:
                    self._direct.release()
                self._fh.close()

        await self._disk._run(_close)

    async def abort(self) -> None:
        self._state = "aborted"

        def _abort() -> None:
            try:
                if self._direct is not None:
                    self._direct.release()  # waits for a write still running
                self._fh.close()
            finally:
                try:
                    os.unlink(self._path)
                except FileNotFoundError:
                    pass

        if not self._disk.online:
            # A disk gone offline (perhaps hung on this very file's write): the file is removed
            # when its thread gets to it; the write that gave it up does not wait for that.
            self._disk._later(_abort)
            return
        try:
            await self._disk._run(_abort)
        except DiskError:
            pass


# -- one process per disk ----------------------------------------------------------------
# Each disk directory a process serves is locked (``flock`` on ``.buckets.sys/lock``; the
# holder's pid is read from /proc/locks for the refusal) from the first read of its format
# on: a second server started on the same directories by mistake would append to the same
# logs and registry and corrupt both. The kernel drops the lock when the process ends,
# ``kill -9`` included, and at an ``exec`` (the descriptor is close-on-exec: a restart in
# place takes it again). Handles on one directory in one process share the lock (counted):
# keyed by the root's (device, inode), so a new file system mounted at the same path (a
# replaced disk) is locked anew.
LOCK_FILE = f"{SYS_DIR}/lock"
_claims: dict[tuple[int, int], list[int]] = {}  # root's (st_dev, st_ino) -> [fd, handles]
_claims_guard = threading.Lock()  # the dict; each root's own lock below guards its file's I/O
_claim_locks: dict[tuple[int, int], threading.Lock] = {}  # (a hung disk holds only its own)


def _lock_root(root: str) -> int:
    """The lock's descriptor, opened read-only: an existing lock file is taken without a write,
    so a disk whose writes hang (a frozen file system) is not held up here. -1 when the file
    cannot be made (a read-only or full file system that never held it): no lock then."""
    path = os.path.join(root, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            if not os.path.isdir(os.path.dirname(path)):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
                return -1
            raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _flock_holder(fd)
        os.close(fd)
        raise DiskInUse(f"{root} is in use by another Buckets process{f' (pid {holder})' if holder else ''}: "
                        f"two processes on one disk would corrupt it; stop the other one first") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _flock_holder(fd: int) -> int | None:
    """The process holding the flock on ``fd``'s file, from ``/proc/locks`` (Linux), or None."""
    st = os.fstat(fd)
    inode = f":{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].endswith(inode) and fields[4].isdigit():
                    return int(fields[4])
    except OSError:
        pass
    return None


def _release_claim(key: tuple[int, int]) -> None:
    with _claims_guard:
        entry = _claims.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _claims[key]
            if entry[0] >= 0:
                os.close(entry[0])


class LocalRangeReader:
    """Reads of one byte range of one of a disk's files through one descriptor, opened at the
    first read (in the disk's read threads, bounded as ``read_range`` is): what a GET reads of
    one shard, span after span (``LocalDisk.open_range``; a peer serving a GET's stream reads
    through one too, ``cluster/diskservice.py``).

    A file removed meanwhile stays readable through it, as an open file does, until the read
    ends: on a cluster an overwrite or delete through another node removes the write it
    replaced without waiting for GETs through other nodes, and a GET streaming that write was
    cut mid-way. A read outside the range answers None (the caller reads it with
    ``read_range``). ``close`` closes the descriptor once no read of it is running in a disk
    thread (one stuck in a hung disk closes it when it returns): a descriptor closed under a
    ``pread`` could be reused by another open and read the wrong file."""

    def __init__(self, disk: "LocalDisk", path: str, offset: int, length: int) -> None:
        self.disk = disk
        self.path = path
        self._start, self._end = offset, offset + length
        self._fd: int | None = None
        self._lock = threading.Lock()  # _fd, _busy, _closed: the loop's close against the disk threads
        self._busy = 0
        self._closed = False

    async def read(self, offset: int, length: int) -> bytes | None:
        if self._closed or offset < self._start or offset + length > self._end:
            return None
        return await self.disk._run(self._pread, self.disk._abs(self.path, root_ok=True), offset, length, read=True)

    def _pread(self, full: str, offset: int, length: int) -> bytes:
        with self._lock:
            if self._closed:
                raise DiskError(f"{full}: the range reader was closed")
            self._busy += 1
            fd = self._fd
        try:
            if fd is None:
                fd = os.open(full, os.O_RDONLY)
                with self._lock:
                    if self._fd is None:
                        self._fd = fd
                    else:  # another read opened it first
                        os.close(fd)
                        fd = self._fd
            return _pread_data(fd, length, offset, full)
        finally:
            with self._lock:
                self._busy -= 1
                if self._closed and not self._busy:
                    self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if not self._busy:
                self._close_fd()

    def __del__(self) -> None:  # a reader dropped without being closed
        if self._fd is not None and not self._busy:
            self._close_fd()


class LocalDisk:
    """One directory of this machine. See ``buckets.storage.disk`` for the contract."""

    def __init__(self, root: str, disk_id: str = "", *, threads: int = 4,
                 log_owner: "LocalDisk | None" = None) -> None:
        self.root = os.path.abspath(root)
        # A second handle on the same directory (``peer_handle``) appends to the record log
        # through its owner: a disk's log has one appender in a process, because compaction
        # leaves alone only the segment its handle appends to (and judges "sealed" by the
        # next segment's id).
        self._log_owner = log_owner
        # how long its calls take lately, shared with its owner (``storage/pace.py``)
        self.pace = log_owner.pace if log_owner is not None else Pace()
        self._punch_holes = True  # False once the file system said it cannot (release_records)
        self.near_full = False  # free space under NEAR_FULL reserves at the disk monitor's last round
        self.refused_at = float("-inf")  # time.monotonic() of the last refusal of new data (_room_for)
        self._releases: list[tuple[list, asyncio.Future]] = []  # release_records waiting for the pool
        self._release_task: asyncio.Task | None = None
        self.endpoint = self.root
        self.disk_id = disk_id
        self.online = True
        self.healing = False
        self.last_error = ""
        self._closed = False
        self._pool = Workers(max_workers=threads, thread_name_prefix=f"disk-{os.path.basename(self.root)}")
        # Reads of data (a GET's metadata, shard ranges and records) have threads of their own:
        # behind writes that hang (a frozen file system takes reads, never writes) they waited
        # for the thaw, or timed out and failed the GET, though nothing kept them from running.
        self._read_pool = Workers(max_workers=threads, thread_name_prefix=f"disk-{os.path.basename(self.root)}-r")
        # Bounded calls running in the disk's threads: thread id -> monotonic start (``_timed``);
        # and when the first call past the timeout was given up (0: none is), ``_still_stuck``
        self._busy: dict[int, float] = {}
        self._hung_at = 0.0
        self._batch: list[tuple[str, str, bytes, bool, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        # The record log: appends queue here and one task writes each batch (group commit).
        self._rec_batch: list[tuple[list[bytes], bool, asyncio.Future]] = []
        self._rec_flusher: asyncio.Task | None = None
        self._seg: "_Segment | None" = None  # the segment being appended to (this process's)
        self._seg_stale = False  # set when the disk comes back: the next append opens a new segment
        # Segments holding records appended without an fsync since (ids): made durable before
        # any record is punched out (``_sync_appended``).
        self._unsynced: set[int] = set()
        self._aio_refused = False  # this file system refused an asynchronous fsync: threads only
        # Read descriptors of recently read segments (see read_record), oldest first.
        self._read_fds: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._nowait = True
        # Free space (``_room_for``): (monotonic time, free bytes, reserve) of the last statvfs,
        # and the data bytes let in since.
        self._space: tuple[float, int, int] | None = None
        self._ballast_freed = False  # a full file system released the ballast: one append is tried again
        self._spent = 0
        self._claim: tuple[int, int] | None = None  # the root this handle holds the lock of (_claim_root)

    def __repr__(self) -> str:
        return f"LocalDisk({self.root!r}, {self.disk_id!r})"

    def peer_handle(self) -> "LocalDisk":
        """Another handle on this disk for the node's disk service: its own pool, its own
        online state (the service's, not the store's disk monitor's), and this handle's record
        log. Closing it leaves this one open."""
        return LocalDisk(self.root, self.disk_id, log_owner=self)

    # -- state --------------------------------------------------------------------------
    def mark_offline(self, reason: str) -> None:
        self.last_error = reason
        if self.online:
            self.online = False
            log.error("disk %s went offline: %s", self.endpoint, reason)

    def mark_online(self) -> None:
        self.online = True
        self._seg_stale = True
        self._drop_read_fds()  # it may be another disk now

    def local_path(self, rel: str) -> str:
        return self._abs(rel, root_ok=True)

    # -- plumbing ---------------------------------------------------------------------
    def _abs(self, rel: str, *, root_ok: bool = False) -> str:
        if not isinstance(rel, str) or "\0" in rel:
            raise PathEscape(f"not a path: {rel!r:.100}")
        path = os.path.normpath(os.path.join(self.root, rel))
        if path == self.root:
            if not root_ok:
                raise PathEscape(f"refusing to replace or remove the disk root: {rel!r}")
        elif not path.startswith(self.root + os.sep):
            raise PathEscape(f"path escapes disk root: {rel!r}")
        return path

    def _checked(self, fn, *args):
        # A vanished root (unmounted, pulled) must fail the call: creating directories
        # below it would silently write to whatever filesystem holds its parent.
        if not os.path.isdir(self.root):
            raise DiskOffline(f"{self.root}: disk root is missing or not a directory")
        return fn(*args)

    def _typed(self, exc: OSError) -> DiskError:
        msg = f"{self.root}: {exc}"
        if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            return FileNotFound(msg)
        if exc.errno in _FULL_ERRNOS:
            err: DiskError = DiskFull(msg)
            # The file system itself is full, not just the reserve (which _room_for keeps):
            # the ballast's space lets the next deletion in.
            if release_ballast(os.path.join(self.root, SYS_DIR), str(exc)):
                self._ballast_freed = True
            self._space = None  # and new data is measured against the space there is now
        elif exc.errno in _DENIED_ERRNOS:
            err = DiskAccessDenied(msg)
        elif exc.errno in _FAULTY_ERRNOS:
            err = DiskFaulty(msg)
        else:
            return DiskError(msg)
        self.last_error = msg
        return err

    async def _run(self, fn, *args, check_root: bool = True, bounded: bool = True, read: bool = False,
                   paced: bool = True):
        """``fn(*args)`` in the disk's thread, its failure typed; ``bounded``: at most
        ``disk_timeout`` seconds, after which the disk counts as hung (``_hung``); ``read``: a
        read of data, in the threads for those (``_read_pool``); ``paced``: a call that moves
        data (not a lookup of metadata), timed into ``pace`` (``storage/pace.py``)."""
        if self._closed:
            raise DiskOffline(f"{self.endpoint}: disk is closed")
        if self._hung_at and not read and self._still_stuck():
            raise self._still_hung()
        pool = self._read_pool if read else self._pool
        what = fn
        try:
            if check_root:
                fn, args = self._checked, (fn, *args)
            if not bounded:
                return await pool.run(fn, *args)
            if read:
                call = self._bounded(pool.run(fn, *args), what)
            else:
                call = self._bounded(pool.run(self._timed, fn, *args), what, tracked=True)
            return await (self._paced(call) if paced else call)
        except (DiskError, OSError) as exc:
            err = self._failure(exc)
            if err is exc:
                raise
            raise err from None

    async def _paced(self, waited: Any) -> Any:
        """Await ``waited`` (a call, or a group commit's future), timed into ``pace``: what its
        caller waits, the batches queued ahead of it included."""
        started = time.monotonic()
        try:
            return await waited
        finally:
            self.pace.note(time.monotonic() - started)

    def _later(self, fn) -> None:
        """``fn()`` in the disk's thread, not waited for (its failure only logged at debug)."""
        if self._closed:
            return

        def done(fut: asyncio.Future) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                log.debug("%s: a call left to finish failed: %s", self.root, fut.exception())

        self._pool.run(fn).add_done_callback(done)

    async def _bounded(self, call: Any, what: Any, tracked: bool = False) -> Any:
        """Await ``call`` (a disk call, or an asynchronous fsync) for at most ``disk_timeout``.
        Past it the call goes on (a thread in a system call cannot be stopped), and until it
        returns the disk hangs: every other call but a read of data fails at once (``_run``),
        instead of each waiting out its own timeout in a thread of its own (a writer per
        request, and every peer's writers, had each waited the timeout on a frozen disk, and
        the monitor's probe, a read, brought the disk back between them). ``tracked``: a call
        ``_timed`` follows (not a read, nor the asynchronous fsync: those only time out)."""
        if disk_timeout <= 0:
            return await call
        try:
            return await wait_for(call, disk_timeout)
        except TimeoutError:
            # (asyncio's own: a subclass of OSError, never the call's, which ends as it may)
            if tracked:
                self._hung_at = self._hung_at or time.monotonic()
            raise self._hung(what) from None
        except asyncio.CancelledError:
            # The waiter went (a peer's caller cut its stream, a request ended): the call goes
            # on in its thread. If it outlasts the timeout the disk hangs all the same; no one
            # else may be left waiting to notice (a peer whose writes left this disk out stopped
            # sending it any).
            if tracked:
                asyncio.get_running_loop().call_later(disk_timeout, self._check_stuck, what)
            raise

    def _check_stuck(self, what: Any) -> None:
        """A tracked call whose waiter was cancelled ``disk_timeout`` ago: hung if a call is
        still running past the timeout (``_busy``), as if its waiter had timed out."""
        if self._hung_at or self._closed:
            return
        now = time.monotonic()
        stuck = [started for started in list(self._busy.values()) if now - started >= disk_timeout]
        if stuck:
            self._hung_at = min(stuck)
            self._hung(what)

    def _timed(self, fn, *args):
        """In the disk's thread: a bounded call, its start noted while it runs (``_still_stuck``)."""
        me = threading.get_ident()
        self._busy[me] = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._busy.pop(me, None)

    def _still_stuck(self) -> bool:
        """Since a call passed the timeout (``_hung``): whether one still runs past it."""
        now = time.monotonic()
        if any(now - started >= disk_timeout for started in list(self._busy.values())):
            return True
        log.warning("disk %s: the calls that hung returned after %.0fs", self.root, now - self._hung_at)
        self._hung_at = 0.0
        return False

    def _hung(self, what: Any) -> DiskFaulty:
        name = what if isinstance(what, str) else (getattr(what, "__qualname__", None) or type(what).__name__)
        msg = f"{self.root}: a call ({name}) did not finish within {disk_timeout:g}s: the disk hangs"
        self.last_error = msg
        self.mark_offline(msg)
        return DiskFaulty(msg)

    def _still_hung(self) -> DiskFaulty:
        msg = f"{self.root}: a call has not returned for {time.monotonic() - self._hung_at:.0f}s: the disk hangs"
        self.mark_offline(msg)
        return DiskFaulty(msg)

    def _failure(self, exc: Exception) -> DiskError:
        """The typed error of a failed call; one that says the disk is gone marks it offline."""
        err = exc if isinstance(exc, DiskError) else self._typed(exc)
        if isinstance(err, DiskOffline):
            self.mark_offline(str(err))
        return err

    async def _batches(self, gen: Iterator[list]) -> AsyncIterator[list]:
        """Advance a blocking generator of batches in the pool, one batch per hand-off.
        No thread waits on the consumer, so one that stops early leaks nothing."""
        try:
            while True:
                batch = await self._run(next, gen, None)
                if batch is None:
                    return
                yield batch
        finally:
            try:
                gen.close()
            except ValueError:  # still running in the pool (the consumer was cancelled)
                pass

    # -- lifecycle and health ---------------------------------------------------------
    def _claim_root(self) -> None:
        """This process's lock on the disk directory (in a disk thread): taken at the first
        format read or write, and again when a new file system appears at the same path."""
        st = os.stat(self.root)
        key = (st.st_dev, st.st_ino)
        if key == self._claim:
            return
        with _claims_guard:
            root_lock = _claim_locks.setdefault(key, threading.Lock())
        with root_lock:  # the lock file's I/O, which a hung disk may never finish, under this root's lock only
            with _claims_guard:
                entry = _claims.get(key)
                if entry is not None:
                    entry[1] += 1
            if entry is None:
                fd = _lock_root(self.root)
                with _claims_guard:
                    _claims[key] = [fd, 1]
        old, self._claim = self._claim, key
        if old is not None:
            _release_claim(old)

    async def close(self) -> None:
        if self._closed:
            return
        for flusher in (self._flusher, self._rec_flusher):
            if flusher is not None and not flusher.done():
                try:
                    await flusher  # batched small writes already accepted finish first
                except Exception:  # noqa: BLE001 - their callers got the error
                    pass
        self._closed = True
        self._drop_read_fds()
        if self._seg is not None:
            seg, self._seg = self._seg, None
            await asyncio.get_running_loop().run_in_executor(self._pool, seg.close)
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
        await asyncio.get_running_loop().run_in_executor(None, self._read_pool.shutdown, True)
        if self._claim is not None:  # last: nothing of this handle writes to the disk any more
            claim, self._claim = self._claim, None
            _release_claim(claim)

    async def info(self) -> DiskInfo:
        if not self.online:
            return DiskInfo(self.disk_id, self.endpoint, False, error=self.last_error or "offline",
                            healing=self.healing)

        def _info() -> DiskInfo:
            st = os.statvfs(self.root)
            total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
            return DiskInfo(self.disk_id, self.endpoint, True, total, free, total - st.f_bfree * st.f_frsize,
                            healing=self.healing)

        try:
            return await self._run(_info, paced=False)
        except DiskError as exc:
            return DiskInfo(self.disk_id, self.endpoint, False, error=str(exc), healing=self.healing)

    async def upkeep(self) -> None:
        """The disk monitor's round on this disk: its ballast (``keep_ballast``)."""
        if self.online and not self._closed:
            try:
                await self._run(self.keep_ballast)
            except DiskError as exc:
                log.warning("disk %s: its ballast: %s", self.root, exc)

    def keep_ballast(self) -> None:
        """The disk monitor's upkeep of the ballast (see ``BALLAST``), in the disk's thread:
        release it when free space fell under half the reserve, make it when it is missing and
        the disk has room (its reserve and twice the ballast free)."""
        if disk_reserve <= 0:
            return
        st = os.statvfs(self.root)
        total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        reserve, size = reserve_bytes(total), ballast_bytes(total)
        self.near_full = free < NEAR_FULL * reserve
        sys_dir = os.path.join(self.root, SYS_DIR)
        path = os.path.join(sys_dir, BALLAST)
        if os.path.exists(path):
            if free < reserve // 2:
                release_ballast(sys_dir, f"{free} bytes free, under half its reserve of {reserve}")
            return
        if size <= 0 or free < reserve + 2 * size or not os.path.isdir(sys_dir):
            return
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        log.info("disk %s keeps a ballast of %d bytes (released if the file system fills up)", self.root, size)

    def _room_for(self, nbytes: int) -> None:
        """Let ``nbytes`` of new data in, or raise ``DiskFull`` when they would take the disk
        below its reserve (``disk_reserve``). From the event loop or the disk's threads: a
        statvfs at most every ``_SPACE_TTL`` seconds (or ``_SPACE_RECHECK`` bytes), and again
        after each refusal, so space a deletion freed is seen at once."""
        if disk_reserve <= 0:
            return
        space, now = self._space, time.monotonic()
        fresh = space is None or now - space[0] > _SPACE_TTL or self._spent > _SPACE_RECHECK
        if not fresh and space[1] - self._spent - nbytes < space[2]:
            fresh = True  # a refusal is decided on a fresh statvfs: a deletion may have freed space since
        if fresh:
            try:
                st = os.statvfs(self.root)
            except OSError as exc:
                raise self._typed(exc) from None
            space = self._space = (now, st.f_bavail * st.f_frsize, reserve_bytes(st.f_blocks * st.f_frsize))
            self._spent = 0
        free = space[1] - self._spent
        if free - nbytes < space[2]:
            self._space = None
            # the node is short of space (engine/space.py): on the disk the store holds too when
            # this is the disk service's handle of it (another node's write)
            self.refused_at = now
            if self._log_owner is not None:
                self._log_owner.refused_at = now
            raise DiskFull(f"{self.root}: {max(free, 0)} bytes free, and {space[2]} are kept for deletions "
                           f"(--disk-reserve): no room for {nbytes} bytes of new data")
        self._spent += nbytes

    # -- the format file ----------------------------------------------------------------
    async def read_format(self) -> bytes:
        root = self.root

        def _read() -> bytes:
            if not os.path.lexists(root):
                raise UnformattedDisk(f"{root} does not exist")
            if not os.path.isdir(root):
                raise DiskOffline(f"{root} is not a directory")
            try:
                with open(os.path.join(root, FORMAT_FILE), "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size > MAX_FORMAT_FILE:
                        raise CorruptData(f"{root}/{FORMAT_FILE}: {size} bytes, not a format file")
                    data = f.read(size)
                self._claim_root()
                return data
            except FileNotFoundError:
                pass
            # Our own two trees are not foreign: a disk wiped while the server runs gets
            # written to (staging, shards) before the disk monitor re-formats it.
            entries = sorted(e for e in os.listdir(root) if e not in ("lost+found", SYS_DIR, DATA_DIR))
            if entries:  # someone else's: nothing is written there, not even our lock
                raise ForeignDisk(f"{root} is not empty and holds no Buckets format file "
                                  f"(found {', '.join(entries[:3])}); refusing to use a foreign directory")
            self._claim_root()
            raise UnformattedDisk(f"{root} is empty")

        return await self._run(_read, check_root=False)

    async def write_format(self, data: bytes, *, create_root: bool, sync: bool) -> None:
        root = self.root
        tmp = os.path.join(root, TMP_DIR, f"{next(_TMP_IDS)}.w")

        def _write() -> None:
            if not os.path.isdir(root):
                if not create_root or os.path.lexists(root):
                    raise DiskOffline(f"{root}: disk root is missing or not a directory")
                _makedirs(root, sync)
            self._claim_root()
            _makedirs(os.path.join(root, TMP_DIR), sync)
            _write_atomic(tmp, os.path.join(root, FORMAT_FILE), data, sync)

        await self._run(_write, check_root=False)

    # -- files ----------------------------------------------------------------------------
    async def create_file(self, path: str) -> LocalShardWriter:
        full = self._abs(path)
        # Outside the staging area a file is streamed where it stays (a multipart upload's
        # part, fsynced with its directory by the caller): a directory created for it must be
        # durable in its parent too, or a power cut could take the directory and the
        # acknowledged part with it. Staging needs no such care: it is emptied at start, and
        # what leaves it is renamed into directories that are fsynced.
        staged = full.startswith(self._abs(TMP_DIR) + os.sep)

        def _open():
            self._room_for(0)  # new data: not into the reserve
            if staged:
                os.makedirs(os.path.dirname(full), exist_ok=True)
            else:
                _makedirs(os.path.dirname(full), True)
            return open(full, "wb", buffering=0)

        return LocalShardWriter(self, full, await self._run(_open))

    async def write_file(self, path: str, data: bytes, *, sync: bool, new_data: bool = False) -> None:
        """Atomic small-file write. Concurrent writes to this disk are batched into one
        thread hand-off: each is written to staging and renamed into place; with ``sync``,
        a single ``syncfs`` then makes the whole batch durable before any caller is answered.
        ``new_data``: refused below the disk's reserve (``_room_for``)."""
        full = self._abs(path)
        if self._closed:
            raise DiskOffline(f"{self.endpoint}: disk is closed")
        if new_data:  # counted in whole blocks: many small files between two statvfs add up
            self._room_for(-(-max(len(data), 1) // _FILE_BLOCK) * _FILE_BLOCK)
        tmp = self._abs(f"{TMP_DIR}/{next(_TMP_IDS)}.w")
        if sync and _syncfs is None:  # no syncfs here: fsync each file and directory instead
            await self._run(_write_atomic, tmp, full, data, sync)
            return
        fut = asyncio.get_running_loop().create_future()
        self._batch.append((tmp, full, data, sync, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_batches())
        await self._paced(fut)

    async def _flush_batches(self) -> None:
        while self._batch:
            batch, self._batch = self._batch, []
            sync = any(item[3] for item in batch)
            try:
                results = await self._run(self._write_batch, [(t, f, d) for t, f, d, _, _ in batch], sync,
                                          paced=False)  # (each caller's whole wait is: ``write_file``)
            except DiskError as exc:
                results = [exc] * len(batch)
            for (_, _, _, _, fut), err in zip(batch, results):
                if fut.done():
                    continue
                if err is None:
                    fut.set_result(None)
                elif isinstance(err, DiskError):
                    fut.set_exception(err)
                else:
                    typed = self._typed(err)
                    if isinstance(typed, DiskOffline):
                        self.mark_offline(str(typed))
                    fut.set_exception(typed)

    def _write_batch(self, items: list[tuple[str, str, bytes]], sync: bool) -> list[Exception | None]:
        results: list[Exception | None] = []
        for tmp, final, data in items:
            try:
                # Replacing a file: its new content must be durable before the rename is, or
                # a power cut before the syncfs below could leave neither the old content nor
                # the new (the rename kept, the data not). A new name needs no such care: a
                # torn new file is the leftover of a write nobody was told succeeded.
                _write_atomic(tmp, final, data, False, fsync_data=sync and os.path.exists(final))
                results.append(None)
            except OSError as exc:
                results.append(exc)
        if not sync:
            return results
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _device_sync(os.fstat(fd).st_dev).sync(fd)
        except OSError as err:  # the batch is not durable: fail every write in it
            return [err] * len(items)
        finally:
            os.close(fd)
        return results

    async def read_file(self, path: str, *, max_size: int = MAX_SMALL_FILE) -> bytes:
        """A whole small file (metadata, format, user mirror). Shard data is never read this
        way: it goes through ``read_range``. A file over ``max_size`` is refused as corrupt
        rather than loaded: no metadata file can legitimately be that large."""
        full = self._abs(path, root_ok=True)

        def _read() -> bytes:
            with open(full, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_size:
                    raise CorruptData(f"{full}: {size} bytes, more than any metadata file holds")
                return _pread_data(f.fileno(), size, 0, full)

        return await self._run(_read, read=True)

    async def read_range(self, path: str, offset: int, length: int) -> bytes:
        full = self._abs(path, root_ok=True)
        if offset < 0 or length < 0 or length > MAX_RANGE:
            raise DiskError(f"{full}: invalid range (offset {offset}, length {length}, at most {MAX_RANGE})")

        def _read() -> bytes:
            fd = os.open(full, os.O_RDONLY)
            try:
                return _pread_data(fd, length, offset, full)
            finally:
                os.close(fd)

        return await self._run(_read, read=True)

    def open_range(self, path: str, offset: int, length: int, *, chunk: int = 0) -> "LocalRangeReader | None":
        """Reads of ``[offset, offset + length)`` of ``path`` through one descriptor, opened at
        the first read (``LocalRangeReader``): a GET's span after span of one shard, which an
        overwrite removing the file meanwhile does not cut. None for a range ``read_range``
        would refuse. (``chunk``: a remote disk's frame size; nothing here.)"""
        if offset < 0 or length < 0 or length > MAX_RANGE:
            return None
        return LocalRangeReader(self, path, offset, length)

    async def rename_data(self, moves: list[tuple[str, str]], meta: tuple[str, bytes] | None, *,
                          sync: bool, cleanup: str | None = None) -> None:
        pairs = [(self._abs(s), self._abs(d)) for s, d in moves]
        fin = (self._abs(meta[0]), meta[1]) if meta is not None else None
        clean = self._abs(cleanup) if cleanup else None
        tmp = self._abs(f"{TMP_DIR}/{next(_TMP_IDS)}.w")
        uploads = self._abs(MULTIPART_DIR) + os.sep
        links = [self._abs(f"{TMP_DIR}/{next(_TMP_IDS)}.l") for _ in pairs]

        def _commit() -> None:
            dirs: dict[str, None] = {}
            moved_dirs: list[str] = []
            for (s, d), link in zip(pairs, links):
                parent = os.path.dirname(d)
                _makedirs(parent, sync)
                if s.startswith(uploads):
                    # A multipart upload's part is linked into place, not moved: the upload
                    # keeps it until the completion's commit removes the upload, so a
                    # completion that fails its quorum or is cut by a crash can be retried.
                    os.link(s, link)
                    os.replace(link, d)
                else:
                    os.replace(s, d)
                dirs[parent] = None
                if sync and os.path.isdir(d):
                    moved_dirs.append(d)
            if sync and "rename-dir" not in OMIT_FSYNC_FOR_TESTS:
                # A directory moved into place (a PUT's staged data directory) was filled in
                # staging, where nothing fsynced it: its own entries (the shard files) are
                # durable only once it is fsynced itself; fsyncing the files is not enough.
                for moved in moved_dirs:
                    _fsync_dir(moved)
                for parent in dirs:
                    _fsync_dir(parent)
            if fin is not None:
                _write_atomic(tmp, fin[0], fin[1], sync)
            if clean is not None:
                shutil.rmtree(clean, ignore_errors=True)  # committed already; the sweep retries

        await self._run(_commit)

    async def fsync_dir(self, path: str) -> None:
        await self._run(_fsync_dir, self._abs(path, root_ok=True))

    async def delete(self, path: str, *, recursive: bool = False, prune: int = 0) -> None:
        full = self._abs(path)
        root = self.root

        def _delete() -> None:
            try:
                if os.path.isdir(full) and not os.path.islink(full):
                    if recursive:
                        _rmtree(full)
                    else:
                        os.rmdir(full)
                else:
                    os.unlink(full)
            except FileNotFoundError:
                pass
            parent = os.path.dirname(full)
            for _ in range(prune):
                if parent == root:
                    break
                try:
                    os.rmdir(parent)  # fails (and stops) unless empty
                except OSError:
                    break
                parent = os.path.dirname(parent)

        await self._run(_delete, bounded=not recursive)  # (a whole tree may rightly take long)

    async def list_dir(self, path: str) -> list[str]:
        return await self._run(os.listdir, self._abs(path, root_ok=True), paced=False)

    async def file_size(self, path: str) -> int:
        return (await self._run(os.stat, self._abs(path, root_ok=True), read=True, paced=False)).st_size

    async def exists(self, path: str) -> bool:
        return await self._run(os.path.exists, self._abs(path, root_ok=True), read=True, paced=False)

    async def stat(self, path: str) -> FileStat:
        full = self._abs(path, root_ok=True)
        st = await self._run(os.stat, full, read=True, paced=False)
        return FileStat(os.path.relpath(full, self.root), st.st_size, st.st_mtime, stat_mod.S_ISDIR(st.st_mode))

    async def walk_files(self, path: str, suffix: str) -> AsyncIterator[str]:
        gen = _walk_files(self._abs(path, root_ok=True), self.root, suffix)
        async for batch in self._batches(gen):
            for rel in batch:
                yield rel

    async def walk_entries(self, path: str, depth: int) -> AsyncIterator[FileStat]:
        if depth < 1:
            raise DiskError(f"walk depth must be at least 1, not {depth}")
        gen = _walk_entries(self._abs(path, root_ok=True), self.root, depth)
        async for batch in self._batches(gen):
            for entry in batch:
                yield entry

    # -- the record log ---------------------------------------------------------------------
    async def append_records(self, records: list[bytes], *, sync: bool, data: bool = False) -> list[list[int]]:
        """Group commit: calls that arrive while a batch is being written and synced wait
        for the next batch, which takes all of them in one write and one fsync. ``data``:
        the records carry new data (inline objects), refused below the disk's reserve;
        deletions and compaction's records are not."""
        if self._closed:
            raise DiskOffline(f"{self.endpoint}: disk is closed")
        if data:
            self._room_for(sum(len(p) for p in records))
        if self._log_owner is not None:
            return await self._log_owner.append_records(records, sync=sync)
        for p in records:  # an oversized record fails alone, here (framing is the pool's work)
            if len(p) > rlog.MAX_RECORD:
                raise DiskError(f"a record of {len(p)} bytes is over the limit of {rlog.MAX_RECORD}")
        if not records:
            return []
        fut = asyncio.get_running_loop().create_future()
        self._rec_batch.append((list(records), sync, fut))
        if self._rec_flusher is None or self._rec_flusher.done():
            self._rec_flusher = asyncio.get_running_loop().create_task(self._flush_records())
        return await self._paced(fut)

    async def _flush_records(self) -> None:
        while self._rec_batch:
            batch, self._rec_batch = self._rec_batch, []
            sync = any(item[1] for item in batch)
            payloads = [item[0] for item in batch]
            try:
                try:
                    results = await self._append_here(payloads, sync)
                    if results is None:  # (each caller's whole wait is paced: ``append_records``)
                        results = await self._run(self._append_batch, payloads, sync, paced=False)
                except DiskFull:
                    if not self._ballast_freed:
                        raise
                    # The file system was full to its last block and this failure released the
                    # ballast: the batch goes into that space (a deletion's records get in).
                    self._ballast_freed = False
                    results = await self._run(self._append_batch, payloads, sync, paced=False)
            except DiskError as exc:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), locs in zip(batch, results):
                if not fut.done():
                    fut.set_result(locs)

    def _open_segment(self, sync: bool) -> "_Segment":
        directory = os.path.join(self.root, LOG_DIR)
        _makedirs(directory, sync)
        ids = [i for i in (rlog.parse_segment_name(n) for n in os.listdir(directory)) if i is not None]
        # Ascending (append order), and not reused after a wipe: a stale location from before
        # is then most likely a missing segment, not another record (readers check anyway).
        seg_id = max(max(ids, default=0) + 1, time.time_ns() // 1_000_000)
        fh = open(os.path.join(directory, rlog.segment_name(seg_id)), "xb", buffering=0)
        if sync:
            _fsync_dir(directory)  # the new name must outlive a power cut with its records
        return _Segment(seg_id, fh)

    async def _append_here(self, batches: list[list[bytes]], sync: bool) -> list[list[list[int]]] | None:
        """Append on the event loop and fsync through Linux AIO: the locations, or None when
        this batch must go to the disk's thread (AIO off or unavailable, no open segment or a
        full one, a stale one, or a batch over LOOP_APPEND_MAX). Same write, same fsync, same
        order as the thread's path: only who waits differs."""
        seg = self._seg
        if (not aio_fsync or self._aio_refused or seg is None or self._seg_stale
                or seg.size >= rlog.SEGMENT_MAX
                or sum(len(p) for payloads in batches for p in payloads) > LOOP_APPEND_MAX):
            return None
        aio = aiosync.for_loop() if sync else None
        if sync and aio is None:
            return None
        try:
            if not os.path.isdir(self.root):
                raise DiskOffline(f"{self.root}: disk root is missing or not a directory")
            if os.fstat(seg.fh.fileno()).st_nlink == 0:
                return None  # wiped: the thread's path starts a new segment
            out = self._write_records(seg, batches)
            if not sync:
                self._unsynced.add(seg.id)
            elif "record" not in OMIT_FSYNC_FOR_TESTS:
                try:
                    try:
                        await self._bounded(aio.fsync(seg.fh.fileno()), "fsync")
                    except aiosync.AioUnsupported:
                        # Not this file system: the bytes are written; the thread syncs them,
                        # and every later batch goes there.
                        self._aio_refused = True
                        log.info("%s: asynchronous fsync refused; record-log syncs use the disk's thread",
                                 self.root)
                        await self._run(os.fsync, seg.fh.fileno())
                except BaseException:
                    self._abandon(seg)  # unsynced bytes may be lost: append nothing after them
                    raise
                self._unsynced.discard(seg.id)
            return out
        except (DiskError, OSError) as exc:
            err = self._failure(exc)
            if err is exc:
                raise
            raise err from None

    def _abandon(self, seg: "_Segment") -> None:
        """A write or fsync failed: part of a batch may be in the segment, so nothing may be
        appended after it (a scan stops at the first bad record). The next batch opens a new one."""
        if self._seg is seg:
            self._seg = None
        seg.close()

    def _write_records(self, seg: "_Segment", batches: list[list[bytes]]) -> list[list[list[int]]]:
        """Frame and write the batch at the segment's end (no sync); its locations."""
        out: list[list[list[int]]] = []
        pos = seg.size
        framed = [[rlog.frame(bytes(p)) for p in payloads] for payloads in batches]
        for records in framed:
            locs = []
            for rec in records:
                locs.append([seg.id, pos, len(rec)])
                pos += len(rec)
            out.append(locs)
        try:
            _write_all(seg.fh, b"".join(itertools.chain.from_iterable(framed)))
        except BaseException:
            self._abandon(seg)
            raise
        seg.size = pos
        return out

    def _append_batch(self, batches: list[list[bytes]], sync: bool) -> list[list[list[int]]]:
        seg = self._seg
        if seg is not None and (self._seg_stale or os.fstat(seg.fh.fileno()).st_nlink == 0):
            # the disk was away (or wiped: the segment is gone): start afresh
            self._seg = None
            seg.close()
            seg = None
        self._seg_stale = False
        if seg is None or seg.size >= rlog.SEGMENT_MAX:
            if seg is not None:
                self._seg = None
                seg.close()
            seg = self._seg = self._open_segment(sync)
        out = self._write_records(seg, batches)
        if not sync:
            self._unsynced.add(seg.id)
        elif "record" not in OMIT_FSYNC_FOR_TESTS:
            try:
                os.fsync(seg.fh.fileno())
            except BaseException:
                self._abandon(seg)
                raise
            self._unsynced.discard(seg.id)
        return out

    async def read_record(self, location: list[int]) -> bytes:
        """One record: from the page cache on the event loop when it is all there (a
        ``RWF_NOWAIT`` read through a kept descriptor of the segment, a few microseconds),
        else in the disk's pool. A small GET reads k records; handing each to a thread cost
        more CPU than the rest of the GET."""
        segment, offset, length = rlog.check_location(location)
        full = os.path.join(self.root, LOG_DIR, rlog.segment_name(segment))
        if self._closed:
            raise DiskOffline(f"{self.endpoint}: disk is closed")
        fd = self._read_fds.get(segment) if self.online else None
        if fd is not None:
            raw = self._read_cached(fd, segment, offset, length)
            if raw is not None:
                return rlog.unframe(raw, f"{full}@{offset}")
        keep = _NOWAIT is not None and self._nowait and self.online

        def _read() -> tuple[int | None, bytes]:
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
            try:
                raw = _pread_data(fd, length, offset, full)
            except BaseException:
                os.close(fd)
                raise
            if not keep:
                os.close(fd)
                return None, raw
            return fd, raw

        opened, raw = await self._run(_read, read=True)
        if opened is not None:
            if segment in self._read_fds or self._closed:
                os.close(opened)
            else:
                self._read_fds[segment] = opened
                while len(self._read_fds) > _KEPT_SEGMENT_FDS:
                    os.close(self._read_fds.popitem(last=False)[1])
        return rlog.unframe(raw, f"{full}@{offset}")

    def _read_cached(self, fd: int, segment: int, offset: int, length: int) -> bytes | None:
        """The bytes if the page cache has all of them, without blocking; None otherwise."""
        buf = bytearray(length)
        try:
            if os.fstat(fd).st_nlink == 0:  # the segment was deleted (compacted, or the disk wiped)
                self._drop_read_fd(segment)
                return None
            n = os.preadv(fd, [buf], offset, _NOWAIT)
        except BlockingIOError:
            return None  # not all cached: the pool reads it
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait = False  # this file system cannot: always the pool from now on
                self._drop_read_fds()
            else:
                self._drop_read_fd(segment)  # the pool's read reports the error properly
            return None
        self._read_fds.move_to_end(segment)
        return bytes(buf) if n == length else None  # a short read: part of it is not cached

    def _drop_read_fd(self, segment: int) -> None:
        fd = self._read_fds.pop(segment, None)
        if fd is not None:
            os.close(fd)

    def _drop_read_fds(self) -> None:
        while self._read_fds:
            os.close(self._read_fds.popitem()[1])

    async def walk_records(self, segment: int | None = None) -> AsyncIterator[tuple[list[int], bytes]]:
        gen = _walk_records(os.path.join(self.root, LOG_DIR), segment)
        async for batch in self._batches(gen):
            for item in batch:
                yield item

    async def release_records(self, wid: str, locations: list[list[int]]) -> int:
        """Free the space of write ``wid``'s records at ``locations`` now (the write was removed:
        ``Disk.release_records``); bytes freed. 0 where the file system cannot punch holes."""
        if self._closed:
            raise DiskOffline(f"{self.endpoint}: disk is closed")
        if self._log_owner is not None:
            return await self._log_owner.release_records(wid, locations)
        checked = [rlog.check_location(loc) for loc in locations]
        if not checked or _FALLOCATE is None or not self._punch_holes:
            return 0
        # Batched like appends: the releases that arrive while one batch is in the disk's pool
        # go together in the next (a bulk delete would otherwise hand off once per record).
        fut = asyncio.get_running_loop().create_future()
        tokens = _wid_tokens(wid)
        self._releases.append(([(tokens, loc) for loc in checked], fut))
        if self._release_task is None or self._release_task.done():
            self._release_task = asyncio.get_running_loop().create_task(self._flush_releases())
        return await fut

    async def _flush_releases(self) -> None:
        directory = os.path.join(self.root, LOG_DIR)
        while self._releases:
            batch, self._releases = self._releases, []
            records = [(item, n) for n, (items, _) in enumerate(batch) for item in items]

            def _release() -> list[int]:
                self._sync_appended()
                per_call = [0] * len(batch)
                by_segment: dict[int, list[tuple[tuple, int]]] = {}
                for (tokens, loc), n in records:
                    by_segment.setdefault(loc[0], []).append(((tokens, loc), n))
                for segment, items in by_segment.items():
                    freed = _release_records(os.path.join(directory, rlog.segment_name(segment)),
                                             [item for item, _ in items])
                    for (_, n), got in zip(items, freed):
                        per_call[n] += got
                return per_call

            try:
                results = await self._run(_release)
            except _CannotPunch:
                self._punch_holes = False  # this file system cannot: compaction reclaims the space
                results = [0] * len(batch)
            except BaseException as exc:  # every caller of the batch gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, fut), got in zip(batch, results):
                if not fut.done():
                    fut.set_result(got)

    def _sync_appended(self) -> None:
        """Make every record appended so far durable (in the disk's thread), before a record is
        punched out: a punch is not ordered with the appends before it as appends are with each
        other, and one that reached the disk while an earlier unsynced kill record did not could
        undo a deletion after a power cut (an unversioned DELETE's marker punched, the deleted
        write's kill lost: a registry rebuilt from the disks revived the key; found by the
        power-loss campaigns ``log-release-*``). Kill records are not synced on their own
        (``smalllog.kill``), so this is the sync that carries them; it costs only while the
        disk is short of space, when records are released."""
        directory = os.path.join(self.root, LOG_DIR)
        for segment in sorted(self._unsynced):
            self._unsynced.discard(segment)  # (first: an append meanwhile adds it again)
            seg = self._seg
            if seg is not None and seg.id == segment:
                os.fsync(seg.fh.fileno())
                continue
            try:
                fd = os.open(os.path.join(directory, rlog.segment_name(segment)), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # compacted away since
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    async def list_segments(self) -> list[list[int]]:
        directory = os.path.join(self.root, LOG_DIR)

        def _list() -> list[list[int]]:
            out = []
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                return []
            for name in names:
                seg = rlog.parse_segment_name(name)
                if seg is None:
                    continue
                try:
                    out.append([seg, os.stat(os.path.join(directory, name)).st_size])
                except FileNotFoundError:
                    continue
            return sorted(out)

        return await self._run(_list)

    async def delete_segment(self, segment: int) -> None:
        rlog.check_location([segment, 0, rlog.HEADER_SIZE])
        if self._log_owner is not None:
            return await self._log_owner.delete_segment(segment)
        if self._seg is not None and self._seg.id == segment:
            raise DiskError(f"{self.endpoint}: segment {segment} is being appended to")
        self._drop_read_fd(segment)
        directory = os.path.join(self.root, LOG_DIR)

        def _delete() -> None:
            try:
                os.unlink(os.path.join(directory, rlog.segment_name(segment)))
            except FileNotFoundError:
                return
            _fsync_dir(directory)  # a segment that came back after a crash could revive what it killed

        await self._run(_delete)


class _Segment:
    """The segment this process appends to (only ever from one batch at a time)."""

    def __init__(self, seg_id: int, fh) -> None:
        self.id, self.fh, self.size = seg_id, fh, 0

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError:
            pass


_SCAN_CHUNK = 4 << 20


def _walk_records(directory: str, only: int | None) -> Iterator[list[tuple[list[int], bytes]]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    segments = sorted(i for i in (rlog.parse_segment_name(n) for n in names) if i is not None)
    if only is not None:
        segments = [s for s in segments if s == only]
    for seg in segments:
        try:
            f = builtins_open(os.path.join(directory, rlog.segment_name(seg)), "rb")
        except FileNotFoundError:
            continue  # compacted meanwhile
        with f:
            base = 0
            pending = b""
            at = 0
            while True:
                chunk = _pread_salvaging(f.fileno(), _SCAN_CHUNK, at)
                at += len(chunk)
                final = len(chunk) < _SCAN_CHUNK  # the end of the segment is in this read
                data = pending + chunk if pending else chunk
                found, used = rlog.scan(data, base, seg, final)
                if found:
                    yield found
                if final:
                    break  # what is left is a torn tail
                base += used
                pending = data[used:]


def _walk_files(base: str, root: str, suffix: str) -> Iterator[list[str]]:
    batch: list[str] = []
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            if name.endswith(suffix):
                batch.append(os.path.relpath(os.path.join(dirpath, name), root))
        if len(batch) >= _WALK_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _walk_entries(base: str, root: str, depth: int) -> Iterator[list[FileStat]]:
    def visit(directory: str, level: int) -> Iterator[FileStat]:
        try:
            it = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        with it:
            for entry in it:
                if level == depth:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # removed since the listing
                        continue
                    yield FileStat(os.path.relpath(entry.path, root), st.st_size, st.st_mtime,
                                   stat_mod.S_ISDIR(st.st_mode))
                elif entry.is_dir(follow_symlinks=False):
                    yield from visit(entry.path, level + 1)

    batch: list[FileStat] = []
    for item in visit(base, 1):
        batch.append(item)
        if len(batch) >= _WALK_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_atomic(tmp: str, final: str, data: bytes, sync: bool, *, fsync_data: bool = False) -> None:
    """Write ``tmp``, make it durable, rename it over ``final``: readers of ``final`` see the
    old content or the new, never a mix. A failure leaves ``final`` untouched and no ``tmp``.
    ``fsync_data``: fsync the data even without ``sync`` (the caller syncs the rest later)."""
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync or fsync_data:
                f.flush()
                os.fsync(f.fileno())
        parent = os.path.dirname(final)
        _makedirs(parent, sync)
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        _fsync_dir(parent)
