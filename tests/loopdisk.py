"""A disk that fails as a real one does, for fault tests: an ext4 file system on a loop device,
mounted on a disk directory; ``fail()`` makes every read and write on it fail with EIO from then
on (``EXT4_IOC_SHUTDOWN``, xfstests' "godown"), open files and mapped pages included;
``go_read_only()`` makes ext4 turn itself read-only as after an error of its own; ``freeze()``
makes its writes hang (``fsfreeze``) until ``thaw()``. Needs
root, a free loop device and ``mkfs.ext4``: the test is skipped (with the reason) otherwise."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2  # the journal is not flushed: as a disk that just stops


class LoopDisk:
    """An ext4 file system on a loop device, mounted at ``path``; ``fail()`` shuts it down."""

    def __init__(self, image: Path, path: Path, size_mb: int = 256) -> None:
        self.image, self.path, self.device, self.size_mb = image, path, None, size_mb
        if os.geteuid() != 0:
            pytest.skip("a loop-mounted disk needs root")
        for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed")
        self._attach(image)

    def _attach(self, image: Path) -> None:
        """A new, empty ext4 file system in ``image``, mounted at ``path``."""
        subprocess.run(["truncate", "-s", f"{self.size_mb}M", str(image)], check=True)
        found = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True)
        if found.returncode != 0:
            pytest.skip(f"no loop device: {found.stderr.strip()}")
        self.device = found.stdout.strip()
        try:
            subprocess.run(["mkfs.ext4", "-q", self.device], check=True, capture_output=True)
            self.path.mkdir(parents=True, exist_ok=True)
            mounted = subprocess.run(["mount", "-o", "errors=remount-ro", self.device, str(self.path)],
                                     capture_output=True, text=True)
            if mounted.returncode != 0:
                pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
        except BaseException:
            self.close()
            raise

    def replace(self) -> None:
        """Swap the failed disk for a new, empty one at the same path, as an operator does with
        the node running (the dead file system is detached lazily: the node may still hold
        files open on it)."""
        self.close()
        self.image = self.image.with_name(self.image.stem + "-new" + self.image.suffix)
        self._attach(self.image)

    def unmount(self) -> None:
        """The file system is no longer mounted (a failed fstab line, a device gone at boot):
        ``path`` is the bare mount point again, an empty directory on the parent's file system."""
        subprocess.run(["umount", str(self.path)], check=True)

    def mount(self) -> None:
        subprocess.run(["mount", "-o", "errors=remount-ro", str(self.device), str(self.path)], check=True)

    def fail(self) -> None:
        """Every read and write fails with EIO from now on: a dead disk."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    def go_read_only(self) -> None:
        """ext4 finds an error of its own and, mounted ``errors=remount-ro``, refuses every write
        from now on (EROFS) while reads still work: a disk going bad. Needs the kernel's
        ``/sys/fs/ext4/<device>/trigger_fs_error`` (skipped otherwise)."""
        trigger = Path("/sys/fs/ext4") / os.path.basename(self.device or "") / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"{trigger} is missing: cannot make ext4 find an error")
        trigger.write_text("1")

    def freeze(self) -> None:
        """Every write (and fsync) blocks from now on, reads still work: a disk that hangs
        (``fsfreeze``, as a snapshot tool freezes a file system). ``thaw()`` ends it."""
        if shutil.which("fsfreeze") is None:
            pytest.skip("fsfreeze is not installed")
        subprocess.run(["fsfreeze", "--freeze", str(self.path)], check=True)
        self.frozen = True

    def thaw(self) -> None:
        if getattr(self, "frozen", False):
            subprocess.run(["fsfreeze", "--unfreeze", str(self.path)], check=False)
            self.frozen = False

    def close(self) -> None:
        self.thaw()
        if self.path.is_mount():
            subprocess.run(["umount", "-l", str(self.path)], check=False)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], check=False)
            self.device = None
