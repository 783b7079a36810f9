"""``LocalDisk``: the Disk protocol over a directory on this machine.

Every blocking call runs in this disk's own small thread pool, so a slow or hung disk
stalls only its own work and never the event loop. Durability: data files are fsynced
before they are renamed into place, and every directory whose entries change is fsynced
after the rename (when ``sync`` is on).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import itertools
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from buckets.errors import CorruptData, DiskError, DiskNotFound
from buckets.storage.disk import DiskInfo
from buckets.storage.format import TMP_DIR

log = logging.getLogger("buckets.storage")

# Largest file read whole: an inline object's shard (<= 128 KiB of data, framed) plus its
# metadata, or the user-table mirror. Anything bigger is damage, not a metadata file.
MAX_SMALL_FILE = 16 << 20


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


class LocalShardWriter:
    """Streams one staged file; writes go through the disk's pool in order."""

    def __init__(self, disk: "LocalDisk", path: str, fh) -> None:
        self._disk, self._path, self._fh = disk, path, fh

    async def write(self, data: bytes) -> None:
        await self._disk._run(self._fh.write, data)

    async def close(self, sync: bool) -> None:
        def _close() -> None:
            try:
                self._fh.flush()
                if sync:
                    os.fsync(self._fh.fileno())
            finally:
                self._fh.close()

        await self._disk._run(_close)

    async def abort(self) -> None:
        def _abort() -> None:
            try:
                self._fh.close()
            finally:
                try:
                    os.unlink(self._path)
                except FileNotFoundError:
                    pass

        try:
            await self._disk._run(_abort)
        except DiskError:
            pass


