"""``PowerLossDisk``: a Disk that remembers what a power cut could take back, for tests.

``FaultyDisk`` (beside this module) makes calls fail; this one lets every call succeed and
records, below the Disk protocol, what ``LocalDisk`` did to the filesystem, so that a test
can ask afterwards: had the power gone out at that moment, which states could the disk
have come back in? Those states are materialized into fresh directories and a new
``Store`` is opened over them (``tests/crash``).

**How it records.** A :class:`PowerLossRecorder` is installed for the duration of a test:
it replaces the ``os``, ``open``, ``shutil`` and ``syncfs`` that ``buckets.storage.local``
uses (and the ``os`` and ``lmdb`` of ``buckets.registry.store``) with thin shims. The real
``LocalDisk`` runs on a real directory and every call really happens; for paths below a
registered disk root the shim also appends an event to one global trace (under one lock,
so the trace order is the order the calls took effect): ``creat``/``mkdir``/``link``/
``rename``/``unlink``/``rmdir`` (directory entries), ``write`` (file data), ``punch`` (a
hole punched in a file, ``fallocate(PUNCH_HOLE | KEEP_SIZE)``: how ``LocalDisk.release_records``
frees dead records of its log, through a descriptor opened ``O_RDWR``, through which nothing
else may be written), ``fsync`` of a file or a directory, ``syncfs`` of a disk, and for the
LMDB registry ``lmdb_begin``/``lmdb_commit`` around each group-commit transaction (with a
dump of the database after it). The real ``fsync``/``syncfs`` are skipped while recording
(the machine never loses power, the model decides what would have survived); each sleeps
``sync_delay`` instead, as a device would take time, so that the disks' threads interleave
as they really do, and is recorded when it returns, covering only what preceded its call.

**What survives (the filesystem model).** Each disk root is its own filesystem (as in
production, one device per disk: ``syncfs`` on one root flushes only that root). We assume
what ext4 with ``data=ordered`` guarantees, and nothing more:

1. A directory entry change (create, mkdir, link, rename, unlink, rmdir) is durable once
   its directory was fsynced afterwards (for a rename: either of its two directories), or
   the filesystem was synced (``syncfs``). Until then it may or may not have reached the
   disk, independently of the other changes, except that
2. changes of one directory entry persist in order, an ``rmdir`` needs the removals of
   what was inside, an entry inside a directory is reachable only if the directory's own
   creation persisted, and a rename is atomic (the name moves, never appears twice or
   vanishes): journaled metadata.
3. File data is durable up to the length the file had at its last fsync (or ``syncfs``).
   Beyond that, the file comes back cut at any point (any block boundary or write
   boundary) between that length and its full length: ``data=ordered`` never exposes
   stale blocks, but unsynced appended data may be lost, also when the file's name was
   persisted by a rename (we do not rely on ext4's ``auto_da_alloc``).
4. ``fsync`` of a file says nothing about its directory entry (POSIX); ``fsync`` of a
   directory says nothing about the directory's own entry in its parent. A sync covers
   what was written before it was called, once it has returned.
5. The LMDB registry is outside the Disk seam: a transaction committed with ``sync`` on
   survives whole, one in flight at the cut may or may not (never torn). Its ``data.mdb``
   is a file like any other for rules 1-2 (a registry whose file's entry was lost is gone).
6. A punched hole (its range reads as zeros; the file keeps its size) is durable once the file
   was fsynced (or fdatasynced) afterwards, or the filesystem synced, like a write. Until then
   each punch call may or may not have happened, all of it or none, independently of the
   other punches and of the file's other changes; a punch after the cut never shows. The
   model keeps the bytes a punch took away (a file's bytes are the ones its writes recorded,
   or the baseline's, never read back from the real file), so a state where the punch did
   not happen shows them, and one where it did shows zeros over its range (within the
   length the file has in that state).

**Crash states.** For a cut at event ``c``, per root: the changes forced durable by a later
sync (and everything they depend on, rule 2) are in; every other subset of changes closed
under rule 2 is a possible state, combined with every length choice of every file with
unsynced data (rule 3), every subset of the punches not yet durable (rule 6) and the
registry choices (rule 5). :meth:`CrashModel.states` enumerates them (exhaustively up to a limit, then by seeded sampling, always with the
all-lost and all-kept extremes), and :meth:`CrashModel.materialize` writes one into fresh
directories. Only cuts just before each sync event (and at the end) need checking: between
two syncs nothing becomes durable, so a later cut's states include every earlier cut's
(file lengths at every write boundary are among the choices), and its expectations are
the strictest (see ``tests/crash/crash_harness.py``).
"""

from __future__ import annotations

import asyncio
import builtins
import ctypes
import hashlib
import itertools
import os as _os
import random
import re
import shutil as _shutil
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from buckets.storage import aiosync
from buckets.storage.disk import MAX_SMALL_FILE, DiskInfo, FileStat, ShardWriter
from buckets.storage.local import LocalDisk

META = frozenset({"creat", "mkdir", "link", "rename", "unlink", "rmdir"})
SYNCS = frozenset({"fsync", "syncfs", "lmdb_commit"})
BLOCK = 4096  # filesystem block: unsynced data may be cut at any of these (or at a write's end)
LMDB_FILE = "data.mdb"
# LMDB's reader table (rebuilt on open) and the registry's running mark (registry/store.py: no
# state; whichever way a crash leaves it, the next start reads the registry through): neither
# modelled nor followed.
_IGNORED = frozenset({"lock.mdb", "running.pid"})


def _ignored(name: str) -> bool:
    """One of ``_IGNORED``, or the link that points ``lock.mdb`` at memory while LMDB opens it
    (``registry/store.py: open_with_lock_in_memory``)."""
    return name in _IGNORED or name.startswith("lock.mdb.")
# The disk's lock (storage/local.py): an empty file, no state, taken anew at every
# start: what a crash leaves of it does not matter, so it is neither modelled nor followed.
_UNMODELED = ("/.buckets.sys/lock",)
_ROOT_DEV_BASE = 0x7F000000  # synthetic st_dev per recorded root (one device per disk)


class ModelError(RuntimeError):
    """The recorder lost track of the filesystem (a change it did not see): a harness bug."""


@dataclass(slots=True)
class Event:
    kind: str  # META kinds, write, fsync, syncfs, lmdb_begin, lmdb_commit, lmdb_abort, mark
    root: int = -1
    ino: int = 0  # created / written / synced / removed / moved inode
    dir: int = 0  # its directory (rename: the source directory)
    name: str = ""
    dir2: int = 0  # rename: the destination directory and name
    name2: str = ""
    replaced: int = 0  # rename over an existing entry: the inode it replaced
    length: int = 0  # write: the file's length after it; punch: the length of the hole
    offset: int = 0  # punch: where the hole starts (the range is cut at the file's end when punched)
    snap: int = -1  # lmdb_commit: index into the recorder's snapshots
    since: int = 0  # fsync/syncfs (recorded when it returns): the trace length when it was called
    path: str = ""  # relative to the root, for reports
    info: dict | None = None  # mark: what the harness said

    def entries(self) -> list[tuple[int, str]]:
        if self.kind == "rename":
            return [(self.dir, self.name), (self.dir2, self.name2)]
        return [(self.dir, self.name)]

    def dirs(self) -> list[int]:
        return [self.dir, self.dir2] if self.kind == "rename" else [self.dir]


