"""Fixtures of the Disk conformance suite: every case runs once per ``DISK_FACTORIES`` entry."""

from __future__ import annotations

import contextlib
import os

import pytest
from disk_factories import DISK_FACTORIES


@pytest.fixture(params=sorted(DISK_FACTORIES))
async def open_disk(request, tmp_path):
    """``await open_disk(name, create=True)``: a disk of the implementation under test,
    backed by ``tmp_path / name`` (created first unless ``create`` is false)."""
    factory = DISK_FACTORIES[request.param]
    async with contextlib.AsyncExitStack() as stack:
        async def opener(name: str = "disk", *, create: bool = True):
            root = tmp_path / name
            if create:
                os.makedirs(root)
            return await stack.enter_async_context(factory(str(root)))

        yield opener


@pytest.fixture
async def disk(open_disk):
    return await open_disk()


@pytest.fixture
async def local_disk(tmp_path):
    """One ``LocalDisk`` over ``tmp_path / "disk"``, for what is particular to it."""
    from buckets.storage import LocalDisk

    root = tmp_path / "disk"
    root.mkdir()
    d = LocalDisk(str(root), "disk-1")
    yield d
    await d.close()
