"""Engine fixtures: a 4-disk (2+2) store with small blocks, opened without fsync for speed."""

from __future__ import annotations

import pytest
from engine_testkit import BLOCK, INLINE

from buckets import Store
from buckets.engine import reader


@pytest.fixture(autouse=True)
def two_block_spans(monkeypatch):
    """The objects here are a few small blocks, which the server would read in one span (a span
    brings at least 512 KiB per shard). Spans of 2 blocks make their reads cross span
    boundaries, as a large object's do; test_engine_ranges checks the server's sizing too."""
    server_value = reader.SPAN_SHARD_BYTES
    monkeypatch.setattr(reader, "SPAN_SHARD_BYTES", 0)
    return server_value  # what a test that wants the server's sizing sets back


@pytest.fixture
def disk_paths(tmp_disks) -> list[str]:
    return tmp_disks(4)


@pytest.fixture
async def store(disk_paths):
    s = await Store.open(disk_paths, sync=False, block_size=BLOCK, inline_threshold=INLINE, partitions=64)
    yield s
    await s.close()


@pytest.fixture
async def bucket(store) -> str:
    await store.make_bucket("bkt")
    return "bkt"


@pytest.fixture
async def faulty_store(disk_paths):
    """A store on ``FaultyDisk``s (faults injected per method) with bucket ``bkt``."""
    from buckets.storage import LocalDisk
    from buckets.storage.faulty import FaultyDisk

    disks = [FaultyDisk(LocalDisk(p)) for p in disk_paths]
    # small_copy_limit=0: every read goes to the disks (no registry copy of small objects)
    store = await Store.open_disks(disks, sync=False, block_size=BLOCK, inline_threshold=INLINE,
                                   partitions=64, small_copy_limit=0, background=False)
    await store.make_bucket("bkt")
    yield store
    for d in disks:
        d.clear()  # a delay left in place would hold up the close
    await store.close()
