"""The disks the conformance suite runs against: one factory per ``Disk`` implementation.

A factory is an async context manager that takes the path of a directory on this machine
(which may not exist yet: some cases start from a missing root) and yields a ``Disk``
backed by it, closing it on exit. To run the whole suite against a new implementation,
add its factory to ``DISK_FACTORIES`` (a ``RemoteDisk`` factory starts a peer serving the
path and yields the client for it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from buckets.storage import Disk, LocalDisk
from buckets.storage.faulty import FaultyDisk

DISK_ID = "disk-under-test"


@asynccontextmanager
async def local_disk(path: str) -> AsyncIterator[Disk]:
    disk = LocalDisk(path, DISK_ID)
    try:
        yield disk
    finally:
        await disk.close()


@asynccontextmanager
async def faulty_disk(path: str) -> AsyncIterator[Disk]:
    """A FaultyDisk with no fault programmed must be indistinguishable from its disk."""
    async with local_disk(path) as inner:
        yield FaultyDisk(inner)


DISK_FACTORIES = {"local": local_disk, "faulty": faulty_disk}