class _Root:
    def __init__(self, rid: int, path: str, ino: int) -> None:
        self.rid, self.path, self.ino = rid, path, ino
        self.ns: dict[int, dict[str, int]] = {ino: {}}  # directory inode -> name -> inode
        self.kind: dict[int, str] = {ino: "d"}  # "d", "f" or "lmdb"


@dataclass(slots=True)
class _Baseline:
    ns: dict[int, dict[str, int]]
    kind: dict[int, str]
    content: dict[int, bytes]  # file inode -> bytes at the checkpoint
    lmdb: dict[int, int]  # data.mdb inode -> snapshot index at the checkpoint


_CURRENT: "PowerLossRecorder | None" = None


class PowerLossRecorder:
    """Records what ``LocalDisk`` (and the LMDB registry) do below registered roots.

    Use as a context manager (``with PowerLossRecorder() as rec``): the shims are installed
    on entry and removed on exit. Nothing is recorded until :meth:`checkpoint` (which takes
    the roots' current contents as durable: the baseline) and after :meth:`stop`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.roots: list[_Root] = []
        self.events: list[Event] = []
        self.snapshots: list[dict[str, list[tuple[bytes, bytes]]]] = []
        self.content: dict[int, bytearray] = {}  # file inode created in the window -> its data
        self.baseline: dict[int, _Baseline] = {}
        self.recording = False
        # how long a recorded fsync/syncfs takes (outside the lock): without it, a no-op sync
        # would let each disk's thread run ahead alone, and the trace would hold only the
        # unlikely interleavings where one disk finishes before the next one starts
        self.sync_delay = 0.002
        self._fds: dict[int, tuple[_Root, int]] = {}
        self._inos = itertools.count(1)
        self._registries: dict[str, Any] = {}  # registry dir -> open Registry
        self._saved: list[tuple[Any, str, Any]] = []

    # -- set-up --------------------------------------------------------------------------
    def add_root(self, path: str) -> int:
        path = _os.path.abspath(path)
        with self._lock:
            for r in self.roots:
                if r.path == path:
                    return r.rid
            if self.recording:
                raise ModelError("roots must be added before the checkpoint")
            root = _Root(len(self.roots), path, next(self._inos))
            self.roots.append(root)
            return root.rid

    def __enter__(self) -> "PowerLossRecorder":
        global _CURRENT
        if _CURRENT is not None:
            raise RuntimeError("a PowerLossRecorder is already installed")
        from buckets.registry import store as registry_store
        from buckets.storage import local

        shim_os = _OsShim(self)
        patches = [
            (local, "os", shim_os), (local, "open", _OpenShim(self)), (local, "shutil", _ShutilShim(self)),
            (local, "_syncfs", _SyncfsShim(self, local._syncfs)), (local, "aiosync", _AioShim(shim_os)),
            (registry_store, "os", shim_os), (registry_store, "lmdb", _LmdbShim(self)),
            (registry_store.Registry, "_apply", _apply_hook(registry_store.Registry._apply)),
        ]
        if local._FALLOCATE is not None:
            patches.append((local, "_FALLOCATE", _FallocateShim(self, local._FALLOCATE, local._PUNCH_HOLE)))
        for obj, name, value in patches:
            self._saved.append((obj, name, obj.__dict__.get(name, _MISSING)))
            setattr(obj, name, value)
        _CURRENT = self
        return self

    def __exit__(self, *exc) -> None:
        global _CURRENT
        self.recording = False
        for obj, name, old in reversed(self._saved):
            if old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
        self._saved.clear()
        _CURRENT = None

    def track_registry(self, registry) -> None:
        """A registry opened before the recorder was installed (its LMDB is dumped at the
        checkpoint through it: the same environment must not be opened twice)."""
        self._registries[_os.path.normpath(registry.path)] = registry

    # -- the window ----------------------------------------------------------------------
    def checkpoint(self, registries: Iterable[Any] = ()) -> None:
        """Take every root's current contents as durable and start recording."""
        for reg in registries:
            self.track_registry(reg)
        with self._lock:
            for root in self.roots:
                self._scan_root(root)
            self.recording = True

    def stop(self) -> None:
        with self._lock:
            self.recording = False

    def mark(self, what: str, **info) -> int:
        """A harness event (an operation starting, acknowledged...); returns its index."""
        with self._lock:
            if not self.recording:
                raise ModelError("mark outside the recording window")
            self.events.append(Event("mark", info=dict(info, what=what)))
            return len(self.events) - 1

    def _scan_root(self, root: _Root) -> None:
        root.ns = {root.ino: {}}
        root.kind = {root.ino: "d"}
        content: dict[int, bytes] = {}
        lmdb: dict[int, int] = {}

        def visit(path: str, ino: int) -> None:
            for entry in sorted(_os.scandir(path), key=lambda e: e.name):
                if _ignored(entry.name) or entry.path.endswith(_UNMODELED):
                    continue
                child = next(self._inos)
                root.ns[ino][entry.name] = child
                if entry.is_dir(follow_symlinks=False):
                    root.ns[child] = {}
                    root.kind[child] = "d"
                    visit(entry.path, child)
                elif entry.name == LMDB_FILE:
                    root.kind[child] = "lmdb"
                    lmdb[child] = self._dump_env(path)
                else:
                    root.kind[child] = "f"
                    with builtins.open(entry.path, "rb") as f:
                        content[child] = f.read()

        if _os.path.isdir(root.path):
            visit(root.path, root.ino)
        self.baseline[root.rid] = _Baseline({d: dict(e) for d, e in root.ns.items()}, dict(root.kind),
                                            content, lmdb)

    # -- LMDB ------------------------------------------------------------------------------
    def _dump_env(self, directory: str) -> int:
        from buckets.registry.store import Registry

        reg = self._registries.get(_os.path.normpath(directory))
        if reg is not None and not reg.closed:
            return self._snapshot(reg.env, reg.db)
        import lmdb

        env = lmdb.open(directory, max_dbs=len(Registry.TABLES) + 2, lock=False, readonly=True)
        try:
            dbs = {}
            for name in Registry.TABLES:
                try:
                    dbs[name] = env.open_db(name.encode(), create=False)
                except lmdb.NotFoundError:
                    continue
            return self._snapshot(env, dbs)
        finally:
            env.close()

    def _snapshot(self, env, dbs: dict) -> int:
        dump: dict[str, list[tuple[bytes, bytes]]] = {}
        with env.begin() as txn:
            for name, db in dbs.items():
                dump[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
        self.snapshots.append(dump)
        return len(self.snapshots) - 1

    # -- the model of the current namespace ---------------------------------------------------
    def _where(self, path) -> tuple[_Root, str] | None:
        if not self.recording or not isinstance(path, str):
            return None
        path = _os.path.normpath(_os.path.abspath(path))
        for root in self.roots:
            if path == root.path:
                return root, ""
            if path.startswith(root.path + _os.sep):
                return root, path[len(root.path) + 1:]
        return None

    def _resolve(self, root: _Root, rel: str) -> int:
        ino = root.ino
        for part in rel.split("/") if rel else ():
            try:
                ino = root.ns[ino][part]
            except KeyError:
                raise ModelError(f"{root.path}/{rel}: not in the model (changed behind the recorder?)") from None
        return ino

    def _split(self, root: _Root, rel: str) -> tuple[int, str]:
        parent, _, name = rel.rpartition("/")
        return self._resolve(root, parent), name

    def _add(self, ev: Event) -> None:
        self.events.append(ev)

    def _record_create(self, root: _Root, rel: str, kind: str) -> int:
        d, name = self._split(root, rel)
        if name in root.ns[d]:
            raise ModelError(f"{root.path}/{rel}: created over an existing entry")
        ino = next(self._inos)
        root.ns[d][name] = ino
        root.kind[ino] = kind
        if kind == "d":
            root.ns[ino] = {}
        elif kind == "f":
            self.content[ino] = bytearray()
        self._add(Event("mkdir" if kind == "d" else "creat", root.rid, ino, d, name, path=rel))
        return ino

    def _record_remove(self, root: _Root, rel: str, kind: str) -> None:
        d, name = self._split(root, rel)
        if _ignored(name):
            return
        ino = root.ns[d].pop(name, None)
        if ino is None:
            raise ModelError(f"{root.path}/{rel}: removed but not in the model")
        if kind == "rmdir":
            if root.ns.get(ino):
                raise ModelError(f"{root.path}/{rel}: rmdir of a directory the model says is not empty")
            root.ns.pop(ino, None)
        self._add(Event(kind, root.rid, ino, d, name, path=rel))

    def _record_link(self, root: _Root, src: str, dst: str) -> None:
        ino = self._resolve(root, src)
        d, name = self._split(root, dst)
        if name in root.ns[d]:
            raise ModelError(f"{root.path}/{dst}: linked over an existing entry")
        root.ns[d][name] = ino
        self._add(Event("link", root.rid, ino, d, name, path=dst))

    def _record_rename(self, root: _Root, src: str, dst: str) -> None:
        sd, sname = self._split(root, src)
        dd, dname = self._split(root, dst)
        ino = root.ns[sd].pop(sname, None)
        if ino is None:
            raise ModelError(f"{root.path}/{src}: renamed but not in the model")
        replaced = root.ns[dd].get(dname, 0)
        if replaced and root.kind.get(replaced) == "d":
            root.ns.pop(replaced, None)
        root.ns[dd][dname] = ino
        self._add(Event("rename", root.rid, ino, sd, sname, dd, dname, replaced, path=dst))

    def _record_write(self, root: _Root, ino: int, data: bytes) -> None:
        buf = self.content.get(ino)
        if buf is None:
            raise ModelError(f"write to a file the model did not see created (inode {ino})")
        buf += data
        self._add(Event("write", root.rid, ino, length=len(buf)))

    def _record_punch(self, root: _Root, ino: int, offset: int, length: int) -> None:
        if root.kind.get(ino) != "f":
            raise ModelError(f"hole punched in {self._path_of(root, ino)}, which is not a plain file")
        self._add(Event("punch", root.rid, ino, length=length, offset=offset, path=self._path_of(root, ino)))

    def _record_fsync(self, root: _Root, ino: int, since: int) -> None:
        self._add(Event("fsync", root.rid, ino, path=self._path_of(root, ino), since=since))

    def _path_of(self, root: _Root, ino: int) -> str:
        if ino == root.ino:
            return ""
        for d, entries in root.ns.items():
            for name, child in entries.items():
                if child == ino:
                    parent = self._path_of(root, d)
                    return f"{parent}/{name}" if parent else name
        return "?"


_MISSING = object()


# -- the shims -----------------------------------------------------------------------------
class _AioShim:
    """``aiosync`` as ``LocalDisk`` sees it while recording: its asynchronous fsync (the
    record log's appends on the event loop) is the shim's ``fsync`` run in a thread, so it
    is recorded like any other: covering what was written before it was submitted, once
    it has completed."""

    AioUnsupported = aiosync.AioUnsupported

    def __init__(self, shim_os: "_OsShim") -> None:
        self._os = shim_os

    def for_loop(self) -> "_AioShim":
        return self

    def fsync(self, fd: int, *, datasync: bool = False) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(None, self._os.fsync, fd)


class _OsShim:
    """``os`` for the modules under test: mutations below a root are recorded."""

    path = _os.path

    # the ways of writing through a descriptor: refused on one the recorder follows (``_refuse``)
    _FD_WRITES = frozenset({"write", "pwrite", "writev", "pwritev", "ftruncate", "posix_fallocate"})

    def __init__(self, rec: PowerLossRecorder) -> None:
        self._rec = rec

    def __getattr__(self, name: str):
        real = getattr(_os, name)
        if name not in self._FD_WRITES:
            return real

        def refused(fd, *args, **kwargs):
            self._refuse(fd, f"os.{name}")
            return real(fd, *args, **kwargs)

        return refused

    def mkdir(self, path, mode=0o777):
        rec = self._rec
        with rec._lock:
            _os.mkdir(path, mode)
            loc = rec._where(path)
            if loc is not None:
                rec._record_create(loc[0], loc[1], "d")

    def makedirs(self, name, mode=0o777, exist_ok=False):
        head, tail = _os.path.split(name)
        if not tail:
            head, tail = _os.path.split(head)
        if head and tail and not _os.path.exists(head):
            try:
                self.makedirs(head, exist_ok=exist_ok)
            except FileExistsError:
                pass
        try:
            self.mkdir(name, mode)
        except OSError:
            if not exist_ok or not _os.path.isdir(name):
                raise

    def replace(self, src, dst):
        rec = self._rec
        with rec._lock:
            _os.replace(src, dst)
            if _ignored(_os.path.basename(src)) and _ignored(_os.path.basename(dst)):
                return
            s, d = rec._where(src), rec._where(dst)
            if s is not None and d is not None and s[0] is d[0]:
                rec._record_rename(s[0], s[1], d[1])
            elif s is not None or d is not None:
                raise ModelError(f"rename across filesystems: {src} -> {dst}")

    rename = replace

    def link(self, src, dst):
        rec = self._rec
        with rec._lock:
            _os.link(src, dst)
            s, d = rec._where(src), rec._where(dst)
            if s is not None and d is not None and s[0] is d[0]:
                rec._record_link(s[0], s[1], d[1])
            elif s is not None or d is not None:
                raise ModelError(f"link across filesystems: {src} -> {dst}")

    def unlink(self, path):
        rec = self._rec
        with rec._lock:
            _os.unlink(path)
            loc = rec._where(path)
            if loc is not None:
                rec._record_remove(loc[0], loc[1], "unlink")

    remove = unlink

    def rmdir(self, path):
        rec = self._rec
        with rec._lock:
            _os.rmdir(path)
            loc = rec._where(path)
            if loc is not None:
                rec._record_remove(loc[0], loc[1], "rmdir")

    def open(self, path, flags, mode=0o777, *, dir_fd=None):
        rec = self._rec
        if isinstance(path, str) and (path.endswith(_UNMODELED) or _ignored(_os.path.basename(path))):
            return _os.open(path, flags, mode, dir_fd=dir_fd)  # (see _UNMODELED, _IGNORED)
        with rec._lock:
            loc = rec._where(path) if dir_fd is None else None
            # O_RDWR (of a plain file) is followed for the holes punched through it
            # (``_FallocateShim``); every other way of writing through a descriptor is refused
            refused = f"{path}: written through os.open, which the model does not follow"
            if loc is not None and flags & (_os.O_WRONLY | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND):
                raise ModelError(refused)
            fd = _os.open(path, flags, mode, dir_fd=dir_fd)
            if loc is not None:
                try:
                    ino = rec._resolve(*loc)
                    if flags & _os.O_RDWR and loc[0].kind.get(ino) != "f":
                        raise ModelError(refused)
                except ModelError:
                    _os.close(fd)
                    raise
                rec._fds[fd] = (loc[0], ino)
            return fd

    def _refuse(self, fd, what: str) -> None:
        rec = self._rec
        if rec.recording and isinstance(fd, int) and fd in rec._fds:
            raise ModelError(f"{what} through a descriptor of {rec._fds[fd][0].path}, which the model does not follow")

    def close(self, fd):
        with self._rec._lock:
            self._rec._fds.pop(fd, None)
            _os.close(fd)

    def fsync(self, fd):
        rec = self._rec
        with rec._lock:
            target = rec._fds.get(fd) if rec.recording else None
            since = len(rec.events)
        if target is None:
            _os.fsync(fd)
            return
        # A sync covers what came before the call, and only once it returns: a crash while
        # it runs may lose all of that, and what other threads do meanwhile is not covered.
        time.sleep(rec.sync_delay)
        with rec._lock:
            if rec.recording:
                rec._record_fsync(*target, since)

    def fstat(self, fd):
        st = _os.fstat(fd)
        target = self._rec._fds.get(fd) if self._rec.recording else None
        if target is not None and target[1] == target[0].ino:
            return _DevStat(st, _ROOT_DEV_BASE + target[0].rid)
        return st


class _DevStat:
    """A stat result whose device is the recorded root's own (one device per disk)."""

    def __init__(self, st, dev: int) -> None:
        self._st, self.st_dev = st, dev

    def __getattr__(self, name: str):
        return getattr(self._st, name)


class _RecordingFile:
    def __init__(self, rec: PowerLossRecorder, f, root: _Root, ino: int) -> None:
        self._rec, self._f, self._root, self._ino = rec, f, root, ino

    def write(self, data) -> int:
        with self._rec._lock:
            n = self._f.write(data)
            view = memoryview(data).cast("B")
            n = len(view) if n is None else n
            if self._rec.recording:
                self._rec._record_write(self._root, self._ino, bytes(view[:n]))
            return n

    def close(self) -> None:
        with self._rec._lock:
            if not self._f.closed:
                self._rec._fds.pop(self._f.fileno(), None)
            self._f.close()

    def __enter__(self) -> "_RecordingFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name: str):
        return getattr(self._f, name)


class _OpenShim:
    def __init__(self, rec: PowerLossRecorder) -> None:
        self._rec = rec

    def __call__(self, file, mode="r", *args, **kwargs):
        rec = self._rec
        if not any(c in mode for c in "wax+"):
            return builtins.open(file, mode, *args, **kwargs)
        with rec._lock:
            loc = rec._where(file)
            if loc is not None:
                d, name = rec._split(*loc)
                if name in loc[0].ns[d]:
                    raise ModelError(f"{file}: opened for writing over an existing file (truncation is not modelled)")
            f = builtins.open(file, mode, *args, **kwargs)
            if loc is None:
                return f
            ino = rec._record_create(loc[0], loc[1], "f")
            rec._fds[f.fileno()] = (loc[0], ino)
            return _RecordingFile(rec, f, loc[0], ino)


class _ShutilShim:
    def __init__(self, rec: PowerLossRecorder) -> None:
        self._rec = rec
        self._os = _OsShim(rec)

    def __getattr__(self, name: str):
        return getattr(_shutil, name)

    def rmtree(self, path, ignore_errors=False, onerror=None):
        if self._rec._where(path) is None:
            return _shutil.rmtree(path, ignore_errors=ignore_errors, onerror=onerror)

        def failed(fn, p, exc: OSError) -> None:
            if ignore_errors:
                return
            if onerror is not None:
                onerror(fn, p, (type(exc), exc, exc.__traceback__))
                return
            raise exc

        try:
            entries = list(_os.scandir(path))
        except OSError as exc:
            failed(_os.scandir, path, exc)
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                self.rmtree(entry.path, ignore_errors, onerror)
                continue
            try:
                self._os.unlink(entry.path)
            except OSError as exc:
                failed(_os.unlink, entry.path, exc)
        try:
            self._os.rmdir(path)
        except OSError as exc:
            failed(_os.rmdir, path, exc)


class _SyncfsShim:
    def __init__(self, rec: PowerLossRecorder, real) -> None:
        self._rec, self._real = rec, real

    def __call__(self, fd: int) -> int:
        rec = self._rec
        with rec._lock:
            target = rec._fds.get(fd) if rec.recording else None
            since = len(rec.events)
        if target is not None:
            time.sleep(rec.sync_delay)  # see _OsShim.fsync
            with rec._lock:
                if rec.recording:
                    rec._add(Event("syncfs", target[0].rid, since=since))
            return 0
        if self._real is None:
            ctypes.set_errno(0)
            _os.sync()
            return 0
        return self._real(fd)


class _FallocateShim:
    """``local._FALLOCATE`` (libc's ``fallocate``) while recording: a hole punched in a file
    below a root (``PUNCH_HOLE | KEEP_SIZE``, through a descriptor the shim of ``os.open``
    follows) is done and recorded under the lock, as the range it really zeroed (cut at the
    file's end); any other mode there, or a descriptor the recorder does not know, is refused."""

    def __init__(self, rec: PowerLossRecorder, real, punch_mode: int) -> None:
        self._rec, self._real, self._punch = rec, real, punch_mode

    def __call__(self, fd: int, mode: int, offset: int, length: int) -> int:
        rec = self._rec
        with rec._lock:
            target = rec._fds.get(fd) if rec.recording else None
            if target is None:
                if rec.recording and rec._where(_fd_path(fd)) is not None:
                    raise ModelError(f"fallocate on {_fd_path(fd)}: a descriptor the recorder did not see opened")
                return self._real(fd, mode, offset, length)
            if mode != self._punch:
                raise ModelError(f"fallocate mode {mode:#x} on {target[0].path}: only hole punches are modelled")
            size = _os.fstat(fd).st_size
            result = self._real(fd, mode, offset, length)
            end = min(offset + length, size)
            if result == 0 and end > offset:
                rec._record_punch(target[0], target[1], offset, end - offset)
            return result


def _fd_path(fd: int) -> str | None:
    try:
        return _os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class _LmdbShim:
    def __init__(self, rec: PowerLossRecorder) -> None:
        self._rec = rec

    def __getattr__(self, name: str):
        import lmdb

        return getattr(lmdb, name)

    def open(self, path, **kwargs):
        import lmdb

        rec = self._rec
        with rec._lock:
            existed = _os.path.exists(_os.path.join(path, LMDB_FILE))
            env = lmdb.open(path, **kwargs)
            loc = rec._where(_os.path.join(path, LMDB_FILE))
            if loc is not None and not existed:
                rec._record_create(loc[0], loc[1], "lmdb")
            return env


def _apply_hook(original):
    def _apply(registry, items):
        rec = _CURRENT
        loc = None
        if rec is not None:
            rec._registries[_os.path.normpath(registry.path)] = registry
            with rec._lock:
                loc = rec._where(_os.path.join(registry.path, LMDB_FILE))
                if loc is not None:
                    ino = rec._resolve(*loc)
                    rec._add(Event("lmdb_begin", loc[0].rid, ino, path=loc[1]))
        try:
            result = original(registry, items)
        except BaseException:
            if loc is not None and rec is not None:
                with rec._lock:
                    rec._add(Event("lmdb_abort", loc[0].rid, ino, path=loc[1]))
            raise
        if loc is not None and rec is not None:
            with rec._lock:
                if rec.recording:
                    snap = rec._snapshot(registry.env, registry.db)
                    rec._add(Event("lmdb_commit", loc[0].rid, ino, snap=snap, path=loc[1]))
        return result

    _apply.__wrapped__ = original  # type: ignore[attr-defined]
    return _apply


# -- the Disk --------------------------------------------------------------------------------
class PowerLossDisk:
    """A ``LocalDisk`` over ``root`` whose filesystem effects ``recorder`` follows.

    Every call is the real ``LocalDisk``'s (so this is a ``Disk`` that behaves exactly like
    one); what a power cut could undo is asked of the recorder's :class:`CrashModel`.
    """

    def __init__(self, root: str, recorder: PowerLossRecorder, disk_id: str = "") -> None:
        self.inner = LocalDisk(root, disk_id)
        self.recorder = recorder
        self.rid = recorder.add_root(self.inner.root)

    def __repr__(self) -> str:
        return f"PowerLossDisk({self.inner.root!r})"

    def pending(self) -> list[Event]:
        """The changes of this disk not yet durable at this moment (see the module doc)."""
        rec = self.recorder
        with rec._lock:
            model = CrashModel(rec)
            return model.pending(self.rid, len(model.events))

    # state, delegated
    disk_id = property(lambda self: self.inner.disk_id, lambda self, v: setattr(self.inner, "disk_id", v))
    endpoint = property(lambda self: self.inner.endpoint)
    online = property(lambda self: self.inner.online, lambda self, v: setattr(self.inner, "online", v))
    healing = property(lambda self: self.inner.healing, lambda self, v: setattr(self.inner, "healing", v))
    last_error = property(lambda self: self.inner.last_error, lambda self, v: setattr(self.inner, "last_error", v))
    # what engine/space asks of a disk short of space (releases, compaction's reclaim)
    refused_at = property(lambda self: self.inner.refused_at, lambda self, v: setattr(self.inner, "refused_at", v))
    near_full = property(lambda self: self.inner.near_full, lambda self, v: setattr(self.inner, "near_full", v))

    def mark_offline(self, reason: str) -> None:
        self.inner.mark_offline(reason)

    def mark_online(self) -> None:
        self.inner.mark_online()

    def local_path(self, rel: str) -> str | None:
        return self.inner.local_path(rel)

    async def close(self) -> None:
        await self.inner.close()

    async def info(self) -> DiskInfo:
        return await self.inner.info()

    async def upkeep(self) -> None:
        await self.inner.upkeep()

    async def read_format(self) -> bytes:
        return await self.inner.read_format()

    async def write_format(self, data: bytes, *, create_root: bool, sync: bool) -> None:
        await self.inner.write_format(data, create_root=create_root, sync=sync)

    async def create_file(self, path: str) -> ShardWriter:
        return await self.inner.create_file(path)

    async def write_file(self, path: str, data: bytes, *, sync: bool, new_data: bool = False) -> None:
        await self.inner.write_file(path, data, sync=sync, new_data=new_data)

    async def read_file(self, path: str, *, max_size: int = MAX_SMALL_FILE) -> bytes:
        return await self.inner.read_file(path, max_size=max_size)

    async def read_range(self, path: str, offset: int, length: int) -> bytes:
        return await self.inner.read_range(path, offset, length)

    async def rename_data(self, moves: list[tuple[str, str]], meta: tuple[str, bytes] | None, *,
                          sync: bool, cleanup: str | None = None) -> None:
        await self.inner.rename_data(moves, meta, sync=sync, cleanup=cleanup)

    async def fsync_dir(self, path: str) -> None:
        await self.inner.fsync_dir(path)

    async def delete(self, path: str, *, recursive: bool = False, prune: int = 0) -> None:
        await self.inner.delete(path, recursive=recursive, prune=prune)

    async def list_dir(self, path: str) -> list[str]:
        return await self.inner.list_dir(path)

    async def exists(self, path: str) -> bool:
        return await self.inner.exists(path)

    async def file_size(self, path: str) -> int:
        return await self.inner.file_size(path)

    async def stat(self, path: str) -> FileStat:
        return await self.inner.stat(path)

    async def walk_files(self, path: str, suffix: str) -> AsyncIterator[str]:
        async for rel in self.inner.walk_files(path, suffix):
            yield rel

    async def walk_entries(self, path: str, depth: int) -> AsyncIterator[FileStat]:
        async for entry in self.inner.walk_entries(path, depth):
            yield entry

    async def append_records(self, records: list[bytes], *, sync: bool, data: bool = False) -> list[list[int]]:
        return await self.inner.append_records(records, sync=sync, data=data)

    async def read_record(self, location: list[int]) -> bytes:
        return await self.inner.read_record(location)

    async def walk_records(self, segment: int | None = None) -> AsyncIterator[tuple[list[int], bytes]]:
        async for item in self.inner.walk_records(segment):
            yield item

    async def list_segments(self) -> list[list[int]]:
        return await self.inner.list_segments()

    async def release_records(self, wid: str, locations: list[list[int]]) -> int:
        """The real release: each hole it punches is recorded (rule 6 of the module doc)."""
        return await self.inner.release_records(wid, locations)

    async def delete_segment(self, segment: int) -> None:
        await self.inner.delete_segment(segment)


# -- crash states ----------------------------------------------------------------------------
@dataclass(slots=True)
class RootState:
    """One way a root could come back: its namespace, each file's length, each registry's
    snapshot (-1: an empty environment)."""

    rid: int
    ns: dict[int, dict[str, int]]
    lengths: dict[int, int]
    lmdb: dict[int, int]
    kept: int  # how many optional changes it keeps (0: every unsynced change lost)
    lost: tuple[str, ...] = ()  # the unsynced changes it lost, for reports
    key: tuple = ()
    extreme: int = 0  # 1: every unsynced change lost; 2: every one kept
    punched: frozenset[int] = frozenset()  # the punch events that happened (durable or kept)


@dataclass(slots=True)
class CrashState:
    roots: list[RootState]
    key: tuple = ()


@dataclass(slots=True)
class CutInfo:
    """The optional (unsynced) changes at a cut, for reports."""

    optional: int = 0
    unsynced_files: int = 0
    lmdb_choices: int = 1


@dataclass
class _RootWindow:
    ops: list[int] = field(default_factory=list)  # indices of META events
    # what a change needs to be durable itself: the earlier changes of the same entries (and,
    # for an rmdir, of the entries inside); a sync that makes it durable makes those durable
    deps: dict[int, frozenset[int]] = field(default_factory=dict)
    # ... plus the creation of its directories: without it the change is unreachable, so a
    # state keeping it but not them equals one keeping neither (enumerated once)
    needs: dict[int, frozenset[int]] = field(default_factory=dict)


def path_pattern(rel: str) -> str:
    """A path with its ids replaced by ``*`` (reports group sync points by it)."""
    rel = re.sub(r"\b[0-9a-f]+-[0-9a-f]{8}-[0-9a-f]+\.w\b", "*.w", rel)  # LocalDisk's temp files
    rel = re.sub(r"[0-9a-f]{16,}", "*", rel)  # key hashes, write, transaction and upload ids
    return rel or "."


class CrashModel:
    """The crash states of a finished recording (see the module doc)."""

    def __init__(self, rec: PowerLossRecorder) -> None:
        self.rec = rec
        self.events = list(rec.events)
        self.roots = rec.roots
        self.baseline = rec.baseline
        self.content = rec.content
        self.snapshots = rec.snapshots
        self._windows = {r.rid: self._window(r.rid) for r in self.roots}
        self.kind: dict[int, str] = {}
        for r in self.roots:
            self.kind.update(self.baseline[r.rid].kind if r.rid in self.baseline else {})
            self.kind.update(r.kind)
        self._writes: dict[int, list[tuple[int, int]]] = {}
        for i, ev in enumerate(self.events):
            if ev.kind == "write":
                self._writes.setdefault(ev.ino, []).append((i, ev.length))
        # how often an enumeration had to sample instead of listing everything (reports)
        self.sampled = 0
        self.last_per_root: list[int] = []
        for ev in self.events:
            if ev.kind == "mkdir":
                self.kind[ev.ino] = "d"
            elif ev.kind == "creat" and ev.ino not in self.kind:
                self.kind[ev.ino] = "lmdb" if ev.ino not in self.content else "f"

    def _window(self, rid: int) -> _RootWindow:
        w = _RootWindow()
        last_on_entry: dict[tuple[int, str], int] = {}
        creator: dict[int, int] = {}
        last_in_dir: dict[int, dict[str, int]] = {}
        for i, ev in enumerate(self.events):
            if ev.root != rid or ev.kind not in META:
                continue
            deps: set[int] = set()
            for entry in ev.entries():
                if entry in last_on_entry:
                    deps.add(last_on_entry[entry])
            if ev.kind == "rmdir":
                deps.update(last_in_dir.get(ev.ino, {}).values())
            w.ops.append(i)
            w.deps[i] = frozenset(deps)
            w.needs[i] = frozenset(deps | {creator[d] for d in ev.dirs() if d in creator})
            for entry in ev.entries():
                last_on_entry[entry] = i
                last_in_dir.setdefault(entry[0], {})[entry[1]] = i
            if ev.kind in ("mkdir", "creat"):
                creator[ev.ino] = i
        return w

    # -- what is durable at a cut ----------------------------------------------------------
    def sync_cuts(self) -> list[int]:
        """The cuts worth checking: just before every sync event, and at the end."""
        return [i for i, ev in enumerate(self.events) if ev.kind in SYNCS] + [len(self.events)]

    def sync_points(self) -> list[tuple[int, Event]]:
        return [(i, ev) for i, ev in enumerate(self.events) if ev.kind in SYNCS]

    def _forced(self, rid: int, cut: int) -> tuple[set[int], dict[int, int], dict[int, int]]:
        """(changes forced durable, durable length per file, current length per file)."""
        pending_in: dict[int, set[int]] = {}
        pending: set[int] = set()
        forced: set[int] = set()
        durable: dict[int, int] = {}
        current: dict[int, int] = {}
        for i in range(cut):
            ev = self.events[i]
            if ev.root != rid:
                continue
            if ev.kind in META:
                pending.add(i)
                for d in ev.dirs():
                    pending_in.setdefault(d, set()).add(i)
                if ev.kind == "creat" and ev.ino in self.content:
                    current.setdefault(ev.ino, 0)
                    durable.setdefault(ev.ino, 0)
            elif ev.kind == "write":
                current[ev.ino] = ev.length
            elif ev.kind == "fsync":
                if self.kind.get(ev.ino) == "d":
                    done = {j for j in pending_in.get(ev.ino, ()) if j < ev.since}
                    forced |= done
                    pending -= done
                    pending_in[ev.ino] = pending_in.get(ev.ino, set()) - done
                elif ev.ino in current:
                    durable[ev.ino] = max(durable.get(ev.ino, 0), self._length_at(ev.ino, ev.since))
            elif ev.kind == "syncfs":
                done = {j for j in pending if j < ev.since}
                forced |= done
                pending -= done
                for d in pending_in:
                    pending_in[d] -= done
                for ino in current:
                    durable[ino] = max(durable.get(ino, 0), self._length_at(ino, ev.since))
        # everything a forced change needs is durable too
        deps = self._windows[rid].deps
        stack = list(forced)
        while stack:
            for d in deps[stack.pop()]:
                if d not in forced:
                    forced.add(d)
                    stack.append(d)
        return forced, durable, current

    def _punches(self, rid: int, cut: int) -> tuple[set[int], list[int]]:
        """(the punches of root ``rid`` durable at ``cut``, the others before it): a punch is
        durable once an fsync of its file or a syncfs called after it returned (rule 6)."""
        durable: set[int] = set()
        open_: list[int] = []
        for i in range(cut):
            ev = self.events[i]
            if ev.root != rid:
                continue
            if ev.kind == "punch":
                open_.append(i)
            elif ev.kind in ("fsync", "syncfs") and open_:
                done = [j for j in open_ if j < ev.since and (ev.kind == "syncfs" or self.events[j].ino == ev.ino)]
                durable.update(done)
                open_ = [j for j in open_ if j not in durable]
        return durable, open_

    def pending(self, rid: int, cut: int) -> list[Event]:
        forced, durable, current = self._forced(rid, cut)
        out = [self.events[i] for i in self._windows[rid].ops if i < cut and i not in forced]
        out += [Event("write", rid, ino, length=current[ino]) for ino in current if durable.get(ino, 0) < current[ino]]
        out += [self.events[i] for i in self._punches(rid, cut)[1]]
        return out

    def _lmdb_choices(self, rid: int, cut: int) -> dict[int, list[int]]:
        """Per data.mdb inode of this root: the snapshots it may hold after a cut."""
        base = self.baseline.get(rid)
        last: dict[int, int] = dict(base.lmdb) if base else {}
        inflight: dict[int, int] = {}
        for i in range(cut):
            ev = self.events[i]
            if ev.root != rid:
                continue
            if ev.kind == "creat" and self.kind.get(ev.ino) == "lmdb":
                last.setdefault(ev.ino, -1)
            elif ev.kind == "lmdb_begin":
                inflight[ev.ino] = i
            elif ev.kind in ("lmdb_commit", "lmdb_abort"):
                inflight.pop(ev.ino, None)
                if ev.kind == "lmdb_commit":
                    last[ev.ino] = ev.snap
        out = {ino: [snap] for ino, snap in last.items()}
        for ino, begin in inflight.items():
            for ev in self.events[begin + 1:]:
                if ev.root == rid and ev.ino == ino and ev.kind in ("lmdb_commit", "lmdb_abort"):
                    if ev.kind == "lmdb_commit":
                        out.setdefault(ino, [-1]).append(ev.snap)
                    break
        return out

    def cut_info(self, cut: int) -> CutInfo:
        info = CutInfo()
        for r in self.roots:
            forced, durable, current = self._forced(r.rid, cut)
            info.optional += sum(1 for i in self._windows[r.rid].ops if i < cut and i not in forced)
            info.optional += len(self._punches(r.rid, cut)[1])
            info.unsynced_files += sum(1 for ino in current if durable.get(ino, 0) < current[ino])
            for choices in self._lmdb_choices(r.rid, cut).values():
                info.lmdb_choices *= len(choices)
        return info

    # -- enumeration -------------------------------------------------------------------------
    def root_states(self, rid: int, cut: int, limit: int, rng: random.Random,
                    collapse: tuple[str, ...] = ()) -> list[RootState]:
        """The distinct states root ``rid`` could be in after a cut at ``cut``: the extremes
        first (every unsynced change lost, then every one kept), then the rest; exhaustive
        when there are at most ``limit``, else a seeded sample of ``limit``. States that
        differ only below a directory of ``collapse`` count as one (the first met): for a
        directory the next start empties whatever it holds (the staging area)."""
        forced, durable, current = self._forced(rid, cut)
        window = self._windows[rid]
        optional = [i for i in window.ops if i < cut and i not in forced]
        subsets = self._closed_subsets(optional, forced, window.needs, limit, rng)
        lmdb_choices = self._lmdb_choices(rid, cut)
        durable_punches, open_punches = self._punches(rid, cut)
        base = self.baseline[rid]
        everything = frozenset(optional)
        candidates: list[RootState] = []
        for chosen in subsets:
            ns = {d: dict(e) for d, e in base.ns.items()}
            for i in sorted(forced | chosen):
                _apply(ns, self.events[i], self.kind)
            reachable = _reachable(ns, self.roots[rid].ino)
            files = [ino for ino in reachable if ino in current]
            length_options = [self._lengths(durable.get(ino, 0), current[ino], self._ends(ino, cut)) for ino in files]
            lmdb_inos = [ino for ino in reachable if self.kind.get(ino) == "lmdb"]
            lmdb_options = [lmdb_choices.get(ino, [base.lmdb.get(ino, -1)]) for ino in lmdb_inos]
            # rule 6: each punch not yet durable, in a file of this namespace, happened or not
            in_ns = set(reachable)
            punched = frozenset(i for i in durable_punches if self.events[i].ino in in_ns)
            maybe = [i for i in open_punches if self.events[i].ino in in_ns]
            options = length_options + lmdb_options + [[False, True]] * len(maybe)
            combos = _product_limited(options, limit, rng)
            if len(combos) < _count(options):
                self.sampled += 1
            for n, combo in enumerate(combos):
                nf, nl = len(files), len(lmdb_inos)
                kept = [i for i, on in zip(maybe, combo[nf + nl:]) if on]
                state = RootState(rid, ns, dict(zip(files, combo[:nf])), dict(zip(lmdb_inos, combo[nf:nf + nl])),
                                  len(chosen) + len(kept),
                                  tuple(_change(self.events[i]) for i in optional if i not in chosen)
                                  + tuple(_change(self.events[i]) for i in maybe if i not in kept),
                                  punched=punched | frozenset(kept))
                state.key = self._root_key(state, collapse)
                # combos[0]: every file at its durable length (and the registry's last commit);
                # combos[1]: every file whole (and the commit in flight, if any)
                if chosen == frozenset() and n == 0:
                    state.extreme = 1
                elif chosen == everything and n == min(1, len(combos) - 1):
                    state.extreme = 2
                candidates.append(state)
        # the extremes first: every unsynced change lost, then every one kept
        candidates.sort(key=lambda s: {1: 0, 2: 1}.get(s.extreme, 2))
        out: list[RootState] = []
        seen: set[tuple] = set()
        for state in candidates:
            if state.key not in seen:
                seen.add(state.key)
                out.append(state)
        if len(out) > limit:
            self.sampled += 1
            head, rest = out[:2], out[2:]
            out = head + rng.sample(rest, limit - 2)
        return out

    def _length_at(self, ino: int, index: int) -> int:
        """A file's length just before event ``index``."""
        length = 0
        for i, n in self._writes.get(ino, ()):
            if i >= index:
                break
            length = n
        return length

    def _ends(self, ino: int, cut: int) -> list[int]:
        """The file's length after each of its writes before ``cut`` (its write boundaries)."""
        return [length for i, length in self._writes.get(ino, ()) if i < cut]

    @staticmethod
    def _lengths(durable: int, current: int, ends: list[int]) -> list[int]:
        """Where a file with unsynced data may end: its durable length, block and write
        boundaries in between (at most three of them: first, middle, last; every torn length
        is as much a torn file to the engine, which checks lengths and piece checksums), and
        its full length (last, so that the last choice of every file is "all kept")."""
        if durable >= current:
            return [current]
        blocks = range((durable // BLOCK + 1) * BLOCK, current, BLOCK)
        interior = sorted({*blocks, *(e for e in ends if durable < e < current)})
        if len(interior) > 3:
            interior = [interior[0], interior[len(interior) // 2], interior[-1]]
        return [durable, *interior, current]

    def _closed_subsets(self, optional: list[int], forced: set[int], deps: dict[int, frozenset[int]],
                        limit: int, rng: random.Random) -> list[frozenset[int]]:
        """Subsets of ``optional`` closed under the dependencies: none first, all-possible second."""
        everything = frozenset(optional)
        out: list[frozenset[int]] = [frozenset()]
        if optional:
            out.append(everything)  # dependencies point backwards: keeping all is always closed
        exhaustive: list[frozenset[int]] = []
        overflow = False

        def dfs(k: int, chosen: frozenset[int]) -> None:
            nonlocal overflow
            if overflow:
                return
            if k == len(optional):
                exhaustive.append(chosen)
                if len(exhaustive) > limit:
                    overflow = True
                return
            op = optional[k]
            dfs(k + 1, chosen)
            if deps[op] <= forced | chosen:
                dfs(k + 1, chosen | {op})

        dfs(0, frozenset())
        if not overflow:
            return _unique(out + exhaustive)
        self.sampled += 1
        picked = list(out)
        for _ in range(limit * 4):
            if len(_unique(picked)) >= limit:
                break
            keep = rng.random()
            chosen: set[int] = set()
            for op in optional:
                if rng.random() < keep and deps[op] <= forced | chosen:
                    chosen.add(op)
            picked.append(frozenset(chosen))
        return _unique(picked)[:limit]

    def states(self, cut: int, *, limit: int = 64, combos: int = 256, seed: int = 0,
               collapse: tuple[str, ...] = ()) -> Iterator[CrashState]:
        """Every crash state of a cut (per root up to ``limit``), combined across roots:
        all combinations when there are at most ``combos``; else every root's every state
        with the others at their extremes (all lost, all kept), plus ``combos`` random
        combinations. ``collapse``: see :meth:`root_states`."""
        rng = random.Random(seed * 1_000_003 + cut)
        per_root = [self.root_states(r.rid, cut, limit, rng, collapse) for r in self.roots]
        self.last_per_root = [len(s) for s in per_root]
        total = 1
        for states in per_root:
            total *= len(states)
        seen: set[tuple] = set()

        def emit(choice: tuple[int, ...]) -> Iterator[CrashState]:
            roots = [per_root[r][i] for r, i in enumerate(choice)]
            key = tuple(s.key for s in roots)
            if key not in seen:
                seen.add(key)
                yield CrashState(roots, key)

        if total <= combos:
            for choice in itertools.product(*(range(len(s)) for s in per_root)):
                yield from emit(choice)
            return
        self.sampled += 1
        extremes = [(0,) * len(per_root), tuple(min(1, len(s) - 1) for s in per_root)]
        for ext in extremes:
            yield from emit(ext)
        for r, states in enumerate(per_root):
            for i in range(len(states)):
                for ext in extremes:
                    yield from emit(ext[:r] + (i,) + ext[r + 1:])
        budget = combos
        while budget > 0 and len(seen) < total:
            budget -= 1
            yield from emit(tuple(rng.randrange(len(s)) for s in per_root))

    def _holes(self, state: RootState) -> dict[int, list[tuple[int, int]]]:
        """Per file inode, the ranges its punches in ``state`` zeroed (as punched)."""
        out: dict[int, list[tuple[int, int]]] = {}
        for i in state.punched:
            ev = self.events[i]
            out.setdefault(ev.ino, []).append((ev.offset, ev.offset + ev.length))
        return out

    def _file_bytes(self, state: RootState, ino: int, holes: dict[int, list[tuple[int, int]]]) -> bytes:
        """What file ``ino`` holds in ``state``: its bytes up to its length there (the baseline's
        for a file older than the checkpoint), zeros where a punch in the state took them."""
        if ino in self.content:
            data = bytearray(self.content[ino][:state.lengths.get(ino, len(self.content[ino]))])
        else:
            data = bytearray(self.baseline[state.rid].content[ino])
        for a, b in _merged(holes.get(ino, ()), len(data)):
            data[a:b] = bytes(b - a)
        return bytes(data)

    def _root_key(self, state: RootState, collapse: tuple[str, ...] = ()) -> tuple:
        items = []
        holes = self._holes(state)
        for path, ino in _walk(state.ns, self.roots[state.rid].ino, ""):
            if any(path.startswith(c + "/") for c in collapse):
                continue  # what is below counts only as "something" (the directory's entry stays)
            kind = self.kind.get(ino, "f")
            if kind == "d":
                items.append((path, "d"))
            elif kind == "lmdb":
                items.append((path, "lmdb", state.lmdb.get(ino, -1)))
            elif ino in self.content:
                length = state.lengths.get(ino, len(self.content[ino]))
                items.append((path, "f", ino, length, _merged(holes.get(ino, ()), length)))
            else:
                items.append((path, "b", ino, _merged(holes.get(ino, ()), len(self.baseline[state.rid].content[ino]))))
        return tuple(items)

    # -- materialization -------------------------------------------------------------------------
    def materialize(self, state: CrashState, dests: list[str]) -> None:
        """Write ``state`` into ``dests`` (one fresh directory per root, created here)."""
        for rs, dest in zip(state.roots, dests):
            _os.makedirs(dest, exist_ok=True)
            holes = self._holes(rs)
            for path, ino in _walk(rs.ns, self.roots[rs.rid].ino, ""):
                full = _os.path.join(dest, path)
                kind = self.kind.get(ino, "f")
                if kind == "d":
                    _os.mkdir(full)
                elif kind == "lmdb":
                    snap = rs.lmdb.get(ino, -1)
                    _write_lmdb(_os.path.dirname(full), self.snapshots[snap] if snap >= 0 else {})
                else:
                    with builtins.open(full, "wb") as f:
                        f.write(self._file_bytes(rs, ino, holes))

    def describe(self, state: CrashState) -> str:
        """What a state lost, for a violation report."""
        lines = []
        for rs in state.roots:
            root = self.roots[rs.rid]
            lost = []
            holes = self._holes(rs)
            for path, ino in _walk(rs.ns, root.ino, ""):
                if ino in self.content:
                    full = len(self.content[ino])
                    if rs.lengths.get(ino, full) < full:
                        lost.append(f"{path_pattern(path)} cut to {rs.lengths[ino]} of {full} bytes")
                if ino in holes:
                    spans = [f"{a}-{b}" for a, b in _merged(holes[ino], 1 << 62)]
                    more = ", ..." if len(spans) > 4 else ""
                    lost.append(f"{path_pattern(path)} zeros at {', '.join(spans[:4])}{more}")
            for ino, snap in rs.lmdb.items():
                lost.append(f"registry snapshot {snap}")
            gone = sorted(set(rs.lost))
            text = f"disk {rs.rid}: kept {rs.kept} unsynced changes, lost {len(rs.lost)}"
            if gone:
                text += f" ({'; '.join(gone[:6])}{'; ...' if len(gone) > 6 else ''})"
            lines.append(text + (f"; {'; '.join(lost)}" if lost else ""))
        return "\n".join(lines)

    def state_digest(self, state: CrashState) -> str:
        return hashlib.sha256(repr(state.key).encode()).hexdigest()[:16]


def _change(ev: Event) -> str:
    if ev.kind == "punch":
        return f"punch {path_pattern(ev.path)} @{ev.offset}+{ev.length}"
    return f"{ev.kind} {path_pattern(ev.path)}"


def _merged(spans: Iterable[tuple[int, int]], size: int) -> tuple[tuple[int, int], ...]:
    """``spans`` cut at ``size``, sorted, overlapping and adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((a, min(b, size)) for a, b in spans):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def _apply(ns: dict[int, dict[str, int]], ev: Event, kind: dict[int, str]) -> None:
    """One change, on a namespace where a directory whose creation was lost is absent (what
    is durable inside it is then unreachable: it exists, but under no name)."""
    if ev.kind in ("creat", "mkdir", "link"):
        if ev.dir in ns:
            ns[ev.dir][ev.name] = ev.ino
        if ev.kind == "mkdir":
            ns.setdefault(ev.ino, {})
    elif ev.kind == "rename":
        if ev.dir in ns:
            ns[ev.dir].pop(ev.name, None)
        if ev.dir2 in ns:
            old = ns[ev.dir2].get(ev.name2)
            if old is not None and kind.get(old) == "d" and old != ev.ino:
                ns.pop(old, None)
            ns[ev.dir2][ev.name2] = ev.ino
    elif ev.kind in ("unlink", "rmdir"):
        if ev.dir in ns:
            ns[ev.dir].pop(ev.name, None)
        if ev.kind == "rmdir":
            ns.pop(ev.ino, None)


def _walk(ns: dict[int, dict[str, int]], ino: int, prefix: str) -> Iterator[tuple[str, int]]:
    for name in sorted(ns.get(ino, {})):
        child = ns[ino][name]
        path = f"{prefix}/{name}" if prefix else name
        yield path, child
        if child in ns:
            yield from _walk(ns, child, path)


def _reachable(ns: dict[int, dict[str, int]], root: int) -> list[int]:
    return [ino for _, ino in _walk(ns, root, "")]


def _unique(items: list[frozenset[int]]) -> list[frozenset[int]]:
    seen: set[frozenset[int]] = set()
    out = []
    for s in items:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _count(options: list[list[int]]) -> int:
    total = 1
    for o in options:
        total *= len(o)
    return total


def _product_limited(options: list[list[int]], limit: int, rng: random.Random) -> list[tuple[int, ...]]:
    """Every combination of ``options`` (first: all first choices, then all last), or a
    sample of ``limit`` when there are more."""
    total = 1
    for o in options:
        total *= len(o)
    first = tuple(o[0] for o in options)
    last = tuple(o[-1] for o in options)
    if total <= limit:
        rest = [c for c in itertools.product(*options) if c not in (first, last)]
        return list(dict.fromkeys([first, last, *rest]))
    out = {first: None, last: None}
    while len(out) < limit:
        out[tuple(rng.choice(o) for o in options)] = None
    return list(out)


def _write_lmdb(directory: str, dump: dict[str, list[tuple[bytes, bytes]]]) -> None:
    import lmdb

    from buckets.registry.store import Registry

    # the state is being written, not lived through: no sync needed until close
    env = lmdb.open(directory, map_size=1 << 30, max_dbs=len(Registry.TABLES) + 2, sync=False, metasync=False)
    try:
        with env.begin(write=True) as txn:
            for name, items in dump.items():
                db = env.open_db(name.encode(), txn=txn)
                for k, v in items:
                    txn.put(k, v, db=db)
    finally:
        env.close()