class LocalDisk:
    """One directory. ``online`` turns False after an I/O error that looks like a dead disk."""

    def __init__(self, root: str, disk_id: str = "", *, threads: int = 4) -> None:
        self.root = os.path.abspath(root)
        self.endpoint = self.root
        self.disk_id = disk_id
        self.online = True
        self.last_error = ""
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"disk-{os.path.basename(self.root)}")
        self._batch: list[tuple[str, str, bytes, bool, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    # -- plumbing ---------------------------------------------------------------------
    def abspath(self, rel: str) -> str:
        path = os.path.normpath(os.path.join(self.root, rel))
        if path != self.root and not path.startswith(self.root + os.sep):
            raise DiskError(f"path escapes disk root: {rel!r}")
        return path

    def _checked(self, fn, *args):
        # A vanished root (unmounted, pulled) must fail the call: creating directories
        # below it would silently write to whatever filesystem holds its parent.
        if not os.path.isdir(self.root):
            raise OSError(errno.ENODEV, "disk root is missing", self.root)
        return fn(*args)

    async def _run(self, fn, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._checked, fn, *args)
        except FileNotFoundError as exc:
            raise DiskNotFound(str(exc)) from None
        except NotADirectoryError as exc:
            raise DiskNotFound(str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENODEV, errno.EROFS, errno.ENOSPC, errno.EACCES):
                self.last_error = str(exc)
            if exc.errno in (errno.EIO, errno.ENODEV) and self.online:
                self.online = False  # the disk monitor brings it back when it reappears
                log.error("disk %s went offline: %s", self.root, exc)
            raise DiskError(f"{self.root}: {exc}") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- Disk protocol ----------------------------------------------------------------
    async def info(self) -> DiskInfo:
        def _info() -> DiskInfo:
            st = os.statvfs(self.root)
            total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
            return DiskInfo(self.disk_id, self.endpoint, True, total, free, total - st.f_bfree * st.f_frsize)

        try:
            return await self._run(_info)
        except DiskError as exc:
            return DiskInfo(self.disk_id, self.endpoint, False, error=str(exc))

    async def create_file(self, path: str) -> LocalShardWriter:
        full = self.abspath(path)

        def _open():
            os.makedirs(os.path.dirname(full), exist_ok=True)
            return open(full, "wb", buffering=0)

        return LocalShardWriter(self, full, await self._run(_open))

    async def write_file(self, path: str, data: bytes, *, sync: bool) -> None:
        """Atomic small-file write. Concurrent writes to this disk are batched into one
        thread hand-off: each is written to staging and renamed into place; with ``sync``,
        a single ``syncfs`` then makes the whole batch durable before any caller is answered."""
        full = self.abspath(path)
        tmp = self.abspath(f"{TMP_DIR}/{next(_TMP_IDS)}.w")
        if sync and _syncfs is None:  # no syncfs here: fsync each file and directory instead
            await self._run(_write_atomic, tmp, full, data, sync)
            return
        fut = asyncio.get_running_loop().create_future()
        self._batch.append((tmp, full, data, sync, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_batches())
        await fut

    async def _flush_batches(self) -> None:
        while self._batch:
            batch, self._batch = self._batch, []
            sync = any(item[3] for item in batch)
            try:
                results = await self._run(self._write_batch, [(t, f, d) for t, f, d, _, _ in batch], sync)
            except DiskError as exc:
                results = [exc] * len(batch)
            for (_, _, _, _, fut), err in zip(batch, results):
                if fut.done():
                    continue
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(err if isinstance(err, DiskError) else DiskError(f"{self.root}: {err}"))

    def _write_batch(self, items: list[tuple[str, str, bytes]], sync: bool) -> list[Exception | None]:
        results: list[Exception | None] = []
        for tmp, final, data in items:
            try:
                _write_atomic(tmp, final, data, False)
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
        full = self.abspath(path)

        def _read() -> bytes:
            with open(full, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_size:
                    raise CorruptData(f"{full}: {size} bytes, more than any metadata file holds")
                return f.read(size)

        return await self._run(_read)

    async def read_range(self, path: str, offset: int, length: int) -> bytes:
        full = self.abspath(path)

        def _read() -> bytes:
            fd = os.open(full, os.O_RDONLY)
            try:
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)

        return await self._run(_read)

    async def rename(self, src: str, dst: str, *, sync: bool) -> None:
        s, d = self.abspath(src), self.abspath(dst)

        def _rename() -> None:
            _makedirs(os.path.dirname(d), sync)
            os.replace(s, d)
            if sync:
                _fsync_dir(os.path.dirname(d))

        await self._run(_rename)

    async def move_all(self, moves: list[tuple[str, str]], last: tuple[str, str] | None, *,
                       sync: bool) -> None:
        """Rename every (src, dst) into place, fsync their directories, then do ``last``.

        ``last`` is the metadata file: it becomes visible only after the data it
        describes is durably in place.
        """
        pairs = [(self.abspath(s), self.abspath(d)) for s, d in moves]
        fin = (self.abspath(last[0]), self.abspath(last[1])) if last else None

        def _move() -> None:
            dirs: dict[str, None] = {}
            for s, d in pairs:
                parent = os.path.dirname(d)
                _makedirs(parent, sync)
                os.replace(s, d)
                dirs[parent] = None
            if sync:
                for parent in dirs:
                    _fsync_dir(parent)
            if fin is not None:
                parent = os.path.dirname(fin[1])
                _makedirs(parent, sync)
                os.replace(*fin)
                if sync:
                    _fsync_dir(parent)

        await self._run(_move)

    async def fsync_dir(self, path: str) -> None:
        await self._run(_fsync_dir, self.abspath(path))

    async def delete(self, path: str, *, recursive: bool = False, prune: int = 0) -> None:
        """Remove a file or directory; then remove up to ``prune`` parents left empty."""
        full = self.abspath(path)

        def _delete() -> None:
            try:
                if recursive and os.path.isdir(full):
                    shutil.rmtree(full)
                elif os.path.isdir(full):
                    os.rmdir(full)
                else:
                    os.unlink(full)
            except FileNotFoundError:
                pass
            parent = os.path.dirname(full)
            for _ in range(prune):
                try:
                    os.rmdir(parent)  # fails (and stops) unless empty
                except OSError:
                    break
                parent = os.path.dirname(parent)

        await self._run(_delete)

    async def list_dir(self, path: str) -> list[str]:
        full = self.abspath(path)
        return await self._run(os.listdir, full)

    async def file_size(self, path: str) -> int:
        return (await self._run(os.stat, self.abspath(path))).st_size

    async def exists(self, path: str) -> bool:
        return await self._run(os.path.exists, self.abspath(path))

    async def walk_files(self, path: str, suffix: str) -> AsyncIterator[str]:
        """Relative paths of files under ``path`` ending in ``suffix`` (batched off-loop)."""
        base = self.abspath(path)
        queue: asyncio.Queue = asyncio.Queue(maxsize=8)
        loop = asyncio.get_running_loop()

        def _walk() -> None:
            batch: list[str] = []
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if name.endswith(suffix):
                        batch.append(os.path.relpath(os.path.join(dirpath, name), self.root))
                        if len(batch) >= 512:
                            asyncio.run_coroutine_threadsafe(queue.put(batch), loop).result()
                            batch = []
            asyncio.run_coroutine_threadsafe(queue.put(batch), loop).result()
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

        fut = loop.run_in_executor(self._pool, _walk)
        while True:
            batch = await queue.get()
            if batch is None:
                break
            for rel in batch:
                yield rel
        await fut


def _write_atomic(tmp: str, final: str, data: bytes, sync: bool) -> None:
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    parent = os.path.dirname(final)
    _makedirs(parent, sync)
    os.replace(tmp, final)
    if sync:
        _fsync_dir(parent)
