"""A disk with bad sectors, for fault tests: a FUSE file system passing every call through to
a backing directory, except reads of chosen byte ranges of chosen files, which fail with EIO as
a disk's unreadable sectors do, through ``read`` and through mapped pages alike (a mapped page
that cannot be read ends the process that touches it with ``SIGBUS``, as on a real disk).

``FuseDisk(backing, path)`` mounts ``backing`` at ``path`` (a daemon process of its own);
``bad(relative_path, start, end)`` makes those bytes unreadable from the next read on (the
kernel's page cache is dropped for the file, so pages read before are read again), ``heal()``
makes everything readable again, ``close()`` unmounts. Needs root, ``/dev/fuse``, libfuse 2
(``make tools`` installs it with s3fs) and fusepy: the test is skipped with the reason otherwise.

Run as a script, it is the daemon: ``python fusedisk.py BACKING MOUNTPOINT CONTROL``, where
CONTROL is a JSON file ``{"inode:generation" of the backing file: [[start, end], ...]}`` read
again whenever it changes.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

_HERE = os.path.abspath(__file__)
_FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): the inode's generation


def _generation(fd: int) -> int:
    """The inode's generation number (ext4 draws a new one when it reuses an inode number), 0
    where the file system has none."""
    try:
        return struct.unpack("q", fcntl.ioctl(fd, _FS_IOC_GETVERSION, b"\0" * 8))[0] & 0xFFFFFFFF
    except OSError:
        return 0


def _fd_id(fd: int) -> str:
    return f"{os.fstat(fd).st_ino}:{_generation(fd)}"


def file_id(path: Path) -> str:
    """A backing file's identity: its inode number and generation (a number alone is reused)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _fd_id(fd)
    finally:
        os.close(fd)


class FuseDisk:
    def __init__(self, backing: Path, path: Path) -> None:
        import pytest

        if os.geteuid() != 0:
            pytest.skip("a FUSE disk needs root")
        if not os.path.exists("/dev/fuse") or shutil.which("fusermount") is None:
            pytest.skip("FUSE is not available here (/dev/fuse, fusermount)")
        try:
            importlib.import_module("fuse")  # fusepy, which loads libfuse.so.2
        except (ImportError, OSError, EnvironmentError) as exc:
            pytest.skip(f"fusepy or libfuse 2 is missing: {exc}")
        self.backing, self.path = backing, path
        backing.mkdir(parents=True, exist_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        self.control = backing.parent / (backing.name + ".bad.json")
        self.control.write_text("{}")
        self._ranges: dict[str, list[list[int]]] = {}
        self.log = open(backing.parent / (backing.name + ".fuse.log"), "wb")
        self.proc = subprocess.Popen([sys.executable, _HERE, str(backing), str(path), str(self.control)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.ismount(path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.skip(f"the FUSE disk did not mount: {self.output()[-500:]}")
            time.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def bad(self, relative: str, start: int, end: int) -> None:
        """Bytes [start, end) of ``relative`` (under the disk) read as EIO from now on: of the
        file there now, as sectors are where its blocks are; a file written anew in its place
        (a rewrite renamed over it) reads well, even where it reuses the inode."""
        self._ranges.setdefault(file_id(self.backing / relative), []).append([start, end])
        self._publish()
        self._drop_cache(relative)

    def is_bad(self, backing_file: Path) -> bool:
        """Whether the file at this path of the backing directory has bad ranges."""
        try:
            return file_id(backing_file) in self._ranges
        except FileNotFoundError:
            return False

    def heal(self) -> None:
        self._ranges = {}
        self._publish()

    def _publish(self) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._ranges))
        os.replace(tmp, self.control)

    def _drop_cache(self, relative: str) -> None:
        """Drop what the kernel holds of the file through this mount, so its next reads ask the
        daemon (FUSE keeps a file's pages while it stays open elsewhere)."""
        target = self.path / relative
        try:
            fd = os.open(target, os.O_RDONLY)
        except OSError:
            return
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.proc.poll() is None:
            subprocess.run(["fusermount", "-u", "-z", str(self.path)], capture_output=True)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _serve(backing: str, mountpoint: str, control: str) -> None:
    from fuse import FUSE, FuseOSError, Operations

    class Passthrough(Operations):
        def __init__(self) -> None:
            self.root = os.path.realpath(backing)
            self._control_mtime = None
            self._bad: dict[str, list[list[int]]] = {}

        def _full(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        def _ranges(self, fh: int) -> list[list[int]]:
            try:
                mtime = os.stat(control).st_mtime_ns
            except OSError:
                return []
            if mtime != self._control_mtime:
                try:
                    self._bad = json.loads(open(control).read() or "{}")
                    self._control_mtime = mtime
                except ValueError:
                    pass
            return self._bad.get(_fd_id(fh), []) if self._bad else []

        def access(self, path, mode):
            if not os.access(self._full(path), mode):
                raise FuseOSError(errno.EACCES)

        def chmod(self, path, mode):
            return os.chmod(self._full(path), mode)

        def chown(self, path, uid, gid):
            return os.chown(self._full(path), uid, gid)

        def getattr(self, path, fh=None):
            st = os.lstat(self._full(path))
            return {key: getattr(st, key) for key in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                                       "st_nlink", "st_size", "st_uid", "st_blocks")}

        def readdir(self, path, fh):
            return [".", ".."] + os.listdir(self._full(path))

        def readlink(self, path):
            return os.readlink(self._full(path))

        def mknod(self, path, mode, dev):
            return os.mknod(self._full(path), mode, dev)

        def rmdir(self, path):
            return os.rmdir(self._full(path))

        def mkdir(self, path, mode):
            return os.mkdir(self._full(path), mode)

        def statfs(self, path):
            st = os.statvfs(self._full(path))
            return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                       "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

        def unlink(self, path):
            return os.unlink(self._full(path))

        def symlink(self, name, target):
            return os.symlink(target, self._full(name))

        def rename(self, old, new):
            return os.rename(self._full(old), self._full(new))

        def link(self, target, name):
            return os.link(self._full(name), self._full(target))

        def utimens(self, path, times=None):
            return os.utime(self._full(path), times)

        def open(self, path, flags):
            return os.open(self._full(path), flags & ~os.O_DIRECT if hasattr(os, "O_DIRECT") else flags)

        def create(self, path, mode, fi=None):
            return os.open(self._full(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)  # (the kernel reads
            # a mapped page through whichever handle it has)

        def read(self, path, length, offset, fh):
            for start, end in self._ranges(fh):
                if offset < end and offset + length > start:
                    raise FuseOSError(errno.EIO)
            return os.pread(fh, length, offset)

        def write(self, path, buf, offset, fh):
            return os.pwrite(fh, buf, offset)

        def truncate(self, path, length, fh=None):
            with open(self._full(path), "r+b") as f:
                f.truncate(length)

        def flush(self, path, fh):
            return 0

        def release(self, path, fh):
            return os.close(fh)

        def fsync(self, path, fdatasync, fh):
            if fdatasync:
                return os.fdatasync(fh)
            return os.fsync(fh)

    FUSE(Passthrough(), mountpoint, foreground=True, nothreads=False, allow_other=True)


if __name__ == "__main__":
    _serve(*sys.argv[1:4])
