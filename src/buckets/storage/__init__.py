"""Disks: the one seam between the engine and bytes on a device.

Owns: the ``Disk`` protocol (what the engine may ask of one disk, including its format
file), ``LocalDisk`` (a directory on this machine), ``FaultyDisk`` (a wrapper that fails,
stalls or tears writes on command, for tests), the per-disk format file, and the on-disk
path scheme. A remote disk behind a peer implements the same protocol. Must not know
about objects, erasure coding or S3: it moves bytes between relative paths, durably.
"""

from buckets.storage.disk import Disk, DiskInfo, FileStat, ShardWriter
from buckets.storage.format import DiskFormat, SYS_DIR, TMP_DIR, MULTIPART_DIR, DATA_DIR
from buckets.storage.local import LocalDisk

__all__ = ["Disk", "DiskInfo", "FileStat", "ShardWriter", "LocalDisk", "DiskFormat",
           "SYS_DIR", "TMP_DIR", "MULTIPART_DIR", "DATA_DIR"]
